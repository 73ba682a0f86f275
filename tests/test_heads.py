"""Heads: the scikit-learn contract, seeding, early stopping."""
from __future__ import annotations

import numpy as np
import pytest

from bottleneck.errors import BottleneckError
from bottleneck.heads import HEADS, DenseHead, MLPHead, make_head


def _blobs(n=60, d=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (classes, d))
    y = np.repeat(np.arange(classes) * 10, n // classes)  # non-contiguous labels
    X = centers[y // 10] + rng.normal(0, 1, (len(y), d))
    return X.astype("float32"), y


@pytest.mark.parametrize("name", list(HEADS))
def test_contract_and_accuracy(name):
    X, y = _blobs()
    head = make_head(name, seed=0, **({} if name == "logreg" else {"epochs": 40, "learning_rate": 0.05}))
    params = head.get_params()
    assert not any(k.endswith("_") for k in vars(head))  # constructor stores parameters only
    assert head.fit(X, y) is head
    assert list(head.classes_) == [0, 10, 20]
    assert set(head.predict(X)) <= {0, 10, 20}
    proba = head.predict_proba(X)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert head.score(X, y) > 0.9
    assert head.get_params() == params


@pytest.mark.parametrize("cls", [DenseHead, MLPHead])
def test_keras_heads_are_seeded(cls):
    X, y = _blobs(seed=1)
    a = cls(epochs=5, seed=3).fit(X, y).predict_proba(X)
    b = cls(epochs=5, seed=3).fit(X, y).predict_proba(X)
    c = cls(epochs=5, seed=4).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_early_stopping_on_grouped_validation():
    X, y = _blobs(n=90)
    groups = np.arange(90) // 5
    head = MLPHead(epochs=200, learning_rate=0.05, validation_fraction=0.2, patience=3, seed=0).fit(X, y, groups=groups)
    assert head.epochs_run_ < 200 and "val_loss" in head.history_


def test_flattens_spatial_features():
    X, y = _blobs()
    X4 = np.repeat(X[:, None, None, :], 2, axis=1)  # (N, 2, 1, d)
    assert DenseHead(epochs=3).fit(X4, y).predict(X4).shape == (60,)


def test_unknown_head():
    with pytest.raises(BottleneckError, match="did you mean 'mlp'"):
        make_head("mlpp")
