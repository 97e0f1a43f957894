"""SpikingJelly nodes and recipes == the core neurons and converter."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
import torch
from conftest import require
from torch import nn

from snn_encodings.errors import ConversionError, SpecError
from snn_encodings.specs import ALL_SPECS, ICRate
from snn_encodings.specs.base import Spec
from snn_encodings.testing import assert_same_trace, run_core

SHAPES = [(3,), (2, 5), (2, 3, 4, 4)]
DTYPES = [torch.float32, torch.float64]


def _adapter():
    require("spikingjelly")
    from snn_encodings.adapters import spikingjelly as adapter

    return adapter


def _node(spec: Spec, **options):
    adapter = _adapter()
    assert type(spec) in adapter.NEURONS, f"NEURONS lacks {type(spec).__name__}"
    return adapter.NEURONS[type(spec)](spec, **options)


def _single_steps(node, currents):
    spikes, membranes = [], []
    for current in currents:
        spikes.append(node(current))
        membranes.append(node.v)
    return torch.stack(spikes), torch.stack(membranes)


def test_spikingjelly_neurons_cover_all_specs() -> None:
    adapter = _adapter()
    missing = [cls.__name__ for cls in ALL_SPECS if cls not in adapter.NEURONS]
    assert not missing, f"add SpikingJelly nodes for {missing}"


def test_spikingjelly_exports_every_node() -> None:
    adapter = _adapter()
    for cls in adapter.NEURONS.values():
        assert cls.__name__ in adapter.__all__ and getattr(adapter, cls.__name__) is cls


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spikingjelly_single_step_matches_core(spec, shape, dtype, make_currents) -> None:
    require("spikingjelly")
    currents = make_currents(shape, steps=spec.steps_per_layer + 3, dtype=dtype)
    got = _single_steps(_node(spec, step_mode="s"), currents)
    assert_same_trace(got, run_core(spec, currents))
    assert got[0].dtype == dtype


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_spikingjelly_multi_step_matches_core(spec, shape, dtype, make_currents) -> None:
    require("spikingjelly")
    currents = make_currents(shape, steps=spec.steps_per_layer + 3, dtype=dtype)
    node = _node(spec, step_mode="m", store_v_seq=True)
    spikes = node(currents)
    want = run_core(spec, currents)
    assert_same_trace((spikes, node.v_seq), want)
    assert torch.equal(node.v, want.membranes[-1])


def test_spikingjelly_split_run_carries_state(spec, make_currents) -> None:
    require("spikingjelly")
    currents = make_currents((2, 3), steps=10, dtype=torch.float64)
    node = _node(spec, step_mode="m")
    first = node(currents[:4])
    membrane = node.v.clone()
    node.step_mode = "s"
    rest = _single_steps(node, currents[4:])
    want = run_core(spec, currents)
    assert torch.equal(torch.cat([first, rest[0]]), want.spikes)
    assert torch.equal(membrane, want.membranes[3])
    assert torch.equal(rest[1], want.membranes[4:])


def test_spikingjelly_reset_forgets_the_batch_size(spec, make_currents) -> None:
    require("spikingjelly")
    from spikingjelly.activation_based import functional

    node = _node(spec, step_mode="m")
    node(make_currents((3, 2), steps=5, seed=1))
    functional.reset_net(node)
    assert not isinstance(node.v, torch.Tensor)
    currents = make_currents((7, 2), steps=5, seed=2)
    spikes = node(currents)
    want = run_core(spec, currents)
    assert torch.equal(spikes, want.spikes)
    assert torch.equal(node.v, want.membranes[-1])


def test_spikingjelly_reset_restores_initial_membrane_not_zero() -> None:
    require("spikingjelly")
    from spikingjelly.activation_based import functional

    spec = ICRate(steps=4, init="ann", threshold=2.0)
    node = _node(spec)
    node(torch.zeros(2, 3))
    assert torch.equal(node.v, torch.full((2, 3), 1.0))
    node(torch.full((2, 3), 0.5))
    functional.reset_net(node)
    node(torch.zeros(2, 3))
    assert torch.equal(node.v, torch.full((2, 3), 1.0))


def test_spikingjelly_set_step_mode_in_multi_step_layers(make_currents) -> None:
    require("spikingjelly")
    from spikingjelly.activation_based import functional, layer

    spec = ICRate(steps=6)
    torch.manual_seed(0)
    linear = nn.Linear(4, 5)
    net = nn.Sequential(layer.SeqToANNContainer(linear), _node(spec))
    functional.set_step_mode(net[1], "m")
    currents = make_currents((3, 4), steps=6)
    got = net(currents)
    with torch.no_grad():
        want = run_core(spec, linear(currents))
    assert torch.equal(got.detach(), want.spikes)

    stepwise = nn.Sequential(layer.Linear(4, 5), _node(spec))
    stepwise[0].load_state_dict(linear.state_dict())
    functional.set_step_mode(stepwise, "m")
    assert torch.equal(stepwise(currents).detach(), want.spikes)
    functional.reset_net(stepwise)
    functional.set_step_mode(stepwise, "s")
    assert torch.equal(torch.stack([stepwise(c) for c in currents]).detach(), want.spikes)


def test_spikingjelly_per_channel_v0_matches_core(make_currents) -> None:
    require("spikingjelly")
    spec = ICRate(steps=8, init="data")
    v0 = torch.tensor([0.1, 0.4, 0.7]).view(3, 1, 1)
    currents = make_currents((2, 3, 2, 2), steps=8)
    node = _node(spec, step_mode="m", v0=v0, store_v_seq=True)
    assert_same_trace((node(currents), node.v_seq), run_core(spec, currents, v0=v0))


def test_spikingjelly_surrogate_gives_gradients_and_exact_spikes(make_currents) -> None:
    require("spikingjelly")
    from spikingjelly.activation_based import surrogate

    spec = ICRate(steps=8)
    currents = make_currents((4, 3), steps=8).requires_grad_(True)
    for mode in ("s", "m"):
        node = _node(spec, step_mode=mode, surrogate_function=surrogate.ATan())
        spikes = node(currents) if mode == "m" else torch.stack([node(c) for c in currents])
        assert torch.equal(spikes.detach(), run_core(spec, currents.detach()).spikes)
        (grad,) = torch.autograd.grad(spikes.sum(), currents)
        assert grad.abs().sum() > 0


def test_spikingjelly_functional_forward_matches_module(make_currents) -> None:
    require("spikingjelly")
    from spikingjelly.activation_based import base

    spec = ICRate(steps=5)
    node = _node(spec, step_mode="m")
    currents = make_currents((2, 3), steps=5)
    state = node.materialize_states((currents,), tuple(node.memories()), "m")
    (spikes,), (v,) = base.to_functional_forward(node)((currents,), state)
    want = run_core(spec, currents)
    assert torch.equal(spikes, want.spikes) and torch.equal(v, want.membranes[-1])


@dataclass(frozen=True, slots=True, kw_only=True)
class _Unregistered(Spec):
    steps: int = 3


def test_spikingjelly_node_rejects_wrong_spec_type() -> None:
    adapter = _adapter()
    with pytest.raises(TypeError, match="ICRateNode expects a ICRate spec"):
        adapter.ICRateNode(_Unregistered())
    with pytest.raises(TypeError, match="expected a neuron spec"):
        adapter.Node(_Unregistered())


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"step_mode": "x"}, "step_mode must be 's' or 'm'"),
        ({"backend": "triton"}, "backend must be 'torch' or 'cupy'"),
    ],
)
def test_spikingjelly_node_rejects_bad_options(options, fragment) -> None:
    adapter = _adapter()
    with pytest.raises(ValueError, match=fragment):
        adapter.ICRateNode(ICRate(), **options)


def test_spikingjelly_cupy_backend_without_gpu_says_what_to_do() -> None:
    adapter = _adapter()
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="backend='torch'"):
        adapter.ICRateNode(ICRate(), backend="cupy")


def test_spikingjelly_cupy_backend_rejects_unsupported_surrogate() -> None:
    adapter = _adapter()
    from spikingjelly.activation_based import surrogate

    with pytest.raises(SpecError, match="implements the surrogates"):
        adapter.ICRateNode(ICRate(), backend="cupy", surrogate_function=surrogate.SoftSign())


def test_spikingjelly_node_rejects_shape_change_without_reset() -> None:
    adapter = _adapter()
    node = adapter.ICRateNode(ICRate())
    node(torch.zeros(2, 3))
    with pytest.raises(SpecError, match="call functional.reset_net"):
        node(torch.zeros(4, 3))


@pytest.mark.parametrize(
    ("mode", "currents", "fragment"),
    [
        ("m", torch.zeros(5), r"shaped \(T, B, \*\)"),
        ("m", torch.zeros(0, 2), "no time steps"),
        ("s", torch.zeros(()), r"shaped \(B, \*\)"),
        ("s", torch.zeros(2, dtype=torch.int64), "floating-point"),
    ],
)
def test_spikingjelly_node_rejects_bad_inputs(mode, currents, fragment) -> None:
    adapter = _adapter()
    with pytest.raises(SpecError, match=fragment):
        adapter.ICRateNode(ICRate(), step_mode=mode)(currents)


def test_spikingjelly_version_check_refuses_old_releases() -> None:
    _adapter()
    from snn_encodings.adapters.spikingjelly._compat import check_spikingjelly

    with pytest.raises(ImportError, match=r"needs SpikingJelly >=2.0,<3, found 0.0.0.0.14"):
        check_spikingjelly("0.0.0.0.14", has_functional_api=False)
    with pytest.raises(ImportError, match="found 3.0.0"):
        check_spikingjelly("3.0.0", has_functional_api=True)
    check_spikingjelly("2.0.0", has_functional_api=True)


def _calibration(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.rand(16, 10, generator=generator), torch.zeros(16)) for _ in range(3)]


def test_spikingjelly_icrate_recipe_builds_our_nodes() -> None:
    adapter = _adapter()
    from spikingjelly.activation_based import ann2snn, functional

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 4))
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    spec = ICRate(steps=64)
    recipe = adapter.recipe(spec, _calibration())
    assert isinstance(recipe, ann2snn.RateCodingRecipe)
    snn = ann2snn.Converter(recipe).convert(ann)
    nodes = [m for m in snn.modules() if isinstance(m, adapter.ICRateNode)]
    assert len(nodes) == 1 and not snn.training and not nodes[0].training
    x = _calibration(seed=1)[0][0]
    functional.set_step_mode(snn, "m")
    out = snn(x.expand(spec.steps, *x.shape)).mean(0)
    assert (out - ann(x)).abs().max() < 0.1
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())


def test_spikingjelly_icrate_recipe_initial_membrane_helps_at_few_steps() -> None:
    adapter = _adapter()
    from spikingjelly.activation_based import ann2snn, functional

    torch.manual_seed(0)
    ann = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 4))
    x = _calibration(seed=1)[0][0]
    errors = {}
    for init in ("zero", "ann"):
        spec = ICRate(steps=4, init=init)
        snn = ann2snn.Converter(adapter.recipe(spec, _calibration())).convert(ann)
        functional.set_step_mode(snn, "m")
        errors[init] = (snn(x.expand(4, *x.shape)).mean(0) - ann(x)).abs().mean()
    assert errors["ann"] < errors["zero"]


@pytest.mark.parametrize(
    ("spec", "options", "fragment"),
    [
        (ICRate(init="data"), {}, "use via='core'"),
        (ICRate(input_coding="sigma_delta"), {}, "use via='core'"),
        (ICRate(), {"via": "lava"}, "via must be"),
    ],
)
def test_spikingjelly_recipe_rejects_what_it_cannot_express(spec, options, fragment) -> None:
    adapter = _adapter()
    with pytest.raises(ConversionError, match=fragment):
        adapter.recipe(spec, _calibration(), **options)


def test_spikingjelly_recipe_rejects_non_specs() -> None:
    adapter = _adapter()
    with pytest.raises(TypeError, match="expected a neuron spec"):
        adapter.recipe("icrate", _calibration())


@functools.lru_cache(maxsize=1)
def _trained_mlp_state() -> dict[str, torch.Tensor]:
    from snn_encodings.data import mnist_split
    from snn_encodings.models import build

    torch.manual_seed(0)
    model = build("mlp")
    x, y = mnist_split("train", limit=2000).tensors
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for start in range(0, len(x), 100):
        optimiser.zero_grad()
        nn.functional.cross_entropy(
            model(x[start : start + 100]), y[start : start + 100]
        ).backward()
        optimiser.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mnist_mlp() -> nn.Module:
    from snn_encodings.models import build

    model = build("mlp")
    model.load_state_dict(_trained_mlp_state())
    return model.eval()


def _mnist_calibration() -> list[tuple[torch.Tensor, torch.Tensor]]:
    from snn_encodings.data import mnist_split

    x, y = mnist_split("train", limit=256).tensors
    return [(x[i : i + 64], y[i : i + 64]) for i in range(0, 256, 64)]


def test_spikingjelly_core_recipe_predicts_as_core_converter(spec) -> None:
    adapter = _adapter()
    from spikingjelly.activation_based import ann2snn

    import snn_encodings
    from snn_encodings.data import mnist_split

    ann = _mnist_mlp()
    before = {k: v.clone() for k, v in ann.state_dict().items()}
    x, _ = mnist_split("eval", limit=48).tensors
    snn = ann2snn.Converter(adapter.recipe(spec, _mnist_calibration(), via="core")).convert(ann)
    core = snn_encodings.convert(ann, spec, _mnist_calibration())
    assert isinstance(snn, adapter.WholeRun) and not snn.training
    assert isinstance(snn.network, snn_encodings.SpikingNetwork)
    with torch.no_grad():
        got, want = snn(x), core(x)
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert torch.equal(got, want)
    assert all(torch.equal(before[k], v) for k, v in ann.state_dict().items())


def test_spikingjelly_icrate_recipe_agrees_with_core_converter_on_mnist() -> None:
    adapter = _adapter()
    from spikingjelly.activation_based import ann2snn, functional

    import snn_encodings
    from snn_encodings.data import mnist_split

    spec = ICRate(steps=32)
    ann = _mnist_mlp()
    x = mnist_split("eval", limit=200).tensors[0]
    snn = ann2snn.Converter(adapter.recipe(spec, _mnist_calibration())).convert(ann)
    functional.set_step_mode(snn, "m")
    with torch.no_grad():
        ours = snn(x.expand(spec.steps, *x.shape)).sum(0).argmax(1)
        core = snn_encodings.convert(ann, spec, _mnist_calibration())(x).argmax(1)
        ann_prediction = ann(x).argmax(1)
    assert (ours == core).float().mean() >= 0.95
    assert (ours == ann_prediction).float().mean() >= 0.95


def test_spikingjelly_cupy_backend_names_the_encodings_with_kernels(monkeypatch) -> None:
    adapter = _adapter()
    from snn_encodings.specs import Radix

    monkeypatch.delitem(adapter.kernels.KERNEL_SOURCES, Radix)
    with pytest.raises(ValueError, match=r"no kernel for Radix \(kernels: ICRate, Quartz\)"):
        adapter.RadixNode(Radix(steps=4), backend="cupy")


def test_spikingjelly_runs_signed_icrate_networks() -> None:
    adapter = _adapter()
    from spikingjelly.activation_based import ann2snn

    import snn_encodings
    from snn_encodings.data import mnist_split

    spec = ICRate(steps=8, signed=True)
    ann = _mnist_mlp()
    x, _ = mnist_split("eval", limit=48).tensors
    snn = ann2snn.Converter(adapter.recipe(spec, _mnist_calibration(), via="core")).convert(ann)
    core = snn_encodings.convert(ann, spec, _mnist_calibration())
    with torch.no_grad():
        assert torch.equal(snn(x), core(x))
