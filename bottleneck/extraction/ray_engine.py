"""``--engine ray``: extraction's chunks computed by a pool of Ray actors.

The driver (the process that ran ``bottleneck``) plans the run and keeps the cache, as a
local run does; each actor builds the base once and computes whole chunks (decode, resize,
forward pass) and returns their features, which the driver commits chunk by chunk
(``store.PartialRun``). So:

- images travel as their encoded bytes, read by the driver (a CIFAR-10 JPEG is about 1.5 KB,
  its 224 x 224 pixels 147 KB): workers need this package and the base's weights, not the
  dataset nor the cache folder, and reading is a small part of a chunk's cost next to decoding;
- a worker killed mid-chunk loses nothing: Ray restarts it and runs its chunks again;
- a driver killed leaves the committed chunks, and the same command resumes from them;
- the driver holds only the chunks in flight (``IN_FLIGHT`` per actor), whatever the dataset.

The engine is not part of the features' fingerprint: a Ray run writes the same file, byte
for byte in its features, as a local run on the same backend and hardware.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import sys
import time
import uuid

import numpy as np

from bottleneck.bases.weights import hash_file
from bottleneck.cache.store import library_versions
from bottleneck.core import faults as _faults
from bottleneck.core.errors import BottleneckError, WeightsError, add_note
from bottleneck.data.images import BadImage
from bottleneck.data.sources import ArraySource, FileSource, Split, decode_file
from bottleneck.extraction import feed
from bottleneck.extraction.model import built_model

IN_FLIGHT = 2  # chunks per actor: one computing, one waiting, so an actor never waits for the driver
WATCHDOG_SECONDS = 30.0  # the longest a watchdog keeps sweeping after its driver died
CONNECT_TIMEOUT = 5.0  # seconds to reach --address HOST:PORT
RETRIES = 3  # a worker that dies is restarted, and its chunks run again, this many times
TOKEN = "BOTTLENECK_RAY_INSTANCE"  # in the environment of every process of a local instance we started
_SESSION: dict = {"depth": 0, "started": False}


def _ray():
    try:
        import ray
    except ImportError:
        raise BottleneckError("--engine ray needs Ray, which is not installed",
                              "pip install 'bottleneck-transfer[ray]' (or pip install ray)") from None
    return ray


@contextlib.contextmanager
def session(address: str | None = None):
    """Ray for the length of a command: connected (or a local instance started) on first use,
    and a local instance started here shut down when the outermost session ends. ``address``
    (the outermost session's) is where runs that name none connect."""
    _SESSION["depth"] += 1
    _SESSION.setdefault("address", address)
    try:
        yield
    finally:
        _SESSION["depth"] -= 1
        if _SESSION["depth"] == 0:
            if "pool" in _SESSION:  # on a cluster that stays up, our actors must not
                _drop_pool(_ray())
            if _SESSION["started"]:
                _ray().shutdown()
            watchdog = _SESSION.pop("watchdog", None)
            if watchdog is not None:  # the instance is down: nothing left to watch
                watchdog.kill()
                watchdog.wait()
            os.environ.pop(TOKEN, None)
            _SESSION.update(started=False)
            _SESSION.pop("address", None)


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (else the session's, else ``RAY_ADDRESS``'s), or start a
    local instance (when Ray is not running in this process already, e.g. started by the caller's
    own ``ray.init``)."""
    ray = _ray()
    if ray.is_initialized():
        return
    address = address or _SESSION.get("address")
    drop = "drop --address"
    named = os.environ.get("RAY_ADDRESS")  # Ray's own way to name a cluster: honoured, and said
    if not address and named and named != "local":
        address, drop = named, "unset RAY_ADDRESS"
        logging.getLogger("bottleneck").warning("joining the Ray cluster at %s, from RAY_ADDRESS", address)
    if address == "local":  # Ray's name for a new local instance: ours to start, watch and stop
        address = None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls from an offline machine
    quiet = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    if address is None:
        # Every process started while the instance is up inherits a token (Ray starts some of its
        # own later, from threads of this process), so a watchdog can find them all should this
        # process be killed.
        token = uuid.uuid4().hex
        before = set(_descendants(os.getpid())) if os.path.isdir("/proc") else set()
        os.environ[TOKEN] = token
        try:
            # "local": a new instance even where another runs on this machine. Without it Ray joins
            # the last one `ray start` (or a test's cluster) recorded in /tmp/ray, and refuses num_cpus.
            ray.init(address="local", num_cpus=feed.cores(), **quiet)
        except BaseException:
            del os.environ[TOKEN]
            raise
        _SESSION.update(started=True, watchdog=_start_watchdog(token, before))  # ours: shut down when the command ends
        return
    _reachable(address, drop)
    try:
        ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise BottleneckError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0]}",
                              f"start one (`ray start --head` on the head node), check the address, or {drop} "
                              "to start a local instance for the run") from None


def _start_watchdog(token: str, before: set[int]):
    """A small process that outlives this one only to kill the local Ray instance's processes
    if this one dies without shutting it down (SIGKILL): Ray's own agents take a minute or
    more to notice. Linux only (it finds them through /proc); None elsewhere. ``before``: this
    process's descendants from before the instance started, which are not Ray's."""
    import subprocess
    import sys

    if not os.path.isdir("/proc"):
        return None
    code = f"from bottleneck.extraction.ray_engine import _watch; _watch({os.getpid()}, {token!r}, {sorted(before)!r})"
    env = {k: v for k, v in os.environ.items() if k != TOKEN}  # not one of those to kill
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.DEVNULL, env=env, start_new_session=True)


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, start time), from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                out[int(entry)] = (int(fields[1]), fields[19].decode())
            except (OSError, IndexError, ValueError):
                pass  # gone meanwhile
    return out


def _descendants(root: int, table: dict | None = None) -> dict[int, str]:
    """pid -> start time of every descendant of ``root`` (the start time tells a reused pid apart)."""
    table = _processes() if table is None else table
    children: dict[int, list[int]] = collections.defaultdict(list)
    for pid, (parent, _) in table.items():
        children[parent].append(pid)
    found, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = table[child][1]
                todo.append(child)
    return found


def _watch(driver: int, token: str, before: list[int]) -> None:
    """The watchdog's loop: while the driver lives, note the processes it started since the
    instance began (Ray's: the raylet, its agents, the workers); once it is gone, kill those
    and every process holding the token (some of Ray's processes start from the raylet, some
    from the driver's threads, so neither way alone finds them all)."""
    import signal

    skip = set(before) | {os.getpid()}
    seen: dict[int, str] = {}
    while feed.alive(driver):
        seen.update({pid: t for pid, t in _descendants(driver).items() if pid not in skip})
        time.sleep(0.5)
    needle = f"{TOKEN}={token}".encode()
    quiet, deadline = 0, time.monotonic() + WATCHDOG_SECONDS
    # Sweep until two sweeps in a row find nothing: a process still dying may start another meanwhile.
    while quiet < 2 and time.monotonic() < deadline:
        table = _processes()
        doomed = {pid for pid, t in seen.items() if pid in table and table[pid][1] == t}
        for pid in table:
            if pid not in skip and pid not in doomed:
                try:
                    with open(f"/proc/{pid}/environ", "rb") as f:
                        if needle in f.read().split(b"\0"):
                            doomed.add(pid)
                except OSError:
                    pass  # gone meanwhile, or not ours
        for pid in list(doomed):  # and what they started since the last look
            doomed.update(_descendants(pid, table))
        killed = 0
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        seen = {pid: t for pid, t in seen.items() if pid in table and pid not in doomed}
        quiet = quiet + 1 if not killed else 0
        time.sleep(0.25)


def _reachable(address: str, drop: str) -> None:
    """Fail at once for a HOST:PORT nobody answers at (Ray itself retries for minutes); ``drop``:
    how to run on a local instance instead."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return  # "auto" fails fast by itself; anything else is Ray's to parse
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise BottleneckError(f"no Ray cluster answers at {address} ({e.strerror or e})",
                              f"check the head node's address and port (`ray status` on it prints them), or {drop} "
                              "to start a local instance for the run") from None


class ShippedFiles:
    """A chunk's image files as read by the driver: bytes, or why they could not be read.
    Named as on the driver, so errors on a worker name the driver's file."""

    def __init__(self, names: list[str], data: list[bytes | None], errors: list[str | None]):
        self.names, self.data, self.errors = names, data, errors

    def name(self, i: int) -> str:
        return self.names[i]

    def load(self, i: int, size: int | None = None, digest: str | None = None):
        if self.errors[i] is not None:
            raise BadImage(self.names[i], self.errors[i])
        return decode_file(self.data[i], self.names[i], size, digest)


def ship(split: Split, work: list[tuple[int, str, str]]) -> tuple[Split, list[tuple[int, str, str]]]:
    """What a worker needs for ``work`` (rows of ``split``): a split of just those images, and
    the work renumbered into it."""
    indices = sorted({i for i, _, _ in work})
    where = {i: j for j, i in enumerate(indices)}
    source = split.source
    if isinstance(source, FileSource):
        data, errors = [], []
        for i in indices:
            try:
                data.append(source.read(i))
                errors.append(None)
            except BadImage as e:
                data.append(None)
                errors.append(e.reason)
        shipped = ShippedFiles([source.name(i) for i in indices], data, errors)
    elif isinstance(source, ArraySource):
        shipped = source.subset(indices)
    else:
        raise TypeError(f"cannot ship images of a {type(source).__name__}")
    return Split([], np.empty(0), [], shipped), [(where[i], view, digest) for i, view, digest in work]


def _where() -> str:
    import ray

    return f"Ray worker pid {os.getpid()} on {ray.util.get_node_ip_address()}"


def _make_chunk(k: int, recipe, split: Split, work: list, skip_bad: bool, batch_size: int) -> feed.Chunk:
    """On a worker: chunk ``k``'s pixels; an error names the worker."""
    try:
        _faults.checkpoint("worker-chunk", k)
        return feed.make_chunk(split, recipe, work, skip_bad, batch_size=batch_size)
    except BottleneckError as e:
        raise add_note(e, f"on {_where()}") from None


def _versions(decoder: bool) -> dict:
    """What a worker's output depends on: this package and, for a decoder, the libraries that
    decode and resize; for a model actor, every library the cache record names."""
    import PIL

    import bottleneck

    if decoder:
        return {"bottleneck": bottleneck.__version__, "numpy": np.__version__, "pillow": PIL.__version__}
    return {"bottleneck": bottleneck.__version__, **library_versions()}


def check_versions(mine: dict, theirs: dict[str, dict]) -> None:
    """Refuse workers whose libraries differ from this process's (``theirs``: worker name ->
    its versions): their chunks could differ from a local run's, and from each other's, while the
    file's record names this process's versions."""
    for name, versions in theirs.items():
        diff = [f"{k} {v} (here {mine.get(k)})" for k, v in sorted(versions.items()) if mine.get(k) != v]
        if diff:
            raise BottleneckError(f"the {name} has other versions than this process: {', '.join(diff)}; its "
                                  "features could differ from a local run's",
                                  "install the same versions on every node (this process's: `pip freeze`), or "
                                  "run without --engine ray")


class Decoder:
    """A Ray actor on CPUs (the split layout): makes a chunk's pixels for a model actor."""

    def __init__(self, skip_bad: bool, batch_size: int):
        self.skip_bad, self.batch_size = skip_bad, batch_size

    def where(self) -> str:
        return _where()

    def versions(self) -> dict:
        return _versions(decoder=True)

    def pixels(self, k: int, recipe, split: Split, work: list) -> feed.Chunk:
        return _make_chunk(k, recipe, split, work, self.skip_bad, self.batch_size)


class Extractor:
    """A Ray actor: builds the model once, then computes chunks (of every extraction of the
    session that runs the same model: the recipe comes with each chunk). ``run`` decodes the
    chunk too; ``run_pixels`` takes a chunk a Decoder made (the split layout)."""

    def __init__(self, order, skip_bad: bool, batch_size: int, weights_sha: str | None):
        self.order, self.skip_bad, self.batch_size, self.weights_sha = order, skip_bad, batch_size, weights_sha
        self.model = None

    def where(self) -> str:
        return _where()

    def versions(self) -> dict:
        return _versions(decoder=False)

    def run(self, k: int, recipe, split: Split, work: list) -> dict:
        """Chunk ``k``: ``work`` (rows of ``split``) through ``recipe`` and the model."""
        made = _make_chunk(k, recipe, split, work, self.skip_bad, self.batch_size)
        return self.run_pixels(k, recipe, made, len(work))

    def run_pixels(self, k: int, recipe, made: feed.Chunk, rows: int) -> dict:
        """The model over a chunk's pixels (``rows`` of them are the chunk's, zeros after)."""
        try:
            build = 0.0
            if self.model is None:
                t = time.perf_counter()
                self.model = self._build()
                build = time.perf_counter() - t
            t = time.perf_counter()
            out = recipe.outputs(self.model.predict_on_batch(made.pixels))
            model = time.perf_counter() - t
        except BottleneckError as e:
            raise add_note(e, f"on {_where()}") from None
        return {"outputs": {name: values[:rows] for name, values in out.items()}, "valid": made.valid,
                "decode": made.decode, "resize": made.resize, "build": build, "model": model}

    def _build(self):
        path = self.order.weights_path
        if path is not None:  # the driver's weights file, by path: it must be here, and the same file
            if not os.path.isfile(path):
                raise WeightsError(f"the weights file {path} is not on this node",
                                   "put the same file at that path on every node (or --weights-dir on a "
                                   "folder every node sees)")
            if hash_file(path, "sha256")[:16] != self.weights_sha:
                raise WeightsError(f"the weights file {path} on this node differs from the driver's",
                                   "copy the driver's file to every node")
        return built_model(self.order, self.batch_size)


@dataclasses.dataclass
class Pool:
    """A session's actors for one model. ``decoders`` is empty in the whole layout (each model
    actor decodes its own chunks: CPU-only clusters); in the split layout (a cluster with GPUs)
    decoders on CPUs make the pixels and one model actor per GPU runs the base."""

    key: tuple
    models: list
    decoders: list
    names: list[str]  # of the decoders in the split layout, else of the model actors

    @property
    def about(self) -> str:
        if self.decoders:
            return f"ray: {len(self.decoders)} decoders + {len(self.models)} model actors"
        return f"ray x {len(self.models)}"


def chunks(p, options, jobs: list, stages: feed.Stages, batch_size: int, about: dict):
    """The Ray engine (see ``extraction._local_chunks``): yields (job, made) as chunks finish."""
    ray = _ray()
    t = time.perf_counter()
    for job in jobs:  # every row from donors: nothing to compute
        if not job.need:
            yield job, None
    queue = collections.deque(job for job in jobs if job.need)
    if not queue:
        return
    connect(options.address)  # within the session ``extraction.run`` holds for the command
    pool = _pool(ray, p, options, batch_size)
    about["feed"] = pool.about
    stages.start += time.perf_counter() - t
    workers = pool.decoders or pool.models  # who takes a chunk's images
    in_flight: dict = {}  # ref -> (job, worker number)
    load = [0] * len(workers)
    turn = 0
    try:
        while queue or in_flight:
            for i, worker in enumerate(workers):
                while load[i] < IN_FLIGHT and queue:
                    job = queue.popleft()
                    split, work = ship(p.samples, job.work)
                    if pool.decoders:  # the pixels go from the decoder to a model actor through Ray's store
                        made = worker.pixels.remote(job.k, p.recipe, split, work)
                        model, turn = pool.models[turn % len(pool.models)], turn + 1
                        ref = model.run_pixels.remote(job.k, p.recipe, made, len(work))
                    else:
                        ref = worker.run.remote(job.k, p.recipe, split, work)
                    in_flight[ref] = (job, i)
                    load[i] += 1
            t = time.perf_counter()
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            stages.wait += time.perf_counter() - t
            job, i = in_flight.pop(ref)
            load[i] -= 1
            others = [(r2, j) for r2, (j, w) in in_flight.items() if w == i]
            r = _result(ray, ref, lambda: _computing(ray, job, others), pool.names[i], p)
            stages.decode += r["decode"]
            stages.resize += r["resize"]
            stages.model += r["model"]  # summed over workers, as decode and resize are
            stages.build = max(stages.build, r["build"])
            yield job, (r["outputs"], r["valid"])
    except BaseException:  # an error, Ctrl-C, or the caller stopped early: chunks may still be running
        _drop_pool(ray)
        raise


def _layout(gpus: float) -> str:
    """split on a cluster with GPUs (decoders on CPUs, one model actor per GPU), else whole;
    BOTTLENECK_RAY_LAYOUT=split asks for the split layout without GPUs (to test it on a CPU)."""
    return "split" if gpus or os.environ.get("BOTTLENECK_RAY_LAYOUT") == "split" else "whole"


def _pool(ray, p, options, batch_size: int) -> Pool:
    """The session's actors for the plan's model: started on first use, and kept for the next
    extraction with the same model (a grid's test split after its training draw)."""
    sha = None if p.weights_path is None else _weights_sha(p.weights_path)
    cluster = ray.cluster_resources()
    cpus, gpus = cluster.get("CPU", 1), cluster.get("GPU", 0)
    layout = _layout(gpus)
    key = (p.order.key, sha, options.skip_bad_images, batch_size, options.workers, layout)
    if _SESSION.get("pool") is not None and _SESSION["pool"].key == key:
        return _SESSION["pool"]
    _drop_pool(ray)  # one model's actors at a time: their memory is the cluster's

    def model_actor(**resources):
        return ray.remote(Extractor).options(max_restarts=RETRIES, max_task_retries=RETRIES, **resources)

    _ship_builder(ray, p.order.spec)
    order = (p.order, options.skip_bad_images, batch_size, sha)
    if layout == "whole":
        n = options.workers or max(1, int(cpus))
        # Never more than the cluster holds, or Ray would wait for resources forever: share them out.
        models = [model_actor(num_cpus=min(1.0, cpus / n)).remote(*order) for _ in range(n)]
        decoders = []
    else:
        n_models = max(1, int(gpus))
        models = [model_actor(num_cpus=min(1.0, cpus / (n_models + 1)), num_gpus=1 if gpus else 0).remote(*order)
                  for _ in range(n_models)]
        n = options.workers or max(1, int(cpus) - n_models)
        decoder = ray.remote(Decoder).options(max_restarts=RETRIES, max_task_retries=RETRIES,
                                             num_cpus=min(1.0, max(cpus - n_models, 1) / n))
        decoders = [decoder.remote(options.skip_bad_images, batch_size) for _ in range(n)]
    _SESSION["pool"] = pool = Pool(key, models, decoders, [])
    names = ray.get([a.where.remote() for a in models + decoders])  # every actor started (and reachable)
    try:
        mine = _versions(decoder=False)
        check_versions(mine, dict(zip(names, ray.get([a.versions.remote() for a in models + decoders]))))
    except BottleneckError:
        _drop_pool(ray)
        raise
    pool.names = names[len(models):] or names
    return pool


def _ship_builder(ray, spec) -> None:
    """A base registered from the user's own code (``register_base``) travels with the order,
    builder included. Pickled by reference, its builder would need its module importable on
    every worker; a module that is not part of this package is sent by value instead, so a
    script or a notebook's base works on any worker."""
    module = sys.modules.get(getattr(spec.builder, "__module__", ""))
    if module is None or module.__name__ == "__main__" or module.__name__.split(".")[0] == "bottleneck":
        return  # ours (installed on every worker), or __main__ (always sent by value)
    ray.cloudpickle.register_pickle_by_value(module)


@functools.lru_cache(maxsize=8)
def _file_sha(path: str, size: int, mtime_ns: int) -> str:
    return hash_file(path, "sha256")[:16]


def _weights_sha(path) -> str:
    """The weights file's hash, as a worker checks it: hashed once per version of the file,
    not once per extraction of a grid."""
    st = os.stat(path)
    return _file_sha(str(path), st.st_size, st.st_mtime_ns)


def _drop_pool(ray) -> None:
    pool = _SESSION.pop("pool", None)
    for actor in (pool.models + pool.decoders) if pool else []:
        ray.kill(actor, no_restart=True)


def _computing(ray, job, others):
    """The chunk an actor that died was computing. An actor runs its tasks in the order sent:
    when it dies, every chunk it had not finished fails together, and the one it was computing is
    the oldest of those, whichever failure ray.wait returns first. A chunk it finished whose
    result the driver has not collected yet (a busy driver lags) is not one of them. A chunk whose
    reply the worker had not sent yet when it died is lost with it and retried by Ray: such a chunk
    fails with the worker and may be the one named (a killed process says no more)."""
    unfinished = [job]
    for ref, other in others:
        try:
            ray.get(ref, timeout=0)
        except Exception:  # failed with the actor, or not finished
            unfinished.append(other)
    return min(unfinished, key=lambda j: j.k)


def _result(ray, ref, computing, worker: str, p) -> dict:
    """A chunk's result; a worker's error as the same clear error a local run gives (a worker
    that died names ``computing()``, the job it was on)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:
        if isinstance(e.cause, BottleneckError):
            raise e.cause from None
        raise
    except (ray.exceptions.RayActorError, ray.exceptions.OutOfMemoryError) as e:
        reason = str(e).strip().splitlines()[0][:300]
        raise BottleneckError(f"a Ray worker ({worker} when it started) died {RETRIES + 1} times computing chunk "
                              f"{computing().k} of {p.path.name}: killed, or out of memory ({reason})",
                              "run the same command again: it resumes from the chunks written; if it dies again, "
                              "use fewer --workers or a smaller --batch-size") from None
