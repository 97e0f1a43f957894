from __future__ import annotations

import pytest
import torch
from torch import nn

from quartz_reference import bias_corrected_normalise, layerwise_normalise, quartz_layer_values

from snn_encodings.conversion.quartz_analysis import quartz_operations
from snn_encodings.errors import ConversionError
from snn_encodings.specs import Quartz


def _model(bias: bool, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(12, 16, bias=bias),
        nn.ReLU(),
        nn.Linear(16, 16, bias=bias),
        nn.ReLU(),
        nn.Linear(16, 4, bias=bias),
    ).double()


def _data() -> torch.Tensor:
    return torch.rand(256, 12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _pre_activations(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for module in model:
        x = module(x)
        if isinstance(module, nn.Linear):
            out.append(x)
    return out


def test_algorithm1_equals_layerwise_rule_without_biases() -> None:
    model, x = _model(bias=False), _data()
    literal, s = bias_corrected_normalise(model, x, 98.5)
    rule, lambdas = layerwise_normalise(model, x, 98.5)
    cumulative = torch.cumprod(torch.tensor(s, dtype=torch.float64), 0)
    assert torch.allclose(cumulative, torch.tensor(lambdas, dtype=torch.float64), rtol=1e-12)
    for a, b in zip(literal.parameters(), rule.parameters()):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)


def test_algorithm1_is_the_layerwise_rule_with_cumulative_scales() -> None:
    # With biases, Algorithm 1 measures s_l before rescaling b_l, so its cumulative scale
    # mu_l = s_1 ... s_l is the layer-wise rule's lambda_l only for l = 1; the weights and
    # biases are still exactly the layer-wise rule's with lambda_l = mu_l, and every layer
    # of the normalised net outputs raw / mu_l.
    model, x = _model(bias=True), _data()
    literal, s = bias_corrected_normalise(model, x, 98.5)
    mu = torch.cumprod(torch.tensor(s, dtype=torch.float64), 0).tolist()
    rule, _ = layerwise_normalise(model, x, scales=mu)
    for a, b in zip(literal.parameters(), rule.parameters()):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-15)
    for raw, normalised, scale in zip(_pre_activations(model, x), _pre_activations(literal, x), mu):
        assert torch.allclose(normalised, raw / scale, rtol=1e-10, atol=1e-12)
    _, lambdas = layerwise_normalise(model, x, 98.5)
    assert mu[0] == pytest.approx(lambdas[0], rel=1e-12)


def test_layerwise_rule_puts_the_percentile_at_one() -> None:
    model, x = _model(bias=True), _data()
    normalised, _ = layerwise_normalise(model, x, 98.5)
    for activation in _pre_activations(normalised, x):
        assert torch.quantile(activation.flatten(), 0.985).item() == pytest.approx(1.0, rel=1e-9)


def test_normalise_rejects_non_sequential() -> None:
    with pytest.raises(ConversionError, match="expects an nn.Sequential"):
        bias_corrected_normalise(nn.Linear(2, 2), torch.zeros(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ConversionError, match="no Linear or Conv2d"):
        layerwise_normalise(nn.Sequential(nn.ReLU()), torch.zeros(1, 2))
    with pytest.raises(ConversionError, match="3 parameter layers but 2 scales"):
        layerwise_normalise(_model(bias=True), _data(), scales=[1.0, 2.0])


def test_quartz_operations_matches_equation_9() -> None:
    ops = quartz_operations([38_000.0, 2_000.0], [4_000, 400], Quartz(t_max=16))
    assert ops.synops == 40_000 and ops.neurons == 4_400
    assert ops.total == 40_000 + 2 * 4_400 * 16
    assert ops.read == 40_000 + 4 * 4_400 * 16
    assert ops.write == 40_000 + 4_400 * 16
    with pytest.raises(ConversionError, match="must be >= 0"):
        quartz_operations(-1, 0, Quartz())


def test_quartz_layer_values_fast_path_is_the_twin() -> None:
    spec = Quartz(t_max=8)
    weight = torch.tensor([[0.5, -0.25], [1.0, 1.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.5], [0.25, 0.0]], dtype=torch.float64)
    values, early = quartz_layer_values(x, lambda a: a @ weight.T, None, spec, exact_early=False)
    assert values.tolist() == [[0.375, 1.0], [0.125, 0.25]]
    assert not early.any()
