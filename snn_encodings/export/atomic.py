"""The exporters' atomic writes (implemented in :mod:`snn_encodings.files`, which the conversion
package uses too without importing the export package)."""

from __future__ import annotations

from snn_encodings.files import check_writable, write_atomically

__all__ = ["check_writable", "write_atomically"]
