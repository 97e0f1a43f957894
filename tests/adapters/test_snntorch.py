"""The snnTorch adapter: neurons equal the core step, keep snnTorch's conventions, train."""

from __future__ import annotations

import copy
import importlib
from types import ModuleType

import pytest
import torch
from conftest import require
from torch import nn

from snn_encodings.errors import ExportError, SpecError
from snn_encodings.specs import ALL_SPECS, ICRate, Spec
from snn_encodings.testing import Trace, assert_same_trace, run_core

SHAPES = [(3,), (2, 5), (2, 3, 4, 4)]
DTYPES = [torch.float32, torch.float64]


@pytest.fixture
def snt() -> ModuleType:
    require("snntorch")
    importlib.import_module("snntorch.utils")
    return importlib.import_module("snn_encodings.adapters.snntorch")


def _explicit(neuron: nn.Module, currents: torch.Tensor) -> Trace:
    """snnTorch's explicit style: ``mem = n.reset_mem()``, then ``spk, mem = n(cur, mem)``."""
    mem = neuron.reset_mem()
    spikes, membranes = [], []
    for current in currents:
        spk, mem = neuron(current, mem)
        spikes.append(spk)
        membranes.append(mem)
    return Trace(torch.stack(spikes), torch.stack(membranes))


def _hidden_output(neuron: nn.Module, currents: torch.Tensor) -> Trace:
    """``init_hidden=True, output=True`` inside ``nn.Sequential``: each call gives (spk, mem)."""
    net = nn.Sequential(nn.Identity(), neuron)
    spikes, membranes = zip(*(net(current) for current in currents))
    return Trace(torch.stack(spikes), torch.stack(membranes))


def _hidden(neuron: nn.Module, currents: torch.Tensor) -> Trace:
    """``init_hidden=True``: each call gives spikes; the membrane is read from ``n.mem``."""
    spikes, membranes = [], []
    for current in currents:
        spikes.append(neuron(current))
        membranes.append(neuron.mem)
    return Trace(torch.stack(spikes), torch.stack(membranes))


DRIVERS = {
    "explicit": (_explicit, {}),
    "init_hidden_output": (_hidden_output, {"init_hidden": True, "output": True}),
    "init_hidden": (_hidden, {"init_hidden": True}),
}


def test_snntorch_neurons_cover_every_spec(snt) -> None:
    missing = [cls.__name__ for cls in ALL_SPECS if cls not in snt.NEURONS]
    assert not missing, f"snn_encodings.adapters.snntorch.NEURONS lacks {missing}"
    for spec_type, cls in snt.NEURONS.items():
        assert issubclass(cls, snt.Neuron) and cls.spec_type is spec_type


@pytest.mark.parametrize("driver", list(DRIVERS))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_snntorch_neuron_matches_core(snt, spec, driver, shape, dtype, make_currents) -> None:
    run, options = DRIVERS[driver]
    currents = make_currents(shape, steps=10, dtype=dtype, seed=len(shape))
    got = run(snt.neuron_for(spec, **options), currents)
    assert got.spikes.dtype == dtype
    assert_same_trace(got, run_core(spec, currents))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_snntorch_neuron_single_step_matches_core(snt, spec, dtype, make_currents) -> None:
    currents = make_currents((4, 3), steps=1, dtype=dtype)
    spk, mem = snt.neuron_for(spec)(currents[0])
    assert_same_trace((spk[None], mem[None]), run_core(spec, currents))


def test_snntorch_neuron_run_split_in_two_matches_core(snt, spec, make_currents) -> None:
    currents = make_currents((2, 5), steps=12)
    neuron = snt.neuron_for(spec)
    first = _explicit(neuron, currents[:5])
    rest = [neuron(current, neuron.mem) for current in currents[5:]]
    spikes = torch.cat([first.spikes, torch.stack([s for s, _ in rest])])
    membranes = torch.cat([first.membranes, torch.stack([m for _, m in rest])])
    assert_same_trace((spikes, membranes), run_core(spec, currents))


def test_snntorch_neuron_with_v0_matches_core(snt, make_currents) -> None:
    spec = ICRate(steps=6, init="data")
    v0 = torch.tensor([0.1, 0.7, 0.3])
    currents = make_currents((2, 3), steps=6)
    got = _explicit(snt.ICRateNeuron(spec, v0=v0), currents)
    assert_same_trace(got, run_core(spec, currents, v0=v0))


def _network(snt, spec: Spec, seed: int = 0) -> nn.Sequential:
    generator = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(6, 5),
        snt.neuron_for(spec, init_hidden=True),
        nn.Linear(5, 3),
        snt.neuron_for(spec, init_hidden=True, output=True),
    )
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) - 0.3)
            layer.bias.zero_()
    return net


def _run(net: nn.Sequential, inputs: torch.Tensor, steps: int) -> Trace:
    spikes, membranes = zip(*(net(inputs) for _ in range(steps)))
    return Trace(torch.stack(spikes), torch.stack(membranes))


@pytest.mark.parametrize("how", ["snntorch.utils.reset", "adapter.reset", "reset_mem"])
def test_snntorch_reset_restores_initial_state_and_forgets_batch_size(
    snt, spec, how, make_currents
) -> None:
    import snntorch.utils

    net = _network(snt, spec)
    fresh = copy.deepcopy(net)
    _run(net, make_currents((4, 6), steps=1, seed=1)[0], steps=5)
    if how == "snntorch.utils.reset":
        snntorch.utils.reset(net)
    elif how == "adapter.reset":
        snt.reset(net)
    else:
        net[1].reset_mem()
        net[3].init_leaky()
    for neuron in (net[1], net[3]):
        initial = neuron._initial_state(torch.zeros_like(neuron.mem))
        assert all(torch.equal(a, b) for a, b in zip(neuron.state, initial))
    inputs = make_currents((3, 6), steps=1, seed=2)[0]
    assert_same_trace(_run(net, inputs, steps=7), _run(fresh, inputs, steps=7))


def test_snntorch_reset_mem_gives_initial_membrane_not_zero(snt) -> None:
    neuron = snt.ICRateNeuron(ICRate(steps=4, init="ann"))
    neuron(torch.full((2,), 0.3))
    assert neuron.reset_mem().tolist() == [0.5, 0.5]


def test_snntorch_zero_membrane_means_fresh_state(snt) -> None:
    spec = ICRate(steps=4, init="ann")
    neuron = snt.ICRateNeuron(spec)
    spk, mem = neuron(torch.full((2,), 0.8), torch.zeros(2))
    assert spk.tolist() == [1.0, 1.0] and mem.tolist() == pytest.approx([0.3, 0.3])


def test_snntorch_adapter_reset_reaches_nested_neurons_only(snt, spec) -> None:
    inner = nn.Sequential(nn.Linear(2, 2), snt.neuron_for(spec, init_hidden=True))
    net = nn.Sequential(inner)
    other = snt.neuron_for(spec, init_hidden=True)
    net(torch.ones(1, 2))
    other(torch.ones(1, 2))
    other_state = other.state
    snt.reset(net)
    assert inner[1]._fresh and other.state is other_state and not other._fresh


def test_snntorch_neuron_rejects_shape_change_without_reset(snt, spec) -> None:
    neuron = snt.neuron_for(spec, init_hidden=True)
    neuron(torch.zeros(4, 3))
    with pytest.raises(SpecError, match=r"input has shape \(2, 3\).*reset"):
        neuron(torch.zeros(2, 3))


def test_snntorch_neuron_rejects_wrong_spec_type(snt) -> None:
    class Other(Spec):
        pass

    with pytest.raises(TypeError, match="ICRateNeuron expects a ICRate spec, got Other"):
        snt.ICRateNeuron(Other())
    with pytest.raises(TypeError, match="no snnTorch neuron for Other"):
        snt.neuron_for(Other())


def test_snntorch_neuron_rejects_mem_with_init_hidden(snt, spec) -> None:
    neuron = snt.neuron_for(spec, init_hidden=True)
    with pytest.raises(TypeError, match="`mem` should not be passed"):
        neuron(torch.zeros(2), torch.zeros(2))


@pytest.mark.filterwarnings("ignore:nirtorch.extract_nir_graph is being deprecated")
def test_snntorch_nir_export_raises_instead_of_mislabelling(snt, spec) -> None:
    require("nir")
    from snntorch.export_nir import export_to_nir

    net = _network(snt, spec)
    with pytest.raises(ExportError, match="no leak factor beta.*snn_encodings.export"):
        export_to_nir(net, torch.ones(2, 6), ignore_dims=[0])


def test_snntorch_neuron_follows_module_dtype_and_state_dict(snt, spec) -> None:
    neuron = snt.neuron_for(spec, init_hidden=True)
    neuron(torch.ones(2, 3))
    neuron.double()
    assert neuron.mem.dtype == torch.float64
    assert "mem" not in neuron.state_dict()


def _rate_readout(spikes: list[torch.Tensor], spec: Spec) -> torch.Tensor:
    """The spike rate over the window (snnTorch's usual readout)."""
    return sum(spikes) / spec.steps_per_layer


def _first_spike_readout(spikes: list[torch.Tensor], spec: Spec) -> torch.Tensor:
    """Quartz: the value of the one spike, (3K - t)/K for a spike at step t of the window."""
    k = spec.t_max
    return sum(s * (3 * k - t) / k for t, s in enumerate(spikes))


def _train(
    snt, spec: Spec, readout=_rate_readout, scale: float = 1.0, **options
) -> tuple[list[float], nn.Module]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(8, 4, generator=generator)
    target = torch.rand(8, 2, generator=generator)
    linear = nn.Linear(4, 2)
    with torch.no_grad():
        linear.weight.copy_(torch.rand(2, 4, generator=generator) - 0.5)
        linear.bias.zero_()
    neuron = snt.neuron_for(spec, **options)
    optimiser = torch.optim.Adam([*linear.parameters(), *neuron.parameters()], lr=0.05)
    losses = []
    for _ in range(30):
        mem = neuron.reset_mem()
        spikes = []
        for _ in range(spec.steps_per_layer):
            spk, mem = neuron(linear(inputs) * scale, mem)
            spikes.append(spk)
        loss = ((readout(spikes, spec) - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    return losses, neuron


def test_snntorch_surrogate_gradient_trains(snt, spec) -> None:
    import snntorch.surrogate

    if type(spec) in snt.NOT_RATE_TRAINABLE:
        pytest.skip(f"rate loss: {snt.NOT_RATE_TRAINABLE[type(spec)]}")
    losses, _ = _train(snt, spec, spike_grad=snntorch.surrogate.fast_sigmoid(slope=5))
    assert min(losses[-5:]) < 0.7 * losses[0]


def test_snntorch_quartz_and_exact_radix_get_no_rate_gradient(snt, spec) -> None:
    import snntorch.surrogate

    if type(spec) not in snt.NOT_RATE_TRAINABLE or getattr(spec, "mode", "exact") != "exact":
        pytest.skip("a rate loss has a gradient here")
    losses, _ = _train(snt, spec, spike_grad=snntorch.surrogate.fast_sigmoid(slope=5))
    assert losses[-1] == losses[0]


def test_snntorch_detached_membrane_continues_and_new_zeros_restart(snt) -> None:
    from snn_encodings.specs import Quartz

    neuron = snt.QuartzNeuron(Quartz(t_max=2, mode="paper"))
    spk, mem = neuron(torch.full((3,), 5.0))
    assert spk.tolist() == [1.0] * 3 and mem.tolist() == [0.0] * 3
    _, mem = neuron(torch.zeros(3), mem.detach())
    assert neuron.state.t.tolist() == [2] * 3 and neuron.state.fired.all()
    neuron(torch.zeros(3), torch.zeros(3))
    assert neuron.state.t.tolist() == [1] * 3 and not neuron.state.fired.any()


def test_snntorch_quartz_trains_on_first_spike_values(snt, spec) -> None:
    import snntorch.surrogate

    from snn_encodings.specs import Quartz

    if not isinstance(spec, Quartz):
        pytest.skip("Quartz only")
    losses, _ = _train(
        snt,
        spec,
        readout=_first_spike_readout,
        scale=1 / spec.t_max,
        spike_grad=snntorch.surrogate.fast_sigmoid(slope=1),
    )
    assert min(losses[-5:]) < 0.5 * losses[0]


def test_snntorch_learnable_threshold_gets_gradient(snt) -> None:
    losses, neuron = _train(snt, ICRate(steps=8), learn_threshold=True)
    assert isinstance(neuron.threshold, nn.Parameter) and neuron.threshold.item() != 1.0
    assert min(losses[-5:]) < 0.7 * losses[0]


@pytest.mark.parametrize("surrogate", ["sigmoid", "fast_sigmoid"])
def test_snntorch_surrogate_leaves_spikes_exact(snt, spec, make_currents, surrogate) -> None:
    import snntorch.surrogate

    # 12 steps reach the readout of the Quartz examples (exact mode spikes from 2K on)
    currents = make_currents((3, 4), steps=12).requires_grad_()
    spike_grad = getattr(snntorch.surrogate, surrogate)()
    got = _explicit(snt.neuron_for(spec, spike_grad=spike_grad), currents)
    assert_same_trace(
        (got.spikes.detach(), got.membranes.detach()), run_core(spec, currents.detach())
    )
    got.spikes.sum().backward()
    assert currents.grad is not None and torch.isfinite(currents.grad).all()
    if surrogate == "fast_sigmoid":  # sigmoid's derivative underflows to 0 far from threshold
        assert currents.grad.abs().sum() > 0


def test_snntorch_rate_sigma_delta_is_time_first(snt) -> None:
    data = torch.tensor([[0.0, 0.25, 1.0]])
    spikes = snt.rate_sigma_delta(data, num_steps=8)
    assert spikes.shape == (8, 1, 3)
    assert spikes.sum(0).tolist() == [[0.0, 2.0, 8.0]]


def test_snntorch_encode_uses_core_encoder(snt, spec) -> None:
    data = torch.rand(2, 5, generator=torch.Generator().manual_seed(0))
    encoded = snt.encode(data, spec)
    assert encoded.shape == (spec.steps_per_layer, 2, 5)


@pytest.fixture(scope="module")
def mnist_mlp() -> tuple[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 784-64-10 ReLU network fitted in closed form (random features + ridge regression) on
    1000 shipped training images, 500 calibration images and 32 shipped evaluation images.
    Read-only: tests must not modify it."""
    from snn_encodings.data import mnist_split

    x, y = mnist_split("train", limit=1000).tensors
    x_eval, y_eval = mnist_split("eval", limit=32).tensors
    generator = torch.Generator().manual_seed(0)
    ann = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        ann[1].weight.copy_(torch.randn(64, 784, generator=generator) / 10)
        ann[1].bias.copy_(torch.rand(64, generator=generator) * 0.2)
        hidden = torch.cat([ann[:3](x), torch.ones(len(x), 1)], 1).double()
        onehot = nn.functional.one_hot(y, 10).double()
        gram = hidden.T @ hidden + 1e-2 * torch.eye(65, dtype=torch.float64)
        solution = torch.linalg.solve(gram, hidden.T @ onehot).float()
        ann[3].weight.copy_(solution[:64].T)
        ann[3].bias.copy_(solution[64])
    return ann.eval(), x[:500], x_eval, y_eval


def test_snntorch_convert_predicts_as_core_snn_on_mnist(snt, spec, mnist_mlp) -> None:
    import snn_encodings

    ann, calibration, x_eval, y_eval = mnist_mlp
    before = copy.deepcopy(ann.state_dict())
    model = snt.convert(ann, spec, [calibration])
    core = snn_encodings.convert(ann, spec, [calibration])
    spk_rec, mem_rec = model(x_eval)
    with torch.no_grad():
        want = core(x_eval)
    assert spk_rec.shape == (spec.steps_per_layer, len(x_eval), 10)
    assert torch.equal(model.output, want)
    assert torch.equal(model.predict(x_eval), want.argmax(1))
    with torch.no_grad():
        assert (ann(x_eval).argmax(1) == y_eval).float().mean() > 0.7  # a meaningful model
    if mem_rec is not None:
        assert mem_rec.shape == spk_rec.shape
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())


def test_snntorch_convert_membranes_replay_output_layer(snt, mnist_mlp) -> None:
    ann, calibration, x_eval, _ = mnist_mlp
    model = snt.convert(ann, ICRate(steps=8, init="data"), [calibration])
    spk_rec, mem_rec = model(x_eval[:4])
    assert mem_rec is not None and mem_rec.shape == spk_rec.shape
    assert ((mem_rec > -2) & (mem_rec < 2)).any()


def test_snntorch_convert_num_steps_replaces_spec_steps(snt, mnist_mlp) -> None:
    ann, calibration, x_eval, _ = mnist_mlp
    model = snt.convert(ann, ICRate(steps=8), [calibration], num_steps=4)
    spk_rec, _ = model(x_eval[:2])
    assert model.num_steps == 4 and spk_rec.shape[0] == 4


def test_snntorch_network_rejects_non_converted_model(snt) -> None:
    with pytest.raises(TypeError, match="expects a SpikingNetwork"):
        snt.SnnTorchNetwork(nn.Linear(2, 2))


def test_snntorch_tutorial_runs_quick(snt, tmp_path) -> None:
    require("matplotlib")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "tutorials" / "snntorch_swap_and_convert.py"
    module_spec = importlib.util.spec_from_file_location("snntorch_swap_and_convert", path)
    tutorial = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(tutorial)
    figure = tmp_path / "figure.png"
    results = tutorial.main(["--quick", "--plot", str(figure)])
    assert figure.stat().st_size > 0
    assert results["swapped_loss_last"] < results["swapped_loss_first"]


def test_snntorch_runs_signed_icrate_networks(snt, mnist_mlp) -> None:
    import snn_encodings

    ann, calibration, x_eval, _ = mnist_mlp
    spec = ICRate(steps=8, signed=True)
    model = snt.convert(ann, spec, [calibration])
    spk_rec, mem_rec = model(x_eval)
    with torch.no_grad():
        want = snn_encodings.convert(ann, spec, [calibration])(x_eval)
    assert torch.equal(model.output, want)
    assert mem_rec is not None and mem_rec.shape == spk_rec.shape
