"""The sqlite stores of a home (``history.db``, ``outbox.db``) when their file is damaged: how
sqlite says so, moving the file aside with its journal, and a cross-process exclusive lock
(``fcntl.flock``; released if the holder dies) for that one-off decision, which two processes
must not both take."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


def is_corrupt(exc: BaseException) -> bool:
    """sqlite's words for a file that is not (or no longer) a database."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and ("file is not a database" in text or "malformed" in text)


def move_with_journal(path: Path, target: Path) -> None:
    """Move the database ``path`` and its ``-wal`` / ``-shm`` to ``target`` (same suffixes); a
    file already gone (another process moved it) is skipped, any other OSError raised."""
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(path.with_name(path.name + suffix), target.with_name(target.name + suffix))


@contextlib.contextmanager
def exclusive_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed) for the block. Without
    one (no fcntl, an unwritable folder) the block runs unlocked, as it did before."""
    try:
        import fcntl

        fh = open(path, "a+")  # noqa: SIM115 - held across the yield
    except (ImportError, OSError):
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        fh.close()
