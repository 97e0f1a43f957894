"""Encoders (values -> time-first spike trains) and decoders, one module per encoding."""

from __future__ import annotations

from snn_encodings.coding.icrate import decode_icrate, encode_icrate, sigma_delta

__all__ = ["decode_icrate", "encode_icrate", "sigma_delta"]
