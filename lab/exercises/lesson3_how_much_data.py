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

from pathlib import Path

import numpy as np

import bottleneck

from ..common import CACHE, DATA, OUT, base_for, options, show


def learning_curve(rows: list[dict], dataset: str) -> list[tuple[int, float, float]]:
    """[(images per class, mean accuracy, std over seeds)] for one dataset, ascending."""
    # TODO: for each per_class value of this dataset's rows, in ascending order, collect the accuracies
    #       of its seeds and append (per_class, mean accuracy, standard deviation) to a list; return it.
    raise NotImplementedError("TODO: learning_curve")


def plot(curves: dict[str, list], path) -> None:
    from matplotlib.figure import Figure  # not pyplot: no window, no global state, in a notebook too

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
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


def run(fast: bool = False, cache_dir=CACHE, out=OUT) -> list[dict]:
    """The lesson: the grid of limits x seeds, its table and the learning-curve plot."""
    base = base_for(fast)
    limits = [2, 5] if fast else [5, 10, 25, 50, 100]
    seeds = [0] if fast else [0, 1, 2]
    rows = bottleneck.compare([base["base"]], ["cifar10", "gtsrb"], limits, seeds, weights=base["weights"],
                              data_dir=DATA, cache_dir=cache_dir, out=Path(out) / "lesson3")
    print(bottleneck.markdown_table(rows))
    curves = {d: learning_curve(rows, d) for d in ("cifar10", "gtsrb")}
    path = Path(out) / "lesson3" / "how_much_data.png"
    plot(curves, path)
    show(path)
    return rows


def main() -> None:
    a = options(__doc__)
    run(a.fast, a.cache_dir, a.out)


if __name__ == "__main__":
    main()
