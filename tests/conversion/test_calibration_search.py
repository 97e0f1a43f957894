"""The default calibration searches each layer's clip scale and reports its choice."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import snn_encodings as se
from snn_encodings.conversion.calibrate import (
    PERCENTILE_CANDIDATES,
    ActivationStats,
    ScaleChoice,
    percentile_from_histogram,
)
from snn_encodings.errors import ConversionError
from snn_encodings.functional.channels import channel_view


def _accuracy(model: nn.Module, data: TensorDataset) -> float:
    x, y = data.tensors
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum()) / len(y)


def test_search_reports_its_choice_per_layer(trained_ann, mnist_calibration) -> None:
    loader = DataLoader(mnist_calibration, batch_size=250)
    network = se.convert(trained_ann, se.ICRate(steps=8), loader)
    choices = [stage.calibration for stage in network.stages]
    assert all(isinstance(choice, ScaleChoice) for choice in choices)
    assert all(choice.error >= 0 for choice in choices)
    assert network.stages[-1].kind == "output" and not choices[-1].per_channel
    assert f"calibration={choices[0]}" in repr(network)


def test_search_recovers_the_low_step_radix_twin_that_the_maximum_loses(
    trained_ann, mnist_calibration, mnist_eval
):
    # T = 3 on 1 000 evaluation images: the maximum loses 1.9 pt, the search 0.5 pt
    spec = se.Radix(steps=3)
    loader = DataLoader(mnist_calibration, batch_size=250)
    evaluation = TensorDataset(*(t[:1000] for t in mnist_eval.tensors))
    searched = se.convert(trained_ann, spec, loader)
    fixed = se.convert(trained_ann, spec, loader, percentile="default", per_channel=False)
    assert all(stage.calibration is None for stage in fixed.stages)
    ann = _accuracy(trained_ann, evaluation)
    fixed_accuracy = _accuracy(fixed.twin, evaluation)
    assert fixed_accuracy < ann - 0.015
    assert _accuracy(searched.twin, evaluation) >= max(ann - 0.01, fixed_accuracy + 0.01)


def test_search_at_a_fixed_granularity_keeps_it(trained_ann, mnist_calibration) -> None:
    loader = DataLoader(mnist_calibration, batch_size=250)
    for per_channel in (True, False):
        network = se.convert(trained_ann, se.Quartz(t_max=8), loader, per_channel=per_channel)
        hidden = [s.calibration for s in network.stages if s.kind == "neuron"]
        assert all(choice.per_channel is per_channel for choice in hidden)
        assert not network.stages[-1].calibration.per_channel


def test_layers_feeding_a_grouped_convolution_keep_one_scale() -> None:
    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, groups=4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
    ).eval()
    x = torch.rand(64, 1, 12, 12)
    network = se.convert(ann, se.Radix(steps=4), [x])
    first, second = (s.calibration for s in network.stages if s.kind == "neuron")
    assert not first.per_channel
    with torch.no_grad():
        assert torch.equal(network.twin(x), network(x))


@pytest.mark.parametrize(
    "spec", [se.Radix(steps=4), se.Quartz(t_max=8), se.ICRate(steps=8)], ids=repr
)
def test_search_picks_the_first_layer_scale_an_exact_comparison_picks(
    trained_ann, mnist_calibration, spec
) -> None:
    """The search scores candidates on the float sum with the rounded bias (weights' rounding
    left out, on a subset of entries). The reference builds a network per candidate with
    ``convert`` (every weight on its grid) and measures its first layer's twin activation
    against the ANN's on every entry of the same images."""
    x = mnist_calibration.tensors[0][:512]
    chosen = se.convert(trained_ann, spec, [x]).stages[0].calibration
    with torch.no_grad():
        ann_first = trained_ann[:3](x)
    exact: dict[tuple[float | None, bool], float] = {}
    for percentile in dict.fromkeys((*PERCENTILE_CANDIDATES, chosen.percentile)):
        for per_channel in (False, True):
            stats = ActivationStats(per_channel=per_channel)
            stats.update_max(ann_first)
            stats.update_histogram(ann_first)
            scale = stats.scale(percentile)
            network = se.convert(
                trained_ann, spec, [x], percentile=percentile, per_channel=per_channel
            )
            with torch.no_grad():
                twin = network.activations(x)[1].float() * channel_view(scale, 3)
            exact[(percentile, per_channel)] = float(((twin - ann_first) ** 2).mean())
    best = min(exact.values())
    assert exact[(chosen.percentile, chosen.per_channel)] <= best * 1.02
    assert chosen.error == pytest.approx(exact[(chosen.percentile, chosen.per_channel)], rel=0.05)


def test_percentiles_from_a_hand_counted_histogram() -> None:
    # row 0: one value in each of four bins over [0, 4]; row 1: everything in bin 2 of [0, 8]
    histogram = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 5.0, 0.0]], dtype=torch.float64)
    maximum = torch.tensor([4.0, 8.0], dtype=torch.float64)
    edges = percentile_from_histogram(histogram, maximum, [25.0, 50.0, 50.1, 100.0])
    assert edges.tolist() == [[1.0, 2.0, 3.0, 4.0], [6.0, 6.0, 6.0, 6.0]]
    assert percentile_from_histogram(histogram, maximum, 75.0).tolist() == [3.0, 6.0]
    stats = ActivationStats(per_channel=True, bins=4)
    stats.maximum, stats.histogram = maximum, histogram
    assert [s.tolist() for s in stats.scales([None, 50.0])] == [[4.0, 8.0], [2.0, 6.0]]
    with pytest.raises(ConversionError, match="percentile must be in"):
        percentile_from_histogram(histogram, maximum, [50.0, 0.0])


@pytest.mark.parametrize(
    "spec",
    [
        se.Radix(steps=4),
        se.Radix(steps=3, base=3, mode="paper"),
        se.Quartz(t_max=8),
        se.Quartz(t_max=8, bias_coding="time"),
        se.ICRate(steps=8),
    ],
    ids=repr,
)
@pytest.mark.parametrize("per_channel", [False, True], ids=["per-layer", "per-channel"])
def test_search_scores_the_bias_map_a_built_synapse_holds(spec, per_channel) -> None:
    """The search rounds each candidate's bias map without building a synapse; it must equal
    the bias of the synapse convert builds (normalised by the scale, shifted in hidden layers,
    on the encoding's grid)."""
    from snn_encodings.conversion.calibrate import ScaleSearch
    from snn_encodings.conversion.graph import trace
    from snn_encodings.conversion.rules.base import rule_for
    from snn_encodings.conversion.synapse import Synapse

    torch.manual_seed(0)
    ann = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)
    ).eval()
    with torch.no_grad():
        ann[0].bias.uniform_(-0.7, 0.7)
        ann[3].bias.uniform_(-0.7, 0.7)
    nodes = trace(ann, torch.rand(2, 1, 8, 8))
    rule = rule_for(spec)
    search = ScaleSearch(rule, [], False, lambda t: t)
    shapes = [torch.Size((1, 8, 8)), torch.Size((4, 6, 6)), torch.Size((5,))]
    scales = [torch.ones(())]
    for i, node in enumerate(nodes[1:], start=1):
        channels = node.bias.shape[0] if per_channel and node.kind == "neuron" else None
        scale = torch.rand(channels) * 2 + 0.3 if channels else torch.tensor(1.37)
        built = Synapse([], node.bias, scales, scale, shapes).to(rule.dtype)
        rule.quantise_layer(
            built, hidden=node.kind == "neuron", levels=node.levels, shift=node.shift
        )
        assert torch.equal(search._bias(i, node, scale), built.bias.float())
        scales.append(scale)
