"""Fine-tuning (frozen BatchNorm, only the top blocks move) and the from-scratch LeNet."""
from __future__ import annotations

import numpy as np
import pytest

from bottleneck.experiments import finetune as ft
from bottleneck.core.errors import BaseError


def test_finetune_moves_only_the_top_and_keeps_batchnorm(small_cifar, tmp_path, monkeypatch):
    built = []
    real_build = ft.build_trunk
    monkeypatch.setattr(ft, "build_trunk", lambda *a, **k: built.append(real_build(*a, **k)) or built[-1])
    fresh = real_build(ft.get_base("tiny_cnn"), 32, None)  # the same seeded random start
    row = ft.finetune("tiny_cnn", f"folder:{small_cifar}", 5, unfreeze=1, head_epochs=3, epochs=2,
                      weights="random", cache_dir=tmp_path, progress=False)
    trunk = built[0]
    after = {w.path: np.asarray(w) for w in trunk.weights}
    before = {w.path: np.asarray(w) for w in fresh.weights}
    changed = {p for p in after if not np.array_equal(after[p], before[p])}
    assert changed and all(p.startswith("conv2/") for p in changed)  # above the cut point 'conv1' only
    assert not any("bn1" in p for p in changed)  # BatchNorm: neither statistics nor scale moved
    assert row["head"] == "finetune(top 1)" and 0 <= row["accuracy"] <= 1 and row["n_test"] == 12
    assert row["unfrozen_base_parameters"] == 8 * 3 * 3 * 16 + 16


def test_finetune_validates_unfreeze(small_cifar, tmp_path):
    with pytest.raises(BaseError, match="out of range"):
        ft.finetune("tiny_cnn", f"folder:{small_cifar}", 5, unfreeze=5, weights="random", cache_dir=tmp_path)


def test_gradient_scaling_is_identity_forward_and_scales_backward():
    import keras
    import tensorflow as tf

    x = tf.Variable(np.array([0.3, 1.7, 2.9, 3.1], dtype="float32"))
    with tf.GradientTape() as tape:
        y = ft._scale_gradient(x, 0.1)
        loss = keras.ops.sum(y * y)
    assert np.array_equal(y.numpy(), x.numpy())
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), 0.1 * 2 * x.numpy(), rtol=1e-6)


def test_scratch_lenet_is_seeded(small_cifar):
    a = ft.train_scratch(f"folder:{small_cifar}", 5, seed=1, epochs=3)
    b = ft.train_scratch(f"folder:{small_cifar}", 5, seed=1, epochs=3)
    assert a["accuracy"] == b["accuracy"] and a["base"] == "lenet" and a["n_train"] == 20


def test_finetune_crops_as_extraction_crops(tmp_path, monkeypatch):
    """``crop``: the images fine-tuned on and scored are the cropped rows the frozen features are made
    of (the same pixels as extraction's), and the first stage reads the cropped features."""
    from bottleneck.data.datasets import load_dataset
    from bottleneck.extraction.plan import PooledFeatures, box_text

    from .conftest import DATA

    images, labels, _ = ft.load_images("gtsrb", "train", 5, 0, 32, DATA, crop=0.1)
    whole, same_labels, _ = ft.load_images("gtsrb", "train", 5, 0, 32, DATA)
    assert np.array_equal(labels, same_labels) and not np.array_equal(images, whole)
    ds = load_dataset("gtsrb", DATA)
    s = ds.split("train")
    idx, _ = ft.per_class_draw(s.labels, 5, 0)
    boxes = ds.target("box").values(s)[idx]
    made = PooledFeatures(32, None, 0.1)
    monkeypatch.setattr(s, "load", lambda index, size=None, digest=None, _load=s.load: _load(index, size))
    for row, (i, box) in enumerate(zip(idx, boxes)):  # every row: a box taken unrounded is a pixel off in ~9%
        assert np.array_equal(made.pixels(s, int(i), f"content:{box_text(box)}"), images[row]), row
    seen, real_extract = [], ft.extract
    monkeypatch.setattr(ft, "extract", lambda *a, **k: seen.append(k["crop"]) or real_extract(*a, **k))
    row = ft.finetune("tiny_cnn", "gtsrb", 5, data_dir=DATA, crop=0.1, head_epochs=1, epochs=1, eval_per_class=1,
                      weights="random", cache_dir=tmp_path, progress=False)
    assert seen == [0.1] and row["crop"] == 0.1 and row["n_train"] == len(labels)
