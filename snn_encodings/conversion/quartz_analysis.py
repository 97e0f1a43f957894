"""Quartz operation counts (Lenz et al. Eq. 9 and the authors' read/write split)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from snn_encodings.errors import ConversionError
from snn_encodings.specs.quartz import Quartz

__all__ = ["QuartzOps", "quartz_operations"]


class QuartzOps(NamedTuple):
    r"""Operation count of a Quartz network per image (Lenz et al. Eq. 9 and the code's split).

    Attributes:
        synops: :math:`\sigma`, synaptic operations (weight additions into :math:`i`).
        neurons: :math:`\nu`, spiking neurons (hidden plus output).
        total: :math:`\Omega = \sigma + 2\nu T_{max}` (Eq. 9).
        read: :math:`\Omega_{read} = \sigma + 4\nu T_{max}` (memory reads, authors' code).
        write: :math:`\Omega_{write} = \sigma + \nu T_{max}` (memory writes, authors' code).
    """

    synops: float
    neurons: float
    total: float
    read: float
    write: float


def quartz_operations(
    synops: float | Sequence[float], neurons: float | Sequence[float], spec: Quartz
) -> QuartzOps:
    r"""Count operations per image from per-layer synaptic operations and neuron counts.

    Args:
        synops: :math:`\sigma` per image, a number or one number per layer (summed). The
            authors count the non-zero entries of each spiking layer's input-current tensor;
            spikes times fan-out is the paper's wording.
        neurons: :math:`\nu`, a number or one number per spiking layer (summed).
        spec: gives :math:`T_{max}` = ``spec.t_max``.
    Returns:
        A :class:`QuartzOps`.
    Raises:
        ConversionError: for a negative count.
    Example:
        >>> quartz_operations([100, 20], [10, 2], Quartz(t_max=16)).total
        504.0
    """
    sigma = float(sum(synops) if isinstance(synops, Sequence) else synops)
    nu = float(sum(neurons) if isinstance(neurons, Sequence) else neurons)
    if sigma < 0 or nu < 0:
        raise ConversionError(f"quartz_operations: counts must be >= 0, got {sigma}, {nu}")
    t = spec.t_max
    return QuartzOps(sigma, nu, sigma + 2 * nu * t, sigma + 4 * nu * t, sigma + nu * t)
