"""EfficientNet-Lite in Keras 3, and loading of the PyTorch ImageNet weights.

Lite is EfficientNet-B0's block layout without squeeze-excitation, with ReLU6,
and with the stem (32 channels), the head (1280 channels) and the repeats of
the first and last stage left unscaled. Padding is TensorFlow's "same", which is
what the PyTorch port (static same padding) reproduces, so weights carry over
exactly. Inputs are RGB pixels already mapped to (x - 127) / 128.
"""
from __future__ import annotations

import math

import numpy as np

# (width multiplier, depth multiplier, native resolution)
VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
}


# repeats, kernel, stride, expand ratio, input filters, output filters
_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]


_BN_EPS = 1e-3


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
        new += divisor
    return int(new)


def block_plan(variant: str) -> list[dict]:
    """Every MBConv block of a variant: kernel, stride, expand ratio, filters in/out."""
    width, depth, _ = VARIANTS[variant]
    plan = []
    for i, (repeats, kernel, stride, expand, f_in, f_out) in enumerate(_STAGES):
        fixed = i in (0, len(_STAGES) - 1)
        repeats = repeats if fixed else int(math.ceil(depth * repeats))
        f_in = 32 if i == 0 else _round_filters(f_in, width)
        f_out = _round_filters(f_out, width)
        for r in range(repeats):
            plan.append(dict(kernel=kernel, stride=stride if r == 0 else 1, expand=expand,
                             f_in=f_in if r == 0 else f_out, f_out=f_out, stage=i + 1))
    return plan


def _bn(name: str):
    from keras import layers

    return layers.BatchNormalization(epsilon=_BN_EPS, momentum=0.99, name=name)


def build(variant: str, input_shape=(None, None, 3), include_top: bool = False):
    """The Lite network with random weights (a keras.Model). Without the top, the output
    is the last block's 1280-channel map (before pooling)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="pixels")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(6.0, name="stem_relu")(_bn("stem_bn")(x))
    for b, p in enumerate(block_plan(variant)):
        shortcut = x
        mid = p["f_in"] * p["expand"]
        if p["expand"] != 1:
            x = layers.Conv2D(mid, 1, padding="same", use_bias=False, name=f"block{b}_expand_conv")(x)
            x = layers.ReLU(6.0, name=f"block{b}_expand_relu")(_bn(f"block{b}_expand_bn")(x))
        x = layers.DepthwiseConv2D(p["kernel"], strides=p["stride"], padding="same", use_bias=False,
                                   name=f"block{b}_dwconv")(x)
        x = layers.ReLU(6.0, name=f"block{b}_relu")(_bn(f"block{b}_bn")(x))
        x = layers.Conv2D(p["f_out"], 1, padding="same", use_bias=False, name=f"block{b}_project_conv")(x)
        x = _bn(f"block{b}_project_bn")(x)
        if p["stride"] == 1 and p["f_in"] == p["f_out"]:
            x = layers.Add(name=f"block{b}_add")([x, shortcut])
    x = layers.Conv2D(1280, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.ReLU(6.0, name="top_relu")(_bn("top_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(1000, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=variant)


def cut_points(variant: str) -> tuple[tuple[str, str], ...]:
    """stageN: the output of the last block of stage N (its residual add when it has one),
    then the head."""
    plan = block_plan(variant)
    cuts = []
    for stage in sorted({p["stage"] for p in plan}):
        b = max(i for i, p in enumerate(plan) if p["stage"] == stage)
        has_add = plan[b]["stride"] == 1 and plan[b]["f_in"] == plan[b]["f_out"]
        cuts.append((f"stage{stage}", f"block{b}_add" if has_add else f"block{b}_project_bn"))
    return tuple(cuts) + (("top", "top_relu"),)


def pyramid(variant: str) -> tuple[tuple[str, str], ...]:
    """Levels for dense prediction: the ends of stages 3 and 5 (strides 8 and 16) and the
    1280-channel head (stride 32)."""
    cuts = dict(cut_points(variant))
    return (("s8", cuts["stage3"]), ("s16", cuts["stage5"]), ("s32", cuts["top"]))


def _torch_names(variant: str) -> dict[str, str]:
    """Keras layer name -> PyTorch parameter prefix."""
    names = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1",
             "predictions": "_fc"}
    for b, p in enumerate(block_plan(variant)):
        if p["expand"] != 1:
            names[f"block{b}_expand_conv"] = f"_blocks.{b}._expand_conv"
            names[f"block{b}_expand_bn"] = f"_blocks.{b}._bn0"
        names[f"block{b}_dwconv"] = f"_blocks.{b}._depthwise_conv"
        names[f"block{b}_bn"] = f"_blocks.{b}._bn1"
        names[f"block{b}_project_conv"] = f"_blocks.{b}._project_conv"
        names[f"block{b}_project_bn"] = f"_blocks.{b}._bn2"
    return names


def load_torch_state(model, state: dict[str, np.ndarray], variant: str) -> None:
    """Copy a PyTorch state dict into the keras ``model``; raises ValueError on any mismatch."""
    from keras import layers

    used = set()
    for layer in model.layers:
        prefix = _torch_names(variant).get(layer.name)
        if prefix is None:
            continue

        def get(suffix):
            key = f"{prefix}.{suffix}"
            if key not in state:
                raise ValueError(f"weights file has no {key!r}: not an {variant} state dict")
            used.add(key)
            return state[key]

        if isinstance(layer, layers.DepthwiseConv2D):
            values = [get("weight").transpose(2, 3, 0, 1)]
        elif isinstance(layer, layers.Conv2D):
            values = [get("weight").transpose(2, 3, 1, 0)]
        elif isinstance(layer, layers.BatchNormalization):
            values = [get("weight"), get("bias"), get("running_mean"), get("running_var")]
        elif isinstance(layer, layers.Dense):
            values = [get("weight").T, get("bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise ValueError(f"{prefix}: shapes {[v.shape for v in values]} do not fit {variant} ({expected})")
        layer.set_weights(values)
    missing_conv = [k for k in state if k.endswith("weight") and k not in used and not k.startswith("_fc")]
    if missing_conv:
        raise ValueError(f"weights file has parameters {variant} does not use, e.g. {missing_conv[0]!r}")
