"""The closed forms (radix exact mode) and the IC-rate scan equal the step simulation spike for
spike and counter for counter."""

from __future__ import annotations

import pytest
import torch

import snn_encodings as se
from snn_encodings import zoo
from snn_encodings.coding.radix import encode_radix
from snn_encodings.conversion import icrate_fast
from snn_encodings.conversion.rules.icrate import ICRateLayer, mean_residual
from snn_encodings.conversion.rules.radix import RadixLayer
from snn_encodings.errors import ConversionError
from snn_encodings.functional import simulate
from snn_encodings.functional.radix import RadixState
from snn_encodings.specs import ICRate, Quartz, Radix

CASES = [("resnet18", 0.125), ("mobilenetv2", 0.25), ("vgg11_bn", 0.125), ("convnet", 1.0)]


def _network(name: str, width: float, spec) -> tuple[se.SpikingNetwork, torch.Tensor]:
    torch.manual_seed(0)
    model = zoo.set_batch_norm_stats(zoo.build(name, width=width), zoo.input_shape(name))
    x = torch.rand((3, *zoo.input_shape(name)), generator=torch.Generator().manual_seed(0))
    return se.convert(model, spec, [x]), x


def _run(network: se.SpikingNetwork, x: torch.Tensor, fast: bool):
    """Outputs, per-layer counts, final states and the hidden layers' output spike trains."""
    network.use_fast_path = fast
    trains: list[torch.Tensor] = []
    hooks = [
        stage.neurons.register_forward_hook(lambda m, i, out: trains.append(out))
        for stage in network.stages
        if stage.neurons is not None
    ]
    network.reset_counts()
    network.counting = True
    with torch.no_grad():
        out = network(x)
    network.counting = False
    for hook in hooks:
        hook.remove()
    counts = [(c.spikes, c.synaptic_events, c.samples) for c in network.counts]
    layers = [m for m in network.modules() if isinstance(m, RadixLayer)]
    return out, counts, [m.last_state for m in layers], [m.readout for m in layers], trains


RADIX_CASES = [(name, width, Radix()) for name, width in CASES] + [
    ("convnet", 1.0, Radix(steps=4, base=4)),
    ("vgg11_bn", 0.125, Radix(steps=3, base=4)),
]


@pytest.mark.parametrize(
    ("name", "width", "spec"), RADIX_CASES, ids=[f"{n}-base{s.base}" for n, _, s in RADIX_CASES]
)
def test_radix_closed_form_equals_the_step_simulation(name: str, width: float, spec: Radix) -> None:
    network, x = _network(name, width, spec)
    fast = _run(network, x, fast=True)
    slow = _run(network, x, fast=False)
    assert not fast[4], "the closed form must not call the neuron layers"
    assert torch.equal(fast[0], slow[0])
    assert fast[1] == slow[1]
    for got, want in zip(fast[2], slow[2]):
        assert isinstance(got, RadixState)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    for got, want in zip(fast[3], slow[3]):
        assert (got is None and want is None) or torch.equal(got, want)
    # the digit trains derived from the twin values are the simulated spike trains
    with torch.no_grad():
        values = network.activations(x)
    hidden = [i for i, stage in enumerate(network.stages, start=1) if stage.kind == "neuron"]
    for index, train in zip(hidden, slow[4]):
        assert torch.equal(encode_radix(values[index], spec), train)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("v0", [0.5, torch.tensor([0.0, 0.25, 0.7])], ids=["scalar", "per-channel"])
def test_icrate_scan_equals_the_step_function(v0, signed: bool) -> None:
    spec = ICRate(steps=16, signed=signed)
    layer = ICRateLayer(spec)
    layer.v0 = torch.as_tensor(v0)
    currents = torch.randn((16, 4, 3, 5, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        spikes, state = layer.run(currents)
    want = simulate(spec, currents, v0=layer.initial_v(currents[0]))
    assert torch.equal(spikes, want.spikes)
    assert torch.equal(state.v, want.state.v)
    if signed:
        assert torch.equal(state.count, want.state.count)
        assert (spikes < 0).any()


def test_signed_icrate_refuses_max_pooling() -> None:
    with pytest.raises(ConversionError, match="does not support max-pooling"):
        _network("vgg11_bn", 0.125, ICRate(steps=8, signed=True))


ICRATE_CASES = [(name, width, ICRate(steps=8)) for name, width in CASES] + [
    ("vgg11_bn", 0.125, ICRate(steps=7, init="data", compensate=False)),
    ("convnet", 1.0, ICRate(steps=5, input_coding="sigma_delta")),
    ("resnet18", 0.125, ICRate(steps=8, signed=True)),
    ("mobilenetv2", 0.25, ICRate(steps=6, signed=True, init="data")),
]


@pytest.mark.filterwarnings("ignore:convert .ICRate.*agree with its twin's")  # random weights
@pytest.mark.parametrize(
    "block_elements", [1, icrate_fast.BLOCK_ELEMENTS], ids=["1-step", "default"]
)
@pytest.mark.parametrize(
    ("name", "width", "spec"),
    ICRATE_CASES,
    ids=[f"{n}-T{s.steps}{'-signed' if s.signed else ''}" for n, _, s in ICRATE_CASES],
)
def test_icrate_in_time_blocks_equals_the_whole_window(
    name: str, width: float, spec: ICRate, block_elements: int, monkeypatch
) -> None:
    monkeypatch.setattr(icrate_fast, "BLOCK_ELEMENTS", block_elements)
    network, x = _network(name, width, spec)
    results = []
    for fast in (True, False):
        network.use_fast_path = fast
        network.reset_counts()
        network.counting = True
        with torch.no_grad():
            out = network(x)
        counts = [(c.spikes, c.synaptic_events, c.samples) for c in network.counts]
        states = [m.last_state.v for m in network.modules() if isinstance(m, ICRateLayer)]
        results.append((out, counts, states))
    (out, counts, states), (want_out, want_counts, want_states) = results
    assert torch.equal(out, want_out)
    assert counts == want_counts
    assert all(torch.equal(got, want) for got, want in zip(states, want_states, strict=True))


def test_icrate_layers_with_hooks_run_their_whole_window() -> None:
    network, x = _network("convnet", 1.0, ICRate(steps=8))
    output = network.stages[-1].neurons
    seen: list[torch.Tensor] = []
    handle = output.register_forward_hook(lambda module, args, spikes: seen.append(spikes))
    with torch.no_grad():
        hooked = network(x)
    handle.remove()
    with torch.no_grad():
        assert torch.equal(network(x), hooked)
    assert len(seen) == 1 and seen[0].shape == (8, 3, 10)


def test_time_blocks_split_the_window_evenly(monkeypatch) -> None:
    monkeypatch.setattr(icrate_fast, "BLOCK_ELEMENTS", 100)
    assert icrate_fast.time_block(8, 2, 10) == 4  # 160 entries: two blocks of 4 steps
    assert icrate_fast.time_block(8, 1, 10) == 8  # 80 entries fit one block
    assert icrate_fast.time_block(9, 2, 10) == 5  # 180: two blocks, 5 + 4 steps
    assert icrate_fast.time_block(8, 2, 1000) == 1  # one step is over the budget: 1-step blocks


@pytest.mark.filterwarnings("ignore:convert .ICRate.*agree with its twin's")  # random weights
def test_icrate_data_init_in_one_pass_equals_layer_by_layer_passes() -> None:
    network, x = _network("vgg11_bn", 0.125, ICRate(steps=8, init="data"))
    measured = [stage.neurons.v0.clone() for stage in network.stages if stage.kind == "neuron"]
    layers = [stage.neurons for stage in network.stages if stage.kind == "neuron"]
    for layer in layers:
        layer.v0 = torch.zeros(())
    with torch.no_grad():
        for layer in layers:  # the reference: one full network run per layer
            network(x)
            layer.v0 = mean_residual(layer.last_state.v, 1.0).to(layer.v0.dtype)
    for got, want in zip(measured, layers):
        assert torch.equal(got, want.v0)


@pytest.mark.parametrize(("name", "width"), CASES, ids=[n for n, _ in CASES])
def test_quartz_closed_form_in_narrow_floats_equals_the_float64_twin(
    name: str, width: float
) -> None:
    network, x = _network(name, width, Quartz(t_max=16))
    narrow = [s.split or s.exact_dtype == torch.float32 for s in network.stages if s.synapse]
    assert any(narrow)
    with torch.no_grad():
        assert torch.equal(network(x), network.twin(x))


def test_split_layers_are_shown_in_the_stage_repr() -> None:
    network, _ = _network("resnet18", 0.125, Radix())
    split = [stage for stage in network.stages if stage.split]
    assert split and "(two float32 parts)" in repr(split[0])
