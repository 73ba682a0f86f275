"""Predict with an exported model on image files, folders or globs, streaming.

Paths are walked lazily and images are decoded a few batches ahead in a thread pool,
exactly as extraction decodes them (any mode becomes RGB, large JPEGs are decoded at a
reduced scale, bilinear resize to the model's input size), so memory stays flat however
many images there are.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import glob
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from bottleneck.core.errors import BottleneckError
from bottleneck.data.images import IMAGE_SUFFIXES, BadImage, load_image, resize
from bottleneck.deploy.export import LoadedModel, load_model


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
    or {output: value}), and ``top`` ([(class, probability)] for one label) or ``scores``
    ({label: score}). An unreadable image raises BadImage naming it, or with
    ``skip_bad_images`` yields {"path", "error"}."""
    m = model if isinstance(model, LoadedModel) else load_model(model)
    size, names, kind = m.image_size, m.meta["output_names"], m.meta["task"]
    workers = workers or min(32, (os.cpu_count() or 2) + 4)

    def load(path: Path):
        try:
            return resize(load_image(path, size), size), None
        except BadImage as e:
            if not skip_bad_images:
                raise
            return None, str(e.what)

    def finish(batch):
        loaded = [(p, fut.result()) for p, fut in batch]
        good = [(p, im) for p, (im, err) in loaded if im is not None]
        outputs = np.empty((0, len(names)))
        if good:
            pixels = np.zeros((batch_size, size, size, 3), np.uint8)  # one shape: compiled once
            pixels[:len(good)] = [im for _, im in good]
            outputs = np.asarray(m.keras_model.predict_on_batch(pixels))[:len(good)]
        decoded = iter(m.decode(outputs)) if good else iter(())
        rows = iter(outputs)
        for p, (im, err) in loaded:
            if im is None:
                yield {"path": str(p), "error": err}
                continue
            out, pred = next(rows), next(decoded)
            row = {"path": str(p), "prediction": pred}
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
