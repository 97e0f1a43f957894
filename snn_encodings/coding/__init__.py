"""Encoders (values -> time-first spike trains) and decoders, one module per encoding."""

from __future__ import annotations

from snn_encodings.coding.icrate import decode_icrate, encode_icrate, sigma_delta
from snn_encodings.coding.quartz import decode_quartz, encode_quartz, quantise_quartz
from snn_encodings.coding.radix import decode_radix, encode_radix, radix_expansion

__all__ = [
    "decode_icrate",
    "decode_quartz",
    "decode_radix",
    "encode_icrate",
    "encode_quartz",
    "encode_radix",
    "quantise_quartz",
    "radix_expansion",
    "sigma_delta",
]
