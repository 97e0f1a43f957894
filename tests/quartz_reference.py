"""Reference Quartz computations the tests compare the library with (not library code).

:func:`quartz_layer_values` evaluates one Quartz layer in closed form from its input values;
:func:`bias_corrected_normalise` is Lenz et al. Algorithm 1 written literally and
:func:`layerwise_normalise` the layer-wise (Rueckauer) rule the pipeline implements.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import cast

import torch
from torch import Tensor, nn

from snn_encodings.conversion.rules.quartz import quartz_bias_levels, quartz_twin_levels
from snn_encodings.errors import ConversionError
from snn_encodings.specs.quartz import Quartz

__all__ = ["bias_corrected_normalise", "layerwise_normalise", "quartz_layer_values"]


def quartz_layer_values(
    x: Tensor,
    linear: Callable[[Tensor], Tensor],
    bias: Tensor | None,
    spec: Quartz,
    *,
    output: bool = False,
    exact_early: bool = True,
) -> tuple[Tensor, Tensor]:
    r"""Evaluate one Quartz layer from its input values, without simulating the window.

    Inputs :math:`x_j = n_j/K` spike at :math:`s_j = 2K - n_j`. Before the readout the
    membrane is

    .. math::
        v_t = \sum_j w_j\,(t - s_j + 1)_+ + g_b\,(t - s_b + 1)_+, \quad t < 2K

    i.e. the layer applied to the integer "ramp" maps :math:`(t - s + 1)_+`; the bias relay
    fires at :math:`s_b = K` with weight :math:`g_b = b` (``bias_coding="weight"``) or at
    :math:`s_b = 2K - |n_b|` with :math:`g_b = \mathrm{sign}(n_b)` (``"time"``). A neuron whose
    :math:`v_t` reaches :math:`\theta` there fires early at :math:`t` (paper mode); every other
    neuron fires at :math:`3K - \hat n` with :math:`\hat n` = :func:`quartz_twin_levels`
    (clipped to :math:`[0, K]`, or :math:`[-K, K]` for the output layer). The result equals the decoded
    output of :class:`~snn_encodings.conversion.rules.quartz.QuartzLayer` spike for spike.

    Cost: one pass of ``linear`` for the twin plus one per step at which some input has
    arrived before the readout (at most :math:`2K`, :math:`K` for inputs in :math:`[0, 1]`),
    batched; ``exact_early=False`` skips the ramp passes (one pass, exact when no neuron
    fires early, which it cannot then report). In exact mode (``spec.mode``) no neuron fires
    early and the single pass is the whole evaluation.

    Args:
        x: input values on the grid :math:`1/K` in :math:`[0, 2]`, shape ``(B, *)``.
        linear: the layer's weight operation without bias (e.g. a bias-free ``F.linear``
            closure), weights already quantised to multiples of :math:`2^{-q}`.
        bias: the layer's bias per output feature, broadcastable to the output; or ``None``.
        spec: encoding parameters.
        output: evaluate the non-rectified output layer.
        exact_early: detect early spikes (see above).
    Returns:
        ``(values, early)``: decoded values ``(B, *out)`` and a bool mask of early spikes.
    Example:
        >>> spec = Quartz(t_max=4)
        >>> w = torch.tensor([[1.0, -0.5]])
        >>> values, early = quartz_layer_values(
        ...     torch.tensor([[0.75, 0.5]]), lambda a: a @ w.T, torch.tensor([0.25]), spec)
        >>> values.tolist(), early.tolist()
        ([[0.75]], [[False]])
    """
    k = spec.t_max
    levels = torch.round(x * k)
    z = linear(levels / k)
    if bias is not None:
        weight_coded = spec.bias_coding == "weight"
        bias_levels = bias * k if weight_coded else quartz_bias_levels(bias, spec)
        bias_time = torch.full_like(bias, k) if weight_coded else 2 * k - bias_levels.abs()
        bias_gain = bias if weight_coded else torch.sign(bias_levels)
        z = z + bias_levels / k
    low = -k if output else 0
    n_hat = quartz_twin_levels(z, spec).clamp(low, k)
    early = torch.zeros(n_hat.shape, dtype=torch.bool, device=n_hat.device)
    if not exact_early or spec.mode == "exact":
        return n_hat / k, early
    read = spec.read_step
    times = 2 * k - levels
    first = int(times.min().item()) if times.numel() else read
    if bias is not None and bias_levels.numel():
        first = min(first, int(bias_time.min().item()))
    steps = torch.arange(max(first, 0), read, dtype=x.dtype, device=x.device)
    fire_time = torch.full(n_hat.shape, read, dtype=torch.int64, device=n_hat.device)
    if steps.numel():
        shape = (-1,) + (1,) * x.dim()
        ramps = (steps.view(shape) - times.unsqueeze(0) + 1).clamp(min=0)
        v = linear(ramps.flatten(0, 1)).unflatten(0, (steps.numel(), x.shape[0]))
        if bias is not None:
            bias_ramp = (steps.view(shape) - bias_time + 1).clamp(min=0)
            v = v + bias_gain * bias_ramp
        crossed = v >= spec.threshold
        early = crossed.any(dim=0)
        index = torch.arange(steps.numel(), device=x.device).view(shape)
        big = torch.full_like(index, steps.numel())
        first_cross = torch.where(crossed, index, big).amin(dim=0)
        fire_time = torch.where(early, first_cross + int(steps[0].item()), fire_time)
    shifted = (fire_time - spec.layer_latency).clamp(min=0)
    early_values = (2 * k - shifted).to(n_hat.dtype)
    return torch.where(early, early_values, n_hat) / k, early


def _parameter_layers(model: nn.Sequential, where: str) -> list[int]:
    if not isinstance(model, nn.Sequential):
        raise ConversionError(f"{where}: expects an nn.Sequential, got {type(model).__name__}")
    indices = [i for i, m in enumerate(model) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not indices:
        raise ConversionError(f"{where}: the model has no Linear or Conv2d layer")
    return indices


def _parameter_layer(model: nn.Sequential, index: int) -> nn.Linear | nn.Conv2d:
    return cast("nn.Linear | nn.Conv2d", model[index])  # selected by _parameter_layers


def _percentile(values: Tensor, percentile: float) -> float:
    flat = values.detach().flatten().to(torch.float64)
    return float(torch.quantile(flat, percentile / 100.0).item())


@torch.no_grad()
def bias_corrected_normalise(
    model: nn.Sequential, x: Tensor, percentile: float = 98.5
) -> tuple[nn.Sequential, list[float]]:
    r"""Lenz et al. Algorithm 1, literally, on a copy of ``model``.

    For each parameter layer :math:`l` in order: run the partially normalised network up to
    and including :math:`l`, take :math:`s_l` = the percentile of that output, then
    :math:`W_l \leftarrow W_l / s_l` and :math:`b_l \leftarrow b_l / \prod_{k \le l} s_k`.
    Layer :math:`l`'s bias is still unscaled when :math:`s_l` is measured, so for
    :math:`l \ge 2` with a non-zero bias :math:`\mu_l = \prod_{k \le l} s_k` is the
    percentile of :math:`z_l - b_l + \mu_{l-1} b_l`, not of the raw :math:`z_l`; the network
    is still consistently scaled (layer :math:`l` outputs :math:`z_l/\mu_l`). A reference
    for tests; the pipeline normalises layer-wise (:func:`layerwise_normalise`).

    Args:
        model: a Sequential of Linear/Conv2d layers and positively homogeneous activations.
        x: calibration batch.
        percentile: in :math:`(0, 100]`.
    Returns:
        ``(normalised copy, [s_1, s_2, ...])``.
    Raises:
        ConversionError: if ``model`` is not a Sequential with a parameter layer.
    """
    indices = _parameter_layers(model, "bias_corrected_normalise")
    net = copy.deepcopy(model)
    scales: list[float] = []
    for index in indices:
        s = _percentile(net[: index + 1](x), percentile)
        scales.append(s)
        layer = _parameter_layer(net, index)
        layer.weight.div_(s)
        if layer.bias is not None:
            product = 1.0
            for value in scales:
                product *= value
            layer.bias.div_(product)
    return net, scales


@torch.no_grad()
def layerwise_normalise(
    model: nn.Sequential,
    x: Tensor,
    percentile: float = 98.5,
    *,
    scales: Sequence[float] | None = None,
) -> tuple[nn.Sequential, list[float]]:
    r"""Layer-wise (Rueckauer) normalisation: :math:`W_l \leftarrow W_l\lambda_{l-1}/\lambda_l`,
    :math:`b_l \leftarrow b_l/\lambda_l`, :math:`\lambda_0 = 1`.

    :math:`\lambda_l` is the percentile of layer :math:`l`'s raw pre-activation on ``x``
    (all from one pass of the original model), unless ``scales`` gives them.

    Args:
        model: a Sequential of Linear/Conv2d layers and positively homogeneous activations.
        x: calibration batch.
        percentile: in :math:`(0, 100]`.
        scales: the :math:`\lambda_l` to use instead of measuring them.
    Returns:
        ``(normalised copy, [lambda_1, lambda_2, ...])``.
    Raises:
        ConversionError: if ``model`` is not a Sequential with a parameter layer, or
            ``scales`` has the wrong length.
    """
    indices = _parameter_layers(model, "layerwise_normalise")
    if scales is None:
        lambdas = []
        activation = x
        for i, module in enumerate(model):
            activation = module(activation)
            if i in indices:
                lambdas.append(_percentile(activation, percentile))
    else:
        lambdas = [float(s) for s in scales]
        if len(lambdas) != len(indices):
            raise ConversionError(
                f"layerwise_normalise: {len(indices)} parameter layers but {len(lambdas)} scales"
            )
    net = copy.deepcopy(model)
    previous = 1.0
    for index, lam in zip(indices, lambdas):
        layer = _parameter_layer(net, index)
        layer.weight.mul_(previous / lam)
        if layer.bias is not None:
            layer.bias.div_(lam)
        previous = lam
    return net, lambdas
