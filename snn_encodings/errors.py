"""Exception and warning classes of snn-encodings.

Every error is a :class:`SnnEncodingsError`; the specific classes also subclass
:class:`ValueError` so that callers' ``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "ConversionError",
    "DataError",
    "ExportError",
    "SnnEncodingsError",
    "SnnEncodingsWarning",
    "SpecError",
]


class SnnEncodingsError(Exception):
    """Base class of every error raised by snn-encodings."""


class SpecError(SnnEncodingsError, ValueError):
    """A neuron spec, or a value handed to an encoder or step function, is invalid."""


class ConversionError(SnnEncodingsError, ValueError):
    """An ANN cannot be converted, calibrated or evaluated as asked."""


class ExportError(SnnEncodingsError, ValueError):
    """A converted network cannot be written to (or read from) an export format."""


class DataError(SnnEncodingsError, ValueError):
    """A data file is missing, corrupt or inconsistent."""


class SnnEncodingsWarning(UserWarning):
    """A legitimate but risky request (for example an approximate conversion mode)."""
