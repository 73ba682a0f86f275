"""Beyond frozen features: fine-tuning the top of a base, and a small network from scratch.

Both train on images (held in memory: these are for lab-sized draws, e.g. 100 per class)
and report rows shaped like ``report.train``'s, so they sit in the same tables.

Fine-tuning follows fastai's ``fine_tune``: first the head alone on the frozen (cached)
features, then the top ``unfreeze`` blocks of the base as well, with a learning rate
``base_lr_factor`` times the head's. BatchNorm layers stay frozen and in inference mode.
"""
from __future__ import annotations

import time

import numpy as np

from bottleneck.bases.build import build_trunk, preprocess_layer
from bottleneck.bases.registry import get_base, resolve_image_size
from bottleneck.bases.weights import weights_identity
from bottleneck.core.determinism import seed_everything
from bottleneck.core.errors import BaseError
from bottleneck.core.sampling import per_class_draw
from bottleneck.data.datasets import load_dataset
from bottleneck.data.images import resize
from bottleneck.experiments.run import EVAL_SEED
from bottleneck.extraction.plan import HOLDOUT_SEED, box_from_text, crop_boxes, crop_to_box
from bottleneck.extraction.run import extract


def load_images(dataset: str, split: str, per_class: int | None, seed: int, image_size: int,
                data_dir=None, test_fraction: float | None = None,
                crop: float | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 images resized to image_size, labels, class names) of a per-class draw; with
    ``crop``, each image cropped to its box grown by that margin first, as extraction crops."""
    ds = load_dataset(dataset, data_dir)
    if test_fraction is not None:
        ds = ds.with_test_fraction(test_fraction, HOLDOUT_SEED)
    s = ds.split(split)
    idx, _ = per_class_draw(s.labels, per_class, seed)
    if crop is None:
        images = [s.load(int(i), image_size) for i in idx]
    else:
        # the box as the cached rows record it (rounded), so the crops are extraction's to the pixel
        boxes = crop_boxes(ds, s, idx, crop, "host")
        images = [crop_to_box(s.load(int(i)), box_from_text(box), crop) for i, box in zip(idx, boxes)]
    return np.stack([resize(image, image_size) for image in images]), s.labels[idx], ds.class_names


def _scale_gradient(x, factor: float):
    """Identity forward; gradients flowing back are multiplied by ``factor`` (with SGD this is
    a per-layer learning rate, on any Keras backend)."""
    from keras import ops

    frozen = ops.stop_gradient(x)
    return frozen + factor * (x - frozen)  # x - frozen is exactly 0 forward, so this is exactly x


def _row(kind: str, base: str, dataset: str, per_class, seed: int, n_train: int, n_test: int, n_classes: int,
         accuracy: float, seconds: float, image_size: int, **extra) -> dict:
    return {"base": base, "dataset": dataset, "per_class": per_class, "seed": seed, "head": kind,
            "image_size": image_size, "n_train": n_train, "n_test": n_test, "n_classes": n_classes,
            "accuracy": round(float(accuracy), 6), "train_seconds": round(seconds, 3), **extra}


def finetune(base: str, dataset: str, per_class: int | None = 100, seed: int = 0, *, unfreeze: int = 1,
             head_epochs: int = 20, epochs: int = 3, learning_rate: float = 0.01, base_lr_factor: float = 0.1,
             batch_size: int = 32, image_size: int | None = None, weights: str = "imagenet", weights_dir=None,
             data_dir=None, cache_dir="features", eval_per_class: int | None = None, progress: bool = True,
             test_fraction: float | None = None, crop: float | None = None) -> dict:
    """Head on frozen features first, then the top ``unfreeze`` cut-point blocks too. ``crop``:
    every image (training and test) cropped to its box grown by that margin, as ``--crop``
    crops for frozen features (GTSRB's sign boxes)."""
    import keras
    from keras import layers

    spec = get_base(base)
    size = resolve_image_size(spec, image_size)
    if not 0 <= unfreeze <= len(spec.cut_points) - 1:
        raise BaseError(f"--unfreeze {unfreeze} is out of range for {base}",
                        f"use 0..{len(spec.cut_points) - 1} (blocks after its cut points; see `bottleneck bases --layers {base}`)")
    t0 = time.perf_counter()
    common = dict(data_dir=data_dir, cache_dir=cache_dir, weights=weights, weights_dir=weights_dir,
                  image_size=size, progress=progress, test_fraction=test_fraction, crop=crop)
    tr = extract(base, dataset, "train", per_class, seed, **common)  # stage 1 runs on cached features
    n_classes = len(tr.class_names)

    seed_everything(seed)
    head = layers.Dense(n_classes, activation="softmax", name="head")
    probe = keras.Sequential([keras.Input((tr.features.shape[1],)), head])
    probe.compile(keras.optimizers.SGD(learning_rate, momentum=0.9), "sparse_categorical_crossentropy")
    probe.fit(tr.features, tr.labels, epochs=head_epochs, batch_size=batch_size, verbose=0, shuffle=True)

    _, weights_path = weights_identity(spec, weights, weights_dir)
    trunk = build_trunk(spec, size, weights_path)
    # Unfreeze everything after the cut point `unfreeze` blocks from the top; BatchNorm stays frozen.
    boundary = [layer.name for layer in trunk.layers].index(spec.cut_points[-1 - unfreeze][1]) if unfreeze else None
    for i, layer in enumerate(trunk.layers):
        layer.trainable = boundary is not None and i > boundary and not isinstance(layer, layers.BatchNormalization)
    inputs = keras.Input((size, size, 3), dtype="uint8")
    x = trunk(preprocess_layer(spec.preprocessing)(inputs), training=False)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = head(_scale_gradient(x, base_lr_factor))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.SGD(learning_rate, momentum=0.9), "sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    x_train, y_train, _ = load_images(dataset, "train", per_class, seed, size, data_dir, test_fraction, crop)
    if unfreeze and epochs:
        model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    x_test, y_test, _ = load_images(dataset, "test", eval_per_class, EVAL_SEED, size, data_dir, test_fraction, crop)
    accuracy = float(np.mean(model.predict(x_test, batch_size=batch_size, verbose=0).argmax(1) == y_test))
    trainable = sum(int(np.prod(w.shape)) for w in trunk.trainable_weights)
    return _row(f"finetune(top {unfreeze})", base, dataset, per_class, seed, len(y_train), len(y_test), n_classes,
                accuracy, time.perf_counter() - t0, size, weights=tr.settings["weights"],
                unfrozen_base_parameters=trainable, epochs=epochs, head_epochs=head_epochs,
                learning_rate=learning_rate, base_lr_factor=base_lr_factor, crop=crop)


def lenet(n_classes: int, image_size: int = 32):
    """LeNet-5 as the classic lab's from-scratch baseline (ReLU and max pooling)."""
    import keras
    from keras import layers

    return keras.Sequential([
        keras.Input((image_size, image_size, 3), dtype="uint8"),
        layers.Rescaling(1 / 255.0),
        layers.Conv2D(6, 5, activation="relu"), layers.MaxPooling2D(),
        layers.Conv2D(16, 5, activation="relu"), layers.MaxPooling2D(),
        layers.Flatten(), layers.Dense(120, activation="relu"), layers.Dense(84, activation="relu"),
        layers.Dense(n_classes, activation="softmax"),
    ], name="lenet")


def train_scratch(dataset: str, per_class: int | None = 100, seed: int = 0, *, image_size: int = 32,
                  epochs: int = 30, batch_size: int = 64, learning_rate: float = 1e-3, data_dir=None,
                  eval_per_class: int | None = None, test_fraction: float | None = None) -> dict:
    """A LeNet trained from random weights on the same draw, scored on the same test split."""
    import keras

    t0 = time.perf_counter()
    x_train, y_train, classes = load_images(dataset, "train", per_class, seed, image_size, data_dir, test_fraction)
    x_test, y_test, _ = load_images(dataset, "test", eval_per_class, EVAL_SEED, image_size, data_dir,
                                    test_fraction)
    seed_everything(seed)
    model = lenet(len(classes), image_size)
    model.compile(keras.optimizers.Adam(learning_rate), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    accuracy = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    return _row("lenet (from scratch)", "lenet", dataset, per_class, seed, len(y_train), len(y_test), len(classes),
                accuracy, time.perf_counter() - t0, image_size, weights="random", epochs=epochs)
