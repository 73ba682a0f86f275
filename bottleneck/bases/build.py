"""Building a base's Keras model: its own preprocessing, the layer features are cut at,
the pooling, the compute dtype and the in-model resizes (``--resize device``,
``device-mixed``). Models are built with random weights and then loaded from a verified
file (``weights``), so the same weights always give the same features."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from bottleneck.bases.registry import BaseSpec
from bottleneck.bases.weights import load_weights
from bottleneck.core.errors import BaseError, nearest


def preprocess_layer(mode: str):
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable("bottleneck")
    class Preprocess(keras.layers.Layer):
        """A base's own input transform, inside the model so it runs on the device."""

        def __init__(self, mode: str, **kwargs):
            super().__init__(**kwargs)
            self.mode = mode

        def call(self, x):
            x = ops.cast(x, "float32")  # pixels arrive as uint8: a quarter of the bytes to move
            if self.mode == "caffe":
                return ops.flip(x, axis=-1) - ops.convert_to_tensor([103.939, 116.779, 123.68], dtype=x.dtype)
            if self.mode == "tf":
                return x / 127.5 - 1.0
            if self.mode == "torch":
                mean = ops.convert_to_tensor([0.485, 0.456, 0.406], dtype=x.dtype)
                std = ops.convert_to_tensor([0.229, 0.224, 0.225], dtype=x.dtype)
                return (x / 255.0 - mean) / std
            if self.mode == "lite":
                return (x - 127.0) / 128.0
            return x / 255.0

        def get_config(self):
            return {**super().get_config(), "mode": self.mode}

    return Preprocess(mode, name=f"preprocess_{mode}")


def build_trunk(spec: BaseSpec, image_size, weights_path: Path | None):
    """The base network itself (no preprocessing, no pooling), with its weights. ``image_size``:
    a square side, or (height, width)."""
    import keras

    keras.utils.set_random_seed(0)  # random weights are part of the fingerprint: make them reproducible
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    model = spec.builder((height, width, 3))
    if weights_path is not None:
        load_weights(spec, model, weights_path)
    return model


def layer_names(model) -> list[str]:
    """Layers with a spatial output, the ones that can be cut at (input excluded)."""
    return [layer.name for layer in model.layers[1:] if len(layer.output.shape) == 4]


def resolve_layer(spec: BaseSpec, layer: str | None) -> str:
    """A cut point's short name ('block4', 'mixed7') or a layer name -> the layer name."""
    if layer is None:
        return spec.default_layer
    return dict(spec.cut_points).get(layer, layer)


_LAYERS: dict = {}  # (base, size) -> its spatial layer names, for check_layer


def _check_layer_in(spec: BaseSpec, layer: str, names: list[str]) -> None:
    if layer not in names:
        raise BaseError(f"{spec.name} has no layer {layer!r}{nearest(layer, names)}",
                        f"spatial layers of {spec.name}, last ones: {', '.join(names[-8:])}")


def check_layer(spec: BaseSpec, image_size: int, layer: str | None) -> None:
    """A clear error now for a --layer the base does not have (builds the base, random
    weights, only when the name is neither the default nor a named cut point)."""
    if layer is None or resolve_layer(spec, layer) in {name for _, name in spec.cut_points} | {spec.default_layer}:
        return
    key = (spec.name, image_size)
    if key not in _LAYERS:
        _LAYERS[key] = layer_names(spec.builder((image_size, image_size, 3)))
    _check_layer_in(spec, layer, _LAYERS[key])


def estimate_batch_bytes(model, batch_size: int) -> int:
    """Rough memory of one forward pass: the input, plus three times the largest layer
    output (the layer's input, its output and a temporary), per image, in float32."""
    largest = 0

    def visit(m):
        nonlocal largest
        for layer in m.layers:
            if hasattr(layer, "layers") and layer.layers:
                visit(layer)
            try:
                shape = layer.output.shape
            except (AttributeError, ValueError):
                continue
            if isinstance(shape, (list, tuple)) and shape and all(isinstance(d, int) for d in shape[1:]):
                largest = max(largest, int(np.prod(shape[1:])))

    visit(model)
    pixels = int(np.prod(model.inputs[0].shape[1:]))
    return batch_size * 4 * (pixels + 3 * largest)


def build_pyramid_model(spec: BaseSpec, shape: tuple[int, int], weights_path: Path | None,
                        levels: list[str] | None = None):
    """pixels (N, H, W, 3) uint8 -> {level: feature map}, at the base's pyramid levels (all of
    them by default), always in inference mode."""
    import keras

    known = dict(spec.pyramid)
    levels = levels or list(known)
    unknown = [lv for lv in levels if lv not in known]
    if unknown:
        raise BaseError(f"{spec.name} has no pyramid level {unknown[0]!r}", f"its levels are: {', '.join(known)}")
    trunk = build_trunk(spec, shape, weights_path)
    trunk = keras.Model(trunk.inputs, [trunk.get_layer(known[lv]).output for lv in levels])
    trunk.trainable = False
    inputs = keras.Input(shape=(*shape, 3), dtype="uint8", name="pixels")
    outputs = trunk(preprocess_layer(spec.preprocessing)(inputs), training=False)
    return keras.Model(inputs, dict(zip(levels, outputs)), name=f"{spec.name}_pyramid")


COMPUTE_DTYPES = ("float32", "bfloat16")


def check_compute(name: str) -> None:
    if name not in COMPUTE_DTYPES:
        raise BaseError(f"unknown --compute {name!r}", f"use {' or '.join(COMPUTE_DTYPES)}")


@contextlib.contextmanager
def compute_dtype(name: str):
    """Layers built inside compute in ``name`` (bfloat16: Keras's mixed_bfloat16 policy, weights
    kept in float32); the global policy is restored after."""
    import keras

    check_compute(name)
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if name == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def build_feature_model(spec: BaseSpec, image_size: int, weights_path: Path | None,
                        layer: str | None = None, pooling: str = "avg", input_dtype: str = "uint8",
                        source_size: tuple[int, int] | None = None, each_size: bool = False):
    """pixels (N, S, S, 3) in 0..255 (uint8 by default) -> features, always in inference mode.
    With ``source_size`` (height, width) the model takes images of that size and resizes them
    to S x S itself (bilinear, half-pixel centres, in float32), on the device. With
    ``each_size`` it takes images of any size up to S x S, each in a canvas with its size
    (``sized_canvas``), and resizes each by its own scale (``resize_each_image``)."""
    import keras
    from keras import layers, ops

    trunk = build_trunk(spec, image_size, weights_path)
    layer = resolve_layer(spec, layer)
    if layer != trunk.layers[-1].name:
        _check_layer_in(spec, layer, layer_names(trunk))
        trunk = keras.Model(trunk.inputs, trunk.get_layer(layer).output)
    trunk.trainable = False
    shape = (image_size + 1, image_size) if each_size else (source_size or (image_size, image_size))
    inputs = keras.Input(shape=(*shape, 3), dtype=input_dtype, name="pixels")
    x = inputs
    if source_size is not None:
        x = layers.Resizing(image_size, image_size, interpolation="bilinear", antialias=False,
                            name="resize_on_device")(ops.cast(x, "float32"))
    if each_size:
        x = resize_each_image(image_size)(x)
    x = trunk(preprocess_layer(spec.preprocessing)(x), training=False)
    return keras.Model(inputs, pool(x, pooling), name=f"{spec.name}_features")


def sized_canvas(image: np.ndarray, size: int) -> np.ndarray:
    """An image of at most ``size`` x ``size`` pixels (H, W, 3 uint8) as ``resize_each_image``
    takes it: at the top left of a ``size`` x ``size`` canvas of zeros, with one more row that
    holds its height and width (pixel 0: height // 256, height % 256; pixel 1: the same of
    the width). The size travels inside the batch, so the feed, its shared memory and the
    forward pass carry one uint8 array, as for every other recipe."""
    h, w = image.shape[:2]
    if h > size or w > size:
        raise ValueError(f"a {w} x {h} image does not fit a {size} x {size} canvas")
    canvas = np.zeros((size + 1, size, 3), np.uint8)
    canvas[:h, :w] = image
    canvas[size, 0, :2] = divmod(h, 256)
    canvas[size, 1, :2] = divmod(w, 256)
    return canvas


def _each_scale_weights(length, size: int):
    """(N, size, size) weights: output pixel o of each image from its input pixels i < length:
    PIL's bilinear filter (a triangle one input pixel wide: a sized canvas never holds an image
    larger than ``size``, so nothing is shrunk and PIL would not widen it), normalised over the
    pixels the image has. An image of ``size`` pixels gets the identity."""
    from keras import ops

    centre = (ops.arange(size, dtype="float32") + 0.5)[None, :, None]
    pixel = (ops.arange(size, dtype="float32") + 0.5)[None, None, :]
    length = ops.maximum(length, 1.0)[:, None, None]  # a skipped image or padding row is all zeros
    weights = ops.relu(1.0 - ops.abs(pixel - centre * (length / size)))
    weights = weights * ops.cast(pixel < length, "float32")
    return weights / ops.sum(weights, axis=2, keepdims=True)


def resize_each_image(size: int, name: str = "resize_each_on_device"):
    """A layer: sized canvases (N, S + 1, S, 3) uint8 (``sized_canvas``, S = ``size``) ->
    (N, S, S, 3) float32, each image resized from its own size to S x S with PIL's bilinear
    filter, in float32, as two matrix products per image (rows, then columns). Pixels outside
    an image's size get weight 0, so whatever the canvas holds there changes nothing."""
    import keras
    from keras import ops

    class ResizeEachImage(keras.layers.Layer):
        def __init__(self, size: int, **kwargs):
            super().__init__(dtype="float32", **kwargs)  # float32 under any policy: resizing is not the model
            self.size = size

        def call(self, x):
            s = self.size
            x = ops.cast(x, "float32")
            height = x[:, s, 0, 0] * 256.0 + x[:, s, 0, 1]
            width = x[:, s, 1, 0] * 256.0 + x[:, s, 1, 1]
            rows = ops.einsum("boh,bhwc->bowc", _each_scale_weights(height, s), x[:, :s])
            return ops.einsum("bpw,bowc->bopc", _each_scale_weights(width, s), rows)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], self.size, self.size, input_shape[3])

    return ResizeEachImage(size, name=name)


POOLINGS = ("avg", "max", "none") + tuple(f"grid{g}" for g in range(2, 9))


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise BaseError(f"unknown pooling {pooling!r}", "use avg, max, none or grid2 ... grid8")


def pool(x, pooling: str):
    """A feature map (N, H, W, C) pooled: globally (avg, max); per cell of a G x G grid
    (gridG: the cells' averages, cell by cell, G*G*C features: where a sign's parts are, which
    a global average forgets); or not at all (none). Built-in layers only, so exports load safely."""
    from keras import layers

    check_pooling(pooling)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name="avg_pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="max_pool")(x)
    if pooling == "none":
        return x
    g = int(pooling[4:])
    h, w = int(x.shape[1]), int(x.shape[2])
    if h < g or w < g:
        raise BaseError(f"pooling {pooling} needs a map of at least {g} x {g}; this layer's is {h} x {w}",
                        "use avg pooling, an earlier --layer or a larger --image-size")
    rows, cols = np.linspace(0, h, g + 1).round().astype(int), np.linspace(0, w, g + 1).round().astype(int)
    cells = [layers.GlobalAveragePooling2D(name=f"grid_{i}_{j}")(
                 layers.Cropping2D(((rows[i], h - rows[i + 1]), (cols[j], w - cols[j + 1])), name=f"cell_{i}_{j}")(x))
             for i in range(g) for j in range(g)]
    return layers.Concatenate(name=f"grid{g}_pool")(cells)
