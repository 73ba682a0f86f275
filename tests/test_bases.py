"""The registry: every base builds, runs in inference mode and yields its documented size."""
from __future__ import annotations

import numpy as np
import pytest

from bottleneck.bases import build as bases
from bottleneck.bases import registry
from bottleneck.bases.registry import REGISTRY, get_base, resolve_image_size
from bottleneck.bases.build import build_feature_model
from bottleneck.core.errors import BaseError


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_base_builds_with_random_weights(name):
    spec = get_base(name)
    size = max(spec.min_size, 32)
    model = build_feature_model(spec, size, None)
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    out = np.asarray(model.predict_on_batch(pixels))
    assert out.shape == (2, spec.feature_dim)
    assert np.isfinite(out).all()
    trunk = model.layers[-2]
    assert trunk.layers[-1].name == spec.default_layer  # the documented layer is the last conv block
    # every named cut point exists, earliest first, and the last is the default layer
    order = [layer.name for layer in trunk.layers]
    positions = [order.index(layer) for _, layer in spec.cut_points]
    assert positions == sorted(positions) and spec.cut_points[-1][1] == spec.default_layer
    assert spec.preprocessing in registry.PREPROCESSING and spec.min_size <= spec.native_size


def test_inference_mode_batchnorm_uses_moving_statistics():
    """A batch's features must not depend on the other images in it (BatchNorm not in training mode)."""
    spec = get_base("tiny_cnn")
    model = build_feature_model(spec, 32, None)
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    b = np.concatenate([a[:1], rng.integers(0, 20, (3, 32, 32, 3), dtype=np.uint8)])
    fa, fb = np.asarray(model.predict_on_batch(a)), np.asarray(model.predict_on_batch(b))
    np.testing.assert_allclose(fa[0], fb[0], rtol=1e-5, atol=1e-6)
    assert all(not layer.trainable for layer in model.layers[-2].layers)


@pytest.mark.parametrize("mode,pixel,expected", [
    ("caffe", [10.0, 20.0, 30.0], [30 - 103.939, 20 - 116.779, 10 - 123.68]),
    ("tf", [0.0, 127.5, 255.0], [-1.0, 0.0, 1.0]),
    ("torch", [0.0, 0.0, 255.0], [-0.485 / 0.229, -0.456 / 0.224, (1 - 0.406) / 0.225]),
    ("lite", [127.0, 255.0, 0.0], [0.0, 1.0, -127 / 128]),
])
def test_preprocessing(mode, pixel, expected):
    import keras

    layer = bases.preprocess_layer(mode)
    out = keras.ops.convert_to_numpy(layer(np.array([[[pixel]]], dtype="float32")))
    np.testing.assert_allclose(out.ravel(), expected, rtol=1e-5, atol=1e-6)


def test_pooling_and_layer_choice():
    spec = get_base("tiny_cnn")
    x = np.zeros((1, 32, 32, 3), "uint8")
    assert build_feature_model(spec, 32, None, pooling="none").predict_on_batch(x).shape == (1, 8, 8, 16)
    assert build_feature_model(spec, 32, None, layer="conv1").predict_on_batch(x).shape == (1, 8)
    with pytest.raises(BaseError, match="no layer 'conv9'.*did you mean 'conv"):
        build_feature_model(spec, 32, None, layer="conv9")


def test_grid_pooling_is_the_average_of_each_cell_cell_by_cell():
    spec = get_base("tiny_cnn")
    x = np.random.default_rng(0).integers(0, 255, (2, 28, 28, 3)).astype("uint8")  # a 7 x 7 map, cut 4 + 3
    fmap = build_feature_model(spec, 28, None, pooling="none").predict_on_batch(x)
    assert fmap.shape[1:3] == (7, 7)
    grid = build_feature_model(spec, 28, None, pooling="grid2").predict_on_batch(x)
    cells = [fmap[:, r0:r1, c0:c1].mean(axis=(1, 2)) for r0, r1 in ((0, 4), (4, 7)) for c0, c1 in ((0, 4), (4, 7))]
    np.testing.assert_allclose(grid, np.concatenate(cells, axis=1), rtol=1e-5, atol=1e-6)
    assert build_feature_model(spec, 28, None, pooling="grid3").predict_on_batch(x).shape == (2, 9 * 16)
    with pytest.raises(BaseError, match="at least 3 x 3"):
        build_feature_model(spec, 8, None, pooling="grid3")  # a 2 x 2 map
    with pytest.raises(BaseError, match="unknown pooling 'grid'"):
        build_feature_model(spec, 32, None, pooling="grid")


def test_cut_point_names_resolve_to_the_same_cache_settings():
    spec = get_base("vgg16")
    assert bases.resolve_layer(spec, "block4") == bases.resolve_layer(spec, "block4_pool") == "block4_pool"
    assert bases.resolve_layer(spec, None) == "block5_pool"


def test_image_size_limits_and_unknown_base():
    spec = get_base("inception_v3")
    assert resolve_image_size(spec, None) == 299
    with pytest.raises(BaseError, match="below inception_v3's minimum of 75"):
        resolve_image_size(spec, 32)
    with pytest.raises(BaseError, match="did you mean 'vgg16'"):
        get_base("vgg_16")


@pytest.mark.parametrize("name", list(REGISTRY))
def test_pyramid_levels_of_every_base(name):
    """Each base's pyramid: finest first, each level coarser than the one before, about
    input / stride (inception's "valid" padding makes its maps a little smaller)."""
    from bottleneck.bases.build import build_pyramid_model

    spec = get_base(name)
    shape = (96, 128) if name == "tiny_cnn" else (max(spec.min_size, 96) + 64, max(spec.min_size, 96) + 96)
    model = build_pyramid_model(spec, shape, None)
    x = np.zeros((1, *shape, 3), np.uint8)
    maps = {k: np.asarray(v) for k, v in model.predict_on_batch(x).items()}
    assert list(maps) == [lv for lv, _ in spec.pyramid] and len(maps) >= 2
    sizes = [maps[lv].shape[1:3] for lv, _ in spec.pyramid]
    for (lv, _), (h, w) in zip(spec.pyramid, sizes):
        stride = int(lv[1:])
        assert shape[0] / stride - 3 <= h <= -(-shape[0] // stride) and shape[1] / stride - 3 <= w <= -(-shape[1] // stride)
    assert all(a[0] > b[0] for a, b in zip(sizes, sizes[1:]))
