"""Scalar-or-per-channel values (scales, gains, initial membranes) broadcast over a layer."""

from __future__ import annotations

from torch import Tensor

__all__ = ["channel_view"]


def channel_view(value: Tensor, dims: int) -> Tensor:
    """``value`` shaped to broadcast over a ``(C, *)`` block of ``dims`` dimensions.

    A scalar (0-d) stays as it is; a per-channel vector ``(C,)`` becomes ``(C, 1, ..., 1)``
    with ``dims - 1`` trailing ones. For a batch ``(B, C, H, W)`` pass ``dims = 3``; for a
    conv weight ``(out, in, kh, kw)`` scaled per output channel pass ``dims = 4``.

    Example:
        >>> import torch
        >>> channel_view(torch.tensor([1.0, 2.0]), 3).shape
        torch.Size([2, 1, 1])
        >>> channel_view(torch.tensor(2.0), 3).shape
        torch.Size([])
    """
    if value.dim() == 0:
        return value
    return value.reshape(-1, *([1] * (dims - 1)))
