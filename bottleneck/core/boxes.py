"""Boxes of a detection target, and how detections are scored: COCO's evaluation
(pycocotools, the reference implementation people compare with), not a re-implementation.

A box is (x1, y1, x2, y2) in pixels of its image, x2 > x1 and y2 > y1 (continuous
coordinates: a box covering pixel columns 10..19 is x1 = 10, x2 = 20). An image's objects
are a float array of shape (n, 5): the box and the class id. Detections add a score:
(n, 6) = box, class, score.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np

EMPTY = np.zeros((0, 5), np.float32)  # an image without objects (a negative scene)
COCO_AREAS = {"small": 32 ** 2, "medium": 96 ** 2}  # COCO's split of areas: small < 32², medium < 96², large above


def boxes_array(rows) -> np.ndarray:
    """(n, 5) float32 from a list of (x1, y1, x2, y2, class)."""
    return np.asarray(rows, np.float32).reshape(-1, 5) if len(rows) else EMPTY.copy()


def mirrored(objects: np.ndarray, width: float, mirror: dict[int, int]) -> np.ndarray:
    """The objects of an image of ``width`` pixels seen in a mirror: x flipped, each class
    mapped by ``mirror`` (class -> its mirror image's class). A class absent from ``mirror``
    cannot be mirrored (a speed limit's digits): a KeyError, so such images are never flipped."""
    out = np.array(objects, np.float32, copy=True).reshape(-1, 5)
    out[:, 0], out[:, 2] = width - objects[:, 2], width - objects[:, 0]
    out[:, 4] = [mirror[int(c)] for c in objects[:, 4]]
    return out


def to_image(found: np.ndarray, sx: float, sy: float, width: int, height: int) -> np.ndarray:
    """Detections ((m, 6), boxes in canvas pixels) in their image's own pixels: x / ``sx``,
    y / ``sy``, clipped to the ``width`` x ``height`` image (in place; returned)."""
    found[:, [0, 2]] = (found[:, [0, 2]] / sx).clip(0, width)
    found[:, [1, 3]] = (found[:, [1, 3]] / sy).clip(0, height)
    return found


def coco_metrics(truth: list[np.ndarray], detections: list[np.ndarray], class_names, groups=()) -> dict:
    """COCO's AP figures (see ``coco_evaluation``)."""
    return coco_evaluation(truth, detections, class_names, groups)[0]


RECALLS = np.linspace(0, 1, 101)  # COCO's recall points


def coco_evaluation(truth: list[np.ndarray], detections: list[np.ndarray], class_names, groups=()):
    """COCO's AP over ``truth`` (per image: (n, 5) boxes and classes) and ``detections`` (per
    image: (m, 6) boxes, classes and scores), at most 100 detections an image: ``map``
    (IoU .50:.95), ``map50``, ``map75``, ``map_small/medium/large``, ``mar100``, and
    ``ap50/<class>`` for every class the test images have. With ``groups`` ((name, class
    ids) pairs), ``ap50/<group>`` is the mean AP50 of the group's classes that appear.
    Classes the test images do not have count in no mean (COCO's rule). Returns (metrics,
    curves): curves is (classes, 101) interpolated precision at IoU .50 at each of ``RECALLS``
    (NaN for a class without test objects), for precision/recall pictures."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, results = [], [], []
    for i, (gt, det) in enumerate(zip(truth, detections)):
        images.append({"id": i})
        for x1, y1, x2, y2, c in np.asarray(gt, np.float64).reshape(-1, 5):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(c), "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for x1, y1, x2, y2, c, s in np.asarray(det, np.float64).reshape(-1, 6):
            results.append({"image_id": i, "category_id": int(c), "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": annotations,
                    "categories": [{"id": k, "name": n} for k, n in enumerate(class_names)]}
    out = {"map": 0.0, "map50": 0.0, "map75": 0.0, "map_small": float("nan"), "map_medium": float("nan"),
           "map_large": float("nan"), "mar100": 0.0}
    curves = np.full((len(class_names), len(RECALLS)), np.nan)
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and tables
        coco.createIndex()
        if not annotations:
            return {**out, "map": float("nan"), "map50": float("nan"), "map75": float("nan")}, curves
        if not results:  # nothing detected: every AP is 0 (loadRes refuses an empty list)
            present = sorted({a["category_id"] for a in annotations})
            curves[present] = 0.0
            return {**out, **{f"ap50/{class_names[c]}": 0.0 for c in present},
                    **{f"ap50/{g}": 0.0 for g, members in groups if set(members) & set(present)}}, curves
        ev = COCOeval(coco, coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    out = {"map": s[0], "map50": s[1], "map75": s[2], "map_small": s[3], "map_medium": s[4], "map_large": s[5],
           "mar100": s[8]}
    out = {k: float(v) if v >= 0 else float("nan") for k, v in out.items()}  # -1: no object of that size
    # precision[T, R, K, A, M]: IoU threshold .50, every recall, each class, all areas, 100 detections
    precision = ev.eval["precision"][0, :, :, 0, -1]
    per_class = {}
    for k, c in enumerate(ev.params.catIds):
        p = precision[:, k]
        if (p > -1).any():
            per_class[c] = float(np.mean(p[p > -1]))
            out[f"ap50/{class_names[c]}"] = per_class[c]
            curves[c] = np.where(p > -1, p, 0.0)
    for name, members in groups:
        seen = [per_class[c] for c in members if c in per_class]
        if seen:
            out[f"ap50/{name}"] = float(np.mean(seen))
    return out, curves
