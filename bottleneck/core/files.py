"""Writing files safely: one atomic write and one lock helper for the whole package."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def file_lock(lock: Path):
    """Hold an exclusive advisory lock on the file ``lock`` (created if missing, never deleted:
    deleting a lock file races with flock)."""
    with open(lock, "a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; single-process use only
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write a temporary file beside ``path``, then rename it over ``path``: a reader sees the
    old file or the new one, never half of one. The temporary name holds the process id, so
    two processes never write into one temporary; it is removed when the write fails."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
