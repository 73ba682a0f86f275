"""Lesson 5: interoperability with the classic lab.

The original exercise read precomputed features from pickles named
`{network}_{dataset}_{N}_bottleneck_features_train.p` (and `..._validation.p`), each a dict
with `features` and `labels`. `bottleneck export-lab` writes cached features in exactly that
form, so the original `feature_extraction.py` runs unchanged -- and a head trained on the
pickles scores exactly what it scores on the HDF5 cache.

The original read them with `pickle.load`, which calls whatever function a pickle names: a
pickle from the web can run any code on your machine. Here they are read with
`bottleneck.safepickle.load_file`, which accepts plain data (arrays, dicts, lists) only.

    .venv/bin/python -m lab.lesson5_interoperability
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import bottleneck
from bottleneck.core import safepickle
from bottleneck.cache.labpickle import export_lab_pickles

from ..common import CACHE, DATA, OUT, base_for, options
from ..lesson1_feature_extraction import train_and_score


def load_bottleneck_data(training_file: str, validation_file: str):
    """Read the lab's pickles the way its solution does."""
    # TODO: read each file with safepickle.load_file (never pickle.load on a downloaded file);
    #       each holds a dict with "features" and "labels". Return X_train, y_train, X_val, y_val.
    raise NotImplementedError("TODO: load_bottleneck_data")


def run(fast: bool = False, cache_dir=CACHE, out=OUT) -> tuple[float, float]:
    """The lesson: write the lab's pickles, read them back the lab's way, train on both."""
    b = base_for(fast)
    n = 10 if fast else 100
    train = bottleneck.extract(dataset="cifar10", split="train", per_class=n, data_dir=DATA, cache_dir=cache_dir, **b)
    test = bottleneck.extract(dataset="cifar10", split="test", data_dir=DATA, cache_dir=cache_dir, **b)
    train_p, valid_p = export_lab_pickles(train, test, Path(out) / "lesson5", network=b["base"], dataset="cifar10")
    print(f"wrote {train_p.name} and {valid_p.name}")

    X_train, y_train, X_val, y_val = load_bottleneck_data(train_p, valid_p)
    print(f"the lab's way: X_train {X_train.shape}, y_train {y_train.shape}")

    as_read = (SimpleNamespace(features=X_train.reshape(len(X_train), -1), labels=y_train,
                               class_names=train.class_names),
               SimpleNamespace(features=X_val.reshape(len(X_val), -1), labels=y_val))
    epochs = 5 if fast else 50
    from_pickles = train_and_score(*as_read, epochs=epochs)
    from_cache = train_and_score(train, test, epochs=epochs)
    print(f"lab head accuracy: {from_pickles:.4f} from the pickles, {from_cache:.4f} from the HDF5 cache")
    return from_pickles, from_cache


def main() -> None:
    a = options(__doc__)
    run(a.fast, a.cache_dir, a.out)


if __name__ == "__main__":
    main()
