"""Text from data is data: names read from files (class names, paths, labels) are shown
on a terminal and written into spreadsheets, and neither may act on what shows them.

- :func:`printable` escapes control characters, so a class name holding an escape
  sequence cannot retitle, recolour or clear a terminal.
- :func:`spreadsheet_safe` follows OWASP's guidance on CSV injection: a text cell that a
  spreadsheet program would read as a formula (it begins with ``=``, ``+``, ``-``, ``@``,
  a tab or a carriage return) gets a leading apostrophe. Numbers are left as they are.
"""
from __future__ import annotations

import unicodedata

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def printable(text: object, keep: str = "\n") -> str:
    """``text`` with every control character except those in ``keep`` written as an escape
    (``\\x1b``, ``\\u009b``...)."""
    text = str(text)
    if all(c.isprintable() or c in keep for c in text):
        return text
    out = []
    for c in text:
        if c in keep or c.isprintable() or unicodedata.category(c) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(c)
        else:
            out.append(c.encode("unicode_escape").decode("ascii"))
    return "".join(out)


def spreadsheet_safe(cell: object) -> object:
    """A CSV cell that no spreadsheet program evaluates: text beginning like a formula gets a
    leading ``'``; anything that is not text is returned as it is."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS):
        return "'" + cell
    return cell
