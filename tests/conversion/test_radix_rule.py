from __future__ import annotations

import pytest
import torch
from torch import nn

from snn_encodings.coding.radix import decode_radix, encode_radix
from snn_encodings.conversion.rules.base import rule_for
from snn_encodings.conversion.rules.radix import RadixLayer, RadixRule
from snn_encodings.errors import SpecError
from snn_encodings.specs import Radix


def _linear_layer(
    rule: RadixRule, fan_in: int, fan_out: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    weight = (
        torch.randn((fan_out, fan_in), generator=generator, dtype=torch.float64) * 2 / fan_in**0.5
    )
    bias = torch.randn(fan_out, generator=generator, dtype=torch.float64) * 0.2
    return rule.quantise_weight(weight), rule.quantise_bias(bias)


def _snn_layer(rule: RadixRule, spikes, weight, bias, *, output: bool):
    window = rule.spec.steps_per_layer
    currents = (
        torch.einsum("tbi,oi->tbo", spikes, weight) + rule.bias_currents(bias, window)[:, None]
    )
    layer = rule.neuron_layer(output=output)
    out = layer(currents)
    return out, rule.decode_output(out, layer)


_CASES = [Radix(steps=t) for t in (3, 4, 6, 8)] + [
    Radix(steps=4, base=3),
    Radix(steps=3, base=4),
    Radix(steps=4, weight_bits=8),
]


@pytest.mark.parametrize("spec", _CASES, ids=repr)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_radix_rule_layers_match_twin_bit_for_bit(spec: Radix, seed: int) -> None:
    rule = rule_for(spec)
    assert isinstance(rule, RadixRule)
    generator = torch.Generator().manual_seed(100 + seed)
    x = torch.rand((16, 24), generator=generator, dtype=torch.float64) * 1.1  # some saturate
    w1, b1 = _linear_layer(rule, 24, 32, seed)
    w2, b2 = _linear_layer(rule, 32, 10, seed + 7)
    # SNN: two hidden layers' worth of spikes, then a non-rectified output layer
    spikes, hidden = _snn_layer(rule, rule.encode_input(x), w1, b1, output=False)
    _, logits = _snn_layer(rule, spikes, w2, b2, output=True)
    # ANN twin, summing in another order
    twin_hidden = rule.twin(nn.functional.linear(rule.decode_input(x), w1, b1))
    twin_logits = rule.twin_output(nn.functional.linear(twin_hidden, w2, b2))
    assert torch.equal(hidden, twin_hidden)
    assert torch.equal(logits, twin_logits)
    assert 0 < (hidden > 0).double().mean() < 1  # the check covers both sides of the ReLU


@pytest.mark.parametrize("steps", [3, 4, 6])
@pytest.mark.parametrize("seed", [0, 1])
def test_radix_rule_paper_mode_matches_twin_with_its_preconditions(steps: int, seed: int) -> None:
    spec = Radix(steps=steps, mode="paper")
    rule = RadixRule(spec)
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand((16, 24), generator=generator, dtype=torch.float64) * 1.1
    weight, bias = _linear_layer(rule, 24, 32, seed)
    _, hidden = _snn_layer(rule, rule.encode_input(x), weight, bias, output=False)
    twin = rule.twin(nn.functional.linear(rule.decode_input(x), weight, bias))
    assert torch.equal(hidden, twin)  # D = T fractional weight digits, overflow saturated


def test_radix_rule_input_is_quantised_and_saturated() -> None:
    rule = RadixRule(Radix(steps=2))
    x = torch.tensor([[0.0, 0.3, 0.99, 1.0]])
    assert rule.decode_input(x).tolist() == [[0.0, 0.25, 0.75, 0.75]]
    assert rule.encode_input(x).dtype == torch.float64


def test_radix_rule_bias_contributes_exactly_b() -> None:
    for spec in (Radix(steps=3), Radix(steps=2, base=3)):
        rule = RadixRule(spec)
        bias = torch.tensor([0.375, -0.25, 2.0], dtype=torch.float64)
        layer = rule.neuron_layer(output=True)
        layer(rule.bias_currents(bias, spec.steps_per_layer)[:, None])
        assert torch.equal(rule.decode_output(torch.zeros(1), layer)[0], bias)
    with pytest.raises(SpecError, match="window"):
        RadixRule(Radix(steps=3)).bias_currents(torch.zeros(2), 5)


def test_radix_rule_max_pool_is_value_domain_max() -> None:
    spec = Radix(steps=4)
    rule = RadixRule(spec)
    generator = torch.Generator().manual_seed(3)
    values = torch.randint(0, 16, (2, 3, 4, 4), generator=generator).to(torch.float64) / 16
    pooled = rule.max_pool(encode_radix(values, spec), nn.MaxPool2d(2))
    assert torch.equal(decode_radix(pooled, spec), nn.functional.max_pool2d(values, 2))


def test_radix_rule_rejects_non_radix_setting_and_bad_windows() -> None:
    with pytest.raises(SpecError, match="leak = threshold = 1/base"):
        RadixRule(Radix(leak=0.7))
    with pytest.raises(SpecError, match="currents must be"):
        RadixLayer(Radix(steps=3), output=False)(torch.zeros(4, 2))
    with pytest.raises(SpecError, match="run the output layer"):
        RadixRule(Radix()).decode_output(torch.zeros(1), RadixLayer(Radix(), output=True))


def test_radix_layer_exposes_last_state() -> None:
    layer = RadixRule(Radix(steps=3)).neuron_layer(output=False)
    layer(torch.zeros(3, 2, dtype=torch.float64))
    assert layer.last_state is not None and layer.last_state.v.shape == (2,)
