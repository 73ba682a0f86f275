"""Detect, then classify: a detector of GTSDB's four categories finds the signs, and a sign
classifier trained on GTSRB's cropped signs names each box (one of the 43 classes of the
box's category). Measured against the direct 43-class detector (docs/guide/detection.md).

Each box of a test scene becomes one sample of a crop split: the scene's file with the box
as its "sign box", so the classifier's recipe crops it exactly as it crops GTSRB's training
images (box + 10% a side with ``best``) and the features are cached like any others; the
GTSRB training features come from the cache already made for GTSRB's runs.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bottleneck.core.boxes import coco_metrics
from bottleneck.core.errors import BottleneckError
from bottleneck.core.tasks import Regression, box_iou
from bottleneck.data.datasets import load_dataset
from bottleneck.data.sources import Dataset, FileSource, Split
from bottleneck.data.targets import Target, class_target
from bottleneck.experiments.run import execute_fitted, plan_run
from bottleneck.extraction.maps import frame_size
from bottleneck.extraction.plan import RunOptions

PER_SCENE = 20  # a test scene's best detections that are classified (COCO scores at most 100)


def crops_dataset(classes_from: Dataset, scenes: Dataset, found: list[np.ndarray], per_scene: int = PER_SCENE,
                  truth: list[np.ndarray] | None = None) -> tuple[Dataset, list[tuple[int, int]]]:
    """``classes_from``'s training split, and as its test split one sample per detection (the
    ``per_scene`` best of each test scene of ``scenes``): the scene's file, the box as the
    sample's sign box. Labels: the class of the true object the box overlaps with IoU >= .5
    (-1 where none), for the classifier's accuracy on real signs only. Returns the dataset and
    (scene, detection) of each crop."""
    test = scenes.split("test")
    ids, rel, boxes, labels, where = [], [], {}, [], []
    for i, det in enumerate(found):
        w, h = frame_size(test, i)
        for k, (x1, y1, x2, y2, _, _) in enumerate(np.asarray(det)[:per_scene]):
            sid = f"{test.ids[i]}@{k}"
            ids.append(sid)
            rel.append(test.source.rel[i])
            boxes[sid] = (x1 / w, y1 / h, x2 / w, y2 / h)
            label = -1
            if truth is not None and len(truth[i]):
                iou = box_iou(np.repeat([[x1, y1, x2, y2]], len(truth[i]), axis=0), truth[i][:, :4])
                label = int(truth[i][iou.argmax(), 4]) if iou.max() >= 0.5 else -1
            labels.append(label)
            where.append((i, k))
    if not ids:
        raise BottleneckError("the category detector found nothing in the test scenes", "train it longer")
    crops = Split(ids, np.asarray(labels, np.int64), list(ids), FileSource(test.source.root, rel))
    train = classes_from.split("train")
    gtsrb_box = classes_from.target("box")

    def box_values(split) -> np.ndarray:
        if split is crops:
            return np.array([boxes[sid] for sid in split.ids], np.float64)
        return gtsrb_box.values(split)

    box = Target("box", Regression(("x1", "y1", "x2", "y2"), ((0.0, 1.0),) * 4, boxes=True),
                 "the detection's box", box_values)
    ds = dataclasses.replace(classes_from, splits={"train": train, "test": crops},
                             targets={"class": class_target(classes_from.class_names), "box": box})
    return ds, where


def name_boxes(found: list[np.ndarray], where: list[tuple[int, int]], probs: np.ndarray, groups):
    """Each detection (scene i, box k: its category in column 4) named by the classifier's
    probabilities ``probs`` (one row per (i, k) in ``where``): the most probable class of the
    box's category, scored by the detection's score times that class's share of the
    category's probability. Returns (per scene (m, 6) detections of classes, the class chosen
    for each crop)."""
    named: list[list] = [[] for _ in found]
    chosen = np.empty(len(where), np.int64)
    for j, ((i, k), p) in enumerate(zip(where, probs)):
        x1, y1, x2, y2, category, score = found[i][k]
        members = list(groups[int(category)][1])
        share = p[members] / max(float(p[members].sum()), 1e-12)
        best = int(np.argmax(share))
        chosen[j] = members[best]
        named[i].append((x1, y1, x2, y2, members[best], score * share[best]))
    return [np.asarray(n, np.float32).reshape(-1, 6) for n in named], chosen


def detect_then_classify(base: str = "efficientnet_lite0", *, data_dir=None, cache_dir="features", seed: int = 0,
                         detector_params: dict | None = None, classifier_recipe: str | None = "best",
                         classifier_per_class: int | None = None, per_scene: int = PER_SCENE,
                         classifier_cache_dir=None, options: RunOptions | None = None, **plan_kwargs) -> dict:
    """Train GTSDB's category detector and a GTSRB sign classifier (``classifier_recipe``,
    ``classifier_per_class`` images a class: all by default), name each detected box with the
    classifier's most probable class within the box's category, score boxes by the detection's
    score times that class's share of the category's probability, and score the result on
    GTSDB's 43 classes as the direct detector is. Returns {"metrics": COCO's figures on the
    signs, "detector": the category run's row, "classifier": its row, "crop_accuracy": the
    classifier's accuracy on the boxes that overlap a true sign (IoU >= .5)}.
    ``classifier_cache_dir``: where GTSRB's features are cached (``cache_dir`` by default)."""
    options = options or RunOptions(progress=False)
    scenes = load_dataset("gtsdb", data_dir)
    signs = scenes.target("signs")
    gtsrb = load_dataset("gtsrb", data_dir)
    if tuple(signs.task.class_names) != tuple(gtsrb.class_names):
        raise BottleneckError("GTSDB's sign classes and GTSRB's differ", "use GTSRB's 43 classes, in their order")
    groups = signs.task.groups
    det = execute_fitted(plan_run(base, scenes, None, seed, target="categories", head_params=detector_params,
                                  data_dir=data_dir, cache_dir=cache_dir, **plan_kwargs), options)
    found = det.frames
    truth = list(signs.values(scenes.split("test")))
    ds, where = crops_dataset(gtsrb, scenes, found, per_scene, truth)
    r = plan_run(base, ds, classifier_per_class, seed, recipe=classifier_recipe, data_dir=data_dir,
                 cache_dir=classifier_cache_dir or cache_dir, **plan_kwargs)
    clf = execute_fitted(r, options)
    probs = clf.model.predict_proba(clf.test.features)
    order = {sid: k for k, sid in enumerate(clf.test.source_ids)}
    probs = probs[[order[sid] for sid in ds.split("test").ids]]
    named, chosen = name_boxes(found, where, probs, groups)
    labels = ds.split("test").labels
    real = labels >= 0
    metrics = coco_metrics(truth, named, signs.task.class_names, groups)
    return {"metrics": {k: round(v, 6) for k, v in metrics.items() if np.isfinite(v)}, "detector": det.row,
            "classifier": clf.row, "crops": int(len(labels)), "crops_on_signs": int(real.sum()),
            "crop_accuracy": float(np.mean(chosen[real] == labels[real])) if real.any() else float("nan")}
