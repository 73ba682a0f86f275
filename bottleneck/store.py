"""The feature cache: one HDF5 file per exact set of features, and its partial runs.

A file's name carries a fingerprint of every setting that shapes its features
(dataset content, split, base, weights, layer, pooling, image size, resize,
preprocessing, sample selection); its attributes record them readably. Files are
complete or absent: an extraction writes finished chunks into ``NAME.partial/``
(each chunk file atomically), then assembles the HDF5 under a temporary name and
renames it. A killed run leaves only whole chunks behind, which the next run reuses.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np

from . import _faults
from .errors import CacheError

FORMAT = "bottleneck-features"
FORMAT_VERSION = 1
SELECTION_KEYS = ("per_class", "seed", "selection")  # what picks samples, not how features are made


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

    def __len__(self) -> int:
        return len(self.labels)


def _versions() -> dict:
    import keras
    import PIL
    import sklearn

    return {"numpy": np.__version__, "h5py": h5py.__version__, "keras": keras.__version__,
            "keras_backend": keras.backend.backend(), "pillow": PIL.__version__, "scikit-learn": sklearn.__version__}


def _checksum(features: np.ndarray, labels: np.ndarray, h=None):
    h = h or hashlib.sha256()
    h.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h


def read_features(path: str | Path, expect: dict | None = None, load: bool = True) -> FeatureSet:
    """Open a cache file, check it is complete and (with ``expect``) made with those settings."""
    path = Path(path)
    if not path.exists():
        raise CacheError(f"feature file {path} does not exist", "run `bottleneck extract` to make it")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if attrs.get("format") != FORMAT:
                raise CacheError(f"{path} is an HDF5 file but not a bottleneck feature cache",
                                 "point at a file made by `bottleneck extract`")
            if not attrs.get("complete"):
                raise CacheError(f"{path} is incomplete", "delete it and run the extraction again")
            settings = json.loads(attrs["settings"])
            if expect is not None and settings != expect:
                diff = sorted(k for k in set(settings) | set(expect) if settings.get(k) != expect.get(k))
                raise CacheError(f"{path} holds other features than asked (differs in: {', '.join(diff)}); "
                                 f"it holds {_describe(settings)}", "delete it, or ask for the settings it holds")
            n = int(attrs["n_samples"])
            names = ("features", "labels", "source_ids", "groups", "class_names")
            if any(k not in f for k in names) or any(len(f[k]) != n for k in names[:4]):
                raise CacheError(f"{path} is damaged: its datasets do not match its record of {n} samples",
                                 "delete it and run the extraction again")
            features = f["features"][()] if load else np.empty((0,))
            fs = FeatureSet(features, f["labels"][()], [s.decode() for s in f["source_ids"][()]],
                            [s.decode() for s in f["groups"][()]], [s.decode() for s in f["class_names"][()]],
                            settings, path, {k: _plain(v) for k, v in attrs.items() if k != "settings"})
    except CacheError:
        raise
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise CacheError(f"{path} is not a readable feature cache (truncated, corrupt or not HDF5): {e}",
                         "delete it and run the extraction again") from e
    return fs


def verify(path: str | Path) -> bool:
    """Recompute the checksum of the feature data and compare it with the stored one."""
    fs = read_features(path)
    return _checksum(fs.features, fs.labels).hexdigest() == fs.info.get("checksum")


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
    """Complete cache files with features made the same way (other sample selections)."""
    key, found = feature_key(settings), []
    for path in sorted(Path(cache_dir).glob("*.h5")):
        if path == exclude:
            continue
        try:
            with h5py.File(path, "r") as f:
                if f.attrs.get("complete") and f.attrs.get("feature_key") == key:
                    found.append(path)
        except OSError:
            continue  # a damaged file is simply not a donor
    return found


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an exclusive lock for ``path`` so two processes never extract the same file."""
    lock = path.parent / ".locks" / (path.name + ".lock")  # kept: deleting a lock file races with flock
    lock.parent.mkdir(parents=True, exist_ok=True)
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


class PartialRun:
    """Chunks of a run in progress, in ``NAME.partial/``; survives being killed."""

    def __init__(self, final: Path, manifest: dict):
        self.final, self.manifest = final, manifest
        self.dir = final.with_name(final.name + ".partial")

    def open(self) -> set[int]:
        """Resume a matching earlier run (returning its finished chunk numbers) or start afresh."""
        try:
            if json.loads((self.dir / "manifest.json").read_text()) == self.manifest:
                return {int(p.stem.split("-")[1]) for p in self.dir.glob("chunk-*.npz")}
        except (OSError, ValueError):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        _atomic_write(self.dir / "manifest.json", json.dumps(self.manifest).encode())
        return set()

    def write_chunk(self, k: int, features: np.ndarray, valid: np.ndarray) -> None:
        tmp = self.dir / f".chunk-{k:06d}.npz.tmp"
        try:
            with open(tmp, "wb") as f:
                np.savez(f, features=features, valid=valid)
                f.flush()
                _faults.checkpoint("mid-chunk", k)  # the chunk's bytes are out, its name is not yet
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / f"chunk-{k:06d}.npz")
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise _write_error(e, self.dir) from e

    def read_chunk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        try:
            with np.load(self.dir / f"chunk-{k:06d}.npz") as z:
                return z["features"], z["valid"]
        except Exception as e:
            raise CacheError(f"partial chunk {k} in {self.dir} is unreadable: {e}",
                             f"delete {self.dir} and run again") from e

    def finish(self, n_chunks: int, settings: dict, ids: list[str], labels: np.ndarray, groups: list[str],
               class_names: list[str], info: dict) -> list[str]:
        """Assemble the chunks into the final HDF5 file; return the source ids skipped as bad."""
        tmp = self.final.with_name(f".{self.final.name}.tmp")
        h = hashlib.sha256()
        skipped: list[str] = []
        try:
            with h5py.File(tmp, "w") as f:
                dset, row, keep_rows = None, 0, []
                for k in range(n_chunks):
                    feats, valid = self.read_chunk(k)
                    rows = np.arange(row, row + len(valid))
                    skipped += [ids[i] for i in rows[~valid]]
                    feats = feats[valid]
                    keep_rows.append(rows[valid])
                    row += len(valid)
                    if dset is None:
                        dset = f.create_dataset("features", shape=(0,) + feats.shape[1:], maxshape=(None,) + feats.shape[1:],
                                                dtype="float32", chunks=(max(1, min(256, len(ids))),) + feats.shape[1:])
                    start = dset.shape[0]
                    dset.resize(start + len(feats), axis=0)
                    dset[start:] = feats
                    h.update(np.ascontiguousarray(feats, dtype=np.float32).tobytes())
                keep = np.concatenate(keep_rows) if keep_rows else np.empty(0, int)
                kept_labels = np.asarray(labels, dtype=np.int64)[keep]
                h.update(kept_labels.tobytes())
                strings = h5py.string_dtype()
                f.create_dataset("labels", data=kept_labels)
                f.create_dataset("source_ids", data=np.array([ids[i] for i in keep], dtype=object), dtype=strings)
                f.create_dataset("groups", data=np.array([groups[i] for i in keep], dtype=object), dtype=strings)
                f.create_dataset("class_names", data=np.array(class_names, dtype=object), dtype=strings)
                f.attrs.update({
                    "format": FORMAT, "format_version": FORMAT_VERSION,
                    "settings": json.dumps(settings, sort_keys=True),
                    "fingerprint": fingerprint(settings), "feature_key": feature_key(settings),
                    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "versions": json.dumps(_versions()), "n_samples": len(keep), "checksum": h.hexdigest(),
                    "skipped": json.dumps(skipped), **info, "complete": True,
                })
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _faults.checkpoint("before-rename")
            os.replace(tmp, self.final)
        except BaseException as e:
            tmp.unlink(missing_ok=True)
            if isinstance(e, OSError):
                raise _write_error(e, self.final) from e
            raise
        shutil.rmtree(self.dir, ignore_errors=True)
        return skipped


def _write_error(e: OSError, where: Path) -> CacheError:
    import errno

    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return CacheError(f"disk full while writing {where}; the unfinished file was removed and "
                          "finished chunks are kept", "free some space (or use --cache-dir elsewhere) and run "
                          "the same command again to resume")
    return CacheError(f"cannot write {where}: {e}", "check that the cache dir is writable, then run again")


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
