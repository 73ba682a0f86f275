"""Stage 1: run a frozen base over a dataset split once, and cache the features.

Images are decoded and resized in a thread pool a few batches ahead of the model
(PIL releases the GIL), so the CPU or GPU running the base is kept busy; only
the current batches are in memory, whatever the dataset's size.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np

from . import _faults
from .bases import BaseSpec, build_feature_model, get_base, resolve_image_size, resolve_layer, weights_identity
from .datasets import Dataset, load_dataset
from .errors import BottleneckError
from .images import RESIZE_METHOD, BadImage, resize
from .sampling import per_class_draw
from .store import FeatureSet, PartialRun, cache_path, exclusive, find_donors, read_features

log = logging.getLogger("bottleneck")
_MODELS: collections.OrderedDict = collections.OrderedDict()  # built feature models, most recent last
# Bump when the way features are computed changes (input dtype, batching), so old caches are not mixed in.
EXTRACTOR_VERSION = 2
_NOTED: set = set()  # notes already given in this process (a grid repeats draws over seeds)


class Interrupted(BottleneckError):
    exit_code = 130

    def __init__(self, done: int, total: int, path: Path):
        super().__init__(f"interrupted after {done} of {total} images of {path.name}",
                         "run the same command again: it resumes from the chunks already written")


def _settings(spec: BaseSpec, ds: Dataset, split: str, weights_id: str, size: int, layer: str | None,
              pooling: str, per_class: int | None, seed: int, selected: np.ndarray) -> dict:
    s = ds.split(split)
    ids = "\n".join(s.ids[i] for i in selected)
    return {
        "dataset": ds.name, "dataset_id": ds.identity(split), "split": split,
        "base": spec.name, "weights": weights_id, "layer": resolve_layer(spec, layer), "pooling": pooling,
        "image_size": size, "resize": RESIZE_METHOD, "preprocessing": spec.preprocessing,
        "per_class": per_class, "seed": seed if per_class is not None else None,
        "selection": hashlib.sha256(ids.encode()).hexdigest()[:16], "extractor": EXTRACTOR_VERSION,
    }


def _model(spec, size, weights_id, weights_path, layer, pooling):
    key = (spec.name, size, weights_id, layer, pooling)
    if key not in _MODELS:
        _MODELS[key] = build_feature_model(spec, size, weights_path, layer, pooling)
        while len(_MODELS) > 2:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return _MODELS[key]


def extract(base: str, dataset: str | Dataset, split: str = "train", per_class: int | None = None, seed: int = 0, *,
            data_dir: str | Path | None = None, cache_dir: str | Path = "features", weights: str = "imagenet",
            weights_dir: str | Path | None = None, image_size: int | None = None, layer: str | None = None,
            pooling: str = "avg", batch_size: int = 32, skip_bad_images: bool = False, progress: bool = True,
            workers: int | None = None) -> FeatureSet:
    """Features of ``base`` for ``per_class`` seeded images per class of ``dataset``/``split``
    (all images if None), from the cache when they are there, else extracted and cached.

    The returned FeatureSet's ``info`` says what this call did: ``extracted`` (images run
    through the base now), ``reused`` (rows copied from other cache files), ``seconds``.
    """
    t0 = time.perf_counter()
    spec = get_base(base)
    size = resolve_image_size(spec, image_size)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    s = ds.split(split)
    selected, short = per_class_draw(s.labels, per_class, seed)
    if short and progress and (ds.name, split, per_class) not in _NOTED:
        _NOTED.add((ds.name, split, per_class))
        counts = sorted(set(short.values()))
        log.warning("%s/%s: %d of %d classes have fewer than %d images; kept all of theirs (%s each)",
                    ds.name, split, len(short), len(ds.class_names), per_class, "/".join(map(str, counts)))
    if ds.ignored_files and progress:
        log.warning("%s: ignored %d files that are not images, e.g. %s", ds.root, len(ds.ignored_files),
                    ds.ignored_files[0])
    weights_id, weights_path = weights_identity(spec, weights, weights_dir)
    settings = _settings(spec, ds, split, weights_id, size, layer, pooling, per_class, seed, selected)
    path = cache_path(cache_dir, settings)

    def cached() -> FeatureSet:
        fs = read_features(path, expect=settings)
        fs.info.update(extracted=0, reused=0, seconds=time.perf_counter() - t0, cached=True)
        return fs

    if path.exists():
        return cached()
    with exclusive(path):
        if path.exists():  # another process finished it while we waited for the lock
            return cached()
        return _run(spec, ds, s, split, selected, settings, path, size, weights_id, weights_path, layer, pooling,
                    batch_size, skip_bad_images, progress, workers, t0)


def _donor_rows(path: Path, settings: dict, wanted: set[str]) -> dict[str, np.ndarray]:
    """Feature rows for ``wanted`` source ids found in other cache files made the same way."""
    rows: dict[str, np.ndarray] = {}
    for donor in find_donors(path.parent, settings, exclude=path):
        fs = read_features(donor)
        for sid, feat in zip(fs.source_ids, fs.features):
            if sid in wanted and sid not in rows:
                rows[sid] = feat
        if len(rows) == len(wanted):
            break
    return rows


def _run(spec, ds, s, split, selected, settings, path, size, weights_id, weights_path, layer, pooling,
         batch_size, skip_bad_images, progress, workers, t0) -> FeatureSet:
    from tqdm.auto import tqdm

    path.parent.mkdir(parents=True, exist_ok=True)
    ids = [s.ids[i] for i in selected]
    n_chunks = max(1, -(-len(ids) // batch_size))
    # The batch size fixes chunk boundaries, so a resumed run computes every chunk as an uninterrupted one would.
    partial = PartialRun(path, {"settings": settings, "batch_size": batch_size, "n": len(ids)})
    done = partial.open()
    _faults.checkpoint("start")
    todo = [k for k in range(n_chunks) if k not in done]
    donors = _donor_rows(path, settings, set(ids)) if todo else {}
    model = None
    computed = reused = 0
    compute_seconds = 0.0
    workers = workers or min(32, (os.cpu_count() or 2) + 4)

    def load(i: int):
        try:
            return resize(s.load(i), size), True
        except BadImage:
            if not skip_bad_images:
                raise
            return np.zeros((size, size, 3), np.uint8), False

    def submit(pool, k):
        rows = range(k * batch_size, min(len(ids), (k + 1) * batch_size))
        return k, [None if ids[r] in donors else pool.submit(load, selected[r]) for r in rows]

    rows_done = sum(min(batch_size, len(ids) - k * batch_size) for k in done)
    bar = tqdm(total=len(ids), initial=rows_done, unit="img", desc=f"{spec.name} {ds.name}/{split}",
               disable=not progress, leave=False)
    writes: collections.deque = collections.deque()

    def drain(keep: int = 0) -> None:
        """Wait for queued chunk writes (all but ``keep``), surfacing their errors (disk full)."""
        while len(writes) > keep:
            writes.popleft().result()

    try:
        # Chunks are written by one background thread, in order, so the model never waits on disk.
        with cf.ThreadPoolExecutor(workers) as pool, cf.ThreadPoolExecutor(1) as writer:
            pending = collections.deque(submit(pool, k) for k in todo[:3])
            nxt = 3
            while pending:
                k, futures = pending.popleft()
                if nxt < len(todo):
                    pending.append(submit(pool, todo[nxt]))
                    nxt += 1
                rows = range(k * batch_size, k * batch_size + len(futures))
                need = [j for j, fut in enumerate(futures) if fut is not None]
                loaded = [futures[j].result() for j in need]
                valid = np.ones(len(futures), bool)
                feats = None
                if need:
                    if model is None:
                        model = _model(spec, size, weights_id, weights_path, layer, pooling)
                    batch = np.zeros((batch_size, size, size, 3), np.uint8)  # one shape: compiled once
                    batch[:len(need)] = [im for im, _ in loaded]
                    t = time.perf_counter()
                    out = np.asarray(model.predict_on_batch(batch))[:len(need)]
                    compute_seconds += time.perf_counter() - t
                    feats = np.empty((len(futures),) + out.shape[1:], np.float32)
                    feats[need] = out
                    valid[need] = [ok for _, ok in loaded]
                    computed += len(need)
                for j, r in enumerate(rows):
                    if futures[j] is None:
                        row = donors[ids[r]]
                        if feats is None:
                            feats = np.empty((len(futures),) + row.shape, np.float32)
                        feats[j] = row
                        reused += 1
                writes.append(writer.submit(partial.write_chunk, k, feats, valid))
                drain(keep=2)
                while writes and writes[0].done():
                    writes.popleft().result()  # surfaces write errors promptly
                rows_done += len(futures)
                bar.update(len(futures))
                if os.environ.get("BOTTLENECK_FAULT"):
                    drain()  # so the injected fault strikes after chunk k is durable
                    _faults.checkpoint("after-chunk", k)
            drain()
    except KeyboardInterrupt:
        raise Interrupted(rows_done, len(ids), path) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    info = {"extract_seconds": round(seconds, 3), "images_computed": computed,
            "images_per_second": round(computed / seconds, 2) if computed else 0.0,
            "model_images_per_second": round(computed / compute_seconds, 2) if computed else 0.0,
            "batch_size": batch_size}
    skipped = partial.finish(n_chunks, settings, ids, s.labels[selected], [s.groups[i] for i in selected],
                             ds.class_names, info)
    if skipped:
        log.warning("skipped %d unreadable images: %s", len(skipped), ", ".join(skipped[:10]))
    fs = read_features(path, expect=settings)
    fs.info.update(extracted=computed, reused=reused, seconds=seconds, cached=False)
    return fs
