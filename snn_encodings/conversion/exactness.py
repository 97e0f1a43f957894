r"""When is a layer's float arithmetic exact? Grid bits and magnitude bounds of a synapse.

With weights and gains on dyadic grids and inputs that are integers (spike counts, Quartz
levels, radix digits scaled by :math:`r^T`), every partial sum a layer forms is an integer
multiple of one grid step :math:`2^{-g}`, the product of the grids along a branch. A float
format with :math:`p` significand bits (24 for float32, 53 for float64) then adds such terms
exactly, in any order, while the largest possible :math:`|\text{partial sum}| / 2^{-g}` stays
below :math:`2^p`. :func:`exact_dtype` picks the narrowest float that satisfies it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from snn_encodings.conversion.graph import WEIGHTED

__all__ = [
    "LayerBound",
    "SIGNIFICAND_BITS",
    "SplitSynapse",
    "exact_dtype",
    "fraction_bits",
    "layer_bound",
    "split_parts",
]

#: Significand bits (with the hidden bit) of the float formats the networks run in.
SIGNIFICAND_BITS = {torch.float32: 24, torch.float64: 53}

_AVERAGE_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)


def fraction_bits(values: Tensor, limit: int = 64) -> int | None:
    r"""Fractional bits of the dyadic grid ``values`` lie on (0 for integers), or ``None`` when
    they need more than ``limit`` bits (e.g. a float64 rounding of 1/3) or are not finite.

    One pass: a float64 :math:`v = M 2^{e-53}` (:func:`torch.frexp`, :math:`M` an integer) needs
    :math:`53 - e - \mathrm{tz}(M)` fractional bits, :math:`\mathrm{tz}` its trailing zero bits.

    Example:
        >>> fraction_bits(torch.tensor([3.0, 0.75, -0.125]))
        3
    """
    values = values.detach().to(torch.float64).flatten()
    values = values[values != 0]
    if values.numel() == 0:
        return 0
    if not bool(torch.isfinite(values).all()):
        return None
    mantissa, exponent = torch.frexp(values)
    integer = (mantissa.abs() * float(2**53)).to(torch.int64)
    trailing = torch.log2((integer & -integer).to(torch.float64)).round().to(torch.int64)
    bits = max(int((53 - exponent - trailing).max()), 0)
    return None if bits > limit else bits


class LayerBound(NamedTuple):
    """What decides a layer's exact float format.

    Attributes:
        grid_bits: fractional bits :math:`g` of the grid every partial sum lies on (``None``:
            not a dyadic grid, e.g. an average over 9 elements, so no float is exact).
        magnitude: the largest possible :math:`|\\text{partial sum}|`, in the units of the
            inputs given to :func:`layer_bound`.
    """

    grid_bits: int | None
    magnitude: float

    @property
    def bits(self) -> float:
        """Significand bits the sums need: :math:`\\log_2(\\text{magnitude}) + g` (inf if not dyadic)."""
        if self.grid_bits is None:
            return math.inf
        return math.log2(max(self.magnitude, 1.0)) + self.grid_bits


def _window_bits(op: nn.Module, shape: torch.Size) -> int | None:
    """Bits of an average pool's weight :math:`1/n` on inputs of feature shape ``shape``
    (``None`` unless every window holds the same power-of-two number of elements)."""
    if isinstance(op, (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)):
        spatial = list(shape[1:])
        target = op.output_size if isinstance(op.output_size, tuple) else (op.output_size,)
        target = [s if t is None else t for s, t in zip(spatial, list(target) * len(spatial))]
        if any(size % out for size, out in zip(spatial, target)):
            return None
        count = math.prod(size // out for size, out in zip(spatial, target))
    else:
        padding = op.padding if isinstance(op.padding, tuple) else (op.padding,)
        if any(padding) and not op.count_include_pad:
            return None
        kernel = op.kernel_size if isinstance(op.kernel_size, tuple) else (op.kernel_size,)
        count = op.divisor_override or math.prod(kernel) ** (
            1 if len(kernel) > 1 else len(shape) - 1
        )
    exponent = int(count).bit_length() - 1
    return exponent if 2**exponent == count else None


def _branch_bits(ops: nn.Module, gains: tuple[Tensor, Tensor], shape: torch.Size) -> int | None:
    """Grid bits of one branch: its gains', weights' and average pools' bits, added."""
    parts = [fraction_bits(gain) for gain in gains]
    x = torch.zeros((1, *shape), dtype=gains[0].dtype, device=gains[0].device)
    pools = [i for i, op in enumerate(ops) if isinstance(op, _AVERAGE_POOLS)]
    for index, op in enumerate(ops):
        if isinstance(op, WEIGHTED):
            parts.append(fraction_bits(op.weight))
        elif isinstance(op, _AVERAGE_POOLS):
            parts.append(_window_bits(op, x.shape[1:]))
        if pools and index < pools[-1]:  # shapes are needed only up to the last pool
            x = _absolute(op, x.to(op.weight.dtype) if isinstance(op, WEIGHTED) else x)
    if any(part is None for part in parts):
        return None
    return sum(part for part in parts if part is not None)


def _absolute(op: nn.Module, x: Tensor, part: Callable[[Tensor], Tensor] = torch.abs) -> Tensor:
    """``op`` with its weights replaced by ``part(weight)`` (default: absolute) applied to
    ``x``; ops without weights as they are."""
    if isinstance(op, nn.Linear):
        return nn.functional.linear(x, part(op.weight))
    if isinstance(op, (nn.Conv1d, nn.Conv2d)):
        return op._conv_forward(x, part(op.weight), None)
    return op(x)


def _absolute_sum(
    ops: nn.Module,
    gains: tuple[Tensor, Tensor],
    source: Tensor,
    part: Callable[[Tensor], Tensor] = torch.abs,
) -> Tensor:
    """The branch with weights ``part(weight)`` (default: absolute) and absolute gains applied
    to ``source`` ``(1, *)``."""
    g_in, g_out = (gain.detach().abs() for gain in gains)
    x = source * (g_in if g_in.dim() == 0 else g_in.unsqueeze(0))
    for op in ops:
        x = _absolute(op, x.to(op.weight.dtype) if isinstance(op, WEIGHTED) else x, part)
    return x * (g_out if g_out.dim() == 0 else g_out.view(1, -1, *([1] * (x.dim() - 2))))


def _signed_sums(
    ops: nn.Module, gains: tuple[Tensor, Tensor], source: Tensor
) -> tuple[Tensor, Tensor]:
    r"""The branch's largest positive and negative sums :math:`(P, N)` per output over
    non-negative inputs up to ``source``: :math:`P = \sum w^+ x`, :math:`N = \sum w^- x`.

    With one weighted op between non-negative maps (gains, pools, flatten), every partial sum
    of the branch's products is a sum over a subset of them, so it lies in :math:`[-N, P]`.
    A branch that chains weighted ops (the second reads signed values) or has a negative gain
    gets the triangle bound :math:`\sum |w| x` for both.
    """
    weighted = sum(isinstance(op, WEIGHTED) for op in ops)
    if weighted != 1 or any(bool((gain < 0).any()) for gain in gains):
        both = _absolute_sum(ops, gains, source)
        return both, both
    positive = _absolute_sum(ops, gains, source, lambda w: w.clamp(min=0))
    negative = _absolute_sum(ops, gains, source, lambda w: (-w).clamp(min=0))
    return positive, negative


def layer_bound(
    synapse: nn.Module, shapes: list[torch.Size], source_max: list[float], bias_max: float
) -> LayerBound:
    """Grid and magnitude bound of a synapse's weighted sums.

    Args:
        synapse: a :class:`~snn_encodings.conversion.synapse.Synapse`.
        shapes: feature shape of every value node.
        source_max: the largest magnitude each value node's inputs may take (e.g. ``K`` for
            Quartz levels, ``r^T`` for radix digits scaled to integers).
        bias_max: the largest magnitude of the bias term, same units.
    Returns:
        The :class:`LayerBound`: every partial sum of the layer over non-negative inputs within
        the bounds (spike values, levels and digit codes are) is at most ``magnitude`` in
        absolute value and, when inputs are integers, a multiple of ``2**-grid_bits``. Per
        output, the partial sums lie between minus the sum of its negative products and the
        sum of its positive ones (:func:`_signed_sums`), the bias on top.
    """
    bits: list[int | None] = []
    positive: Tensor | None = None
    negative: Tensor | None = None
    with torch.no_grad():
        for i, (source, ops) in enumerate(zip(synapse.sources, synapse.ops)):
            gains = synapse.gains(i)
            bits.append(_branch_bits(ops, gains, shapes[source]))
            gain = gains[0]
            full = torch.full(
                (1, *shapes[source]),
                float(source_max[source]),
                dtype=gain.dtype,
                device=gain.device,
            )
            up, down = _signed_sums(ops, gains, full)
            positive = up if positive is None else positive + up
            negative = down if negative is None else negative + down
    assert positive is not None and negative is not None
    grid = None if any(b is None for b in bits) else max(b for b in bits if b is not None)
    return LayerBound(grid, max(float(positive.max()), float(negative.max())) + bias_max)


def exact_dtype(bound: LayerBound) -> torch.dtype | None:
    """float32 if the sums need at most 24 significand bits, float64 if at most 53, else ``None``."""
    for dtype in (torch.float32, torch.float64):
        if bound.bits <= SIGNIFICAND_BITS[dtype]:
            return dtype
    return None


#: Fractional bits of the high part when a layer's weights are split in two float32 parts.
SPLIT_BITS = 8


class SplitSynapse(nn.Module):
    r"""A synapse as two float32 copies whose weights add up to the original's.

    The high part holds each weight rounded to :math:`2^{-8}` (and the bias, and the branches
    without weights), the low part the rest (:math:`|w_{lo}| \le 2^{-9}`), so each part's sums
    need fewer significand bits than the whole; ``SpikingNetwork`` keeps a split only where
    both parts are exact in float32. Their float32 sums, added in float64, are the original's
    exact sum.
    """

    def __init__(self, high: nn.Module, low: nn.Module) -> None:
        super().__init__()
        self.high = high.to(torch.float32)
        self.low = low.to(torch.float32)
        self.sources = list(high.sources)

    def value(self, values: list[Tensor]) -> Tensor:
        """``Synapse.value`` of the original, in float64, from two float32 passes."""
        sources = set(self.sources)
        narrow = [v.to(torch.float32) if i in sources else v for i, v in enumerate(values)]
        wide = values[self.sources[0]].dtype
        return self.high.value(narrow).to(wide) + self.low.value(narrow).to(wide)


def split_parts(synapse: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """Float64 copies ``(high, low)`` of ``synapse`` whose weights add up to its weights (and
    whose gains do on a branch without weights, :func:`_split_gain`); ``None`` where a branch
    chains several weighted ops (the product would not split)."""
    if any(sum(isinstance(op, WEIGHTED) for op in ops) > 1 for ops in synapse.ops):
        return None
    high, low = copy.deepcopy(synapse), copy.deepcopy(synapse)
    scale = float(2**SPLIT_BITS)
    with torch.no_grad():
        for i, (ops_high, ops_low) in enumerate(zip(high.ops, low.ops)):
            weighted = [(a, b) for a, b in zip(ops_high, ops_low) if isinstance(a, WEIGHTED)]
            if len(weighted) > 1:
                return None
            if not weighted:  # a branch of gains only: the gain carrying its scale is split
                _split_gain(high.gains(i), low.gains(i), scale)
                continue
            op_high, op_low = weighted[0]
            rounded = torch.round(op_high.weight * scale) / scale
            op_low.weight.sub_(rounded)
            op_high.weight.copy_(rounded)
        low.bias.zero_()
    return high, low


def _split_gain(high: tuple[Tensor, Tensor], low: tuple[Tensor, Tensor], scale: float) -> None:
    """Split a weightless branch between the high and low copies, in place: where one of its
    ``(input, output)`` gains is all ones (:func:`merge_branch_gains` folded the other into
    it), the other is rounded to ``1/scale`` in the high copy and the rest goes to the low
    copy; otherwise the branch stays whole in the high copy (the low copy's output gain 0)."""
    for carrier in (1, 0):
        if bool((high[1 - carrier] == 1).all()):
            rounded = torch.round(high[carrier] * scale) / scale
            low[carrier].sub_(rounded)
            high[carrier].copy_(rounded)
            return
    low[1].zero_()


def merge_branch_gains(synapse: nn.Module) -> None:
    """Fold each weightless branch's input gain into its output gain (or the reverse), in place.

    A branch without a Conv/Linear (e.g. a residual shortcut) keeps its source's scale as the
    input gain and this layer's inverse scale as the output gain; rounded separately to a grid
    :math:`2^{-q}` their product lies on :math:`2^{-2q}`. Multiplied first (one gain of 1 left
    where the other is a scalar), a single rounding keeps the branch on :math:`2^{-q}`. Two
    per-channel gains are multiplied too where the branch keeps every channel where it is (an
    identity shortcut or average pooling, which commute with a per-channel gain); across any
    other op they are left as they are.
    """
    with torch.no_grad():
        for i, ops in enumerate(synapse.ops):
            if any(isinstance(op, WEIGHTED) for op in ops):
                continue
            g_in, g_out = synapse.gains(i)
            if g_in.dim() == 0:
                g_out.mul_(g_in)
                g_in.fill_(1.0)
            elif g_out.dim() == 0:
                g_in.mul_(g_out)
                g_out.fill_(1.0)
            elif g_in.numel() == g_out.numel() and all(
                isinstance(op, (*_AVERAGE_POOLS, nn.Identity)) for op in ops
            ):
                g_out.mul_(g_in.reshape(g_out.shape))
                g_in.fill_(1.0)
