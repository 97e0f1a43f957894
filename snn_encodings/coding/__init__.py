"""Encoders (values -> time-first spike trains) and decoders, one module per encoding."""

from __future__ import annotations

from snn_encodings.coding.icrate import decode_icrate, encode_icrate, sigma_delta
from snn_encodings.coding.quartz import decode_quartz, encode_quartz, quantise_quartz

__all__ = [
    "decode_icrate",
    "decode_quartz",
    "encode_icrate",
    "encode_quartz",
    "quantise_quartz",
    "sigma_delta",
]
