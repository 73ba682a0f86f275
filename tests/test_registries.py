"""Extending the registries from outside the package: a base, a dataset format and a head
registered here (this module is not part of bottleneck) and used through train, compare and
the command line, as a user's own code would."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bottleneck.bases.registry import REGISTRY, BaseSpec, get_base, register_base
from bottleneck.cli import main
from bottleneck.core.errors import BaseError, BottleneckError, DatasetError
from bottleneck.data.datasets import FORMATS, load_dataset, register_format
from bottleneck.data.sources import ArraySource, Dataset, Split
from bottleneck.experiments.grid import compare
from bottleneck.experiments.run import train
from bottleneck.learn.heads import HEADS, Head, InvalidParameter, make_head, register_head

CLASSES = ["red", "green", "blue", "grey"]


def two_layer_cnn(input_shape):
    """A base of our own: two convolutions, random weights."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="first")(inputs)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="second")(x)
    return keras.Model(inputs, x, name="outside_cnn")


OUTSIDE_BASE = BaseSpec(name="outside_cnn", native_size=16, min_size=8, preprocessing="unit", feature_dim=8,
                        default_layer="second", builder=two_layer_cnn, description="registered by a test",
                        cut_points=(("first", "first"), ("second", "second")))


def read_colours(what: str, name: str) -> Dataset:
    """A dataset format of our own, ``colours:SEED``: 16 x 16 images of four colours with noise."""
    rng = np.random.default_rng(int(what))
    base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [128, 128, 128]], np.uint8)
    splits = {}
    for split, per_class in (("train", 6), ("test", 3)):
        labels = np.repeat(np.arange(4), per_class)
        noise = rng.integers(-25, 26, (len(labels), 16, 16, 3))
        images = np.clip(base[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        ids = [f"{split}#{i}" for i in range(len(labels))]
        splits[split] = Split(ids, labels, ids, ArraySource(images, f"colours {split}"))
    return Dataset(name, Path("."), "colours", list(CLASSES), splits)


class CentroidHead(Head):
    """A head of our own: the nearest class mean of the standardized features."""

    tasks = ("single_label",)

    def __init__(self, shrink: float = 0.0, seed: int = 0, task=None):
        self.shrink, self.seed, self.task = shrink, seed, task

    def check_params(self) -> None:
        if not 0 <= self.shrink < 1:
            raise InvalidParameter(f"shrink must be in [0, 1); got {self.shrink}", "pass e.g. shrink=0.1")

    def fit(self, X, y, groups=None):
        X, y = self._checked(X, y)
        self.classes_ = np.unique(y)
        mean = X.mean(axis=0)
        self.centroids_ = np.stack([(1 - self.shrink) * X[y == c].mean(axis=0) + self.shrink * mean
                                    for c in self.classes_])
        return self

    def predict(self, X):
        X = self._features(X)
        return self.classes_[((X[:, None, :] - self.centroids_[None]) ** 2).sum(-1).argmin(axis=1)]


@pytest.fixture
def registered():
    """The three registrations, undone afterwards so other tests see the registries as shipped."""
    before = (dict(REGISTRY), dict(FORMATS), dict(HEADS))
    register_base(OUTSIDE_BASE)
    register_format("colours", read_colours)
    register_head("centroid", CentroidHead)
    yield
    for table, saved in zip((REGISTRY, FORMATS, HEADS), before):
        table.clear()
        table.update(saved)


def test_a_base_a_format_and_a_head_from_outside_train_and_compare(registered, tmp_path):
    assert get_base("outside_cnn") is OUTSIDE_BASE and len(load_dataset("colours:1").split("train")) == 24
    kw = dict(weights="random", cache_dir=tmp_path / "c", progress=False)
    row = train("outside_cnn", "colours:1", 6, head="centroid", head_params={"shrink": 0.1}, **kw)
    assert row["base"] == "outside_cnn" and row["dataset"] == "colours:1" and row["head"] == "centroid"
    assert row["n_train"] == 24 and row["n_test"] == 12 and row["extracted_images"] == 36
    assert row["accuracy"] >= 0.75  # four well separated colours: the pipeline really ran on them
    assert '"shrink": 0.1' in row["head_params"]
    rows = compare(["outside_cnn", "tiny_cnn"], ["colours:1"], [3, 6], [0], head="centroid", **kw)
    assert [(r["base"], r["per_class"]) for r in rows] == [("outside_cnn", 3), ("outside_cnn", 6),
                                                           ("tiny_cnn", 3), ("tiny_cnn", 6)]
    assert rows[1]["extracted_images"] == 0 and rows[1]["accuracy"] == row["accuracy"]  # cached, same numbers


def test_the_command_line_finds_what_was_registered(registered, tmp_path, capsys):
    code = main(["compare", "--bases", "outside_cnn", "--datasets", "colours:2", "--per-class", "4",
                 "--head", "centroid", "--weights", "random", "--cache-dir", str(tmp_path / "c"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "| outside_cnn |" in out and "centroid head" in out
    assert main(["bases"]) == 0 and "outside_cnn" in capsys.readouterr().out


def test_registrations_are_checked(registered, tmp_path):
    import dataclasses

    with pytest.raises(BaseError, match="registered already"):
        register_base(dataclasses.replace(OUTSIDE_BASE, feature_dim=9))
    register_base(dataclasses.replace(OUTSIDE_BASE, feature_dim=9), replace=True)
    assert get_base("outside_cnn").feature_dim == 9
    with pytest.raises(BaseError, match="preprocessing 'imagenet' is not one of"):
        register_base(dataclasses.replace(OUTSIDE_BASE, name="other", preprocessing="imagenet"))
    with pytest.raises(TypeError):  # keyword fields only: no long positional tuples
        BaseSpec("x", 16, 8, "unit", 8, "second", two_layer_cnn)
    with pytest.raises(DatasetError, match="a dataset format .folder. is registered already"):
        register_format("folder", read_colours)
    with pytest.raises(DatasetError, match="not the name of a dataset"):
        register_format("cifar10", read_colours)
    register_format("broken", lambda what, name: "not a dataset")
    with pytest.raises(DatasetError, match="returned str, not a Dataset"):
        load_dataset("broken:x")
    with pytest.raises(BottleneckError, match="cannot register head 'bad': it is not a scikit-learn estimator"):
        register_head("bad", dict)
    with pytest.raises(InvalidParameter, match="shrink must be in"):
        make_head("centroid", shrink=2.0)
    from bottleneck.deploy.export import export

    with pytest.raises(BottleneckError, match="cannot export the centroid head"):  # said before any extraction
        export("outside_cnn", "colours:1", 6, head="centroid", weights="random", cache_dir=tmp_path / "c",
               out=tmp_path / "m.keras", progress=False)
    assert not (tmp_path / "c").exists()
