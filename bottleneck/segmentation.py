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
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .bases import build_pyramid_model, get_base, weights_identity
from .datasets import Dataset, FileSource, Split, load_dataset
from .errors import BottleneckError, DatasetError
from .images import BadImage, check_pixels, image_size
from .extraction import EXTRACTOR_VERSION, Plan, RunOptions, engine_session, run, stages_of
from .store import cache_path, canonical_dataset
from .tasks import Task

MULTIPLE = 32  # canvas sides are multiples of the coarsest stride
CAMVID_COLOURS = [(128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192)]  # SegNet's palette


# ---------------------------------------------------------------- the task


@dataclasses.dataclass(frozen=True)
class Segmentation(Task):
    """One class per pixel; ``void`` pixels (CamVid's 11) are never a target and never scored."""

    class_names: tuple[str, ...] = ()
    void: int = 255
    kind = "segmentation"
    main_metric = "miou"
    default_head = "decoder"

    @property
    def width(self) -> int:
        return len(self.class_names)

    def draw(self, values, per_class: int | None, seed: int, strata=None):
        """``--per-class N`` takes N frames in all (seeded, nested): frames have no one class."""
        n = len(values)
        if per_class is None:
            return np.arange(n), {}
        order = np.random.default_rng([seed, 32452843]).permutation(n)
        return np.sort(order[:per_class]), ({"frames": n} if n < per_class else {})

    def metrics(self, confusion: np.ndarray, **_) -> dict:
        keep = [i for i in range(self.width) if i != self.void]  # a Void code among the classes is never scored
        confusion = np.asarray(confusion)[np.ix_(keep, keep)]
        return segmentation_metrics(confusion, [self.class_names[i] for i in keep])


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int, void: int) -> np.ndarray:
    """(n, n) pixel counts, rows true class, columns predicted; Void pixels left out."""
    keep = truth != void
    t, p = truth[keep].astype(np.int64), predicted[keep].astype(np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def segmentation_metrics(confusion: np.ndarray, class_names) -> dict:
    """Pixel accuracy without Void (fastai's acc_camvid), class-average accuracy, mean IoU and
    per-class IoU. A class neither present nor predicted counts in no average."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    true, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    union = true + pred - tp
    out = {"pixel_accuracy": float(tp.sum() / max(confusion.sum(), 1))}
    seen = true > 0
    out["class_accuracy"] = float(np.mean(tp[seen] / true[seen])) if seen.any() else float("nan")
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    out["miou"] = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    for name, value in zip(class_names, iou):
        out[f"iou/{name}"] = float(value) if np.isfinite(value) else float("nan")
    return out


# ---------------------------------------------------------------- geometry


def scaled_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """(width, height) with the long side set to ``long_side``, aspect kept."""
    scale = long_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def canvas_for(sizes, long_side: int) -> tuple[int, int]:
    """(height, width) of one canvas that holds every image resized, in multiples of 32."""
    scaled = [scaled_size(w, h, long_side) for w, h in sizes]
    up = lambda v: int(math.ceil(v / MULTIPLE) * MULTIPLE)
    return up(max(h for _, h in scaled)), up(max(w for w, _ in scaled))


def letterbox(image: Image.Image, long_side: int, canvas: tuple[int, int]) -> np.ndarray:
    """The image resized (bilinear, aspect kept) and padded with zeros to the canvas."""
    w, h = scaled_size(*image.size, long_side)
    out = np.zeros((*canvas, 3), np.uint8)
    out[:h, :w] = np.asarray(image.resize((w, h), Image.BILINEAR) if (w, h) != image.size else image)
    return out


def letterbox_labels(labels: np.ndarray, long_side: int, canvas: tuple[int, int], void: int) -> np.ndarray:
    """A label map resized with nearest neighbour only (never blending two classes) and padded with Void."""
    h0, w0 = labels.shape
    w, h = scaled_size(w0, h0, long_side)
    if (w, h) != (w0, h0):
        labels = np.asarray(Image.fromarray(labels).resize((w, h), Image.NEAREST))
    out = np.full(canvas, void, np.uint8)
    out[:h, :w] = labels
    return out


def read_label_map(path: Path, image_path: Path | None, n_classes: int, void: int) -> np.ndarray:
    """A label map as uint8 class ids; its size must be its image's; ids beyond the codes are errors."""
    try:
        with Image.open(path) as im:
            size = im.size
            check_pixels(*size, path)  # from the header: a map over the pixel limit is never decoded
            labels = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(f"the label map {path} is missing", "restore it, or remove its image") from None
    except BadImage as e:
        raise DatasetError(f"cannot read the label map {path}: {e.reason}", "restore the file") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DatasetError(f"cannot read the label map {path}: {type(e).__name__}: {e}", "restore the file") from None
    if labels.ndim != 2:
        raise DatasetError(f"{path} is not a single-channel map of class ids (shape {labels.shape})",
                           "label maps hold one class id per pixel (mode L or P)")
    if image_path is not None:
        image = image_size(image_path)
        if image != size:
            raise DatasetError(f"the label map {path} is {size[0]}x{size[1]} but its image {image_path} is "
                               f"{image[0]}x{image[1]}", "pair each image with its own label map")
    top = int(labels.max()) if labels.size else 0
    if top >= n_classes and top != void:
        raise DatasetError(f"{path} holds class id {top}, beyond codes.txt's {n_classes} classes and Void ({void})",
                           "fix the label map or codes.txt")
    return labels.astype(np.uint8)


# ---------------------------------------------------------------- the cached maps


class MapRecipe:
    """Frames letterboxed to one canvas and run through the base; its pyramid's maps are
    stored per image (``maps/<level>``), in ``precision``. Views: the frame, and its mirror
    image when flips are asked for (the decoder then sees that augmentation too)."""

    per_row_chunks = True

    def __init__(self, long_side: int, canvas: tuple[int, int], levels: list[str], precision: str, flips: bool):
        self.long_side, self.canvas, self.levels, self.precision = long_side, canvas, levels, precision
        self.views = ("", "hflip") if flips else ("",)
        self.dtypes = {f"maps/{lv}": precision for lv in levels}

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.canvas

    def decode(self, split: Split, index: int, digest: str):
        return split.load(index, None, digest.split(":")[0])

    def fit(self, image, view: str) -> np.ndarray:
        out = letterbox(image, self.long_side, self.canvas)
        return out[:, ::-1] if view == "hflip" else out  # the padding moves to the left: labels follow

    def build(self, order):
        return build_pyramid_model(order.spec, self.canvas, order.weights_path, self.levels)

    def outputs(self, out) -> dict[str, np.ndarray]:
        return {f"maps/{lv}": np.asarray(out[lv]).astype(self.precision) for lv in self.levels}


def plan_maps(base: str, dataset: str | Dataset, split: str, per_class: int | None = None, seed: int = 0, *,
              image_size: int | None = None, levels: list[str] | None = None, precision: str = "float16",
              flips: bool = False, target: str | None = None, data_dir=None, cache_dir="features",
              weights: str = "imagenet", weights_dir=None, test_fraction: float | None = None) -> Plan:
    """Plan a feature-map extraction (see ``extraction.plan``; nothing runs)."""
    spec = get_base(base)
    if not spec.pyramid:
        raise BottleneckError(f"{spec.name} has no pyramid levels", "choose a base listed by `bottleneck bases`")
    levels = levels or [lv for lv, _ in spec.pyramid]
    if precision not in ("float16", "float32"):
        raise BottleneckError(f"unknown map precision {precision!r}", "use float16 or float32")
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    if test_fraction is not None:
        ds = ds.with_test_fraction(test_fraction)
    tgt = ds.target(target)
    s = ds.split(split)
    selected, short = tgt.draw(s, per_class, seed)
    sizes = [_image_size(s, i) for i in selected]
    long_side = image_size or max(max(w, h) for w, h in sizes)
    if not spec.min_size <= long_side <= spec.max_size:
        raise BottleneckError(f"--image-size {long_side} is outside {spec.name}'s {spec.min_size}..{spec.max_size}",
                              "pass an --image-size in that range (the frames' long side)")
    canvas = canvas_for(sizes, long_side)
    weights_id, weights_path = weights_identity(spec, weights, weights_dir)
    recipe = MapRecipe(long_side, canvas, levels, precision, flips)
    image_digests = s.digests(selected)
    digests = [d + (f":{v}" if v else "") for d in image_digests for v in recipe.views]
    ids = "\n".join(s.ids[i] for i in selected)
    settings = {
        "dataset": canonical_dataset(ds.name), "dataset_id": ds.identity(split), "split": split,
        "test_fraction": test_fraction, "base": spec.name, "weights": weights_id, "kind": "maps",
        "levels": {lv: dict(spec.pyramid)[lv] for lv in levels}, "precision": precision,
        "geometry": f"long side {long_side}, canvas {canvas[0]}x{canvas[1]}, padded with zeros right/bottom",
        "resize": "pil-bilinear (labels: nearest)", "preprocessing": spec.preprocessing,
        "views": list(recipe.views), "per_class": per_class, "seed": seed if per_class is not None else None,
        "draw": tgt.draw_key if per_class is not None else None,
        "selection": hashlib.sha256(ids.encode()).hexdigest()[:16],
        "content": hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16], "extractor": EXTRACTOR_VERSION,
    }
    return Plan(spec, ds, split, selected, digests, settings, cache_path(cache_dir, settings), weights_path, short,
                recipe)


def _image_size(split: Split, index: int) -> tuple[int, int]:
    path = _image_path(split, index)
    if path is not None:
        return image_size(path)  # the header only
    return split.load(index).size


class MapReader:
    """Reads a maps cache file lazily: the rows asked for, level by level, as float32."""

    def __init__(self, path: Path):
        import h5py

        self.path = path
        self.file = h5py.File(path, "r")
        self.levels = [k for k in self.file["maps"]]
        self.shapes = {lv: tuple(self.file["maps"][lv].shape[1:]) for lv in self.levels}

    def __len__(self) -> int:
        return len(self.file["labels"])

    def read(self, rows) -> dict[str, np.ndarray]:
        # One row (= one HDF5 chunk) at a time: h5py's fancy indexing over a list of rows is ~18x slower.
        out = {}
        for lv in self.levels:
            dataset = self.file["maps"][lv]
            out[lv] = np.empty((len(rows), *self.shapes[lv]), np.float32)
            for k, row in enumerate(rows):
                out[lv][k] = dataset[int(row)]
        return out

    def close(self):
        self.file.close()


# ---------------------------------------------------------------- the decoder


def build_decoder(shapes: dict[str, tuple], n_classes: int, out_shape: tuple[int, int], width: int = 96):
    """Top-down fusion of the levels (finest first in ``shapes``): 1x1 lateral convolutions to
    ``width`` channels, the coarser sum resized to the finer level's size and added, a 3x3
    convolution; then per-class logits, resized (bilinear) to the label map's canvas, softmax."""
    import keras
    from keras import layers

    inputs = {lv: keras.Input(shape, name=lv) for lv, shape in shapes.items()}
    levels = list(shapes)
    x = None
    for lv in reversed(levels):  # coarsest first
        lateral = layers.Conv2D(width, 1, name=f"lateral_{lv}")(inputs[lv])
        if x is not None:
            x = layers.Resizing(*shapes[lv][:2], interpolation="bilinear", name=f"up_to_{lv}")(x)
            lateral = layers.Add(name=f"fuse_{lv}")([lateral, x])
        x = layers.Conv2D(width, 3, padding="same", activation="relu", name=f"smooth_{lv}")(lateral)
    x = layers.Conv2D(n_classes, 1, name="logits")(x)
    x = layers.Resizing(*out_shape, interpolation="bilinear", name="to_labels")(x)
    return keras.Model(inputs, layers.Softmax(name="probabilities")(x), name="decoder")


def _batches(reader: MapReader, rows, labels_of, batch_size: int, shuffle: bool, seed: int, class_weights):
    """A keras PyDataset: (maps, labels, pixel weights) read lazily, batch by batch."""
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rows, self.epoch = np.asarray(rows), 0
            self.order = self._shuffled()

        def _shuffled(self):
            return np.random.default_rng([seed, self.epoch]).permutation(self.rows) if shuffle else self.rows

        def __len__(self):
            return max(1, -(-len(self.rows) // batch_size))

        def on_epoch_end(self):
            self.epoch += 1
            self.order = self._shuffled()

        def __getitem__(self, k):
            chosen = self.order[k * batch_size:(k + 1) * batch_size]
            labels = np.stack([labels_of(int(r)) for r in chosen])
            void = labels == 255
            weights = np.where(void, 0.0, class_weights[np.where(void, 0, labels)]).astype(np.float32)
            return reader.read(chosen), np.where(void, 0, labels).astype(np.int32), weights

    return Batches()


def median_frequency_weights(label_maps, n_classes: int, void: int) -> np.ndarray:
    """SegNet's class weighting: median frequency / frequency, where a class's frequency is its
    pixels over all pixels of the frames it appears in."""
    pixels, present = np.zeros(n_classes), np.zeros(n_classes)
    for labels in label_maps:
        counts = np.bincount(labels[labels != void].ravel(), minlength=n_classes)[:n_classes]
        pixels += counts
        present += (counts > 0) * counts.sum()
    freq = np.where(present > 0, pixels / np.maximum(present, 1), 0)
    median = np.median(freq[freq > 0]) if (freq > 0).any() else 1.0
    return np.where(freq > 0, median / np.maximum(freq, 1e-12), 0.0)


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
        from .store import fingerprint

        return fingerprint({"train": self.train.settings, "val": self.val.settings if self.val else None,
                            "test": self.test.settings, "target": self.target.name, "head": self.head,
                            "params": self.head_params, "seed": self.seed})


# loss_stride: the decoder is trained against the label maps at 1/loss_stride of the canvas (nearest
# neighbour, Void kept), and predicts at the label maps' full resolution when scored.
DECODER_PARAMS = {"epochs": 40, "learning_rate": 1e-3, "batch_size": 8, "patience": 6, "width": 96,
                  "class_weights": "none", "loss_stride": 4}


def plan_segmentation(base: str, ds: Dataset, per_class, seed: int, target, head: str | None, head_params: dict,
                      flips: bool = True, layer: str | None = None, pooling: str = "avg", **plan_kwargs) -> SegRun:
    if head not in (None, "decoder"):
        raise BottleneckError(f"the {head} head cannot learn target {target.name} (segmentation)",
                              "segmentation trains the decoder head (--head decoder, the default)")
    unknown = set(head_params) - set(DECODER_PARAMS)
    if unknown:
        raise BottleneckError(f"the decoder head has no parameter {', '.join(sorted(unknown))}",
                              f"its parameters are: {', '.join(DECODER_PARAMS)}")
    if layer is not None or pooling != "avg":
        raise BottleneckError("--layer and --pooling are for pooled features; segmentation caches the base's pyramid "
                              "levels", f"drop them (the levels of {base}: `bottleneck bases`)")
    params = {**DECODER_PARAMS, **head_params}
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


def _image_path(split: Split, index: int) -> Path | None:
    return Path(split.source.name(index)) if isinstance(split.source, FileSource) else None


def _labels_for(plan: Plan, target, reader_ids: list[str]):
    """row -> letterboxed label map (flipped for flipped rows)."""
    task = target.task
    split = plan.samples
    maps = target.values(split)
    where = {sid: i for i, sid in enumerate(split.ids)}
    recipe = plan.recipe
    cache: dict[int, np.ndarray] = {}

    def labels_of(row: int) -> np.ndarray:
        sid, _, view = reader_ids[row].partition("#")
        i = where[sid]
        if i not in cache:
            raw = read_label_map(Path(maps[i]), _image_path(split, i), task.width, task.void)
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

    from . import determinism
    from .report import Fitted

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
            fit_kw["validation_data"] = _batches(readers["val"], np.arange(len(readers["val"])), void_labels["val"],
                                                 p["batch_size"], False, r.seed, weights)
            fit_kw["callbacks"] = [keras.callbacks.EarlyStopping(patience=p["patience"], restore_best_weights=True)]
        history = decoder.fit(_batches(readers["train"], train_rows, void_labels["train"], p["batch_size"], True,
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

    def predicted_frame(probs: np.ndarray, truth_shape: tuple[int, int]) -> np.ndarray:
        h0, w0 = truth_shape
        w, h = scaled_size(w0, h0, plan.recipe.long_side)
        probs = probs[:h, :w]
        if (h, w) != (h0, w0):  # back to the label map's resolution
            from keras import ops

            probs = np.asarray(ops.image.resize(probs[None], (h0, w0), interpolation="bilinear"))[0]
        return probs.argmax(axis=-1).astype(np.uint8)

    for start in range(0, len(reader), batch_size):
        rows = np.arange(start, min(len(reader), start + batch_size))
        probs = np.asarray(decoder.predict_on_batch(reader.read(rows)))
        for row, pr in zip(rows, probs):
            i = where[fs.source_ids[row]]
            truth = read_label_map(Path(maps[i]), _image_path(split, i), task.width, task.void)
            pred = predicted_frame(pr, truth.shape)
            confusion += confusion_matrix(truth, pred, task.width, task.void)
            if int(row) in show:
                kept[int(row)] = pred

    def frames():
        """(image, truth, prediction) of up to 8 test frames."""
        for row, pred in kept.items():
            i = where[fs.source_ids[row]]
            yield (np.asarray(split.load(i)), read_label_map(Path(maps[i]), None, task.width, task.void), pred)

    return confusion, frames
