"""From a table to a tool: one model file that holds the base's preprocessing, the frozen
base and the trained head, and predicts from uint8 images: a ``.keras`` file by default, or a
SavedModel, ONNX or LiteRT file (deploy/formats.py writes and reads those).

The file is made of Keras's own layers only (no custom layer is registered), so plain
``keras.saving.load_model("model.keras")`` loads it in a process that has never heard of
this package. What it predicts and how it was made (class names, label groups, output
names, thresholds, the cache settings, head parameters and test metrics) travel inside the
same file, as ``bottleneck.json`` in the ``.keras`` archive (``unzip -p model.keras
bottleneck.json``); :func:`load_model` reads both.

Each head becomes layers: a logistic regression or ridge a ``Dense`` with its coefficients
(the scaler folded in); a Keras head its own network after a ``Rescaling`` for its scaler;
a regression's decoding ``ReLU``/``Rescaling``.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np

from bottleneck.bases.build import build_trunk, pool, resolve_layer
from bottleneck.core.errors import BottleneckError
from bottleneck.data.images import RESIZE_METHOD, resize
from bottleneck.deploy.formats import FORMATS, MODEL_FORMAT, check_converter, check_model_output, format_of, save
from bottleneck.experiments.run import execute_fitted, plan_run, split_kwargs
from bottleneck.experiments.detection import DetRun
from bottleneck.experiments.segmentation import SegRun
from bottleneck.learn.detector import VARIANCE, anchor_boxes
from bottleneck.learn.heads import HEADS, KerasHead, LogRegHead, RidgeHead, task_kind
from bottleneck.learn.semi import SemiHead

CALIBRATION_IMAGES = 200  # training images that calibrate --quantize int8 (the converter's usual 100-500)


def preprocessing_layers(mode: str) -> list:
    """The base's own input transform (bases.PREPROCESSING) as built-in Keras layers, on
    pixels in 0..255 (uint8 is cast by the first layer)."""
    from keras import layers

    if mode == "tf":
        return [layers.Rescaling(1 / 127.5, offset=-1.0, name="preprocess_tf")]
    if mode == "lite":
        return [layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0, name="preprocess_lite")]
    if mode == "unit":
        return [layers.Rescaling(1 / 255.0, name="preprocess_unit")]
    if mode == "torch":  # (x / 255 - mean) / std, as one scale and offset per channel
        mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
        return [layers.Rescaling((1 / (255.0 * std)).tolist(), offset=(-mean / std).tolist(), name="preprocess_torch")]
    if mode == "caffe":  # RGB -> BGR minus the ImageNet BGR mean: a fixed 1x1 convolution
        flip = layers.Conv2D(3, 1, name="preprocess_caffe", trainable=False)
        flip.build((None, None, None, 3))
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out_channel in range(3):
            kernel[0, 0, 2 - out_channel, out_channel] = 1.0
        flip.set_weights([kernel, -np.array([103.939, 116.779, 123.68], np.float32)])
        return [layers.Rescaling(1.0, name="preprocess_cast"), flip]
    raise BottleneckError(f"unknown preprocessing {mode!r}", "this is a bug: please report it")


def feature_layers(spec, size: int, weights_path, layer: str | None, pooling: str, inputs):
    """pixels -> features, as the pipeline computes them, from built-in layers only."""
    import keras
    from keras import layers

    x = inputs
    for step in preprocessing_layers(spec.preprocessing):
        x = step(x)
    trunk = build_trunk(spec, size, weights_path)
    layer = resolve_layer(spec, layer)
    if layer != trunk.layers[-1].name:
        trunk = keras.Model(trunk.inputs, trunk.get_layer(layer).output, name=f"{spec.name}_to_{layer}")
    trunk.trainable = False
    x = trunk(x, training=False)
    x = pool(x, pooling)
    return layers.Flatten(name="flatten")(x) if pooling == "none" else x


# For 8-bit models: a feature whose spread is under this fraction of the median feature's is held at
# its mean. Standardizing divides such a feature by its tiny spread, so its weight (or its
# standardized value) dwarfs the others, and one 8-bit scale per tensor or per output channel then
# rounds every other weight to nothing. Measured on the README's model (bench/formats.py): 1 to 12
# of 1,280 features held, the float model's accuracy unchanged to 0.4 points, int8 0.674 -> 0.74.
QUIET = 0.1


def _held(scaler, quiet: float | None) -> np.ndarray:
    """Which features an 8-bit model holds at their mean (none when ``quiet`` is None)."""
    if quiet is None:
        return np.zeros(len(scaler.scale_), bool)
    return scaler.scale_ < quiet * np.median(scaler.scale_)


def _scaler_layer(scaler, quiet: float | None = None, name="scaler"):
    """sklearn's StandardScaler, (x - mean_) / scale_, as a Rescaling layer (scale_ is 1 where a
    feature is constant; a feature held at its mean gives 0). Not a Normalization layer: its mean
    and variance are variables that tf2onnx leaves as inputs of the ONNX graph; a Rescaling's are
    constants in every format. Its constants are given as arrays, never lists: Keras tracks a
    list's every item as a container, and loading a file of long lists took seconds per layer."""
    from keras import layers

    held = _held(scaler, quiet)
    scale = np.where(held, 0.0, 1.0 / scaler.scale_)
    offset = np.where(held, 0.0, -scaler.mean_ / scaler.scale_)
    return layers.Rescaling(scale, offset=offset, name=name)


def _dense(weights, bias, activation, name):
    from keras import layers

    d = layers.Dense(len(bias), activation=activation, name=name)
    d.build((None, weights.shape[0]))
    d.set_weights([np.asarray(weights, np.float32), np.asarray(bias, np.float32)])
    return d


def _folded(scaler, coef, intercept, quiet: float | None = None):
    """A linear model on standardized features, ``coef @ ((x - mean_) / scale_) + intercept``,
    as weights and bias on the raw features: the same function with one tensor fewer. With
    ``quiet`` (8-bit models), the features ``_held`` at their mean move into the bias."""
    coef = np.atleast_2d(coef)
    weights = coef / scaler.scale_
    bias = np.atleast_1d(intercept) - coef @ (scaler.mean_ / scaler.scale_)
    held = _held(scaler, quiet)
    bias = bias + weights[:, held] @ scaler.mean_[held]
    weights[:, held] = 0.0
    return weights, bias


def _logistic(model, name: str, x, n_outputs: int | None = None, scaler=None, quiet: float | None = None):
    """A fitted LogisticRegression (on features standardized by ``scaler``, folded into its
    weights): softmax over its classes, or for two classes the sigmoid and its complement.
    ``n_outputs``: place the classes' probabilities in that many columns."""
    from keras import layers

    coef, intercept = model.coef_, model.intercept_
    if scaler is not None:
        coef, intercept = _folded(scaler, coef, intercept, quiet)
    if len(model.classes_) > 2:
        probs = _dense(coef.T, intercept, "softmax", name)(x)
    else:
        p1 = _dense(coef.T, intercept, "sigmoid", name)(x)
        probs = layers.Concatenate(name=f"{name}_both")([layers.Rescaling(-1.0, offset=1.0, name=f"{name}_p0")(p1), p1])
    if n_outputs is None or list(model.classes_) == list(range(n_outputs)):
        return probs
    place = np.zeros((len(model.classes_), n_outputs), np.float32)  # a class's column among all the group's
    for k, c in enumerate(model.classes_):
        place[k, int(c)] = 1.0
    return _dense(place, np.zeros(n_outputs), None, f"{name}_place")(probs)


def _constant(value, width: int, activation: str, name: str, x, column: int | None = None):
    """A label or group the training draw never varied: a fixed output, as the head predicts it."""
    bias = np.full(width, -30.0)
    if activation == "sigmoid":
        bias[:] = 30.0 if value >= 0.5 else -30.0
    else:
        bias[column] = 30.0
    return _dense(np.zeros((int(x.shape[-1]), width)), bias, activation, name)(x)


# The heads ``head_layers`` writes as Keras layers.
EXPORTABLE = (KerasHead, LogRegHead, RidgeHead)


def _exportable_todo() -> str:
    names = [name for name, cls in HEADS.items() if issubclass(cls, EXPORTABLE)]
    return f"export a {', '.join(names[:-1])} or {names[-1]} head"


def head_scaler(head):
    """The StandardScaler a fitted head standardizes its features with (None if it has none)."""
    if isinstance(head, (RidgeHead, LogRegHead, SemiHead)) and getattr(head, "pipeline_", None) is not None:
        return head.pipeline_.steps[0][1]
    return getattr(head, "scaler_", None)


def head_layers(head, x, quiet: float | None = None):
    """The fitted head as layers on features ``x``; returns the output tensor. ``quiet``: hold
    the features ``_held`` at their mean (for 8-bit models)."""
    from keras import layers

    kind = task_kind(head.task)
    if isinstance(head, KerasHead):
        if head.scaler_ is not None:
            x = _scaler_layer(head.scaler_, quiet)(x)
        net = head._network(int(x.shape[-1]))  # uncompiled: a training loss must not travel with the file
        net.set_weights(head.model_.get_weights())
        out = net(x)
        if kind == "regression":
            s = head.scaling_
            scale = np.where(s["bounded"], s["high"] - s["low"], s["std"]).astype(np.float32)
            offset = np.where(s["bounded"], s["low"], s["mean"]).astype(np.float32)
            out = layers.Rescaling(scale, offset=offset, name="decode")(out)
        return out
    if isinstance(head, SemiHead):  # its final logistic regression, learnt with the unlabeled rows
        scaler, model = head.logistic()
        return _logistic(model, "logreg", x, scaler=scaler, quiet=quiet)
    if isinstance(head, LogRegHead):
        if kind == "single_label":
            scaler, model = head.pipeline_.steps[0][1], head.pipeline_.steps[-1][1]
            return _logistic(model, "logreg", x, scaler=scaler, quiet=quiet)
        parts = []
        for k, (columns, model) in enumerate(head.models_):
            independent = len(columns) == 1 and columns[0] < head.task.independent
            if isinstance(model, (int, float)):
                parts.append(_constant(model, len(columns), "sigmoid" if independent else "softmax", f"const_{k}",
                                       x, column=None if independent else int(model)))
            else:
                probs = _logistic(model, f"logreg_{k}", x, None if independent else len(columns), head.scaler_, quiet)
                parts.append(_positive(probs, independent, f"positive_{k}"))
        return parts[0] if len(parts) == 1 else layers.Concatenate(name="labels")(parts)
    if isinstance(head, RidgeHead):
        scaler, ridge = head.pipeline_.steps[0][1], head.pipeline_.steps[-1][1]
        weights, bias = _folded(scaler, ridge.coef_, ridge.intercept_, quiet)
        out = _dense(weights.T, bias, None, "ridge")(x)
        s = head.scaling_
        mask = s["bounded"].astype(np.float32)
        clipped = layers.Rescaling(mask, name="bounded_part")(layers.ReLU(max_value=1.0, name="clip")(out))
        free = layers.Rescaling(1.0 - mask, name="unbounded_part")(out)
        out = layers.Add(name="outputs_encoded")([clipped, free])
        scale = np.where(s["bounded"], s["high"] - s["low"], s["std"]).astype(np.float32)
        offset = np.where(s["bounded"], s["low"], s["mean"]).astype(np.float32)
        return layers.Rescaling(scale, offset=offset, name="decode")(out)
    raise BottleneckError(f"cannot export a {type(head).__name__}", _exportable_todo())


def _positive(probs, independent: bool, name: str):
    """For an independent label, the probability of the positive class (the second column)."""
    if not independent:
        return probs
    place = np.array([[0.0], [1.0]], np.float32)
    return _dense(place, np.zeros(1), None, name)(probs)


def _outputs_meta(head, class_names) -> dict:
    task = head.task
    if task is None or task.kind == "single_label":  # the classes the head saw, in its output order
        return {"outputs": "probabilities", "output_names": [class_names[int(c)] for c in head.classes_]}
    if task.kind == "multi_label":
        return {"outputs": "label scores (sigmoid per independent label, softmax per group)",
                "output_names": list(task.labels), "groups": {g: list(m) for g, m in task.groups},
                "independent": task.independent}
    return {"outputs": "values", "output_names": list(task.names),
            "ranges": [list(r) if r else None for r in (task.ranges or (None,) * task.width)], "boxes": task.boxes}


def _check_exportable(settings: dict) -> None:
    """The exported model resizes whole images on the host's terms and computes in float32; a
    head trained on features made otherwise would see other inputs there, so it is refused."""

    made = [what for what, differs in (
        (f"cropped to boxes ({settings.get('crop')})", settings.get("crop") is not None),
        ("resized on the device", settings.get("resize") != RESIZE_METHOD),
        (f"computed in {settings.get('compute')}", settings.get("compute") not in (None, "float32"))) if differs]
    if made:
        raise BottleneckError(f"the features were {' and '.join(made)}, but the exported model takes whole images, "
                              "resized as extraction does by default, in float32: its head would see other features",
                              "export without --crop, --resize device and --compute (and without a recipe that "
                              "crops)")


def export(base: str, dataset, per_class: int | None = 100, seed: int = 0, head: str | None = None, *,
           out: str | Path = "model.keras", format: str | None = None, quantize: str | None = None,
           target: str | None = None, head_params: dict | None = None, eval_per_class: int | None = None,
           overwrite: bool = False, unlabeled: int | str | None = None, semi: str | None = None,
           **extract_kwargs) -> dict:
    """Train (or reuse the cached features of) ``head`` on ``base``'s features of ``dataset``
    and write one model that takes uint8 images and predicts. Returns its metadata.

    ``format`` is ``keras`` (one ``.keras`` file), ``saved_model`` (a folder), ``onnx`` or
    ``litert`` (``.tflite``); by default the one ``out``'s name says. ``quantize="int8"``
    (LiteRT only) stores weights and activations in 8 bits, calibrated on the training draw's
    images. An existing ``out`` is kept (an error, before any work) unless ``overwrite``.
    ``unlabeled``/``semi``: the head also learns from unlabeled images (``train``'s)."""

    format = format_of(out, format)
    if quantize is not None and quantize not in FORMATS[format].quantize:
        takes = [f"--format {f.name} --quantize {'|'.join(f.quantize)}" for f in FORMATS.values() if f.quantize]
        raise BottleneckError(f"--quantize {quantize} is not a quantization the {format} format takes",
                              f"use {' or '.join(takes)}, or export without --quantize")
    check_converter(format)
    out = check_model_output(out, format, overwrite=overwrite)
    plan_kwargs, options = split_kwargs(extract_kwargs)
    r = plan_run(base, dataset, per_class, seed, target=target, head=head, head_params=head_params,
                 eval_per_class=eval_per_class, unlabeled=unlabeled, semi=semi, **plan_kwargs)
    if isinstance(r, (SegRun, DetRun)):  # heads on cached feature maps
        if quantize is not None:
            raise BottleneckError(f"--quantize {quantize} is calibrated for pooled heads; a {r.target.task.kind} "
                                  "model is exported in float32", "export it without --quantize")
        fitted = execute_fitted(r, options)
        model, meta = (_segmentation_model if isinstance(r, SegRun) else _detection_model)(r, fitted)
    else:
        model, meta, fitted = _pooled_model(r, options, QUIET if quantize else None)
    convert, calibration = {}, None
    if quantize == "int8":
        convert, calibration = _int8_options(r.train)
        scaler = head_scaler(fitted.model)
        calibration["features_held_at_mean"] = int(_held(scaler, QUIET).sum()) if scaler is not None else 0
    meta = {
        "format": MODEL_FORMAT, "version": 1, "file_format": format, "quantize": quantize,
        "calibration": calibration,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **meta,
        "base": r.train.settings["base"], "dataset": r.train.settings["dataset"], "target": r.target.name,
        "task": r.target.task.kind, "head": fitted.row["head"], "head_params": json.loads(fitted.row["head_params"]),
        "unlabeled": fitted.row.get("unlabeled", 0), "semi": fitted.row.get("semi"),
        "metrics": fitted.row["metrics"], "metric": fitted.row["metric"], "score": fitted.row["score"],
        "n_train": fitted.row["n_train"], "n_test": fitted.row["n_test"],
        "train_cache": {"file": fitted.train.path.name, "settings": fitted.train.settings},
        "test_cache": {"file": fitted.test.path.name, "settings": fitted.test.settings},
        "versions": fitted.train.info.get("versions"),
    }
    save(model, meta, out, format, overwrite=overwrite, convert_options=convert)
    return {**meta, "path": str(out), "fitted": fitted}


def _pooled_model(r, options, quiet: float | None = None):
    """The Keras model of a run on pooled features (pixels -> base -> pooling -> head), its
    metadata, and the fitted run. ``quiet``: see ``QUIET`` (8-bit models)."""
    import keras

    _check_exportable(r.train.settings)
    if not issubclass(HEADS[r.head], EXPORTABLE):  # before any work: a registered head of the user's
        raise BottleneckError(f"cannot export the {r.head} head: the exported file holds the package's own heads "
                              "as Keras layers", _exportable_todo())
    if r.parts:
        raise BottleneckError("stacked features come from more than one base or depth; the exported model is one "
                              "base and its head", "export without --stack (and without a recipe that stacks)")
    if r.test.settings.get("augment_views"):
        raise BottleneckError("--test-views averages each test image's views; the exported model sees one image, "
                              "so its score would not be the one reported", "export without --test-views")
    fitted = execute_fitted(r, options)
    s = r.train.settings
    inputs = keras.Input((s["image_size"], s["image_size"], 3), dtype="uint8", name="pixels")
    features = feature_layers(r.train.spec, s["image_size"], r.train.weights_path, s["layer"], s["pooling"], inputs)
    model = keras.Model(inputs, head_layers(fitted.model, features, quiet), name=f"{s['base']}_{r.target.name}")
    meta = {
        "input": {"size": s["image_size"], "dtype": "uint8", "layout": "(N, size, size, 3) RGB, 0..255",
                  "resize": s["resize"]},
        **_outputs_meta(fitted.model, fitted.train.class_names),
        "thresholds": (np.asarray(fitted.model.thresholds_).tolist() if getattr(fitted.model, "thresholds_", None)
                       is not None else (0.5 if r.target.task.kind == "multi_label" else None)),
    }
    return model, meta, fitted


def _segmentation_model(r, fitted):
    """pixels (a letterboxed canvas) -> the base's pyramid levels -> the trained decoder:
    per-pixel class probabilities over the canvas, from built-in layers only."""
    import keras

    recipe, spec = r.train.recipe, r.train.spec
    inputs = keras.Input((*recipe.canvas, 3), dtype="uint8", name="pixels")
    probs = fitted.model(_pyramid_of(r, inputs))
    model = keras.Model(inputs, probs, name=f"{spec.name}_{r.target.name}")
    task = r.target.task
    meta = {
        "input": {"size": recipe.long_side, "canvas": list(recipe.canvas), "dtype": "uint8",
                  "layout": "(N, height, width, 3) RGB, 0..255: the image resized (bilinear, aspect kept) to its "
                            "long side `size`, padded with zeros right and bottom to `canvas`",
                  "resize": r.train.settings["resize"]},
        "outputs": "per-pixel class probabilities over the canvas", "output_names": list(task.class_names),
        "void": task.void if task.void < task.width else None, "thresholds": None,
    }
    return model, meta


def _pyramid_of(r, inputs):
    """pixels (uint8, the canvas) -> the base's preprocessing and frozen pyramid levels, {level: map}."""
    import keras

    recipe, spec = r.train.recipe, r.train.spec
    x = inputs
    for step in preprocessing_layers(spec.preprocessing):
        x = step(x)
    trunk = build_trunk(spec, recipe.canvas, r.train.weights_path)
    layer_of = dict(spec.pyramid)
    trunk = keras.Model(trunk.inputs, [trunk.get_layer(layer_of[lv]).output for lv in recipe.levels],
                        name=f"{spec.name}_pyramid")
    trunk.trainable = False
    maps = trunk(x, training=False)
    return dict(zip(recipe.levels, maps if isinstance(maps, (list, tuple)) else [maps]))


def _detection_model(r, fitted):
    """pixels (a letterboxed canvas) -> the base's pyramid levels -> the detector -> boxes
    decoded against the anchors and class scores: (N, anchors, 4 + classes), from built-in
    layers only. The anchors are constants of ``Rescaling`` layers (centre = delta x variance x
    anchor size + anchor centre; size = exp(delta x variance) x anchor size, Keras's
    centre_yxhw coding), corners from a fixed ``Dense``. Non-maximum suppression is not in the
    file: it runs after the model (``bottleneck predict``; TensorFlow's
    ``combined_non_max_suppression`` with the settings in bottleneck.json)."""
    import keras
    from keras import layers

    recipe, task = r.train.recipe, r.target.task
    inputs = keras.Input((*recipe.canvas, 3), dtype="uint8", name="pixels")
    maps = _pyramid_of(r, inputs)
    shapes = {lv: tuple(int(d) for d in maps[lv].shape[1:3]) for lv in recipe.levels}
    strides = {lv: recipe.canvas[0] // h for lv, (h, _) in shapes.items()}
    grid = dict(sorted(shapes.items(), key=lambda kv: strides[kv[0]]))  # finest first, as the head's outputs
    anchors = anchor_boxes(grid, strides).astype(np.float64)
    centre = np.stack([(anchors[:, 1] + anchors[:, 3]) / 2, (anchors[:, 0] + anchors[:, 2]) / 2], axis=1)  # (y, x)
    size = np.stack([anchors[:, 3] - anchors[:, 1], anchors[:, 2] - anchors[:, 0]], axis=1)  # (h, w)
    out = fitted.model(maps)
    deltas, logits = out["boxes"], out["classes"]

    def pick(columns, name):  # a fixed Dense choosing delta columns (no slicing layer is built in)
        dense = layers.Dense(len(columns), use_bias=False, trainable=False, name=name)
        dense.build((None, None, 4))
        dense.set_weights([np.eye(4, dtype=np.float32)[:, columns]])
        return dense

    # (arrays, not lists, as in _scaler_layer: a GTSDB detector of lite0 at 1360 px, 67,725 anchors, loaded
    # in 22 s with lists, 1 s with arrays)
    centres = layers.Rescaling(size * np.array(VARIANCE[:2]), offset=centre,
                               name="anchor_centres")(pick([0, 1], "delta_centres")(deltas))
    sides = layers.Rescaling(VARIANCE[2], name="delta_scale")(pick([2, 3], "delta_sizes")(deltas))
    sides = layers.Rescaling(size, name="anchor_sizes")(layers.Activation("exponential", name="exp")(sides))
    corners = layers.Dense(4, use_bias=False, trainable=False, name="corners")  # (cy, cx, h, w) -> (x1, y1, x2, y2)
    corners.build((None, None, 4))
    corners.set_weights([np.array([[0, 1, 0, 1], [1, 0, 1, 0], [0, -.5, 0, .5], [-.5, 0, .5, 0]], np.float32)])
    boxes = corners(layers.Concatenate(name="centre_size")([centres, sides]))
    scores = layers.Activation("sigmoid", name="scores")(logits)
    model = keras.Model(inputs, layers.Concatenate(name="boxes_scores")([boxes, scores]),
                        name=f"{r.train.spec.name}_{r.target.name}")
    p = r.head_params
    meta = {
        "input": {"size": recipe.long_side, "canvas": list(recipe.canvas), "dtype": "uint8",
                  "layout": "(N, height, width, 3) RGB, 0..255: the image resized (bilinear, aspect kept) to its "
                            "long side `size`, padded with zeros right and bottom to `canvas`",
                  "resize": r.train.settings["resize"]},
        "outputs": "(N, anchors, 4 + classes): each anchor's box (x1, y1, x2, y2 in canvas pixels: divide by "
                   "size / the image's long side for the image's pixels), then each class's score",
        "output_names": list(task.class_names), "thresholds": None,
        "nms": {"where": "after the model: bottleneck predict, or tf.image.combined_non_max_suppression",
                "per_class": True, "iou_threshold": 0.5, "score_threshold": p["score_threshold"],
                "max_detections": 100, "pre_nms": 1000},
    }
    return model, meta


def _int8_options(train) -> tuple[dict, dict]:
    """The LiteRT converter's options for full 8-bit quantization, calibrated on (at most
    CALIBRATION_IMAGES of) the training draw's images, resized as the model's input."""
    import tensorflow as tf

    size = train.settings["image_size"]
    split = train.samples
    chosen = np.asarray(train.selected)[:CALIBRATION_IMAGES]
    pixels = np.stack([resize(split.load(int(i), size), size) for i in chosen])

    def representative():
        for image in pixels:
            yield [image[None]]

    return ({"optimizations": [tf.lite.Optimize.DEFAULT], "representative_dataset": representative},
            {"images": len(pixels), "of": "the training draw", "dataset": train.settings["dataset"]})
