"""snnTorch's tutorial networks (tutorials 5 and 6) with only the neuron swapped for ours.

Re-written from the public tutorials: tutorial 5 is a fully connected 784-1000-10 network of
``snn.Leaky(beta=0.95)`` trained on the summed cross-entropy of the output membrane (Adam,
lr 5e-4); tutorial 6 is a convolutional 12C5-MP2-64C5-MP2-10 network of
``snn.Leaky(beta=0.5, spike_grad=fast_sigmoid(25), init_hidden=True)`` trained with
``SF.ce_rate_loss`` and measured with ``SF.accuracy_rate`` (Adam, lr 1e-2), reset with
``utils.reset``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

import pytest
import torch
from conftest import require
from torch import nn

from snn_encodings import Quartz, Radix
from snn_encodings.errors import SnnEncodingsWarning, SpecError
from snn_encodings.specs import ICRate

NUM_STEPS = 25


@pytest.fixture
def adapter() -> ModuleType:
    require("snntorch")
    return importlib.import_module("snn_encodings.adapters.snntorch")


class Tutorial5Net(nn.Module):
    """Tutorial 5's network; ``neuron()`` builds each layer's neuron (snnTorch: Leaky(beta))."""

    def __init__(self, neuron: Callable[[], nn.Module], hidden: int = 1000) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, hidden)
        self.lif1 = neuron()
        self.fc2 = nn.Linear(hidden, 10)
        self.lif2 = neuron()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec = [], []
        for _ in range(NUM_STEPS):
            spk1, mem1 = self.lif1(self.fc1(x), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec)


def tutorial6_net(neuron: Callable[..., nn.Module]) -> nn.Sequential:
    """Tutorial 6's convolutional network; ``neuron(**kw)`` is the swapped class."""
    import snntorch.surrogate as surrogate

    grad = surrogate.fast_sigmoid(slope=25)
    return nn.Sequential(
        nn.Conv2d(1, 12, 5),
        nn.MaxPool2d(2),
        neuron(spike_grad=grad, init_hidden=True),
        nn.Conv2d(12, 64, 5),
        nn.MaxPool2d(2),
        neuron(spike_grad=grad, init_hidden=True),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
        neuron(spike_grad=grad, init_hidden=True, output=True),
    )


def forward_pass(net: nn.Module, data: torch.Tensor, num_steps: int = NUM_STEPS) -> torch.Tensor:
    """Tutorial 6's ``forward_pass``: reset, loop the steps, stack the output spikes."""
    from snntorch import utils

    spk_rec = []
    utils.reset(net)
    for _ in range(num_steps):
        spk_out, _ = net(data)
        spk_rec.append(spk_out)
    return torch.stack(spk_rec)


def _mnist(part: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    from snn_encodings.data import mnist_split

    return mnist_split(part, limit=limit).tensors  # type: ignore[return-value]


def test_snntorch_tutorial5_learns_with_icrate_neuron(adapter):
    """Tutorial 5's loop and loss with ``snn.Leaky(beta=beta)`` -> ``ICRateNeuron()``."""
    torch.manual_seed(0)
    net = Tutorial5Net(adapter.ICRateNeuron, hidden=256)
    optimizer = torch.optim.Adam(net.parameters(), lr=5e-4, betas=(0.9, 0.999))
    loss = nn.CrossEntropyLoss()
    x, y = _mnist("train", 512)
    for start in range(0, len(x), 32):
        data, targets = x[start : start + 32].view(-1, 784), y[start : start + 32]
        _, mem_rec = net(data)
        loss_val = sum(loss(mem_rec[step], targets) for step in range(NUM_STEPS))
        optimizer.zero_grad()
        loss_val.backward()  # type: ignore[union-attr]
        optimizer.step()
    x_eval, y_eval = _mnist("eval", 300)
    with torch.no_grad():
        spk_rec, _ = net(x_eval.view(-1, 784))
    accuracy = (spk_rec.sum(0).argmax(1) == y_eval).float().mean().item()
    assert accuracy > 0.5, accuracy  # chance is 0.1


def test_snntorch_tutorial6_runs_unchanged_with_icrate_neuron(adapter):
    """Tutorial 6 (init_hidden, utils.reset, ce_rate_loss, accuracy_rate) with the neuron
    swapped: ``utils.reset`` restarts every layer, gradients reach the first convolution, and
    the training step runs at the tutorial's learning rate."""
    import snntorch.functional as SF

    torch.manual_seed(0)
    net = tutorial6_net(adapter.ICRateNeuron)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.9, 0.999))
    x, y = _mnist("train", 32)
    first = forward_pass(net, x, num_steps=8)
    assert torch.equal(forward_pass(net, x, num_steps=8), first)  # utils.reset restarted it
    loss_val = SF.ce_rate_loss()(first, y)
    optimizer.zero_grad()
    loss_val.backward()
    grad = net[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    optimizer.step()
    assert 0.0 <= SF.accuracy_rate(forward_pass(net, x, num_steps=8), y) <= 1.0


def test_snntorch_gradients_on_the_order_of_leaky(adapter):
    """Tutorial 5 at initialisation: weight-gradient norms within 10x of snn.Leaky's."""
    import snntorch as snn

    def norms(neuron: Callable[[], nn.Module]) -> list[float]:
        torch.manual_seed(0)
        net = Tutorial5Net(neuron)
        x, y = _mnist("train", 64)
        _, mem_rec = net(x.view(-1, 784))
        loss = sum(nn.functional.cross_entropy(m, y) for m in mem_rec)
        loss.backward()  # type: ignore[union-attr]
        return [float(net.fc1.weight.grad.norm()), float(net.fc2.weight.grad.norm())]

    leaky = norms(lambda: snn.Leaky(beta=0.95))
    ours = norms(adapter.ICRateNeuron)
    for theirs, mine in zip(leaky, ours):
        assert theirs > 0 and 0.1 < mine / theirs < 10, (mine, theirs)


def test_snntorch_neurons_take_leaky_keywords(adapter):
    import snntorch.surrogate as surrogate

    neuron = adapter.ICRateNeuron(
        beta=1.0,
        threshold=2.0,
        spike_grad=surrogate.atan(),
        init_hidden=True,
        output=True,
        learn_threshold=True,
        reset_mechanism="subtract",
        reset_delay=False,
    )
    assert neuron.spec == ICRate(threshold=2.0) and isinstance(neuron.threshold, nn.Parameter)
    spk, mem = neuron(torch.tensor([2.5]))
    assert spk.tolist() == [1.0] and mem.tolist() == [1.5]  # v0 = 1, 1 + 2.5 - 2
    assert adapter.Neuron(Radix(steps=3)).spec == Radix(steps=3)
    assert adapter.QuartzNeuron().spec == Quartz()
    assert adapter.RadixNeuron(threshold=0.5).spec == Radix(threshold=0.5)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"beta": 0.95}, r"beta=0\.95 is not possible: ICRate neurons integrate without leak"),
        ({"learn_beta": True}, "learn_beta=True is not possible"),
        ({"reset_mechanism": "zero"}, "reset_mechanism='zero' is not possible.*'subtract'"),
        ({"inhibition": True}, "inhibition=True is not possible"),
        ({"graded_spikes_factor": 2.0}, "graded_spikes_factor=2.0 is not possible"),
    ],
)
def test_snntorch_keywords_without_meaning_are_refused(adapter, options, match):
    with pytest.raises(SpecError, match=match):
        adapter.ICRateNeuron(**options)


def test_snntorch_positional_beta_and_missing_spec(adapter):
    with pytest.raises(SpecError, match="beta=0.9 is not possible"):
        adapter.ICRateNeuron(0.9)
    with pytest.raises(TypeError, match="needs a spec"):
        adapter.Neuron()
    with pytest.raises(SpecError, match="threshold=3.0 cannot be set for Quartz"):
        adapter.QuartzNeuron(threshold=3.0)


def test_snntorch_tutorial6_with_quartz_warns_about_the_window(adapter):
    """25 steps against Quartz(t_max=16)'s window of 64: a warning, not a silent zero."""
    torch.manual_seed(0)
    net = tutorial6_net(adapter.QuartzNeuron)
    x, _ = _mnist("train", 4)
    forward_pass(net, x)
    with pytest.warns(SnnEncodingsWarning, match="window of 64 steps"):
        forward_pass(net, x)


def test_snntorch_rate_loss_on_radix_output_warns(adapter):
    import snntorch.functional as SF

    spec = Radix(steps=3)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), adapter.RadixNeuron(spec, init_hidden=True, output=True))
    rec = torch.stack([net(torch.rand(2, 4))[0] for _ in range(2 * spec.steps_per_layer)])
    with pytest.warns(SnnEncodingsWarning, match="rate loss reached the output spikes"):
        SF.ce_rate_loss()(rec, torch.tensor([0, 1])).backward()


def test_snntorch_converted_radix_and_quartz_within_half_a_point_of_the_twin(
    adapter, trained_ann
):
    """snntorch.convert for radix and Quartz: the readout ``net.output`` is within 0.5 pt of
    the ANN twin, and the spike record covers one window."""
    x, y = _mnist("eval", 200)
    calibration = [_mnist("train", 256)[0]]
    for spec in (Radix(steps=6), Quartz(t_max=16, analytic=True)):
        net = adapter.convert(trained_ann, spec, calibration)
        with torch.no_grad():
            spk_rec, _ = net(x)
            twin = net.network.twin(x).argmax(1)
        snn_accuracy = (net.output.argmax(1) == y).float().mean().item()
        twin_accuracy = (twin == y).float().mean().item()
        assert abs(snn_accuracy - twin_accuracy) <= 0.005, (spec, snn_accuracy, twin_accuracy)
        assert spk_rec.shape[0] == net.num_steps


def test_snntorch_class_scores_decode_each_encoding(adapter):
    spec = Quartz(t_max=4)
    spikes = torch.zeros(spec.steps_per_layer, 1, 3)
    spikes[5, 0, 0] = spikes[4, 0, 1] = spikes[7, 0, 2] = 1.0  # (2K - t)/K: 0.75, 1, 0.25
    assert adapter.class_scores(spikes, spec).tolist() == [[0.75, 1.0, 0.25]]
    counts = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])
    assert adapter.class_scores(counts, ICRate(steps=2)).tolist() == [[1.0, 0.5]]
    with pytest.raises(SpecError, match="window of 6 steps"):
        adapter.class_scores(torch.zeros(3, 1, 2), Radix(steps=6))
