"""Atomic file writes for the exporters: a temporary file in the same folder, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from snn_encodings.errors import ExportError

__all__ = ["write_atomically"]


def write_atomically(
    path: str | os.PathLike[str], write: Callable[[str], None], where: str
) -> Path:
    """Call ``write(temporary_path)`` and move the result to ``path`` with :func:`os.replace`.

    On any error the temporary file is removed and ``path`` is untouched.

    Raises:
        ExportError: naming ``where`` and the path when the file cannot be written.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        os.close(handle)
    except OSError as error:
        raise ExportError(
            f"{where}: cannot write {os.fspath(path)!r}: {error.strerror or error}"
        ) from error
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise ExportError(f"{where}: cannot write {os.fspath(path)!r}: {error}") from error
        raise
    return target
