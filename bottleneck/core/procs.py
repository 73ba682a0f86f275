"""Processes: whether one is alive (used by the feed, the Ray watchdog and the cache sweep), and
importing Keras without TensorFlow's start-up lines (the command line, the lab's notebooks)."""
from __future__ import annotations

import os
import sys


def import_keras_quietly() -> None:
    """Import Keras with TensorFlow's C++ start-up lines hidden: they go to fd 2 before any log
    setting applies, and would bury a table, an error message or a notebook's first output.
    ``BOTTLENECK_DEBUG=1`` shows them."""
    if "keras" in sys.modules or os.environ.get("BOTTLENECK_DEBUG"):
        return
    try:
        saved = os.dup(2)
    except OSError:
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import keras  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


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
