"""Neuron specs: one frozen dataclass per encoding, and ``ALL_SPECS``, the list of them."""

from __future__ import annotations

from snn_encodings.specs.base import Spec
from snn_encodings.specs.icrate import ICRate

__all__ = ["ALL_SPECS", "ICRate", "Spec"]

ALL_SPECS: tuple[type[Spec], ...] = (ICRate,)
"""Every encoding the library defines; tests and adapters iterate over it."""
