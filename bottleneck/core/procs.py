"""Processes: whether one is alive (used by the feed, the Ray watchdog and the cache sweep),
importing Keras without TensorFlow's start-up lines (the command line, the lab's notebooks), and
refusing work in a worker process that is still importing its parent's script."""
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


def importing_main() -> bool:
    """Whether this process is a multiprocessing worker still importing the script that started its
    parent: spawn and forkserver workers (the feed's) run that script as ``__mp_main__`` before
    their first task, so an unguarded call in it runs again in every worker. The flag is the one
    multiprocessing's own check reads (``spawn._check_not_importing_main``)."""
    import multiprocessing

    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))


def exit_if_importing_main(what: str) -> None:
    """Stop a worker that is importing its parent's script and reached ``what``: run there, the
    call would wait forever for the cache file its parent holds (or redo the parent's work). The
    worker says why and exits; its parent then reports a feed worker that failed to start."""
    if not importing_main():
        return
    main = sys.modules.get("__mp_main__") or sys.modules.get("__main__")  # the former while it is imported
    script = getattr(main, "__file__", None) or "the script that started it"
    sys.stderr.write(f"error: a worker process of bottleneck's feed imported {script}, and the script called {what} "
                     "as it was imported (worker processes import the script that started them, as with any "
                     "multiprocessing)\n"
                     "what to do: put the script's calls under `if __name__ == \"__main__\":`\n")
    sys.stderr.flush()
    raise SystemExit(2)  # an exception here would print the worker's traceback as well
