"""Per-encoding conversion hooks; importing this package registers every rule."""

from snn_encodings.conversion.rules import quartz  # noqa: F401  (registers QuartzRule)
