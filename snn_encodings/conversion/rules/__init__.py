"""Per-encoding conversion hooks; importing this package registers every rule."""

from __future__ import annotations

from snn_encodings.conversion.rules.base import Rule, register_rule, rule_for
from snn_encodings.conversion.rules.icrate import ICRateRule
from snn_encodings.conversion.rules.quartz import QuartzRule
from snn_encodings.conversion.rules.radix import RadixRule

__all__ = ["ICRateRule", "QuartzRule", "RadixRule", "Rule", "register_rule", "rule_for"]
