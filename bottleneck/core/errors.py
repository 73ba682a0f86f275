"""One exception type for everything a user can fix.

The CLI prints ``str(error)`` (what happened, then what to do) and exits with
``error.exit_code``; it never shows a traceback for these.
"""
from __future__ import annotations


class BottleneckError(Exception):
    """A problem the user can act on: the message says what happened and what to do."""

    exit_code = 2

    def __init__(self, what: str, todo: str | None = None):
        self.what = what
        self.todo = todo
        super().__init__(what if not todo else f"{what}\n  what to do: {todo}")


class DatasetError(BottleneckError):
    pass


class BaseError(BottleneckError):
    pass


class WeightsError(BaseError):
    pass


class CacheError(BottleneckError):
    pass


def nearest(name: str, choices: list[str]) -> str:
    """' (did you mean X?)' for the closest valid name, or ''."""
    import difflib

    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def add_note(error: BottleneckError, note: str) -> BottleneckError:
    """``error`` with `` (note)`` after what happened, e.g. which worker it happened on."""
    error.what = f"{error.what} ({note})"
    if isinstance(getattr(error, "reason", None), str):  # BadImage is rebuilt from its reason when unpickled
        error.reason = f"{error.reason} ({note})"
    error.args = (error.what if not error.todo else f"{error.what}\n  what to do: {error.todo}",)
    return error
