"""Input coders and output decoders of the IC-rate encoding."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from snn_encodings.coding.checks import check_finite, check_unit_interval
from snn_encodings.errors import SpecError
from snn_encodings.functional.grid import grid_index
from snn_encodings.specs.icrate import ICRate

__all__ = ["decode_icrate", "decode_icrate_count", "encode_icrate", "icrate_scores", "sigma_delta"]


def sigma_delta(x: Tensor, steps: int, *, offset: float = 0.5) -> Tensor:
    r"""Deterministic error-feedback (sigma-delta) rate coding of values in [0, 1].

    .. math::
        c_0 = \text{offset}, \qquad c_t = c_{t-1} + x, \qquad s_t = H(c_t - 1),
        \qquad c_t \leftarrow c_t - s_t

    The count over ``steps`` steps is :math:`\lfloor T x + \text{offset} \rfloor` (taken against
    the grid :math:`(n - \text{offset})/T` as ``x.dtype`` holds it, see
    :func:`~snn_encodings.functional.grid.grid_index`), so with the
    default offset it is :math:`x T` rounded (IC-SNN's coding compensation, reconstructed); with
    ``offset=0`` it is :math:`\lfloor T x \rfloor`, plain deterministic rate coding.

    Args:
        x: values in [0, 1], shape ``(B, *)``.
        steps: number of time steps ``T >= 1``.
        offset: initial content of the error accumulator, in [0, 1).
    Returns:
        Spikes ``(T, B, *)`` in ``{0, 1}``, dtype of ``x``.
    Raises:
        SpecError: for NaN/inf, values outside [0, 1], ``steps < 1`` or a bad offset.
    Example:
        >>> sigma_delta(torch.tensor([0.5]), 4).flatten().tolist()
        [1.0, 0.0, 1.0, 0.0]
    """
    check_unit_interval(x, "sigma_delta")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise SpecError(f"sigma_delta: steps must be an integer >= 1, got {steps!r}")
    if not 0 <= offset < 1:
        raise SpecError(f"sigma_delta: offset must be in [0, 1), got {offset!r}")
    # Closed form of the recursion: the count after t steps is floor(t x + offset), in float64
    # (exact for float32 x). The total is taken against the grid as x.dtype holds it, so a value
    # read back as count / T re-encodes to the same count; the bounds keep every step 0 or 1.
    total = grid_index(x, steps, low=0, high=steps, shift=offset)
    t = torch.arange(steps + 1, device=x.device).view(-1, *([1] * x.dim()))
    counts = torch.floor(t * x.to(torch.float64) + offset).to(torch.int64)
    counts = torch.minimum(torch.maximum(counts, total - (steps - t)), total.expand_as(counts))
    return (counts[1:] - counts[:-1]).to(x.dtype)


def encode_icrate(x: Tensor, spec: ICRate) -> Tensor:
    """Encode network inputs for the first layer, time-first.

    ``spec.input_coding == "analog"`` repeats ``x`` every step (any finite values);
    ``"sigma_delta"`` emits spikes with :func:`sigma_delta` (values in [0, 1]; offset 1/2 when
    ``spec.compensate``, else 0).

    Args:
        x: inputs, shape ``(B, *)``.
        spec: encoding parameters.
    Returns:
        ``(spec.steps, B, *)`` currents or spikes, dtype of ``x``.
    Raises:
        SpecError: for NaN/inf, or values outside [0, 1] with sigma-delta coding.
    """
    if spec.input_coding == "sigma_delta":
        return sigma_delta(x, spec.steps, offset=0.5 if spec.compensate else 0.0)
    check_finite(x, "encode_icrate")
    return x.unsqueeze(0).expand(spec.steps, *x.shape)


def decode_icrate(
    spikes: Tensor,
    spec: ICRate,
    *,
    v_final: Tensor | None = None,
    v0: float | Tensor | None = None,
) -> Tensor:
    r"""Decode an output layer's spikes to values in threshold units.

    Without compensation the value is the rate :math:`\theta N / T`. With ``spec.compensate``
    the residual membrane is added back (IC-SNN coding compensation, reconstructed):

    .. math::
        \hat y = \frac{\theta N + v_T - v_0}{T}

    which equals the time-averaged input current exactly (the membrane is a running sum).

    Args:
        spikes: ``(T, B, *)`` output spikes.
        spec: encoding parameters.
        v_final: membrane after the last step, ``(B, *)``; required with ``spec.compensate``.
        v0: initial membrane (default ``spec.default_v0``).
    Returns:
        ``(B, *)`` decoded values.
    Raises:
        SpecError: if ``v_final`` is missing under compensation.
    """
    return decode_icrate_count(spikes.sum(0), spikes.shape[0], spec, v_final=v_final, v0=v0)


def decode_icrate_count(
    count: Tensor,
    steps: int,
    spec: ICRate,
    *,
    v_final: Tensor | None = None,
    v0: float | Tensor | None = None,
) -> Tensor:
    """:func:`decode_icrate` from each neuron's spike count ``(B, *)`` over ``steps`` steps
    (for a window run in parts, whose spike records are not kept)."""
    total = count * spec.threshold
    if not spec.compensate:
        return total / steps
    if v_final is None:
        raise SpecError("decode_icrate: compensation needs v_final, the last membrane")
    start = spec.default_v0 if v0 is None else v0
    return (total + v_final - start) / steps


def icrate_scores(
    spikes: Tensor, spec: ICRate, *, v_final: Tensor | None = None, v0: float | Tensor | None = None
) -> Tensor:
    """An output layer's spike record ``(T, B, K)`` as class scores ``(B, K)``.

    The time-averaged value of :func:`decode_icrate`; without ``v_final`` the plain rate (the
    compensation needs the residual membrane).
    """
    if v_final is None and spec.compensate:
        spec = dataclasses.replace(spec, compensate=False)
    return decode_icrate(spikes, spec, v_final=v_final, v0=v0)
