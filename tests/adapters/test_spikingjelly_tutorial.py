"""SpikingJelly's ann2snn MNIST example with only the recipe (or the node) swapped for ours.

The CNN is re-written from SpikingJelly's ``ann2snn`` example (``examples/cnn_mnist.py``): three
Conv2d(3x3)-BatchNorm-ReLU-AvgPool(2) blocks and a Linear head. The evaluation loop is the
example's: ``functional.reset_net(snn)``, then ``out += snn(img)`` for ``T`` steps, prediction
``out.argmax(1)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
import torch
from conftest import require
from torch import nn

from snn_encodings.errors import ConversionError, SnnEncodingsWarning, SpecError
from snn_encodings.specs import ICRate, Quartz, Radix


@pytest.fixture(scope="module")
def adapter() -> ModuleType:
    require("spikingjelly")
    return importlib.import_module("snn_encodings.adapters.spikingjelly")


def example_ann() -> nn.Sequential:
    blocks: list[nn.Module] = []
    channels = 1
    for _ in range(3):
        blocks += [nn.Conv2d(channels, 32, 3, 1), nn.BatchNorm2d(32, eps=1e-3), nn.ReLU()]
        blocks.append(nn.AvgPool2d(2, 2))
        channels = 32
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(32, 10))


def _mnist(part: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    from snn_encodings.data import mnist_split

    return mnist_split(part, limit=limit).tensors  # type: ignore[return-value]


@pytest.fixture(scope="module")
def trained_example() -> nn.Module:
    """The example CNN after one short epoch (Adam, lr 1e-3, 2 048 images)."""
    torch.manual_seed(0)
    ann = example_ann()
    optimizer = torch.optim.Adam(ann.parameters(), lr=1e-3)
    x, y = _mnist("train", 2048)
    for start in range(0, len(x), 32):
        optimizer.zero_grad()
        nn.functional.cross_entropy(ann(x[start : start + 32]), y[start : start + 32]).backward()
        optimizer.step()
    return ann.eval()


def _example_loop(snn: nn.Module, x: torch.Tensor, steps: int) -> torch.Tensor:
    from spikingjelly.activation_based import functional

    functional.reset_net(snn)
    out = 0.0
    for _ in range(steps):
        out = out + snn(x)
    return out  # type: ignore[return-value]


def _convert(adapter: ModuleType, ann: nn.Module, spec, **options) -> nn.Module:
    from spikingjelly.activation_based import ann2snn

    loader = [(x, None) for x in _mnist("train", 256)[0].split(64)]
    return ann2snn.Converter(adapter.recipe(spec, loader, **options)).convert(ann)


def test_spikingjelly_example_icrate_recipe_classifies(adapter, trained_example):
    x, y = _mnist("eval", 300)
    snn = _convert(adapter, trained_example, ICRate(steps=16))
    with torch.no_grad():
        ann_accuracy = (trained_example(x).argmax(1) == y).float().mean().item()
        accuracy = (_example_loop(snn, x, 16).argmax(1) == y).float().mean().item()
    assert ann_accuracy > 0.8 and accuracy > 0.75, (ann_accuracy, accuracy)


def test_spikingjelly_recipe_refuses_a_loop_of_other_length(adapter, trained_example):
    x, _ = _mnist("eval", 8)
    snn = _convert(adapter, trained_example, ICRate(steps=8))
    with torch.no_grad(), pytest.raises(ConversionError, match="loop T = 8 times"):
        _example_loop(snn, x, 32)
    with torch.no_grad(), pytest.raises(ConversionError, match="the last run had 4"):
        _example_loop(snn, x, 4)
        _example_loop(snn, x, 8)


@pytest.mark.parametrize("spec", [Radix(steps=6), Quartz(t_max=16, analytic=True)], ids=repr)
def test_spikingjelly_core_recipe_matches_twin_and_catches_the_loop(adapter, trained_example, spec):
    from spikingjelly.activation_based import functional

    x, y = _mnist("eval", 300)
    snn = _convert(adapter, trained_example, spec)
    with torch.no_grad():
        accuracy = (snn(x).argmax(1) == y).float().mean().item()
        twin = (snn.network.twin(x).argmax(1) == y).float().mean().item()
        assert abs(accuracy - twin) <= 0.005, (accuracy, twin)
        with pytest.raises(ConversionError, match="drop the T-step loop"):
            snn(x)
    with pytest.warns(SnnEncodingsWarning, match="drop reset_net"):
        functional.reset_net(snn)


def test_spikingjelly_gradients_on_the_order_of_ifnode(adapter):
    """The example CNN trained directly (ReLU -> node, T = 8, MSE on firing rates, as
    SpikingJelly's tutorials do): weight gradients within 10x of IFNode's."""
    from spikingjelly.activation_based import functional, neuron, surrogate

    def norms(node) -> list[float]:
        torch.manual_seed(0)
        net = example_ann()
        net = nn.Sequential(*[node() if isinstance(m, nn.ReLU) else m for m in net])
        x, y = _mnist("train", 32)
        rate = sum(net(x) for _ in range(8)) / 8
        nn.functional.mse_loss(rate, nn.functional.one_hot(y, 10).float()).backward()
        functional.reset_net(net)
        return [float(m.weight.grad.norm()) for m in net if isinstance(m, nn.Conv2d)]

    theirs = norms(lambda: neuron.IFNode(surrogate_function=surrogate.ATan()))
    ours = norms(lambda: adapter.ICRateNode(surrogate_function=surrogate.ATan()))
    for mine, other in zip(ours, theirs):
        assert other > 0 and 0.1 < mine / other < 10, (ours, theirs)


def test_spikingjelly_nodes_take_ifnode_keywords(adapter):
    from spikingjelly.activation_based import surrogate

    node = adapter.ICRateNode(
        v_threshold=2.0,
        v_reset=None,
        surrogate_function=surrogate.ATan(),
        detach_reset=True,
        step_mode="m",
        backend="torch",
        store_v_seq=True,
    )
    assert node.spec == ICRate(threshold=2.0) and node.v_threshold == 2.0
    spikes = node(torch.full((4, 1, 1), 1.5))
    assert spikes.flatten().tolist() == [1.0, 1.0, 0.0, 1.0]  # v0 = 1: 2.5, 2.0, 1.5, 3.0
    assert node.v_seq.shape == (4, 1, 1)
    assert adapter.QuartzNode(v_reset=0.0).spec == Quartz()
    assert adapter.Node(Radix(steps=2)).spec == Radix(steps=2)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"v_reset": 0.0}, r"v_reset=0\.0 is not possible.*omit v_reset \(or pass None\)"),
        ({"detach_reset": False}, "detach_reset=False is not possible"),
    ],
)
def test_spikingjelly_keywords_without_meaning_are_refused(adapter, options, match):
    with pytest.raises(SpecError, match=match):
        adapter.ICRateNode(**options)


def test_spikingjelly_short_window_warns(adapter):
    with pytest.warns(SnnEncodingsWarning, match="window of 12 steps"):
        adapter.QuartzNode(Quartz(t_max=3), step_mode="m")(torch.zeros(5, 1, 2))
    from spikingjelly.activation_based import functional

    node = adapter.RadixNode(Radix(steps=4))
    for _ in range(3):
        node(torch.zeros(1, 2))
    with pytest.warns(SnnEncodingsWarning, match="the run lasted 3 steps"):
        functional.reset_net(node)
        node(torch.zeros(1, 2))


def _rate_loss_net(adapter, hidden, output, step_mode: str) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [nn.Linear(6, 5), adapter.Node(hidden, step_mode=step_mode)]
    layers += [nn.Linear(5, 3), adapter.Node(output, step_mode=step_mode)]
    if step_mode == "m":
        from spikingjelly.activation_based import layer

        layers = [layer.SeqToANNContainer(m) if isinstance(m, nn.Linear) else m for m in layers]
    return nn.Sequential(*layers)


def _rate_of(net: nn.Sequential, x_seq: torch.Tensor, step_mode: str) -> torch.Tensor:
    """The example's readout, ``out += net(x)`` over the T loop (or one multi-step call)."""
    if step_mode == "m":
        return net(x_seq).mean(0)
    out = sum(net(x) for x in x_seq)
    return out / x_seq.shape[0]  # type: ignore[operator]


@pytest.mark.parametrize("step_mode", ["s", "m"])
@pytest.mark.parametrize("spec", [Radix(steps=4), Quartz(t_max=2)], ids=repr)
def test_spikingjelly_rate_loss_on_radix_or_quartz_spikes_warns(adapter, spec, step_mode):
    """SpikingJelly's loss, MSE between the firing rate and one-hot labels, cannot train radix or
    Quartz outputs (their rate is fixed by the code): a warning names the encoding."""
    net = _rate_loss_net(adapter, spec, spec, step_mode)
    x_seq = torch.rand(spec.steps_per_layer, 2, 6) * 4
    rate = _rate_of(net, x_seq, step_mode)
    with pytest.warns(SnnEncodingsWarning, match="rate loss reached the output spikes"):
        nn.functional.mse_loss(rate, torch.eye(3)[:2]).backward()


@pytest.mark.parametrize("step_mode", ["s", "m"])
def test_spikingjelly_rate_loss_through_rate_trainable_outputs_is_quiet(adapter, step_mode):
    """A radix hidden layer behind IC-rate outputs: the rate loss is right for the outputs, and
    the hidden layer's gradient differs from step to step, so nothing warns."""
    import warnings

    spec = Radix(steps=4)
    steps = 2 * spec.steps_per_layer  # the radix layer emits one window after it integrates
    net = _rate_loss_net(adapter, spec, ICRate(steps=steps), step_mode)
    x_seq = torch.rand(steps, 2, 6) * 4
    rate = _rate_of(net, x_seq, step_mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SnnEncodingsWarning)
        nn.functional.mse_loss(rate, torch.eye(3)[:2]).backward()
    first = next(net.parameters()).grad
    assert first is not None and bool(first.any())  # the hidden radix layer was trained
