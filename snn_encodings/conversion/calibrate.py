"""Calibration: streaming activation statistics (maxima, histogram percentiles, per layer or
per channel) and the per-layer search for the scale that keeps the twin closest to the ANN."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, IterableDataset

from snn_encodings.errors import ConversionError, SpecError
from snn_encodings.functional.channels import channel_view
from snn_encodings.functional.finite import all_finite

__all__ = [
    "PERCENTILE_CANDIDATES",
    "ActivationStats",
    "ScaleChoice",
    "ScaleSearch",
    "batch_input",
    "iterate_inputs",
    "search_samples",
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
    """Yield the input tensor of every batch; raise :class:`ConversionError` if there is none,
    or if ``loader`` is a map-style ``Dataset`` (which yields single samples, not batches)."""
    if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset):
        raise ConversionError(
            f"{where}: the calibration data is a {type(loader).__name__}, which yields single "
            "samples without a batch dimension; wrap it in a DataLoader (e.g. "
            "DataLoader(dataset, batch_size=256)) or pass a list of batches"
        )
    seen = False
    for batch in loader:
        x = batch_input(batch)
        if x.numel() == 0:
            continue
        if not all_finite(x):
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

    def _rows(self, values: Tensor) -> Tensor:
        """``(B, rows, n)`` view of a batch ``(B, C, *)``: one row per channel, or one row."""
        values = values.detach()
        if self.per_channel:
            return values.reshape(values.shape[0], values.shape[1], -1)
        return values.reshape(1, 1, -1)

    def update_max(self, values: Tensor) -> None:
        """First pass: fold a batch ``(B, C, *)`` into the running maximum."""
        batch_max = self._rows(values).amax((0, 2)).to(torch.float64)
        self.maximum = batch_max if self.maximum is None else torch.maximum(self.maximum, batch_max)

    def update_histogram(self, values: Tensor) -> None:
        """Second pass: add a batch to the histogram over ``[0, maximum]``. The bin of ``x`` is
        ``floor(x * (bins / maximum))`` in float32, which may put a value within float32
        rounding of a bin edge into the neighbouring bin: less than the bins' own resolution."""
        if self.maximum is None:
            raise ConversionError("calibration: the histogram pass needs the maximum pass first")
        rows_view = self._rows(values)
        rows = rows_view.shape[1]
        narrow = torch.finfo(torch.float32)
        per_unit = (self.bins / self.maximum.clamp(min=torch.finfo(torch.float64).tiny)).clamp(
            max=narrow.max
        )
        scaled = rows_view.float() * per_unit.to(torch.float32).view(1, rows, 1)
        index = scaled.clamp_(0, self.bins - 1).long()  # truncation: the floor, as x >= 0
        index += (torch.arange(rows, device=index.device) * self.bins).view(1, rows, 1)
        counts = torch.bincount(index.flatten().cpu(), minlength=rows * self.bins)
        if self.histogram is None:
            self.histogram = torch.zeros(rows, self.bins, dtype=torch.float64)
        self.histogram += counts.view(rows, self.bins)
        self.count += rows_view.shape[0] * rows_view.shape[2]

    def scale(self, percentile: float | None) -> Tensor:
        """The layer's scale: the maximum, or the given percentile (0-100) of the histogram.

        Returns a 0-d tensor, or ``(C,)`` per channel; non-positive results become 1 (a dead
        layer or channel stays silent whatever its scale).
        """
        return self.scales([percentile])[0]

    def scales(self, percentiles: list[float | None]) -> list[Tensor]:
        """:meth:`scale` of several percentiles, reading the histogram once."""
        if self.maximum is None:
            raise ConversionError("calibration: no data was seen")
        asked = [p for p in percentiles if p is not None]
        if asked and self.histogram is None:
            raise ConversionError("calibration: the percentile needs the histogram pass")
        found = iter(
            percentile_from_histogram(self.histogram, self.maximum, asked).unbind(1)
            if asked
            else ()
        )
        results = []
        for percentile in percentiles:
            result = self.maximum.clone() if percentile is None else next(found)
            result = torch.where(result > 0, result, torch.ones_like(result)).to(torch.float32)
            results.append(result if self.per_channel else result[0])
        return results


def percentile_from_histogram(
    histogram: Tensor, maximum: Tensor, percentile: float | list[float]
) -> Tensor:
    """Upper edge of the bin where the cumulative count first reaches ``percentile`` % (per row):
    ``(rows,)``, or ``(rows, P)`` for a list of ``P`` percentiles."""
    asked = [percentile] if isinstance(percentile, (int, float)) else list(percentile)
    for value in asked:
        if not 0 < value <= 100:
            raise ConversionError(f"calibration: percentile must be in (0, 100], got {value!r}")
    cumulative = histogram.cumsum(1)
    fractions = torch.tensor(asked, dtype=cumulative.dtype) / 100.0
    target = cumulative[:, -1:] * fractions.view(1, -1) - 1e-9
    first = torch.searchsorted(cumulative, target)
    result = (first.to(torch.float64) + 1) / histogram.shape[1] * maximum.view(-1, 1)
    return result[:, 0] if isinstance(percentile, (int, float)) else result


def search_samples(shapes: list[torch.Size]) -> int:
    """How many calibration samples the scale search keeps for a network whose value nodes have
    feature shapes ``shapes``: :data:`SEARCH_SAMPLES`, fewer where they would hold more than
    :data:`SEARCH_BUDGET` entries, at least :data:`SEARCH_MIN_SAMPLES`."""
    per_sample = max(1, sum(math.prod(shape) for shape in shapes))
    return max(SEARCH_MIN_SAMPLES, min(SEARCH_SAMPLES, SEARCH_BUDGET // per_sample))


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
"""Most calibration samples (the first ones seen) on which the scale search scores candidates."""

SEARCH_BUDGET = 2**23
"""Activation entries (every layer of every kept sample) the search holds in one copy: a large
network searches on fewer samples (:func:`search_samples`), bounding its memory and time."""

SEARCH_MIN_SAMPLES = 32
"""Fewest samples the search keeps, whatever the network's size."""

SEARCH_ELEMENTS = 2**17
"""Entries of a layer's activation (whole channel columns, spread evenly over samples and
positions) on which the scale search scores each candidate."""


class _Scored:
    """The entries of one layer on which the search scores candidates.

    Picks evenly spaced (sample, position) pairs of a ``(B, C, *)`` activation, all ``C``
    channels at each, at most about :data:`SEARCH_ELEMENTS` entries; picked tensors are
    ``(k, C)``, so a per-channel scale ``(C,)`` broadcasts over them.

    Args:
        reference: the ANN's activation of the layer ``(B, C, *)`` (or ``(B, F)``).
        unit: the layer's bias-free sum in the ANN's units, same shape.
    """

    def __init__(self, reference: Tensor, unit: Tensor) -> None:
        batch, channels = reference.shape[0], reference.shape[1]
        self.spatial = math.prod(reference.shape[2:])
        total = batch * self.spatial
        step = max(1, math.ceil(total * channels / SEARCH_ELEMENTS))
        flat = torch.arange(0, total, step, device=reference.device)
        self.samples, self.positions = flat // self.spatial, flat % self.spatial
        self.reference = self.pick(reference)
        self.unit = self.pick(unit)

    def pick(self, values: Tensor) -> Tensor:
        """The picked entries ``(k, C)`` of a batch ``(B, C, *)``."""
        flat = values.reshape(values.shape[0], values.shape[1], self.spatial)
        return flat[self.samples, :, self.positions]

    def pick_map(self, feature_map: Tensor) -> Tensor:
        """The picked entries ``(k, C)`` of one sample's map ``(C, *)`` (e.g. a bias); ``(1, C)``
        where every position of a channel holds the same value (a convolution's bias without
        padding effects), which broadcasts the same."""
        flat = feature_map.reshape(feature_map.shape[0], self.spatial)
        if self.spatial == 1 or bool((flat == flat[:, :1]).all()):
            return flat[:, 0].unsqueeze(0)
        return flat[:, self.positions].T


@dataclass(frozen=True)
class ScaleChoice:
    """The scale calibration chose for one layer.

    Attributes:
        percentile: the percentile (0-100] of the layer's activations, ``None`` for the maximum.
        per_channel: one scale per channel (else one per layer).
        error: mean squared difference between the layer's twin activation and the float ANN's,
            in the ANN's units, on the scored entries (``nan`` where nothing was searched).
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
    percentile, per layer or per channel) of a layer is scored by the mean squared difference
    between its scaled twin activation and the float ANN's activation of the same layer. The
    layer's weighted sum depends on the candidate only through the division by its scale, so it
    is computed once per layer (output scale 1); each candidate adds its own bias as the
    encoding rounds it and runs the twin on ``SEARCH_ELEMENTS`` evenly spread entries (all
    channels at each picked position), all in float32. The best candidate's twin activation
    on every search sample feeds the next layer. Only the weights' rounding to their grid
    (:math:`2^{-12}` by default) is left out, so the search costs one float32 forward of each
    layer on :func:`search_samples` inputs plus elementwise work, and no pass over the
    calibration data beyond the statistics' (one, or two when the calibration values are too
    many to keep: ``convert.KEEP_ELEMENTS``). The converted network itself is built
    afterwards from the chosen scales, with every weight on its grid.

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
        values = [self._input(reference[0].float())]
        scales: list[Tensor] = [torch.ones(())]
        chosen: dict[int, Tensor] = {}
        choices: dict[int, ScaleChoice] = {}
        layer_only = _feeds_grouped_convolutions(nodes)
        for i, node in enumerate(nodes[1:], start=1):
            if node.kind == "pool":
                scales.append(scales[node.branches[0].source])
                values.append(node.pool(values[node.branches[0].source]))
                continue
            trials = self._trials(node, stats[i], i in layer_only)
            keys, distinct = list(trials), _distinct(list(trials.values()))
            unit = _unit_sum(node, scales, shapes, values)
            scored = _Scored(reference[i], unit)
            biases = {
                first: self._bias(i, node, trials[keys[first]]) for first in dict.fromkeys(distinct)
            }
            errors = {
                first: self._error(node, scored, trials[keys[first]], bias)
                for first, bias in biases.items()
            }
            # a candidate whose scale equals an earlier one's has its score
            per_key = [errors[first] for first in distinct]
            totals = self.reduce(torch.tensor(per_key, dtype=torch.float64))
            best = int(totals.argmin())
            chosen[i] = trials[keys[best]]
            choices[i] = ScaleChoice(keys[best][0], keys[best][1], per_key[best])
            scale = channel_view(chosen[i], unit.dim() - 1)
            values.append(self._twin(node, unit, scale, biases[distinct[best]]))
            scales.append(chosen[i])
        return chosen, choices

    def _bias(self, i: int, node: Any, scale: Tensor) -> Tensor:
        """The layer's normalised bias map ``(C, *)`` for one candidate scale, rounded to the
        encoding's grid as the converted network will hold it (as
        :class:`~snn_encodings.conversion.synapse.Synapse` normalises it and
        :meth:`~snn_encodings.conversion.rules.base.Rule.quantise_layer` rounds it)."""
        bias = (node.bias / channel_view(scale, node.bias.dim())).to(self.rule.dtype)
        if not (self.float_first and i == 1):
            bias = self.rule.layer_bias(
                bias, hidden=node.kind == "neuron", levels=node.levels, shift=node.shift
            )
        return bias.float()

    def _twin(self, node: Any, unit: Tensor, scale: Tensor, bias: Tensor) -> Tensor:
        """Twin activation (normalised units, float32) of the unit sum divided by ``scale`` plus
        ``bias`` (both broadcast against ``unit``)."""
        z = unit / scale + bias
        return self.rule.twin_output(z) if node.kind == "output" else self.rule.twin(z)

    def _error(self, node: Any, scored: _Scored, scale: Tensor, bias: Tensor) -> float:
        """Mean squared difference of one candidate's scaled twin value from the ANN's, on the
        scored entries."""
        value = self._twin(node, scored.unit, scale, scored.pick_map(bias)) * scale
        reference = scored.reference
        if node.kind == "output" and self.positive_output:
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
            from snn_encodings.conversion.graph import clip_scale

            scale = clip_scale(node.clip)
            return {(None, scale.dim() == 1): scale}
        # the output, and nodes feeding grouped convolutions, keep one scale per layer
        keys = dict.fromkeys(
            (percentile, per_channel and node.kind == "neuron" and not layer_only)
            for percentile, per_channel in self.candidates
        )
        trials = {}
        for per_channel in (False, True):
            asked = [key for key in keys if key[1] == per_channel]
            if asked:
                found = stats[per_channel].scales([percentile for percentile, _ in asked])
                trials.update(zip(asked, found))
        return {key: trials[key] for key in keys}


def _unit_sum(
    node: Any, scales: list[Tensor], shapes: list[torch.Size], values: list[Tensor]
) -> Tensor:
    """A layer's bias-free weighted sum in the ANN's units (output scale 1), float32."""
    from snn_encodings.conversion.synapse import Synapse

    one = torch.ones(())
    return Synapse(node.branches, torch.zeros_like(node.bias), scales, one, shapes).value(values)


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
