"""Training heads on cached features, and the comparison grid with its tables."""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np

from .datasets import Dataset, load_dataset
from .errors import CacheError
from .extraction import extract
from .heads import make_head
from .store import FeatureSet

log = logging.getLogger("bottleneck")
EVAL_SEED = 0  # every run of a grid is scored on the same test images


def train(base: str, dataset: str | Dataset, per_class: int | None = 100, seed: int = 0, head: str = "logreg", *,
          eval_per_class: int | None = None, eval_split: str = "test", head_params: dict | None = None,
          **extract_kwargs) -> dict:
    """Extract what is missing, train ``head`` on the per-class draw, score it on the test
    split. Returns one result row: every setting, accuracy and timings."""
    tr = extract(base, dataset, "train", per_class, seed, **extract_kwargs)
    te = extract(base, dataset, eval_split, eval_per_class, EVAL_SEED, **extract_kwargs)
    return train_on_features(tr, te, head, seed, head_params=head_params)


def check_features(tr: FeatureSet, te: FeatureSet, base: str | None = None, dataset: str | None = None) -> None:
    """Refuse training and test features that do not belong together, or are not what was asked."""
    for fs in (tr, te):
        s = fs.settings
        if base is not None and s["base"] != base:
            raise CacheError(f"{fs.path} holds features of base {s['base']}, not {base}",
                             "pass the file extracted with the base you asked for, or drop --base")
        if dataset is not None and s["dataset"] != dataset:
            raise CacheError(f"{fs.path} holds features of dataset {s['dataset']}, not {dataset}",
                             "pass the file extracted from the dataset you asked for, or drop --dataset")
    a, b = tr.settings, te.settings
    differ = [k for k in ("dataset", "base", "weights", "layer", "pooling", "image_size", "preprocessing",
                          "extractor") if a.get(k) != b.get(k)]
    if differ:
        raise CacheError(f"{tr.path.name} and {te.path.name} were made differently ({', '.join(differ)}): "
                         f"{a.get('base')}/{a.get('dataset')} vs {b.get('base')}/{b.get('dataset')}",
                         "train and test on features extracted with the same settings")
    if tr.class_names != te.class_names:
        raise CacheError(f"{tr.path.name} and {te.path.name} have different class lists "
                         f"({len(tr.class_names)} vs {len(te.class_names)} classes)",
                         "extract both splits from the same dataset")


def train_on_features(tr: FeatureSet, te: FeatureSet, head: str = "logreg", seed: int = 0,
                      head_params: dict | None = None, base: str | None = None, dataset: str | None = None) -> dict:
    """Train ``head`` on cached training features and score it on test features."""
    check_features(tr, te, base, dataset)
    t = time.perf_counter()
    model = make_head(head, seed=seed, **(head_params or {}))
    model.fit(tr.features, tr.labels, groups=np.asarray(tr.groups))
    train_seconds = time.perf_counter() - t
    accuracy = model.score(te.features, te.labels)
    s = tr.settings
    return {
        "base": s["base"], "dataset": s["dataset"], "per_class": s["per_class"], "seed": seed, "head": head,
        "weights": s["weights"], "layer": s["layer"], "pooling": s["pooling"], "image_size": s["image_size"],
        "n_train": len(tr), "n_test": len(te), "n_classes": len(tr.class_names), "accuracy": round(accuracy, 6),
        "extracted_images": tr.info.get("extracted", 0) + te.info.get("extracted", 0),
        "extract_seconds": round(tr.info.get("seconds", 0) + te.info.get("seconds", 0), 3),
        "images_per_second": _rate(tr, te), "train_seconds": round(train_seconds, 3),
        "train_cache": tr.path.name, "test_cache": te.path.name,
        "head_params": json.dumps(model.get_params(), sort_keys=True),
    }


def _rate(*sets) -> float:
    done = sum(fs.info.get("extracted", 0) for fs in sets)
    secs = sum(fs.info.get("seconds", 0) for fs in sets if fs.info.get("extracted"))
    return round(done / secs, 2) if done and secs else 0.0


def compare(bases: list[str], datasets: list[str], per_class: list[int | None] = (100,), seeds: list[int] = (0,),
            head: str = "logreg", out: str | Path | None = None, progress: bool = True, **kwargs) -> list[dict]:
    """Every base x dataset x per-class limit x seed; returns the rows (and writes them to
    ``out``/results.csv, results.json and table.md when ``out`` is given)."""
    from tqdm.auto import tqdm

    loaded = {d: load_dataset(d, kwargs.get("data_dir")) for d in datasets}  # list each dataset once
    grid = [(b, d, n, s) for b in bases for d in datasets for n in per_class for s in seeds]
    rows = []
    with tqdm(grid, desc="grid", unit="run", disable=not progress or len(grid) < 2) as bar:
        for b, d, n, s in bar:
            bar.set_postfix_str(f"{b} {d} N={n} seed={s}")
            rows.append(train(b, loaded[d], n, s, head, progress=progress, **kwargs))
    if out:
        write_results(rows, out)
    return rows


def write_results(rows: list[dict], out: str | Path) -> None:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "table.md").write_text(markdown_table(rows) + "\n")


def markdown_table(rows: list[dict]) -> str:
    """Rows: bases; columns: datasets (and per-class limits when several); cells: mean ± std
    of accuracy over seeds."""
    bases = list(dict.fromkeys(r["base"] for r in rows))
    limits = list(dict.fromkeys(r["per_class"] for r in rows))
    columns = [(d, n) for d in dict.fromkeys(r["dataset"] for r in rows) for n in limits]

    def title(d, n):
        return d if len(limits) == 1 else f"{d} N={n if n is not None else 'all'}"

    heads = sorted({r["head"] for r in rows})
    lines = [f"| base ({', '.join(heads)} head) | " + " | ".join(title(d, n) for d, n in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for b in bases:
        cells = []
        for d, n in columns:
            acc = [r["accuracy"] for r in rows if (r["base"], r["dataset"], r["per_class"]) == (b, d, n)]
            if not acc:
                cells.append("")
            elif len(acc) == 1:
                cells.append(f"{acc[0]:.3f}")
            else:
                cells.append(f"{np.mean(acc):.3f} ± {np.std(acc, ddof=1):.3f}")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in rows})
    lines.append("")
    lines.append(f"accuracy on each dataset's test split; mean ± std over seeds {seeds}; "
                 f"N = training images per class")
    return "\n".join(lines)
