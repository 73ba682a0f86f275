"""Stage 1: run a frozen base over a dataset split once, and cache the features.

Two steps. ``plan`` decides *what* will be made without running anything: the
samples drawn, their content hashes, every setting that shapes the features, and
so the cache file's name. ``run`` makes it (or opens it when it is cached already):
images are decoded and resized in a thread pool a few batches ahead of the model
(PIL releases the GIL), so the CPU or GPU running the base stays busy; only the
current batches are in memory, whatever the dataset's size. How a run goes (batch
size, threads, progress bars) never changes the features or the file's name.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from . import _faults
from .bases import (BaseSpec, build_feature_model, check_layer, estimate_batch_bytes, get_base, resolve_image_size,
                    resolve_layer, weights_identity)
from .datasets import Dataset, Split, load_dataset
from .errors import BottleneckError
from .images import RESIZE_METHOD, BadImage, resize
from .store import (DamagedCache, FeatureSet, PartialRun, cache_path, canonical_dataset, check_writable, exclusive,
                    find_donors, move_aside, read_features)

log = logging.getLogger("bottleneck")
_MODELS: collections.OrderedDict = collections.OrderedDict()  # built feature models, most recent last
# Bump when the way features are computed changes (input dtype, batching), so old caches are not mixed in.
EXTRACTOR_VERSION = 2
HOLDOUT_SEED = 0  # --test-fraction's held-out part is the same for every draw seed of a grid
_NOTED: set = set()  # notes already given in this process (a grid repeats draws over seeds)


class Interrupted(BottleneckError):
    exit_code = 130

    def __init__(self, done: int, total: int, path: Path):
        super().__init__(f"interrupted after {done} of {total} images of {path.name}",
                         "run the same command again: it resumes from the chunks already written")


class PooledRecipe:
    """The classic recipe: each image resized to a square and run through the base, which
    gives one pooled feature vector per image (``features``, float32)."""

    views = ("",)  # one view of each image: itself
    dtypes = {"features": "float32"}
    per_row_chunks = False

    def __init__(self, size: int):
        self.size = size

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.size, self.size

    def pixels(self, split: Split, index: int, digest: str, view: str) -> np.ndarray:
        return resize(split.load(index, self.size, digest), self.size)

    def build(self, p: Plan):
        s = p.settings
        return build_feature_model(p.spec, s["image_size"], p.weights_path, s["layer"], s["pooling"])

    def outputs(self, out) -> dict[str, np.ndarray]:
        return {"features": np.asarray(out, np.float32)}


@dataclasses.dataclass
class Plan:
    """What one extraction makes: the samples, the settings that shape their features, the file."""

    spec: BaseSpec
    dataset: Dataset
    split: str
    selected: np.ndarray  # indices into the split, sorted
    digests: list[str]  # content hash of each row (image, or image and view)
    settings: dict
    path: Path
    weights_path: Path | None
    short: dict  # classes (or labels) that had fewer images than per_class: {name: how many}
    recipe: object = None  # PooledRecipe, or segmentation's MapRecipe

    @property
    def samples(self) -> Split:
        return self.dataset.split(self.split)

    @property
    def rows(self) -> list[tuple[int, str]]:
        """(split index, view) of each row the file holds: every selected image in every view."""
        return [(int(i), v) for i in self.selected for v in self.recipe.views]

    @property
    def ids(self) -> list[str]:
        s = self.samples
        return [s.ids[i] + (f"#{v}" if v else "") for i, v in self.rows]


@dataclasses.dataclass
class RunOptions:
    """How an extraction runs; none of these changes the features."""

    batch_size: int = 32
    skip_bad_images: bool = False
    progress: bool = True
    workers: int | None = None


def plan(base: str, dataset: str | Dataset, split: str = "train", per_class: int | None = None, seed: int = 0, *,
         data_dir: str | Path | None = None, cache_dir: str | Path = "features", weights: str = "imagenet",
         weights_dir: str | Path | None = None, image_size: int | None = None, layer: str | None = None,
         pooling: str = "avg", test_fraction: float | None = None, target: str | None = None) -> Plan:
    """Decide what ``extract`` with these arguments makes, without running a base: every
    check that can fail (base, size, layer, weights, dataset, split, target) fails here.
    ``target`` only says how ``per_class`` draws (per class, or per label of a multi-label
    target); the features are the images', whatever is predicted from them."""
    spec = get_base(base)
    size = resolve_image_size(spec, image_size)
    if pooling not in ("avg", "max", "none"):
        raise BottleneckError(f"unknown pooling {pooling!r}", "use avg, max or none")
    check_layer(spec, size, layer)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    if test_fraction is not None:
        ds = ds.with_test_fraction(test_fraction, HOLDOUT_SEED)
    s = ds.split(split)
    drawn_for = ds.target(target)
    selected, short = drawn_for.draw(s, per_class, seed)
    weights_id, weights_path = weights_identity(spec, weights, weights_dir)
    digests = s.digests(selected)
    ids = "\n".join(s.ids[i] for i in selected)
    settings = {
        "dataset": canonical_dataset(ds.name), "dataset_id": ds.identity(split), "split": split,
        "test_fraction": test_fraction,
        "base": spec.name, "weights": weights_id, "layer": resolve_layer(spec, layer), "pooling": pooling,
        "image_size": size, "resize": RESIZE_METHOD, "preprocessing": spec.preprocessing,
        "per_class": per_class, "seed": seed if per_class is not None else None,
        "draw": drawn_for.draw_key if per_class is not None else None,
        "selection": hashlib.sha256(ids.encode()).hexdigest()[:16],
        "content": hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16],
        "extractor": EXTRACTOR_VERSION,
    }
    return Plan(spec, ds, split, selected, digests, settings, cache_path(cache_dir, settings), weights_path, short,
                PooledRecipe(size))


def extract(base: str, dataset: str | Dataset, split: str = "train", per_class: int | None = None, seed: int = 0, *,
            data_dir: str | Path | None = None, cache_dir: str | Path = "features", weights: str = "imagenet",
            weights_dir: str | Path | None = None, image_size: int | None = None, layer: str | None = None,
            pooling: str = "avg", test_fraction: float | None = None, target: str | None = None,
            batch_size: int = 32, skip_bad_images: bool = False, progress: bool = True,
            workers: int | None = None) -> FeatureSet:
    """Features of ``base`` for ``per_class`` seeded images per class of ``dataset``/``split``
    (all images if None), from the cache when they are there, else extracted and cached.

    The returned FeatureSet's ``info`` says what this call did: ``extracted`` (images run
    through the base now), ``reused`` (rows copied from other cache files), ``seconds``.
    """
    t0 = time.perf_counter()
    p = plan(base, dataset, split, per_class, seed, data_dir=data_dir, cache_dir=cache_dir, weights=weights,
             weights_dir=weights_dir, image_size=image_size, layer=layer, pooling=pooling,
             test_fraction=test_fraction, target=target)
    return run(p, RunOptions(batch_size, skip_bad_images, progress, workers), t0)


def _notes(p: Plan, progress: bool) -> None:
    ds, per_class = p.dataset, p.settings["per_class"]
    draw = p.settings["draw"]
    if p.short and progress and (ds.name, p.split, per_class, draw) not in _NOTED:
        _NOTED.add((ds.name, p.split, per_class, draw))
        counts = sorted(set(p.short.values()))
        if draw == "class":
            log.warning("%s/%s: %d of %d classes have fewer than %d images; kept all of theirs (%s each)",
                        ds.name, p.split, len(p.short), len(ds.class_names), per_class,
                        "/".join(map(str, counts)))
        else:
            names = ", ".join(f"{k} ({v})" for k, v in list(p.short.items())[:8])
            log.warning("%s/%s: %d labels have fewer than %d positive images; kept all of theirs: %s",
                        ds.name, p.split, len(p.short), per_class, names)
    if ds.ignored_files and progress and (ds.root, "ignored") not in _NOTED:
        _NOTED.add((ds.root, "ignored"))
        log.warning("%s: ignored %d files that are not images, e.g. %s", ds.root, len(ds.ignored_files),
                    ds.ignored_files[0])


def open_cached(p: Plan) -> FeatureSet | None:
    """The plan's cache file, verified; None when there is none. A damaged one is moved
    aside (and said so), so that it is extracted again."""
    if not p.path.exists():
        return None
    try:
        return read_features(p.path, expect=p.settings)
    except DamagedCache as e:
        moved = move_aside(p.path, e.reason)
        log.error("%s %s; moved it to %s and extracting again", p.path, e.reason, moved.name)  # even with --quiet
        return None


def run(p: Plan, options: RunOptions | None = None, t0: float | None = None) -> FeatureSet:
    """Make the plan's cache file (or open it when it is there) and return its features."""
    options = options or RunOptions()
    t0 = time.perf_counter() if t0 is None else t0
    _notes(p, options.progress)

    def done(fs: FeatureSet) -> FeatureSet:
        fs.info.update(extracted=0, reused=0, seconds=time.perf_counter() - t0, cached=True)
        return fs

    fs = open_cached(p)
    if fs is not None:
        return done(fs)
    check_writable(p.path.parent)
    with exclusive(p.path):
        fs = open_cached(p)  # another process may have finished it while we waited for the lock
        if fs is not None:
            return done(fs)
        return _compute(p, options, t0)


def _donor_rows(p: Plan) -> dict[str, dict[str, np.ndarray]]:
    """Rows ({array name: values}), by content hash of the image (and view), for the plan's
    rows found in other cache files made the same way (another draw of the same dataset,
    say): copied, not recomputed."""
    import h5py

    wanted, rows = set(p.digests), {}
    for donor in find_donors(p.path.parent, p.settings, exclude=p.path):
        try:
            fs = read_features(donor)  # verified
        except DamagedCache as e:
            log.error("%s %s; moved it to %s", donor, e.reason, move_aside(donor, e.reason).name)
            continue
        hits = [(j, d) for j, d in enumerate(fs.digests) if d in wanted and d not in rows]
        if hits and fs.arrays == ["features"]:  # pooled features are in memory already
            rows.update({d: {"features": fs.features[j]} for j, d in hits})
        elif hits:
            with h5py.File(donor, "r") as f:
                for j, digest in hits:
                    rows[digest] = {name: f[name][j] for name in fs.arrays}
        if len(rows) == len(wanted):
            break
    return rows


def _model(p: Plan):
    s = p.settings
    key = json.dumps({k: s.get(k) for k in ("base", "weights", "image_size", "layer", "pooling", "levels", "geometry")},
                     sort_keys=True)
    if key not in _MODELS:
        _MODELS[key] = p.recipe.build(p)
        while len(_MODELS) > 2:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(key)
    return _MODELS[key]


def _compute(p: Plan, options: RunOptions, t0: float) -> FeatureSet:
    from tqdm.auto import tqdm

    s, recipe, ids, rows_of = p.samples, p.recipe, p.ids, p.rows
    n = len(rows_of)
    height, width = recipe.input_shape
    # Never pad a batch beyond the images there are (a huge --batch-size on a small split).
    batch_size = max(1, min(options.batch_size, n))
    n_chunks = max(1, -(-n // batch_size))
    # The batch size fixes chunk boundaries, so a resumed run computes every chunk as an uninterrupted one would.
    partial = PartialRun(p.path, {"settings": p.settings, "batch_size": batch_size, "n": n})
    done = partial.open()
    _faults.checkpoint("start")
    todo = [k for k in range(n_chunks) if k not in done]
    donors = _donor_rows(p) if todo else {}
    model = None
    computed = reused = 0
    compute_seconds = 0.0
    workers = options.workers or min(32, (os.cpu_count() or 2) + 4)

    def load(r: int):
        index, view = rows_of[r]
        try:
            return recipe.pixels(s, index, p.digests[r], view), True
        except BadImage:
            if not options.skip_bad_images:
                raise
            return np.zeros((height, width, 3), np.uint8), False

    def submit(pool, k):
        rows = range(k * batch_size, min(n, (k + 1) * batch_size))
        return k, [None if p.digests[r] in donors else pool.submit(load, r) for r in rows]

    rows_done = sum(min(batch_size, n - k * batch_size) for k in done)
    bar = tqdm(total=n, initial=rows_done, unit="img", desc=f"{p.spec.name} {p.dataset.name}/{p.split}",
               disable=not options.progress, leave=False)
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
                chunk: dict[str, np.ndarray] = {}
                if need:
                    if model is None:
                        model = _model(p)
                        _check_batch_memory(model, batch_size, f"{height} x {width}")
                    batch = np.zeros((batch_size, height, width, 3), np.uint8)  # one shape: compiled once
                    batch[:len(need)] = [im for im, _ in loaded]
                    t = time.perf_counter()
                    out = recipe.outputs(model.predict_on_batch(batch))
                    compute_seconds += time.perf_counter() - t
                    for name, values in out.items():
                        chunk[name] = np.empty((len(futures),) + values.shape[1:], values.dtype)
                        chunk[name][need] = values[:len(need)]
                    valid[need] = [ok for _, ok in loaded]
                    computed += len(need)
                for j, r in enumerate(rows):
                    if futures[j] is None:
                        for name, value in donors[p.digests[r]].items():
                            if name not in chunk:
                                chunk[name] = np.empty((len(futures),) + value.shape, value.dtype)
                            chunk[name][j] = value
                        reused += 1
                writes.append(writer.submit(partial.write_chunk, k, chunk, valid))
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
        raise Interrupted(rows_done, n, p.path) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    info = {"extract_seconds": round(seconds, 3), "images_computed": computed,
            "images_per_second": round(computed / seconds, 2) if computed else 0.0,
            "model_images_per_second": round(computed / compute_seconds, 2) if computed else 0.0,
            "batch_size": batch_size}
    index = [i for i, _ in rows_of]
    skipped = partial.finish(n_chunks, p.settings, ids, s.labels[index], [s.groups[i] for i in index],
                             p.dataset.class_names, p.digests, info, recipe.dtypes, recipe.per_row_chunks)
    if skipped:
        log.warning("skipped %d unreadable images: %s", len(skipped), ", ".join(skipped[:10]))
    fs = read_features(p.path, expect=p.settings)
    fs.info.update(extracted=computed, reused=reused, seconds=seconds, cached=False)
    return fs


def _check_batch_memory(model, batch_size: int, size) -> None:
    """Refuse a batch whose activations would not fit in this machine's memory, before
    the first forward pass tries (and the kernel kills the process)."""
    need = estimate_batch_bytes(model, batch_size)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > 0.6 * total:
        fits = max(1, int(batch_size * 0.6 * total / need))
        raise BottleneckError(
            f"a batch of {batch_size} images at {size} px needs about {need / 2**30:.1f} GiB for the model's "
            f"activations; this machine has {total / 2**30:.1f} GiB",
            f"use --batch-size {min(fits, batch_size - 1)} or less (or a smaller --image-size)")
