"""What every dataset reader returns: a ``Dataset`` of ``Split``s, each a list of samples
(id, label, group) over a source of images (``FileSource`` for files, ``ArraySource`` for
rows of an array). Images are decoded lazily, one at a time."""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from bottleneck.core.errors import DatasetError, nearest
from bottleneck.core.sampling import validation_split
from bottleneck.core.userfiles import UnsafeFile, read_text
from bottleneck.data.content import ContentIndex, file_digest, pixels_digest
from bottleneck.data.images import BadImage, decode, read_image_bytes, to_rgb
from bottleneck.data.targets import Target, class_target, pick


class FileSource:
    """Images stored as files under ``root`` (plain attributes, so it can be pickled)."""

    def __init__(self, root: Path, rel: list[str]):
        self.root, self.rel = Path(root), list(rel)

    def name(self, i: int) -> str:
        return str(self.root / self.rel[i])

    def load(self, i: int, size: int | None = None, digest: str | None = None) -> Image.Image:
        """Decode image ``i`` (at reduced size for large JPEGs when ``size`` is given). With
        ``digest``, the bytes read must be the ones that were hashed when the run was planned."""
        return decode_file(self.read(i), self.name(i), size, digest)

    def read(self, i: int) -> bytes:
        """The bytes of image file ``i`` (BadImage when it cannot be read)."""
        return read_image_bytes(self.root / self.rel[i])

    def digests(self, indices) -> list[str]:
        try:
            return ContentIndex(self.root).digests([self.rel[int(i)] for i in indices])
        except UnsafeFile as e:
            raise BadImage(e.path, e.what) from None
        except FileNotFoundError as e:
            raise DatasetError(f"image file {e.filename} has disappeared", "restore it, or run again") from None

    def subset(self, indices) -> FileSource:
        return FileSource(self.root, [self.rel[int(i)] for i in indices])


def decode_file(data: bytes, name: str, size: int | None = None, digest: str | None = None) -> Image.Image:
    """An image file's bytes decoded; with ``digest``, they must be the bytes hashed when the run was planned."""
    if digest is not None and file_digest(data) != digest:
        raise DatasetError(f"{name} changed while features were being extracted",
                           "run the same command again once the dataset stops changing")
    return decode(data, name, size)


class ArraySource:
    """Images held as rows of a uint8 array (CIFAR's python batches, lab pickles)."""

    def __init__(self, images: np.ndarray, file: str = "array"):
        self.images, self.file = images, file

    def name(self, i: int) -> str:
        return f"{self.file} row {i}"

    def load(self, i: int, size: int | None = None, digest: str | None = None) -> Image.Image:
        return to_rgb(Image.fromarray(self.images[i]))

    def digests(self, indices) -> list[str]:
        return [pixels_digest(self.images[int(i)]) for i in indices]

    def subset(self, indices) -> ArraySource:
        return ArraySource(self.images[np.asarray(indices, dtype=np.int64)], self.file)


@dataclasses.dataclass
class Split:
    ids: list[str]
    labels: np.ndarray
    groups: list[str]
    source: FileSource | ArraySource

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, i: int, size: int | None = None, digest: str | None = None) -> Image.Image:
        """Sample ``i`` as an RGB image."""
        return self.source.load(i, size, digest)

    def digests(self, indices) -> list[str]:
        """The content hash of each sample in ``indices``."""
        return self.source.digests(indices)

    def subset(self, indices) -> Split:
        indices = np.asarray(indices, dtype=np.int64)
        return Split([self.ids[i] for i in indices], self.labels[indices], [self.groups[i] for i in indices],
                     self.source.subset(indices))


@dataclasses.dataclass
class Dataset:
    name: str
    root: Path
    layout: str
    class_names: list[str]
    splits: dict[str, Split]
    ignored_files: list[str] = dataclasses.field(default_factory=list)
    absent: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> why it is not there
    targets: dict = dataclasses.field(default_factory=dict)  # name -> targets.Target; the first is the default

    def __post_init__(self):
        if not self.targets and self.class_names:
            self.targets = {"class": class_target(self.class_names)}

    def target(self, name: str | None = None) -> Target:
        """The target called ``name`` (the dataset's default when None)."""
        return pick(self.targets, name, self.name)

    def split(self, name: str) -> Split:
        if name not in self.splits:
            why = f" ({self.absent[name]})" if name in self.absent else ""
            todo = f"its splits are: {', '.join(self.splits)}"
            if name == "test":
                todo += "; for a dataset without a test split, --test-fraction F holds out a seeded, stratified part"
            raise DatasetError(f"dataset {self.name} ({self.root}) has no split {name!r}{why}"
                               f"{nearest(name, list(self.splits))}", todo)
        return self.splits[name]

    def identity(self, split: str) -> str:
        """A short hash of which samples the split lists (their ids): what a draw is made
        from. What the samples hold is ``Split.digests``; what is predicted about them, the
        targets, is not part of the features."""
        return hashlib.sha256("\n".join(self.split(split).ids).encode()).hexdigest()[:16]

    def class_ids(self, classes) -> list[int]:
        """Class numbers from numbers or names (an error names anything that is neither)."""
        out = []
        for c in classes:
            text = str(c).strip()
            if text.isdigit() and int(text) < len(self.class_names):
                out.append(int(text))
            elif text in self.class_names:
                out.append(self.class_names.index(text))
            else:
                raise DatasetError(f"dataset {self.name} has no class {text!r}{nearest(text, self.class_names)}",
                                   f"give class numbers 0..{len(self.class_names) - 1} or names")
        return sorted(set(out))

    def holding_out(self, classes) -> Dataset:
        """This dataset with ``classes`` held out: training images of every other class, test
        images of those classes only, to judge a target (attributes) on classes never seen."""
        held = self.class_ids(classes)
        if len(held) >= len(self.class_names):
            raise DatasetError("holding out every class leaves nothing to train on", "hold out fewer classes")
        splits = {}
        for name, s in self.splits.items():
            keep = np.isin(s.labels, held) if name != "train" else ~np.isin(s.labels, held)
            splits[name] = s.subset(np.flatnonzero(keep))
        return dataclasses.replace(self, splits=splits)

    def with_test_fraction(self, fraction: float, seed: int = 0) -> Dataset:
        """This dataset with ``fraction`` of its training split held out as the test split:
        seeded, stratified by class and by whole groups (e.g. GTSRB tracks)."""

        if "test" in self.splits:
            raise DatasetError(f"dataset {self.name} has its own test split; --test-fraction is for datasets "
                               "without one", "drop --test-fraction (evaluation uses the dataset's test split)")
        if not 0 < fraction < 1:
            raise DatasetError(f"--test-fraction must be between 0 and 1 (exclusive), got {fraction}",
                               "e.g. --test-fraction 0.2")
        tr = self.split("train")
        keep, held = validation_split(tr.labels, np.asarray(tr.groups), fraction, seed)
        missing = sorted(set(np.unique(tr.labels)) - set(np.unique(tr.labels[held])))
        if missing:
            names = ", ".join(self.class_names[int(c)] for c in missing[:5])
            raise DatasetError(f"--test-fraction {fraction} leaves no test images for {len(missing)} classes "
                               f"(e.g. {names}): each class needs at least two images or groups",
                               "add images to those classes, or use a dataset with a test split")
        splits = {**self.splits, "train": tr.subset(keep), "test": tr.subset(held)}  # others (val) kept
        return dataclasses.replace(self, splits=splits, absent={})


def dataset_text(path: Path, kind: str = "text file") -> str:
    """A text file of a dataset (a regular file, within its kind's size limit; bytes that are
    not UTF-8 replaced, and said by the row checks that follow)."""
    try:
        return read_text(path, kind, errors="replace")
    except FileNotFoundError:
        raise DatasetError(f"{path} is missing", "the dataset is incomplete; restore the file") from None
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}", "check the file's permissions") from None


def inside(root: Path, rel: str) -> bool:
    """Whether ``rel`` (read from a CSV) names a file under ``root``: never ../ or an absolute path."""
    try:
        (root / rel).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return not Path(rel).is_absolute()


def is_file_there(path: Path) -> bool:
    """``path.is_file()``, False also for a name the system refuses (too long, a NUL in it)
    rather than an OSError: such names come from CSV cells."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def file_path(split: Split, index: int) -> Path | None:
    return Path(split.source.name(index)) if isinstance(split.source, FileSource) else None
