"""The feature cache: one HDF5 file per exact set of features, and its partial runs.

A file's name carries a fingerprint of every setting that shapes its features
(the images' content, split, base, weights, layer, pooling, image size, resize,
preprocessing, sample selection); its attributes record them readably. Files are
complete or absent: an extraction writes finished chunks into ``NAME.partial/``
(each chunk file atomically) and appends each, as it comes, to the HDF5 file being
assembled there, which is renamed into place once whole. A killed run leaves whole
chunks behind, which the next run reuses.

Every file carries a SHA-256 of all it holds (features, labels, ids, groups, class
names, the images' content hashes), checked whenever the file is opened for use: a
file that changed after it was written is never used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import itertools
import json
import os
import shutil
import threading
from pathlib import Path

import h5py
import numpy as np

from bottleneck.core import faults as _faults
from bottleneck.core.errors import CacheError
from bottleneck.core.files import atomic_write, file_lock
from bottleneck.core.procs import alive
from bottleneck.core.userfiles import open_regular

FORMAT = "bottleneck-features"

# 2: per-row content hashes ("digests"); the checksum covers every dataset, not only features and labels.
FORMAT_VERSION = 2

# What picks the samples, not how their features are made: files that differ only in these can share rows.
# Augmented views too: every row's digest spells out its view's transform, so rows of equal digests are equal.
SELECTION_KEYS = ("dataset_id", "split", "per_class", "seed", "draw", "selection", "content", "test_fraction",
                  "augment", "augment_views", "unlabeled")


def fingerprint(settings: dict) -> str:
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def feature_key(settings: dict) -> str:
    """Fingerprint of how features are made, whatever samples: files sharing it can share rows."""
    return fingerprint({k: v for k, v in settings.items() if k not in SELECTION_KEYS})


def dataset_slug(name: str) -> str:
    """A short file-name-safe name: 'cifar10', or a folder's own name for folder:PATH."""
    if name.startswith("folder:"):  # fingerprints tell same-named folders apart
        name = Path(name[len("folder:"):].rstrip("/")).name.split(".")[0] or "folder"
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def canonical_dataset(name: str) -> str:
    """The dataset's name as recorded: ``folder:PATH`` becomes ``folder:NAME`` (the folder's own
    name), so the same images reached by another path share their features; what the
    images hold is recorded separately, by content."""
    if name.startswith("folder:"):
        return f"folder:{dataset_slug(name)}"
    return name


def cache_path(cache_dir: str | Path, settings: dict) -> Path:
    slug = dataset_slug(settings["dataset"])
    return Path(cache_dir) / f"{slug}_{settings['split']}_{settings['base']}_{fingerprint(settings)}.h5"


@dataclasses.dataclass
class FeatureSet:
    features: np.ndarray
    labels: np.ndarray
    source_ids: list[str]
    groups: list[str]
    class_names: list[str]
    settings: dict
    path: Path
    info: dict  # everything else in the file's attributes
    digests: list[str] = dataclasses.field(default_factory=list)  # each row's image content hash
    arrays: list[str] = dataclasses.field(default_factory=lambda: ["features"])  # what the file stores per row

    def __len__(self) -> int:
        return len(self.labels)


class DamagedCache(CacheError):
    """A file that is not (or no longer) a usable feature cache: truncated, not HDF5, changed
    after writing. Extraction moves such a file aside and extracts again."""

    def __init__(self, path: Path, reason: str, todo: str | None = None):
        self.path, self.reason = Path(path), reason
        super().__init__(f"{path} {reason}", todo or "extract it again: `bottleneck extract` with the settings it "
                         "was made with (`bottleneck info FILE` shows them) makes a fresh copy")


def library_versions() -> dict:
    """The versions of the libraries a cache file's features depend on, as its record keeps them
    (and as Ray workers are checked against: ``extraction.ray_engine``)."""
    import keras
    import PIL
    import sklearn

    return {"numpy": np.__version__, "h5py": h5py.__version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "pillow": PIL.__version__, "scikit-learn": sklearn.__version__}


def _checksum_v1(features: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def _strings_digest(h, strings: list[str]) -> None:
    h.update(("\0".join(strings) + "\1").encode())


def _combined(array_digests: dict[str, str], labels, source_ids, groups, class_names, digests) -> str:
    """Format 2's checksum: each stored array's SHA-256 (by name), then the labels and every
    string list. Arrays are hashed one by one, so a file of feature maps is verified in
    bounded memory, reading one array at a time."""
    h = hashlib.sha256()
    for name in sorted(array_digests):
        h.update(f"{name}:{array_digests[name]}\n".encode())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    for strings in (source_ids, groups, class_names, digests):
        _strings_digest(h, strings)
    return h.hexdigest()


def checksum(fs: FeatureSet) -> str:
    """The SHA-256 a file of this (in-memory, pooled) content carries (format 2)."""
    arrays = {"features": hashlib.sha256(np.ascontiguousarray(fs.features, np.float32).tobytes()).hexdigest()}
    return _combined(arrays, fs.labels, fs.source_ids, fs.groups, fs.class_names, fs.digests)


DIGEST_BLOCK = 4 << 20  # bytes of an array hashed at once: memory stays flat however many or large the rows


def _array_digest(dataset, block: int = DIGEST_BLOCK) -> str:
    """SHA-256 of an HDF5 dataset's bytes, read a block of rows (at most ``block`` bytes, at
    least one row) at a time."""
    h = hashlib.sha256()
    row_bytes = int(np.prod(dataset.shape[1:], dtype=np.int64)) * dataset.dtype.itemsize
    rows_at_once = max(1, block // max(1, row_bytes))
    for start in range(0, dataset.shape[0], rows_at_once):
        h.update(np.ascontiguousarray(dataset[start:start + rows_at_once]).tobytes())
    return h.hexdigest()


def read_features(path: str | Path, expect: dict | None = None, load: bool = True,
                  verify: bool = True) -> FeatureSet:
    """Open a cache file, check that it is whole, that its checksum matches (when ``load``
    and ``verify``: only the run that has just written and hashed the file skips that) and
    (with ``expect``) that it was made with those settings.

    Raises DamagedCache for a file that is not a usable cache, CacheError for one made
    with other settings."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"feature file {path} does not exist", "run `bottleneck extract` to make it")
    if path.is_dir():
        raise CacheError(f"{path} is a folder, not a feature file",
                         "point at one .h5 file in it (`ls` it: files made by `bottleneck extract` end in .h5)")
    try:
        with open_regular(path, "feature file"):  # a FIFO or device is refused before HDF5 opens it
            pass
        with h5py.File(path, "r") as f:
            check_plain_hdf5(f, path)
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT:
                raise DamagedCache(path, "is an HDF5 file but not a bottleneck feature cache",
                                   "point at a .h5 file made by `bottleneck extract`")
            version = int(attrs.get("format_version", 1))
            if version > FORMAT_VERSION:
                raise CacheError(f"{path} was made by a newer bottleneck (cache format {version}; this one reads "
                                 f"up to {FORMAT_VERSION})", "upgrade bottleneck, or extract again with this one")
            if not attrs.get("complete"):
                raise DamagedCache(path, "is incomplete")
            settings = _flat_settings(attrs["settings"], path)
            if expect is not None and settings != expect:
                diff = sorted(k for k in set(settings) | set(expect) if settings.get(k) != expect.get(k))
                raise CacheError(f"{path} holds other features than asked (differs in: {', '.join(diff)}); "
                                 f"it holds {_describe(settings)}",
                                 "move it away, or ask for the settings it holds")
            n = int(attrs["n_samples"])
            arrays = json.loads(attrs.get("arrays", '["features"]'))
            per_row = tuple(arrays) + ("labels", "source_ids", "groups") + (("digests",) if version >= 2 else ())
            if any(k not in f for k in per_row + ("class_names",)) or any(len(f[k]) != n for k in per_row):
                raise DamagedCache(path, f"is damaged: its datasets do not match its record of {n} samples")
            text = lambda key: [s.decode() for s in f[key][()]] if key in f else []
            pooled = arrays == ["features"]
            fs = FeatureSet(f["features"][()] if load and pooled else np.empty((0,)), f["labels"][()],
                            text("source_ids"), text("groups"), text("class_names"), settings, path,
                            {k: _plain(v) for k, v in attrs.items() if k != "settings"}, text("digests"), arrays)
            if load and verify and not pooled:  # feature maps: verified array by array, never all in memory
                fs.info["array_digests"] = {name: _array_digest(f[name]) for name in arrays}
    except CacheError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, AttributeError, RecursionError) as e:
        # (h5py raises RuntimeError for damaged internals, such as a B-tree's signature)
        raise DamagedCache(path, f"is not a readable feature cache (truncated, corrupt or not HDF5): "
                                 f"{type(e).__name__}: {str(e)[:300]}") from e
    if load and verify and not _checksum_ok(fs):
        raise DamagedCache(path, "fails its checksum: its data changed after it was written (a bad disk, a copy "
                                 "cut short, or an edit)")
    return fs


MAX_COMPRESSION = 1100  # gzip's best is ~1030:1; a compressed dataset may declare at most this much more


def check_plain_hdf5(f: h5py.File, path: Path) -> None:
    """Refuse, before reading any data, what a feature file never holds and what would make
    reading it go elsewhere or take more memory than the file has bytes:

    - links to other places (external links: another file, possibly a FIFO; soft links),
      virtual datasets and external storage (data kept in other files);
    - object and variable-length types other than strings;
    - a dataset declaring more bytes than its storage holds (a 9 KB file declaring 10^9
      rows): without compression, storage must hold every declared byte; with it, at most
      ``MAX_COMPRESSION`` times more.
    """
    def refuse(what: str):
        raise DamagedCache(path, f"is not a plain feature file: {what}; it is not read",
                           "feature files hold their data themselves; use a file made by `bottleneck extract`")

    def visit(group, prefix: str) -> None:
        for name in group:
            where = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                refuse(f"{where} is a link to {link.filename}:{link.path}")
            if isinstance(link, h5py.SoftLink):
                refuse(f"{where} is a link to {link.path}")
            obj = group.get(name)
            if isinstance(obj, h5py.Group):
                visit(obj, where)
            elif isinstance(obj, h5py.Dataset):
                check_dataset(obj, where)
            else:
                refuse(f"{where} is a {type(obj).__name__}")

    def check_dataset(ds: h5py.Dataset, where: str) -> None:
        if ds.is_virtual:
            refuse(f"{where} is a virtual dataset (its data is in other files)")
        if ds.external:
            refuse(f"{where} keeps its data in external files ({ds.external[0][0]!r}...)")
        dtype = ds.dtype
        if dtype.kind not in "fiubS" and not (dtype.kind == "O" and h5py.check_string_dtype(dtype)):
            refuse(f"{where} holds {dtype} values")
        declared = int(np.prod(ds.shape, dtype=np.float64)) * ds.id.get_type().get_size()
        stored = ds.id.get_storage_size()
        if ds.id.get_create_plist().get_nfilters() == 0:
            enough = stored >= declared
        else:
            enough = declared <= MAX_COMPRESSION * stored + (1 << 20)
        if not enough:
            refuse(f"{where} declares {ds.shape} ({declared:,} bytes) but stores {stored:,} bytes")

    visit(f, "")


NAMES = ("base", "dataset", "split", "weights", "layer", "pooling", "kind", "resize", "preprocessing")


def _flat_settings(text, path: Path) -> dict:
    """The settings record: a JSON object, its names text, nested at most three deep."""
    settings = json.loads(text)

    def depth(v) -> int:
        if isinstance(v, dict):
            return 1 + max(map(depth, v.values()), default=0)
        if isinstance(v, list):
            return 1 + max(map(depth, v), default=0)
        return 0

    if not isinstance(settings, dict) or depth(settings) > 3 or not all(
            isinstance(settings.get(k), (str, type(None))) for k in NAMES):
        raise DamagedCache(path, "has a settings record that is not an object of names and values",
                           "use a file made by `bottleneck extract`")
    return settings


def _checksum_ok(fs: FeatureSet) -> bool:
    stored = fs.info.get("checksum")
    if int(fs.info.get("format_version", 1)) < 2:
        return _checksum_v1(fs.features, fs.labels) == stored
    if "array_digests" in fs.info:
        arrays = fs.info.pop("array_digests")
        return _combined(arrays, fs.labels, fs.source_ids, fs.groups, fs.class_names, fs.digests) == stored
    return checksum(fs) == stored


def verify(path: str | Path) -> bool:
    """Recompute the checksum of everything in the file and compare it with the stored one."""
    try:
        read_features(path)
    except DamagedCache as e:
        if "fails its checksum" in e.reason:
            return False
        raise
    return True


def move_aside(path: Path, reason: str) -> Path:
    """Rename a damaged cache file out of the way (never delete what a user may want to
    inspect): ``NAME.h5.damaged-YYYYmmddTHHMMSS``."""
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.damaged-{stamp}")
    k = 1
    while target.exists():
        target, k = path.with_name(f"{path.name}.damaged-{stamp}-{k}"), k + 1
    try:
        os.replace(path, target)
    except FileNotFoundError:  # another process moved it first
        return target
    except OSError as e:
        raise CacheError(f"{path} {reason}, and it cannot be moved aside: {e}",
                         f"move or delete {path} yourself, then run again") from e
    return target


def _plain(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _describe(s: dict) -> str:
    return (f"{s.get('base')} ({s.get('weights')}, layer {s.get('layer')}, {s.get('pooling')} pooling, "
            f"{s.get('image_size')}px) on {s.get('dataset')}/{s.get('split')}, "
            + (f"{s['per_class']} per class, seed {s.get('seed')}" if s.get("per_class") else "all images"))


def find_donors(cache_dir: Path, settings: dict, exclude: Path) -> list[Path]:
    """Complete cache files of this format with features made the same way (from other
    samples of the same dataset): their rows can be copied by image content hash."""
    key, found = feature_key(settings), []
    for path in sorted(Path(cache_dir).glob("*.h5")):
        if path == exclude or not path.is_file():  # (a FIFO named .h5 would block HDF5 forever)
            continue
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("complete") and f.attrs.get("feature_key") == key \
                        and int(f.attrs.get("format_version", 1)) == FORMAT_VERSION:
                    found.append(path)
        except (OSError, RuntimeError):
            continue  # an unreadable file is simply not a donor
    return found


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock for ``path`` so two processes never extract the same file."""
    lock = path.parent / ".locks" / (path.name + ".lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        lock.touch()
    except OSError as e:
        raise _write_error(e, path.parent) from e
    with file_lock(lock):
        yield


# The file being assembled is flushed to disk every this many bytes, by the writer thread, so that
# making the finished file durable at the end costs little more than its last few chunks.
SYNC_EVERY = 16 * 2**20

# A finished run's chunk folder is renamed ``.NAME.partial.removing-PID-K``, then deleted by a thread.
REMOVING = ".removing-"

_removals = itertools.count()


def _remove_in_background(folder: Path) -> None:
    """Delete a finished run's chunk files (their rows are in the final file now) in a thread of
    its own: freeing them took 0.09 s for 168 MB on a GPU machine, time the run need not wait.
    The folder is renamed first, so a process killed meanwhile leaves a ``.removing-`` folder,
    which the next run in the same cache folder deletes (``_sweep``); the thread is not a
    daemon, so a process that exits normally finishes the deletion first."""
    trash = folder.with_name(f".{folder.name}{REMOVING}{os.getpid()}-{next(_removals)}")
    try:
        os.rename(folder, trash)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return
    threading.Thread(target=shutil.rmtree, args=(trash, True), name="bottleneck-remove-chunks").start()


def _sweep(cache_dir: Path) -> None:
    """Delete the chunk folders left by processes killed while removing them (not those of a
    process still running: it is deleting its own)."""

    for left in cache_dir.glob(f".*{REMOVING}*"):
        pid = left.name.rsplit(REMOVING, 1)[1].split("-")[0]
        if not pid.isdigit() or not alive(int(pid)):
            shutil.rmtree(left, ignore_errors=True)


class PartialRun:
    """A run in progress, in ``NAME.partial/``; survives being killed.

    Each finished chunk is kept as ``chunk-K.npz`` (durable once it has its name: what a killed
    run resumes from) and appended, in order, to the final file being assembled beside them
    (``assembling.h5``), so that when the last chunk is in, the file needs only its labels and
    record before it is renamed into place. ``dtypes``: how each array is stored (float32
    pooled features by default); with ``per_row_chunks`` each row is its own HDF5 chunk, so
    one image's maps read alone; ``rows``: the rows the file will hold (for HDF5's chunking).

    Pooled features (one ``features`` array, what a FeatureSet holds in memory) are also kept
    in memory as they are appended, the very bytes written and hashed: ``features`` hands them
    over once the file is finished, so the run need not read back the file it has just written."""

    def __init__(self, final: Path, manifest: dict, dtypes: dict[str, str] | None = None,
                 per_row_chunks: bool = False, rows: int = 256):
        self.final, self.manifest = final, manifest
        self.dir = final.with_name(final.name + ".partial")
        self.dtypes = dtypes or {"features": "float32"}
        self.per_row_chunks, self.rows = per_row_chunks, rows
        self._on_disk: set[int] = set()  # chunk files there (from an earlier run or this one)
        self._file = None  # the HDF5 file being assembled, opened with the first chunk appended
        self._next = 0  # the chunk it takes next
        self._row = 0  # rows appended (valid or not)
        self._keep: list[np.ndarray] = []  # which of them it holds (readable images)
        self._skipped: list[int] = []  # which it does not
        self._hashes = {name: hashlib.sha256() for name in self.dtypes}
        self._unsynced = 0
        self._pooled = list(self.dtypes) == ["features"]  # as ``read_features`` tells them
        self._in_memory: np.ndarray | None = None  # pooled features appended so far (rows kept)
        self._kept = 0
        self._finished = False

    @property
    def assembling(self) -> Path:
        return self.dir / "assembling.h5"

    def open(self) -> set[int]:
        """Resume a matching earlier run (returning its finished chunk numbers) or start afresh."""
        try:
            if json.loads((self.dir / "manifest.json").read_text()) == self.manifest:
                self._on_disk = {int(p.stem.split("-")[1]) for p in self.dir.glob("chunk-*.npz")}
                return set(self._on_disk)
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        _sweep(self.dir.parent)
        try:
            self.dir.mkdir(parents=True)
            atomic_write(self.dir / "manifest.json", json.dumps(self.manifest).encode())
        except OSError as e:
            raise _write_error(e, self.dir) from e
        return set()

    def write_chunk(self, k: int, arrays: dict[str, np.ndarray], valid: np.ndarray) -> None:
        """Keep chunk ``k``: each named array's rows, and which rows are valid (not bad images)."""
        tmp = self.dir / f".chunk-{k:06d}.npz.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, valid=valid, **{f"array__{name.replace('/', '__')}": a for name, a in arrays.items()})
                f.flush()
                _faults.checkpoint("mid-chunk", k)  # the chunk's bytes are out, its name is not yet
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / f"chunk-{k:06d}.npz")
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _write_error(e, self.dir) from e
        self._on_disk.add(k)

    def add(self, k: int, arrays: dict[str, np.ndarray], valid: np.ndarray) -> None:
        """Keep chunk ``k`` (``write_chunk``), then append to the final file every chunk it can
        take in order: earlier chunks from the files an earlier run left, and this one."""
        self.write_chunk(k, arrays, valid)
        while self._next in self._on_disk:
            self._append(*((arrays, valid) if self._next == k else self.read_chunk(self._next)))

    def read_chunk(self, k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
        try:
            with np.load(self.dir / f"chunk-{k:06d}.npz", allow_pickle=False) as z:
                arrays = {key[len("array__"):].replace("__", "/"): z[key] for key in z.files if key != "valid"}
                return arrays, z["valid"]
        except Exception as e:
            raise CacheError(f"partial chunk {k} in {self.dir} is unreadable: {e}",
                             f"delete {self.dir} and run again") from e

    def _append(self, arrays: dict[str, np.ndarray], valid: np.ndarray) -> None:
        """Chunk ``self._next``'s valid rows onto the end of the file being assembled, hashed as they go."""
        try:
            if self._file is None:
                self._file = h5py.File(self.assembling, "w")
            rows = np.arange(self._row, self._row + len(valid))
            self._skipped += rows[~valid].tolist()
            self._keep.append(rows[valid])
            for name, dtype in self.dtypes.items():
                values = arrays[name] if valid.all() else arrays[name][valid]
                block = np.ascontiguousarray(values, dtype=dtype)
                if name not in self._file:
                    shape = block.shape[1:]
                    per_chunk = 1 if self.per_row_chunks else max(1, min(256, self.rows))
                    self._file.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                                              chunks=(per_chunk,) + shape)
                dset = self._file[name]
                start = dset.shape[0]
                dset.resize(start + len(block), axis=0)
                dset[start:] = block
                self._hashes[name].update(block)  # (C-contiguous: its bytes, not copied)
                self._unsynced += block.nbytes
                if self._pooled:
                    self._keep_in_memory(block)
            if self._unsynced >= SYNC_EVERY:
                self._sync()
        except OSError as e:  # (whoever stops the run drops the file begun: ``abandon``)
            raise _write_error(e, self.final) from e
        self._row += len(valid)
        self._next += 1

    def _keep_in_memory(self, block: np.ndarray) -> None:
        end = self._kept + len(block)
        if self._in_memory is None or end > len(self._in_memory):  # the first block, or more rows than announced
            grown = np.empty((max(self.rows, 2 * end),) + block.shape[1:], block.dtype)
            if self._in_memory is not None:
                grown[:self._kept] = self._in_memory[:self._kept]
            self._in_memory = grown
        self._in_memory[self._kept:end] = block
        self._kept = end

    @property
    def features(self) -> np.ndarray | None:
        """The finished file's pooled features, kept in memory as they were written (None when
        the file holds other arrays, or is not finished)."""
        if not self._finished or self._in_memory is None:
            return None
        return self._in_memory[:self._kept]

    def _sync(self) -> None:
        self._file.flush()
        _fsync(self.assembling)
        self._unsynced = 0

    def abandon(self) -> None:
        """Drop the file being assembled (the run stopped); the chunk files stay, to resume from."""
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        self._in_memory = None
        self.assembling.unlink(missing_ok=True)

    def finish(self, n_chunks: int, settings: dict, ids: list[str], labels: np.ndarray, groups: list[str],
               class_names: list[str], digests: list[str], info: dict) -> list[str]:
        """Append the chunks not yet in the final file, write its labels, ids and record, make it
        durable and rename it into place; return the source ids skipped as bad."""
        try:
            while self._next < n_chunks:
                self._append(*self.read_chunk(self._next))
            f = self._file
            keep = np.concatenate(self._keep) if self._keep else np.empty(0, int)
            skipped = [ids[i] for i in self._skipped]
            kept = {"labels": np.asarray(labels, dtype=np.int64)[keep], "source_ids": [ids[i] for i in keep],
                    "groups": [groups[i] for i in keep], "class_names": list(class_names),
                    "digests": [digests[i] for i in keep]}
            f.create_dataset("labels", data=kept["labels"])
            for key in ("source_ids", "groups", "class_names", "digests"):
                f.create_dataset(key, data=_strings(kept[key]))
            f.attrs.update({
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "settings": json.dumps(settings, sort_keys=True), "arrays": json.dumps(sorted(self.dtypes)),
                "fingerprint": fingerprint(settings), "feature_key": feature_key(settings),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "versions": json.dumps(library_versions()), "n_samples": len(keep),
                "checksum": _combined({n: h.hexdigest() for n, h in self._hashes.items()}, kept["labels"],
                                      kept["source_ids"], kept["groups"], kept["class_names"], kept["digests"]),
                "skipped": json.dumps(skipped), **info, "complete": True,
            })
            f.close()  # (closing writes HDF5's last metadata: the fsync comes after it)
            self._file = None
            _fsync(self.assembling)
            _faults.checkpoint("before-rename")
            os.replace(self.assembling, self.final)
            self._finished = True
        except BaseException as e:
            self.abandon()
            if isinstance(e, OSError):
                raise _write_error(e, self.final) from e
            raise
        _remove_in_background(self.dir)
        return skipped


def _strings(values: list[str]) -> np.ndarray:
    """Strings as HDF5 writes and reads them fastest: fixed-length UTF-8 (a 32768-image file's ids,
    groups and digests: 0.02 s to write and 0.01 s to read, against 0.03 s each variable-length),
    unless the longest would take much more space than all of them do: then variable-length, as
    for a string ending in NUL (fixed-length storage would drop it silently; variable-length
    refuses it). Either reads back as the same strings."""
    encoded = [v.encode() for v in values]
    size = max(1, max(map(len, encoded), default=1))
    if size * len(encoded) <= 2 * sum(map(len, encoded)) + 2**20 and not any(e.endswith(b"\0") for e in encoded):
        return np.array(encoded, dtype=f"S{size}").view(h5py.string_dtype("utf-8", size))
    return np.array(values, dtype=h5py.string_dtype())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(e: OSError, where: Path) -> CacheError:
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(f"disk full while writing {where}; the unfinished file was removed and "
                          "finished chunks are kept", "free some space (or use --cache-dir elsewhere) and run "
                          "the same command again to resume")
    return CacheError(f"cannot write {where}: {e.strerror or e}",
                      "pass a --cache-dir you can write to (a folder; it is created if missing), then run again")


def check_writable(cache_dir: str | Path) -> None:
    """A clear error now, rather than a traceback later, when features cannot be written."""
    import tempfile

    cache_dir = Path(cache_dir)
    if cache_dir.exists() and not cache_dir.is_dir():
        raise CacheError(f"--cache-dir {cache_dir} is a file, not a folder",
                         "pass a folder for the feature files (it is created if missing)")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cache_dir):
            pass
    except OSError as e:
        raise CacheError(f"cannot write feature files in --cache-dir {cache_dir}: {e.strerror or e}",
                         "pass a --cache-dir you can write to (a folder; it is created if missing)") from e
