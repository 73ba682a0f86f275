"""Lesson 1: feature extraction.

A network trained on ImageNet has learned general visual features. Run it once over our
images with its classifier cut off, keep what comes out of its last convolutional block
(the *bottleneck features*), and a tiny classifier trained on those features in seconds
does surprisingly well on a new task.

Here we take EfficientNet-Lite0's features of 100 CIFAR-10 images per class (extracted
once and cached in `features/`), train the classic lab's head on them -- flatten, then
one softmax layer -- and read its accuracy on the 500 embedded test images.

    .venv/bin/python -m lab.lesson1_feature_extraction
"""
from __future__ import annotations

import keras
import numpy as np

import bottleneck

from .common import CACHE, DATA, OUT, base_for, options


def build_lab_head(n_features: int, n_classes: int) -> keras.Model:
    """The lab's head: flatten the features, then a single Dense layer with a softmax."""
    # TODO: return a keras.Sequential with an Input of shape (n_features,), a Flatten layer and a
    #       Dense layer of n_classes units with a softmax activation.
    ### BEGIN SOLUTION build_lab_head
    return keras.Sequential([
        keras.Input((n_features,)),
        keras.layers.Flatten(),
        keras.layers.Dense(n_classes, activation="softmax"),
    ])
    ### END SOLUTION


def train_and_score(train, test, epochs: int = 50, seed: int = 0) -> float:
    """Train the lab head on cached training features; return accuracy on the test features."""
    keras.utils.set_random_seed(seed)
    model = build_lab_head(train.features.shape[1], len(train.class_names))
    # TODO: compile the model (Adam, learning rate 1e-3, sparse categorical cross-entropy), fit it on
    #       train.features / train.labels for `epochs` epochs with batch size 64, then predict the
    #       classes of test.features (argmax over the softmax) and return the fraction that equals test.labels.
    ### BEGIN SOLUTION train_and_score
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train.features, train.labels, epochs=epochs, batch_size=64, verbose=0, shuffle=True)
    predictions = model.predict(test.features, verbose=0).argmax(axis=1)
    return float(np.mean(predictions == test.labels))
    ### END SOLUTION


def run(fast: bool = False, cache_dir=CACHE, out=OUT) -> float:
    """The lesson: extract (or reuse) the features, train the lab head, print its accuracy."""
    base = base_for(fast)
    per_class = 10 if fast else 100
    train = bottleneck.extract(dataset="cifar10", split="train", per_class=per_class, data_dir=DATA,
                               cache_dir=cache_dir, **base)
    test = bottleneck.extract(dataset="cifar10", split="test", data_dir=DATA, cache_dir=cache_dir, **base)
    print(f"features: train {train.features.shape}, test {test.features.shape}, from {train.path.name}")
    accuracy = train_and_score(train, test, epochs=5 if fast else 50)
    print(f"lab head on {base['base']} features, {per_class} images per class: test accuracy {accuracy:.3f}")
    return accuracy


def main() -> None:
    a = options(__doc__)
    run(a.fast, a.cache_dir, a.out)


if __name__ == "__main__":
    main()
