"""Lesson 3: how much data?

The classic lab trained on 100 images per class. How much does that number matter? With
the features cached, each extra training set costs only the head's training: the draw is
nested (the 25 images of N=25 are among the 50 of N=50), so the base only ever runs over
the largest draw. Three seeds per point show how much of a difference is noise.

Expect a steep rise from 5 to 25 images per class and a flatter one after: frozen features
make a few examples go a long way.

    .venv/bin/python -m lab.lesson3_how_much_data
"""
from __future__ import annotations

import numpy as np

import bottleneck

from .common import DATA, base_for, options


def learning_curve(rows: list[dict], dataset: str) -> list[tuple[int, float, float]]:
    """[(images per class, mean accuracy, std over seeds)] for one dataset, ascending."""
    # TODO: for each per_class value of this dataset's rows, in ascending order, collect the accuracies
    #       of its seeds and append (per_class, mean accuracy, standard deviation) to a list; return it.
    ### BEGIN SOLUTION learning_curve
    points = []
    for n in sorted({r["per_class"] for r in rows if r["dataset"] == dataset}):
        acc = [r["accuracy"] for r in rows if r["dataset"] == dataset and r["per_class"] == n]
        points.append((n, float(np.mean(acc)), float(np.std(acc))))
    return points
    ### END SOLUTION


def plot(curves: dict[str, list], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for dataset, points in curves.items():
        n, mean, std = zip(*points)
        ax.errorbar(n, mean, yerr=std, marker="o", capsize=3, label=dataset)
    ax.set_xscale("log")
    ax.set_xlabel("training images per class")
    ax.set_ylabel("test accuracy")
    ax.set_title("How much data? (frozen features, logistic regression)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    a = options(__doc__)
    base = base_for(a.fast)
    limits = [2, 5] if a.fast else [5, 10, 25, 50, 100]
    seeds = [0] if a.fast else [0, 1, 2]
    rows = bottleneck.compare([base["base"]], ["cifar10", "gtsrb"], limits, seeds, weights=base["weights"],
                              data_dir=DATA, cache_dir=a.cache_dir, out=a.out / "lesson3")
    print(bottleneck.markdown_table(rows))
    curves = {d: learning_curve(rows, d) for d in ("cifar10", "gtsrb")}
    path = a.out / "lesson3" / "how_much_data.png"
    plot(curves, path)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
