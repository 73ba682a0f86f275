"""Predict with an exported model (any format it was exported in) on image files, folders or
globs, streaming.

Paths are walked lazily and images are decoded a few batches ahead in a thread pool,
exactly as extraction decodes them (any mode becomes RGB, large JPEGs are decoded at a
reduced scale, bilinear resize to the model's input size), so memory stays flat however
many images there are.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import csv
import glob
import logging
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from bottleneck.core.boxes import to_image
from bottleneck.core.errors import BottleneckError
from bottleneck.core.files import atomic_output, check_output
from bottleneck.core.text import spreadsheet_safe
from bottleneck.data.images import IMAGE_SUFFIXES, BadImage, load_image, resize
from bottleneck.data.labelmaps import label_palette, letterbox, letterbox_scale
from bottleneck.deploy.formats import LoadedModel, load_model
from bottleneck.experiments.segmentation import frame_prediction
from bottleneck.learn.detector import suppress

log = logging.getLogger("bottleneck")
PIXEL_BUDGET = 256 << 20  # bytes of float32 input a batch may take: larger --batch-size values are lowered to it


def image_paths(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Files as given, the images under folders (walked in sorted order, lazily), glob patterns."""
    for p in paths:
        text = str(p)
        path = Path(text).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if Path(name).suffix.lower() in IMAGE_SUFFIXES:
                        yield Path(root) / name
        elif path.is_file():
            yield path
        elif any(c in text for c in "*?["):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                raise BottleneckError(f"no file matches {text}", "check the pattern (quote it so the shell keeps it)")
            yield from (Path(m) for m in matches if Path(m).is_file())
        else:
            raise BottleneckError(f"{text} does not exist", "pass image files, folders or glob patterns")


def predict(model: str | Path | LoadedModel, paths: Iterable[str | Path], *, top_k: int = 3, batch_size: int = 32,
            skip_bad_images: bool = False, workers: int | None = None) -> Iterator[dict]:
    """One dict per image, in order: ``path``, ``prediction`` (the class, the list of labels,
    {output: value}, or for segmentation a class id per pixel at the image's own size), and
    ``top`` ([(class, probability)] for one label), ``scores`` ({label: score}) or
    ``fractions`` ({class: share of the image's pixels}); for detection ``prediction`` is an
    (m, 6) array of boxes (x1, y1, x2, y2 in the image's pixels), class ids and scores, after
    the non-maximum suppression bottleneck.json gives, and ``boxes`` the same as dicts. An
    unreadable image raises BadImage naming it, or with ``skip_bad_images`` yields {"path", "error"}."""
    m = model if isinstance(model, LoadedModel) else load_model(model)
    size, names, kind = m.image_size, m.meta["output_names"], m.meta["task"]
    (height, width) = m.input_shape
    workers = workers or min(32, (os.cpu_count() or 2) + 4)
    per_image = height * width * 4 * (3 + (len(names) if kind == "segmentation" else 0))  # float input (and maps out)
    if kind == "detection":  # float input, and every anchor's box and scores (at most 3 anchors a stride-8 cell)
        per_image += height * width // 64 * 3 * 4 * (4 + len(names)) * 2
    most = max(1, PIXEL_BUDGET // per_image)
    if batch_size > most:
        log.info("batch size %d lowered to %d: %d x %d images take %d MB at most", batch_size, most, height,
                 width, PIXEL_BUDGET >> 20)
        batch_size = most
    padded = 0  # the batch shape so far: a short last batch is padded to it (compiled once), never beyond

    def load(path: Path):
        """(pixels, the image's own (height, width), error)"""
        try:
            if kind in ("segmentation", "detection"):  # decoded whole, as extraction decodes frames, then letterboxed
                image = load_image(path)
                return letterbox(image, size, (height, width)), image.size[::-1], None
            return resize(load_image(path, size), size), None, None
        except BadImage as e:
            if not skip_bad_images:
                raise
            return None, None, str(e.what)

    def finish(batch):
        nonlocal padded
        loaded = [(p, fut.result()) for p, fut in batch]
        good = [(p, im) for p, (im, _, err) in loaded if im is not None]
        outputs = np.empty((0, len(names)))
        if good:
            padded = max(padded, len(good))
            pixels = np.zeros((padded, height, width, 3), np.uint8)  # one shape: compiled once
            pixels[:len(good)] = [im for _, im in good]
            outputs = np.asarray(m.run(pixels))[:len(good)]
        decoded = iter(m.decode(outputs)) if good and kind not in ("segmentation", "detection") else iter(())
        rows = iter(outputs)
        for p, (im, shape, err) in loaded:
            if im is None:
                yield {"path": str(p), "error": err}
                continue
            out = next(rows)
            row = {"path": str(p)}
            if kind == "detection":
                row.update(_detections(out, shape, size, m.meta["nms"], names))
            elif kind == "segmentation":
                labels = frame_prediction(out, shape, size)
                share = np.bincount(labels.ravel(), minlength=len(names)) / labels.size
                row.update(prediction=labels, fractions={n: float(v) for n, v in zip(names, share)})
            else:
                row["prediction"] = next(decoded)
            if kind == "single_label":
                best = np.argsort(-out)[:top_k]
                row["top"] = [(names[j], float(out[j])) for j in best]
            elif kind == "multi_label":
                row["scores"] = {n: float(v) for n, v in zip(names, out)}
            yield row

    with cf.ThreadPoolExecutor(workers) as pool:
        pending: collections.deque = collections.deque()
        batch = []
        for path in image_paths(paths):
            batch.append((path, pool.submit(load, path)))
            if len(batch) == batch_size:
                pending.append(batch)
                batch = []
                if len(pending) > 2:  # decode at most a few batches ahead
                    yield from finish(pending.popleft())
        if batch:
            pending.append(batch)
        while pending:
            yield from finish(pending.popleft())


def _detections(out: np.ndarray, shape: tuple[int, int], long_side: int, nms: dict, names: list[str]) -> dict:
    """An image's detections from the model's (anchors, 4 + classes) output: per-class NMS,
    then the boxes scaled from the canvas back to the image's own pixels, as the run scored them."""
    h, w = shape
    found = suppress(out[:, :4], out[:, 4:], nms["score_threshold"], nms["iou_threshold"], int(nms["max_detections"]),
                     int(nms["pre_nms"]))
    to_image(found, *letterbox_scale(w, h, long_side), w, h)
    boxes = [{"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3]), "class": names[int(b[4])],
              "score": float(b[5])} for b in found]
    return {"prediction": found, "boxes": boxes}


def _unique_name(path: str, suffix: str, taken: set[str]) -> str:
    """``<image name><suffix>``, numbered (``-2``, ``-3``...) when inputs share a name; added to ``taken``."""
    stem, k = Path(path).stem, 1
    name = f"{stem}{suffix}"
    while name in taken:
        k += 1
        name = f"{stem}-{k}{suffix}"
    taken.add(name)
    return name


def write_drawn(model: LoadedModel, rows: Iterable[dict], folder: str | Path, min_score: float = 0.3) -> Iterator[dict]:
    """Pass detection ``rows`` through, writing each image with its boxes scoring at least
    ``min_score`` (class and score written above) to ``folder`` as ``<image name>.jpg``."""
    from PIL import ImageDraw

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    palette = [tuple(int(v) for v in c) for c in label_palette(len(model.meta["output_names"]))]
    taken: set[str] = set()
    for row in rows:
        if "error" not in row:
            name = _unique_name(row["path"], ".jpg", taken)
            image = load_image(row["path"])
            draw = ImageDraw.Draw(image)
            for b in row["boxes"]:
                if b["score"] >= min_score:
                    colour = palette[model.meta["output_names"].index(b["class"])]
                    draw.rectangle((b["x1"], b["y1"], b["x2"], b["y2"]), outline=colour, width=2)
                    draw.text((b["x1"], max(0, b["y1"] - 11)), f"{b['class'][:24]} {b['score']:.2f}", fill=colour)
            with atomic_output(folder / name, suffix=".jpg") as tmp:
                image.save(tmp, format="JPEG", quality=90)
            row = {**row, "drawn": str(folder / name)}
        yield row


def write_masks(model: LoadedModel, rows: Iterable[dict], folder: str | Path) -> Iterator[dict]:
    """Pass segmentation ``rows`` through, writing each image's class map to ``folder`` as
    ``<image name>.png`` (a palette PNG: pixel values are class ids, shown in the report's
    colours); each file is written atomically. Names that two inputs share get a number."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    palette = label_palette(len(model.meta["output_names"])).ravel().tolist()  # the report's colours
    taken: set[str] = set()
    for row in rows:
        if "error" not in row:
            name = _unique_name(row["path"], ".png", taken)
            image = Image.fromarray(row["prediction"], mode="P")
            image.putpalette(palette)
            with atomic_output(folder / name, suffix=".png") as tmp:
                image.save(tmp, format="PNG")
            row = {**row, "mask": str(folder / name)}
        yield row


def csv_header(model: LoadedModel, top_k: int = 3) -> list[str]:
    """The columns of :func:`write_csv`: the path, the prediction's columns, the error."""
    names, kind = model.meta["output_names"], model.meta["task"]
    head = {"single_label": [c for k in range(1, top_k + 1) for c in (f"top{k}", f"p{k}")],
            "multi_label": ["labels", *names], "regression": names, "segmentation": names,
            "detection": ["x1", "y1", "x2", "y2", "class", "score"]}[kind]
    return ["path", *head, "error"]


def csv_rows(model: LoadedModel, row: dict, top_k: int = 3) -> list[list]:
    """The CSV rows of one prediction: one, or for detection one per box (none for an image
    where nothing was found)."""
    if model.meta["task"] == "detection" and "error" not in row:
        return [[spreadsheet_safe(row["path"]), *(f"{b[k]:.2f}" for k in ("x1", "y1", "x2", "y2")),
                 spreadsheet_safe(b["class"]), f"{b['score']:.6f}", ""] for b in row["boxes"]]
    return [csv_cells(model, row, top_k)]


def csv_cells(model: LoadedModel, row: dict, top_k: int = 3) -> list:
    """One prediction as CSV cells; text that a spreadsheet would run as a formula is quoted."""
    names, kind = model.meta["output_names"], model.meta["task"]
    width = len(csv_header(model, top_k)) - 2
    if "error" in row:
        values = [""] * width
    elif kind == "detection":
        raise ValueError("a detection has one row per box: csv_rows")
    elif kind == "single_label":
        values = [v for name, p in row["top"] for v in (name, f"{p:.6f}")]
        values += [""] * (width - len(values))
    elif kind == "multi_label":
        values = [" ".join(row["prediction"]), *(f"{row['scores'][k]:.6f}" for k in names)]
    elif kind == "segmentation":  # each class's share of the image's pixels
        values = [f"{row['fractions'][k]:.6f}" for k in names]
    else:
        values = [f"{row['prediction'][k]:.6f}" for k in names]
    text = [row["path"], *values, row.get("error", "")]
    return [spreadsheet_safe(c) if not _is_number(c) else c for c in text]


def _is_number(cell) -> bool:
    try:
        float(cell)
        return cell != ""
    except (TypeError, ValueError):
        return False


def check_csv_output(path: str | Path, model_path: str | Path, paths: Iterable[str | Path],
                     overwrite: bool = False) -> Path:
    """Before any prediction: ``--csv`` is a new CSV file, neither the model nor an input.
    (Folders given are checked as folders: a CSV inside one is fine, it is not an image.)"""
    inputs = [model_path, *(p for p in paths if not any(c in str(p) for c in "*?[") and Path(p).is_file())]
    out = check_output(path, inputs=inputs, overwrite=overwrite, suffixes=(".csv",), what="predictions CSV",
                       flag="--csv")
    if out.suffix.lower() in IMAGE_SUFFIXES:
        raise BottleneckError(f"--csv {out} is named as an image", "pass a name ending in .csv")
    return out


def write_csv(model: LoadedModel, rows: Iterable[dict], path: str | Path, top_k: int = 3,
              overwrite: bool = False) -> Iterator[dict]:
    """Pass ``rows`` through, writing each to the CSV ``path``; the file appears (atomically)
    once every row is written, and never if the rows stop with an error."""
    try:
        with atomic_output(path, suffix=".csv", replace=overwrite) as tmp:
            with open(tmp, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(csv_header(model, top_k))
                for row in rows:
                    writer.writerows(csv_rows(model, row, top_k))
                    yield row
    except FileExistsError:
        raise BottleneckError(f"--csv {path} was written by someone else while predicting; it is kept",
                              "run again with another --csv (or --force to replace it)") from None
