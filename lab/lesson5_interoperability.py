"""Lesson 5: interoperability with the classic lab.

The original exercise read precomputed features from pickles named
`{network}_{dataset}_{N}_bottleneck_features_train.p` (and `..._validation.p`), each a dict
with `features` and `labels`. `bottleneck export-lab` writes cached features in exactly that
form, so the original `feature_extraction.py` runs unchanged -- and a head trained on the
pickles scores exactly what it scores on the HDF5 cache.

    .venv/bin/python -m lab.lesson5_interoperability
"""
from __future__ import annotations

import pickle

import bottleneck
from bottleneck.labpickle import export_lab_pickles

from .common import DATA, base_for, options
from .lesson1_feature_extraction import train_and_score


def load_bottleneck_data(training_file: str, validation_file: str):
    """Read the lab's pickles the way its solution does."""
    # TODO: pickle.load each file; each holds a dict with "features" and "labels".
    #       Return X_train, y_train, X_val, y_val.
    ### BEGIN SOLUTION load_bottleneck_data
    with open(training_file, "rb") as f:
        train_data = pickle.load(f)
    with open(validation_file, "rb") as f:
        validation_data = pickle.load(f)
    X_train, y_train = train_data["features"], train_data["labels"]
    X_val, y_val = validation_data["features"], validation_data["labels"]
    return X_train, y_train, X_val, y_val
    ### END SOLUTION


def main() -> None:
    a = options(__doc__)
    b = base_for(a.fast)
    n = 10 if a.fast else 100
    train = bottleneck.extract(dataset="cifar10", split="train", per_class=n, data_dir=DATA, cache_dir=a.cache_dir, **b)
    test = bottleneck.extract(dataset="cifar10", split="test", data_dir=DATA, cache_dir=a.cache_dir, **b)
    train_p, valid_p = export_lab_pickles(train, test, a.out / "lesson5", network=b["base"], dataset="cifar10")
    print(f"wrote {train_p.name} and {valid_p.name}")

    X_train, y_train, X_val, y_val = load_bottleneck_data(train_p, valid_p)
    print(f"the lab's way: X_train {X_train.shape}, y_train {y_train.shape}")

    from types import SimpleNamespace

    as_read = (SimpleNamespace(features=X_train.reshape(len(X_train), -1), labels=y_train,
                               class_names=train.class_names),
               SimpleNamespace(features=X_val.reshape(len(X_val), -1), labels=y_val))
    epochs = 5 if a.fast else 50
    from_pickles = train_and_score(*as_read, epochs=epochs)
    from_cache = train_and_score(train, test, epochs=epochs)
    print(f"lab head accuracy: {from_pickles:.4f} from the pickles, {from_cache:.4f} from the HDF5 cache")


if __name__ == "__main__":
    main()
