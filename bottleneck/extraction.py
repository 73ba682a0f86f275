"""Stage 1: run a frozen base over a dataset split once, and cache the features.

Two steps. ``plan`` decides *what* will be made without running anything: the
samples drawn, their content hashes, every setting that shapes the features, and
so the cache file's name. ``run`` makes it (or opens it when it is cached already):
images are decoded and resized in a thread pool a few batches ahead of the model
(PIL releases the GIL), so the CPU or GPU running the base stays busy (on a GPU
the next batch is sent before the last is read back: ``forward.py``); only the
current batches are in memory, whatever the dataset's size. How a run goes (batch
size, threads, progress bars) never changes the features or the file's name.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import concurrent.futures.process
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np

from . import _faults, augment
from .bases import (BaseSpec, build_feature_model, check_compute, check_layer, check_pooling, compute_dtype,
                    estimate_batch_bytes, get_base, resolve_image_size, resolve_layer, sized_canvas, weights_identity)
from . import feed
from . import forward as forward_mod
from .datasets import Dataset, Split, load_dataset
from .errors import BottleneckError, DatasetError
from .images import RESIZES, resize
from .store import (DamagedCache, FeatureSet, PartialRun, cache_path, canonical_dataset, check_writable, exclusive,
                    find_donors, move_aside, read_features)

log = logging.getLogger("bottleneck")
_MODELS: collections.OrderedDict = collections.OrderedDict()  # built feature models, most recent last
# Bump when the way features are computed changes (input dtype, batching), so old caches are not mixed in.
EXTRACTOR_VERSION = 2
HOLDOUT_SEED = 0  # --test-fraction's held-out part is the same for every draw seed of a grid
_NOTED: set = set()  # notes already given in this process (a grid repeats draws over seeds)
ENGINES = ("local", "ray")


class Interrupted(BottleneckError):
    exit_code = 130

    def __init__(self, done: int, total: int, path: Path):
        super().__init__(f"interrupted after {done} of {total} images of {path.name}",
                         "run the same command again: it resumes from the chunks already written")


class PooledRecipe:
    """The classic recipe: each image resized to a square and run through the base, which
    gives one pooled feature vector per image (``features``, float32).

    ``source`` (height, width): every image has this size and is resized inside the model,
    on the device, rather than on the host (``--resize device``): the feed then ships the
    images' own pixels (32 x 32 for CIFAR-10, 49 times fewer bytes than 224 x 224).

    ``each_size``: images of any size (``--resize device-mixed``). One that fits in the
    input size travels as it is, in a sized canvas (``bases.sized_canvas``), and the model
    resizes it by its own scale; a larger one is resized on the host first, as by default
    (the model's resize of a full-size image is then the identity)."""

    views = ("",)  # one view of each image: itself
    dtypes = {"features": "float32"}
    per_row_chunks = False

    def __init__(self, size: int, source: tuple[int, int] | None = None, crop: float | None = None,
                 views: int = 1, each_size: bool = False):
        self.size, self.source, self.crop, self.each_size = size, source, crop, each_size
        # view 0: the image; views 1..K-1: the transform written in each row's digest (augment.py)
        self.views = ("",) + tuple(f"v{j}" for j in range(1, views))

    @property
    def input_shape(self) -> tuple[int, int]:
        if self.each_size:
            return self.size + 1, self.size  # the canvas and its size row
        return self.source or (self.size, self.size)

    def decode(self, split: Split, index: int, digest: str):
        digest, view = augment.split_digest(digest)
        if view is not None:  # an augmented view: the image (cropped to its box first), transformed
            return augment.apply(self._decode(split, index, digest, full=True), view)
        return self._decode(split, index, digest)

    def _decode(self, split: Split, index: int, digest: str, full: bool = False):
        if self.crop is not None:  # the row's digest carries its box: "<content>:x1,y1,x2,y2"
            content, box = digest.split(":")
            return crop_to_box(split.load(index, None, content), [float(v) for v in box.split(",")], self.crop)
        if full:
            return split.load(index, None, digest)
        if self.source is None:
            return split.load(index, self.size, digest)  # large JPEGs decoded at a reduced scale
        image = split.load(index, None, digest)
        if image.size[::-1] != tuple(self.source):
            raise DatasetError(f"{split.source.name(index)} is {image.size[0]} x {image.size[1]} pixels, but "
                               f"--resize device needs every image at one size ({self.source[1]} x "
                               f"{self.source[0]}, the first image's)",
                               "use --resize device-mixed (images of any size), or drop --resize device")
        return image

    def fit(self, image, view: str) -> np.ndarray:
        if self.each_size:
            fits = image.size[0] <= self.size and image.size[1] <= self.size
            return sized_canvas(np.asarray(image, np.uint8) if fits else resize(image, self.size), self.size)
        return np.asarray(image, np.uint8) if self.source else resize(image, self.size)

    def pixels(self, split: Split, index: int, digest: str, view: str = "") -> np.ndarray:
        return self.fit(self.decode(split, index, digest), view)

    def build(self, order: ModelOrder):
        s = order.settings
        with compute_dtype(s.get("compute", "float32")):
            return build_feature_model(order.spec, s["image_size"], order.weights_path, s["layer"], s["pooling"],
                                       source_size=self.source, each_size=self.each_size)

    def outputs(self, out) -> dict[str, np.ndarray]:
        return {"features": np.asarray(out, np.float32)}


def crop_to_box(image, box: list[float], margin: float):
    """The part of ``image`` inside ``box`` (x1, y1, x2, y2 as fractions of its width and
    height), grown by ``margin`` times the box's size on each side, within the image."""
    w, h = image.size
    x1, y1, x2, y2 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    mx, my = margin * (x2 - x1), margin * (y2 - y1)
    left, top = max(0, math.floor(x1 - mx)), max(0, math.floor(y1 - my))  # outward: the margin is never cut
    right, bottom = min(w, max(left + 1, math.ceil(x2 + mx))), min(h, max(top + 1, math.ceil(y2 + my)))
    return image.crop((left, top, right, bottom))


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
    def order(self) -> ModelOrder:
        return ModelOrder(self.spec, self.settings, self.weights_path, self.recipe)

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
    feed: str = "auto"  # threads, processes, or auto: processes for many image files (see feed.choose)
    engine: str = "local"  # local (this process and its feed) or ray (a pool of Ray actors, see cluster.py)
    address: str | None = None  # --engine ray: an existing cluster's address, or None to start one for the run

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise BottleneckError(f"unknown engine {self.engine!r}", f"use one of {', '.join(ENGINES)}")
        if self.engine == "ray" and self.feed != "auto":
            raise BottleneckError(f"--feed {self.feed} is the local engine's: Ray actors each decode their own chunks",
                                  "drop --feed (--workers sets the number of actors)")
        if self.address is not None and self.engine != "ray":
            raise BottleneckError("--address is the address of a Ray cluster: it needs --engine ray",
                                  "add --engine ray, or drop --address")


def plan(base: str, dataset: str | Dataset, split: str = "train", per_class: int | None = None, seed: int = 0, *,
         data_dir: str | Path | None = None, cache_dir: str | Path = "features", weights: str = "imagenet",
         weights_dir: str | Path | None = None, image_size: int | None = None, layer: str | None = None,
         pooling: str = "avg", test_fraction: float | None = None, target: str | None = None,
         resize: str = "host", compute: str = "float32", crop: float | None = None, views: int = 1,
         for_test: bool = False) -> Plan:
    """Decide what ``extract`` with these arguments makes, without running a base: every
    check that can fail (base, size, layer, weights, dataset, split, target) fails here.
    ``target`` only says how ``per_class`` draws (per class, or per label of a multi-label
    target); the features are the images', whatever is predicted from them. ``views``: rows
    per image, view 0 the image and the others seeded variations of it (``augment``);
    ``for_test``: they are for test-time averaging (no flip that needs the class)."""
    spec = get_base(base)
    size = resolve_image_size(spec, image_size)
    check_pooling(pooling)
    check_layer(spec, size, layer)
    ds = dataset if isinstance(dataset, Dataset) else load_dataset(dataset, data_dir)
    if test_fraction is not None:
        ds = ds.with_test_fraction(test_fraction, HOLDOUT_SEED)
    s = ds.split(split)
    drawn_for = ds.target(target)
    selected, short = drawn_for.draw(s, per_class, seed)
    weights_id, weights_path = weights_identity(spec, weights, weights_dir)
    if resize not in RESIZES:
        raise BottleneckError(f"unknown --resize {resize!r}", "use host (PIL, the default), device (in the model, "
                                                              "images of one size) or device-mixed (any sizes)")
    # On the device, every image must have the first one's size (checked as each is decoded).
    source = None if resize != "device" or not len(selected) else s.load(int(selected[0])).size[::-1]
    digests = s.digests(selected)
    if crop is not None:
        digests = _with_boxes(ds, s, selected, digests, crop, resize)
    aug = augment.views_for(canonical_dataset(ds.name), views, for_test)
    if views > 1:
        if resize != "host":
            raise BottleneckError(f"--views and --resize {resize} do not go together (views differ in size)",
                                  f"drop --resize {resize}")
        if drawn_for.task.kind != "single_label":
            raise BottleneckError(f"--views are for one class per image; target {drawn_for.name} is "
                                  f"{drawn_for.task.kind}", "drop --views (a view can move a box or mirror a label)")
        digests = aug.digests(digests, s.labels[np.asarray(selected, dtype=np.int64)], ds.class_names)
    ids = "\n".join(s.ids[i] for i in selected)
    settings = {
        "dataset": canonical_dataset(ds.name), "dataset_id": ds.identity(split), "split": split,
        "test_fraction": test_fraction,
        "base": spec.name, "weights": weights_id, "layer": resolve_layer(spec, layer), "pooling": pooling,
        "image_size": size, "resize": RESIZES[resize],
        "preprocessing": spec.preprocessing,
        "per_class": per_class, "seed": seed if per_class is not None else None,
        "draw": drawn_for.draw_key if per_class is not None else None,
        "selection": hashlib.sha256(ids.encode()).hexdigest()[:16],
        "content": hashlib.sha256("\n".join(digests).encode()).hexdigest()[:16],
        "extractor": EXTRACTOR_VERSION,
    }
    if source is not None:
        settings["source_size"] = list(source)
    check_compute(compute)
    if compute != "float32":  # recorded only when not the default, so earlier files keep their names
        settings["compute"] = compute
    if crop is not None:  # each row's box is in its digest, so in "content" too
        settings["crop"] = f"box + {crop:g} margin"
    if views > 1:  # each row's transform is in its digest: these only say how many, and how they were drawn
        settings["augment"], settings["augment_views"] = aug.description, views
    return Plan(spec, ds, split, selected, digests, settings, cache_path(cache_dir, settings), weights_path, short,
                PooledRecipe(size, source, crop, views, each_size=resize == "device-mixed"))


def _with_boxes(ds: Dataset, s: Split, selected, digests: list[str], crop: float, resize: str) -> list[str]:
    """Each row's digest with its box appended (what a cropped row is made of)."""
    if "box" not in ds.targets:
        raise BottleneckError(f"dataset {ds.name} gives no boxes to crop to", "drop --crop (GTSRB's CSVs give them)")
    if not 0 <= crop <= 1:
        raise BottleneckError(f"--crop {crop} is not a margin between 0 and 1", "e.g. --crop 0.1: 10% on each side")
    if resize != "host":
        raise BottleneckError(f"--crop and --resize {resize} do not go together (crops differ in size)",
                              f"drop --resize {resize}")
    boxes = ds.target("box").values(s)[np.asarray(selected, dtype=np.int64)]
    return [f"{d}:{','.join(f'{v:.6f}' for v in box)}" for d, box in zip(digests, boxes)]


def extract(base: str, dataset: str | Dataset, split: str = "train", per_class: int | None = None, seed: int = 0, *,
            data_dir: str | Path | None = None, cache_dir: str | Path = "features", weights: str = "imagenet",
            weights_dir: str | Path | None = None, image_size: int | None = None, layer: str | None = None,
            pooling: str = "avg", test_fraction: float | None = None, target: str | None = None,
            resize: str = "host", compute: str = "float32", crop: float | None = None, views: int = 1,
            for_test: bool = False, batch_size: int = 32,
            skip_bad_images: bool = False, progress: bool = True, workers: int | None = None,
            feed: str = "auto", engine: str = "local", address: str | None = None) -> FeatureSet:
    """Features of ``base`` for ``per_class`` seeded images per class of ``dataset``/``split``
    (all images if None), from the cache when they are there, else extracted and cached.

    The returned FeatureSet's ``info`` says what this call did: ``extracted`` (images run
    through the base now), ``reused`` (rows copied from other cache files), ``seconds``.
    """
    t0 = time.perf_counter()
    p = plan(base, dataset, split, per_class, seed, data_dir=data_dir, cache_dir=cache_dir, weights=weights,
             weights_dir=weights_dir, image_size=image_size, layer=layer, pooling=pooling,
             test_fraction=test_fraction, target=target, resize=resize, compute=compute, crop=crop, views=views,
             for_test=for_test)
    options = RunOptions(batch_size, skip_bad_images, progress, workers, feed, engine, address)
    return run(p, options, t0)


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
    with exclusive(p.path), engine_session(options):
        fs = open_cached(p)  # another process may have finished it while we waited for the lock
        if fs is not None:
            return done(fs)
        return _compute(p, options, t0)


def engine_session(options: RunOptions):
    """What the engine needs for the length of a command: for Ray, its instance, kept across the
    extractions of a grid (and started only when one of them has something to compute)."""
    if options.engine != "ray":
        return contextlib.nullcontext()
    from . import cluster

    return cluster.session(options.address)


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


@dataclasses.dataclass
class ModelOrder:
    """What builds a plan's model and nothing more: small and picklable, so it can travel to
    an engine's workers (``--engine ray``), which build it once each."""

    spec: BaseSpec
    settings: dict
    weights_path: Path | None
    recipe: object

    @property
    def key(self) -> str:
        s = self.settings
        return json.dumps({k: s.get(k) for k in ("base", "weights", "image_size", "layer", "pooling", "levels",
                                                 "geometry", "resize", "source_size", "compute")}, sort_keys=True)


def built_model(order: ModelOrder, batch_size: int):
    """``model_of(order)``, refused when a batch of ``batch_size`` would not fit in memory."""
    model = model_of(order)
    check_batch_memory(model, batch_size, " x ".join(map(str, order.recipe.input_shape)))
    return model


def model_of(order: ModelOrder):
    """The order's model, built once per process (the two most recent are kept)."""
    if order.key not in _MODELS:
        _MODELS[order.key] = order.recipe.build(order)
        while len(_MODELS) > 2:
            _MODELS.popitem(last=False)
    _MODELS.move_to_end(order.key)
    return _MODELS[order.key]


# The writer may fall this far behind the model (two chunks at least) before the model waits for it.
WRITE_AHEAD_BYTES = 64 * 2**20


@dataclasses.dataclass
class Job:
    """Chunk ``k`` of a file: its ``rows``; ``need``, the positions among them to compute (the
    others are copied from donor files); ``work``, (split index, view, digest) of each needed row."""

    k: int
    rows: list[int]
    need: list[int]
    work: list[tuple[int, str, str]]


def _local_chunks(p: Plan, options: RunOptions, jobs: list[Job], stages: feed.Stages, batch_size: int,
                  about: dict):
    """The in-process engine: a feed (threads or processes) makes the pixels a few chunks ahead;
    this process runs the model. Yields (job, made) in the jobs' order: ``made`` is None when
    every row of the job came from donors, else (outputs of the needed rows, {array name:
    values}; which of them were readable images). Says its workers in ``about["feed"]``."""
    t = time.perf_counter()
    on_cpu = forward_mod.on_cpu()
    kind, workers = feed.choose(options.feed, p.samples.source, sum(len(job.need) for job in jobs), options.workers,
                                on_cpu)
    idle = kind == "processes" and on_cpu  # the workers take only the cycles the model leaves
    about["feed"] = f"{kind} x {workers}" + (", idle priority" if idle else "")
    recipe, forward = p.recipe, None
    # Every worker has a chunk in hand and one waiting; the model holds up to IN_FLIGHT more.
    ahead = workers + 2
    sent: collections.deque = collections.deque()  # (job, chunk, handle) on the device, oldest first

    def taken():
        """The oldest batch sent, read back: its job and (outputs, valid rows)."""
        job, made, handle = sent.popleft()
        t = time.perf_counter()
        out = recipe.outputs(forward.take(handle))
        stages.model += time.perf_counter() - t
        pool.release(made)  # only now: the device may read a batch's pixels until its outputs are back
        return job, ({name: values[:len(job.need)] for name, values in out.items()}, made.valid)

    pool = feed.Feed(p.samples, recipe, options.skip_bad_images, workers, kind, batch_size,
                     slots=ahead + forward_mod.IN_FLIGHT, idle=idle)
    try:
        submitted = feed.Ahead(pool, [job.work if job.need else None for job in jobs], ahead, first=feed.cores())
        try:
            stages.start += time.perf_counter() - t
            for job in jobs:
                t = time.perf_counter()
                future = submitted.next()
                if future is None:  # every row from donors: yield it in its place, after those sent
                    while sent:
                        yield taken()
                    yield job, None
                    continue
                made = future.result()
                stages.wait += time.perf_counter() - t
                stages.decode += made.decode
                stages.resize += made.resize
                submitted.done()  # a worker is free again: it takes the next chunk
                if forward is None:
                    t = time.perf_counter()
                    forward = forward_mod.forward_of(built_model(p.order, batch_size))
                    stages.build = time.perf_counter() - t
                t = time.perf_counter()
                # a whole batch, zeros after the chunk's rows: one shape, compiled once
                sent.append((job, made, forward.send(pool.pixels(made))))
                stages.model += time.perf_counter() - t
                if len(sent) >= forward.in_flight:
                    yield taken()
            while sent:
                yield taken()
        finally:
            submitted.close()  # before the pool closes: nothing is submitted to a closed pool
        # Every chunk is out: the workers end while the caller finishes the file (it waits for them
        # before it returns, ``about["stopped"]``, so that none outlives the run).
        about["stopped"] = pool.close_later()
    finally:
        if "stopped" not in about:  # stopped early (an error, Ctrl-C, the caller closing us): at once
            pool.close()


def _compute(p: Plan, options: RunOptions, t0: float) -> FeatureSet:
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    s, recipe, rows_of = p.samples, p.recipe, p.rows
    n = len(rows_of)
    # Never pad a batch beyond the images there are (a huge --batch-size on a small split).
    batch_size = max(1, min(options.batch_size, n))
    n_chunks = max(1, -(-n // batch_size))
    # The batch size fixes chunk boundaries, so a resumed run computes every chunk as an uninterrupted one would.
    partial = PartialRun(p.path, {"settings": p.settings, "batch_size": batch_size, "n": n}, recipe.dtypes,
                         recipe.per_row_chunks, n)
    done = partial.open()
    _faults.checkpoint("start")
    todo = [k for k in range(n_chunks) if k not in done]
    donors = _donor_rows(p) if todo else {}
    jobs = []
    for k in todo:
        rows = _chunk_rows(k, batch_size, n)
        need = [j for j, r in enumerate(rows) if p.digests[r] not in donors]
        jobs.append(Job(k, rows, need, [(rows_of[rows[j]][0], rows_of[rows[j]][1], p.digests[rows[j]]) for j in need]))
    computed = reused = 0
    stages = feed.Stages()
    about: dict = {}  # what the engine says of itself: its workers
    if options.engine == "ray":
        from . import cluster

        engine = cluster.chunks(p, options, jobs, stages, batch_size, about)
    else:
        engine = _local_chunks(p, options, jobs, stages, batch_size, about)

    rows_done = sum(min(batch_size, n - k * batch_size) for k in done)
    bar = tqdm(total=n, initial=rows_done, unit="img", desc=f"{p.spec.name} {p.dataset.name}/{p.split}",
               disable=not options.progress, leave=False)
    writes: collections.deque = collections.deque()  # (future, bytes) of each chunk queued for the writer

    def drain(keep: int = 0, keep_bytes: int = 0) -> None:
        """Wait for queued chunk writes until ``keep`` chunks or ``keep_bytes`` bytes at most are
        left, surfacing their errors (disk full)."""
        t = time.perf_counter()
        while len(writes) > keep and sum(size for _, size in writes) > keep_bytes:
            writes.popleft()[0].result()
        stages.write += time.perf_counter() - t

    stages.start = time.perf_counter() - t_start  # the engine adds the time it takes to start
    looped = False
    try:
        # Chunks are written by one background thread, in order, so the model never waits on disk
        # (unless the disk is slower than it on average: the queue evens out a slow fsync).
        with contextlib.closing(engine), cf.ThreadPoolExecutor(1) as writer:
            for job, made in engine:
                rows, need = job.rows, job.need
                valid = np.ones(len(rows), bool)
                chunk: dict[str, np.ndarray] = {}
                if made is not None:
                    outputs, made_valid = made
                    for name, values in outputs.items():
                        chunk[name] = np.empty((len(rows),) + values.shape[1:], values.dtype)
                        chunk[name][need] = values
                    valid[need] = made_valid
                    computed += len(need)
                computed_here = set(need)
                for j, r in enumerate(rows):
                    if j not in computed_here:
                        for name, value in donors[p.digests[r]].items():
                            if name not in chunk:
                                chunk[name] = np.empty((len(rows),) + value.shape, value.dtype)
                            chunk[name][j] = value
                        reused += 1
                writes.append((writer.submit(partial.add, job.k, chunk, valid),
                               sum(a.nbytes for a in chunk.values())))
                drain(keep=2, keep_bytes=WRITE_AHEAD_BYTES)
                while writes and writes[0][0].done():
                    writes.popleft()[0].result()  # surfaces write errors promptly
                rows_done += len(rows)
                bar.update(len(rows))
                if os.environ.get("BOTTLENECK_FAULT"):
                    drain()  # so the injected fault strikes after chunk k is durable
                    _faults.checkpoint("after-chunk", job.k)
            drain()
        looped = True
    except KeyboardInterrupt:
        raise Interrupted(rows_done, n, p.path) from None
    except cf.process.BrokenProcessPool:
        raise BottleneckError(f"a feed worker process died after {rows_done} of {n} images of {p.path.name} "
                              "(killed, out of memory, or it failed to start)",
                              "run the same command again (it resumes), with fewer --workers or --feed threads; "
                              "from a Python script, put the calls under `if __name__ == \"__main__\":` (worker "
                              "processes import the script, as with any multiprocessing)") from None
    finally:
        bar.close()
        if not looped:  # stopped, however: drop the file begun; the chunks written stay, to resume from
            partial.abandon()
            _feed_stopped(about, quiet=True)  # (the last write failed after the feed was done)
    t_finish = time.perf_counter()
    seconds = t_finish - t0
    info = {"extract_seconds": round(seconds, 3), "images_computed": computed,
            "images_per_second": round(computed / seconds, 2) if computed else 0.0,
            "model_images_per_second": round(computed / stages.model, 2) if computed and stages.model else 0.0,
            "batch_size": batch_size, "feed": about.get("feed", ""), "stages": json.dumps(stages.as_dict())}
    try:
        index = [i for i, _ in rows_of]
        labels = np.array([augment.label_of(d, int(y)) for d, y in zip(p.digests, s.labels[index])], np.int64)
        skipped = partial.finish(n_chunks, p.settings, p.ids, labels, [s.groups[i] for i in index],
                                 p.dataset.class_names, p.digests, info)
        # Neither hashed nor read again: ``finish`` hashed these bytes as it wrote them (every later
        # open verifies), and kept pooled features in memory as it did.
        fs = read_features(p.path, expect=p.settings, load=False)
        if partial.features is not None:
            fs.features = partial.features
    except BaseException:
        _feed_stopped(about, quiet=True)
        raise
    stages.finish = time.perf_counter() - t_finish
    t = time.perf_counter()
    _feed_stopped(about)  # the feed's workers, ending meanwhile
    stages.stop = time.perf_counter() - t
    if skipped:
        log.warning("skipped %d unreadable images: %s", len(skipped), ", ".join(skipped[:10]))
    seconds = time.perf_counter() - t0
    fs.info.update(extracted=computed, reused=reused, seconds=seconds, cached=False,
                   stages=json.dumps(stages.as_dict()))  # the file's record has all but the finish and stop
    return fs


def _feed_stopped(about: dict, quiet: bool = False) -> None:
    """Wait for the feed that ``_local_chunks`` is closing in the background, if it is; ``quiet``:
    drop an error of closing (another error is on its way, and it is the one to say)."""
    wait = about.pop("stopped", None)
    if wait is not None:
        with contextlib.suppress(Exception) if quiet else contextlib.nullcontext():
            wait()


def stages_of(sets: list[FeatureSet]) -> dict | None:
    """Seconds per stage (``feed.Stages``) summed over the feature sets extracted by this
    call; None when nothing was extracted (all read from the cache)."""
    return feed.total([json.loads(fs.info["stages"]) for fs in sets
                       if fs.info.get("extracted") and "stages" in fs.info])


def _chunk_rows(k: int, batch_size: int, n: int) -> list[int]:
    return list(range(k * batch_size, min(n, (k + 1) * batch_size)))


def check_batch_memory(model, batch_size: int, size) -> None:
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
