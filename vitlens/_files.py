"""Writing a file so that a reader sees all of it or none, and no link is written through."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` through ``write(f)`` on a temporary file of its own in the same folder
    (never a name a user's file could have), moved into place only when complete.

    A new file gets the permissions the umask gives (``0o666 & ~umask``, as ``open`` would,
    and any default ACL of the folder), not ``mkstemp``'s private 0600; a replaced file
    keeps its permission bits.
    """
    path = Path(path)
    try:
        keep = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        keep = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
            break
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        if keep is not None:
            os.chmod(tmp, keep)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
