"""A cross-process exclusive lock on a file beside a store (``fcntl.flock``; released if the
holder dies), for the one-off decisions two processes must not both take: moving a corrupt
database aside (``history.db``, ``outbox.db``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path


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
