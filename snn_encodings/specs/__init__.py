"""Neuron specs: one frozen dataclass per encoding, and ``ALL_SPECS``, the list of them."""

from __future__ import annotations

from snn_encodings.specs.base import Spec
from snn_encodings.specs.icrate import ICRate
from snn_encodings.specs.quartz import Quartz
from snn_encodings.specs.radix import Radix

__all__ = ["ALL_SPECS", "ICRate", "Quartz", "Radix", "Spec"]

ALL_SPECS: tuple[type[Spec], ...] = (ICRate, Radix, Quartz)
"""Every encoding the library defines; tests and adapters iterate over it."""
