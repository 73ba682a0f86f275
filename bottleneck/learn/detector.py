"""A one-stage detector (RetinaNet's recipe) on a base's cached pyramid levels, trained on
the CPU.

- **Anchors**: at every cell of every level, ``len(ANCHOR_SCALES)`` square anchors of side
  ``2 * stride * scale`` (strides 8/16/32 give 16-102 pixels: GTSDB's signs are 16-128, a
  third under 32, so the anchors start smaller than RetinaNet's 32). Signs are square; other
  objects get ``aspect_ratios``.
- **Matching**: an anchor whose best IoU with an object is at least ``POSITIVE`` learns that
  object, below ``NEGATIVE`` it is background, in between it is ignored; every object also
  takes its best anchor, so a small sign is never left without one.
- **Box coding**: Keras's ``encode_box_to_deltas``/``decode_deltas_to_boxes`` (centre and log
  size against the anchor, divided by ``VARIANCE``).
- **Losses**: Keras's focal loss (``BinaryFocalCrossentropy``, alpha .25, gamma 2) over
  every anchor not ignored, Huber over the positive anchors' deltas, both divided by the
  batch's number of positive anchors (RetinaNet's normalisation).
- **Training on windows**: scenes are mostly background, so each step takes a window of
  the cached maps (``window`` canvas pixels a side, half of them around an object): the
  features in it were computed on the whole scene, so nothing of their context is lost,
  and the head, fully convolutional, predicts whole scenes unchanged.
- **Non-maximum suppression**: TensorFlow's ``combined_non_max_suppression`` (per class),
  after the model (see ``detect``).
"""
from __future__ import annotations

import numpy as np

ANCHOR_SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
POSITIVE, NEGATIVE = 0.5, 0.4
VARIANCE = (0.1, 0.1, 0.2, 0.2)
PRIOR = 0.01  # the classification layer starts predicting this probability everywhere (RetinaNet)
IGNORE, BACKGROUND = -2, -1


def anchor_boxes(shapes: dict[str, tuple[int, int]], strides: dict[str, int], aspect_ratios=(1.0,)) -> np.ndarray:
    """(N, 4) anchors (x1, y1, x2, y2) in canvas pixels: level by level (the order of
    ``shapes``), then row, column, and the anchors of a cell innermost, the order the
    detector's outputs are flattened in."""
    out = []
    for lv, (h, w) in shapes.items():
        s = strides[lv]
        sizes = [(2 * s * k * np.sqrt(r), 2 * s * k / np.sqrt(r)) for k in ANCHOR_SCALES for r in aspect_ratios]
        cy, cx = np.meshgrid((np.arange(h) + 0.5) * s, (np.arange(w) + 0.5) * s, indexing="ij")
        for_cell = np.array([[-aw / 2, -ah / 2, aw / 2, ah / 2] for aw, ah in sizes])  # (A, 4)
        centres = np.stack([cx, cy, cx, cy], axis=-1)[:, :, None, :]  # (h, w, 1, 4)
        out.append((centres + for_cell).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


def anchors_per_cell(aspect_ratios=(1.0,)) -> int:
    return len(ANCHOR_SCALES) * len(aspect_ratios)


def match(anchors: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class of each anchor: an object's class, BACKGROUND or IGNORE; (N, 4) box deltas,
    meaningful where the class is an object's) for one image's ``objects`` ((n, 5))."""
    from keras.utils import bounding_boxes

    classes = np.full(len(anchors), BACKGROUND, np.int16)
    deltas = np.zeros((len(anchors), 4), np.float32)
    if not len(objects):
        return classes, deltas
    iou = np.asarray(bounding_boxes.compute_iou(anchors, objects[:, :4], "xyxy"))  # (N, n)
    best, best_iou = iou.argmax(axis=1), iou.max(axis=1)
    classes[best_iou >= NEGATIVE] = IGNORE
    positive = best_iou >= POSITIVE
    forced = iou.argmax(axis=0)  # each object's best anchor learns it, whatever their IoU
    best[forced] = np.arange(len(objects))
    positive[forced] = iou[forced, np.arange(len(objects))] > 0
    classes[positive] = objects[best[positive], 4].astype(np.int16)
    if positive.any():
        deltas[positive] = np.asarray(bounding_boxes.encode_box_to_deltas(
            anchors[positive], objects[best[positive], :4], "xyxy", "xyxy", variance=VARIANCE))
    return classes, deltas


def build_detector(channels: dict[str, int], n_classes: int, per_cell: int, width: int = 64, depth: int = 2,
                   strides: dict[str, int] | None = None):
    """The head: an FPN over the levels (1x1 laterals to ``width`` channels, the coarser sum
    upsampled to the finer level (nearest) and added, a 3x3 convolution), then two towers shared by every level
    (``depth`` 3x3 convolutions each): class logits (``per_cell * n_classes`` a cell, biased to
    PRIOR) and box deltas (``per_cell * 4``). Inputs of any height and width (windows when
    training, whole scenes when predicting); outputs ``classes`` (B, N, n_classes) logits and
    ``boxes`` (B, N, 4) deltas, N the anchors of every level, finest first, in ``anchor_boxes``'
    order. ``strides``: each level's (by default 1, 2, 4... in the order given)."""
    import keras
    from keras import layers

    strides = strides or {lv: 2 ** k for k, lv in enumerate(channels)}
    levels = sorted(channels, key=strides.get)  # finest first
    inputs = {lv: keras.Input((None, None, channels[lv]), name=lv) for lv in levels}
    fused, x, coarser = {}, None, None
    for lv in reversed(levels):
        lateral = layers.Conv2D(width, 1, name=f"lateral_{lv}")(inputs[lv])
        if x is not None:
            up = layers.UpSampling2D(strides[coarser] // strides[lv], name=f"up_to_{lv}")(x)
            lateral = layers.Add(name=f"fuse_{lv}")([lateral, up])
        x, coarser = lateral, lv
        fused[lv] = layers.Conv2D(width, 3, padding="same", name=f"smooth_{lv}")(lateral)

    def tower(name, out_channels, bias):
        convs = [layers.Conv2D(width, 3, padding="same", activation="relu", name=f"{name}_{k}") for k in range(depth)]
        last = layers.Conv2D(out_channels, 3, padding="same", name=f"{name}_out",
                             bias_initializer=keras.initializers.Constant(bias))
        return lambda t: last(_apply(convs, t))

    prior = -float(np.log((1 - PRIOR) / PRIOR))
    cls, box = tower("classes", per_cell * n_classes, prior), tower("boxes", per_cell * 4, 0.0)
    classes = [layers.Reshape((-1, n_classes), name=f"classes_{lv}")(cls(fused[lv])) for lv in levels]
    boxes = [layers.Reshape((-1, 4), name=f"boxes_{lv}")(box(fused[lv])) for lv in levels]
    join = lambda parts, name: parts[0] if len(parts) == 1 else layers.Concatenate(axis=1, name=name)(parts)
    return keras.Model(inputs, {"classes": join(classes, "classes"), "boxes": join(boxes, "boxes")}, name="detector")


def _apply(convs, t):
    for conv in convs:
        t = conv(t)
    return t


def compile_detector(model, learning_rate: float) -> None:
    """Focal loss on the classes, Huber on the boxes; both sums, the batch's weights doing the
    normalisation by its number of positive anchors (``window_batches``)."""
    import keras

    model.compile(keras.optimizers.Adam(learning_rate, clipnorm=10.0),
                  loss={"classes": keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25,
                                                                       gamma=2.0, from_logits=True, reduction="sum"),
                        "boxes": keras.losses.Huber(delta=1.0, reduction="sum")})


def window_batches(reader, rows, targets_of, strides: dict[str, int], canvas: tuple[int, int], window: int,
                   batch_size: int, n_classes: int, seed: int, object_share: float = 0.5):
    """A keras PyDataset of windows of the cached maps, one per row an epoch (shuffled):
    (maps, {classes: one-hot (B, N, K), boxes: deltas (B, N, 4)}, {classes: weights, boxes: weights}).
    ``targets_of(row)`` -> (objects in canvas pixels, per-level (classes, deltas) of ``match``
    on the whole canvas, shaped (h, w, A) and (h, w, A, 4))."""
    import keras

    coarsest = max(strides.values())
    wh, ww = min(window, canvas[0]), min(window, canvas[1])

    class Windows(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.rows, self.epoch = np.asarray(rows), 0

        def __len__(self):
            return max(1, -(-len(self.rows) // batch_size))

        def on_epoch_end(self):
            self.epoch += 1

        def __getitem__(self, k):
            rng = np.random.default_rng([seed, self.epoch, k])
            order = np.random.default_rng([seed, self.epoch]).permutation(self.rows)
            chosen = order[k * batch_size:(k + 1) * batch_size]
            corners, cls, box = [], [], []
            for row in chosen:
                objects, levels = targets_of(int(row))
                y0, x0 = _corner(rng, objects, canvas, (wh, ww), coarsest, object_share)
                corners.append((y0, x0))
                cells = {lv: (slice(y0 // s, (y0 + wh) // s), slice(x0 // s, (x0 + ww) // s)) for lv, s in strides.items()}
                cls.append(np.concatenate([lc[cells[lv]].reshape(-1) for lv, (lc, _) in levels.items()]))
                box.append(np.concatenate([ld[cells[lv]].reshape(-1, 4) for lv, (_, ld) in levels.items()]))
            cls, box = np.stack(cls), np.stack(box)
            positive = cls >= 0
            norm = 1.0 / max(1, int(positive.sum()))
            onehot = np.zeros((*cls.shape, n_classes), np.float32)
            onehot[positive, cls[positive]] = 1.0
            maps = reader.read_windows(chosen, corners, (wh, ww), strides)
            weights = {"classes": ((cls != IGNORE) * norm).astype(np.float32),
                       "boxes": (positive * norm).astype(np.float32)}
            return maps, {"classes": onehot, "boxes": box}, weights

    return Windows()


def _corner(rng, objects, canvas, size, align: int, object_share: float) -> tuple[int, int]:
    """The top-left corner of a window (multiples of the coarsest stride): around a random
    object with probability ``object_share`` when there is one, else anywhere."""
    (H, W), (h, w) = canvas, size
    if len(objects) and rng.random() < object_share:
        x1, y1, x2, y2 = objects[rng.integers(len(objects)), :4]
        cy, cx = rng.uniform(y1, y2), rng.uniform(x1, x2)  # a window holding (part of) the object, not always centred
        y0, x0 = cy - rng.uniform(0.1, 0.9) * h, cx - rng.uniform(0.1, 0.9) * w
    else:
        y0, x0 = rng.uniform(0, H - h + 1), rng.uniform(0, W - w + 1)
    snap = lambda v, hi: int(np.clip(round(v / align) * align, 0, (hi // align) * align))
    return snap(y0, H - h), snap(x0, W - w)


def detect(model, maps: dict[str, np.ndarray], anchors: np.ndarray, score_threshold: float = 0.05,
           iou_threshold: float = 0.5, max_detections: int = 100, pre_nms: int = 1000) -> list[np.ndarray]:
    """Detections of a batch of whole canvases: per image (m, 6) boxes (canvas pixels),
    class and score. Scores are the sigmoid of each class's logit; the ``pre_nms`` best
    (anchor, class) pairs above ``score_threshold`` go to TensorFlow's per-class NMS."""
    from keras.utils import bounding_boxes

    out = model.predict_on_batch(maps)
    logits, deltas = np.asarray(out["classes"]), np.asarray(out["boxes"])
    scores = 1 / (1 + np.exp(-logits.astype(np.float64)))
    boxes = np.asarray(bounding_boxes.decode_deltas_to_boxes(anchors, deltas, "xyxy", "xyxy", variance=VARIANCE))
    return [suppress(b, s, score_threshold, iou_threshold, max_detections, pre_nms) for b, s in zip(boxes, scores)]


def suppress(boxes: np.ndarray, scores: np.ndarray, score_threshold: float = 0.05, iou_threshold: float = 0.5,
             max_detections: int = 100, pre_nms: int = 1000) -> np.ndarray:
    """One image's (N, 4) boxes and (N, K) scores -> (m, 6) detections after per-class NMS
    (TensorFlow's ``combined_non_max_suppression``), best first."""
    import tensorflow as tf

    flat = scores.reshape(-1)
    keep = np.flatnonzero(flat >= score_threshold)
    if not len(keep):
        return np.zeros((0, 6), np.float32)
    keep = keep[np.argsort(-flat[keep], kind="stable")[:pre_nms]]
    anchor, cls = np.divmod(keep, scores.shape[1])
    k = scores.shape[1]
    sub_scores = np.zeros((len(keep), k), np.float32)
    sub_scores[np.arange(len(keep)), cls] = flat[keep]
    nms = tf.image.combined_non_max_suppression(
        boxes[anchor][None, :, None, :].astype(np.float32), sub_scores[None], max_output_size_per_class=max_detections,
        max_total_size=max_detections, iou_threshold=iou_threshold, score_threshold=score_threshold, clip_boxes=False)
    n = int(nms.valid_detections[0])
    return np.concatenate([nms.nmsed_boxes[0, :n].numpy(), nms.nmsed_classes[0, :n].numpy()[:, None],
                           nms.nmsed_scores[0, :n].numpy()[:, None]], axis=1).astype(np.float32)
