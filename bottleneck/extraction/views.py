"""Augmented views that survive caching: K seeded views of each training image, each
extracted once and kept in the cache like any other row.

Caching bottleneck features classically gives up augmentation (a cached feature is one
image, seen one way). Here a view is a row of its own: view 0 is the image itself, views
1..K-1 are seeded random transforms of it (a crop of 55-100% of its area, a mirror image
where the dataset allows it, a small rotation for signs, small colour changes). Each
view's transform is drawn from a hash of the image's content and the view's number, and
written out in full in the row's digest (``<image digest>|v3:f1:x0,y0,x1,y1:r-4.2:c1.05,0.97,1.1``),
so:

- a view is the same in every draw, every process and every file: asking for K=8 after
  K=4 computes only views 4..7 (the rows of the K=4 file are copied by digest), and a
  plain file gives view 0 of each image;
- what a row holds is readable from the file, and decoding needs no random numbers.

Flips respect what a class means. A dataset says how it may be mirrored (``FLIPS``):
CIFAR-10's classes are all the same thing in a mirror; a traffic sign is not: "turn left
ahead" mirrored is "turn right ahead" (its label is mapped), "speed limit 30" mirrored is
no sign at all (never flipped), "yield" mirrored is itself. Test-time views (averaged
per image) never flip on a dataset whose flips depend on the class: the class is not
known at test time. Where any class may be mirrored, test view 1 is the plain mirror image
(the classic test-time flip), and views 2.. are seeded as in training.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re

import numpy as np

from bottleneck.core.errors import BottleneckError

AUGMENT_VERSION = 1  # bump when the transforms change: the digests (and so the files) change with it
AREA = (0.55, 1.0)  # a view's crop: this share of the image's area ...
RATIO = (3 / 4, 4 / 3)  # ... with this aspect ratio (of the crop against the image's)
COLOUR = 0.15  # brightness, contrast and saturation each scaled by 1 +- this

# GTSRB classes by name: those that are themselves in a mirror, and the pairs a mirror swaps.
_SIGN_SYMMETRIC = ("Right-of-way at the next intersection", "Priority road", "Yield", "No vehicles", "No entry",
                   "General caution", "Bumpy road", "Traffic signals", "Beware of ice/snow", "Ahead only")


_SIGN_PAIRS = (("Dangerous curve to the left", "Dangerous curve to the right"),
               ("Turn right ahead", "Turn left ahead"), ("Go straight or right", "Go straight or left"),
               ("Keep right", "Keep left"))


# How each known dataset may be mirrored: "any" class, "signs" (the table above), or "none".
FLIPS = {"cifar10": "any", "gtsrb": "signs", "gtsdb": "signs"}

ROTATE = {"gtsrb": 10.0}  # degrees, at most, either way: signs are seen a little tilted; photos are level


@dataclasses.dataclass(frozen=True)
class Views:
    """``count`` views of each image (view 0: the image itself) under one dataset's rules."""

    count: int
    flips: str = "none"  # any, signs or none
    rotate: float = 0.0
    test: bool = False  # test-time views: never a flip that needs the class

    @property
    def description(self) -> str:
        """What the settings record (and the rows' digests follow)."""
        flip = "no flip" if self.flips == "none" or (self.test and self.flips != "any") else f"flip ({self.flips})"
        return (f"v{AUGMENT_VERSION}: crop {AREA[0]:g}-{AREA[1]:g} of the area, {flip}, rotate +-{self.rotate:g} deg, "
                f"colour +-{COLOUR:g}")

    def mirror(self, class_names: list[str]) -> dict[int, int]:
        """Class id -> the class its mirror image is (itself, or its pair); a class absent is never flipped."""
        if self.flips == "any":
            return {c: c for c in range(len(class_names))}
        if self.flips == "none" or self.test:
            return {}
        ids = {name: i for i, name in enumerate(class_names)}
        out = {ids[n]: ids[n] for n in _SIGN_SYMMETRIC if n in ids}
        for a, b in _SIGN_PAIRS:
            if a in ids and b in ids:
                out[ids[a]], out[ids[b]] = ids[b], ids[a]
        return out

    def digests(self, image_digests: list[str], labels: np.ndarray, class_names: list[str]) -> list[str]:
        """The digest of every row: each image's ``count`` views, view 0 first (its own digest)."""
        mirror = self.mirror(class_names)
        return [d if j == 0 else f"{d}|{self._view(d, j, mirror.get(int(y)), int(y))}"
                for d, y in zip(image_digests, labels) for j in range(self.count)]

    def _view(self, digest: str, j: int, mirrored_as: int | None, label: int) -> str:
        if self.test and j == 1 and self.flips == "any":  # test time: the mirror image first, whole
            return _spelled(1, "1", (0.0, 0.0, 1.0, 1.0), 0.0, (1.0, 1.0, 1.0))
        rng = np.random.default_rng(int(hashlib.sha256(f"{digest}/{j}/{AUGMENT_VERSION}".encode()).hexdigest()[:16],
                                        16))
        area, ratio = rng.uniform(*AREA), np.exp(rng.uniform(*np.log(RATIO)))
        w, h = min(1.0, np.sqrt(area * ratio)), min(1.0, np.sqrt(area / ratio))
        x0, y0 = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
        flip = bool(rng.random() < 0.5) and mirrored_as is not None
        angle = rng.uniform(-self.rotate, self.rotate) if self.rotate else 0.0
        colour = rng.uniform(1 - COLOUR, 1 + COLOUR, size=3)
        f = "0" if not flip else ("1" if mirrored_as == label else f"m{mirrored_as}")  # m<class>: the label changes
        return _spelled(j, f, (x0, y0, x0 + w, y0 + h), angle, colour)


def _spelled(j: int, flip: str, box, angle: float, colour) -> str:
    """View ``j``'s transform as its row digest spells it (what ``apply`` reads back)."""
    x0, y0, x1, y1 = box
    return (f"v{j}:f{flip}:{x0:.4f},{y0:.4f},{x1:.4f},{y1:.4f}:r{angle:.2f}:"
            f"c{colour[0]:.3f},{colour[1]:.3f},{colour[2]:.3f}")


def views_for(dataset_name: str, count: int, test: bool = False) -> Views:
    """The views a dataset allows (its flips and rotation), ``count`` of them per image."""
    if not isinstance(count, int) or count < 1:
        raise BottleneckError(f"--views {count} is not a number of views of at least 1",
                              "e.g. --views 4: each training image and 3 seeded variations of it")
    return Views(count, FLIPS.get(dataset_name, "none"), ROTATE.get(dataset_name, 0.0), test)


def mirrors_every_class(dataset_name: str) -> bool:
    """Whether every class of the dataset is itself in a mirror (so test view 1 is the mirror image)."""
    return FLIPS.get(dataset_name) == "any"


def split_digest(digest: str) -> tuple[str, str | None]:
    """(the image's own digest, the view's transform or None for view 0)."""
    image, _, view = digest.partition("|")
    return image, view or None


def label_of(digest: str, label: int) -> int:
    """The class of a row: the image's, or its mirror class for a flip that maps it."""
    view = split_digest(digest)[1]
    if view is None:
        return label
    flip = view.split(":")[1]
    return int(flip[2:]) if flip.startswith("fm") else label


def apply(image, view: str):
    """``image`` (PIL) transformed as the view's digest part says."""
    from PIL import Image, ImageEnhance

    _, flip, box, rot, colour = view.split(":")
    if flip != "f0":
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    angle = float(rot[1:])
    if angle:
        image = image.rotate(angle, resample=Image.BILINEAR, fillcolor=_edge_colour(image))
    w, h = image.size
    x0, y0, x1, y1 = (float(v) for v in box.split(","))
    left, top = min(w - 1, int(round(x0 * w))), min(h - 1, int(round(y0 * h)))
    image = image.crop((left, top, max(left + 1, int(round(x1 * w))), max(top + 1, int(round(y1 * h)))))
    b, c, s = (float(v) for v in colour[1:].split(","))
    for enhance, factor in ((ImageEnhance.Brightness, b), (ImageEnhance.Contrast, c), (ImageEnhance.Color, s)):
        image = enhance(image).enhance(factor)
    return image


def _edge_colour(image) -> tuple[int, ...]:
    """The mean colour of the image's border: what a rotation fills its corners with."""
    a = np.asarray(image)
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return tuple(int(v) for v in border.mean(axis=0))


_VIEW_SUFFIX = re.compile(r"#(v\d+|hflip)$")


def image_id(source_id: str) -> tuple[str, str]:
    """(the image's own id, its view) of a cached row's id: the extraction appends ``#VIEW`` to
    the id of every view but the image itself. Ids may hold ``#`` themselves (CIFAR's
    ``data_batch_1#17``, the lab's ``train.p#0``): only a view's suffix is taken off."""
    m = _VIEW_SUFFIX.search(source_id)
    return (source_id[:m.start()], m.group(1)) if m else (source_id, "")


def join(target, split, fs) -> np.ndarray:
    """The target of each row of ``fs`` (views included): the image's, by source id, with
    the class a mapped flip gives (``label_of``)."""
    y = target.join(split, [image_id(sid)[0] for sid in fs.source_ids])
    if not fs.settings.get("augment_views"):
        return y
    return np.array([label_of(d, int(v)) for d, v in zip(fs.digests, y)], dtype=y.dtype)


def averaged(fs):
    """``fs`` with one row per image: the mean of its views' features (test-time averaging);
    ``fs`` itself when it has one view per image."""
    k = int(fs.settings.get("augment_views") or 1)
    if k == 1:
        return fs
    ids = [image_id(sid)[0] for sid in fs.source_ids]
    n = len(ids) // k
    # rows are each image's views in order (extraction writes them so); a skipped unreadable image breaks that
    if len(ids) % k or any(ids[i] != ids[i - i % k] for i in range(len(ids))):
        raise BottleneckError(f"{fs.path.name} does not hold {k} views of every image (an unreadable image skipped?)",
                              "drop --test-views, or --skip-bad-images")
    features = fs.features.reshape(n, k, *fs.features.shape[1:]).mean(axis=1)
    keep = slice(0, len(ids), k)
    return dataclasses.replace(fs, features=features, labels=fs.labels[keep], source_ids=ids[::k],
                               groups=list(fs.groups)[keep], digests=list(fs.digests)[keep],
                               info={**fs.info, "averaged_views": k})
