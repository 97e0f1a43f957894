"""Atomic file writes: a temporary file in the same folder, then a rename over the target.

The temporary file is named ``.<target name>.<process id>.<random>.tmp``. It is removed on any
error, ``KeyboardInterrupt`` included; a process killed outright (``SIGKILL``, power loss) cannot
remove it, so every write first removes the temporary files of its target left by processes that
no longer run. Only a regular file (or nothing) is ever replaced: a directory, a device such as
``/dev/full``, a FIFO or a socket at the target is refused.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from snn_encodings.errors import ExportError

__all__ = ["check_writable", "write_atomically"]


def check_writable(path: str | os.PathLike[str], where: str) -> Path:
    """Refuse a target that :func:`write_atomically` would not write; return it as a ``Path``.

    Raises:
        ExportError: if the folder does not exist, or the target exists and is not a regular
            file; the message names the path and what to do.
    """
    target = Path(path)
    folder = target.parent
    if not folder.is_dir():
        raise ExportError(
            f"{where}: cannot write {os.fspath(path)!r}: the folder {os.fspath(folder)!r} does "
            "not exist; create it first"
        )
    if target.is_dir():
        raise ExportError(
            f"{where}: cannot write {os.fspath(path)!r}: it is a directory; give a file name"
        )
    if target.exists() and not target.is_file():
        raise ExportError(
            f"{where}: refusing to replace {os.fspath(path)!r}: it exists and is not a regular "
            "file (a device, FIFO or socket); choose another path"
        )
    return target


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _remove_stale(target: Path) -> None:
    """Remove temporary files of ``target`` left by processes that no longer run."""
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.(\d+)\.[0-9a-f]+\.tmp$")
    for entry in target.parent.iterdir():
        match = pattern.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            entry.unlink(missing_ok=True)


def write_atomically(
    path: str | os.PathLike[str], write: Callable[[str], None], where: str
) -> Path:
    """Call ``write(temporary_path)`` and move the result to ``path`` with :func:`os.replace`.

    The temporary file gets the usual permissions (``0o666`` less the umask). On any error the
    temporary file is removed and ``path`` is untouched.

    Raises:
        ExportError: naming ``where`` and the path when the file cannot be written (see
            :func:`check_writable`).
    """
    target = check_writable(path, where)
    _remove_stale(target)
    temporary = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise ExportError(
            f"{where}: cannot write {os.fspath(path)!r}: {error.strerror or error}"
        ) from error
    try:
        write(os.fspath(temporary))
        os.replace(temporary, target)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise ExportError(
                f"{where}: cannot write {os.fspath(path)!r}: {error.strerror or error}"
            ) from error
        raise
    return target
