"""Lesson 4: the four cases, measured rather than asserted.

The usual advice for transfer learning depends on how much data you have and how similar it
is to ImageNet:

(a) small and similar: train a new head on the last layer's features;
(b) small and different: "slice off most of the pre-trained layers" and train a head on an
    earlier layer's, more generic, features;
(c) large (or different enough to need it): fine-tune -- train the head first on frozen
    features, then unfreeze the top of the base and train it with a lower learning rate
    than the head (freeze, then unfreeze, as fastai's `fine_tune` does);
(d) large and different: train a network from scratch (the lab's LeNet baseline).

Here all four run on a "similar" dataset (CIFAR-10) and a "different" one (traffic signs),
with the same 100-per-class draw (50 for GTSRB) and the same test images, so one table
shows what each choice buys on this little data. To stay within minutes on 2 CPU cores,
fine-tuning runs at 128 px for 2 epochs.

    .venv/bin/python -m lab.lesson4_four_cases
"""
from __future__ import annotations

from pathlib import Path

import bottleneck
from bottleneck.experiments.finetune import finetune, train_scratch
from bottleneck.report.results import write_results

from .common import CACHE, DATA, OUT, base_for, options


def four_cases(dataset: str, fast: bool, cache_dir: str) -> list[dict]:
    """One row per case for ``dataset``."""
    b = base_for(fast)
    n = 5 if fast else 100
    earlier = "conv1" if fast else "stage5"
    common = dict(data_dir=DATA, cache_dir=cache_dir, weights=b["weights"])
    rows = []
    row = bottleneck.train(b["base"], dataset, n, 0, "logreg", **common)
    rows.append({**row, "case": "(a) head on last layer"})
    # TODO (b): the same as case (a) but with layer=earlier; append it with case "(b) head on earlier layer (...)".
    # TODO (c): call finetune(...) with unfreeze=1, head_epochs=3 if fast else 20, epochs=1 if fast else 2,
    #           image_size=None if fast else 128 and **common; append it with case "(c) fine-tune top block".
    ### BEGIN SOLUTION cases (b) and (c) in four_cases
    row = bottleneck.train(b["base"], dataset, n, 0, "logreg", layer=earlier, **common)
    rows.append({**row, "case": f"(b) head on earlier layer ({earlier})"})
    row = finetune(b["base"], dataset, n, 0, unfreeze=1, head_epochs=3 if fast else 20, epochs=1 if fast else 2,
                   image_size=None if fast else 128, **common)
    rows.append({**row, "case": "(c) fine-tune top block"})
    ### END SOLUTION
    row = train_scratch(dataset, n, 0, epochs=2 if fast else 30, data_dir=DATA)
    rows.append({**row, "case": "(d) LeNet from scratch"})
    return rows


def table(rows: list[dict]) -> str:
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    lines = ["| case | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets)]
    for case in dict.fromkeys(r["case"] for r in rows):
        cells = [f"{r['accuracy']:.3f}" for d in datasets for r in rows if r["case"] == case and r["dataset"] == d]
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(fast: bool = False, cache_dir=CACHE, out=OUT) -> list[dict]:
    """The lesson: the four cases on both datasets, one table."""
    rows = [r for d in ("cifar10", "gtsrb") for r in four_cases(d, fast, str(cache_dir))]
    columns = ["case", "dataset", "base", "head", "per_class", "seed", "n_train", "n_test", "accuracy", "train_seconds"]
    write_results([{k: r.get(k) for k in columns} for r in rows], Path(out) / "lesson4")
    print(table(rows))
    return rows


def main() -> None:
    a = options(__doc__)
    run(a.fast, a.cache_dir, a.out)


if __name__ == "__main__":
    main()
