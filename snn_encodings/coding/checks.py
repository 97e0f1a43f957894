"""Input checks shared by the encoders."""

from __future__ import annotations

import torch
from torch import Tensor

from snn_encodings.errors import SpecError
from snn_encodings.functional.finite import all_finite

__all__ = ["check_finite", "check_unit_interval"]


def check_finite(x: Tensor, where: str) -> None:
    """Raise :class:`SpecError` if ``x`` is not a floating tensor of finite values."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise SpecError(f"{where}: expected a floating-point tensor, got {type(x).__name__}")
    if not all_finite(x):
        raise SpecError(f"{where}: input contains NaN or inf")


def check_unit_interval(x: Tensor, where: str, *, upper_open: bool = False) -> None:
    """Raise :class:`SpecError` unless every value of ``x`` is finite and in [0, 1] (or [0, 1))."""
    check_finite(x, where)
    if x.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(x))
    if low < 0:
        raise SpecError(f"{where}: values must be >= 0, got a minimum of {low:.6g}")
    if high >= 1 if upper_open else high > 1:
        bound = "< 1" if upper_open else "<= 1"
        raise SpecError(f"{where}: values must be {bound}, got a maximum of {high:.6g}")
