"""Result rows on disk, and the tables made from them.

A results folder (``--out``) keeps one JSON file per finished run under ``rows/``,
written atomically the moment the run finishes, so a grid stopped at any point (an
error, Ctrl-C, a kill) keeps every finished run, and running it again reuses them.
``results.csv``, ``results.json`` and ``table.md`` are remade from all rows in the
folder after each run, under a lock, each file replaced atomically: two grids
writing into one folder both keep their rows, and a reader never sees half a file.
"""
from __future__ import annotations

import csv
import datetime
import io
import json
import logging
import math
import re
from pathlib import Path

import numpy as np

from bottleneck.core.errors import BottleneckError
from bottleneck.core.files import atomic_write, file_lock, inside_folder
from bottleneck.core.text import spreadsheet_safe
from bottleneck.core.userfiles import read_text

log = logging.getLogger("bottleneck")

# Settings that tell runs apart in a table when they differ between rows (besides base and dataset).
VARYING = ("recipe", "unlabeled", "semi", "head", "weights", "layer", "pooling", "image_size", "resize", "compute",
           "crop", "views", "test_views", "stack", "head_params", "test_fraction", "eval_per_class", "loss",
           "holdout_classes")


# Settings a named recipe fixes (bottleneck.recipes).
RECIPE_SET = ("crop", "views", "test_views", "stack", "head_params")


# A run's key names its files (rows/<key>.json, rows/<key>.npz, plots/<key>/): the hex fingerprint
# it is, or a row kept from an older version's results.json; nothing that could name another place.
RUN_KEY = re.compile(r"(?:[0-9a-f]{8,64}|earlier-[0-9]{4,6})")


def is_run_key(key) -> bool:
    return isinstance(key, str) and RUN_KEY.fullmatch(key) is not None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# What every kept row has, and what each of these must be (a row read from a folder is checked).
ROW_FIELDS = {
    "base": (lambda v: isinstance(v, str), "a name"),
    "dataset": (lambda v: isinstance(v, str), "a name"),
    "head": (lambda v: isinstance(v, str), "a name"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a whole number"),
    "per_class": (lambda v: v is None or isinstance(v, int) and not isinstance(v, bool), "a whole number or null"),
}
OPTIONAL_FIELDS = {
    "score": (_number, "a number"),
    "accuracy": (_number, "a number"),
    "metrics": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and (v_ is None or _number(v_))
                                                     for k, v_ in v.items()), "an object of numbers"),
    "metric": (lambda v: isinstance(v, str), "a name"),
    "target": (lambda v: isinstance(v, str), "a name"),
    "task": (lambda v: isinstance(v, str), "a name"),
    "finished": (lambda v: isinstance(v, str), "a time"),
    "recipe": (lambda v: v is None or isinstance(v, str), "a name or null"),
    "unlabeled": (lambda v: v == "all" or isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  "a whole number or 'all'"),
    "semi": (lambda v: v is None or isinstance(v, str), "a name or null"),
    "head_params": (lambda v: v is None or isinstance(v, (str, dict)), "an object"),
    "plots": (lambda v: v is None or isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of paths"),
}


def check_row(row, where: str) -> dict:
    """``row`` if it is a result row the tables can use; a BottleneckError saying what is wrong otherwise."""
    def bad(what: str):
        raise BottleneckError(f"{where} is not a result row: {what}", "remove it, or run that run again")

    if not isinstance(row, dict):
        bad(f"it holds a JSON {type(row).__name__}, not an object")
    for key, (ok, what) in ROW_FIELDS.items():
        if key not in row:
            bad(f"it has no {key}")
        if not ok(row[key]):
            bad(f"its {key} is {json.dumps(row[key])[:60]}, not {what}")
    for key, (ok, what) in OPTIONAL_FIELDS.items():
        if key in row and not ok(row[key]):
            bad(f"its {key} is {json.dumps(row[key])[:60]}, not {what}")
    if not _number(row.get("score", row.get("accuracy"))):
        bad("it has no score")
    return row


class ResultsDir:
    """The rows of every run finished into one folder."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.rows_dir = self.out / "rows"
        try:
            if self.out.exists() and not self.out.is_dir():
                raise OSError(f"{self.out} is a file")
            self.out.mkdir(parents=True, exist_ok=True)
            inside_folder(self.out, "rows")  # (a planted symlink rows/ would take the rows elsewhere)
        except OSError as e:
            raise BottleneckError(f"cannot write results in --out {self.out}: {getattr(e, 'strerror', None) or e}",
                                  "pass a folder you can write to (it is created if missing)") from e
        self._adopt_legacy()

    def _adopt_legacy(self) -> None:
        """A folder written by an older bottleneck has results.json but no rows/: keep its rows."""
        legacy = self.out / "results.json"
        if legacy.exists() and not any(self.rows_dir.glob("*.json")):
            try:
                rows = json.loads(read_text(legacy, "table"))
            except (OSError, ValueError, RecursionError, BottleneckError) as e:
                log.warning("%s cannot be read (%s); its rows are not kept", legacy, getattr(e, "what", e))
                return
            for i, row in enumerate(rows if isinstance(rows, list) else []):
                atomic_write(self.rows_dir / f"earlier-{i:04d}.json", json.dumps(row, indent=1))
            log.warning("%s held results from an earlier version; kept them as rows/earlier-*.json", self.out)

    def _read(self, path: Path) -> dict:
        """One row file, checked: a regular JSON file of at most 16 MB holding a row (its key its name)."""
        try:
            row = check_row(json.loads(read_text(path, "text file")), str(path))
        except (ValueError, RecursionError) as e:  # (RecursionError: JSON nested thousands deep)
            raise BottleneckError(f"{path} is not JSON: {str(e)[:100]}", "remove it, or run that run again") from None
        return {**row, "run_key": path.stem}

    def get(self, key: str) -> dict | None:
        """The finished row of the run ``key``, or None (also for a row that cannot be used: it is run again)."""
        if not is_run_key(key):
            raise BottleneckError(f"{key!r} is not a run key", "run keys are the hex names under rows/")
        try:
            return self._read(self.rows_dir / f"{key}.json")
        except FileNotFoundError:
            return None
        except (OSError, BottleneckError) as e:
            log.warning("result row %s cannot be used (%s); the run is made again", key, getattr(e, "what", e))
            return None

    def rows(self) -> list[dict]:
        """Every usable row; a file that is not one is named in a warning and left out."""
        rows = []
        for path in sorted(self.rows_dir.glob("*.json")):
            if not is_run_key(path.stem):
                log.warning("ignoring %s: its name is not a run key", path)
                continue
            try:
                rows.append(self._read(path))
            except (OSError, BottleneckError) as e:
                log.warning("ignoring result row %s: %s", path, getattr(e, "what", e))
        return sorted(rows, key=lambda r: (str(r.get("finished", "")), str(r.get("run_key", ""))))

    def add(self, key: str, row: dict) -> dict:
        """Keep a finished row and remake the tables from every row in the folder; returns the row kept."""
        if not is_run_key(key):
            raise BottleneckError(f"{key!r} is not a run key", "this is a bug: please report it")
        row = {**row, "run_key": key,
               "finished": row.get("finished")
               or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        with file_lock(self.out / ".lock"):  # two grids into one folder take turns
            atomic_write(self.rows_dir / f"{key}.json", json.dumps(row, indent=1))
            write_tables(self.rows(), self.out)
        return row


def write_results(rows: list[dict], out: str | Path) -> None:
    """Write ``rows`` as results.csv, results.json and table.md in ``out`` (each atomically)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_tables(rows, out)


def write_tables(rows: list[dict], out: Path) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))  # rows of different kinds: the union of columns
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    # (text cells that a spreadsheet would run as formulas are quoted: see core.text)
    writer.writerows([{k: spreadsheet_safe(json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in r.items()}
                      for r in rows])
    atomic_write(out / "results.csv", buf.getvalue())
    atomic_write(out / "results.json", json.dumps(rows, indent=2) + "\n")
    atomic_write(out / "table.md", markdown_table(rows) + "\n")


def _params(row: dict) -> dict:
    """A row's head parameters; the head's seed is the run's seed, not a setting."""
    value = row.get("head_params")
    params = json.loads(value or "{}") if isinstance(value, str) else dict(value or {})
    return {k: v for k, v in params.items() if k not in ("seed", "verbose")}


def _setting(row: dict, key: str) -> str:
    """A row's value of ``key``, as compared between rows and shown in labels."""
    if key == "head_params":
        return json.dumps(_params(row), sort_keys=True)
    value = row.get(key)
    if key == "unlabeled" and value is None:  # a row from before unlabeled images: none
        value = 0
    if key == "weights" and isinstance(value, str) and len(value) > 24:
        value = value[:24] + "..."
    return f"{key}={value}"


class _Labeller:
    """Row labels that name only what tells runs apart: the base, then the head and any other
    setting that differs between runs of one base (and of the head parameters, only those that
    differ between runs of one head)."""

    def __init__(self, rows: list[dict]):
        # A key is named when it differs between runs of one base; what a recipe sets (a crop where
        # there are boxes, a C search) only when it differs between runs of one recipe on one dataset.
        def group(r: dict, key: str) -> tuple:
            if key in RECIPE_SET and r.get("recipe"):
                return r["base"], r["recipe"], r["dataset"]
            return (r["base"],)

        self.varying = [k for k in VARYING if any(
            len({_setting(r, k) for r in rows if group(r, k) == g}) > 1 for g in {group(r, k) for r in rows})]
        self.param_keys = {}  # per head, a semi-supervised one apart (it has parameters of its own)
        for head in {_head_of(r) for r in rows}:
            mine = [_params(r) for r in rows if _head_of(r) == head]
            keys = set().union(*mine)
            self.param_keys[head] = sorted(k for k in keys if len({json.dumps(p.get(k)) for p in mine}) > 1)

    def __call__(self, row: dict) -> str:
        parts = [f"{row['head']} head"] if "head" in self.varying else []
        for key in self.varying:
            if key == "head_params":
                params = _params(row)
                parts += [f"{k}={params.get(k)}" for k in self.param_keys[_head_of(row)]]
            elif key != "head" and (row.get(key) is not None or key == "unlabeled"):
                parts.append(_setting(row, key))
        return f"{row['base']} ({'; '.join(parts)})" if parts else row["base"]


def _head_of(row: dict) -> tuple:
    return row["head"], row.get("semi")


def _score(row: dict) -> float:
    return row.get("score", row.get("accuracy"))


def markdown_table(rows: list[dict]) -> str:
    """One table per target: rows are bases (and whatever else differs between runs, such as
    the head); columns are datasets (and per-class limits when several); cells are the mean ±
    std of the target's main metric over seeds. Runs made differently are never averaged."""
    if not rows:
        return "(no results)"
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("target", "class"), r.get("task", "single_label"), r.get("metric", "accuracy")),
                          []).append(r)
    if len(groups) == 1 and next(iter(groups))[0] == "class":
        return _table(rows, "accuracy")  # the classic table, as it always looked
    return "\n\n".join(f"**target {target}** ({task}): {metric}\n\n" + _table(group, metric)
                        for (target, task, metric), group in groups.items())


def _table(rows: list[dict], metric: str) -> str:
    label = _Labeller(rows)
    labels = list(dict.fromkeys(label(r) for r in rows))
    limits = list(dict.fromkeys(r["per_class"] for r in rows))
    columns = [(d, n) for d in dict.fromkeys(r["dataset"] for r in rows) for n in limits]

    def title(d, n):
        return d if len(limits) == 1 else f"{d} N={n if n is not None else 'all'}"

    heads = sorted({str(r["head"]) for r in rows})
    corner = "base" if "head" in label.varying else f"base ({', '.join(heads)} head)"
    lines = [f"| {corner} | " + " | ".join(title(d, n) for d, n in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in labels:
        cells = []
        for d, n in columns:
            vals = [_score(r) for r in rows if (label(r), r["dataset"], r["per_class"]) == (name, d, n)]
            if not vals:
                cells.append("")
            elif len(vals) == 1:
                cells.append(f"{vals[0]:.3f}")
            else:
                cells.append(f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in rows})
    held = sorted({str(r["holdout_classes"]) for r in rows if r.get("holdout_classes")})
    lines.append("")
    lines.append(f"{metric} on each dataset's test split" + ("; a row with held-out classes is scored on their "
                                                            "test images only" if held else "")
                 + f"; mean ± std over seeds {seeds}"
                 + ("; every training frame" if all(r.get("task") == "segmentation" for r in rows)
                    else "; every training scene" if all(r.get("task") == "detection" for r in rows)
                    else "; N = training images per class"))
    return "\n".join(lines)


def recipe_costs(rows: list[dict]) -> str:
    """What each recipe cost in this command: images run through a base, extraction and head
    seconds (a cache file two recipes share is counted for the first that made it)."""
    lines = []
    for name in dict.fromkeys(r.get("recipe") for r in rows):
        mine = [r for r in rows if r.get("recipe") == name and not r.get("reused_row")]
        images = sum(r.get("extracted_images", 0) for r in mine)
        extract = sum(r.get("extract_seconds", 0) for r in mine)
        heads = sum(r.get("train_seconds", 0) for r in mine)
        lines.append(f"recipe {name}: {images} images run through the bases in {extract:.0f} s, heads trained in "
                     f"{heads:.0f} s ({len(mine)} runs this time)")
    return "\n".join(lines)


log = logging.getLogger("bottleneck")
