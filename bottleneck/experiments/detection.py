"""Detection on cached feature maps: a one-stage detector trained on the CPU.

The frozen base runs once per scene and its pyramid levels are cached as segmentation
caches them (``extraction.maps``: one HDF5 chunk per scene and level, float16, the same
fingerprints, checksums, resume and locks). Scenes are letterboxed to one canvas (long side
``--image-size``, the scenes' own by default). Training scenes whose every object has a
mirror image (GTSRB's flip table: turn left <-> turn right, a symmetric sign itself; a
speed limit never) are cached mirrored too, in a file of their own, their classes mapped.

The detector (``learn.detector``) trains on windows of the cached maps, read lazily, and
predicts whole test scenes; its detections, mapped back to each scene's pixels, are scored
with COCO's evaluation (``core.boxes.coco_metrics``).
"""
from __future__ import annotations

import dataclasses
import json
import time

import numpy as np

from bottleneck.cache.maps import MapReader
from bottleneck.cache.store import canonical_dataset, fingerprint
from bottleneck.core import determinism
from bottleneck.core.boxes import coco_evaluation, mirrored, to_image
from bottleneck.core.errors import BottleneckError
from bottleneck.data.labelmaps import letterbox_scale
from bottleneck.data.sources import Dataset
from bottleneck.experiments.fitted import Fitted
from bottleneck.experiments.segmentation import check_map_head
from bottleneck.extraction.maps import frame_size, plan_maps
from bottleneck.extraction.plan import Plan, RunOptions
from bottleneck.extraction.run import engine_session, run, stages_of
from bottleneck.extraction.views import FLIPS, Views, image_id
from bottleneck.learn.detector import (
    BACKGROUND,
    anchor_boxes,
    anchors_per_cell,
    build_detector,
    compile_detector,
    detect,
    match,
    window_batches,
)

# window: the side (canvas pixels, a multiple of 32) of the windows the detector trains on;
# object_share: the part of the windows placed around an object.
DETECTOR_PARAMS = {"epochs": 30, "learning_rate": 1e-3, "batch_size": 8, "window": 256, "width": 64, "depth": 2,
                   "object_share": 0.5, "score_threshold": 0.05}


@dataclasses.dataclass
class DetRun:
    """A detection run, planned: maps of the training scenes, of the mirrored ones, of the test scenes."""

    train: Plan
    mirror: Plan | None
    test: Plan
    target: object
    head: str
    head_params: dict
    seed: int
    class_mirror: dict  # class -> its mirror image's class, for the mirrored rows

    @property
    def key(self) -> str:
        return fingerprint({"train": self.train.settings, "mirror": self.mirror.settings if self.mirror else None,
                            "test": self.test.settings, "target": self.target.name, "head": self.head,
                            "params": self.head_params, "seed": self.seed})


def mirror_table(ds: Dataset, target) -> tuple[dict[int, int], dict[int, int]]:
    """({class of ``target`` -> its mirror image's class}, {sign class -> its mirror's}) for a
    dataset whose mirror images are known (GTSDB: GTSRB's flip table), else two empty dicts.
    A class absent from the first is never mirrored."""
    signs_layout = ds.layout == "gtsdb" or FLIPS.get(canonical_dataset(ds.name)) == "signs"
    if not signs_layout or "signs" not in ds.targets:
        return {}, {}
    signs_task = ds.target("signs").task
    signs = Views(2, "signs").mirror(list(signs_task.class_names))
    if target.name == "signs":
        return signs, signs
    if tuple(target.task.class_names) != tuple(g for g, _ in signs_task.groups):
        return {}, {}
    category_of = {c: k for k, (_, members) in enumerate(signs_task.groups) for c in members}
    cats: dict[int, int] = {}
    for a, b in signs.items():  # a category's mirror image: the category of the mirrored sign (always itself)
        if cats.setdefault(category_of[a], category_of[b]) != category_of[b]:
            raise BottleneckError(f"mirrored signs of category {target.task.class_names[category_of[a]]} fall in "
                                  "two categories", "report this: the flip table and the categories disagree")
    return cats, signs


def plan_detection(base: str, ds: Dataset, per_class, seed: int, target, head: str | None, head_params: dict,
                   flips: bool = True, layer: str | None = None, pooling: str = "avg", **plan_kwargs) -> DetRun:
    params = check_map_head(target, "detection", "detector", head, head_params, DETECTOR_PARAMS, layer, pooling, base)
    if params["window"] % 32 or params["window"] < 64:
        raise BottleneckError(f"window {params['window']} is not a multiple of 32 of at least 64",
                              "the detector trains on windows whose side is a multiple of the coarsest stride")
    if not 0 <= params["object_share"] <= 1 or not 0 <= params["score_threshold"] < 1:
        raise BottleneckError("object_share and score_threshold are between 0 and 1", "fix the parameter")
    keys = ("image_size", "data_dir", "cache_dir", "weights", "weights_dir", "test_fraction", "precision")
    kw = {k: v for k, v in plan_kwargs.items() if k in keys and v is not None}
    tr = plan_maps(base, ds, "train", per_class, seed, target=target.name, **kw)
    kw.update(image_size=tr.recipe.long_side, canvas=tr.recipe.canvas)  # one geometry for every split
    class_mirror, signs = mirror_table(ds, target) if flips else ({}, {})
    mirror = None
    if class_mirror:
        split = tr.samples
        objects = ds.target("signs").values(split)
        ok = [int(i) for i in tr.selected if len(objects[i]) and all(int(c) in signs for c in objects[i][:, 4])]
        if ok:
            mirror = plan_maps(base, ds, "train", per_class, seed, target=target.name, flips="only", only=ok, **kw)
    te = plan_maps(base, ds, "test", None, 0, target=target.name, **kw)
    return DetRun(tr, mirror, te, target, "detector", params, seed, class_mirror)


class _Rows:
    """The rows of several map files as one list (the training scenes, then the mirrored ones)."""

    def __init__(self, readers: list[MapReader]):
        self.readers = readers
        self.where = [(k, r) for k, reader in enumerate(readers) for r in range(len(reader))]

    def __len__(self) -> int:
        return len(self.where)

    def read_windows(self, rows, corners, size, strides):
        parts = [self.readers[self.where[int(r)][0]].read_windows([self.where[int(r)][1]], [c], size, strides)
                 for r, c in zip(rows, corners)]
        return {lv: np.concatenate([p[lv] for p in parts]) for lv in parts[0]}


def _scale(split, index: int, long_side: int) -> tuple[float, float, tuple[int, int]]:
    """(x scale, y scale, (width, height)) of scene ``index`` letterboxed at ``long_side``."""
    w, h = frame_size(split, index)
    return (*letterbox_scale(w, h, long_side), (w, h))


def _in_canvas(objects: np.ndarray, sx: float, sy: float) -> np.ndarray:
    out = np.array(objects, np.float32, copy=True).reshape(-1, 5)
    out[:, [0, 2]] *= sx
    out[:, [1, 3]] *= sy
    return out


def execute_detection(r: DetRun, options: RunOptions | None = None):
    """Extract what is missing, train the detector on windows of the cached maps, score it on
    the whole test scenes. Returns (row, the fitted detector, test scenes' detections)."""
    options = options or RunOptions()
    t0 = time.perf_counter()
    plans = {"train": r.train, "mirror": r.mirror, "test": r.test}
    with engine_session(options):
        sets = {name: run(p, options) for name, p in plans.items() if p is not None}
    extract_seconds = time.perf_counter() - t0
    recipe = r.train.recipe
    canvas, long_side = recipe.canvas, recipe.long_side
    readers = {name: MapReader(fs.path) for name, fs in sets.items()}
    task, p = r.target.task, r.head_params
    try:
        unordered = readers["train"].shapes
        shapes = dict(sorted(unordered.items(), key=lambda kv: -kv[1][0]))  # finest first (HDF5 sorts by name)
        strides = {lv: canvas[0] // shape[0] for lv, shape in shapes.items()}
        grid = {lv: shape[:2] for lv, shape in shapes.items()}
        per_cell = anchors_per_cell()
        anchors = anchor_boxes(grid, strides)
        train_names = ["train"] + (["mirror"] if "mirror" in sets else [])
        rows = _Rows([readers[n] for n in train_names])
        targets_of = _training_targets(r, [sets[n] for n in train_names], anchors, grid, per_cell, long_side, canvas)
        determinism.seed_everything(r.seed)
        model = build_detector({lv: s[-1] for lv, s in shapes.items()}, task.width, per_cell, p["width"], p["depth"],
                               strides)
        compile_detector(model, p["learning_rate"])
        t = time.perf_counter()
        batches = window_batches(rows, np.arange(len(rows)), targets_of, strides, canvas, p["window"],
                                 p["batch_size"], task.width, r.seed, p["object_share"])
        history = model.fit(batches, epochs=p["epochs"], verbose=0).history
        train_seconds = time.perf_counter() - t
        t = time.perf_counter()
        truth, found = _score(model, readers["test"], r.test, sets["test"], r.target, anchors, long_side,
                              p["score_threshold"])
        predict_seconds = time.perf_counter() - t
    finally:
        for reader in readers.values():
            reader.close()
    # a size no test object has (no small sign) has no AP: left out, as results rows hold numbers only
    evaluated, curves = coco_evaluation(truth, found, task.class_names, task.groups)
    metrics = {k: round(v, 6) for k, v in evaluated.items() if np.isfinite(v)}
    tr = sets["train"]
    n_mirror = len(sets["mirror"]) if "mirror" in sets else 0
    row = {
        "base": r.train.settings["base"], "dataset": r.train.settings["dataset"], "target": r.target.name,
        "task": task.kind, "per_class": r.train.settings["per_class"], "draw": r.train.settings.get("draw"),
        "seed": r.seed, "head": "detector", "weights": r.train.settings["weights"],
        "layer": ",".join(r.train.settings["levels"]), "pooling": "none", "image_size": long_side,
        "precision": r.train.settings["precision"], "views": "scene" + (",hflip" if n_mirror else ""),
        "n_train": len(tr) + n_mirror, "n_mirrored": n_mirror, "n_val": 0, "n_test": len(sets["test"]),
        "n_objects_test": int(sum(len(t) for t in truth)), "n_classes": task.width, "metric": "map50",
        "score": metrics["map50"], "metrics": metrics,
        "extracted_images": sum(fs.info.get("extracted", 0) for fs in sets.values()),
        "extract_seconds": round(extract_seconds, 3), "extract_stages": stages_of(list(sets.values())),
        "train_seconds": round(train_seconds, 3), "predict_seconds": round(predict_seconds, 3),
        "epochs_run": len(history["loss"]), "final_loss": round(float(history["loss"][-1]), 6),
        "cache_bytes": sum(fs.path.stat().st_size for fs in sets.values()),
        "train_cache": tr.path.name, "test_cache": sets["test"].path.name,
        "head_params": json.dumps(p, sort_keys=True),
    }
    return Fitted(row, model, tr, sets["test"], truth, found, history, {"curves": curves}), found


SHOWN_SCENES, SHOWN_SIDE = 6, 680  # test scenes kept for the report's pictures, and their long side there


def shown_scenes(r: DetRun, fs, truth) -> tuple[list[int], list[np.ndarray], list[float]]:
    """A few test scenes for pictures (spread over those with objects): (rows, images at most
    SHOWN_SIDE pixels a side, their scale against the scene)."""
    from PIL import Image

    with_objects = [k for k, t in enumerate(truth) if len(t)] or list(range(len(truth)))
    rows = sorted({with_objects[int(k)] for k in np.linspace(0, len(with_objects) - 1,
                                                                min(SHOWN_SCENES, len(with_objects))).round()})
    split = r.test.samples
    where = {sid: i for i, sid in enumerate(split.ids)}
    images, scales = [], []
    for row in rows:
        image = split.load(where[fs.source_ids[row]])
        scale = min(1.0, SHOWN_SIDE / max(image.size))
        if scale < 1:
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
        images.append(np.asarray(image))
        scales.append(scale)
    return rows, images, scales


def _training_targets(r: DetRun, sets, anchors, grid, per_cell: int, long_side: int, canvas):
    """row -> (its objects in canvas pixels, {level: (classes (h, w, A), deltas (h, w, A, 4))}),
    matched once per row and kept sparse (the anchors that are not background: memory stays
    flat in the number of scenes)."""
    split = r.train.samples
    objects = r.target.values(split)
    where = {sid: i for i, sid in enumerate(split.ids)}
    ids = [sid for fs in sets for sid in fs.source_ids]
    small = np.int8 if r.target.task.width < 127 else np.int16
    kept: dict[int, tuple] = {}
    sizes = {lv: h * w * per_cell for lv, (h, w) in grid.items()}
    n_anchors = len(anchors)

    def targets_of(row: int):
        if row not in kept:
            sid, view = image_id(ids[row])
            i = where[sid]
            sx, sy, _ = _scale(split, i, long_side)
            obj = _in_canvas(objects[i], sx, sy)
            if view == "hflip":
                obj = mirrored(obj, canvas[1], r.class_mirror)
            classes, deltas = match(anchors, obj)
            marked = np.flatnonzero(classes != BACKGROUND)  # objects and ignored anchors: a few hundred at most
            kept[row] = (obj, marked, classes[marked].astype(small), deltas[marked])
        obj, marked, marked_classes, marked_deltas = kept[row]
        classes = np.full(n_anchors, BACKGROUND, np.int16)
        classes[marked] = marked_classes
        deltas = np.zeros((n_anchors, 4), np.float32)
        deltas[marked] = marked_deltas
        out, start = {}, 0
        for lv, (h, w) in grid.items():
            n = sizes[lv]
            out[lv] = (classes[start:start + n].astype(np.int16).reshape(h, w, per_cell),
                       deltas[start:start + n].reshape(h, w, per_cell, 4))
            start += n
        return obj, out

    return targets_of


def _score(model, reader: MapReader, plan: Plan, fs, target, anchors, long_side: int, score_threshold: float):
    """Each test scene's true objects and detections, in the scene's own pixels."""
    split = plan.samples
    objects = target.values(split)
    where = {sid: i for i, sid in enumerate(split.ids)}
    truth, found = [], []
    for row in range(len(reader)):
        i = where[fs.source_ids[row]]
        sx, sy, (w, h) = _scale(split, i, long_side)
        (det,) = detect(model, reader.read([row]), anchors, score_threshold)
        to_image(det, sx, sy, w, h)
        truth.append(np.asarray(objects[i], np.float32))
        found.append(det)
    return truth, found

