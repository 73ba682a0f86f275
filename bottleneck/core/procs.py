"""Processes: whether one is alive (used by the feed, the Ray watchdog and the cache sweep)."""
from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a killed one waiting to be reaped, a zombie, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:  # no /proc (macOS): os.kill's answer stands
        return True
