"""What a target is, and how it is learned and judged.

A cached feature file describes images; a *target* says what to predict about them.
One :class:`Task` object per kind of target holds everything that depends on it:

- the head's output layers and loss (``keras_output``, ``keras_loss``), how targets are
  encoded for training and outputs decoded into predictions;
- its metrics, and which one is the main metric shown in tables;
- how ``--per-class N`` draws training images for it.

Three tasks: :class:`SingleLabel` (one class per image: today's behaviour, unchanged),
:class:`MultiLabel` (independent sigmoid labels mixed with mutually exclusive softmax
groups, as in a road-safety model whose one output vector holds both), and
:class:`Regression` (a vector of floats, each optionally bounded to a range; boxes get IoU).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from bottleneck.core.boxes import coco_metrics
from bottleneck.core.errors import BottleneckError
from bottleneck.core.sampling import per_class_draw, whole_draw


class TaskError(BottleneckError):
    """A target declaration that cannot be right (a label in two groups, a group of one...)."""


@dataclasses.dataclass(frozen=True)
class Task:
    kind = "task"
    main_metric = ""
    default_head = "logreg"

    @property
    def width(self) -> int:
        """Columns of the target matrix (1 for a single label)."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"task": self.kind, **{k: v for k, v in dataclasses.asdict(self).items()}}


@dataclasses.dataclass(frozen=True)
class SingleLabel(Task):
    """One class per image; targets are class indices into ``class_names``."""

    class_names: tuple[str, ...] = ()
    kind = "single_label"
    main_metric = "accuracy"

    @property
    def width(self) -> int:
        return 1

    def draw(self, y: np.ndarray, per_class: int | None, seed: int, strata=None):
        """The seeded, nested per-class draw (``sampling.per_class_draw``)."""
        idx, short = per_class_draw(y, per_class, seed)
        return idx, {self.class_names[c] if c < len(self.class_names) else str(c): n for c, n in short.items()}

    def metrics(self, y: np.ndarray, predicted: np.ndarray, **_) -> dict:
        return {"accuracy": float(np.mean(np.asarray(predicted) == np.asarray(y)))}


def multilabel_draw(Y: np.ndarray, per_class: int | None, seed: int):
    """Indices (sorted) of a seeded, nested draw giving every label ``per_class`` positive
    images where it has them: walk one seeded shuffle of all images; each label takes its
    first N positives along it; the draw is the union. An image counts for every label it
    has, so common labels are mostly covered by the others' picks. Nested because each
    label's picks for N are a prefix of its picks for any larger N. Returns (indices,
    {label column: positives it has} for labels with fewer than N)."""
    Y = np.asarray(Y)
    if per_class is None:
        return np.arange(len(Y)), {}
    if int(per_class) != per_class or per_class < 1:
        raise ValueError(f"per-class count must be a positive integer, got {per_class!r}")
    order = np.random.default_rng([seed, 104729]).permutation(len(Y))
    chosen, short = set(), {}
    for j in range(Y.shape[1]):
        positives = order[Y[order, j] > 0]
        chosen.update(positives[:per_class].tolist())
        if len(positives) < per_class:
            short[j] = len(positives)
    return np.array(sorted(chosen), dtype=np.int64), short


@dataclasses.dataclass(frozen=True)
class MultiLabel(Task):
    """Labels of which an image has any number, plus exclusive groups (exactly one label of
    each group is true). Targets are a 0/1 matrix whose columns are ``labels``: the
    independent labels first, then each group's labels (use :meth:`declare` to build one
    from any order). ``loss``: "grouped" (binary cross-entropy on the independent labels plus
    cross-entropy per group; the default) or "bce" (binary cross-entropy over the whole
    vector, as the road-safety model was trained)."""

    labels: tuple[str, ...] = ()
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (group name, its labels), in column order
    loss: str = "grouped"
    threshold: float = 0.5
    kind = "multi_label"
    main_metric = "mAP"

    @classmethod
    def declare(cls, labels, groups: dict[str, list[str]] | None = None, loss: str = "grouped",
                source: str = "the declaration") -> MultiLabel:
        """Check a declaration and order its columns: independent labels, then each group's.
        Errors name the culprit: a label in two groups, an unknown label, a group of one."""
        labels = list(dict.fromkeys(labels))
        groups = dict(groups or {})
        seen: dict[str, str] = {}
        for name, members in groups.items():
            members = list(members)
            if len(members) < 2:
                raise TaskError(f"{source}: group {name!r} has {len(members)} label(s); a group needs two or more",
                                "make it an independent label, or add the other choices")
            for m in members:
                if m in seen:
                    raise TaskError(f"{source}: label {m!r} is in two groups, {seen[m]!r} and {name!r}",
                                    "a label belongs to one group at most")
                if m not in labels:
                    raise TaskError(f"{source}: group {name!r} names label {m!r}, which no image has and the label "
                                    "list does not declare", f"the labels are: {', '.join(labels[:20])}")
                seen[m] = name
        if loss not in ("grouped", "bce"):
            raise TaskError(f"unknown multi-label loss {loss!r}", "use grouped or bce")
        independent = [lab for lab in labels if lab not in seen]
        ordered = independent + [m for members in groups.values() for m in members]
        return cls(tuple(ordered), tuple((g, tuple(m)) for g, m in groups.items()), loss)

    @property
    def width(self) -> int:
        return len(self.labels)

    @property
    def independent(self) -> int:
        """How many leading columns are independent labels."""
        return len(self.labels) - sum(len(m) for _, m in self.groups)

    def group_slices(self) -> list[tuple[str, slice]]:
        start, out = self.independent, []
        for name, members in self.groups:
            out.append((name, slice(start, start + len(members))))
            start += len(members)
        return out

    def encode_sets(self, label_sets, where: list[str] | None = None) -> np.ndarray:
        """A 0/1 matrix from each image's set of labels; every group must have exactly one."""
        column = {lab: j for j, lab in enumerate(self.labels)}
        Y = np.zeros((len(label_sets), self.width), np.float32)
        for i, labs in enumerate(label_sets):
            for lab in labs:
                if lab not in column:
                    raise TaskError(f"{where[i] if where else f'image {i}'}: unknown label {lab!r}",
                                    f"the declared labels are: {', '.join(self.labels[:20])}")
                Y[i, column[lab]] = 1
        self.check(Y, where)
        return Y

    def check(self, Y: np.ndarray, where: list[str] | None = None) -> None:
        for name, sl in self.group_slices():
            counts = Y[:, sl].sum(axis=1)
            bad = np.flatnonzero(counts != 1)
            if len(bad):
                i = int(bad[0])
                has = [self.labels[sl][k] for k in np.flatnonzero(Y[i, sl])]
                raise TaskError(f"{where[i] if where else f'image {i}'} has {int(counts[i])} labels of the exclusive "
                                f"group {name!r} ({', '.join(has) or 'none'}); it needs exactly one",
                                f"fix that image's labels ({len(bad)} images are affected)")

    def draw(self, Y: np.ndarray, per_class: int | None, seed: int, strata=None):
        idx, short = multilabel_draw(Y, per_class, seed)
        return idx, {self.labels[j]: n for j, n in short.items()}

    # ---- the head's end

    def keras_output(self, x):
        """Sigmoid units for the independent labels, one softmax per group, in column order."""
        from keras import layers

        parts = []
        if self.independent:
            parts.append(layers.Dense(self.independent, activation="sigmoid", name="independent")(x))
        for k, (name, members) in enumerate(self.groups):
            parts.append(layers.Dense(len(members), activation="softmax", name=f"group_{k}")(x))
        return parts[0] if len(parts) == 1 else layers.Concatenate(name="labels")(parts)

    def keras_loss(self):
        from keras import ops

        n_ind, slices = self.independent, [sl for _, sl in self.group_slices()]
        whole = self.loss == "bce"

        def loss(y_true, y_pred):
            p = ops.clip(y_pred, 1e-7, 1 - 1e-7)
            y_true = ops.cast(y_true, p.dtype)
            bce = -(y_true * ops.log(p) + (1 - y_true) * ops.log(1 - p))
            if whole:
                return ops.mean(bce, axis=-1)
            total = ops.sum(bce[:, :n_ind], axis=-1) if n_ind else 0.0
            for sl in slices:
                total = total - ops.sum(y_true[:, sl] * ops.log(p[:, sl]), axis=-1)
            return total / (n_ind + len(slices))

        return loss

    def decode(self, scores: np.ndarray, thresholds: np.ndarray | None = None) -> np.ndarray:
        """0/1 predictions: a threshold per independent label (0.5 by default), the argmax
        within each group."""
        scores = np.asarray(scores)
        out = np.zeros_like(scores, dtype=np.float32)
        n = self.independent
        if n:
            t = np.full(n, self.threshold) if thresholds is None else np.asarray(thresholds)
            out[:, :n] = scores[:, :n] >= t
        for _, sl in self.group_slices():
            out[np.arange(len(scores)), sl.start + scores[:, sl].argmax(axis=1)] = 1
        return out

    def tune_thresholds(self, Y: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Per independent label, the threshold that maximises F1 on (validation) data; 0.5
        for a label without positives there. Never called with test images."""
        from sklearn.metrics import precision_recall_curve

        out = np.full(self.independent, self.threshold)
        for j in range(self.independent):
            if Y[:, j].sum() == 0 or Y[:, j].sum() == len(Y):
                continue
            precision, recall, thresholds = precision_recall_curve(Y[:, j], scores[:, j])
            f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
            out[j] = thresholds[int(np.argmax(f1[:-1]))]
        return out

    def metrics(self, Y: np.ndarray, predicted: np.ndarray, scores: np.ndarray | None = None, **_) -> dict:
        return multilabel_metrics(Y, predicted, scores, self.labels, self.group_slices())


def multilabel_metrics(Y, predicted, scores, labels, group_slices) -> dict:
    """Per-label precision, recall, F1 and support; mAP over labels with positives;
    accuracy_multi (fastai's: the share of right cells); exact match; accuracy per group."""
    from sklearn.metrics import average_precision_score

    Y, predicted = np.asarray(Y) > 0, np.asarray(predicted) > 0
    out: dict[str, float] = {}
    aps = []
    for j, lab in enumerate(labels):
        tp = float(np.sum(Y[:, j] & predicted[:, j]))
        p_count, t_count = float(predicted[:, j].sum()), float(Y[:, j].sum())
        precision = tp / p_count if p_count else 0.0
        recall = tp / t_count if t_count else 0.0
        out[f"precision/{lab}"] = precision
        out[f"recall/{lab}"] = recall
        out[f"f1/{lab}"] = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[f"support/{lab}"] = t_count
        if scores is not None and 0 < t_count < len(Y):
            aps.append(average_precision_score(Y[:, j], np.asarray(scores)[:, j]))
    if scores is not None:
        out["mAP"] = float(np.mean(aps)) if aps else float("nan")
    out["accuracy_multi"] = float(np.mean(Y == predicted))
    out["exact_match"] = float(np.mean(np.all(Y == predicted, axis=1)))
    for name, sl in group_slices:
        out[f"group_accuracy/{name}"] = float(np.mean(Y[:, sl].argmax(1) == predicted[:, sl].argmax(1)))
    return out


@dataclasses.dataclass(frozen=True)
class Regression(Task):
    """A vector of floats per image. ``ranges``: (low, high) per output, or None for an
    unbounded one; a bounded output is ``sigmoid(x) * (high - low) + low``, an unbounded one
    is linear on standardized targets. ``boxes``: the four outputs are a box (x1, y1, x2, y2),
    which adds IoU metrics."""

    names: tuple[str, ...] = ()
    ranges: tuple[tuple[float, float] | None, ...] = ()
    boxes: bool = False
    kind = "regression"
    main_metric = "r2"
    default_head = "ridge"

    def __post_init__(self):
        if self.ranges and len(self.ranges) != len(self.names):
            raise TaskError(f"{len(self.ranges)} ranges for {len(self.names)} outputs", "give one range per output")
        for name, r in zip(self.names, self.ranges):
            if r is not None and not (np.isfinite(r[0]) and np.isfinite(r[1]) and r[0] < r[1]):
                raise TaskError(f"output {name!r} has the range {r}; it needs low < high", "fix the range")
        if self.boxes and len(self.names) != 4:
            raise TaskError("a box target has exactly four outputs (x1, y1, x2, y2)", "declare four outputs")
        if self.boxes:
            object.__setattr__(self, "main_metric", "mean_iou")

    @property
    def width(self) -> int:
        return len(self.names)

    def _bounds(self):
        ranges = self.ranges or (None,) * self.width
        bounded = np.array([r is not None for r in ranges])
        low = np.array([r[0] if r else 0.0 for r in ranges])
        high = np.array([r[1] if r else 1.0 for r in ranges])
        return bounded, low, high

    def check(self, Y: np.ndarray, where: list[str] | None = None) -> None:
        Y = np.asarray(Y, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(Y).all(axis=1))
        if len(bad):
            i = int(bad[0])
            raise TaskError(f"{where[i] if where else f'image {i}'}: a target is NaN or infinite",
                            f"fix that row ({len(bad)} rows are affected)")
        bounded, low, high = self._bounds()
        outside = (Y < low) | (Y > high)
        rows = np.flatnonzero((outside & bounded).any(axis=1))
        if len(rows):
            i, j = int(rows[0]), int(np.flatnonzero(outside[rows[0]] & bounded)[0])
            raise TaskError(f"{where[i] if where else f'image {i}'}: {self.names[j]} = {Y[i, j]} is outside its "
                            f"range [{low[j]}, {high[j]}]", "fix the target or its declared range")

    def fit_scaling(self, Y: np.ndarray) -> dict:
        """How targets are encoded for the net: bounded -> [0, 1], unbounded -> standardized."""
        bounded, low, high = self._bounds()
        mean, std = Y.mean(axis=0), Y.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        return {"bounded": bounded, "low": low, "high": high, "mean": mean, "std": std}

    @staticmethod
    def encode(Y: np.ndarray, s: dict) -> np.ndarray:
        unit = (Y - s["low"]) / (s["high"] - s["low"])
        return np.where(s["bounded"], unit, (Y - s["mean"]) / s["std"]).astype(np.float32)

    @staticmethod
    def decode(out: np.ndarray, s: dict) -> np.ndarray:
        return np.where(s["bounded"], out * (s["high"] - s["low"]) + s["low"], out * s["std"] + s["mean"])

    def keras_output(self, x):
        """Sigmoid units for bounded outputs and linear ones for unbounded, in column order
        (both in the encoded space; ``decode`` scales them back)."""
        from keras import layers

        bounded = self._bounds()[0]
        if bounded.all():
            return layers.Dense(self.width, activation="sigmoid", name="bounded")(x)
        if not bounded.any():
            return layers.Dense(self.width, name="unbounded")(x)
        # mixed: both, then pick each column from the right one (a fixed 0/1 mask, no custom layer)
        mask = bounded.astype("float32")
        sig = layers.Dense(self.width, activation="sigmoid", name="bounded")(x)
        lin = layers.Dense(self.width, name="unbounded")(x)
        return layers.Add(name="outputs")([layers.Rescaling(mask)(sig), layers.Rescaling(1 - mask)(lin)])

    def keras_loss(self):
        return "mean_squared_error"

    def draw(self, Y: np.ndarray, per_class: int | None, seed: int, strata=None):
        """Stratified by class when the images have classes (GTSRB's sign boxes: N per sign
        class, the same images as the class target's draw); otherwise N images in all."""
        if strata is not None and len(strata) and np.min(strata) >= 0:
            return per_class_draw(strata, per_class, seed)
        return whole_draw(len(Y), per_class, seed, 15485863, "images")

    def metrics(self, Y: np.ndarray, predicted: np.ndarray, baseline: np.ndarray | None = None, **_) -> dict:
        return regression_metrics(Y, predicted, baseline, self.boxes)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (x1, y1, x2, y2) row by row; a box with x2 < x1 is empty."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def regression_metrics(Y, predicted, baseline=None, boxes: bool = False) -> dict:
    """MSE, MAE and R² (averaged over outputs), and the same for ``baseline`` (one row,
    e.g. the training mean, predicted for every image); with boxes, mean IoU and the share
    of IoU >= 0.5 and >= 0.75 too."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    Y, predicted = np.asarray(Y, np.float64), np.asarray(predicted, np.float64)

    def scores(pred, prefix=""):
        out = {f"{prefix}mse": float(mean_squared_error(Y, pred)), f"{prefix}mae": float(mean_absolute_error(Y, pred)),
               f"{prefix}r2": float(r2_score(Y, pred)) if len(Y) > 1 else float("nan")}
        if boxes:
            iou = box_iou(Y, pred)
            out.update({f"{prefix}mean_iou": float(iou.mean()), f"{prefix}iou_50": float(np.mean(iou >= 0.5)),
                        f"{prefix}iou_75": float(np.mean(iou >= 0.75))})
        return out

    out = scores(predicted)
    if baseline is not None:
        out.update(scores(np.broadcast_to(np.asarray(baseline, np.float64), Y.shape), "baseline_"))
    return out


@dataclasses.dataclass(frozen=True)
class Segmentation(Task):
    """One class per pixel; ``void`` pixels (CamVid's 11) are never a target and never scored."""

    class_names: tuple[str, ...] = ()
    void: int = 255
    kind = "segmentation"
    main_metric = "miou"
    default_head = "decoder"

    @property
    def width(self) -> int:
        return len(self.class_names)

    def draw(self, values, per_class: int | None, seed: int, strata=None):
        """``--per-class N`` takes N frames in all (seeded, nested): frames have no one class."""
        return whole_draw(len(values), per_class, seed, 32452843, "frames")

    def metrics(self, confusion: np.ndarray, **_) -> dict:
        keep = [i for i in range(self.width) if i != self.void]  # a Void code among the classes is never scored
        confusion = np.asarray(confusion)[np.ix_(keep, keep)]
        return segmentation_metrics(confusion, [self.class_names[i] for i in keep])


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n_classes: int, void: int) -> np.ndarray:
    """(n, n) pixel counts, rows true class, columns predicted; Void pixels left out."""
    keep = truth != void
    t, p = truth[keep].astype(np.int64), predicted[keep].astype(np.int64)
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def segmentation_metrics(confusion: np.ndarray, class_names) -> dict:
    """Pixel accuracy without Void (fastai's acc_camvid), class-average accuracy, mean IoU and
    per-class IoU. A class neither present nor predicted counts in no average."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    true, pred = confusion.sum(axis=1), confusion.sum(axis=0)
    union = true + pred - tp
    out = {"pixel_accuracy": float(tp.sum() / max(confusion.sum(), 1))}
    seen = true > 0
    out["class_accuracy"] = float(np.mean(tp[seen] / true[seen])) if seen.any() else float("nan")
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    out["miou"] = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    for name, value in zip(class_names, iou):
        out[f"iou/{name}"] = float(value) if np.isfinite(value) else float("nan")
    return out


@dataclasses.dataclass(frozen=True)
class Detection(Task):
    """Any number of objects per image, each a box (x1, y1, x2, y2 in pixels of the image)
    and a class. ``groups``: optional named groups of classes (GTSDB's four categories),
    scored as the mean AP50 of their classes. Scored the COCO way (``boxes.coco_metrics``)."""

    class_names: tuple[str, ...] = ()
    groups: tuple[tuple[str, tuple[int, ...]], ...] = ()
    kind = "detection"
    main_metric = "map50"
    default_head = "detector"

    @property
    def width(self) -> int:
        return len(self.class_names)

    def draw(self, values, per_class: int | None, seed: int, strata=None):
        """``--per-class N`` takes N images in all (seeded, nested), scenes without an object
        included: an image has no one class."""
        return whole_draw(len(values), per_class, seed, 49979687, "images")

    def metrics(self, truth, detections, **_) -> dict:
        return coco_metrics(truth, detections, self.class_names, self.groups)
