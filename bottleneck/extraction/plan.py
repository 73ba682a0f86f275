"""Planning an extraction: what will be made, decided before anything runs.

``plan`` draws the samples, hashes their content, gathers every setting that shapes the
features and so names the cache file; every check that can fail fails here. A plan
carries its product: ``PooledFeatures`` (one pooled vector per image, the classic
bottleneck features) or ``maps.FeatureMaps`` (a base's pyramid of feature maps).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from bottleneck.bases.build import (
    build_feature_model,
    check_compute,
    check_layer,
    check_pooling,
    compute_dtype,
    resolve_layer,
    sized_canvas,
)
from bottleneck.bases.registry import BaseSpec, get_base, resolve_image_size
from bottleneck.bases.weights import weights_identity
from bottleneck.cache.store import cache_path, canonical_dataset
from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.core.procs import exit_if_importing_main
from bottleneck.core.sampling import unlabeled_draw
from bottleneck.data.datasets import load_dataset
from bottleneck.data.images import RESIZES, resize
from bottleneck.data.sources import Dataset, Split
from bottleneck.extraction import views as augment
from bottleneck.extraction.model import ModelOrder

log = logging.getLogger("bottleneck")

# Bump when the way features are computed changes (input dtype, batching), so old caches are not mixed in.
EXTRACTOR_VERSION = 2

HOLDOUT_SEED = 0  # --test-fraction's held-out part is the same for every draw seed of a grid
ENGINES = ("local", "ray")


class PooledFeatures:
    """The classic recipe: each image resized to a square and run through the base, which
    gives one pooled feature vector per image (``features``, float32).

    ``source`` (height, width): every image has this size and is resized inside the model,
    on the device, rather than on the host (``--resize device``): the feed then ships the
    images' own pixels (32 x 32 for CIFAR-10, 49 times fewer bytes than 224 x 224).

    ``each_size``: images of any size (``--resize device-mixed``). One that fits in the
    input size travels as it is, in a sized canvas (``bases.sized_canvas``), and the model
    resizes it by its own scale; a larger one is resized on the host first, as by default
    (the model's resize of a full-size image is then the identity)."""

    views = ("",)  # one view of each image: itself
    dtypes = {"features": "float32"}
    per_row_chunks = False

    def __init__(self, size: int, source: tuple[int, int] | None = None, crop: float | None = None,
                 views: int = 1, each_size: bool = False):
        self.size, self.source, self.crop, self.each_size = size, source, crop, each_size
        # view 0: the image; views 1..K-1: the transform written in each row's digest (augment.py)
        self.views = ("",) + tuple(f"v{j}" for j in range(1, views))

    @property
    def input_shape(self) -> tuple[int, int]:
        if self.each_size:
            return self.size + 1, self.size  # the canvas and its size row
        return self.source or (self.size, self.size)

    def decode(self, split: Split, index: int, digest: str):
        digest, view = augment.split_digest(digest)
        if view is not None:  # an augmented view: the image (cropped to its box first), transformed
            return augment.apply(self._decode(split, index, digest, full=True), view)
        return self._decode(split, index, digest)

    def _decode(self, split: Split, index: int, digest: str, full: bool = False):
        if self.crop is not None:  # the row's digest carries its box: "<content>:x1,y1,x2,y2"
            content, box = digest.split(":")
            return crop_to_box(split.load(index, None, content), box_from_text(box), self.crop)
        if full:
            return split.load(index, None, digest)
        if self.source is None:
            return split.load(index, self.size, digest)  # large JPEGs decoded at a reduced scale
        image = split.load(index, None, digest)
        if image.size[::-1] != tuple(self.source):
            raise DatasetError(f"{split.source.name(index)} is {image.size[0]} x {image.size[1]} pixels, but "
                               f"--resize device needs every image at one size ({self.source[1]} x "
                               f"{self.source[0]}, the first image's)",
                               "use --resize device-mixed (images of any size), or drop --resize device")
        return image

    def fit(self, image, view: str) -> np.ndarray:
        if self.each_size:
            fits = image.size[0] <= self.size and image.size[1] <= self.size
            return sized_canvas(np.asarray(image, np.uint8) if fits else resize(image, self.size), self.size)
        return np.asarray(image, np.uint8) if self.source else resize(image, self.size)

    def pixels(self, split: Split, index: int, digest: str, view: str = "") -> np.ndarray:
        return self.fit(self.decode(split, index, digest), view)

    def build(self, order: ModelOrder):
        s = order.settings
        with compute_dtype(s.get("compute", "float32")):
            return build_feature_model(order.spec, s["image_size"], order.weights_path, s["layer"], s["pooling"],
                                       source_size=self.source, each_size=self.each_size)

    def outputs(self, out) -> dict[str, np.ndarray]:
        return {"features": np.asarray(out, np.float32)}


def box_text(box) -> str:
    """A box as a cropped row's digest records it (6 decimals): what its crop is made from."""
    return ",".join(f"{v:.6f}" for v in box)


def box_from_text(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def crop_to_box(image, box: list[float], margin: float):
    """The part of ``image`` inside ``box`` (x1, y1, x2, y2 as fractions of its width and
    height), grown by ``margin`` times the box's size on each side, within the image."""
    w, h = image.size
    x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    left, top = max(0, math.floor(x1 - mx)), max(0, math.floor(y1 - my))  # outward: the margin is never cut
    right, bottom = min(w, max(left + 1, math.ceil(x2 + mx))), min(h, max(top + 1, math.ceil(y2 + my)))
    return image.crop((left, top, right, bottom))


@dataclasses.dataclass
class Plan:
    """What one extraction makes: the samples, the settings that shape their features, the file."""

    spec: BaseSpec
    dataset: Dataset
    split: str
    selected: np.ndarray  # indices into the split, sorted
    digests: list[str]  # content hash of each row (image, or image and view)
    settings: dict
    path: Path
    weights_path: Path | None
    short: dict  # classes (or labels) that had fewer images than per_class: {name: how many}
    recipe: object = None  # PooledFeatures, or segmentation's FeatureMaps

    @property
    def samples(self) -> Split:
        return self.dataset.split(self.split)

    @property
    def rows(self) -> list[tuple[int, str]]:
        """(split index, view) of each row the file holds: every selected image in every view."""
        return [(int(i), v) for i in self.selected for v in self.recipe.views]

    @property
    def order(self) -> ModelOrder:
        return ModelOrder(self.spec, self.settings, self.weights_path, self.recipe)

    @property
    def ids(self) -> list[str]:
        s = self.samples
        return [s.ids[i] + (f"#{v}" if v else "") for i, v in self.rows]


@dataclasses.dataclass
class RunOptions:
    """How an extraction runs; none of these changes the features."""

    batch_size: int = 32
    skip_bad_images: bool = False
    progress: bool = True
    workers: int | None = None
    feed: str = "auto"  # threads, processes, or auto: processes for many image files (see feed.choose)
    engine: str = "local"  # local (this process and its feed) or ray (a pool of Ray actors, see cluster.py)
    address: str | None = None  # --engine ray: an existing cluster's address, or None to start one for the run

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise BottleneckError(f"unknown engine {self.engine!r}", f"use one of {', '.join(ENGINES)}")
        if self.engine == "ray" and self.feed != "auto":
            raise BottleneckError(f"--feed {self.feed} is the local engine's: Ray actors each decode their own chunks",
                                  "drop --feed (--workers sets the number of actors)")
        if self.address is not None and self.engine != "ray":
            raise BottleneckError("--address is the address of a Ray cluster: it needs --engine ray",
                                  "add --engine ray, or drop --address")


def plan(base: str, dataset: str | Dataset, split: str = "train", per_class: int | None = None, seed: int = 0, *,
         data_dir: str | Path | None = None, cache_dir: str | Path = "features", weights: str = "imagenet",
         weights_dir: str | Path | None = None, image_size: int | None = None, layer: str | None = None,
         pooling: str = "avg", test_fraction: float | None = None, target: str | None = None,
         resize: str = "host", compute: str = "float32", crop: float | None = None, views: int = 1,
         for_test: bool = False, unlabeled: int | str | None = None) -> Plan:
    """Decide what ``extract`` with these arguments makes, without running a base: every
    check that can fail (base, size, layer, weights, dataset, split, target) fails here.
    ``target`` only says how ``per_class`` draws (per class, or per label of a multi-label
    target); the features are the images', whatever is predicted from them. ``views``: rows
    per image, view 0 the image and the others seeded variations of it (``augment``);
    ``for_test``: they are for test-time averaging (no flip that needs the class).
    ``unlabeled`` (N or "all"): the rows are instead the unlabeled draw beside the labelled
    draw that ``per_class`` and ``seed`` make (``unlabeled_rows``)."""
    exit_if_importing_main("an extraction")  # every extraction, train and compare plans first
    spec = get_base(base)
    size = resolve_image_size(spec, image_size)
    check_pooling(pooling)
    check_layer(spec, size, layer)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    if test_fraction is not None:
        ds = ds.with_test_fraction(test_fraction, HOLDOUT_SEED)
    s = ds.split(split)
    drawn_for = ds.target(target)
    selected, short = drawn_for.draw(s, per_class, seed)
    if unlabeled is not None:
        if views > 1:
            raise BottleneckError("unlabeled rows are drawn as one view each", "drop --views, or --unlabeled")
        selected, short = unlabeled_rows(ds, split, selected, unlabeled, seed), {}
    weights_id, weights_path = weights_identity(spec, weights, weights_dir)
    if resize not in RESIZES:
        raise BottleneckError(f"unknown --resize {resize!r}", "use host (PIL, the default), device (in the model, "
                                                              "images of one size) or device-mixed (any sizes)")
    # On the device, every image must have the first one's size (checked as each is decoded).
    source = None if resize != "device" or not len(selected) else s.load(int(selected[0])).size[::-1]
    digests = s.digests(selected)
    if crop is not None:
        digests = [f"{d}:{box}" for d, box in zip(digests, crop_boxes(ds, s, selected, crop, resize))]
    aug = augment.views_for(canonical_dataset(ds.name), views, for_test)
    if views > 1:
        if resize != "host":
            raise BottleneckError(f"--views and --resize {resize} do not go together (views differ in size)",
                                  f"drop --resize {resize}")
        if drawn_for.task.kind != "single_label":
            raise BottleneckError(f"--views are for one class per image; target {drawn_for.name} is "
                                  f"{drawn_for.task.kind}", "drop --views (a view can move a box or mirror a label)")
        digests = aug.digests(digests, s.labels[np.asarray(selected, dtype=np.int64)], ds.class_names)
    ids = "\n".join(s.ids[i] for i in selected)
    settings = {
        "dataset": canonical_dataset(ds.name), "dataset_id": ds.identity(split), "split": split,
        "test_fraction": test_fraction,
        "base": spec.name, "weights": weights_id, "layer": resolve_layer(spec, layer), "pooling": pooling,
        "image_size": size, "resize": RESIZES[resize],
        "preprocessing": spec.preprocessing,
        "per_class": per_class, "seed": seed if per_class is not None else None,
        "draw": drawn_for.draw_key if per_class is not None else None,
        "selection": hashlib.sha256(ids.encode()).hexdigest()[:16],
        "content": hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16],
        "extractor": EXTRACTOR_VERSION,
    }
    if unlabeled is not None:  # recorded only for the unlabeled draw, so other files keep their names
        settings["unlabeled"] = unlabeled
    if source is not None:
        settings["source_size"] = list(source)
    check_compute(compute)
    if compute != "float32":  # recorded only when not the default, so earlier files keep their names
        settings["compute"] = compute
    if crop is not None:  # each row's box is in its digest, so in "content" too
        settings["crop"] = f"box + {crop:g} margin"
    if views > 1:  # each row's transform is in its digest: these only say how many, and how they were drawn
        settings["augment"], settings["augment_views"] = aug.description, views
    return Plan(spec, ds, split, selected, digests, settings, cache_path(cache_dir, settings), weights_path, short,
                PooledFeatures(size, source, crop, views, each_size=resize == "device-mixed"))


def unlabeled_count(unlabeled) -> int | str | None:
    """--unlabeled as given (a whole number >= 0, or "all") as a run takes it: None for none (0 or
    None), else N or "all"; anything else is an error."""
    if unlabeled is None or (unlabeled == 0 and not isinstance(unlabeled, bool)):
        return None
    if unlabeled == "all" or (isinstance(unlabeled, (int, np.integer)) and not isinstance(unlabeled, bool)
                              and unlabeled > 0):
        return unlabeled if unlabeled == "all" else int(unlabeled)
    raise BottleneckError(f"--unlabeled {unlabeled!r} is not a whole number >= 0 or 'all'",
                          "e.g. --unlabeled 100 (per class, from the rest of the training split), or all")


def unlabeled_rows(ds: Dataset, split: str, labelled: np.ndarray, unlabeled: int | str, seed: int) -> np.ndarray:
    """The split's unlabeled draw beside ``labelled``: N per class sizes it at N times the number
    of classes, drawn from the pool as a whole (``sampling.unlabeled_draw``: seeded, nested, no
    label read); "all" is every image outside the labelled draw. Never the test split."""
    if split == "test":
        raise BottleneckError("unlabeled images come from the training split, never the test split",
                              "draw them from --split train")
    if unlabeled_count(unlabeled) is None:
        raise BottleneckError(f"--unlabeled {unlabeled!r} is not a whole number >= 1 or 'all'",
                              "e.g. --unlabeled 100 (images per class, from the rest of the training split) or all")
    s = ds.split(split)
    count = None if unlabeled == "all" else int(unlabeled) * max(1, len(ds.class_names))
    chosen = unlabeled_draw(len(s), labelled, count, seed)
    if not len(chosen):
        raise BottleneckError(f"the {split} split of {ds.name} has no image outside the labelled draw",
                              "draw fewer labelled images (--per-class), or drop --unlabeled")
    if count is not None and len(chosen) < count:
        log.warning("--unlabeled %s asks for %d images; the %s split has %d outside the labelled draw (all of them "
                    "are used)", unlabeled, count, split, len(chosen))
    return chosen


def check_crop(ds: Dataset, crop: float, resize: str) -> None:
    """``--crop`` needs a dataset that gives boxes, a margin in [0, 1] and the host's resize."""
    if "box" not in ds.targets:
        raise BottleneckError(f"dataset {ds.name} gives no boxes to crop to", "drop --crop (GTSRB's CSVs give them)")
    if not 0 <= crop <= 1:
        raise BottleneckError(f"--crop {crop} is not a margin between 0 and 1", "e.g. --crop 0.1: 10% on each side")
    if resize != "host":
        raise BottleneckError(f"--crop and --resize {resize} do not go together (crops differ in size)",
                              f"drop --resize {resize}")


def crop_boxes(ds: Dataset, s: Split, selected, crop: float, resize: str) -> list[str]:
    """The box of each selected row as a cropped row's digest records it (``box_text``): what its
    crop is made from, here and in ``finetune --crop``."""
    check_crop(ds, crop, resize)
    return [box_text(box) for box in ds.target("box").values(s)[np.asarray(selected, dtype=np.int64)]]
