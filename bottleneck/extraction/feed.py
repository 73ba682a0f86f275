"""Stage 1's feed: the pixels of each chunk, made ahead of the model by a pool of workers.

One task per chunk (a batch of rows), so the Python objects per image are few. The
workers are threads, or processes (``kind="processes"``) that decode and resize free of
the GIL: each process gets the split and the recipe once, when it starts, and writes a
chunk's uint8 pixels into a shared-memory batch, so the pixels never cross a pipe. A task
also returns the seconds it spent reading and decoding and the seconds it spent resizing,
so where time goes is visible (``Stages``).

Processes never outlive the run: the pool is shut down when the run ends, however it
ends, and a worker whose run was killed (SIGKILL) notices within half a second and exits.

When the model computes on this machine's CPU, the worker processes run at idle priority
(``yield_cpu``): they take only the cycles the model leaves (its threads leave about a tenth
of two cores idle here, and the feed needs a few percent), and never preempt one of its
threads, whose whole operation would wait for it. Threads cannot do that: a low-priority
thread holding the GIL would hold up the model's thread instead.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing
import os
import queue
import signal
import threading
import time
from typing import Callable

import numpy as np

from bottleneck.core.errors import BottleneckError
from bottleneck.core.procs import alive
from bottleneck.data.images import BadImage
from bottleneck.data.sources import FileSource

KINDS = ("auto", "threads", "processes")

# "auto" uses processes for image files when there are at least this many rows to make: below
# it, starting them (under a second for 14 on a 16-core machine, 0.25 s for 2 on 2 cores)
# costs more than it saves.
PROCESS_MIN_ROWS = 2000


@dataclasses.dataclass
class Stages:
    """Seconds spent in each stage of an extraction. ``decode`` and ``resize`` are summed
    over workers (CPU seconds of the feed); the others are wall-clock seconds of the run:
    ``start`` (resuming, donor rows, starting the pool), ``build`` (building the model, when
    this process has not yet), ``wait`` (the model waiting for the feed, including the
    workers' start), ``model`` (forward passes, with the transfers to and from the device),
    ``write`` (waiting for the writer), ``stop`` (closing the feed: its workers and shared
    memory), ``finish`` (the file's last chunks, its record, sync and rename)."""

    decode: float = 0.0
    resize: float = 0.0
    start: float = 0.0
    build: float = 0.0
    wait: float = 0.0
    model: float = 0.0
    write: float = 0.0
    stop: float = 0.0
    finish: float = 0.0

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in dataclasses.asdict(self).items()}


def wall_seconds(stages: dict) -> float:
    """The run's own time in a stage dict (``Stages.as_dict``): every stage but ``decode`` and
    ``resize``, which are CPU seconds summed over the workers."""
    return sum(stages.get(f.name, 0.0) for f in dataclasses.fields(Stages) if f.name not in ("decode", "resize"))


def total(stages: list[dict]) -> dict | None:
    """Several runs' stage seconds (``Stages.as_dict``) added up; None for none."""
    return {k: round(sum(s.get(k, 0.0) for s in stages), 3) for k in stages[0]} if stages else None


@dataclasses.dataclass
class Chunk:
    """A chunk made: ``pixels`` is a whole batch (``batch_size`` rows, ready for the model),
    the chunk's rows first and zeros after; ``valid[j]`` is False for an unreadable image
    skipped (its pixels are zeros). ``slot``: the shared-memory slot it lies in."""

    pixels: np.ndarray | None
    valid: np.ndarray
    decode: float
    resize: float
    slot: int | None = None


def make_chunk(split, recipe, rows: list[tuple[int, str, str]], skip_bad: bool, out: np.ndarray | None = None,
               batch_size: int | None = None) -> Chunk:
    """Pixels for ``rows`` ((split index, view, digest) each), through ``recipe``, written into
    ``out`` (a batch: at least len(rows) rows), or into a new batch of ``batch_size`` rows.
    Its ``decode`` and ``resize`` are this thread's CPU seconds: a worker's wall-clock time
    would count the time other threads ran instead (the model's, whose cycles an idle-priority
    worker only takes when they are free), and waiting for a slow disk shows as the model's
    ``wait``."""
    height, width = recipe.input_shape
    if out is None:
        out = np.zeros((batch_size or len(rows), height, width, 3), np.uint8)
    else:
        out[len(rows):] = 0
    valid = np.ones(len(rows), bool)
    decode = resize = 0.0
    for j, (index, view, digest) in enumerate(rows):
        t0 = time.thread_time()
        try:
            image = recipe.decode(split, index, digest)
        except BadImage:
            if not skip_bad:
                raise
            valid[j] = False
            out[j] = 0
            continue
        t1 = time.thread_time()
        out[j] = recipe.fit(image, view)
        del image  # a decoded image can be huge: never hold one across the next decode
        decode += t1 - t0
        resize += time.thread_time() - t1
    return Chunk(out, valid, decode, resize)


# One process's share of the work: set once by _start, read by each task.
_WORK: dict = {}


def yield_cpu() -> None:
    """Run this process at idle priority: Linux's SCHED_IDLE (it runs only on a core nothing
    else wants), or the lowest nice level where there is no such policy."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or a sandbox that forbids it
        os.nice(19 - os.nice(0))


def _start(split, recipe, skip_bad: bool, run_pid: int, idle: bool = False) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if idle:
        yield_cpu()
    _WORK.update(split=split, recipe=recipe, skip_bad=skip_bad, slots={})

    # The run killed (SIGKILL): nothing will shut this pool down, and the fork server (this
    # process's parent) lives while its workers do, so each worker watches the run itself.
    def watch() -> None:
        while alive(run_pid):
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def _task(rows, slot: int, name: str, shape: tuple) -> Chunk:
    """In a worker process: make the chunk in shared-memory slot ``slot``; only its
    bookkeeping travels back through the pipe, never the pixels."""
    from multiprocessing import shared_memory

    slots = _WORK["slots"]
    if name not in slots:
        shm = shared_memory.SharedMemory(name=name)
        slots[name] = (shm, np.ndarray(shape, np.uint8, buffer=shm.buf))
    made = make_chunk(_WORK["split"], _WORK["recipe"], rows, _WORK["skip_bad"], out=slots[name][1])
    made.pixels, made.slot = None, slot
    return made


class Feed:
    """A pool that makes chunks: ``submit(rows)`` returns a future of a ``Chunk`` holding a
    whole batch of ``batch_size`` rows; ``release(chunk)`` once the model has used it.

    Processes write each chunk into one of ``slots`` shared-memory batches (the chunks in
    flight at most), so pixels never cross a pipe; threads make a new array per chunk.
    ``idle``: processes run at idle priority (``yield_cpu``), for a model on the same cores."""

    def __init__(self, split, recipe, skip_bad: bool, workers: int, kind: str = "threads", batch_size: int = 32,
                 slots: int = 1, idle: bool = False):
        if kind not in ("threads", "processes"):
            raise ValueError(f"unknown feed kind {kind!r}")
        if idle and kind != "processes":
            raise ValueError("only worker processes can run at idle priority (a thread would hold the GIL)")
        self.kind, self.workers, self.batch_size = kind, workers, batch_size
        self.split, self.recipe, self.skip_bad = split, recipe, skip_bad
        self._shared: list = []
        if kind == "threads":
            self._pool = cf.ThreadPoolExecutor(workers)
            return
        from multiprocessing import shared_memory

        self._shape = (batch_size, *recipe.input_shape, 3)
        try:
            for _ in range(slots):
                shm = shared_memory.SharedMemory(create=True, size=int(np.prod(self._shape)))
                self._shared.append((shm, np.ndarray(self._shape, np.uint8, buffer=shm.buf)))
        except BaseException:
            self._unlink()
            raise
        self._free = list(range(slots))
        # Workers are forked from a fork server that imported only the extraction code: not forked from
        # this process (it runs TensorFlow's threads, which a fork would copy mid-state). Each worker
        # still imports the user's __main__ script as it starts, as under spawn (what a pickled recipe
        # may name lives there): an unguarded call in it is stopped by plan() (procs.importing_main).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["bottleneck.extraction.plan", "bottleneck.extraction.maps"])  # what unpickling a recipe needs
        slim = dataclasses.replace(split, ids=[], labels=np.empty(0), groups=[])  # workers read the source only
        self._pool = cf.ProcessPoolExecutor(workers, mp_context=context, initializer=_start,
                                            initargs=(slim, recipe, skip_bad, os.getpid(), idle))

    def submit(self, rows: list[tuple[int, str, str]]) -> cf.Future:
        if self.kind == "threads":
            return self._pool.submit(make_chunk, self.split, self.recipe, rows, self.skip_bad, None, self.batch_size)
        slot = self._free.pop()  # there is always one: the caller keeps at most ``slots`` chunks in flight
        return self._pool.submit(_task, rows, slot, self._shared[slot][0].name, self._shape)

    def pixels(self, chunk: Chunk) -> np.ndarray:
        """The chunk's batch (in its shared-memory slot, for processes)."""
        return chunk.pixels if chunk.slot is None else self._shared[chunk.slot][1]

    def release(self, chunk: Chunk) -> None:
        """The model is done with the chunk's batch: its slot takes the next chunk."""
        if chunk.slot is not None:
            self._free.append(chunk.slot)

    def _unlink(self) -> None:
        for shm, _ in self._shared:
            shm.close()
            shm.unlink()
        self._shared = []

    def close(self) -> None:
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._unlink()

    def close_later(self) -> Callable[[], None]:
        """Start ``close`` in a thread of its own and return the call that waits for it (raising
        what closing raised): ending 14 worker processes and freeing their shared memory took
        0.14 s on a 16-core GPU machine, time the caller can spend finishing its file."""
        failed: list[BaseException] = []

        def close() -> None:
            try:
                self.close()
            except BaseException as e:  # handed to the caller by ``wait``
                failed.append(e)

        thread = threading.Thread(target=close, name="bottleneck-feed-close")
        thread.start()

        def wait() -> None:
            thread.join()
            if failed:
                raise failed[0]

        return wait

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Ahead:
    """Submits ``works`` to ``pool`` from a thread of its own, at most ``depth`` in flight, and
    hands their futures back in order (None for a work that is None: nothing to make). So the
    first submissions, which start the pool's worker processes one by one, overlap the first
    chunks' decoding and the model's first batches instead of holding them up.

    ``next()`` is the next future; ``done()`` says one was consumed (a place is free again);
    ``close()`` stops submitting (the pool cancels what was submitted when it closes).

    Until the first chunk is made, at most ``first`` are in flight: more workers than cores
    (threads x 6 on 2 cores) would otherwise all decode at once and the first chunk, which
    the model waits for, would come when they all do."""

    def __init__(self, pool: Feed, works: list, depth: int, first: int | None = None):
        self._places = threading.Semaphore(depth)
        self._first = max(1, min(first or depth, depth))
        self._out: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._submit, args=(pool, works), daemon=True)
        self._thread.start()

    def _submit(self, pool: Feed, works: list) -> None:
        try:
            started: list = []  # the futures submitted before the first chunk was made
            for work in works:
                if work is not None:
                    if started is not None and len(started) == self._first:
                        cf.wait(started[:1])
                        started = None
                    self._places.acquire()
                    if self._stop.is_set():
                        return
                    work = pool.submit(work)
                    if started is not None:
                        started.append(work)
                self._out.put(work)
        except BaseException as e:  # a broken pool: raised where the futures are awaited
            self._out.put(_Failed(e))

    def next(self) -> cf.Future | None:
        item = self._out.get()
        if isinstance(item, _Failed):
            raise item.error
        return item

    def done(self) -> None:
        self._places.release()

    def close(self) -> None:
        self._stop.set()
        self._places.release()
        self._thread.join()


@dataclasses.dataclass
class _Failed:
    error: BaseException


def cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)


def choose(kind: str, source, rows: int, workers: int | None, model_on_cpu: bool = False) -> tuple[str, int]:
    """The feed's kind and number of workers for ``rows`` rows of ``source``; ``model_on_cpu``:
    the model computes on this machine's cores (processes then run at idle priority)."""
    if kind not in KINDS:
        raise BottleneckError(f"unknown feed {kind!r}", f"use one of {', '.join(KINDS)}")
    n_cores = cores()
    if kind == "auto":
        # Beside a model on the CPU, idle-priority processes take only the cycles it leaves (they
        # gained about 0.015 of the ceiling over threads on 2 cores); beside a GPU on 2 cores,
        # where that was never measured, threads as before.
        many = isinstance(source, FileSource) and rows >= PROCESS_MIN_ROWS
        kind = "processes" if many and (n_cores > 2 or model_on_cpu) else "threads"
    if workers is None:
        # processes: one per core; threads: more than cores, since they wait on files with the GIL released
        workers = n_cores if kind == "processes" else min(32, n_cores + 4)
    return kind, max(1, workers)
