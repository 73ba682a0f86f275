"""One run: a head trained on cached features and scored (``train``); the grid is ``grid.py``.

A run is planned first (:func:`plan_run`: the two extractions, the target, the head and
its parameters), so a grid checks everything that can be checked before its first
extraction (bases, weights, datasets, splits, targets, heads and their parameters, the
cache folder) and never fails at run 5 of 8 on something it could have said at once.
With ``out``, each finished run is kept the moment it finishes (see ``results``), and
running the same grid again reuses the finished runs.

Targets are joined to the cached features by source id here, so the same feature files
serve every target of their images.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from bottleneck.cache.store import FeatureSet, canonical_dataset, fingerprint
from bottleneck.core.errors import BottleneckError, CacheError
from bottleneck.core.files import inside_folder
from bottleneck.core.tasks import MultiLabel
from bottleneck.data.datasets import load_dataset
from bottleneck.data.sources import Dataset
from bottleneck.data.targets import Target, class_target
from bottleneck.experiments import recipes, stacking
from bottleneck.experiments.detection import DetRun, execute_detection, plan_detection, shown_scenes
from bottleneck.experiments.fitted import Fitted
from bottleneck.experiments.segmentation import (
    SegRun,
    execute_segmentation,
    plan_segmentation,
)
from bottleneck.extraction import views as augment
from bottleneck.extraction.plan import Plan, RunOptions, plan, unlabeled_count
from bottleneck.extraction.run import engine_session, run, stages_of
from bottleneck.learn.heads import HEADS, OPTION_FLAGS, heads_for, make_head
from bottleneck.learn.semi import BEST_SEMI, SEMI_HEADS, UNLABELED, make_semi_head
from bottleneck.report import html as pages
from bottleneck.report.html import write_report
from bottleneck.report.plots import precision_recall_scatter
from bottleneck.report.results import ResultsDir, markdown_table, write_results  # noqa: F401  (tables live in results)

log = logging.getLogger("bottleneck")
EVAL_SEED = 0  # every run of a grid is scored on the same test images
AUTO = "auto"  # --per-class's default: 100 per class, or every frame for segmentation
_PLAN_KEYS = ("data_dir", "cache_dir", "weights", "weights_dir", "image_size", "layer", "pooling", "test_fraction",
              "precision", "flips", "resize", "compute", "crop", "views", "test_views", "stack")


_SEGMENTATION_ONLY = ("precision", "flips")
_RUN_KEYS = ("batch_size", "skip_bad_images", "progress", "workers", "feed", "engine", "address")


def split_kwargs(kwargs: dict) -> tuple[dict, RunOptions]:
    unknown = set(kwargs) - set(_PLAN_KEYS) - set(_RUN_KEYS)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {', '.join(sorted(unknown))}")
    return ({k: v for k, v in kwargs.items() if k in _PLAN_KEYS},
            RunOptions(**{k: v for k, v in kwargs.items() if k in _RUN_KEYS}))


@dataclasses.dataclass
class Run:
    """One run, planned: its training and test extractions, the target, the head."""

    train: Plan
    test: Plan
    target: Target
    head: str
    head_params: dict
    seed: int
    eval_per_class: int | None = None
    holdout_classes: tuple[int, ...] | None = None
    recipe: str | None = None
    parts: tuple = ()  # stacked features: (train plan, test plan) of each part (stacking.py)
    unlabeled: int | str | None = None  # unlabeled images per class beside the draw ("all": the rest)
    semi: str | None = None  # the semi-supervised method (learn/semi.py) that learns from them
    pool: tuple = ()  # the unlabeled rows' plans: the base's, then each stacked part's

    @property
    def key(self) -> str:
        """What makes a result: both cache files' exact settings, the target and its task, the
        head, its parameters, the seed (and the recipe's name). The same key means the same numbers."""
        what = {"train": self.train.settings, "test": self.test.settings, "target": self.target.name,
                "task": _jsonable(self.target.task.describe()), "head": self.head, "params": self.head_params,
                "seed": self.seed}
        if self.recipe is not None:
            what["recipe"] = self.recipe
        if self.parts:
            what["parts"] = [(tr.settings, te.settings) for tr, te in self.parts]
        if self.pool:  # only then, so a run without unlabeled rows keeps its key
            what.update(unlabeled=self.unlabeled, semi=self.semi, pool=[p.settings for p in self.pool])
            # every parameter of the method, defaults too: a changed default is a new key, never an old row
            method = make_semi_head(self.semi, seed=self.seed, **self.head_params).get_params()
            what["semi_params"] = {k: _jsonable(v) for k, v in sorted(method.items())}
        return fingerprint(what)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _head_for(head: str | None, target: Target, params: dict, seed: int, semi: str | None = None) -> tuple[str, dict]:
    """The head (the target's default when None) and the parameters it takes; options it does
    not take are dropped with a note (the Keras heads' --epochs given to logreg, say). With
    ``semi``, the parameters are those of that semi-supervised head (around logreg)."""
    import inspect

    head = head or target.task.default_head
    if head not in HEADS:
        make_head(head)  # the unknown-head error, with the nearest name
    if target.task.kind not in HEADS[head].tasks:
        raise BottleneckError(f"the {head} head cannot learn target {target.name} ({target.task.kind})",
                              f"use --head {' or '.join(heads_for(target.task.kind))}")
    cls = SEMI_HEADS[semi] if semi else HEADS[head]
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "task", "seed"}
    unused = [k for k in params if k not in known]
    if unused:
        log.warning("%s not used by the %s head (ignored)", ", ".join(OPTION_FLAGS.get(k, k) for k in unused),
                    semi or head)
    params = {k: v for k, v in params.items() if k in known}
    _make(head, semi, seed, _task_arg(target), params)  # checks the parameters and the task now
    return head, params


def _make(head: str, semi: str | None, seed: int, task, params: dict):
    """The head to fit: ``head`` by name, or the semi-supervised head ``semi`` (around logreg)."""
    return make_semi_head(semi, seed=seed, **params) if semi else make_head(head, seed=seed, task=task, **params)


def _task_arg(target: Target):
    """Heads get no task for one label, so single-label heads are exactly the classic ones."""
    return None if target.task.kind == "single_label" else target.task


def plan_run(base: str, dataset: str | Dataset, per_class: int | None, seed: int, *, target: str | None = None,
             head: str | None = None, head_params: dict | None = None, eval_per_class: int | None = None,
             eval_split: str = "test", holdout_classes=None, loss: str | None = None, recipe: str | None = None,
             unlabeled: int | str | None = None, semi: str | None = None, **plan_kwargs) -> Run:
    """One run, planned (nothing runs): every check that can fail, fails here. ``recipe``:
    a named bundle of settings (``bottleneck.recipes``), applied on top of the others.
    ``unlabeled`` (N per class, or "all"; 0 or None: none): images of the training split
    outside the labelled draw, their labels never read, learnt from by the semi-supervised
    head ``semi`` (``learn.semi``; the one that measured best when None)."""
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, plan_kwargs.get("data_dir"))
    tgt = ds.target(target)
    unlabeled = unlabeled_count(recipes.unlabeled_of(recipe, unlabeled))
    if semi is not None and unlabeled is None:
        raise BottleneckError(f"--semi {semi} learns from unlabeled images, and this run has none",
                              "add --unlabeled N|all, or drop --semi")
    if unlabeled is not None:
        semi = semi or BEST_SEMI
        if semi not in SEMI_HEADS:
            make_semi_head(semi)  # the unknown-method error, with the nearest name
        if tgt.task.kind != "single_label":
            raise BottleneckError(f"--unlabeled is for one class per image; target {tgt.name} is {tgt.task.kind}",
                                  "drop --unlabeled")
        if head not in (None, "logreg"):
            raise BottleneckError(f"the semi-supervised heads are built around logreg; this run's head is {head}",
                                  "drop --head, or --unlabeled")
    dense = tgt.task.kind in ("segmentation", "detection")  # trained on cached feature maps
    if per_class == AUTO:  # the command line's default: 100 per class, every frame (scene) for dense targets
        per_class = None if dense else 100
    if recipe is not None:
        if dense:
            raise BottleneckError(f"recipes are for pooled features, not {tgt.task.kind}", "drop --recipe(s)")
        plan_kwargs, head_params = recipes.apply(recipe, "box" in ds.targets, head or tgt.task.default_head,
                                                 plan_kwargs, head_params or {},
                                                 mirrors=augment.mirrors_every_class(canonical_dataset(ds.name)),
                                                 single_label=tgt.task.kind == "single_label")
    if dense:
        if (plan_kwargs.pop("resize", "host") != "host" or plan_kwargs.pop("compute", "float32") != "float32"
                or plan_kwargs.pop("crop", None) is not None or (plan_kwargs.pop("views", None) or 1) > 1
                or (plan_kwargs.pop("test_views", None) or 1) > 1 or plan_kwargs.pop("stack", None)):
            raise BottleneckError("--resize device, --compute, --crop, --views, --test-views and --stack are for "
                                  f"pooled features, not {tgt.task.kind}'s maps (--no-flips sets its mirror images)",
                                  "drop them")
        if holdout_classes or loss or eval_per_class:
            raise BottleneckError(f"--holdout-classes, --loss and --eval-per-class are not for {tgt.task.kind}",
                                  "drop them: the head trains on every frame and scores every test frame")
        make = plan_segmentation if tgt.task.kind == "segmentation" else plan_detection
        return make(base, ds, per_class, seed, tgt, head, dict(head_params or {}), **plan_kwargs)
    given = [k for k in _SEGMENTATION_ONLY if k in plan_kwargs]
    if given:
        raise BottleneckError(f"{', '.join(given)} only apply to segmentation and detection; {tgt.name} is "
                              f"{tgt.task.kind}",
                              "drop --precision / --no-flips")
    if loss is not None:
        if not isinstance(tgt.task, MultiLabel):
            raise BottleneckError(f"--loss is for multi-label targets; {tgt.name} is {tgt.task.kind}",
                                  "drop --loss")
        tgt = dataclasses.replace(tgt, task=MultiLabel(tgt.task.labels, tgt.task.groups, loss))
    head, params = _head_for(head, tgt, dict(head_params or {}), seed, semi)
    if loss is not None and head not in ("dense", "mlp"):
        log.warning("--loss %s not used by the %s head, which fits one model per label and per group (ignored); it "
                    "applies to --head dense or mlp", loss, head)
    held = None
    if holdout_classes:
        if tgt.draw_key == "class" or not ds.class_names:
            raise BottleneckError(f"holding out classes needs a target that describes classes (e.g. gtsrb's "
                                  f"attributes); {tgt.name} of {ds.name} is not one",
                                  "a class never seen in training cannot be predicted as a class")
        ds, held = ds.holding_out(holdout_classes), tuple(ds.class_ids(holdout_classes))
    views, test_views = plan_kwargs.pop("views", None) or 1, plan_kwargs.pop("test_views", None) or 1
    stack = plan_kwargs.pop("stack", None) or ()

    def both(base_name: str, kwargs: dict) -> tuple[Plan, Plan]:
        return (plan(base_name, ds, "train", per_class, seed, target=tgt.name, views=views, **kwargs),
                plan(base_name, ds, eval_split, eval_per_class, EVAL_SEED, target=tgt.name, views=test_views,
                     for_test=True, **kwargs))

    def unlabeled_rows(base_name: str, kwargs: dict) -> Plan:
        return plan(base_name, ds, "train", per_class, seed, target=tgt.name, unlabeled=unlabeled, **kwargs)

    tr, te = both(base, plan_kwargs)
    parts, pool = [], []
    for part in stack:
        parts.append(both(*stacking.parse(part, tr.spec.name, plan_kwargs)))
    if unlabeled is not None:
        pool = [unlabeled_rows(base, plan_kwargs)] + [unlabeled_rows(*stacking.parse(part, tr.spec.name, plan_kwargs))
                                                     for part in stack]
    return Run(tr, te, tgt, head, params, seed, eval_per_class, held, recipe, tuple(parts),
               unlabeled, semi if unlabeled is not None else None, tuple(pool))


def train(base: str, dataset: str | Dataset, per_class: int | None = 100, seed: int = 0, head: str | None = None, *,
          target: str | None = None, eval_per_class: int | None = None, eval_split: str = "test",
          head_params: dict | None = None, holdout_classes=None, loss: str | None = None,
          out: str | Path | None = None, plots: bool = False, recipe: str | None = None,
          unlabeled: int | str | None = None, semi: str | None = None, **extract_kwargs) -> dict:
    """Extract what is missing, train ``head`` (the target's default when None) on the
    per-class draw, score it on the test split. Returns one result row: every setting,
    the metrics and timings (kept in ``out`` when given, with the target's pictures).
    ``unlabeled``/``semi``: see :func:`plan_run`."""
    plan_kwargs, options = split_kwargs(extract_kwargs)
    r = plan_run(base, dataset, per_class, seed, target=target, head=head, head_params=head_params,
                 eval_per_class=eval_per_class, eval_split=eval_split, holdout_classes=holdout_classes, loss=loss,
                 recipe=recipe, unlabeled=unlabeled, semi=semi, **plan_kwargs)
    fitted = execute_fitted(r, options)
    if out:
        keep(ResultsDir(out), r, fitted, plots)
        if plots:
            write_report(out, draw=False)
    elif plots:
        raise BottleneckError("--plots needs --out (the folder the pictures go to)", "add --out FOLDER")
    return fitted.row


def execute(r: Run, options: RunOptions | None = None) -> dict:
    """Extract what is missing, join the target, train the head, score it: the result row."""
    return execute_fitted(r, options).row


def execute_fitted(r: Run, options: RunOptions | None = None) -> Fitted:
    """``execute``, keeping the fitted head and the features (for export, predictions, pictures)."""

    if isinstance(r, SegRun):
        fitted, frames, history = execute_segmentation(r, options)
        fitted.frames, fitted.history = frames, history
        return fitted
    if isinstance(r, DetRun):
        fitted, _ = execute_detection(r, options)
        return fitted
    options = options or RunOptions()
    with engine_session(options):
        tr, te = run(r.train, options), run(r.test, options)
        tr = stacking.stacked(tr, [run(p, options) for p, _ in r.parts])
        te = stacking.stacked(te, [run(p, options) for _, p in r.parts])
        pool = stacking.stacked(run(r.pool[0], options), [run(p, options) for p in r.pool[1:]]) if r.pool else None
    te = augment.averaged(te)  # test-time views: one row per image, the mean of its views' features
    y_tr = augment.join(r.target, r.train.samples, tr)
    y_te = r.target.join(r.test.samples, te.source_ids)
    fitted = fit_head(tr, te, y_tr, y_te, r.target, r.head, r.seed, r.head_params, semi=r.semi, unlabeled=pool)
    fitted.row.update(eval_per_class=r.eval_per_class, drawn_per_class=_drawn(r.train),
                      holdout_classes=list(r.holdout_classes) if r.holdout_classes else None, recipe=r.recipe,
                      unlabeled=r.unlabeled or 0)
    return fitted


def keep(results: ResultsDir, r: Run, fitted: Fitted, plots: bool = False) -> dict:
    """Keep a finished row in the results folder with its predictions on the test images, and
    its pictures: all of them with ``plots``; a multi-label run's precision/recall picture always."""

    if fitted.row["task"] == "segmentation":
        pages.save_segmentation(results, r.key, fitted, r.target.task)
    elif fitted.row["task"] == "detection":
        shown, images, scales = shown_scenes(r, fitted.test, fitted.y_test)
        pages.save_detection(results, r.key, fitted.y_test, fitted.frames, fitted.test.source_ids,
                             r.target.task.class_names, fitted.extra["curves"], shown, images, scales,
                             fitted.history)
    else:
        pages.save_predictions(results, r.key, fitted, r.test)
    row = results.add(r.key, fitted.row)
    if plots:
        row["plots"] = pages.draw_run(results, row)
    elif isinstance(r.target.task, MultiLabel):
        folder = inside_folder(results.out, "plots", r.key)
        precision_recall_scatter(row, folder / "precision_recall.png")
        row["plots"] = [f"plots/{r.key}/precision_recall.png"]
    if row.get("plots"):
        row = results.add(r.key, row)
    fitted.row.update(plots=row.get("plots"))
    return row


def _drawn(p: Plan) -> str:
    """How many training images each class got: '100', or '34-50' when some had fewer
    ('' for images without classes)."""
    labels = p.samples.labels[p.selected]
    labels = labels[labels >= 0]
    if not len(labels):
        return ""
    counts = np.bincount(labels)
    counts = counts[counts > 0]
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


# What a training row takes from a feature file's settings record.
RECORDED = ("base", "dataset", "per_class", "weights", "layer", "pooling", "image_size")


def check_features(tr: FeatureSet, te: FeatureSet, base: str | None = None, dataset: str | None = None) -> None:
    """Refuse training and test features that do not belong together, or are not what was asked."""
    for fs in (tr, te):
        s = fs.settings
        missing = [k for k in RECORDED if k not in s]
        if missing:
            raise CacheError(f"{fs.path} has no {', '.join(missing)} in its settings record",
                             "use feature files made by `bottleneck extract`")
        if base is not None and s["base"] != base:
            raise CacheError(f"{fs.path} holds features of base {s['base']}, not {base}",
                             "pass the file extracted with the base you asked for, or drop --base")
        if dataset is not None and s["dataset"] != canonical_dataset(dataset):
            raise CacheError(f"{fs.path} holds features of dataset {s['dataset']}, not {dataset}",
                             "pass the file extracted from the dataset you asked for, or drop --dataset")
    a, b = tr.settings, te.settings
    differ = [k for k in ("dataset", "base", "weights", "layer", "pooling", "image_size", "preprocessing",
                          "extractor", "test_fraction", "resize", "compute", "crop") if a.get(k) != b.get(k)]
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
    """Train ``head`` on cached training features and score it on test features, with the
    class labels the files hold (``train --features``)."""
    check_features(tr, te, base, dataset)
    for fs in (tr, te):
        labels = np.asarray(fs.labels)
        if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) and (
                labels.min() < 0 or labels.max() >= max(1, len(fs.class_names))):
            raise CacheError(f"{fs.path} holds labels that are not class numbers below its {len(fs.class_names)} "
                             "classes", "train on files extracted for a class target")
    return fit_and_score(tr, te, tr.labels, te.labels, class_target(tr.class_names), head, seed, head_params or {})


def fit_and_score(tr: FeatureSet, te: FeatureSet, y_tr, y_te, target: Target, head: str, seed: int,
                  head_params: dict) -> dict:
    """Fit the head on (features, targets) and score it with the target's metrics: the row."""
    return fit_head(tr, te, y_tr, y_te, target, head, seed, head_params).row


def fit_head(tr: FeatureSet, te: FeatureSet, y_tr, y_te, target: Target, head: str, seed: int,
             head_params: dict, semi: str | None = None, unlabeled: FeatureSet | None = None) -> Fitted:
    """``fit_and_score``, keeping the fitted head. ``unlabeled``: rows learnt from by the
    semi-supervised head ``semi`` without their labels (each given as ``UNLABELED``)."""
    check_features(tr, te)
    X, y, groups = tr.features, np.asarray(y_tr), np.asarray(tr.groups)
    if unlabeled is not None:
        check_features(unlabeled, te)
        if set(unlabeled.source_ids) & set(tr.source_ids):
            raise CacheError(f"{unlabeled.path.name} holds images of the labelled draw {tr.path.name}",
                             "extract the unlabeled rows with the run's own draw (--unlabeled)")
        X = np.concatenate([X.reshape(len(X), -1), unlabeled.features.reshape(len(unlabeled), -1)])
        y = np.concatenate([y, np.full(len(unlabeled), UNLABELED, dtype=y.dtype)])  # never the rows' own labels
        # nor their groups: a group can name the class (GTSRB's "class/track"); each row its own
        groups = np.concatenate([groups.astype(str), [f"unlabeled-{i}" for i in range(len(unlabeled))]])
    task = target.task
    t = time.perf_counter()
    model = _make(head, semi, seed, _task_arg(target), head_params)
    model.fit(X, y, groups=groups)
    train_seconds = time.perf_counter() - t
    baseline = np.asarray(y_tr, np.float64).mean(axis=0) if task.kind == "regression" else None
    metrics = {k: round(float(v), 6) for k, v in model.evaluate(te.features, y_te, baseline=baseline).items()}
    s = tr.settings
    row = {
        "base": s["base"], "dataset": s["dataset"], "target": target.name, "task": task.kind,
        "per_class": s["per_class"], "draw": s.get("draw"), "seed": seed, "head": head,
        "weights": s["weights"], "layer": s["layer"], "pooling": s["pooling"], "image_size": s["image_size"],
        "test_fraction": s.get("test_fraction"), "resize": s.get("resize"), "compute": s.get("compute"),
        "crop": s.get("crop"), "views": s.get("augment_views", 1), "test_views": te.info.get("averaged_views", 1),
        "stack": "+".join(s["stack"]) if s.get("stack") else None,
        "unlabeled": 0, "semi": semi, "n_unlabeled": len(unlabeled) if unlabeled is not None else 0,
        "n_train": len(tr), "n_test": len(te), "n_classes": len(tr.class_names),
        "metric": task.main_metric, "score": metrics[task.main_metric],
    }
    if task.kind == "single_label":
        row["accuracy"] = metrics["accuracy"]  # the classic column, kept
    if isinstance(task, MultiLabel) and task.loss != "grouped":
        row["loss"] = task.loss
    row.update({
        "metrics": metrics,
        "extracted_images": tr.info.get("extracted", 0) + te.info.get("extracted", 0),
        "extract_seconds": round(tr.info.get("seconds", 0) + te.info.get("seconds", 0), 3),
        "images_per_second": _rate(tr, te), "extract_stages": stages_of([tr, te]),
        "train_seconds": round(train_seconds, 3),
        "train_cache": tr.path.name, "test_cache": te.path.name,
        "head_params": json.dumps({k: v for k, v in model.get_params().items() if k != "task"}, sort_keys=True),
    })
    if getattr(model, "cv_scores_", None):  # a searched C: what was chosen, and on what evidence
        row["chosen_C"] = model.C_
        row["cv_accuracy"] = {str(c): round(v, 4) for c, v in model.cv_scores_.items()}
    return Fitted(row, model, tr, te, np.asarray(y_te))


def _rate(*sets) -> float:
    done = sum(fs.info.get("extracted", 0) for fs in sets)
    secs = sum(fs.info.get("seconds", 0) for fs in sets if fs.info.get("extracted"))
    return round(done / secs, 2) if done and secs else 0.0
