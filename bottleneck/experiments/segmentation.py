"""Dense prediction on cached feature maps: a decoder trained on the CPU.

The frozen base runs once per frame (and once more per flipped training frame) and its
feature maps at several depths (the base's pyramid, e.g. strides 8, 16 and 32) are cached
in one HDF5 file per (images, recipe), one HDF5 chunk per image and level, stored in
float16 by default. A small decoder then fuses the levels top-down (FPN-like), upsamples to
the label map's size and is trained with cross-entropy that ignores Void, reading the maps
lazily, batch by batch: memory stays flat in the number of images.

Geometry: every image is resized (bilinear, aspect kept) so that its long side is the
``--image-size`` (CamVid's native 480 by default) and padded right and bottom with zeros to
one canvas whose sides are multiples of 32; its label map is resized with nearest neighbour
only and padded with Void, so padding is never trained on or scored. Metrics are computed
at each label map's own full resolution.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from bottleneck.cache.maps import MapReader
from bottleneck.cache.store import fingerprint
from bottleneck.core import determinism
from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.core.tasks import confusion_matrix
from bottleneck.data.labelmaps import letterbox_labels, read_label_map, scaled_size
from bottleneck.data.sources import Dataset, file_path
from bottleneck.experiments.fitted import Fitted
from bottleneck.extraction.maps import plan_maps
from bottleneck.extraction.plan import Plan, RunOptions
from bottleneck.extraction.run import engine_session, run, stages_of
from bottleneck.extraction.views import image_id
from bottleneck.learn.decoder import (
    build_decoder,
    map_batches,
    median_frequency_weights,
)


@dataclasses.dataclass
class SegRun:
    """A segmentation run, planned: maps of the training (with flips), validation and test frames."""

    train: Plan
    val: Plan | None
    test: Plan
    target: object
    head: str
    head_params: dict
    seed: int

    @property
    def key(self) -> str:
        return fingerprint({"train": self.train.settings, "val": self.val.settings if self.val else None,
                            "test": self.test.settings, "target": self.target.name, "head": self.head,
                            "params": self.head_params, "seed": self.seed})


# loss_stride: the decoder is trained against the label maps at 1/loss_stride of the canvas (nearest
# neighbour, Void kept), and predicts at the label maps' full resolution when scored.
DECODER_PARAMS = {"epochs": 40, "learning_rate": 1e-3, "batch_size": 8, "patience": 6, "width": 96,
                  "class_weights": "none", "loss_stride": 4}


def check_map_head(target, kind: str, head_name: str, head: str | None, head_params: dict, defaults: dict,
                   layer: str | None, pooling: str, base: str) -> dict:
    """The checks a head on cached feature maps shares (segmentation's decoder, the detector):
    its name, its parameters' names, no pooled-feature options. Returns the parameters with
    ``defaults`` for those not given."""
    if head not in (None, head_name):
        raise BottleneckError(f"the {head} head cannot learn target {target.name} ({kind})",
                              f"{kind} trains the {head_name} head (--head {head_name}, the default)")
    unknown = set(head_params) - set(defaults)
    if unknown:
        raise BottleneckError(f"the {head_name} head has no parameter {', '.join(sorted(unknown))}",
                              f"its parameters are: {', '.join(defaults)}")
    if layer is not None or pooling != "avg":
        raise BottleneckError(f"--layer and --pooling are for pooled features; {kind} caches the base's pyramid "
                              "levels", f"drop them (the levels of {base}: `bottleneck bases`)")
    return {**defaults, **head_params}


def plan_segmentation(base: str, ds: Dataset, per_class, seed: int, target, head: str | None, head_params: dict,
                      flips: bool = True, layer: str | None = None, pooling: str = "avg", **plan_kwargs) -> SegRun:
    params = check_map_head(target, "segmentation", "decoder", head, head_params, DECODER_PARAMS, layer, pooling,
                            base)
    if params["loss_stride"] not in (1, 2, 4, 8):
        raise BottleneckError(f"loss_stride {params['loss_stride']} is not 1, 2, 4 or 8",
                              "the decoder trains against label maps at 1/1, 1/2, 1/4 or 1/8 of the canvas")
    if params["class_weights"] not in ("none", "median-frequency"):
        raise BottleneckError(f"unknown class weights {params['class_weights']!r}", "use none or median-frequency")
    keys = ("image_size", "data_dir", "cache_dir", "weights", "weights_dir", "test_fraction", "precision")
    kw = {k: v for k, v in plan_kwargs.items() if k in keys and v is not None}
    tr = plan_maps(base, ds, "train", per_class, seed, flips=flips, target=target.name, **kw)
    kw["image_size"] = tr.recipe.long_side  # one geometry for every split
    val = plan_maps(base, ds, "val", None, 0, target=target.name, **kw) if "val" in ds.splits else None
    te = plan_maps(base, ds, "test", None, 0, target=target.name, **kw)
    for other in (val, te):
        if other is not None and other.recipe.canvas != tr.recipe.canvas:
            raise DatasetError(f"the {other.split} frames need a {other.recipe.canvas} canvas, the training frames "
                               f"{tr.recipe.canvas}", "give the splits frames of one size (or one aspect)")
    return SegRun(tr, val, te, target, "decoder", params, seed)


def _labels_for(plan: Plan, target, reader_ids: list[str]):
    """row -> letterboxed label map (flipped for flipped rows)."""
    task = target.task
    split = plan.samples
    maps = target.values(split)
    where = {sid: i for i, sid in enumerate(split.ids)}
    recipe = plan.recipe
    cache: dict[int, np.ndarray] = {}

    def labels_of(row: int) -> np.ndarray:
        sid, view = image_id(reader_ids[row])
        i = where[sid]
        if i not in cache:
            raw = read_label_map(Path(maps[i]), file_path(split, i), task.width, task.void)
            cache[i] = letterbox_labels(raw, recipe.long_side, recipe.canvas, task.void)
            if len(cache) > 64:  # bounded: memory stays flat
                cache.pop(next(iter(cache)))
        labels = cache[i]
        return labels[:, ::-1] if view == "hflip" else labels

    return labels_of


def _to_void_255(labels: np.ndarray, void: int) -> np.ndarray:
    return np.where(labels == void, 255, labels).astype(np.uint8)


def execute_segmentation(r: SegRun, options: RunOptions | None = None):
    """Extract what is missing, train the decoder on the cached maps, score it on the test
    frames at full label resolution. Returns (row, decoder, per-frame predictions callback)."""
    import keras

    options = options or RunOptions()
    t0 = time.perf_counter()
    with engine_session(options):
        sets = {name: run(p, options) for name, p in (("train", r.train), ("val", r.val), ("test", r.test)) if p}
    extract_seconds = time.perf_counter() - t0
    task = r.target.task
    readers = {name: MapReader(fs.path) for name, fs in sets.items()}
    try:
        labels = {name: _labels_for(getattr(r, name), r.target, sets[name].source_ids) for name in sets}
        p = r.head_params
        stride = int(p["loss_stride"])  # nearest-neighbour subsampling keeps every label a real class (or Void)
        void_labels = {name: (lambda row, f=labels[name]: _to_void_255(f(row), task.void)[stride // 2::stride,
                                                                                           stride // 2::stride])
                       for name in sets}
        weights = np.ones(task.width)
        if p["class_weights"] == "median-frequency":
            weights = median_frequency_weights((void_labels["train"](i) for i in range(len(readers["train"]))),
                                               task.width, 255)
        determinism.seed_everything(r.seed)
        canvas = r.train.recipe.canvas
        train_shape = (canvas[0] // stride, canvas[1] // stride)
        decoder = build_decoder(readers["train"].shapes, task.width, train_shape, p["width"])
        decoder.compile(keras.optimizers.Adam(p["learning_rate"]), "sparse_categorical_crossentropy",
                        weighted_metrics=[])
        t = time.perf_counter()
        train_rows = np.arange(len(readers["train"]))
        fit_kw = {}
        if "val" in readers:
            fit_kw["validation_data"] = map_batches(readers["val"], np.arange(len(readers["val"])), void_labels["val"],
                                                 p["batch_size"], False, r.seed, weights)
            fit_kw["callbacks"] = [keras.callbacks.EarlyStopping(patience=p["patience"], restore_best_weights=True)]
        history = decoder.fit(map_batches(readers["train"], train_rows, void_labels["train"], p["batch_size"], True,
                                       r.seed, weights), epochs=p["epochs"], verbose=0, **fit_kw).history
        train_seconds = time.perf_counter() - t
        if stride != 1:  # the same weights, predicting at the full canvas
            full = build_decoder(readers["train"].shapes, task.width, canvas, p["width"])
            full.set_weights(decoder.get_weights())
            decoder = full
        confusion, predict = _score(decoder, readers["test"], r.test, sets["test"], r.target, p["batch_size"])
    finally:
        for reader in readers.values():
            reader.close()
    metrics = {k: round(v, 6) for k, v in task.metrics(confusion).items()}
    tr = sets["train"]
    size = sum(fs.path.stat().st_size for fs in sets.values())
    row = {
        "base": r.train.settings["base"], "dataset": r.train.settings["dataset"], "target": r.target.name,
        "task": task.kind, "per_class": r.train.settings["per_class"], "draw": r.train.settings.get("draw"),
        "seed": r.seed, "head": "decoder", "weights": r.train.settings["weights"],
        "layer": ",".join(r.train.settings["levels"]), "pooling": "none",
        "image_size": r.train.recipe.long_side, "precision": r.train.settings["precision"],
        "views": ",".join(v or "frame" for v in r.train.recipe.views),
        "n_train": len(tr), "n_val": len(sets["val"]) if "val" in sets else 0, "n_test": len(sets["test"]),
        "n_classes": task.width, "metric": "miou", "score": metrics["miou"], "metrics": metrics,
        "extracted_images": sum(fs.info.get("extracted", 0) for fs in sets.values()),
        "extract_seconds": round(extract_seconds, 3), "extract_stages": stages_of(list(sets.values())),
        "train_seconds": round(train_seconds, 3),
        "epochs_run": len(history["loss"]), "cache_bytes": size,
        "train_cache": tr.path.name, "test_cache": sets["test"].path.name,
        "head_params": json.dumps(p, sort_keys=True),
    }
    return Fitted(row, decoder, tr, sets["test"], confusion), predict, history


def frame_prediction(probs: np.ndarray, shape: tuple[int, int], long_side: int) -> np.ndarray:
    """The class of each pixel of a frame of ``shape`` (height, width), from the decoder's
    probabilities over its letterboxed canvas: the frame's part of the canvas, resized back
    (bilinear) to the frame's own resolution, then the most probable class."""
    h0, w0 = shape
    w, h = scaled_size(w0, h0, long_side)
    probs = probs[:h, :w]
    if (h, w) != (h0, w0):
        from keras import ops

        probs = np.asarray(ops.image.resize(probs[None], (h0, w0), interpolation="bilinear"))[0]
    return probs.argmax(axis=-1).astype(np.uint8)


def _score(decoder, reader: MapReader, plan: Plan, fs, target, batch_size: int):
    """The confusion matrix over every test frame at its label map's own resolution, and a
    function giving (image, truth, prediction) of one test frame for pictures."""
    task = target.task
    split = plan.samples
    maps = target.values(split)
    where = {sid: i for i, sid in enumerate(split.ids)}
    confusion = np.zeros((task.width, task.width), np.int64)
    kept: dict[int, np.ndarray] = {}
    show = set(np.linspace(0, len(reader) - 1, min(8, len(reader))).round().astype(int).tolist())  # spread out

    for start in range(0, len(reader), batch_size):
        rows = np.arange(start, min(len(reader), start + batch_size))
        probs = np.asarray(decoder.predict_on_batch(reader.read(rows)))
        for row, pr in zip(rows, probs):
            i = where[fs.source_ids[row]]
            truth = read_label_map(Path(maps[i]), file_path(split, i), task.width, task.void)
            pred = frame_prediction(pr, truth.shape, plan.recipe.long_side)
            confusion += confusion_matrix(truth, pred, task.width, task.void)
            if int(row) in show:
                kept[int(row)] = pred

    def frames():
        """(image, truth, prediction) of up to 8 test frames."""
        for row, pred in kept.items():
            i = where[fs.source_ids[row]]
            yield (np.asarray(split.load(i)), read_label_map(Path(maps[i]), None, task.width, task.void), pred)

    return confusion, frames
