"""Fault injection for the test suite (contributors: see docs/contributing.md).

BOTTLENECK_FAULT=POINT[:N][:SIGNAL] sends this process SIGNAL (KILL by default, or INT for a
Ctrl-C) at that point, the time it is reached with count N, so tests can stop a real run at
an exact place. With BOTTLENECK_FAULT_ONCE=PATH, only the first process to create PATH is
stopped (a Ray worker restarted after the fault then gets on).

It is inert unless the test suite arms it (BOTTLENECK_TEST_FAULTS=1, set by tests/conftest.py):
a stray BOTTLENECK_FAULT in a user's environment must never kill a real run. Such a setting is
said once, as a note, and otherwise ignored."""
from __future__ import annotations

import logging
import os
import signal

ARMED = "BOTTLENECK_TEST_FAULTS"
_said: list[str] = []


def checkpoint(point: str, count: int | None = None) -> None:
    spec = os.environ.get("BOTTLENECK_FAULT")
    if not spec:
        return
    if os.environ.get(ARMED) != "1":
        if not _said:
            _said.append(spec)
            logging.getLogger("bottleneck").warning(
                "BOTTLENECK_FAULT=%s is ignored: fault injection is for the test suite only", spec)
        return
    name, n, sig = (spec.split(":") + ["", ""])[:3]
    if name == point and (not n or count == int(n)):
        once = os.environ.get("BOTTLENECK_FAULT_ONCE")
        if once:
            try:
                os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return
        if sig == "INT":  # as a terminal's Ctrl-C, even where this process was started ignoring SIGINT
            signal.signal(signal.SIGINT, signal.default_int_handler)  # (a background job of a script is)
        os.kill(os.getpid(), getattr(signal, f"SIG{sig or 'KILL'}"))
