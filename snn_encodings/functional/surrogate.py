"""Spike nonlinearities: an exact Heaviside forward with a pluggable surrogate gradient."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["Surrogate", "atan", "fast_sigmoid", "spike"]

Surrogate = Callable[[Tensor], Tensor]
"""A differentiable stand-in for the Heaviside step, applied to ``v - threshold``.

Only its gradient is used: the spike values always come from the exact step :math:`H(x) = [x
\\ge 0]`, so any framework's surrogate (snnTorch ``spike_grad``, SpikingJelly
``surrogate_function``, Norse ``threshold``) can be passed without changing the spikes.
"""


def spike(x: Tensor, surrogate: Surrogate | None = None) -> Tensor:
    r"""Return :math:`H(x) = [x \ge 0]` in ``x.dtype``; gradients flow through ``surrogate``.

    Args:
        x: membrane minus threshold, any shape.
        surrogate: callable whose gradient replaces the Heaviside's; ``None`` gives no gradient.
    Returns:
        Spikes in ``{0, 1}``, shape and dtype of ``x``.
    Example:
        >>> spike(torch.tensor([-0.5, 0.0, 0.5])).tolist()
        [0.0, 1.0, 1.0]
    """
    exact = (x >= 0).to(x.dtype)
    if surrogate is None:
        return exact
    soft = surrogate(_FiniteGrad.apply(x))
    return exact + (soft - soft.detach())


class _FiniteGrad(torch.autograd.Function):
    r"""Identity whose backward turns NaN gradients at finite inputs into 0.

    Some surrogates evaluate their derivative in a form that overflows far from the threshold:
    snnTorch's ``sigmoid`` computes :math:`k e^{-kx} / (e^{-kx} + 1)^2`, which is
    :math:`\infty/\infty` = NaN once :math:`-kx > 88` in float32 (:math:`x < -3.5` for the
    default :math:`k = 25`), where the derivative's true value tends to 0. Membranes that far
    below threshold are common (e.g. Quartz, whose threshold is :math:`K + 1/2`), and one NaN
    would poison every gradient of a network; the guard gives the limit 0 instead.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return torch.where(torch.isnan(grad) & torch.isfinite(x), torch.zeros_like(grad), grad)


class _FastSigmoid(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, slope: float) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.slope = slope
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad / (ctx.slope * x.abs() + 1.0) ** 2, None


def fast_sigmoid(slope: float = 25.0) -> Surrogate:
    r"""SuperSpike-style surrogate: gradient :math:`1 / (1 + k|x|)^2`."""
    return lambda x: _FastSigmoid.apply(x, slope)


def atan(alpha: float = 2.0) -> Surrogate:
    r"""Arctangent surrogate: gradient :math:`\alpha / (2 (1 + (\pi \alpha x / 2)^2))`."""
    return lambda x: torch.atan(torch.pi / 2 * alpha * x) / torch.pi + 0.5
