"""An advisory exclusive file lock, shared by training runs and benchmark runners."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


class LockHeld(RuntimeError):
    """Another process holds the lock; ``owner`` is the process id written in the lock file."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(f"{path} is locked by process {owner}")
        self.path = path
        self.owner = owner


@contextmanager
def exclusive_lock(path: str | Path, *, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created when missing) and record this process's id in it.

    Args:
        path: the lock file.
        wait: block until the lock is free; with False, raise
            :class:`LockHeld` at once when another process has it.
    """
    path = Path(path)
    if fcntl is None:
        # NOTE: without fcntl (Windows) nothing is locked: two processes can
        # resume one run at once, and two bench runners on one folder can drop
        # each other's rows.
        yield
        return
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise LockHeld(path, handle.read().strip() or "unknown") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
