"""Streaming activation statistics: maxima and histogram percentiles, per layer or per channel."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from snn_encodings.errors import ConversionError

__all__ = ["ActivationStats", "batch_input", "iterate_inputs", "percentile_from_histogram"]


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
