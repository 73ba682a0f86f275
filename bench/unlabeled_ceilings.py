"""How far can unlabeled images take a head on frozen features? The ceilings of a run's features.

A run with ``--unlabeled all`` learns from the training split's other images without their
labels. This script grades it against what the same features give with *every* label (the
labels the run never reads, read here only to grade):

- ``ceiling_linear``  the ``logreg`` head (C given) on every training image with its true label;
- ``ceiling_mlp``     a one-hidden-layer network (1,024 units, dropout 0.5) on the same;
- ``teacher``         the ``pseudo`` head (our default semi-supervised method, C given): its test
                      accuracy and how many of its pseudo-labels on the pool are right;
- ``student_mlp``     the network above on the labelled rows and the teacher's soft pseudo-labels
                      (a noisy student: does a bigger head on pseudo-labels pass the teacher?).

The network trains with Adam (20 epochs, batch 256, L2 1e-4, seeded) on standardized features.
It reads the run's cached features (extract them first, e.g. by the ``compare`` the guide shows):

    .venv/bin/python bench/unlabeled_ceilings.py --dataset cifar10 --recipe best --C 0.1 \\
        --data-dir ../shared/datasets --cache-dir F

Figures and the machine they came from: docs/guide/unlabeled.md ("How far it can go").
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np

from bottleneck.experiments import stacking
from bottleneck.experiments.run import plan_run
from bottleneck.extraction import views as augment
from bottleneck.extraction.plan import RunOptions
from bottleneck.extraction.run import run
from bottleneck.learn.heads import LogRegHead
from bottleneck.learn.semi import UNLABELED, PseudoLabelHead

EPOCHS = 20
HIDDEN = 1024


def features(args) -> dict:
    """Labelled, pool and test rows of one run (every part a recipe stacks), with every label."""
    r = plan_run(args.base, args.dataset, args.per_class, args.seed, recipe=args.recipe, unlabeled="all",
                 data_dir=args.data_dir, cache_dir=args.cache_dir, weights=args.weights)
    o = RunOptions(progress=False)
    tr = stacking.stacked(run(r.train, o), [run(p, o) for p, _ in r.parts])
    te = augment.averaged(stacking.stacked(run(r.test, o), [run(p, o) for _, p in r.parts]))
    pool = stacking.stacked(run(r.pool[0], o), [run(p, o) for p in r.pool[1:]])
    return {"X_tr": tr.features, "y_tr": np.asarray(augment.join(r.target, r.train.samples, tr)),
            "X_te": te.features, "y_te": np.asarray(r.target.join(r.test.samples, te.source_ids)),
            "X_pool": pool.features, "y_pool": np.asarray(r.target.join(r.pool[0].samples, pool.source_ids)),
            "n_classes": len(r.target.task.class_names)}


def network(width: int, n_classes: int):
    import keras

    x = inputs = keras.Input((width,))
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(HIDDEN, activation="relu", kernel_regularizer=keras.regularizers.L2(1e-4))(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", kernel_regularizer=keras.regularizers.L2(1e-4))(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    return model


def fit_network(X, targets, weights, X_te, y_te, seed: int, epochs: int) -> float:
    """The test accuracy of the network trained on rows ``X`` with (soft) ``targets``."""
    import keras

    keras.utils.set_random_seed(seed)
    model = network(X.shape[1], targets.shape[1])
    model.fit(X, targets, sample_weight=weights, batch_size=256, epochs=epochs, verbose=0)
    return float(np.mean(model.predict(X_te, batch_size=1024, verbose=0).argmax(1) == y_te))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="efficientnet_lite0")
    p.add_argument("--weights", default="imagenet")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--recipe", default="best")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--C", type=float, default=0.1, help="the teacher's C (what the run's search chose)")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--cache-dir", default="features")
    args = p.parse_args()

    t0 = time.perf_counter()
    f = features(args)
    k, seconds = f["n_classes"], {"features": time.perf_counter() - t0}
    everything = np.concatenate([f["X_tr"], f["X_pool"]])
    mean, scale = everything.mean(0), everything.std(0) + 1e-6
    X_tr, X_pool, X_te = ((f[n] - mean) / scale for n in ("X_tr", "X_pool", "X_te"))
    onehot = np.eye(k, dtype=np.float32)
    all_targets = onehot[np.concatenate([f["y_tr"], f["y_pool"]])]
    all_rows, ones = np.concatenate([X_tr, X_pool]), np.ones(len(all_targets), np.float32)
    out = {"dataset": args.dataset, "recipe": args.recipe, "base": args.base, "seed": args.seed,
           "labelled": len(X_tr), "pool": len(X_pool), "test": len(X_te), "width": X_tr.shape[1],
           "machine": f"{platform.node()} ({platform.processor() or platform.machine()})"}

    t = time.perf_counter()
    linear = LogRegHead(C=args.C, seed=args.seed).fit(np.concatenate([f["X_tr"], f["X_pool"]]),
                                                      np.concatenate([f["y_tr"], f["y_pool"]]))
    out["ceiling_linear"] = float(np.mean(linear.predict(f["X_te"]) == f["y_te"]))
    del linear
    out["ceiling_mlp"] = fit_network(all_rows, all_targets, ones, X_te, f["y_te"], args.seed, args.epochs)
    seconds["ceilings"] = time.perf_counter() - t

    t = time.perf_counter()  # the teacher sees the pool without its labels
    teacher = PseudoLabelHead(C=args.C, seed=args.seed).fit(
        np.concatenate([f["X_tr"], f["X_pool"]]), np.concatenate([f["y_tr"], np.full(len(X_pool), UNLABELED)]))
    soft = teacher.predict_proba(f["X_pool"]).astype(np.float32)
    assert list(teacher.classes_) == list(range(k)), "every class is in the labelled draw"
    out["teacher"] = float(np.mean(teacher.predict(f["X_te"]) == f["y_te"]))
    out["teacher_pool_right"] = float(np.mean(teacher.classes_[soft.argmax(1)] == f["y_pool"]))
    seconds["teacher"] = time.perf_counter() - t

    t = time.perf_counter()  # the labelled rows together weigh half the pool (each at least 1)
    labelled_weight = max(1.0, 0.5 * len(X_pool) / len(X_tr))
    weights = np.concatenate([np.full(len(X_tr), labelled_weight), soft.max(1)]).astype(np.float32)
    out["student_mlp"] = fit_network(all_rows, np.concatenate([onehot[f["y_tr"]], soft]), weights, X_te, f["y_te"],
                                     args.seed, args.epochs)
    seconds["student"] = time.perf_counter() - t
    out["seconds"] = {name: round(s, 1) for name, s in seconds.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
