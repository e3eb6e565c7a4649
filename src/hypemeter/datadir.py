"""Private files: the data directory 0700, everything in it 0600.

The embedded store keeps raw events (comment text, user ids), keys' hashes and
connector secrets in its data directory, so nobody but the user running Hypemeter
may read it. Files we create ourselves get their mode when they are opened.
DuckDB creates its own (the database, its write-ahead log, temporary files) with
the process's umask, so a process that opens a data directory narrows its umask
to 077 for good: whatever it creates later is private too. A data directory made
by an older version is tightened when it is opened.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600


def restrict_umask() -> None:
    """Make every file and directory this process creates from now on private."""
    current = os.umask(PRIVATE_UMASK)
    os.umask(current | PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) as 0700, or make an existing one 0700.

    An existing directory is tightened only when this user owns it and it is not a
    shared one (a sticky directory such as /tmp): the data directory is Hypemeter's
    own, a store file placed elsewhere leaves its directory alone.
    """
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        _chmod(directory, DIR_MODE)  # mkdir's mode passes through the umask
    if not missing:
        info = path.stat()
        if info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX:
            _chmod(path, DIR_MODE)
    return path


def tighten(directory: Path, prefix: str) -> None:
    """Make the files and directories under ``directory`` whose names start with
    ``prefix`` (and everything inside those) private; this user's only."""
    for entry in directory.glob(f"{prefix}*"):
        for path in (entry, *_walk(entry)):
            with contextlib.suppress(FileNotFoundError):
                info = path.lstat()
                if info.st_uid != os.geteuid() or stat.S_ISLNK(info.st_mode):
                    continue
                mode = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
                if stat.S_IMODE(info.st_mode) & PRIVATE_UMASK:
                    _chmod(path, mode)


def _walk(entry: Path) -> Iterator[Path]:
    if entry.is_dir() and not entry.is_symlink():
        yield from entry.rglob("*")


def open_private(path: Path, mode: str = "wb") -> IO[bytes]:
    """Open ``path`` for writing (created or truncated) readable by this user only,
    even if it existed with a wider mode."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: Path, text: str) -> None:
    """Replace the content of ``path`` with ``text``, readable by this user only."""
    with open_private(path) as handle:
        handle.write(text.encode())


def _chmod(path: Path, mode: int) -> None:
    # A file owned by another user cannot be changed; reading it still works.
    with contextlib.suppress(PermissionError):
        path.chmod(mode)
