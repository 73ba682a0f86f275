"""The classic lab's pickle format: export, read back the lab's way, same accuracy, import."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from bottleneck.core.errors import DatasetError
from bottleneck.extraction.run import extract
from bottleneck.learn.heads import LogRegHead
from bottleneck.cache.labpickle import export_lab_pickles, load_lab_pickle


def test_export_reads_like_the_lab_and_trains_the_same(small_cifar, tmp_path):
    kw = dict(cache_dir=tmp_path / "c", weights="random", progress=False)
    tr = extract("tiny_cnn", f"folder:{small_cifar}", "train", 5, **kw)
    te = extract("tiny_cnn", f"folder:{small_cifar}", "test", None, **kw)
    train_p, valid_p = export_lab_pickles(tr, te, tmp_path / "lab", network="tiny", dataset="cifar10")
    assert train_p.name == "tiny_cifar10_5_bottleneck_features_train.p"
    assert valid_p.name == "tiny_cifar10_bottleneck_features_validation.p"

    # the way the lab's solution reads its input
    with open(train_p, "rb") as f:
        train_data = pickle.load(f)
    with open(valid_p, "rb") as f:
        validation_data = pickle.load(f)
    X_train, y_train = train_data["features"], train_data["labels"]
    X_val, y_val = validation_data["features"], validation_data["labels"]
    assert X_train.shape == (20, 1, 1, 16) and y_train.shape == (20,)

    from_pickle = LogRegHead().fit(X_train, y_train).score(X_val, y_val)
    from_cache = LogRegHead().fit(tr.features, tr.labels).score(te.features, te.labels)
    assert from_pickle == from_cache

    features, labels = load_lab_pickle(train_p)
    assert np.array_equal(features.reshape(20, -1), tr.features) and np.array_equal(labels, tr.labels)


def test_import_rejects_other_pickles(tmp_path):
    bad = tmp_path / "bad.p"
    with open(bad, "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(DatasetError, match="not a lab bottleneck pickle"):
        load_lab_pickle(bad)
    with pytest.raises(DatasetError, match="does not exist"):
        load_lab_pickle(tmp_path / "missing.p")
