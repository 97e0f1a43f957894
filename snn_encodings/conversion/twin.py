"""The quantisation-aware activation of ANN twins, and fine-tuning with it."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from snn_encodings.errors import ConversionError
from snn_encodings.functional.channels import channel_view
from snn_encodings.functional.grid import grid_quantise

__all__ = ["ClipQuant", "clip_quant"]


_SPAN = 2**49  # indices beyond this saturate; the clip below removes them anyway
_TINY = 1e-12  # smallest clip bound: a bound trained to 0 keeps its channel silent


class _GridSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: Tensor, levels: int, shift: float, high: int) -> Tensor:  # type: ignore[override]
        return grid_quantise(z, levels, low=-1, high=high, shift=shift)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:  # type: ignore[override]
        return grad, None, None, None


def clip_quant(z: Tensor, levels: int | None, shift: float = 0.0, upper: float = 1.0) -> Tensor:
    r"""Clip to :math:`[0, u]` and, with ``levels`` :math:`L`, floor-quantise to the grid :math:`1/L`.

    .. math::
        h(z) = \mathrm{clip}\left(\frac{\lfloor L z + \text{shift} \rfloor}{L}, 0, u\right)

    The floor is taken against the grid as ``z.dtype`` holds it
    (:func:`~snn_encodings.functional.grid.grid_quantise`, the same mapping as the encoders), so
    :math:`h(h(z)) = h(z)` for :math:`0 \le \text{shift} < 1` on grids the dtype resolves. The
    floor has a straight-through gradient (1), so the gradient is 1 inside :math:`[0, u)` and 0
    outside. ``levels=None`` is the plain clipped ReLU. This is the family of twins of the
    encodings: radix (:math:`L = r^T`, shift 0, :math:`u = 1 - r^{-T}`), IC-rate
    (:math:`L = T`, shift :math:`v_0/\theta`, QCFS-style).

    Args:
        z: normalised pre-activations (threshold units), any shape.
        levels: number of grid steps per unit, or ``None``.
        shift: added before the floor, in grid steps.
        upper: the clip's upper bound :math:`u`.
    Returns:
        Activations, shape and dtype of ``z``.
    Example:
        >>> clip_quant(torch.tensor([-0.2, 0.3, 0.99, 1.4]), levels=4).tolist()
        [0.0, 0.25, 0.75, 1.0]
    """
    if levels is not None:
        # indices saturate one step outside [0, u]: the clip maps them as it maps the rest
        high = math.ceil(upper * levels) + 1 if upper * levels < _SPAN else _SPAN
        z = _GridSTE.apply(z, levels, shift, high)
    return z.clamp(0.0, upper)


class ClipQuant(nn.Module):
    r"""A ReLU replacement with a trainable clip bound :math:`\lambda` and optional quantisation.

    .. math::
        y = \lambda \, h(x / \lambda)

    with :math:`h` = :func:`clip_quant`. Put it where the ANN has a ReLU and fine-tune: the
    converter then takes :math:`\lambda` as the layer's scale (no calibration needed) and the SNN
    reproduces the quantised activation (exactly for radix and Quartz; within the rate bound for
    IC-rate). :math:`\lambda` is one bound for the layer, or one per channel: a ``(C,)`` scale
    broadcasts over dim 1 of inputs ``(B, C, *)``, as :func:`convert`'s per-channel scales do.

    Args:
        scale: initial clip bound :math:`\lambda > 0`, in the input's units: a number, a 0-d
            tensor or a ``(C,)`` tensor (per channel).
        levels: grid steps per unit (``None``: plain clip).
        shift: offset added before the floor, in grid steps.
        upper: upper clip in units of :math:`\lambda` (e.g. ``1 - 2**-T`` for radix).
        trainable: learn :math:`\lambda` (PACT/QCFS style).
    Raises:
        ConversionError: for a scale that is not positive and finite, or not a number or a
            vector, or bad ``levels``.
    """

    def __init__(
        self,
        scale: float | Tensor = 1.0,
        levels: int | None = None,
        shift: float = 0.0,
        upper: float = 1.0,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        value = torch.as_tensor(scale, dtype=torch.float32).detach().clone()
        if value.dim() > 1 or value.numel() == 0 or not bool((value > 0).all()):
            raise ConversionError(
                "ClipQuant.scale must be a positive number or a vector (C,) of positive "
                f"numbers, got {scale!r}"
            )
        if not bool(torch.isfinite(value).all()):
            raise ConversionError(f"ClipQuant.scale must be finite, got {scale!r}")
        if levels is not None and (
            isinstance(levels, bool) or not isinstance(levels, int) or levels < 1
        ):
            raise ConversionError(
                f"ClipQuant.levels must be an integer >= 1 or None, got {levels!r}"
            )
        if trainable:
            self.scale = nn.Parameter(value)
        else:
            self.register_buffer("scale", value)
        self.levels = levels
        self.shift = float(shift)
        self.upper = float(upper)

    @property
    def bound(self) -> Tensor:
        r"""The clip bound :math:`\lambda` in effect (0-d, or ``(C,)`` per channel), detached:
        what :func:`convert` takes as the layer's scale."""
        return self._bound().detach().clone()

    def _bound(self) -> Tensor:
        return self.scale.abs().clamp(min=_TINY)

    def forward(self, x: Tensor) -> Tensor:
        scale = channel_view(self._bound(), x.dim() - 1)
        return clip_quant(x / scale, self.levels, self.shift, self.upper) * scale

    def extra_repr(self) -> str:
        bound = self.bound
        scale = (
            f"{float(bound):.4g}"
            if bound.dim() == 0
            else f"({bound.numel()} channels, {float(bound.min()):.4g} to {float(bound.max()):.4g})"
        )
        return f"scale={scale}, levels={self.levels}, shift={self.shift}, upper={self.upper}"
