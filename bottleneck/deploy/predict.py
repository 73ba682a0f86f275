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

from bottleneck.core.errors import BottleneckError
from bottleneck.core.files import atomic_output, check_output
from bottleneck.core.text import spreadsheet_safe
from bottleneck.data.images import IMAGE_SUFFIXES, BadImage, load_image, resize
from bottleneck.data.labelmaps import label_palette, letterbox
from bottleneck.deploy.formats import LoadedModel, load_model
from bottleneck.experiments.segmentation import frame_prediction

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
    ``fractions`` ({class: share of the image's pixels}). An unreadable image raises BadImage
    naming it, or with ``skip_bad_images`` yields {"path", "error"}."""
    m = model if isinstance(model, LoadedModel) else load_model(model)
    size, names, kind = m.image_size, m.meta["output_names"], m.meta["task"]
    (height, width) = m.input_shape
    workers = workers or min(32, (os.cpu_count() or 2) + 4)
    per_image = height * width * 4 * (3 + (len(names) if kind == "segmentation" else 0))  # float input (and maps out)
    most = max(1, PIXEL_BUDGET // per_image)
    if batch_size > most:
        log.info("batch size %d lowered to %d: %d x %d images take %d MB at most", batch_size, most, height,
                 width, PIXEL_BUDGET >> 20)
        batch_size = most
    padded = 0  # the batch shape so far: a short last batch is padded to it (compiled once), never beyond

    def load(path: Path):
        """(pixels, the image's own (height, width), error)"""
        try:
            if kind == "segmentation":  # decoded whole, as extraction decodes frames, then letterboxed
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
        decoded = iter(m.decode(outputs)) if good and kind != "segmentation" else iter(())
        rows = iter(outputs)
        for p, (im, shape, err) in loaded:
            if im is None:
                yield {"path": str(p), "error": err}
                continue
            out = next(rows)
            row = {"path": str(p)}
            if kind == "segmentation":
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
            stem, k = Path(row["path"]).stem, 1
            name = f"{stem}.png"
            while name in taken:
                k += 1
                name = f"{stem}-{k}.png"
            taken.add(name)
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
            "multi_label": ["labels", *names], "regression": names, "segmentation": names}[kind]
    return ["path", *head, "error"]


def csv_cells(model: LoadedModel, row: dict, top_k: int = 3) -> list:
    """One prediction as CSV cells; text that a spreadsheet would run as a formula is quoted."""
    names, kind = model.meta["output_names"], model.meta["task"]
    width = len(csv_header(model, top_k)) - 2
    if "error" in row:
        values = [""] * width
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
                    writer.writerow(csv_cells(model, row, top_k))
                    yield row
    except FileExistsError:
        raise BottleneckError(f"--csv {path} was written by someone else while predicting; it is kept",
                              "run again with another --csv (or --force to replace it)") from None
