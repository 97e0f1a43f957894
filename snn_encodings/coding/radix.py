"""Input coders and decoders of the radix encoding."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from snn_encodings.coding.checks import check_finite
from snn_encodings.errors import SpecError
from snn_encodings.functional.grid import grid_index, grid_value
from snn_encodings.specs.radix import Radix

__all__ = [
    "decode_radix",
    "encode_radix",
    "expansion_weights",
    "quantise_radix",
    "radix_expansion",
    "radix_scores",
    "steps_for_precision",
]

Overflow = Literal["saturate", "raise"]


def steps_for_precision(precision: float, base: int = 2) -> int:
    r"""Smallest :math:`T` with :math:`r^{-T} \le` ``precision``.

    Example:
        >>> steps_for_precision(0.01), steps_for_precision(1 / 256), steps_for_precision(0.01, 3)
        (7, 8, 5)
    """
    if (
        isinstance(precision, bool)
        or not isinstance(precision, (int, float))
        or not 0 < precision < 1
    ):
        raise SpecError(f"steps_for_precision: precision must be in (0, 1), got {precision!r}")
    steps = max(1, math.ceil(math.log(1 / precision) / math.log(base) - 1e-12))
    while float(base) ** -steps > precision:
        steps += 1
    return steps


def _check_values(
    x: Tensor, spec: Radix, where: str, overflow: Overflow, precision: float | None
) -> Tensor:
    check_finite(x, where)
    if overflow not in ("saturate", "raise"):
        raise SpecError(f"{where}: overflow must be 'saturate' or 'raise', got {overflow!r}")
    if (x < 0).any():
        raise SpecError(
            f"{where}: values must be >= 0, got a minimum of {x.min().item():.6g}; radix codes "
            f"carry values in [0, 1)"
        )
    if overflow == "raise" and (x >= 1).any():
        raise SpecError(
            f"{where}: values must be < 1, got a maximum of {x.max().item():.6g}; rescale "
            f"the input or pass overflow='saturate'"
        )
    if precision is not None:
        needed = steps_for_precision(precision, spec.base)
        if spec.steps < needed:
            raise SpecError(
                f"{where}: Radix(steps={spec.steps}, base={spec.base}) resolves "
                f"{spec.resolution:.6g}, coarser than the requested precision {precision:g}; "
                f"use steps >= {needed}"
            )
    return x


def quantise_radix(x: Tensor, spec: Radix) -> Tensor:
    r"""Integer digit code :math:`n = \max\{n : n / r^T \le x\}`, clipped to :math:`[0, r^T - 1]`.

    The comparison is made on the value :math:`n / r^T` rounded to ``x.dtype``, as
    :func:`decode_radix` returns it (:func:`~snn_encodings.functional.grid.grid_index`), so a
    decoded value re-encodes to its own code even for bases whose grid is not dyadic
    (:math:`1/3` is not a float).

    Args:
        x: finite values, any shape.
        spec: encoding parameters.
    Returns:
        ``torch.int64`` codes, shape of ``x``.
    Example:
        >>> quantise_radix(torch.tensor([0.0, 0.3, 0.999, 2.0]), Radix(steps=2)).tolist()
        [0, 1, 3, 3]
    """
    return grid_index(x, spec.levels, low=0, high=spec.levels - 1)


def expansion_weights(steps: int, base: int, leak: float, threshold: float) -> Tensor:
    r"""Value of one spike at each digit slot of the :math:`(\alpha, \theta_n)` expansion,
    :math:`w_j = \theta_n \alpha^j`, :math:`j = 0 \dots T-1`, float64.

    Example:
        >>> expansion_weights(3, 2, 0.5, 0.5).tolist()
        [0.5, 0.25, 0.125]
    """
    return threshold * leak ** torch.arange(steps, dtype=torch.float64)


def radix_expansion(
    x: Tensor, *, steps: int, base: int = 2, leak: float, threshold: float
) -> Tensor:
    r"""The paper's encoder neuron for any leak :math:`\alpha` and normalised threshold
    :math:`\theta_n` (a reconstruction of Wang et al., Section IV-B), MSB first.

    The membrane starts at the value and the threshold leaks by :math:`\alpha` per digit slot;
    each slot has :math:`r - 1` binary sub-steps:

    .. math::
        v_0 = x, \qquad s = H(v - \theta_n \alpha^j), \qquad v \leftarrow v - \theta_n \alpha^j s,
        \qquad \hat x = \sum_j \theta_n \alpha^j d_j

    (equivalently the membrane is amplified by :math:`1/\alpha` against a fixed threshold).
    :math:`\alpha = \theta_n = 1/r` gives the base-:math:`r` digits of :math:`x` truncated to
    :math:`T` places (the paper's "binary setting" for :math:`r = 2`: 0.78125 -> '11001000');
    :math:`\alpha = 1` is deterministic rate coding with spikes worth :math:`\theta_n`. The
    decoded value never exceeds :math:`x` (greedy, no overshoot).

    In floating point the test :math:`v \ge \theta_n \alpha^j` is made as
    :math:`\hat x + \theta_n \alpha^j \le x`, on the running decoded value :math:`\hat x`
    summed spike by spike in float64 and rounded to ``x.dtype``, exactly as :func:`decode_radix`
    sums it; so the decoded value re-encodes to the same spikes (a remainder that is exactly
    the next weight is never lost to rounding).

    Args:
        x: values, any shape ``(*)``, finite.
        steps: digit slots :math:`T`.
        base: :math:`r`; ``r - 1`` sub-steps per slot.
        leak: :math:`\alpha \in (0, 1]`.
        threshold: :math:`\theta_n \in (0, 1]`.
    Returns:
        Spikes ``(T (r-1), *)`` in ``{0, 1}``, dtype of ``x`` (computed in float64).
    Example:
        >>> s = radix_expansion(torch.tensor(0.78125), steps=8, leak=0.5, threshold=0.5)
        >>> "".join(str(int(b)) for b in s)
        '11001000'
    """
    check_finite(x, "radix_expansion")
    total = torch.zeros(x.shape, dtype=torch.float64, device=x.device)
    spikes = []
    for weight in expansion_weights(steps, base, leak, threshold).tolist():
        for _ in range(base - 1):
            candidate = total + weight
            fired = candidate.to(x.dtype) <= x
            total = torch.where(fired, candidate, total)
            spikes.append(fired)
    return torch.stack(spikes).to(x.dtype)


def _expansion_value(digit_spikes: Tensor, spec: Radix, dtype: torch.dtype) -> Tensor:
    # digit_spikes (T, r-1, *) in slot order: add weight j once per spike, in the order
    # radix_expansion fired them, so the float64 sum is bit for bit its running value
    weights = expansion_weights(
        spec.steps, spec.base, spec.leak_factor, spec.normalised_threshold
    ).tolist()
    total = torch.zeros(digit_spikes.shape[2:], dtype=torch.float64, device=digit_spikes.device)
    for j, weight in enumerate(weights):
        for sub in range(spec.substeps):
            total = total + digit_spikes[j, sub] * weight
    return total.to(dtype)


def _unary(digits: Tensor, substeps: int, dtype: torch.dtype) -> Tensor:
    # digits (T, *) ints -> spikes (T * substeps, *): digit d = d ones in its slot
    slots = torch.arange(substeps, device=digits.device).view(
        1, substeps, *([1] * (digits.dim() - 1))
    )
    spikes = (slots < digits.unsqueeze(1)).to(dtype)
    return spikes.reshape(digits.shape[0] * substeps, *digits.shape[1:])


def encode_radix(
    x: Tensor, spec: Radix, *, overflow: Overflow = "saturate", precision: float | None = None
) -> Tensor:
    r"""Encode values :math:`x \in [0, 1)` as radix spike trains, time-first.

    .. math::
        n = \lfloor x\, r^T \rfloor, \qquad n = \sum_{k=1}^{T} d_k r^{T-k}

    Digit :math:`d_k` occupies slot :math:`k` (MSB first, ``mode="exact"``) or slot
    :math:`T + 1 - k` (LSB first, ``mode="paper"``); a slot is :math:`r - 1` steps and holds
    :math:`d_k` spikes followed by silence, so spikes stay binary. Outside the radix setting
    (``leak`` or ``threshold`` not :math:`1/r`) the digits come from :func:`radix_expansion`.

    Args:
        x: values, shape ``(B, *)``, floating point.
        spec: encoding parameters.
        overflow: values :math:`\ge 1` ``"saturate"`` to :math:`1 - r^{-T}` (all digits
            :math:`r - 1`), or ``"raise"``.
        precision: if given, require :math:`r^{-T} \le` ``precision``.
    Returns:
        Spikes ``(T (r-1), B, *)`` in ``{0, 1}``, dtype of ``x``.
    Raises:
        SpecError: for NaN/inf, negative values, values :math:`\ge 1` with
            ``overflow="raise"``, or too few steps for ``precision``.
    Example:
        >>> encode_radix(torch.tensor([0.625]), Radix(steps=3)).flatten().tolist()
        [1.0, 0.0, 1.0]
        >>> encode_radix(torch.tensor([0.625]), Radix(steps=3, mode="paper")).flatten().tolist()
        [1.0, 0.0, 1.0]
        >>> encode_radix(torch.tensor([0.75]), Radix(steps=3, mode="paper")).flatten().tolist()
        [0.0, 1.0, 1.0]
    """
    _check_values(x, spec, "encode_radix", overflow, precision)
    if not spec.is_radix_setting:
        capped = x.clamp(max=1.0)
        spikes = radix_expansion(
            capped,
            steps=spec.steps,
            base=spec.base,
            leak=spec.leak_factor,
            threshold=spec.normalised_threshold,
        )
        if spec.mode == "paper":
            slots = spikes.reshape(spec.steps, spec.substeps, *x.shape)
            spikes = slots.flip(0).reshape(spikes.shape)
        return spikes
    n = quantise_radix(x, spec)
    powers = torch.tensor(
        [spec.base ** (spec.steps - 1 - j) for j in range(spec.steps)],
        dtype=torch.int64,
        device=x.device,
    ).view(-1, *([1] * x.dim()))
    digits = torch.div(n.unsqueeze(0), powers, rounding_mode="floor") % spec.base
    if spec.mode == "paper":
        digits = digits.flip(0)
    return _unary(digits, spec.substeps, x.dtype)


def decode_radix(spikes: Tensor, spec: Radix) -> Tensor:
    r"""Decode radix spike trains: :math:`\hat x = \sum_k d_k r^{-k}` (or, outside the radix
    setting, :math:`\sum_j \theta_n \alpha^j d_j`).

    The sum is formed exactly on integers and divided once by :math:`r^T` in float64, so a
    decoded value re-encodes to the same spikes.

    Args:
        spikes: ``(T (r-1), B, *)`` spikes (MSB first in exact mode, LSB first in paper mode).
        spec: encoding parameters.
    Returns:
        Values ``(B, *)`` in dtype of ``spikes``.
    Raises:
        SpecError: if the time dimension is not ``spec.steps_per_layer``.
    Example:
        >>> decode_radix(torch.tensor([[1.0], [0.0], [1.0]]), Radix(steps=3)).tolist()
        [0.625]
    """
    window = spec.steps_per_layer
    if spikes.dim() < 1 or spikes.shape[0] != window:
        raise SpecError(
            f"decode_radix: expected {window} time steps (steps * (base - 1)) first, got shape "
            f"{tuple(spikes.shape)}"
        )
    slots = spikes.to(torch.float64).reshape(spec.steps, spec.substeps, *spikes.shape[1:])
    if spec.mode == "paper":
        slots = slots.flip(0)
    if not spec.is_radix_setting:
        return _expansion_value(slots, spec, spikes.dtype)
    digits = slots.sum(1)
    view = (-1, *([1] * (digits.dim() - 1)))
    powers = torch.tensor(
        [float(spec.base ** (spec.steps - 1 - j)) for j in range(spec.steps)],
        dtype=torch.float64,
        device=spikes.device,
    ).view(view)
    n = (digits * powers).sum(0)
    return grid_value(n, spec.levels, spikes.dtype)


def radix_scores(spikes: Tensor, spec: Radix, **_: object) -> Tensor:
    """An output layer's spike record ``(T, B, K)`` as class scores ``(B, K)``: the digit value
    of its last window (:func:`decode_radix`).

    Raises:
        SpecError: for a record shorter than the window ``spec.steps_per_layer``.
    """
    window = spec.steps_per_layer
    if spikes.shape[0] < window:
        raise SpecError(
            f"class_scores: a radix output needs a window of {window} steps, the record "
            f"has {spikes.shape[0]}; run at least {window} steps"
        )
    return decode_radix(spikes[-window:], spec)
