"""Data sources: where a named dataset is found, its layout, its splits.

A dataset is a list of samples per split: a source id (a path relative to the
dataset root, or ``file#row`` for array files), a label and a group (samples of
one group, e.g. one GTSRB track of ~30 frames of the same sign, must never be
split between training and validation). Images are decoded lazily, one at a time.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import safepickle
from .errors import BottleneckError, DatasetError, nearest
from .images import IMAGE_SUFFIXES, load_image, to_rgb

# Names looked for under the data dir, in order, for each known dataset.
KNOWN = {
    "cifar10": ["cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz", "cifar10.tar.gz",
                "~keras:cifar-10-batches-py"],
    "gtsrb": ["gtsrb", "gtsrb-subset", "GTSRB", "traffic-signs-data", "gtsrb.tar.gz", "gtsrb-subset.tar.gz"],
}
CITATIONS = {
    "cifar10": "Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
    "gtsrb": "Stallkamp et al., The German Traffic Sign Recognition Benchmark, IJCNN 2011",
}


@dataclasses.dataclass
class Split:
    ids: list[str]
    labels: np.ndarray
    groups: list[str]
    load: Callable[[int], Image.Image]  # sample index -> RGB image

    def __len__(self) -> int:
        return len(self.ids)


@dataclasses.dataclass
class Dataset:
    name: str
    root: Path
    layout: str
    class_names: list[str]
    splits: dict[str, Split]
    ignored_files: list[str] = dataclasses.field(default_factory=list)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            raise DatasetError(f"dataset {self.name} ({self.root}) has no split {name!r}{nearest(name, list(self.splits))}",
                               f"its splits are: {', '.join(self.splits)}")
        return self.splits[name]

    def identity(self, split: str) -> str:
        """A short hash of what the split holds (ids, labels, file sizes or pixel bytes)."""
        s = self.split(split)
        h = hashlib.sha256()
        h.update("\n".join(self.class_names).encode())
        h.update(s.labels.astype(np.int64).tobytes())
        for sid in s.ids:
            h.update(sid.encode())
        h.update(getattr(s, "content_key", b""))
        return h.hexdigest()[:16]


def data_home() -> Path:
    return Path(os.environ.get("BOTTLENECK_HOME", Path.home() / ".cache" / "bottleneck"))


def default_data_dir() -> Path:
    return Path(os.environ.get("BOTTLENECK_DATA_DIR", "data"))


# ---------------------------------------------------------------- finding


def list_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """Each known dataset and where (if anywhere) it was found."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    rows = []
    for name in KNOWN:
        found = _find_known(name, data_dir)
        rows.append({"name": name, "found": str(found) if found else None, "citation": CITATIONS[name]})
    return rows


def _find_known(name: str, data_dir: Path) -> Path | None:
    for candidate in KNOWN[name]:
        if candidate.startswith("~keras:"):
            path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / candidate[7:]
        else:
            path = data_dir / candidate
        if path.exists():
            return path
    return None


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Find ``name`` (cifar10, gtsrb or folder:PATH) and read its sample lists."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if name.startswith("folder:"):
        path = Path(name[len("folder:"):]).expanduser()
        if not path.exists():
            raise DatasetError(f"dataset folder {path} does not exist", "check the path after folder:")
        return _open(path, name)
    if name not in KNOWN:
        raise DatasetError(f"unknown dataset {name!r}{nearest(name, list(KNOWN))}",
                           f"use one of {', '.join(KNOWN)} or folder:PATH (see `bottleneck datasets`)")
    path = _find_known(name, data_dir)
    if path is None and name == "cifar10" and os.environ.get("BOTTLENECK_OFFLINE", "") in ("", "0"):
        path = _download_cifar10()
    if path is None:
        looked = ", ".join(c if c.startswith("~") else str(data_dir / c) for c in KNOWN[name])
        raise DatasetError(f"dataset {name} not found; looked for {looked}",
                           f"put it in {data_dir} (or pass --data-dir / set BOTTLENECK_DATA_DIR)")
    return _open(path, name)


def _download_cifar10() -> Path | None:
    try:
        import keras

        keras.datasets.cifar10.load_data()
    except Exception:
        return None
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "cifar-10-batches-py"
    return path if path.exists() else None


def _open(path: Path, name: str) -> Dataset:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        path = extract_archive(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is neither a folder nor a .tar.gz archive", "point at the dataset folder")
    root = _descend(path)
    for detect, reader in _LAYOUTS:
        if detect(root):
            return reader(root, name)
    raise DatasetError(
        f"{root} has no layout bottleneck knows",
        "expected one of: train/<class>/* [test/<class>/*]; <class>/*; CIFAR's data_batch_1..5 + test_batch; "
        "GTSRB's Train/<ClassId>/ + Test.csv; or train.p/test.p pickles")


def _descend(path: Path) -> Path:
    """Step into a lone sub-folder (archives often wrap their content in one)."""
    for _ in range(3):
        entries = [e for e in path.iterdir() if not e.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir() and not _looks_like_class_root(path):
            path = entries[0]
        else:
            break
    return path


def _looks_like_class_root(path: Path) -> bool:
    return any(_is_image(f) for d in path.iterdir() if d.is_dir() for f in list(d.iterdir())[:5])


def extract_archive(archive: Path) -> Path:
    """Unpack once into BOTTLENECK_HOME/archives (complete or absent, never half)."""
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = archive.name.split(".")[0]
    target = data_home() / "archives" / f"{stem}-{key}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{stem}-", dir=target.parent))
    try:
        with tarfile.open(archive) as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(tmp, filter="data")
            else:  # Python < 3.10.12: no extraction filters
                tar.extractall(tmp)
        os.replace(tmp, target)
    except (tarfile.TarError, OSError, EOFError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DatasetError(f"cannot unpack {archive}: {e}", "check that the archive is complete") from e
    return target


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


# ---------------------------------------------------------------- layouts


def _file_split(root: Path, rel: list[str], labels, groups=None) -> Split:
    split = Split(rel, np.asarray(labels, dtype=np.int64), groups or list(rel),
                  lambda i, root=root, rel=rel: load_image(root / rel[i]))
    sizes = hashlib.sha256()  # file sizes make the identity change when a file is replaced
    for r in rel:
        sizes.update(b"%d," % (root / r).stat().st_size)
    split.content_key = sizes.digest()
    return split


def _array_split(ids: list[str], images: np.ndarray, labels) -> Split:
    split = Split(ids, np.asarray(labels, dtype=np.int64), ids,
                  lambda i, images=images: to_rgb(Image.fromarray(images[i])))
    split.content_key = hashlib.sha256(np.ascontiguousarray(images)).digest()
    return split


def _scan_class_folders(folder: Path, rel_to: Path, ignored: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"{folder} has no class sub-folders", "put each class's images in a sub-folder named after it")
    files = {}
    for c in classes:
        found = []
        for f in sorted((folder / c).iterdir()):
            if _is_image(f):
                found.append(str(f.relative_to(rel_to)))
            elif not f.name.startswith("."):
                ignored.append(str(f))
        if not found:
            raise DatasetError(f"class folder {folder / c} has no images", "remove the empty folder or add its images")
        files[c] = found
    return classes, files


def _is_image_folder(root: Path) -> bool:
    return (root / "train").is_dir() or _looks_like_class_root(root)


def _read_image_folder(root: Path, name: str) -> Dataset:
    ignored: list[str] = []
    split_dirs = {s: root / s for s in ("train", "test") if (root / s).is_dir()} or {"train": root}
    classes = None
    splits = {}
    for split, folder in split_dirs.items():
        found, files = _scan_class_folders(folder, root, ignored)
        if classes is None:
            classes = found
        elif found != classes:
            extra, missing = sorted(set(found) - set(classes)), sorted(set(classes) - set(found))
            raise DatasetError(f"the {split} split of {root} has other classes than train "
                               f"(only in {split}: {extra or 'none'}; missing from {split}: {missing or 'none'})",
                               "make both splits hold the same class folders")
        rel = [f for c in classes for f in files[c]]
        labels = [k for k, c in enumerate(classes) for _ in files[c]]
        splits[split] = _file_split(root, rel, labels)
    return Dataset(name, root, "image-folder", classes, splits, ignored)


def _is_cifar_python(root: Path) -> bool:
    return (root / "data_batch_1").exists() or (root / "cifar-10-batches-py").is_dir()


def _unpickle(path: Path):
    """A pickle of plain data (never code: see safepickle)."""
    try:
        return safepickle.load_file(path, encoding="latin1")  # CIFAR's batches were pickled by Python 2
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing", "the dataset is incomplete; restore the file") from None
    except BottleneckError:  # a refused pickle says so itself
        raise
    except Exception as e:
        raise DatasetError(f"cannot read {path}: {type(e).__name__}: {e}", "the file is corrupt; restore it") from e


def _read_cifar_python(root: Path, name: str) -> Dataset:
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    meta = _unpickle(root / "batches.meta")
    classes = list(meta["label_names"])
    splits = {}
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        present = [f for f in files if (root / f).exists()]
        if not present:
            continue
        images, labels, ids = [], [], []
        for f in present:
            batch = _unpickle(root / f)
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            labels += list(batch["labels"])
            ids += [f"{f}#{i}" for i in range(len(batch["labels"]))]
        images = np.concatenate(images)
        _check_labels(root / present[0], images, np.asarray(labels), len(classes))
        splits[split] = _array_split(ids, images, labels)
    return Dataset(name, root, "cifar-python", classes, splits)


def _check_labels(path: Path, images: np.ndarray, labels: np.ndarray, n_classes: int) -> None:
    if len(images) != len(labels):
        raise DatasetError(f"{path}: {len(images)} images but {len(labels)} labels",
                           "the file is inconsistent; regenerate it")
    bad = labels[(labels < 0) | (labels >= n_classes)]
    if len(bad):
        raise DatasetError(f"{path}: label {int(bad[0])} is out of range for {n_classes} classes",
                           "fix the labels or the class list (signnames.csv)")


def _is_gtsrb_kaggle(root: Path) -> bool:
    return (root / "Train").is_dir() and (root / "Test.csv").exists()


def _sign_names(root: Path, n: int) -> list[str]:
    names = [str(i) for i in range(n)]
    path = root / "signnames.csv"
    if path.exists():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                i = int(row["ClassId"])
                if 0 <= i < n:
                    names[i] = row["SignName"]
    return names


_TRACK = re.compile(r"^(\d+)_(\d+)_\d+\.\w+$")


def _read_gtsrb_kaggle(root: Path, name: str) -> Dataset:
    ignored: list[str] = []
    ids = sorted((d for d in (root / "Train").iterdir() if d.is_dir() and d.name.isdigit()), key=lambda d: int(d.name))
    if not ids:
        raise DatasetError(f"{root / 'Train'} has no <ClassId> sub-folders", "use the Kaggle GTSRB layout")
    n = int(ids[-1].name) + 1
    rel, labels, groups = [], [], []
    for d in ids:
        found = 0
        for f in sorted(d.iterdir()):
            if not _is_image(f):
                ignored.append(str(f))
                continue
            m = _TRACK.match(f.name)
            rel.append(f"Train/{d.name}/{f.name}")
            labels.append(int(d.name))
            groups.append(f"{int(d.name)}/{m.group(2)}" if m else rel[-1])  # class/track
            found += 1
        if not found:
            raise DatasetError(f"class folder {d} has no images", "remove the empty folder or add its images")
    splits = {"train": _file_split(root, rel, labels, groups)}
    test_rel, test_labels = [], []
    with open(root / "Test.csv", newline="") as f:
        for row in csv.DictReader(f):
            test_rel.append(row["Path"])
            test_labels.append(int(row["ClassId"]))
    if test_rel:
        _check_labels(root / "Test.csv", np.empty(len(test_rel)), np.asarray(test_labels), n)
        missing = [p for p in test_rel if not (root / p).exists()]
        if missing:
            raise DatasetError(f"Test.csv lists {len(missing)} files that do not exist, e.g. {root / missing[0]}",
                               "restore the Test/ folder or fix Test.csv")
        splits["test"] = _file_split(root, test_rel, test_labels)
    return Dataset(name, root, "gtsrb-kaggle", _sign_names(root, n), splits, ignored)


def _is_pickles(root: Path) -> bool:
    return (root / "train.p").exists()


def _read_pickles(root: Path, name: str) -> Dataset:
    """The classic lab's train.p / valid.p / test.p with 'features' and 'labels'."""
    raw = {s: _unpickle(root / f"{s}.p") for s in ("train", "valid", "test") if (root / f"{s}.p").exists()}
    if (root / "signnames.csv").exists():  # the class list; labels outside it are errors
        with open(root / "signnames.csv", newline="") as f:
            classes = _sign_names(root, sum(1 for _ in csv.DictReader(f)))
    else:
        classes = [str(i) for i in range(int(max(np.max(d["labels"]) for d in raw.values())) + 1)]
    splits = {}
    for s, d in raw.items():
        if "features" not in d or "labels" not in d:
            raise DatasetError(f"{root / (s + '.p')} has no 'features' and 'labels'", "use the lab's pickle format")
        images = np.asarray(d["features"])
        if images.dtype != np.uint8:
            images = np.clip(images, 0, 255).astype(np.uint8)
        labels = np.asarray(d["labels"]).astype(np.int64)
        _check_labels(root / f"{s}.p", images, labels, len(classes))
        splits[s] = _array_split([f"{s}.p#{i}" for i in range(len(images))], images, labels)
    return Dataset(name, root, "pickles", classes, splits)


_LAYOUTS = [
    (_is_cifar_python, _read_cifar_python),
    (_is_gtsrb_kaggle, _read_gtsrb_kaggle),
    (_is_pickles, _read_pickles),
    (_is_image_folder, _read_image_folder),
]
