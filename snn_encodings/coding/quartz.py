"""Input coder and output decoder of the Quartz (time-to-first-spike) encoding."""

from __future__ import annotations

import torch
from torch import Tensor

from snn_encodings.coding.checks import check_finite, check_unit_interval
from snn_encodings.functional.grid import grid_index, grid_quantise, grid_value
from snn_encodings.specs.quartz import Quartz

__all__ = [
    "decode_quartz",
    "encode_quartz",
    "quantise_quartz",
    "quartz_levels",
    "quartz_scores",
]


def quartz_levels(x: Tensor, spec: Quartz) -> Tensor:
    r"""Integer level :math:`n = q(Kx) \in [0, K]` of each value, ``torch.int64``.

    :math:`q(u) = \lfloor u + 1/2 \rfloor` (``rounding="round"``) or :math:`\lfloor u \rfloor`
    (``"floor"``), :math:`K` = ``spec.t_max``, taken against the grid as ``x.dtype`` holds it
    (:func:`~snn_encodings.functional.grid.grid_index`), so a decoded value maps back to its own
    level for every :math:`K`. Levels outside :math:`[0, K]` saturate; no range check.
    """
    shift = 0.5 if spec.rounding == "round" else 0.0
    return grid_index(x, spec.t_max, low=0, high=spec.t_max, shift=shift)


def _checked(x: Tensor, spec: Quartz, where: str) -> Tensor:
    if spec.clip_inputs:
        check_finite(x, where)
        return x.clamp(0.0, 1.0)
    check_unit_interval(x, where)
    return x


def quantise_quartz(x: Tensor, spec: Quartz) -> Tensor:
    r"""The value an encoded input represents: :math:`n/K` with :math:`n = q(Kx)`.

    Args:
        x: values in :math:`[0, 1]`, any shape (clipped first with ``spec.clip_inputs``).
        spec: encoding parameters.
    Returns:
        Values on the grid :math:`1/K`, shape and dtype of ``x``.
    Raises:
        SpecError: for NaN/inf, or values outside :math:`[0, 1]` unless ``spec.clip_inputs``.
    Example:
        >>> quantise_quartz(torch.tensor([0.0, 0.3, 1.0]), Quartz(t_max=4)).tolist()
        [0.0, 0.25, 1.0]
    """
    x = _checked(x, spec, "quantise_quartz")
    shift = 0.5 if spec.rounding == "round" else 0.0
    return grid_quantise(x, spec.t_max, low=0, high=spec.t_max, shift=shift)


def encode_quartz(x: Tensor, spec: Quartz) -> Tensor:
    r"""Latency-code values as one spike each in a window of :math:`4K` steps (Eq. 1, shifted).

    .. math::
        s = 2K - n, \qquad n = q(Kx) \in \{0, \dots, K\}

    so :math:`x = 1` fires at :math:`K` and :math:`x = 0` at :math:`2K` (Lenz et al. Eq. 1
    has :math:`s = \lfloor K(1 - p)\rfloor`; here times are shifted by :math:`K` to leave
    room for values above 1, and ``spec.rounding`` picks :math:`q`).

    Args:
        x: values in :math:`[0, 1]`, shape ``(B, *)``.
        spec: encoding parameters; ``spec.clip_inputs`` clips instead of raising.
    Returns:
        ``(4K, B, *)`` spikes in ``{0, 1}``, dtype of ``x``, one spike per value.
    Raises:
        SpecError: for NaN/inf or a non-float tensor, or values outside :math:`[0, 1]`
            unless ``spec.clip_inputs``.
    Example:
        >>> spikes = encode_quartz(torch.tensor([1.0, 0.5, 0.0]), Quartz(t_max=2))
        >>> spikes.argmax(0).tolist()
        [2, 3, 4]
    """
    x = _checked(x, spec, "encode_quartz")
    times = 2 * spec.t_max - quartz_levels(x, spec)
    spikes = torch.zeros((spec.steps_per_layer, *x.shape), dtype=x.dtype, device=x.device)
    spikes.scatter_(0, times.unsqueeze(0), 1.0)
    return spikes


def decode_quartz(spikes: Tensor, spec: Quartz) -> Tensor:
    r"""Read values from first-spike times: :math:`y = (2K - t)/K`.

    A silent neuron reads :math:`-1`: an output layer (no rectifier) is silent exactly when
    its value is :math:`\le -1`, since its last possible spike encodes :math:`-1 + 1/K`.

    Args:
        spikes: ``(T, B, *)`` spike trains (the first spike of each neuron counts).
        spec: encoding parameters.
    Returns:
        ``(B, *)`` values on the grid :math:`1/K`, dtype of ``spikes``.
    Example:
        >>> spec = Quartz(t_max=2)
        >>> decode_quartz(encode_quartz(torch.tensor([1.0, 0.5, 0.0]), spec), spec).tolist()
        [1.0, 0.5, 0.0]
    """
    steps = spikes.shape[0]
    index = torch.arange(steps, device=spikes.device).view(-1, *([1] * (spikes.dim() - 1)))
    never = torch.full_like(index, 3 * spec.t_max)
    times = torch.where(spikes > 0, index, never).amin(dim=0)
    times = torch.minimum(times, torch.full_like(times, 3 * spec.t_max))
    dtype = spikes.dtype if spikes.is_floating_point() else torch.get_default_dtype()
    return grid_value(2 * spec.t_max - times, spec.t_max, dtype)


def quartz_scores(spikes: Tensor, spec: Quartz, **_: object) -> Tensor:
    """An output layer's spike record ``(T, B, K)`` as class scores ``(B, K)``: each neuron's
    first-spike value (:func:`decode_quartz`)."""
    return decode_quartz(spikes, spec)
