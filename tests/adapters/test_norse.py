"""The Norse adapter: cells and layers equal the core neuron, and behave as Norse modules."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest
import torch
from conftest import SPEC_EXAMPLES, require

from snn_encodings.errors import ConversionError, ExportError, SpecError
from snn_encodings.functional import neuron_functions, simulate
from snn_encodings.specs import ALL_SPECS, ICRate, Quartz
from snn_encodings.testing import assert_same_trace, run_core

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

SHAPES = [(3,), (2, 5), (2, 3, 4, 4)]
DTYPES = [torch.float32, torch.float64]


@pytest.fixture
def adapter() -> ModuleType:
    require("norse")
    return importlib.import_module("snn_encodings.adapters.norse")


def _cell_trace(cell: torch.nn.Module, currents: torch.Tensor, state=None):
    spikes, states = [], []
    for current in currents:
        out, state = cell(current, state)
        spikes.append(out)
        states.append(state)
    stacked = type(state)(*(torch.stack(field) for field in zip(*states)))
    return torch.stack(spikes), stacked


def _assert_same_state(got, want) -> None:
    assert type(got) is type(want)
    for name, a, b in zip(want._fields, got, want):
        assert a.dtype == b.dtype, name
        assert torch.equal(a, b), name


def test_norse_neurons_cover_all_specs(adapter):
    assert set(adapter.NEURONS) == set(ALL_SPECS)
    for spec_type, (cell, layer) in adapter.NEURONS.items():
        assert cell.spec_type is spec_type and layer.spec_type is spec_type


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norse_cell_matches_core(adapter, spec, shape, dtype, make_currents):
    currents = make_currents(shape, steps=12, dtype=dtype)
    cell_type, _ = adapter.NEURONS[type(spec)]
    spikes, states = _cell_trace(cell_type(spec), currents)
    want = simulate(spec, currents, record=True)
    assert spikes.dtype == dtype
    assert_same_trace((spikes, states[0]), run_core(spec, currents))
    _assert_same_state(states, want.states)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_norse_layer_matches_core(adapter, spec, shape, dtype, make_currents):
    currents = make_currents(shape, steps=12, dtype=dtype)
    _, layer_type = adapter.NEURONS[type(spec)]
    want = simulate(spec, currents, record=True)
    spikes, states = layer_type(spec, record_states=True)(currents)
    assert_same_trace((spikes, states[0]), run_core(spec, currents))
    _assert_same_state(states, want.states)
    spikes, state = layer_type(spec)(currents)
    assert torch.equal(spikes, want.spikes)
    _assert_same_state(state, want.state)


def test_norse_layer_split_run_equals_one_run(adapter, spec, make_currents):
    currents = make_currents((2, 5), steps=12)
    cell_type, layer_type = adapter.NEURONS[type(spec)]
    layer = layer_type(spec)
    whole, whole_state = layer(currents)
    first, state = layer(currents[:5])
    second, state = layer(currents[5:], state)
    assert torch.equal(torch.cat([first, second]), whole)
    _assert_same_state(state, whole_state)
    cell_spikes, _ = _cell_trace(cell_type(spec), currents[5:], state=layer(currents[:5])[1])
    assert torch.equal(cell_spikes, second)


def test_norse_state_none_starts_from_initial_state(adapter, spec, make_currents):
    currents = make_currents((2, 5), steps=3)
    functions = neuron_functions(spec)
    cell_type, layer_type = adapter.NEURONS[type(spec)]
    _assert_same_state(
        cell_type(spec).initial_state(currents[0]), functions.initial_state(spec, currents[0])
    )
    _assert_same_state(
        layer_type(spec).initial_state(currents), functions.initial_state(spec, currents[0])
    )
    explicit = functions.initial_state(spec, currents[0])
    assert torch.equal(layer_type(spec)(currents)[0], layer_type(spec)(currents, explicit)[0])


def test_norse_icrate_v0_is_the_initial_membrane(adapter):
    zero = torch.zeros(1, 2)
    _, state = adapter.ICRateCell(ICRate(steps=4, init="ann"))(zero)
    assert state.v.tolist() == [[0.5, 0.5]]
    _, state = adapter.ICRateCell(ICRate(steps=4, init="zero"))(zero)
    assert state.v.tolist() == [[0.0, 0.0]]
    per_channel = torch.tensor([0.25, 0.75])
    layer = adapter.ICRateNeurons(ICRate(steps=4), v0=per_channel)
    _, state = layer(torch.zeros(1, 3, 2, dtype=torch.float64))
    assert state.v.dtype == torch.float64
    assert state.v.tolist() == [[0.25, 0.75]] * 3
    assert "v0" in layer.state_dict()


def test_norse_modules_work_in_sequential_state_and_lift(adapter, spec, make_currents):
    norse = importlib.import_module("norse.torch")
    currents = make_currents((2, 4), steps=8)
    torch.manual_seed(0)
    linear = torch.nn.Linear(4, 3)
    cell_type, layer_type = adapter.NEURONS[type(spec)]
    by_layer, _ = norse.SequentialState(norse.Lift(linear), layer_type(spec))(currents)
    by_lift, _ = norse.Lift(cell_type(spec))(linear(currents))
    stepped = norse.SequentialState(linear, cell_type(spec))
    state, outputs = None, []
    for current in currents:
        out, state = stepped(current, state)
        outputs.append(out)
    assert torch.equal(by_layer, by_lift)
    assert torch.equal(by_layer, torch.stack(outputs))
    assert by_layer.shape == (8, 2, 3)


@pytest.mark.parametrize("method", ["super", "triangle", "heaviside", None])
def test_norse_surrogate_keeps_spikes_exact(adapter, spec, method, make_currents):
    currents = make_currents((2, 5), steps=10).requires_grad_()
    _, layer_type = adapter.NEURONS[type(spec)]
    spikes, _ = layer_type(spec, method=method, alpha=2.0)(currents)
    assert torch.equal(spikes.detach(), run_core(spec, currents.detach()).spikes)
    if method in ("super", "triangle"):
        spikes.sum().backward()
        assert currents.grad is not None and torch.isfinite(currents.grad).all()
        # the triangle's support is |x| < 1/alpha: a neuron whose drive stays outside it (e.g.
        # the paper radix neuron, whose drive is often an integer) rightly gets no gradient
        if method == "super":
            assert currents.grad.abs().sum() > 0


def test_norse_icrate_training_step_reduces_loss(adapter):
    norse = importlib.import_module("norse.torch")
    torch.manual_seed(0)
    spec = ICRate(steps=8)
    inputs = torch.rand(8, 16, 4)
    target = torch.full((16, 2), 0.5)
    net = norse.SequentialState(
        norse.Lift(torch.nn.Linear(4, 2)), adapter.ICRateNeurons(spec, method="super", alpha=2.0)
    )
    optimiser = torch.optim.SGD(net.parameters(), lr=0.5)

    def loss() -> torch.Tensor:
        spikes, _ = net(inputs)
        return ((spikes.mean(0) - target) ** 2).mean()

    before = loss()
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    assert loss().item() < before.item()


def test_norse_learnable_parameters_follow_to_and_get_gradients(adapter):
    cell = adapter.ICRateCell(ICRate(steps=4), learn_threshold=True, learn_v0=True, alpha=2.0)
    assert sorted(name for name, _ in cell.named_parameters()) == ["threshold", "v0"]
    cell = cell.to(torch.float64)
    assert cell.p.threshold.dtype == torch.float64 and cell.p.v0.dtype == torch.float64
    spikes, state = cell(torch.full((3,), 0.7, dtype=torch.float64))
    assert spikes.dtype == torch.float64 and spikes.tolist() == [1.0, 1.0, 1.0]
    (spikes.sum() + state.v.sum()).backward()
    assert cell.threshold.grad is not None and cell.v0.grad is not None
    cell.load_state_dict({"threshold": torch.tensor(2.0), "v0": torch.tensor(0.0)})
    assert cell(torch.full((3,), 0.7, dtype=torch.float64))[0].tolist() == [0.0, 0.0, 0.0]


def test_norse_rejects_wrong_spec_type(adapter):
    class Other:
        pass

    with pytest.raises(TypeError, match="expects a neuron spec"):
        adapter.Cell(Other())
    for spec_type, (cell_type, layer_type) in adapter.NEURONS.items():
        wrong = next((s for s in SPEC_EXAMPLES if type(s) is not spec_type), None)
        if wrong is None:
            continue
        with pytest.raises(TypeError, match=f"expects a {spec_type.__name__} spec"):
            cell_type(wrong)
        with pytest.raises(TypeError, match=f"expects a {spec_type.__name__} spec"):
            layer_type(wrong)


def test_norse_rejects_bad_options(adapter):
    with pytest.raises(SpecError, match="method='nope' is not a Norse threshold"):
        adapter.ICRateCell(ICRate(), method="nope")
    with pytest.raises(TypeError, match="p must be EncodingParameters"):
        adapter.ICRateCell(ICRate()).p = (ICRate(),)


def test_norse_step_options_reach_the_core_step(adapter, make_currents):
    spec = Quartz(t_max=3)
    currents = make_currents((2, 5), steps=spec.steps_per_layer, dtype=torch.float64) - 0.6
    layer = adapter.QuartzNeurons(spec, step_options={"rectify": False})
    spikes, state = layer(currents)
    want = simulate(spec, currents, rectify=False)
    assert torch.equal(spikes, want.spikes)
    _assert_same_state(state, want.state)
    assert not torch.equal(spikes, simulate(spec, currents).spikes)
    assert "step_options={'rectify': False}" in repr(layer)


def test_norse_rejects_unknown_step_options(adapter):
    with pytest.raises(TypeError, match=r"step_options \['rectfy'\] are not keyword overrides"):
        adapter.QuartzCell(Quartz(), step_options={"rectfy": False})
    with pytest.raises(TypeError, match=r"step_options \['threshold'\]"):
        adapter.ICRateNeurons(ICRate(), step_options={"threshold": 2.0})


def test_norse_rejects_wrong_shapes_and_states(adapter, spec, make_currents):
    currents = make_currents((2, 5), steps=4)
    cell_type, layer_type = adapter.NEURONS[type(spec)]
    cell, layer = cell_type(spec), layer_type(spec, record_states=True)
    with pytest.raises(SpecError, match=r"time-first \(T, B, \*\)"):
        layer(currents[0, 0])
    with pytest.raises(SpecError, match=r"T >= 1"):
        layer(currents[:0])
    _, state = cell(currents[0])
    with pytest.raises(SpecError, match=r"has shape \(2, 5\) but the input needs \(3, 5\)"):
        cell(torch.zeros(3, 5), state)
    _, recorded = layer(currents)
    with pytest.raises(SpecError, match="stacked over time"):
        layer(currents, recorded)
    with pytest.raises(TypeError, match="state must be a"):
        cell(currents[0], (state[0],))
    with pytest.raises(TypeError, match="input must be a tensor"):
        cell([0.0])


def test_norse_to_nir_refuses_our_neurons(adapter, spec):
    norse = importlib.import_module("norse.torch")
    cell_type, _ = adapter.NEURONS[type(spec)]
    net = norse.SequentialState(torch.nn.Linear(4, 3), cell_type(spec))
    with pytest.raises(ExportError, match=r"layer '1' \(\w+Cell\) cannot be exported to NIR"):
        adapter.to_nir(net, torch.zeros(1, 4))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_norse_to_nir_passes_other_networks_to_norse(adapter):
    require("nir")
    norse = importlib.import_module("norse.torch")
    net = norse.SequentialState(torch.nn.Linear(4, 3), norse.IAFCell())
    graph = adapter.to_nir(net, torch.zeros(1, 4))
    kinds = sorted(type(node).__name__ for node in graph.nodes.values())
    assert "IF" in kinds and "Affine" in kinds


# --- conversion ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_cnn() -> tuple[torch.nn.Module, torch.utils.data.DataLoader, torch.Tensor]:
    """A tiny CNN with max-pooling, briefly trained on shipped MNIST images (read-only)."""
    from snn_encodings.data.mnist import mnist_split

    torch.manual_seed(0)
    train = mnist_split("train", limit=512)
    ann = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 5, stride=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 6 * 6, 10),
    )
    optimiser = torch.optim.Adam(ann.parameters(), lr=1e-2)
    loader = torch.utils.data.DataLoader(train, batch_size=64, shuffle=False)
    for x, y in loader:
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(ann(x), y).backward()
        optimiser.step()
    ann.eval()
    calibration = torch.utils.data.DataLoader(mnist_split("train", limit=256), batch_size=128)
    images = mnist_split("eval", limit=48).tensors[0]
    return ann, calibration, images


def test_norse_converted_model_predicts_as_core_network(adapter, spec, mnist_cnn):
    import snn_encodings

    ann, calibration, images = mnist_cnn
    if getattr(spec, "signed", False):  # takes no max-pooling: the same CNN, average-pooled
        ann = torch.nn.Sequential(
            *(torch.nn.AvgPool2d(2) if isinstance(m, torch.nn.MaxPool2d) else m for m in ann)
        )
    network = snn_encodings.convert(ann, spec, calibration)
    model = adapter.from_spiking_network(network)
    with torch.no_grad():
        want = network(images)
        got, states = model(images)
    assert torch.equal(got, want)
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert isinstance(states[2], type(neuron_functions(spec).initial_state(spec, torch.zeros(()))))
    windows = [m for m in model.modules() if isinstance(m, adapter.Neurons)]
    assert len(windows) == 2 and all(type(w) is adapter.NEURONS[type(spec)][1] for w in windows)


def test_norse_convert_runs_the_core_converter(adapter, mnist_cnn):
    import snn_encodings

    norse = importlib.import_module("norse.torch")
    ann, calibration, images = mnist_cnn
    spec = ICRate(steps=8, init="data")
    model = adapter.convert(ann, spec, calibration)
    assert isinstance(model, norse.SequentialState)
    layers = [m for m in model.modules() if isinstance(m, adapter.ICRateNeurons)]
    assert len(layers) == 2 and layers[0].v0.shape == (4, 1, 1)
    with torch.no_grad():
        assert torch.equal(model(images)[0], snn_encodings.convert(ann, spec, calibration)(images))


def test_norse_convert_rejects_branching_networks(adapter):
    import snn_encodings

    class Residual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1 = torch.nn.Linear(6, 5)
            self.fc2 = torch.nn.Linear(5, 5)
            self.fc3 = torch.nn.Linear(5, 5)
            self.out = torch.nn.Linear(5, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = torch.relu(self.fc1(x))
            b = torch.relu(self.fc2(a))
            return self.out(torch.relu(self.fc3(b) + a))

    torch.manual_seed(0)
    calibration = [torch.rand(8, 6)]
    network = snn_encodings.convert(Residual(), ICRate(steps=4), calibration)
    with pytest.raises(ConversionError, match="runs chains only"):
        adapter.from_spiking_network(network)
    with pytest.raises(TypeError, match="expected a SpikingNetwork"):
        adapter.from_spiking_network(torch.nn.Linear(2, 2))


def test_norse_convert_rejects_layers_without_hooks(adapter):
    import snn_encodings

    torch.manual_seed(0)
    ann = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    network = snn_encodings.convert(ann, ICRate(steps=4), [torch.rand(8, 6)])
    network.stages[0].neurons = torch.nn.Identity()
    with pytest.raises(ConversionError, match=r"\(Identity\) is not a NeuronLayer"):
        adapter.from_spiking_network(network)


@pytest.mark.parametrize(
    "spec", [Quartz(t_max=8), ICRate(steps=16, compensate=False)], ids=["quartz", "icrate"]
)
def test_norse_view_subtracts_the_output_offset_of_negative_logits(adapter, spec):
    """Logits all far below zero: convert lifts them by an offset that the core network
    subtracts after decoding; the Norse view must give the same outputs, not shifted ones."""
    import snn_encodings

    torch.manual_seed(0)
    ann = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5)
    ).eval()
    with torch.no_grad():
        ann[3].bias.sub_(10.0)
    x = torch.rand((64, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    network = snn_encodings.convert(ann, spec, [x])
    assert float(network.output_offset) > 0
    with torch.no_grad():
        want = network(x)
        got, _ = adapter.from_spiking_network(network)(x)
    assert torch.equal(got, want)


def test_norse_runs_signed_icrate_neurons_as_the_core_does(adapter, make_currents):
    spec = ICRate(steps=12, signed=True)
    currents = make_currents((3, 5), steps=12) * 4  # bursts of several thresholds
    want = simulate(spec, currents, record=True)
    assert (want.spikes < 0).any()
    spikes, states = _cell_trace(adapter.ICRateCell(spec), currents)
    assert torch.equal(spikes, want.spikes)
    _assert_same_state(states, want.states)
    spikes, state = adapter.ICRateNeurons(spec)(currents)
    assert torch.equal(spikes, want.spikes)
    _assert_same_state(state, want.state)


def test_norse_convert_refuses_max_pooling_for_signed_icrate(adapter, mnist_cnn):
    ann, calibration, _ = mnist_cnn
    with pytest.raises(ConversionError, match="does not support max-pooling"):
        adapter.convert(ann, ICRate(steps=8, signed=True), calibration)
