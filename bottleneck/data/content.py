"""What an image *is*: a hash of its bytes, remembered by a cheap stat key.

The feature cache must follow the images' content: replacing a file by another of
the same name and size must give new features, and the same images reached by
another path (``folder:pets`` and ``folder:/abs/pets/``) must give the same ones.
Hashing every file on every run would read the whole dataset each time, so each
file's SHA-256 is kept in a small SQLite index per dataset folder, under
``BOTTLENECK_HOME/content-index/``, together with the file's stat key (size,
modification time, change time, inode). A file whose stat key is unchanged is not
read again; any change of the key (an edit, a copy, a ``git checkout``, even
``cp -p`` or ``touch -r``, which cannot set the change time) makes it read and hashed
once more. The index is only ever a shortcut: a lost or unwritable index means
re-hashing, never a wrong answer.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
from pathlib import Path

from bottleneck.core.paths import data_home
from bottleneck.core.userfiles import digest_file

log = logging.getLogger("bottleneck")
DIGEST_CHARS = 32  # 128 bits of SHA-256 per image: collisions are not a practical concern


FILE_PREFIX = b"file\0"


def file_digest(data: bytes) -> str:
    """The content hash of an image file's bytes."""
    return hashlib.sha256(FILE_PREFIX + data).hexdigest()[:DIGEST_CHARS]


def path_digest(path: str | Path) -> str:
    """The content hash of an image file, read a block at a time (the same as ``file_digest``
    of its bytes); anything but a regular file is an UnsafeFile."""
    return digest_file(path, FILE_PREFIX, "image")[:DIGEST_CHARS]


def pixels_digest(pixels) -> str:
    """The content hash of an image held as an array row (CIFAR's batches, lab pickles)."""
    import numpy as np

    pixels = np.ascontiguousarray(pixels)
    header = f"pixels\0{pixels.dtype.str}{pixels.shape}\0".encode()
    return hashlib.sha256(header + pixels.tobytes()).hexdigest()[:DIGEST_CHARS]


def _stat_key(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}"


def _index_path(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return data_home() / "content-index" / f"{key}.sqlite"


class ContentIndex:
    """Content hashes of the files under one dataset root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = _index_path(self.root)
        self.hashed = 0  # files read and hashed by this object (the rest came from the index)

    def _connect(self) -> sqlite3.Connection | None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60)
            db.execute("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, stat TEXT, digest TEXT)")
            return db
        except (OSError, sqlite3.Error) as e:
            log.warning("cannot keep the content index at %s (%s); image files are hashed on every run",
                        self.path, e)
            return None

    def digests(self, rels: list[str]) -> list[str]:
        """The content hash of each file (paths relative to the root), reading only files
        whose stat key changed since they were last hashed. A missing file raises
        FileNotFoundError naming it."""
        db = self._connect()
        known: dict[str, tuple[str, str]] = {}
        if db is not None:
            try:
                known = {p: (s, d) for p, s, d in db.execute("SELECT path, stat, digest FROM files")}
            except sqlite3.Error:  # a damaged index is rebuilt
                db.execute("DROP TABLE IF EXISTS files")
                db.execute("CREATE TABLE files (path TEXT PRIMARY KEY, stat TEXT, digest TEXT)")
        out, fresh = [], []
        for rel in rels:
            path = self.root / rel
            key = _stat_key(os.stat(path))
            hit = known.get(rel)
            if hit is not None and hit[0] == key:
                out.append(hit[1])
                continue
            digest = path_digest(path)
            if _stat_key(os.stat(path)) == key:  # unchanged while we read it: safe to remember
                fresh.append((rel, key, digest))
            out.append(digest)
        self.hashed += len(fresh)
        if db is not None:
            try:
                with db:
                    db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?)", fresh)
            except sqlite3.Error as e:
                log.warning("could not update the content index %s: %s", self.path, e)
            finally:
                db.close()
        return out
