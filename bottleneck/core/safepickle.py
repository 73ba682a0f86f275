"""Reading pickles from the web without running them.

A pickle can name any importable callable and make the reader call it; that is how
``pickle.load`` runs code from a file. Every pickle this package reads from a user's
file (CIFAR-10's python batches, the classic lab's ``train.p`` and bottleneck pickles,
the header and state dict of a ``.pth`` file) goes through :class:`SafeUnpickler`,
which resolves only the globals that plain data needs: numpy arrays, dtypes and
scalars (never of dtype ``object``), a few harmless builtins and ``OrderedDict``.
Anything else is refused before it is called, with an error naming the file and
the global.
"""
from __future__ import annotations

import builtins
import codecs
import collections
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bottleneck.core.errors import BottleneckError
from bottleneck.core.userfiles import read_bytes


class RefusedPickle(BottleneckError):
    """A pickle that asked for something plain data never needs."""

    def __init__(self, path, what: str):
        self.path = str(path)
        super().__init__(f"{path}: refused to load {what}; the file is not plain data (it may be malicious)",
                         "get the file from a source you trust; bottleneck never runs code from a data file")


class DamagedPickle(BottleneckError, pickle.UnpicklingError):
    """A pickle that declares more bytes than it holds (cut short, or crafted); an
    UnpicklingError too, so a reader that words its own message for bad pickles still does."""


class _Refused(Exception):
    """Raised inside the unpickler; ``load`` turns it into RefusedPickle naming the file."""


def _dtype(*args):
    dtype = np.dtype(*args)
    if dtype.hasobject:  # object arrays would hand back arbitrary Python objects
        raise _Refused("a numpy array of dtype object")
    return dtype


def _latin1_encode(text, encoding="utf-8"):
    # Protocol-2 pickles store bytes as _codecs.encode(str, 'latin1'); nothing else is needed.
    if not isinstance(text, str) or codecs.lookup(encoding).name not in ("iso8859-1", "utf-8"):
        raise _Refused(f"_codecs.encode with {encoding!r}")
    return codecs.encode(text, encoding)


def _numpy_globals() -> dict[tuple[str, str], Callable]:
    from numpy._core import multiarray, numeric  # numpy 2 (requirements pin it)

    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _dtype}
    for core in ("numpy.core", "numpy._core"):  # numpy 1 pickles name numpy.core
        table[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        table[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        table[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


PLAIN_GLOBALS: dict[tuple[str, str], Callable] = {
    **_numpy_globals(),
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
    **{(module, name): getattr(builtins, name) for module in ("builtins", "__builtin__")
       for name in ("set", "frozenset", "bytearray", "complex", "slice")},
}


class SafeUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only ``allowed`` globals (plain data by default)."""

    def __init__(self, file, *, path: str | Path = "<pickle>", allowed: dict | None = None,
                 persistent_load: Callable | None = None, encoding: str = "ASCII"):
        super().__init__(file, encoding=encoding)
        self._path = path
        self._allowed = PLAIN_GLOBALS if allowed is None else allowed
        self._persistent = persistent_load

    def find_class(self, module: str, name: str):
        found = self._allowed.get((module, name))
        if found is None:
            raise _Refused(f"the global {module}.{name}")
        return found

    def persistent_load(self, pid):
        if self._persistent is None:
            raise _Refused(f"a persistent reference {pid!r}")
        return self._persistent(pid)


def load(file, path: str | Path | None = None, encoding: str = "ASCII", **kwargs) -> Any:
    """One pickle of plain data from an open binary file (or bytes); ``kwargs`` go to
    :class:`SafeUnpickler` (``allowed``, ``persistent_load``). In a seekable file (or bytes),
    every length the pickle declares is first checked against the bytes left."""
    if isinstance(file, (bytes, bytearray)):
        file = io.BytesIO(file)
    path = path or getattr(file, "name", "<pickle>")
    if file.seekable():
        start = file.tell()
        _check_lengths(_Capped(file), path)
        file.seek(start)
    try:
        return SafeUnpickler(file, path=path, encoding=encoding, **kwargs).load()
    except _Refused as e:
        raise RefusedPickle(path, str(e)) from None


class _Capped:
    """A seekable file whose reads never ask for more than the bytes left in it: the walk below
    reads each declared length, and ``read(n)`` reserves n bytes before reading."""

    def __init__(self, file):
        self.file = file
        here = file.tell()
        self.end = file.seek(0, io.SEEK_END)
        file.seek(here)

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.end - self.file.tell())
        return self.file.read(left if n is None or n < 0 else min(n, left))

    def readline(self) -> bytes:
        return self.file.readline()

    def tell(self) -> int:
        return self.file.tell()


def _check_lengths(file, path) -> None:
    """Walk the opcodes of the pickle at the file's position without running them: each length
    it declares must fit in the bytes that are there. (The unpickler allocates a declared
    length before reading it, so a few bytes declaring 10^12 would otherwise take memory they
    do not hold.)"""
    try:
        for _ in pickletools.genops(file):
            pass
    except (ValueError, EOFError) as e:  # genops says "expected N bytes ... but only M remain" and such
        raise DamagedPickle(f"{path} is not a whole pickle: {str(e)[:200]}",
                            "the file is damaged or cut short; get it again") from None


def load_file(path: str | Path, encoding: str = "ASCII") -> Any:
    """One pickle of plain data from the regular file ``path`` (within the size limit of pickles)."""
    return load(read_bytes(path, "pickle"), path, encoding)
