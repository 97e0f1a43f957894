from __future__ import annotations

import dataclasses

import pytest
import torch
from quartz_reference import quartz_layer_values
from torch import nn

from snn_encodings.conversion.rules.base import rule_for
from snn_encodings.conversion.rules.quartz import QuartzLayer, QuartzRule
from snn_encodings.errors import ConversionError
from snn_encodings.specs import Quartz

SPECS = [
    Quartz(t_max=16, analytic=False),
    Quartz(t_max=15),
    Quartz(t_max=6, rounding="floor"),
    Quartz(t_max=16, analytic=True),
    Quartz(t_max=16, analytic=False, bias_coding="time"),
    Quartz(t_max=6, rounding="floor", bias_coding="time"),
]
PAPER_SPECS = [dataclasses.replace(spec, mode="paper") for spec in SPECS]


def _layer(rule: QuartzRule, n_in: int, n_out: int, scale: float, seed: int):
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.rand(n_out, n_in, generator=generator, dtype=torch.float64) * 2 - 1) * scale
    bias = torch.rand(n_out, generator=generator, dtype=torch.float64) * 1.2 - 0.6
    return rule.quantise_values(weight, bias)


def _snn_layer(rule: QuartzRule, spikes, weight, bias, output: bool):
    """Spikes (T, B, n_in) -> (layer, raw currents, output spikes), as the pipeline wires it."""
    currents = spikes @ weight.T + rule.bias_currents(bias, spikes.shape[0]).unsqueeze(1)
    layer = rule.neuron_layer(output)
    return layer, layer(currents)


def _early_mask(rule: QuartzRule, spikes, weight, bias, output: bool):
    currents = spikes @ weight.T + rule.bias_currents(bias, spikes.shape[0]).unsqueeze(1)
    from snn_encodings.functional import quartz_first_spikes

    paper = dataclasses.replace(rule.spec, mode="paper")
    raw, _ = quartz_first_spikes(currents, paper, rectify=not output)
    return raw[: rule.spec.read_step].any(0)


def test_quartz_rule_is_registered() -> None:
    rule = rule_for(Quartz(t_max=8))
    assert isinstance(rule, QuartzRule)
    assert rule.dtype == torch.float64
    assert rule.calibration_percentile() == 98.5


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@pytest.mark.parametrize("output", [False, True])
def test_quartz_layer_equals_twin_without_early_spikes(spec, output) -> None:
    # sum of positive weights < 1 -> the membrane cannot reach theta before the readout
    rule = QuartzRule(spec)
    weight, bias = _layer(rule, 20, 30, scale=0.09, seed=1)
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    layer, out = _snn_layer(rule, rule.encode_input(x), weight, bias, output)
    z = rule.decode_input(x) @ weight.T + bias
    want = rule.twin_output(z) if output else rule.twin(z)
    assert layer.early_spikes == 0
    assert torch.equal(rule.decode_output(out, layer), want)
    assert layer.last_state is not None and layer.last_state.v.shape == (64, 30)


@pytest.mark.parametrize("spec", PAPER_SPECS, ids=repr)
def test_quartz_paper_layer_equals_twin_except_early_spikes(spec) -> None:
    rule = QuartzRule(spec)
    weight, bias = _layer(rule, 20, 30, scale=0.6, seed=3)
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    spikes = rule.encode_input(x)
    layer, out = _snn_layer(rule, spikes, weight, bias, False)
    early = _early_mask(rule, spikes, weight, bias, False)
    decoded = rule.decode_output(out, layer)
    want = rule.twin(rule.decode_input(x) @ weight.T + bias)
    assert layer.early_spikes == int(early.sum()) > 0
    assert 0 < layer.early_fraction < 1
    assert torch.equal(decoded[~early], want[~early])
    assert (decoded[early] >= want[early]).all()  # an early spike reads too high


@pytest.mark.parametrize("spec", SPECS, ids=repr)
@pytest.mark.parametrize("output", [False, True])
def test_quartz_exact_layer_equals_twin_where_the_paper_neuron_fires_early(spec, output) -> None:
    rule = QuartzRule(spec)
    weight, bias = _layer(rule, 20, 30, scale=0.6, seed=3)
    x = torch.rand(64, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    spikes = rule.encode_input(x)
    layer, out = _snn_layer(rule, spikes, weight, bias, output)
    z = rule.decode_input(x) @ weight.T + bias
    want = rule.twin_output(z) if output else rule.twin(z)
    assert _early_mask(rule, spikes, weight, bias, output).sum() > 0  # the gate held these
    assert layer.early_spikes == 0
    assert torch.equal(rule.decode_output(out, layer), want)


@pytest.mark.parametrize(
    "spec", [*SPECS[:3], *SPECS[4:], *PAPER_SPECS[:3], *PAPER_SPECS[4:]], ids=repr
)
def test_quartz_analytic_values_equal_simulation_spike_for_spike(spec) -> None:
    rule = QuartzRule(spec)
    x = torch.rand(32, 20, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    values = rule.decode_input(x)
    spikes = rule.encode_input(x)
    total_early = 0
    for index, (n_out, scale) in enumerate([(24, 0.6), (16, 0.5), (10, 0.4)]):
        output = index == 2
        weight, bias = _layer(rule, spikes.shape[-1], n_out, scale=scale, seed=10 + index)
        layer, spikes = _snn_layer(rule, spikes, weight, bias, output)
        values, early = quartz_layer_values(
            values, lambda a, w=weight: a @ w.T, bias, spec, output=output
        )
        assert int(early.sum()) == layer.early_spikes
        assert torch.equal(rule.decode_output(spikes, layer), values)
        total_early += layer.early_spikes
    assert (total_early > 0) == (spec.mode == "paper")


def test_quartz_multilayer_network_equals_twin_chain() -> None:
    spec = Quartz(t_max=16)
    rule = QuartzRule(spec)
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    conv = nn.Conv2d(1, 4, 3, padding=1).double()
    with torch.no_grad():
        w, b = rule.quantise_values(conv.weight * 0.3, conv.bias)
        conv.weight.copy_(w)
        conv.bias.copy_(b)
    pool = nn.MaxPool2d(2)
    weight, bias = _layer(rule, 4 * 4 * 4, 5, scale=0.1, seed=7)
    # SNN
    spikes = rule.encode_input(x)
    steps = spikes.shape[0]
    conv_bias = conv.bias.detach().view(4, 1, 1).expand(4, 8, 8)
    currents = nn.functional.conv2d(
        nn.functional.pad(spikes.flatten(0, 1), (1, 1, 1, 1)), conv.weight
    ).unflatten(0, (steps, 16)) + rule.bias_currents(conv_bias, steps).unsqueeze(1)
    hidden = rule.neuron_layer(False)
    s1 = rule.max_pool(hidden(currents), pool)
    out_layer, out = _snn_layer(rule, s1.flatten(2), weight, bias, True)
    # twin
    with torch.no_grad():
        a1 = pool(rule.twin(conv(rule.decode_input(x))))
        want = rule.twin_output(a1.flatten(1) @ weight.T + bias)
    assert hidden.early_spikes == 0 and out_layer.early_spikes == 0
    assert torch.equal(rule.decode_output(out, out_layer), want)


def test_quartz_max_pool_keeps_earliest_spike() -> None:
    rule = QuartzRule(Quartz(t_max=4))
    values = torch.tensor([[[[0.25, 1.0], [0.5, 0.0]]]], dtype=torch.float64)
    spikes = rule.encode_input(values)
    pooled = rule.max_pool(spikes, nn.MaxPool2d(2))
    assert pooled.shape == (16, 1, 1, 1, 1)
    assert pooled.sum().item() == 1.0
    assert rule.decode_output(pooled, QuartzLayer(rule.spec)).item() == 1.0


def test_quartz_weight_coded_bias_is_one_spike_at_the_value_one_step() -> None:
    rule = QuartzRule(Quartz(t_max=4))
    bias = torch.tensor([0.5, -0.25, 0.0, 3.0, -1.5], dtype=torch.float64)
    currents = rule.bias_currents(bias, 16)
    assert torch.equal(currents[4], bias)
    assert torch.equal(currents.abs().sum(0), bias.abs())
    # a spike of weight b at step K adds K b to the membrane at the readout (step 2K)
    assert torch.equal((currents * (8 - torch.arange(16.0)).clamp(min=0)[:, None]).sum(0), 4 * bias)


def test_quartz_time_coded_bias_currents_encode_signed_levels() -> None:
    rule = QuartzRule(Quartz(t_max=4, bias_coding="time"))
    bias = torch.tensor([0.5, -0.25, 0.0, 3.0, -1.5], dtype=torch.float64)
    currents = rule.bias_currents(bias, 16)
    # levels 2, -1, 0, 8 (clipped at 2K), -6 -> steps 6, 7, 8, 0, 2 with weights +1, -1, 0, +1, -1
    assert currents.argmax(0)[[0, 3]].tolist() == [6, 0]
    assert currents.argmin(0)[[1, 4]].tolist() == [7, 2]
    assert currents.sum(0).tolist() == [1.0, -1.0, 0.0, 1.0, -1.0]
    with pytest.raises(ConversionError, match="window has 16 steps"):
        rule.bias_currents(bias, 12)


def test_quartz_quantise_synapse_grids() -> None:
    weights, biases = torch.tensor([0.1, -0.3]), torch.tensor([0.3, -5.0])
    rule = QuartzRule(Quartz(t_max=4, weight_frac_bits=3))
    weight, bias = rule.quantise_values(weights, biases)
    assert weight.tolist() == [0.125, -0.25]
    assert bias.tolist() == [0.25, -5.0]  # the weights' grid 1/8, any size
    rule = QuartzRule(Quartz(t_max=4, weight_frac_bits=3, bias_coding="time"))
    weight, bias = rule.quantise_values(weights, biases)
    assert weight.tolist() == [0.125, -0.25]
    assert bias.tolist() == [0.25, -2.0]  # the grid 1/K, clipped to [-2, 2]


def test_quartz_layer_rejects_wrong_window() -> None:
    layer = QuartzLayer(Quartz(t_max=4))
    with pytest.raises(ConversionError, match="expected 16 steps"):
        layer(torch.zeros(10, 1, 3))


def test_quartz_rule_rejects_other_specs() -> None:
    from snn_encodings.specs import ICRate

    with pytest.raises(TypeError, match="Quartz spec"):
        QuartzRule(ICRate())


@pytest.mark.parametrize("mode", ["exact", "paper"])
@pytest.mark.parametrize("percentile", [98.5, 100.0])
def test_quartz_convert_reproduces_twin_on_mnist(percentile, mode) -> None:
    from snn_encodings import convert
    from snn_encodings.data.mnist import mnist_split

    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(1, 4, 5, stride=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    )
    x = mnist_split("eval", limit=32).tensors[0]
    spec = Quartz(t_max=16, mode=mode, analytic=percentile == 100.0)
    snn = convert(ann, spec, [x], percentile=percentile)
    with torch.no_grad():
        out, twin = snn(x), snn.twin(x)
    layers = [stage.neurons for stage in snn.stages if stage.kind != "pool"]
    early = torch.stack([layer.last_early.flatten(1).any(1) for layer in layers]).any(0)
    assert (~early).sum() > 0
    assert torch.equal(out[~early], twin[~early])
    if mode == "exact":
        assert not early.any()
        assert torch.equal(out, twin)
