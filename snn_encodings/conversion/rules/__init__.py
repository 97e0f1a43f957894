"""Per-encoding conversion hooks; importing this package registers every encoding's rule."""

from snn_encodings.conversion.rules import radix as _radix  # noqa: F401  (registers RadixRule)
