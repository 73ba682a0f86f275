"""Stage 1: run a frozen base over a dataset split once, and cache the features.

Two steps. ``plan`` (``plan.py``) decides *what* will be made without running anything: the
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
import contextlib
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from bottleneck.cache.store import (
    DamagedCache,
    FeatureSet,
    PartialRun,
    check_writable,
    exclusive,
    find_donors,
    move_aside,
    read_features,
)
from bottleneck.core import faults as _faults
from bottleneck.core.errors import BottleneckError
from bottleneck.data.sources import Dataset
from bottleneck.extraction import feed
from bottleneck.extraction import forward as forward_mod
from bottleneck.extraction import views as augment
from bottleneck.extraction.model import built_model
from bottleneck.extraction.plan import Plan, RunOptions, plan

log = logging.getLogger("bottleneck")

_NOTED: set = set()  # notes already given in this process (a grid repeats draws over seeds)


class Interrupted(BottleneckError):
    exit_code = 130

    def __init__(self, done: int, total: int, path: Path):
        super().__init__(f"interrupted after {done} of {total} images of {path.name}",
                         "run the same command again: it resumes from the chunks already written")


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
    from bottleneck.extraction import ray_engine as cluster

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
    # Never pad a batch beyond the images there are (a huge --batch-size on a small split), nor beyond what a
    # recipe of large inputs allows (scenes: a batch's activations grow with its pixels).
    batch_size = max(1, min(options.batch_size, n, getattr(recipe, "max_batch", n)))
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
        from bottleneck.extraction import ray_engine as cluster

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
