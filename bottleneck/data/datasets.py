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
import io
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np

from bottleneck.core import safepickle
from bottleneck.core.errors import BottleneckError, DatasetError, nearest
from bottleneck.core.paths import data_home, default_data_dir
from bottleneck.core.registries import add
from bottleneck.data.csvdata import read_target_csv
from bottleneck.data.detection import is_gtsdb, read_coco, read_gtsdb, read_yolo
from bottleneck.data.images import IMAGE_SUFFIXES
from bottleneck.data.sources import ArraySource, Dataset, FileSource, Split, dataset_text, inside, is_file_there
from bottleneck.data.targets import (
    attribute_target,
    box_target,
    class_target,
    presence_target,
    segmentation_target,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NamedDataset:
    """A dataset known by name (``--dataset cifar10``): where to look for it under the data
    folder, whom to cite, the targets its usual layout offers (the first is the default) and,
    for one that can be fetched, how (only when online: BOTTLENECK_OFFLINE unset or 0)."""

    name: str
    candidates: tuple[str, ...]  # names looked for under the data dir, in order; "~keras:X": Keras's cache
    citation: str
    targets: tuple[str, ...] = ("class",)
    download: Callable[[], Path | None] | None = None



def _download_cifar10() -> Path | None:
    try:
        import keras

        keras.datasets.cifar10.load_data()
    except Exception:
        return None
    path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "cifar-10-batches-py"
    return path if path.exists() else None


DATASETS: dict[str, NamedDataset] = {d.name: d for d in [
    NamedDataset(name="cifar10", candidates=("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                                             "cifar10.tar.gz", "~keras:cifar-10-batches-py"),
                 citation="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
                 download=_download_cifar10),
    NamedDataset(name="gtsrb", candidates=("gtsrb", "gtsrb-subset", "GTSRB", "traffic-signs-data", "gtsrb.tar.gz",
                                           "gtsrb-subset.tar.gz"),
                 citation="Stallkamp et al., The German Traffic Sign Recognition Benchmark, IJCNN 2011",
                 targets=("class", "attributes", "box")),
    NamedDataset(name="camvid", candidates=("camvid", "CamVid", "camvid.tar.gz"),
                 citation="Brostow, Fauqueur and Cipolla, Semantic object classes in video, Pattern Recognition "
                          "Letters 2009",
                 targets=("segmentation", "presence")),
    NamedDataset(name="gtsdb", candidates=("gtsdb", "GTSDB", "FullIJCNN2013", "gtsdb.tar.gz"),
                 citation="Houben et al., Detection of Traffic Signs in Real-World Images: The German Traffic Sign "
                          "Detection Benchmark, IJCNN 2013",
                 targets=("signs", "categories")),
]}


def register_dataset(dataset: NamedDataset, *, replace: bool = False) -> NamedDataset:
    """Make ``dataset.name`` a name ``load_dataset`` (and ``--dataset``) finds under the data
    folder, read by whichever known layout or registered format its folder has."""
    if not isinstance(dataset, NamedDataset):
        raise DatasetError(f"register_dataset takes a NamedDataset, not {type(dataset).__name__}",
                           "build one: NamedDataset(name=..., candidates=(...), citation=...)")
    if ":" in dataset.name or not dataset.name or not dataset.candidates:
        raise DatasetError(f"cannot register dataset {dataset.name!r}: a name has no ':' and at least one "
                           "candidate folder", "fix the NamedDataset's fields")
    add(DATASETS, dataset.name, dataset, what="a dataset named", replace=replace, error=DatasetError)
    return dataset


def list_datasets(data_dir: str | Path | None = None) -> list[dict]:
    """Each known dataset and where (if anywhere) it was found."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    rows = []
    for d in DATASETS.values():
        found = _find_known(d, data_dir)
        rows.append({"name": d.name, "found": str(found) if found else None, "citation": d.citation,
                     "targets": list(d.targets)})
    return rows


def _find_known(dataset: NamedDataset, data_dir: Path) -> Path | None:
    for candidate in dataset.candidates:
        if candidate.startswith("~keras:"):
            path = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / candidate[7:]
        else:
            path = data_dir / candidate
        if path.exists():
            return path
    return None


# ---------------------------------------------------------------- formats: PREFIX:WHAT

# A reader of a prefixed dataset name: reader(what, name) -> Dataset, where ``what`` is the text
# after "PREFIX:" (a path, for the built-in ones) and ``name`` the whole name, kept as the
# dataset's name (the cache records it; see store.canonical_dataset).
FORMATS: dict[str, Callable[[str, str], Dataset]] = {}


def register_format(prefix: str, reader: Callable[[str, str], Dataset], *, replace: bool = False) -> None:
    """Make ``PREFIX:WHAT`` a dataset name: ``load_dataset("PREFIX:WHAT")`` returns
    ``reader(WHAT, "PREFIX:WHAT")``, a ``Dataset`` (see ``sources``). The built-in formats are
    ``folder:`` (an image folder or any known layout), ``segfolder:``, ``multilabel:`` and
    ``regression:`` (CSV targets)."""
    if not prefix.isidentifier() or prefix in DATASETS:
        raise DatasetError(f"cannot register dataset format {prefix!r}: a prefix is a plain word and not the name "
                           "of a dataset", "choose another prefix")
    if not callable(reader):
        raise DatasetError(f"the reader for {prefix}: must be callable: reader(what, name) -> Dataset",
                           "pass a function")
    add(FORMATS, prefix, reader, what="a dataset format", replace=replace, error=DatasetError)


def _read_folder(what: str, name: str) -> Dataset:
    path = Path(what).expanduser()
    if not path.exists():
        raise DatasetError(f"dataset folder {path} does not exist", "check the path after folder:")
    return _open(path, name)


def _read_segfolder(what: str, name: str) -> Dataset:
    path = Path(what).expanduser()
    if not (path / "codes.txt").exists() or not (path / "images").is_dir() or not (path / "labels").is_dir():
        raise DatasetError(f"{path} is not a segmentation folder",
                           "segfolder:PATH needs PATH/images/, PATH/labels/ and PATH/codes.txt")
    return _read_camvid(path, name)


def _csv_reader(kind: str) -> Callable[[str, str], Dataset]:
    def read(what: str, name: str) -> Dataset:
        return read_target_csv(Path(what).expanduser(), kind, name)

    return read


def load_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """Find ``name`` (a registered name such as cifar10, or PREFIX:WHAT such as folder:PATH)
    and read its sample lists."""
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    prefix, colon, what = name.partition(":")
    if colon and prefix in FORMATS:
        dataset = FORMATS[prefix](what, name)
        if not isinstance(dataset, Dataset):
            raise DatasetError(f"the reader of {prefix}: returned {type(dataset).__name__}, not a Dataset",
                               "make the registered reader return a bottleneck Dataset")
        return dataset
    if name not in DATASETS:
        prefixes = ", ".join(f"{p}:..." for p in FORMATS)
        raise DatasetError(f"unknown dataset {name!r}{nearest(name, list(DATASETS))}",
                           f"use one of {', '.join(DATASETS)}, or {prefixes} (see `bottleneck datasets`)")
    known = DATASETS[name]
    path = _find_known(known, data_dir)
    if path is None and known.download is not None and os.environ.get("BOTTLENECK_OFFLINE", "") in ("", "0"):
        path = known.download()
    if path is None:
        looked = ", ".join(c if c.startswith("~") else str(data_dir / c) for c in known.candidates)
        raise DatasetError(f"dataset {name} not found; looked for {looked}",
                           f"put it in {data_dir} (or pass --data-dir / set BOTTLENECK_DATA_DIR)")
    return _open(path, name)


def _open(path: Path, name: str) -> Dataset:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        path = extract_archive(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is neither a folder nor a .tar.gz archive", "point at the dataset folder")
    root = _descend(path)
    for detect, reader in _LAYOUTS:
        if detect(root):
            try:
                return reader(root, name)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError, csv.Error) as e:
                # Each reader checks what it knows can go wrong; a file malformed in a way it did not
                # foresee (a pickle of the wrong shape, a cell of the wrong type) is still said, not a traceback.
                raise DatasetError(f"the dataset in {root} is malformed: {type(e).__name__}: {str(e)[:300]}",
                                   "check the files against the layout's format (see the README's datasets)") from None
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


UNPACK_BUDGET = 64 << 30  # bytes an archive may unpack to: far above any dataset here, far below a full disk
UNPACK_RATIO = 200  # ...and at most this many times its own size (images barely compress; a bomb does)
UNPACK_MEMBERS = 2_000_000


def _check_unpacked_size(tar: tarfile.TarFile, archive: Path) -> None:
    """Refuse, before writing a byte, an archive whose members add up to more than the budget
    (the sizes are read from its headers; tarfile then writes no more than each says)."""
    total, count, limit = 0, 0, min(UNPACK_BUDGET, max(1 << 30, UNPACK_RATIO * archive.stat().st_size))
    for member in tar:
        total += max(0, member.size)
        count += 1
        if total > limit or count > UNPACK_MEMBERS:
            raise DatasetError(f"{archive} would unpack to more than {limit / (1 << 30):.1f} GB or "
                               f"{UNPACK_MEMBERS:,} files (a {archive.stat().st_size / (1 << 20):.1f} MB archive); "
                               "it is not unpacked", "unpack it yourself if you trust it, and point at the folder")


def extract_archive(archive: Path) -> Path:
    """Unpack once into BOTTLENECK_HOME/archives (complete or absent, never half), within
    ``UNPACK_BUDGET`` bytes and ``UNPACK_RATIO`` times the archive's size."""
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
            _check_unpacked_size(tar, archive)
            if hasattr(tarfile, "data_filter"):  # refuses links and paths that leave the folder
                tar.extractall(tmp, filter="data")
            else:  # Python < 3.10.12 has no filters: plain files and folders inside the target only
                tar.extractall(tmp, members=_plain_members(tar, archive))
        os.replace(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, (tarfile.TarError, OSError, EOFError, zlib.error)):
            raise
        raise DatasetError(f"cannot unpack {archive}: {e}", "check that the archive is complete") from e
    return target


def _plain_members(tar: tarfile.TarFile, archive: Path):
    for member in tar:
        name = Path(member.name)
        if not (member.isfile() or member.isdir()) or name.is_absolute() or ".." in name.parts:
            raise DatasetError(f"{archive} holds {member.name!r}, a link or a path outside the archive's folder",
                               "unpack it yourself if you trust it, and point at the folder")
        yield member


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _file_split(root: Path, rel: list[str], labels, groups=None) -> Split:
    return Split(rel, np.asarray(labels, dtype=np.int64), groups or list(rel), FileSource(root, rel))


def _array_split(ids: list[str], images: np.ndarray, labels, file: str) -> Split:
    return Split(ids, np.asarray(labels, dtype=np.int64), ids, ArraySource(images, file))


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
        splits[split] = _array_split(ids, images, labels, str(root / present[0]))
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
        for row in csv.DictReader(io.StringIO(dataset_text(path, "text file"))):
            i = (row.get("ClassId") or "").strip()
            if not i.isdigit() or not isinstance(row.get("SignName"), str):
                raise DatasetError(f"{path}: row {str(row)[:200]} has no class number and SignName",
                                   "signnames.csv has two columns, ClassId and SignName")
            if int(i) < n:
                names[int(i)] = row["SignName"]
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
    test_rel, test_labels = _read_test_csv(root, n)
    absent = {}
    if test_rel:
        splits["test"] = _file_split(root, test_rel, test_labels)
    else:
        absent["test"] = f"{root / 'Test.csv'} has a header but lists no images"
    classes = _sign_names(root, n)
    targets = {"class": class_target(classes), **_gtsrb_attributes(classes),
               "box": box_target(lambda: _read_boxes(root))}
    return Dataset(name, root, "gtsrb-kaggle", classes, splits, ignored, absent, targets)


def _gtsrb_attributes(classes: list[str]) -> dict:
    """The attributes target, for GTSRB's 43 classes (a lab pickle set with other classes has none)."""
    return {"attributes": attribute_target()} if len(classes) == 43 else {}


def _read_boxes(root: Path) -> dict[str, tuple]:
    """{Path: (Width, Height, Roi.X1, Roi.Y1, Roi.X2, Roi.Y2)} from Train.csv and Test.csv."""
    boxes: dict[str, tuple] = {}
    columns = ("Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")
    for name in ("Train.csv", "Test.csv"):
        path = root / name
        if not path.exists():
            continue
        with io.StringIO(dataset_text(path, "table")) as f:
            reader = csv.DictReader(f)
            if not set(columns) <= set(reader.fieldnames or []):
                raise DatasetError(f"{path} has no sign boxes (columns {', '.join(columns)})",
                                   "use GTSRB's CSVs, which give each image's box")
            for row in reader:
                try:
                    w, h, x1, y1, x2, y2 = (float(row[c]) for c in columns)
                except ValueError:
                    raise DatasetError(f"{path}, line {reader.line_num}: a box value is not a number",
                                       "fix that row") from None
                if w <= 0 or h <= 0:
                    raise DatasetError(f"{path}, line {reader.line_num}: the image size {w} x {h} is not positive",
                                       "fix that row")
                boxes[row["Path"]] = (w, h, x1, y1, x2, y2)
    return boxes


def _read_test_csv(root: Path, n_classes: int) -> tuple[list[str], list[int]]:
    """GTSRB's Test.csv: (paths, class ids), every row checked; errors name the row."""
    path = root / "Test.csv"
    rel, labels = [], []
    with io.StringIO(dataset_text(path, "table")) as f:
        reader = csv.DictReader(f)
        missing = {"Path", "ClassId"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path} has no {' or '.join(sorted(missing))} column "
                               f"(its header: {', '.join(reader.fieldnames or []) or 'empty'})",
                               "use GTSRB's Test.csv, whose columns include Path and ClassId")
        for row in reader:
            line = reader.line_num
            text = (row.get("ClassId") or "").strip()
            if not text.isdigit():
                raise DatasetError(f"{path}, line {line}: ClassId {text!r} is not a class number",
                                   f"fix that row; class numbers run from 0 to {n_classes - 1}")
            if not row.get("Path") or not inside(root, row["Path"]):
                raise DatasetError(f"{path}, line {line}: Path {row.get('Path')!r} is not a file inside {root}",
                                   "paths in Test.csv are relative to the dataset folder, e.g. Test/00001.png")
            rel.append(row["Path"])
            labels.append(int(text))
    if rel:
        _check_labels(path, np.empty(len(rel)), np.asarray(labels), n_classes)
        gone = [p for p in rel if not is_file_there(root / p)]
        if gone:
            raise DatasetError(f"Test.csv lists {len(gone)} files that do not exist, e.g. {root / gone[0]}",
                               "restore the Test/ folder or fix Test.csv")
    return rel, labels


def _is_pickles(root: Path) -> bool:
    return (root / "train.p").exists()


def _read_pickles(root: Path, name: str) -> Dataset:
    """The classic lab's train.p / valid.p / test.p with 'features' and 'labels'."""
    raw = {s: _unpickle(root / f"{s}.p") for s in ("train", "valid", "test") if (root / f"{s}.p").exists()}
    if (root / "signnames.csv").exists():  # the class list; labels outside it are errors
        classes = _sign_names(root, sum(1 for _ in csv.DictReader(io.StringIO(dataset_text(root / "signnames.csv")))))
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
        splits[s] = _array_split([f"{s}.p#{i}" for i in range(len(images))], images, labels, str(root / f"{s}.p"))
    targets = {"class": class_target(classes), **_gtsrb_attributes(classes)}
    return Dataset(name, root, "pickles", classes, splits, targets=targets)


MAX_CODES = 255  # label maps hold uint8 class ids; 255 is left for a Void that is not listed


def _read_codes(path: Path) -> list[str]:
    """codes.txt: one class name a line, in id order; Void (if listed) is never a target."""
    codes = [line.strip() for line in dataset_text(path).splitlines() if line.strip()]
    if len(codes) > MAX_CODES + 1 or (len(codes) == MAX_CODES + 1 and "Void" not in codes):
        raise DatasetError(f"{path} lists {len(codes)} codes; label maps hold 8-bit class ids, so at most "
                           f"{MAX_CODES} classes and Void", "check that codes.txt lists one class name a line")
    if not [c for c in codes if c != "Void"]:
        raise DatasetError(f"{path} lists no class" + (" but Void" if codes else ""),
                           "codes.txt lists the class names, one a line, in the order of their ids")
    if len(set(codes)) != len(codes):
        twice = next(c for c in codes if codes.count(c) > 1)
        raise DatasetError(f"{path} lists {twice!r} twice", "each class name once, one a line")
    return codes


def _is_camvid(root: Path) -> bool:
    return (root / "codes.txt").exists() and (root / "images").is_dir() and (root / "labels").is_dir()


def _read_camvid(root: Path, name: str) -> Dataset:
    """CamVid as SegNet split it: images/{train,val,test}/X.jpg with labels/{split}/X.png (fastai's
    ``X_P.png`` is understood too) and codes.txt (class names in id order; Void, last, is never
    a target); or fastai's flat layout, images/ and labels/ with valid.txt naming the
    validation images (no test split: --test-fraction). Its default target is ``segmentation``."""
    codes = _read_codes(root / "codes.txt")
    void = codes.index("Void") if "Void" in codes else len(codes)
    # Void last (CamVid's 11-class codes): the classes are the others; Void elsewhere (fastai's 32-class
    # codes): every code keeps its id, and Void is a class that is never a target and never scored.
    classes = codes[:void] if void == len(codes) - 1 or void == len(codes) else codes
    splits, label_of = {}, {}
    layout = {split: (root / "images" / split, root / "labels" / split) for split in ("train", "val", "test")
              if (root / "images" / split).is_dir()}
    valid: set[str] = set()
    if not layout:  # fastai's flat layout: images/X.jpg, labels/X_P.png, valid.txt naming the validation images
        layout = {"train": (root / "images", root / "labels")}
        if (root / "valid.txt").exists():
            valid = {Path(line.strip()).name for line in dataset_text(root / "valid.txt").splitlines() if line.strip()}
    for split, (folder, labels) in layout.items():
        rel, rel_val = [], []
        for f in sorted(folder.iterdir()):
            if not _is_image(f):
                continue
            candidates = [labels / (f.stem + ext) for ext in (".png", "_P.png")]
            found = next((c for c in candidates if c.exists()), None)
            if found is None:
                raise DatasetError(f"{f} has no label map (looked for {candidates[0]} and {candidates[1].name})",
                                   "restore the label map, or remove the image")
            sid = str(f.relative_to(root))
            (rel_val if f.name in valid else rel).append(sid)
            label_of[sid] = found
        for split_name, ids in ((split, rel), ("val", rel_val)):
            if ids:
                splits[split_name] = Split(ids, np.full(len(ids), -1, np.int64), list(ids), FileSource(root, ids))
    if not splits:
        raise DatasetError(f"{root / 'images'} has no train/val/test folders of images", "use CamVid's layout")
    targets = {"segmentation": segmentation_target(classes, void, lambda sid: label_of[sid]),
               "presence": presence_target(classes, void, lambda sid: label_of[sid])}
    return Dataset(name, root, "camvid", [], splits, targets=targets)


_LAYOUTS = [
    (_is_camvid, _read_camvid),
    (is_gtsdb, read_gtsdb),
    (_is_cifar_python, _read_cifar_python),
    (_is_gtsrb_kaggle, _read_gtsrb_kaggle),
    (_is_pickles, _read_pickles),
    (_is_image_folder, _read_image_folder),
]


for _prefix, _reader in (("folder", _read_folder), ("segfolder", _read_segfolder),
                         ("multilabel", _csv_reader("multilabel")), ("regression", _csv_reader("regression")),
                         ("coco", read_coco), ("yolo", read_yolo)):
    register_format(_prefix, _reader)
