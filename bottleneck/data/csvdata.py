"""A user's own targets in a CSV, beside their images.

``multilabel:PATH.csv``: columns ``file,labels[,is_valid]``; ``labels`` holds an image's
labels separated by spaces (fastai's convention), possibly none.
``regression:PATH.csv``: columns ``file,target1,target2,...[,is_valid]``, numbers.

File paths are relative to the CSV's folder and may not leave it. Rows whose
``is_valid`` is true (1, true, yes) form the test split, as in fastai; without that column
there is no test split (``--test-fraction`` makes one). An optional declaration beside the
CSV, ``PATH.task.json``, says more: for multi-label ``{"groups": {"lanes": ["one", "two"]},
"labels": [...], "loss": "bce"}`` (exclusive groups; the full label list, so that an
unknown label is an error), for regression ``{"ranges": {"x": [0, 1]}, "boxes": true}``.
Every bad row is an error naming its line.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from bottleneck.core.errors import DatasetError
from bottleneck.core.tasks import MultiLabel, Regression, TaskError
from bottleneck.core.userfiles import read_text
from bottleneck.data.sources import Dataset, FileSource, Split, inside, is_file_there
from bottleneck.data.targets import Target

_TRUE, _FALSE = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f", ""}


def _is_text_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _is_range(v) -> bool:
    return (isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                       and np.isfinite(x) for x in v) and v[0] < v[1])


# What a declaration may say, for each kind of CSV: key -> (check, what it must be).
DECLARATION = {
    "multilabel": {"labels": (_is_text_list, "a list of label names"),
                   "groups": (lambda v: isinstance(v, dict) and all(_is_text_list(m) for m in v.values()),
                              'an object of groups, each a list of labels: {"lanes": ["one", "two"]}'),
                   "loss": (lambda v: isinstance(v, str), 'a loss name, e.g. "bce" or "grouped"')},
    "regression": {"ranges": (lambda v: isinstance(v, dict) and all(_is_range(r) for r in v.values()),
                              'an object of [low, high] per column, low < high: {"x": [0, 1]}'),
                   "boxes": (lambda v: isinstance(v, bool), "true or false")},
}


def _declaration(path: Path, kind: str) -> dict:
    decl = path.with_suffix(".task.json")
    if not decl.exists():
        return {}
    try:
        data = json.loads(read_text(decl, "text file"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"cannot read {decl}: {str(e)[:200]}", "it must be a JSON object") from None
    if not isinstance(data, dict):
        raise DatasetError(f"{decl} is not a JSON object", 'e.g. {"groups": {"lanes": ["one", "two"]}}')
    allowed = DECLARATION[kind]
    for key, value in data.items():
        if key not in allowed:  # an unknown key would do nothing, silently
            raise DatasetError(f"{decl}: {key!r} means nothing for {kind} targets",
                               f"it may say: {', '.join(allowed)}")
        check, what = allowed[key]
        if not check(value):
            raise DatasetError(f"{decl}: {key} is {json.dumps(value)[:80]}, not {what}", f"fix {key} in {decl.name}")
    return data


def read_target_csv(path: Path, kind: str, name: str):
    """A Dataset of the CSV's images, with its one target (``labels`` or ``values``)."""

    if not path.is_file():
        raise DatasetError(f"{kind} CSV {path} does not exist", f"check the path after {kind}:")
    root = path.parent
    try:
        rows = list(csv.reader(io.StringIO(read_text(path, "table", errors="replace"), newline="")))
    except csv.Error as e:
        raise DatasetError(f"{path} is not a readable CSV: {e}", "save it as a plain comma-separated file") from None
    if len(rows) < 2:
        raise DatasetError(f"{path} has no rows", "write a header, then one row per image")
    header = [h.strip() for h in rows[0]]
    valid_col = header.index("is_valid") if "is_valid" in header else None
    value_cols = [j for j in range(1, len(header)) if j != valid_col]
    if not value_cols:
        raise DatasetError(f"{path} has no target column", "columns: file, then the targets")
    files, values, test = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        where = f"{path}, line {line}"
        if len(row) != len(header):
            raise DatasetError(f"{where}: {len(row)} fields where the header has {len(header)}", "fix that row")
        rel = row[0].strip()
        if not rel or not inside(root, rel) or not is_file_there(root / rel):
            raise DatasetError(f"{where}: image {rel!r} is not a file inside {root}",
                               "paths are relative to the CSV's folder")
        if valid_col is not None:
            flag = row[valid_col].strip().lower()
            if flag not in _TRUE | _FALSE:
                raise DatasetError(f"{where}: is_valid is {row[valid_col]!r}", "use true/false or 1/0")
            test.append(flag in _TRUE)
        files.append(rel)
        values.append([row[j] for j in value_cols])
    decl = _declaration(path, kind)
    where = [f"{path}, line {i + 2} ({f})" for i, f in enumerate(files)]
    try:
        if kind == "multilabel":
            sets = [set(v[0].split()) for v in values]
            labels = decl.get("labels") or sorted(set().union(*sets))
            task = MultiLabel.declare(labels, decl.get("groups"), decl.get("loss", "grouped"),
                                      source=str(path.with_suffix(".task.json")))
            Y = task.encode_sets(sets, where)
            target_name = "labels"
        else:
            names = [header[j] for j in value_cols]
            Y = np.empty((len(values), len(names)))
            for i, v in enumerate(values):
                for j, text in enumerate(v):
                    try:
                        Y[i, j] = float(text)
                    except ValueError:
                        raise DatasetError(f"{where[i]}: {names[j]} is {text!r}, not a number",
                                           "fix that row") from None
            ranges = decl.get("ranges", {})
            unknown = set(ranges) - set(names)
            if unknown:
                raise DatasetError(f"{path.with_suffix('.task.json')}: ranges for unknown columns "
                                   f"{', '.join(sorted(unknown))}", f"the columns are: {', '.join(names)}")
            task = Regression(tuple(names), tuple(tuple(ranges[n]) if n in ranges else None for n in names),
                              boxes=bool(decl.get("boxes")))
            task.check(Y, where)
            target_name = "values"
    except TaskError as e:
        raise DatasetError(e.what, e.todo) from None
    by_id = {f: Y[i] for i, f in enumerate(files)}
    target = Target(target_name, task, f"the {kind} targets of {path.name}",
                    lambda s: np.stack([by_id[sid] for sid in s.ids]) if len(s) else np.empty((0, task.width)),
                    draw_key=f"labels:{target_name}" if kind == "multilabel" else "images")
    test = np.asarray(test, bool) if valid_col is not None else np.zeros(len(files), bool)
    splits = {}
    for split, mask in (("train", ~test), ("test", test)):
        rel = [f for f, m in zip(files, mask) if m]
        if rel:
            splits[split] = Split(rel, np.full(len(rel), -1, np.int64), list(rel), FileSource(root, rel))
    absent = {} if "test" in splits else {"test": f"{path.name} has no is_valid column" if valid_col is None
                                          else f"no row of {path.name} is marked is_valid"}
    if "train" not in splits:
        raise DatasetError(f"every row of {path} is marked is_valid: nothing to train on", "mark fewer rows")
    return Dataset(name, root, kind, [], splits, absent=absent, targets={target_name: target})
