"""Calibration: streaming activation statistics (maxima, histogram percentiles, per layer or
per channel) and the per-layer search for the scale that keeps the twin closest to the ANN."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from snn_encodings.errors import ConversionError, SpecError
from snn_encodings.functional.channels import channel_view

__all__ = [
    "PERCENTILE_CANDIDATES",
    "ActivationStats",
    "ScaleChoice",
    "ScaleSearch",
    "batch_input",
    "iterate_inputs",
    "percentile_from_histogram",
]


def batch_input(batch: Any) -> Tensor:
    """The input tensor of a loader batch: a tensor, the first item of a tuple/list, or a dict's
    ``"input"``/``"image"``/``"x"`` entry."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("input", "image", "images", "x"):
            if isinstance(batch.get(key), Tensor):
                return batch[key]
    raise ConversionError(
        f"calibration: cannot find the input tensor in a batch of type {type(batch).__name__}; "
        "yield tensors or (input, target) pairs"
    )


def iterate_inputs(loader: Iterable[Any], where: str) -> Iterable[Tensor]:
    """Yield the input tensor of every batch; raise :class:`ConversionError` if there is none."""
    seen = False
    for batch in loader:
        x = batch_input(batch)
        if x.numel() == 0:
            continue
        if not torch.isfinite(x).all():
            raise ConversionError(f"{where}: a calibration batch contains NaN or inf")
        seen = True
        yield x
    if not seen:
        raise ConversionError(f"{where}: the calibration loader yielded no data")


class ActivationStats:
    """Mergeable statistics of one layer's non-negative activations.

    The maximum is exact. Percentiles come from a histogram of ``bins`` equal bins over
    ``[0, max]`` filled in a second pass, so their resolution is ``max / bins``; histograms of
    several shards (processes) with the same range simply add.

    Args:
        per_channel: keep statistics per channel (dim 1) instead of per layer.
        bins: histogram resolution.
    """

    def __init__(self, per_channel: bool = False, bins: int = 2048) -> None:
        self.per_channel = per_channel
        self.bins = bins
        self.maximum: Tensor | None = None
        self.histogram: Tensor | None = None
        self.count = 0

    def _flat(self, values: Tensor) -> Tensor:
        """``(channels, n)`` view of a batch: one row per channel, or one row."""
        values = values.detach().to(torch.float64)
        if self.per_channel:
            return values.transpose(0, 1).reshape(values.shape[1], -1)
        return values.reshape(1, -1)

    def update_max(self, values: Tensor) -> None:
        """First pass: fold a batch ``(B, C, *)`` into the running maximum."""
        batch_max = self._flat(values).amax(1)
        self.maximum = batch_max if self.maximum is None else torch.maximum(self.maximum, batch_max)

    def update_histogram(self, values: Tensor) -> None:
        """Second pass: add a batch to the histogram over ``[0, maximum]``."""
        if self.maximum is None:
            raise ConversionError("calibration: the histogram pass needs the maximum pass first")
        flat = self._flat(values).clamp(min=0)
        top = self.maximum.clamp(min=torch.finfo(torch.float64).tiny).unsqueeze(1)
        index = (flat / top * self.bins).floor().clamp(0, self.bins - 1).long()
        if self.histogram is None:
            self.histogram = torch.zeros(flat.shape[0], self.bins, dtype=torch.float64)
        self.histogram.scatter_add_(
            1, index.cpu(), torch.ones_like(index, dtype=torch.float64).cpu()
        )
        self.count += flat.shape[1]

    def scale(self, percentile: float | None) -> Tensor:
        """The layer's scale: the maximum, or the given percentile (0-100) of the histogram.

        Returns a 0-d tensor, or ``(C,)`` per channel; non-positive results become 1 (a dead
        layer or channel stays silent whatever its scale).
        """
        if self.maximum is None:
            raise ConversionError("calibration: no data was seen")
        if percentile is None:
            result = self.maximum.clone()
        else:
            if self.histogram is None:
                raise ConversionError("calibration: the percentile needs the histogram pass")
            result = percentile_from_histogram(self.histogram, self.maximum, percentile)
        result = torch.where(result > 0, result, torch.ones_like(result))
        return result.to(torch.float32) if self.per_channel else result.to(torch.float32)[0]


def percentile_from_histogram(histogram: Tensor, maximum: Tensor, percentile: float) -> Tensor:
    """Upper edge of the bin where the cumulative count first reaches ``percentile`` % (per row)."""
    if not 0 < percentile <= 100:
        raise ConversionError(f"calibration: percentile must be in (0, 100], got {percentile!r}")
    cumulative = histogram.cumsum(1)
    target = cumulative[:, -1:] * (percentile / 100.0)
    first = (cumulative >= target - 1e-9).float().argmax(1)
    bins = histogram.shape[1]
    return (first.to(torch.float64) + 1) / bins * maximum


def run_passes(
    loader: Iterable[Any], where: str, passes: int, visit: Callable[[int, Tensor], None]
) -> None:
    """Call ``visit(pass_index, x)`` for every batch, ``passes`` times over the loader."""
    for index in range(passes):
        for x in iterate_inputs(loader, where):
            visit(index, x)


PERCENTILE_CANDIDATES: tuple[float | None, ...] = (
    None,
    99.999,
    99.99,
    99.9,
    99.7,
    99.5,
    99.0,
    98.5,
    98.0,
    97.0,
)
"""Percentiles the default calibration tries for each layer (``None`` is the maximum)."""

SEARCH_SAMPLES = 512
"""Calibration samples (the first ones seen) on which the scale search measures each candidate."""


NARROW_WORK = 2**24
"""Multiply-adds from which the search evaluates a layer's exact sums in float32 (where the
layer's bound allows): below it the bound check costs more than the float64 evaluation saves."""


@dataclass(frozen=True)
class ScaleChoice:
    """The scale calibration chose for one layer.

    Attributes:
        percentile: the percentile (0-100] of the layer's activations, ``None`` for the maximum.
        per_channel: one scale per channel (else one per layer).
        error: mean squared difference between the layer's twin activation and the float ANN's,
            in the ANN's units, on the search samples (``nan`` where nothing was searched).
    """

    percentile: float | None
    per_channel: bool
    error: float = float("nan")

    def __str__(self) -> str:
        where = "channel" if self.per_channel else "layer"
        level = "max" if self.percentile is None else f"p{self.percentile:g}"
        return f"{level}/{where}" + ("" if math.isnan(self.error) else f" (mse {self.error:.3g})")


class ScaleSearch:
    """Per-layer choice of the clip scale that minimises the twin's error against the ANN.

    Greedy in forward order: with the scales already chosen upstream, each candidate (a
    percentile, per layer or per channel) of a layer builds that layer's normalised, quantised
    synapse, runs the twin activation on the search samples and is scored by the mean squared
    difference from the float ANN's activation of the same layer. The best candidate is kept
    and its twin activation feeds the next layer. It needs no pass over the calibration data
    beyond the statistics' two; each candidate costs one layer's forward on ``SEARCH_SAMPLES``.

    Args:
        rule: the encoding's conversion rule (twin, synapse quantisation, input grid).
        candidates: ``(percentile, per_channel)`` pairs to try.
        float_first: the first layer runs in float on raw inputs (no parameter grid).
        reduce: sums a tensor of errors over the processes (identity without a group), so that
            every process picks the same scales.
        positive_output: score the output layer on the positive part of its values only (for
            outputs of bounded range, whose scale is calibrated on the lifted logits
            ``max(z + c, 0)``: what decides the argmax is the top of the range).
    """

    def __init__(
        self,
        rule: Any,
        candidates: list[tuple[float | None, bool]],
        float_first: bool,
        reduce: Callable[[Tensor], Tensor],
        *,
        positive_output: bool = False,
    ) -> None:
        self.rule = rule
        self.candidates = candidates
        self.float_first = float_first
        self.reduce = reduce
        self.positive_output = positive_output

    def choose(
        self,
        nodes: list[Any],
        stats: dict[int, dict[bool, ActivationStats]],
        reference: list[Tensor],
        shapes: list[torch.Size],
    ) -> tuple[dict[int, Tensor], dict[int, ScaleChoice]]:
        """Scales and choices of every searched node (neuron/output nodes without a fixed clip).

        Args:
            nodes: the traced value nodes; ``stats[i][per_channel]`` their statistics.
            reference: the float ANN's value of every node on the search samples (ReLU applied).
            shapes: feature shape of every node.
        """
        from snn_encodings.conversion.synapse import Synapse

        one = torch.ones(())
        dtype = self.rule.dtype
        reference = [value.to(dtype) for value in reference]
        values = [self._input(reference[0])]
        scales: list[Tensor] = [one]
        chosen: dict[int, Tensor] = {}
        choices: dict[int, ScaleChoice] = {}
        self.layer_only = _feeds_grouped_convolutions(nodes)
        on_grid = self._grid_nodes(nodes, reference[0], values[0])
        for i, node in enumerate(nodes[1:], start=1):
            if node.kind == "pool":
                scales.append(scales[node.branches[0].source])
                values.append(node.pool(values[node.branches[0].source]))
                continue
            exact = all(b.source in on_grid for b in node.branches) and (
                _work(node, shapes[i], len(values[0])) >= NARROW_WORK
            )
            trials = self._trials(node, stats[i], i in self.layer_only)
            keys, distinct = list(trials), _distinct(list(trials.values()))
            errors: dict[int, float] = {}
            outputs: dict[int, Tensor] = {}
            for first in dict.fromkeys(distinct):
                scale = trials[keys[first]]
                synapse = Synapse(node.branches, node.bias, scales, scale, shapes).to(dtype)
                if not (self.float_first and i == 1):
                    self.rule.quantise_synapse(synapse)
                z = self._value(synapse, values, shapes) if exact else synapse.value(values)
                out = self.rule.twin_output(z) if node.kind == "output" else self.rule.twin(z)
                outputs[first] = out
                errors[first] = self._error(
                    out * channel_view(scale, out.dim() - 1), reference[i], node.kind
                )
            # a candidate whose scale equals an earlier one's has its twin and its error
            per_key = [errors[first] for first in distinct]
            totals = self.reduce(torch.tensor(per_key, dtype=torch.float64))
            best = int(totals.argmin())
            chosen[i] = trials[keys[best]]
            choices[i] = ScaleChoice(keys[best][0], keys[best][1], per_key[best])
            scales.append(chosen[i])
            values.append(outputs[distinct[best]])
        return chosen, choices

    def _grid_nodes(self, nodes: list[Any], raw: Tensor, decoded: Tensor) -> set[int]:
        """Nodes whose search values are integers times a power of two, the units in which the
        rule claims exact sums (:meth:`~snn_encodings.conversion.rules.base.Rule.sum_units`):
        twin outputs, max-pools of them, and the input where the encoding decoded it. Empty
        where the rule claims no exact sums or its unit is not a power of two."""
        units = self.rule.sum_units()
        if units is None or not math.log2(units[0]).is_integer():
            return set()
        grid = set() if self.float_first or decoded is raw else {0}
        for i, node in enumerate(nodes[1:], start=1):
            if node.kind != "pool" or node.branches[0].source in grid:
                grid.add(i)
        return grid

    def _value(self, synapse: Any, values: list[Tensor], shapes: list[torch.Size]) -> Tensor:
        """``synapse.value(values)`` for sources on the exact grid, evaluated in float32 (or as two
        float32 parts) where the layer's bound shows those sums are exact: the same values as
        the wide evaluation, at a fraction of a float64 convolution's cost."""
        from snn_encodings.conversion.exactness import narrow_synapse

        narrow = narrow_synapse(synapse, lambda part: self._bound(part, shapes), in_place=True)
        return synapse.value(values) if narrow is None else narrow.value(values)

    def _bound(self, synapse: Any, shapes: list[torch.Size]) -> Any:
        """The layer bound of ``synapse`` in the rule's exact units."""
        from snn_encodings.conversion.exactness import layer_bound

        source_max, bias_scale, margin = self.rule.sum_units()
        bias = float(synapse.bias.abs().max()) * bias_scale if synapse.bias.numel() else 0.0
        return layer_bound(synapse, shapes, [source_max] * len(shapes), bias + margin)

    def _error(self, value: Tensor, reference: Tensor, kind: str) -> float:
        """Mean squared difference of a candidate's scaled twin value from the ANN's."""
        if kind == "output" and self.positive_output:
            value, reference = value.clamp(min=0), reference.clamp(min=0)
        return float(((value - reference) ** 2).mean())

    def _input(self, x: Tensor) -> Tensor:
        """The input as the network's twin sees it; raw where the encoding cannot represent it
        (the network itself refuses such inputs when it runs)."""
        if self.float_first:
            return x
        try:
            return self.rule.decode_input(x).to(x.dtype)
        except SpecError:
            return x

    def _trials(
        self, node: Any, stats: dict[bool, ActivationStats], layer_only: bool
    ) -> dict[tuple[float | None, bool], Tensor]:
        """Candidate scales of one node (a fixed clip bound is its only candidate)."""
        if node.clip is not None:
            return {(None, False): torch.tensor(float(node.clip))}
        trials = {}
        for percentile, per_channel in self.candidates:
            # the output, and nodes feeding grouped convolutions, keep one scale per layer
            key = (percentile, per_channel and node.kind == "neuron" and not layer_only)
            if key not in trials:
                trials[key] = stats[key[1]].scale(percentile)
        return trials


def _feeds_grouped_convolutions(nodes: list[Any]) -> set[int]:
    """Nodes read (directly or through max-pools) by a grouped convolution, which cannot fold
    per-channel input scales: their search keeps to one scale per layer."""
    from snn_encodings.conversion.graph import WEIGHTED

    blocked = set()
    for node in nodes[1:]:
        for branch in node.branches:
            source = branch.source
            while source > 0 and nodes[source].kind == "pool":
                source = nodes[source].branches[0].source
            weighted = [op for op in branch.ops if isinstance(op, WEIGHTED)]
            if weighted and getattr(weighted[0], "groups", 1) != 1:
                blocked.add(source)
    return blocked


def _distinct(scales: list[Tensor]) -> list[int]:
    """For every scale, the index of the first scale equal to it (same shape and values): the
    candidates the search needs to evaluate, since equal scales give the same synapse."""
    firsts: list[int] = []
    for i, scale in enumerate(scales):
        same = (
            j for j in range(i) if scales[j].shape == scale.shape and torch.equal(scales[j], scale)
        )
        firsts.append(next(same, i))
    return firsts


def _work(node: Any, shape: torch.Size, batch: int) -> int:
    """Multiply-adds of one evaluation of a node's weighted ops on ``batch`` samples (estimate:
    output size times the fan-in of each branch's last weighted op)."""
    from snn_encodings.conversion.graph import WEIGHTED

    fan_in = 0
    for branch in node.branches:
        weighted = [op for op in branch.ops if isinstance(op, WEIGHTED)]
        fan_in += weighted[-1].weight[0].numel() if weighted else 0
    return batch * shape.numel() * fan_in
