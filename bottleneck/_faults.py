"""Fault injection for tests: BOTTLENECK_FAULT=POINT[:N] SIGKILLs this process at that
point (the N-th time it is reached), so tests can kill a real run at an exact place."""
from __future__ import annotations

import os
import signal


def checkpoint(point: str, count: int | None = None) -> None:
    spec = os.environ.get("BOTTLENECK_FAULT")
    if not spec:
        return
    name, _, n = spec.partition(":")
    if name == point and (not n or count == int(n)):
        os.kill(os.getpid(), signal.SIGKILL)
