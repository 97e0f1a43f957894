"""The spike nonlinearity: exact forward, surrogate gradient, no NaN from overflowing surrogates."""

from __future__ import annotations

import torch

from snn_encodings.functional.surrogate import atan, fast_sigmoid, spike


class _OverflowingSigmoid(torch.autograd.Function):
    """snnTorch 1.0's sigmoid surrogate: k e^{-kx} / (e^{-kx} + 1)^2, inf/inf far below 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        e = torch.exp(-25.0 * x)
        return grad * 25.0 * e / (e + 1) ** 2


def test_spike_is_exact_heaviside_with_any_surrogate() -> None:
    x = torch.tensor([-2.0, -1e-6, 0.0, 1e-6, 3.0])
    for surrogate in (None, fast_sigmoid(), atan(), _OverflowingSigmoid.apply):
        assert spike(x, surrogate).tolist() == [0.0, 0.0, 1.0, 1.0, 1.0]


def test_spike_gradient_is_finite_where_the_surrogate_overflows() -> None:
    x = torch.tensor([-20.0, -4.5, 0.0, 0.1], requires_grad=True)
    spike(x, _OverflowingSigmoid.apply).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[:2].tolist() == [0.0, 0.0] and x.grad[2] == 6.25


def test_spike_gradient_passes_other_surrogates_unchanged() -> None:
    x = torch.tensor([-4.5, 0.0, 0.5], requires_grad=True)
    spike(x, atan(2.0)).sum().backward()
    want = 2.0 / (2 * (1 + (torch.pi * 2.0 * x.detach() / 2) ** 2))
    assert torch.allclose(x.grad, want)
