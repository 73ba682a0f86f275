"""Training heads on cached features: one run (``train``) and the grid (``compare``).

A grid checks everything that can be checked before its first extraction (bases,
weights, datasets, splits, heads and their parameters, the cache folder), so it
never fails at run 5 of 8 on something it could have said at once. With ``out``,
each finished run is kept the moment it finishes (see ``results``), and running
the same grid again reuses the finished runs.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import _faults
from .datasets import Dataset, load_dataset
from .errors import CacheError
from .extraction import Plan, RunOptions, plan, run
from .heads import make_head
from .results import ResultsDir, markdown_table, write_results  # noqa: F401  (tables live in results)
from .store import FeatureSet, canonical_dataset, check_writable, fingerprint

log = logging.getLogger("bottleneck")
EVAL_SEED = 0  # every run of a grid is scored on the same test images
_PLAN_KEYS = ("data_dir", "cache_dir", "weights", "weights_dir", "image_size", "layer", "pooling", "test_fraction")
_RUN_KEYS = ("batch_size", "skip_bad_images", "progress", "workers")


def _split_kwargs(kwargs: dict) -> tuple[dict, RunOptions]:
    unknown = set(kwargs) - set(_PLAN_KEYS) - set(_RUN_KEYS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    return ({k: v for k, v in kwargs.items() if k in _PLAN_KEYS},
            RunOptions(**{k: v for k, v in kwargs.items() if k in _RUN_KEYS}))


def plan_run(base: str, dataset: str | Dataset, per_class: int | None, seed: int, *, eval_per_class=None,
             eval_split: str = "test", **plan_kwargs) -> tuple[Plan, Plan]:
    """The training and test extractions of one run, planned (nothing runs)."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, plan_kwargs.get("data_dir"))
    tr = plan(base, ds, "train", per_class, seed, **plan_kwargs)
    te = plan(base, ds, eval_split, eval_per_class, EVAL_SEED, **plan_kwargs)
    return tr, te


def train(base: str, dataset: str | Dataset, per_class: int | None = 100, seed: int = 0, head: str = "logreg", *,
          eval_per_class: int | None = None, eval_split: str = "test", head_params: dict | None = None,
          out: str | Path | None = None, **extract_kwargs) -> dict:
    """Extract what is missing, train ``head`` on the per-class draw, score it on the test
    split. Returns one result row: every setting, accuracy and timings (kept in ``out``
    when given)."""
    plan_kwargs, options = _split_kwargs(extract_kwargs)
    make_head(head, seed=seed, **(head_params or {}))  # a bad parameter fails before any extraction
    tr, te = plan_run(base, dataset, per_class, seed, eval_per_class=eval_per_class, eval_split=eval_split,
                      **plan_kwargs)
    row = _train_planned(tr, te, head, seed, head_params, eval_per_class, options)
    if out:
        ResultsDir(out).add(run_key(tr, te, head, seed, head_params), row)
    return row


def _train_planned(tr: Plan, te: Plan, head: str, seed: int, head_params: dict | None, eval_per_class,
                   options: RunOptions) -> dict:
    row = train_on_features(run(tr, options), run(te, options), head, seed, head_params=head_params)
    row["eval_per_class"] = eval_per_class
    row["drawn_per_class"] = _drawn(tr)
    return row


def _drawn(p: Plan) -> str:
    """How many training images each class got: '100', or '34-50' when some had fewer."""
    counts = np.bincount(p.samples.labels[p.selected])
    counts = counts[counts > 0]
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def run_key(tr: Plan, te: Plan, head: str, seed: int, head_params: dict | None) -> str:
    """What makes a result: the two cache files' exact settings, the head and its parameters,
    the seed. The same key means the same numbers, so a finished row can be reused."""
    params = make_head(head, seed=seed, **(head_params or {})).get_params()
    return fingerprint({"train": tr.settings, "test": te.settings, "head": head, "params": params, "seed": seed})


def check_features(tr: FeatureSet, te: FeatureSet, base: str | None = None, dataset: str | None = None) -> None:
    """Refuse training and test features that do not belong together, or are not what was asked."""
    for fs in (tr, te):
        s = fs.settings
        if base is not None and s["base"] != base:
            raise CacheError(f"{fs.path} holds features of base {s['base']}, not {base}",
                             "pass the file extracted with the base you asked for, or drop --base")
        if dataset is not None and s["dataset"] != canonical_dataset(dataset):
            raise CacheError(f"{fs.path} holds features of dataset {s['dataset']}, not {dataset}",
                             "pass the file extracted from the dataset you asked for, or drop --dataset")
    a, b = tr.settings, te.settings
    differ = [k for k in ("dataset", "base", "weights", "layer", "pooling", "image_size", "preprocessing",
                          "extractor", "test_fraction") if a.get(k) != b.get(k)]
    if differ:
        raise CacheError(f"{tr.path.name} and {te.path.name} were made differently ({', '.join(differ)}): "
                         f"{a.get('base')}/{a.get('dataset')} vs {b.get('base')}/{b.get('dataset')}",
                         "train and test on features extracted with the same settings")
    if tr.class_names != te.class_names:
        raise CacheError(f"{tr.path.name} and {te.path.name} have different class lists "
                         f"({len(tr.class_names)} vs {len(te.class_names)} classes)",
                         "extract both splits from the same dataset")
    for fs in (tr, te):
        bad = ~np.isfinite(fs.features.reshape(len(fs), -1)).all(axis=1)
        if bad.any():
            first = fs.source_ids[int(np.flatnonzero(bad)[0])]
            raise CacheError(f"{fs.path} has {int(bad.sum())} feature rows with NaN or infinite values "
                             f"(the first is image {first})",
                             "extract them again, e.g. with other --weights; a head cannot learn from them")


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
        "test_fraction": s.get("test_fraction"),
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
            head: str = "logreg", out: str | Path | None = None, *, eval_per_class: int | None = None,
            head_params: dict | None = None, **extract_kwargs) -> list[dict]:
    """Every base x dataset x per-class limit x seed; returns the rows. With ``out``, each
    finished row is kept there at once (results.csv, results.json, table.md remade from
    all rows in the folder), and rows finished by an earlier run of the same grid are reused."""
    from tqdm.auto import tqdm

    plan_kwargs, options = _split_kwargs(extract_kwargs)
    make_head(head, seed=0, **(head_params or {}))  # parameters first: nothing else runs if they are wrong
    loaded = {d: load_dataset(d, plan_kwargs.get("data_dir")) for d in datasets}  # list each dataset once
    grid = [(b, d, n, s) for b in bases for d in datasets for n in per_class for s in seeds]
    # Every check that can fail, before the first extraction: bases, weights, sizes, layers, splits.
    planned = [plan_run(b, loaded[d], n, s, eval_per_class=eval_per_class, **plan_kwargs) for b, d, n, s in grid]
    if any(not p.path.exists() for pair in planned for p in pair):
        check_writable(plan_kwargs.get("cache_dir", "features"))
    results = ResultsDir(out) if out else None
    rows = []
    with tqdm(total=len(grid), desc="grid", unit="run", disable=not options.progress or len(grid) < 2) as bar:
        for (b, d, n, s), (tr, te) in zip(grid, planned):
            bar.set_postfix_str(f"{b} {d} N={n} seed={s}")
            key = run_key(tr, te, head, s, head_params)
            row = results.get(key) if results else None
            if row is None:
                row = _train_planned(tr, te, head, s, head_params, eval_per_class, options)
                if results:
                    results.add(key, row)
            else:
                row = {**row, "extracted_images": 0, "reused_row": True}
            rows.append(row)
            bar.update(1)
            _faults.checkpoint("after-run", len(rows) - 1)
    return rows
