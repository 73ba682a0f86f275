"""Writing files safely: the one way the package writes an output, and its lock.

Every output is written to a temporary file created exclusively (a name no one else has,
``O_EXCL``) in the target's own folder, then renamed over the target: a reader sees the
old file or the new one, never half of one; two writers never share a temporary; a
symlink planted at a temporary name or at the target is never written through (the
rename replaces the link itself). :func:`check_output` runs the checks a command makes
before any work starts, so a bad ``--out`` costs nothing.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from bottleneck.core.errors import BottleneckError


@contextlib.contextmanager
def file_lock(lock: Path):
    """Hold an exclusive advisory lock on the file ``lock`` (created if missing, never deleted:
    deleting a lock file races with flock)."""
    with open(lock, "a") as handle:
        try:
            import fcntl
        except ImportError:  # Windows: no advisory locks; single-process use only
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp", replace: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary path in ``path``'s folder to write to; on success it is renamed
    over ``path``, on any failure removed. ``suffix`` ends the temporary's name (writers such
    as Keras choose the format by it). With ``replace=False`` a file that appeared at ``path``
    meanwhile (another process writing the same output) is kept: FileExistsError."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _publish_new(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the name ``path`` only if no file has it: a hard link is made or fails
    as a whole (FileExistsError), so of two writers exactly one wins."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a small race left)
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(tmp, path)
        return
    tmp.unlink()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through :func:`atomic_output`."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def check_output(path: str | Path, *, inputs: Iterable[str | Path] = (), overwrite: bool = False,
                 suffixes: tuple[str, ...] = (), what: str = "output", flag: str = "--out") -> Path:
    """Before any work: ``path`` can be written as a new file, and is none of ``inputs``.

    Refuses (BottleneckError, naming ``flag``): a suffix not in ``suffixes``; an existing
    folder; an existing file unless ``overwrite``; any of the inputs (the same file by
    another name too); a folder that cannot be created or written."""
    path = Path(path).expanduser()
    for given in inputs:
        given = Path(given)
        with contextlib.suppress(OSError):
            if path.exists() and given.exists() and os.path.samefile(path, given):
                raise BottleneckError(f"{flag} {path} is one of the inputs ({given}); writing it would destroy it",
                                      f"pass another {flag}")
    if suffixes and path.suffix.lower() not in suffixes:
        raise BottleneckError(f"{flag} {path}: a {what} file is written, and its name must end in "
                              f"{' or '.join(suffixes)} (another ending would name a format it is not in)",
                              f"pass {flag} {path.with_suffix(suffixes[0]).name}")
    if path.is_dir():
        raise BottleneckError(f"{flag} {path} is a folder", f"pass a file name in it, e.g. {flag} {path}/NAME")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise BottleneckError(f"{flag} {path} exists; it is kept", f"pass another {flag}, remove it, or add --force "
                                                                  "to replace it")
    check_folder_for(path, flag)
    return path


def check_folder_for(path: Path, flag: str = "--out") -> None:
    """``path``'s folder exists (made if missing) and can be written in; ``path`` itself is not made."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BottleneckError(f"cannot make the folder of {flag} {path}: {e.strerror or e}",
                              "pass a path in a folder you can write to") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BottleneckError(f"cannot write in {folder} (for {flag} {path})", "pass a path in a folder you can write to")


def inside_folder(root: Path, *parts: str) -> Path:
    """The folder ``root/parts...`` made (if missing) as a real folder under ``root``: every
    part a plain name, none of them a symlink, so nothing written there lands elsewhere."""
    path = Path(root)
    for part in parts:
        if not part or part in (".", "..") or "/" in part or "\\" in part or "\0" in part:
            raise BottleneckError(f"{part!r} is not a plain folder name (under {root})",
                                  "this comes from a damaged or crafted file: remove it")
        path = path / part
        if path.is_symlink():
            raise BottleneckError(f"{path} is a symlink; nothing is written through it",
                                  f"remove the link {path}")
        path.mkdir(exist_ok=True)
    return path
