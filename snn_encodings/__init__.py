"""snn-encodings: radix, TTFS-Quartz and init-compensated rate spike encodings."""

from __future__ import annotations

from snn_encodings.specs import ALL_SPECS, ICRate, Radix, Spec

__all__ = ["ALL_SPECS", "ICRate", "Radix", "Spec"]
__version__ = "0.1.0"
