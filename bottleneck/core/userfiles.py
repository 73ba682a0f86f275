"""Opening the files a user gives: the one way the package reads them.

Files a user points at come from anywhere (the web, a colleague, a crafted attack), so
every read goes through here:

- **Regular files only.** A FIFO would block a reader forever, a device such as
  ``/dev/zero`` never ends; both are refused by their type, found with ``fstat`` on the
  opened descriptor (opened non-blocking, so opening a FIFO does not wait for a writer).
  A symlink is followed, and what it points at must be a regular file too.
- **Size checked before reading.** Each kind of file has a limit (``LIMITS``); a file over
  it is refused before a byte is read, and a file that grows while it is read is caught.
- **Hashing streams** a file in blocks, never holding it whole.

Everything refused is an :class:`UnsafeFile`, a :class:`BottleneckError` naming the file
and what it is.
"""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

from bottleneck.core.errors import BottleneckError

MiB = 1 << 20

# The largest file of each kind that is read: a limit far above any real file of its kind.
LIMITS = {
    "image": 256 * MiB,  # a 100-megapixel PNG is ~100-300 MB; PIL's pixel limit stops decoding before that anyway
    "label map": 256 * MiB,
    "table": 512 * MiB,  # CSV targets, Test.csv, gt.txt: millions of rows
    "text file": 16 * MiB,  # codes.txt, valid.txt, signnames.csv, a .task.json, a results row
    "pickle": 4096 * MiB,  # the classic lab's train.p of 35k images is ~100 MB; CIFAR's batches 30 MB each
    "model metadata": 16 * MiB,  # bottleneck.json inside an exported model
    "model file": 2048 * MiB,  # an exported .onnx/.tflite/SavedModel graph: protobuf's own limit is 2 GB
}
BLOCK = MiB  # hashing reads this much at a time


class UnsafeFile(BottleneckError):
    """A file that is not read: not a regular file, or larger than files of its kind are."""

    def __init__(self, path, what: str, todo: str):
        self.path = str(path)
        super().__init__(what, todo)


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | Path, kind: str = "file") -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file (after symlinks).

    Raises FileNotFoundError as ``open`` does (callers word their own "missing" message),
    UnsafeFile for anything that is not a regular file."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except IsADirectoryError:
        raise UnsafeFile(path, f"the {kind} {path} is a folder, not a file", f"pass the {kind} file itself") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise UnsafeFile(path, f"the {kind} {path} is {_kind_of(mode)}, not a regular file; it is not read "
                                   "(it could block or never end)", f"point at a regular file for the {kind}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # (regular files ignore it; reset so the file object behaves as usual)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def check_size(path: str | Path, size: int, kind: str, limit: int | None = None) -> None:
    """UnsafeFile when ``size`` bytes is over the limit of files of ``kind``."""
    limit = LIMITS.get(kind, LIMITS["text file"]) if limit is None else limit
    if size > limit:
        raise UnsafeFile(path, f"the {kind} {path} is {size / MiB:,.1f} MB, over the {limit / MiB:,.0f} MB that a "
                               f"{kind} may have; it is not read", f"check that {path} is the {kind} you meant")


def read_bytes(path: str | Path, kind: str = "file", limit: int | None = None) -> bytes:
    """The whole of a regular file of at most its kind's limit (``LIMITS``)."""
    with open_regular(path, kind) as f:
        size = os.fstat(f.fileno()).st_size
        check_size(path, size, kind, limit)
        data = f.read(size)  # (read(n) reserves n bytes first: never more than the file's own size)
        if f.read(1):
            raise UnsafeFile(path, f"the {kind} {path} grew while it was read", "read it again once it is written")
    return data


def read_text(path: str | Path, kind: str = "text file", limit: int | None = None, errors: str = "strict") -> str:
    """A regular text file (UTF-8, a BOM dropped) of at most its kind's limit. Undecodable
    bytes raise UnsafeFile naming the file, unless ``errors="replace"``."""
    data = read_bytes(path, kind, limit)
    try:
        return data.decode("utf-8-sig", errors=errors)
    except UnicodeDecodeError as e:
        raise UnsafeFile(path, f"the {kind} {path} is not UTF-8 text ({e.reason} at byte {e.start})",
                         "save it as UTF-8") from None


def digest_file(path: str | Path, prefix: bytes = b"", kind: str = "file") -> str:
    """SHA-256 (hex) of ``prefix`` and then the file's bytes, read a block at a time."""
    h = hashlib.sha256(prefix)
    with open_regular(path, kind) as f:
        for block in iter(lambda: f.read(BLOCK), b""):
            h.update(block)
    return h.hexdigest()
