r"""The one mapping from values to integer grid indices, exact in floating point.

Every encoding quantises to a grid of :math:`K` steps per unit: Quartz times (:math:`K =
t_{max}`), radix digit codes (:math:`K = r^T`), IC-rate counts (:math:`K = T`) and the ANN twins
of all three. Index :math:`n` leaves the library as the float :math:`\mathrm{fl}(n/K)`, not as
the real number :math:`n/K`, and :math:`\lfloor K\,\mathrm{fl}(n/K)\rfloor` can be :math:`n - 1`
(for example :math:`K = 26`: :math:`\mathrm{fl}_{64}(15/26) < 15/26`, so a plain floor reads
level 14). :func:`grid_index` therefore floors against the grid *as the dtype represents it*:

.. math::
    \mathrm{index}(x) = \max\{\, n \in [\mathrm{low}, \mathrm{high}] : g_s(n) \le x \,\},
    \qquad g_s(n) = \mathrm{fl}((n - s)/K)

with :math:`g_s` = :func:`grid_value` in ``x.dtype`` and shift :math:`s` (0: floor; 1/2: round
to nearest, halves up). Because :math:`g_s` is non-decreasing in :math:`n`, this gives, for
every :math:`K` and every floating dtype:

- ``grid_value(grid_index(x)) <= x`` for :math:`s = 0` and :math:`x \ge g_0(\mathrm{low})` (a
  floor never rounds up);
- ``grid_index(grid_value(n), shift=s) == n`` for :math:`s \in \{0, 1/2\}` whenever the dtype
  tells the grid values apart: float64 with :math:`K \le 2^{40}`, float32 with
  :math:`K < 2^{22}` (values in :math:`[0, 1]`);
- decode after encode is idempotent: with :math:`y` = ``grid_value(grid_index(x, shift=s))``,
  ``grid_index(y, shift=s)`` gives the same :math:`y` back; unconditionally for :math:`s = 0`,
  and for :math:`0 < s < 1` whenever the dtype separates :math:`n/K` from :math:`(n + 1 - s)/K`
  (float64 with :math:`K \le 2^{40}`, :math:`s \le 0.99`; float32 with :math:`K \le 2^{16}`).

**Algorithm and bound.** For float32 :math:`x`, replace :math:`x` by :math:`H`, the largest
float64 with :math:`\mathrm{fl}_{32}(H) \le x` (the midpoint to the next float32, or the
float64 just below it when that midpoint rounds up); then
:math:`g_s(n) \le x \iff \mathrm{fl}_{64}((n - s)/K) \le H`, a float64 problem
(float16 and bfloat16 take the same step to float32 first: PyTorch converts float64 to them
through float32). With :math:`u = 2^{-53}`,
:math:`|\mathrm{fl}_{64}((n - s)/K) - (n - s)/K| \le 2.01\,u\,|n - s|/K`
and the guess :math:`y = \mathrm{fl}(\mathrm{fl}(HK) + s)` has
:math:`|y - (HK + s)| \le 2.01\,u\,(|HK| + |s|)`. So the true index :math:`n^*` satisfies
:math:`n^* - \delta \le y < n^* + 1 + \delta` with
:math:`\delta \le 4.1\,u\,(\max(|n^*|, |HK|) + |s| + 1) < 1` while
:math:`|Kx| + |s| + 1 \le 2^{50}`, so :math:`\lfloor y \rfloor \in \{n^* - 1, n^*, n^* + 1\}`
and one comparison with :math:`g_s` (in ``x.dtype``, the definition itself) in each direction
lands on :math:`n^*` exactly. Larger :math:`|Kx|` only occurs outside ``[low, high]``, where
the guess is clamped first and the result saturates.

Round-to-nearest grids are the same mapping with shift :math:`s = 1/2` (boundaries
:math:`(n - 1/2)/K`, values :math:`n/K`).

**Direct path.** For a power-of-two :math:`K` whose boundaries the dtype holds exactly (shift
0 in float32/float64, shift 1/2 for float32 inputs; see ``_direct_index``) the plain
:math:`\lfloor Kx + s\rfloor` already is that index, and the repair is skipped.
"""

from __future__ import annotations

import torch
from torch import Tensor

from snn_encodings.errors import SpecError

__all__ = ["grid_index", "grid_quantise", "grid_value"]

_LIMIT = float(2**50)


def grid_value(index: Tensor, levels: int, dtype: torch.dtype, shift: float = 0.0) -> Tensor:
    r"""The float :math:`g(n) = \mathrm{fl}((n - s)/K)` of grid index ``index``: computed in float64
    and rounded once to ``dtype``.

    Decoders return ``grid_value(n, K, dtype)`` (shift 0, the grid value itself); :func:`grid_index`
    compares against ``grid_value(n, K, dtype, shift)`` (the boundary below :math:`n`).

    Args:
        index: integer-valued indices :math:`n` (any dtype), any shape, :math:`|n| \le 2^{50}`.
        levels: grid steps per unit, :math:`K \ge 1`.
        dtype: floating dtype of the result.
        shift: :math:`s`, in grid steps.
    Returns:
        Values, shape of ``index``, ``dtype``.
    Example:
        >>> grid_value(torch.tensor([0, 15, 26]), 26, torch.float32).tolist()[1]
        0.5769230723381042
    """
    return ((index.to(torch.float64) - shift) / levels).to(dtype)


def _largest_below(x: Tensor, wide: torch.dtype) -> Tensor:
    """Largest value of dtype ``wide`` that ``.to(x.dtype)`` rounds to at most ``x``."""
    up = torch.nextafter(x, torch.full_like(x, float("inf")))
    mid = (x.to(wide) + up.to(wide)) / 2  # exact: wide has at least one more bit
    below = torch.nextafter(mid, torch.full_like(mid, -float("inf")))
    return torch.where(mid.to(x.dtype) <= x, mid, below)


def _upper_preimage(x: Tensor) -> Tensor:
    """Largest float64 :math:`H` with ``H.to(x.dtype) <= x`` (``x`` itself for float64)."""
    if x.dtype == torch.float64:
        return x
    if x.dtype != torch.float32:
        x = _largest_below(x, torch.float32)
    return _largest_below(x, torch.float64)


_SIGNIFICAND_BITS = {torch.float32: 24, torch.float64: 53}


def _direct_index(x: Tensor, levels: int, low: int, high: int, shift: float) -> Tensor | None:
    r""":math:`\lfloor Kx + s \rfloor` where that float computation is already the exact index,
    else ``None``. Both cases take a power-of-two :math:`K` (so :math:`Kx` is exact, an
    overflow to infinity saturating at ``high``) and a range whose grid values the dtype holds
    exactly:

    - shift 0 in float32/float64: the boundaries are :math:`n/K` themselves;
    - shift 1/2 in float32/float64: the boundaries :math:`(2n - 1)/2K` are exact in the dtype,
      and :math:`\lfloor v + 1/2 \rfloor` of :math:`v = Kx` is taken as
      :math:`\lfloor v \rfloor + [v - \lfloor v \rfloor \ge 1/2]`: the fractional part of
      a float is exact, where :math:`v + 1/2` could round up onto the next integer.
    """
    if levels & (levels - 1) or levels > 2**60 or x.dtype not in _SIGNIFICAND_BITS:
        return None
    reach = max(abs(low), abs(high)) + 1
    bits = _SIGNIFICAND_BITS[x.dtype]
    if shift == 0 and reach <= 2**bits:
        return torch.floor(x * levels)
    if shift == 0.5 and reach <= 2 ** (bits - 2):
        scaled = x * levels
        whole = torch.floor(scaled)
        return whole.add_(scaled.sub_(whole).ge_(0.5))
    return None


def grid_index(x: Tensor, levels: int, *, low: int, high: int, shift: float = 0.0) -> Tensor:
    r"""The largest :math:`n \in [\mathrm{low}, \mathrm{high}]` with ``grid_value(n, levels,
    x.dtype, shift) <= x``: :math:`\lfloor Kx + s \rfloor` against the grid as ``x.dtype``
    represents it (see the module docstring for the exactness bound).

    ``shift=0`` is the floor onto :math:`\{n/K\}`; ``shift=0.5`` rounds to the nearest
    :math:`n/K`, halves up. Values below ``low``'s boundary give ``low``, above ``high``'s give
    ``high``. Any floating dtype (float16 and bfloat16 go through float32 on the way to
    :math:`H`).

    Args:
        x: finite values, any shape, floating point.
        levels: grid steps per unit, an integer :math:`K \ge 1`.
        low: smallest index returned.
        high: largest index returned, ``>= low``.
        shift: :math:`s`, in grid steps, :math:`|s| \le 2^{20}`.
    Returns:
        ``torch.int64`` indices, shape of ``x``.
    Raises:
        SpecError: for a non-float ``x``, ``levels < 1`` or ``low > high``.
    Example:
        >>> x = grid_value(torch.tensor([15]), 26, torch.float64)
        >>> int(torch.floor(x * 26)), int(grid_index(x, 26, low=0, high=26))
        (14, 15)
    """
    if not x.is_floating_point():
        raise SpecError(f"grid_index: x must be a float tensor, got {x.dtype}; convert it first")
    if levels < 1 or low > high:
        raise SpecError(
            f"grid_index: need levels >= 1 and low <= high, got levels={levels}, low={low}, "
            f"high={high}"
        )
    direct = _direct_index(x, levels, low, high, shift)
    if direct is not None:
        return direct.clamp_(low - 1, high + 1).to(torch.int64).clamp_(low, high)
    wide = _upper_preimage(x)
    guess = torch.floor(wide * levels + shift)
    guess = guess.clamp(max(low - 1, -_LIMIT), min(high + 1, _LIMIT))
    n = guess.to(torch.int64)
    # the repair compares with the definition itself: the boundary as x.dtype holds it
    n = torch.where(grid_value(n, levels, x.dtype, shift) > x, n - 1, n)
    n = torch.where(grid_value(n + 1, levels, x.dtype, shift) <= x, n + 1, n)
    return n.clamp(low, high)


def grid_quantise(x: Tensor, levels: int, *, low: int, high: int, shift: float = 0.0) -> Tensor:
    r"""``grid_value(grid_index(x, ...), levels, x.dtype)``: the grid value :math:`n/K` that ``x``
    maps to, in ``x.dtype``; NaN stays NaN (twins propagate it rather than invent a level).

    Args:
        x: values, any shape, floating point.
        levels: grid steps per unit, :math:`K \ge 1`.
        low: smallest index.
        high: largest index.
        shift: :math:`s`, in grid steps (0: floor; 1/2: nearest, halves up).
    Returns:
        Values on the grid :math:`\{n/K : \mathrm{low} \le n \le \mathrm{high}\}`, shape and
        dtype of ``x``.
    Example:
        >>> grid_quantise(torch.tensor([-0.2, 0.3, 0.99, 1.4]), 4, low=0, high=4).tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    direct = _direct_index(x, levels, low, high, shift)
    if direct is not None:  # n/K is exact in x.dtype here; NaN stays NaN through floor and clamp
        return direct.clamp_(low, high).div_(levels).to(x.dtype)
    value = grid_value(grid_index(x, levels, low=low, high=high, shift=shift), levels, x.dtype)
    return torch.where(torch.isnan(x), x, value)
