"""Targets: what to predict about a dataset's images.

Cached features describe images; a target is joined to them by source id when a head
is trained, so one feature file serves every target of its images. Each dataset lists
its targets (``bottleneck datasets`` shows them); ``--target NAME`` picks one:

| dataset | target | task | what |
|---|---|---|---|
| any with classes | ``class`` (default) | single label | the class |
| gtsrb | ``attributes`` | multi-label | shape, category, colour (exclusive groups) and five independent labels, from ``data/gtsrb_attributes.json`` |
| gtsrb (Kaggle layout) | ``box`` | regression | the sign's box from Train.csv/Test.csv, divided by the image's width and height |
| camvid, ``segfolder:`` | ``segmentation`` (default) | segmentation | the class of every pixel (Void never scored) |
| camvid, ``segfolder:`` | ``presence`` | multi-label | which of the 11 classes cover at least 0.5% of the labelled pixels of a frame |
| ``multilabel:CSV`` | ``labels`` | multi-label | a CSV of ``file,labels`` (space-separated) |
| ``regression:CSV`` | ``values`` | regression | a CSV of ``file,target1,target2,...`` |
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from bottleneck.core.errors import DatasetError, nearest
from bottleneck.core.tasks import (
    MultiLabel,
    Regression,
    Segmentation,
    SingleLabel,
    Task,
)
from bottleneck.data.labelmaps import read_label_map

PRESENCE_SHARE = 0.005  # a CamVid class is "present" when it covers at least 0.5% of the labelled pixels


@dataclasses.dataclass
class Target:
    """One thing to predict about a dataset's images."""

    name: str
    task: Task
    description: str
    values_of: Callable  # Split -> np.ndarray aligned with the split's ids
    draw_key: str = "class"  # what --per-class draws follow, recorded in the cache settings

    def values(self, split) -> np.ndarray:
        return self.values_of(split)

    def join(self, split, source_ids: list[str]) -> np.ndarray:
        """The target of each cached row, by source id."""
        row = {sid: i for i, sid in enumerate(split.ids)}
        missing = [sid for sid in source_ids if sid not in row]
        if missing:
            raise DatasetError(f"{len(missing)} cached images are not in the dataset now, e.g. {missing[0]}",
                               "extract again (the dataset changed since the features were cached)")
        return self.values(split)[[row[sid] for sid in source_ids]]

    def draw(self, split, per_class: int | None, seed: int):
        """(sorted indices, {class or label: how many it had} for those short of ``per_class``)."""
        strata = split.labels if self.draw_key == "class" else None
        return self.task.draw(self.values(split), per_class, seed, strata=strata)


def pick(targets: dict[str, Target], name: str | None, dataset: str) -> Target:
    """The target called ``name`` (the dataset's first, its default, when None)."""
    if not targets:
        raise DatasetError(f"dataset {dataset} has no targets", "it has no classes and no target file")
    if name is None:
        return next(iter(targets.values()))
    if name not in targets:
        raise DatasetError(f"dataset {dataset} has no target {name!r}{nearest(name, list(targets))}",
                           f"its targets are: {', '.join(targets)}")
    return targets[name]


def class_target(class_names: list[str]) -> Target:
    return Target("class", SingleLabel(tuple(class_names)), "the class of each image", lambda s: s.labels)


def gtsrb_attribute_table() -> dict:
    return json.loads((Path(__file__).parent / "gtsrb_attributes.json").read_text())


def gtsrb_attributes() -> tuple[MultiLabel, np.ndarray]:
    """The attribute task and a (43, width) 0/1 matrix: row c describes sign class c."""
    table = gtsrb_attribute_table()
    groups = table["groups"]
    task = MultiLabel.declare(table["labels"] + [v for members in groups.values() for v in members], groups,
                              source="gtsrb_attributes.json")
    sets = []
    for c in range(len(table["classes"])):
        entry = table["classes"][str(c)]
        sets.append(set(entry["has"]) | {entry[g] for g in groups})
    return task, task.encode_sets(sets, [f"gtsrb_attributes.json, class {c}" for c in range(len(sets))])


def attribute_target() -> Target:
    task, by_class = gtsrb_attributes()
    return Target("attributes", task, "shape, category, colour and what the sign shows, by sign class",
                  lambda s: by_class[s.labels], draw_key="labels:attributes")


def box_target(read_boxes: Callable[[], dict[str, tuple]]) -> Target:
    """The sign's box (Roi.X1..Y2) divided by the image's width and height: a regression in [0, 1].
    ``read_boxes``: {source id: (width, height, x1, y1, x2, y2)}, read when first needed."""
    task = Regression(("x1", "y1", "x2", "y2"), ((0.0, 1.0),) * 4, boxes=True)
    read: dict = {}

    def values(split) -> np.ndarray:
        if not read:
            read.update(read_boxes())
        boxes = read
        out = np.empty((len(split), 4), np.float64)
        for i, sid in enumerate(split.ids):
            if sid not in boxes:
                raise DatasetError(f"no box for {sid} in Train.csv/Test.csv", "the box target needs GTSRB's CSVs")
            w, h, x1, y1, x2, y2 = boxes[sid]
            out[i] = (x1 / w, y1 / h, x2 / w, y2 / h)
        task.check(out, split.ids)
        return out

    return Target("box", task, "the sign's box, as fractions of the image's width and height", values)


def segmentation_target(class_names: list[str], void: int, maps: Callable[[str], Path]) -> Target:
    """One class per pixel, from each frame's label map (Void never a target, never scored)."""

    return Target("segmentation", Segmentation(tuple(class_names), void), "the class of every pixel",
                  lambda s: np.array([str(maps(sid)) for sid in s.ids], dtype=object), draw_key="frames")


def presence_target(class_names: list[str], void: int, maps: Callable[[str], Path]) -> Target:
    """Which classes a frame shows: those covering at least PRESENCE_SHARE of its labelled
    (non-Void) pixels. ``maps``: source id -> its label map."""

    task = MultiLabel.declare(class_names)
    cache: dict[str, np.ndarray] = {}

    def row(sid: str) -> np.ndarray:
        if sid not in cache:
            ids = read_label_map(Path(maps(sid)), None, len(class_names), void)  # ids beyond the codes: an error
            labelled = np.bincount(ids.ravel(), minlength=len(class_names))[:len(class_names)]
            cache[sid] = (labelled / max(1, labelled.sum()) >= PRESENCE_SHARE).astype(np.float32)
        return cache[sid]

    return Target("presence", task, f"the classes covering at least {PRESENCE_SHARE:.1%} of a frame's labelled "
                  "pixels", lambda s: np.stack([row(sid) for sid in s.ids]), draw_key="labels:presence")
