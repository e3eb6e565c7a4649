"""Private files: the data directory 0700, everything in it 0600.

The embedded store keeps raw events (comment text, user ids), keys' hashes and
connector secrets in its data directory, so nobody but the user running Hypemeter
may read it. Files we create ourselves get their mode when they are opened.
DuckDB creates its own (the database, its write-ahead log, temporary files) with
the process's umask, so a process that opens a data directory narrows its umask
to 077 for good: whatever it creates later is private too. A data directory made
by an older version is tightened when it is opened.

Only directories that are Hypemeter's are tightened: those it creates, and the data
directory while it holds nothing but Hypemeter's files. A directory of the user's
(``--data .`` in a project, the directory a ``duckdb:///`` DSN points into) keeps its
mode, and of its files only the store's own become private.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger("hypemeter.datadir")

PRIVATE_UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
STORE_STEM = "hypemeter"  # the default store: <data>/hypemeter.duckdb and its companions
# What else Hypemeter keeps in its data directory: the key files, the control socket,
# the demo's keys and mark.
DATA_FILES = frozenset(
    {"secret.key", "jwt.secret", "control.sock", "demo-keys.json", "demo-seeded.json"}
)


def restrict_umask() -> None:
    """Make every file and directory this process creates from now on private."""
    current = os.umask(PRIVATE_UMASK)
    os.umask(current | PRIVATE_UMASK)


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents 0700. A directory that exists already
    keeps its mode: it may be the user's (see ``private_data_dir``)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=DIR_MODE)
        _chmod(directory, DIR_MODE)  # mkdir's mode passes through the umask
    return path


def private_data_dir(path: Path, *, store_stem: str = STORE_STEM) -> Path:
    """``private_dir`` for the data directory: one that exists is made 0700 too, when
    this user owns it, it is not a shared one (sticky, such as /tmp) and it holds nothing
    but Hypemeter's files (``DATA_FILES``, and ``<store_stem>.*``): one made for
    Hypemeter, by hand or by an older version. Called when the store opens."""
    if not path.exists():
        return private_dir(path)
    info = path.stat()
    if not stat.S_IMODE(info.st_mode) & PRIVATE_UMASK:
        return path
    mine = info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX
    if mine and _holds_only_ours(path, store_stem, depth=2):
        _chmod(path, DIR_MODE)
        return path
    log.warning(
        "the data directory is left as it is (it holds files that are not Hypemeter's, "
        "or it is shared) and others may list it: give Hypemeter a directory of its own",
        extra={"path": str(path), "mode": oct(stat.S_IMODE(info.st_mode))},
    )
    return path


def _ours(name: str, store_stem: str) -> bool:
    return name in DATA_FILES or name.startswith(f"{store_stem}.")


def _holds_only_ours(directory: Path, store_stem: str, *, depth: int) -> bool:
    """Whether every entry is Hypemeter's: its files, or (``depth`` levels down) a
    directory holding only its files, such as another process's data directory."""
    for entry in directory.iterdir():
        if _ours(entry.name, store_stem):
            continue
        if depth == 0 or entry.is_symlink() or not entry.is_dir():
            return False
        if not _holds_only_ours(entry, store_stem, depth=depth - 1):
            return False
    return True


def tighten(paths: Iterable[Path]) -> None:
    """Make each of ``paths`` private (this user's only) when it exists: a file, or a
    directory and everything in it. For the files a store owns, made by an older version
    or before the umask was narrowed."""
    for entry in paths:
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
