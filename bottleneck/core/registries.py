"""What every registry shares (bases, dataset formats, named datasets, heads): plain names, and a
name taken by another entry refused unless the caller says to replace it."""
from __future__ import annotations

import re

from bottleneck.core.errors import BottleneckError

_PLAIN = re.compile(r"^[A-Za-z0-9_-]+$")


def is_plain_name(name: object) -> bool:
    """Letters, digits, - and _ only: a name that is safe in file names and on a command line."""
    return isinstance(name, str) and bool(_PLAIN.match(name))


def add(table: dict, name: str, entry, *, what: str, replace: bool, error: type = BottleneckError) -> None:
    """Put ``entry`` in ``table`` under ``name``. Registering the same entry again is harmless; a
    name that holds another entry is refused (``error``) unless ``replace``."""
    if name in table and not replace and table[name] is not entry and table[name] != entry:
        raise error(f"{what} {name!r} is registered already", "choose another name, or pass replace=True")
    table[name] = entry
