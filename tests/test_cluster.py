"""--engine ray: the same cache file as a local run, resumable, with a worker's errors said clearly.

Each test starts a real local Ray instance (a few seconds) with real actors; the faults are real
SIGKILLs of the driver or of a worker process (``bottleneck.core.faults``). The command line runs
in this process (``main``) unless the driver itself is what is killed."""
from __future__ import annotations

import os
import re
import uuid

import json
from pathlib import Path

import numpy as np
import pytest

from bottleneck.extraction import ray_engine as cluster
from bottleneck.core.errors import BottleneckError, WeightsError
from bottleneck.extraction.plan import RunOptions
from bottleneck.cli import main
from bottleneck.extraction.run import extract
from bottleneck.cache.store import read_features

from .test_extract import _cli, _extract_args, _marked_processes

ray = pytest.importorskip("ray")  # installed by requirements.txt, so these run in CI
# whole: each actor decodes and runs the model (CPU clusters); split: decoders feed a model actor
# per GPU (GPU clusters; asked for here without one, the model actor then runs on a CPU)
LAYOUTS = ["whole", "split"]
RAY_GONE = 10.0  # seconds a Ray process may take to exit after its driver is gone


def _ray_args(dataset, cache, workers=2, *more):
    args = _extract_args(dataset, cache)
    cut = args.index("--feed")
    return args[:cut] + ["--engine", "ray", "--workers", str(workers), *more]


def _described(pids: list[int]) -> str:
    """What each leftover process is, and whether it holds the watchdog's token (for a failure's message)."""
    out = []
    for pid in pids:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ")[:80].decode(errors="replace")
            token = b"BOTTLENECK_RAY_INSTANCE=" in open(f"/proc/{pid}/environ", "rb").read()
        except OSError:
            cmd, token = "(gone)", None
        out.append(f"{pid} {cmd.strip()} token={token}")
    return "; ".join(out)


def _features(cache):
    (path,) = list(cache.glob("*.h5"))
    return path.name, read_features(path)


@pytest.fixture
def decoy_cluster(monkeypatch):
    """Ray's temp folder holding the address of a cluster that is not there, as `ray start` (or
    another test's ``cluster_utils.Cluster``) leaves one: a plain ``ray.init()`` would join it."""
    import shutil
    import tempfile

    temp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must fit in 107 characters
    (Path(temp) / "ray").mkdir()
    (Path(temp) / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
    monkeypatch.setenv("RAY_TMPDIR", temp)
    yield temp
    shutil.rmtree(temp, ignore_errors=True)


def test_ray_run_writes_the_local_run_file(kill_dataset, tmp_path, monkeypatch, decoy_cluster):
    """Both layouts, in one local Ray instance started once for the session; a pool of actors per
    layout, built for its first extraction and kept for the next one (the views)."""
    mark = uuid.uuid4().hex
    monkeypatch.setenv("BOTTLENECK_TEST_MARK", mark)  # inherited by the Ray instance this run starts
    monkeypatch.setenv("RAY_ADDRESS", "local")  # Ray's name for a new local instance, as no RAY_ADDRESS
    kw = dict(weights="random", progress=False, batch_size=4)
    local = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "a", **kw)
    views = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "v", views=2, **kw)
    far, far_views, nodes = {}, {}, set()
    with cluster.session(None):  # one instance for every extraction: a new one, not the decoy's
        for layout in LAYOUTS:
            monkeypatch.setenv("BOTTLENECK_RAY_LAYOUT", layout)  # read by the driver as it makes a pool
            far[layout] = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / layout,
                                  engine="ray", workers=2, **kw)
            assert ray.get_runtime_context().gcs_address != "127.0.0.1:9"
            nodes.add(ray.get_runtime_context().get_node_id())
            far_views[layout] = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, engine="ray",
                                        cache_dir=tmp_path / f"{layout}-views", workers=2, views=2, **kw)
    assert len(nodes) == 1, "the session's extractions must share one instance"
    for layout, said in (("whole", "ray x 2"), ("split", "ray: 2 decoders + 1 model actors")):
        fs, fs_views = far[layout], far_views[layout]
        assert fs.path.name == local.path.name and fs.settings == local.settings  # the engine is not fingerprinted
        assert np.array_equal(fs.features, local.features) and fs.source_ids == local.source_ids
        assert fs_views.path.name == views.path.name and np.array_equal(fs_views.features, views.features)
        assert fs.info["extracted"] == 40 and read_features(fs.path).info["feed"] == said, layout
        # The actors built the model for the layout's first extraction, and reused it for the views.
        assert json.loads(fs.info["stages"])["build"] > 0 and json.loads(fs_views.info["stages"])["build"] == 0, layout
    assert not ray.is_initialized(), "the local Ray instance started for the run must be stopped after it"
    assert not _marked_processes(mark, RAY_GONE), "a Ray process outlived the run"


def test_driver_sigkill_then_rerun_resumes(kill_dataset, tmp_path):
    mark = uuid.uuid4().hex
    cache = tmp_path / "c"
    run = _cli(*_ray_args(kill_dataset, cache), fault="after-chunk:3", mark=mark)
    assert run.returncode == -9, run.stderr
    left = _marked_processes(mark, RAY_GONE)
    assert not left, f"a Ray process outlived its killed driver: {_described(left)}"
    assert not list(cache.glob("*.h5"))
    # Chunks finish out of order under Ray: chunk 3 and those before it in finishing order are kept.
    kept = list(cache.glob("*.partial/chunk-*.npz"))
    assert any(c.name == "chunk-000003.npz" for c in kept)
    again = _cli(*_ray_args(kill_dataset, cache, 1), mark=mark)  # the engine is not fingerprinted
    assert again.returncode == 0, again.stderr
    assert f"extracted {40 - 4 * len(kept)} images" in again.stdout
    assert main(_extract_args(kill_dataset, tmp_path / "local")) == 0  # the reference: in this process
    (name, fs), (local_name, local) = _features(cache), _features(tmp_path / "local")
    assert name == local_name and np.array_equal(fs.features, local.features) and fs.source_ids == local.source_ids


def test_a_killed_worker_is_retried_without_a_missing_or_duplicate_row(kill_dataset, tmp_path, monkeypatch, capsys):
    """Both layouts in one local Ray instance; the fault strikes once per layout."""
    once = tmp_path / "killed-once"
    monkeypatch.setenv("BOTTLENECK_FAULT_ONCE", str(once))
    monkeypatch.setenv("BOTTLENECK_FAULT", "worker-chunk:2")  # inherited by the Ray instance the session starts
    with cluster.session(None):
        for layout in LAYOUTS:
            monkeypatch.setenv("BOTTLENECK_RAY_LAYOUT", layout)
            once.unlink(missing_ok=True)  # armed again: the file is checked as the fault strikes
            # One worker (each imports Keras, ~6 s): the driver here, only the worker is killed and restarted.
            code = main(_ray_args(kill_dataset, tmp_path / layout, 1))
            out = capsys.readouterr()
            assert once.exists(), f"the fault never struck a worker ({layout})"
            assert code == 0, out.err
            assert "extracted 40 images" in out.out
    monkeypatch.delenv("BOTTLENECK_FAULT")
    assert main(_extract_args(kill_dataset, tmp_path / "local")) == 0
    local_name, local = _features(tmp_path / "local")
    for layout in LAYOUTS:
        name, fs = _features(tmp_path / layout)
        assert name == local_name and fs.source_ids == local.source_ids and len(set(fs.source_ids)) == 40, layout
        assert np.array_equal(fs.features, local.features)


def test_a_worker_that_keeps_dying_is_a_clear_error(kill_dataset, tmp_path, monkeypatch, capsys):
    mark = uuid.uuid4().hex
    monkeypatch.setenv("BOTTLENECK_TEST_MARK", mark)  # inherited by the Ray instance the run starts
    monkeypatch.setenv("BOTTLENECK_FAULT", "worker-chunk:2")  # strikes workers only: the driver is this process
    monkeypatch.setattr(cluster, "RETRIES", 1)  # dies twice, not four times: each new worker imports Keras (~6 s)
    assert main(_ray_args(kill_dataset, tmp_path / "c", 1)) == 2
    err = capsys.readouterr().err
    assert "error: a Ray worker (Ray worker pid" in err
    # The fault strikes as chunk 2 starts. On a loaded machine chunk 1's reply can still be unsent then and
    # is lost with the process: Ray retries chunk 1 too, and it fails with the worker (ray_engine._computing).
    assert re.search(r"died 2 times computing chunk [12] of ", err), err
    assert "what to do: run the same command again" in err and "Traceback" not in err
    assert not ray.is_initialized()
    assert not _marked_processes(mark, RAY_GONE)


def test_a_bad_image_on_a_worker_is_named(kill_dataset, tmp_path, monkeypatch, capsys):
    bad = kill_dataset / "train" / "bird" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with cluster.session("local"):  # Ray's name for a new local instance: ours, one for every run, both layouts
        for layout in LAYOUTS:
            monkeypatch.setenv("BOTTLENECK_RAY_LAYOUT", layout)
            code = main(_ray_args(kill_dataset, tmp_path / layout, 1))  # one worker: each imports Keras (~6 s)
            err = capsys.readouterr().err
            assert code == 2 and "Traceback" not in err, layout
            assert f"error: cannot read image {bad}" in err and "on Ray worker pid" in err, layout
            assert "--skip-bad-images" in err
            assert main(_ray_args(kill_dataset, tmp_path / layout, 1, "--skip-bad-images")) == 0, \
                capsys.readouterr().err
    assert not ray.is_initialized()
    for layout in LAYOUTS:
        (_, fs) = _features(tmp_path / layout)
        assert len(fs) == 40 and "train/bird/zz_broken.jpg" in fs.info["skipped"], layout


def test_weights_are_checked_on_the_worker(kill_dataset, tmp_path):
    """A worker loads the driver's weights file by its path: it must be there, and the same bytes."""
    from bottleneck.bases.weights import hash_file
    from bottleneck.extraction.ray_engine import Extractor
    from bottleneck.extraction.plan import plan

    p = plan("tiny_cnn", f"folder:{kill_dataset}", "train", 1, cache_dir=tmp_path, weights="random")
    order = p.order
    order.weights_path = tmp_path / "nowhere.weights.h5"
    with pytest.raises(WeightsError, match="is not on this node"):
        Extractor(order, False, 4, "0" * 16)._build()
    order.weights_path.write_bytes(b"other weights")
    with pytest.raises(WeightsError, match="differs from the driver's"):
        Extractor(order, False, 4, "0" * 16)._build()
    assert hash_file(order.weights_path, "sha256")[:16] != "0" * 16


def test_engine_options_are_checked():
    with pytest.raises(BottleneckError, match="--feed processes is the local engine's"):
        RunOptions(feed="processes", engine="ray")
    with pytest.raises(BottleneckError, match="needs --engine ray"):
        RunOptions(address="auto")
    with pytest.raises(BottleneckError, match="unknown engine"):
        RunOptions(engine="spark")


def test_an_address_nobody_answers_at_is_a_clear_error(kill_dataset, tmp_path):
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nobody listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = _cli(*_ray_args(kill_dataset, tmp_path / "c", 1, "--address", f"127.0.0.1:{port}"))
    assert run.returncode == 2 and f"error: no Ray cluster answers at 127.0.0.1:{port}" in run.stderr
    assert "what to do:" in run.stderr and "Traceback" not in run.stderr and "drop --address" in run.stderr


def test_ray_address_names_the_cluster_when_address_does_not(kill_dataset, tmp_path, monkeypatch, capsys, caplog):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # Ray's own variable, as `ray start` prints it
    assert main(_ray_args(kill_dataset, tmp_path / "c", 1)) == 2
    err = capsys.readouterr().err
    assert f"error: no Ray cluster answers at 127.0.0.1:{port}" in err and "unset RAY_ADDRESS" in err
    said = [r.getMessage() for r in caplog.records]  # a note (on stderr from the command line, unless --quiet)
    assert f"joining the Ray cluster at 127.0.0.1:{port}, from RAY_ADDRESS" in said
    assert not ray.is_initialized()


def test_without_ray_installed_the_engine_says_how_to_get_it(kill_dataset, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(BottleneckError, match=r"needs Ray, which is not installed") as e:
        extract("tiny_cnn", f"folder:{kill_dataset}", "train", 1, cache_dir=tmp_path, weights="random",
                progress=False, engine="ray")
    assert "pip install 'bottleneck-transfer[ray]'" in str(e.value)


def _extractor_processes(wait: float = 10.0) -> list[int]:
    """Actor processes of ours still alive (Ray names them ray::Extractor...), after up to ``wait``
    seconds: descendants of this process only, since another test's instance may run beside it."""
    import time

    deadline = time.monotonic() + wait
    while True:
        alive = []
        for pid in cluster._descendants(os.getpid()):
            try:
                if open(f"/proc/{pid}/cmdline", "rb").read().startswith(b"ray::Extractor"):
                    alive.append(pid)
            except OSError:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_versions_are_compared_library_by_library():
    mine = {"bottleneck": "0.1.0", "numpy": "2.1.0", "keras": "3.12.0"}
    cluster.check_versions(mine, {"worker a": dict(mine), "decoder b": {"numpy": "2.1.0"}})  # a subset: a decoder's
    with pytest.raises(BottleneckError, match=r"the decoder b has other versions than this process: "
                                              r"bottleneck 0\.2\.0 \(here 0\.1\.0\), numpy 1\.26\.4 \(here 2\.1\.0\);"):
        cluster.check_versions(mine, {"worker a": dict(mine), "decoder b": {"numpy": "1.26.4", "bottleneck": "0.2.0"}})


def test_profile_says_where_time_went_under_ray():
    from bottleneck.cli import profile_text

    stages = {"decode": 1.0, "resize": 1.0, "start": 2.0, "build": 3.0, "wait": 4.0, "model": 8.0, "write": 0.0,
              "finish": 0.1}
    text = profile_text(stages, 100, "ray x 2")
    assert "feed ray x 2" in text and "model forward passes, summed over Ray workers" in text
    assert "starting Ray and its actors" in text and "summed over feed workers" not in text
    assert "summed over feed workers" in profile_text(stages, 100, "threads x 6")


@pytest.fixture(scope="class")
def callers_ray():
    """A Ray instance the caller started (this process, not another test's), for the tests of a class."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


_USER_BASE = '''
def build(input_shape):
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="only")(inputs)
    return keras.Model(inputs, x, name="user_cnn")
'''


@pytest.mark.usefixtures("callers_ray")
class TestOnTheCallersOwnRay:
    """One instance for the class (its start and agents cost seconds of CPU each time)."""

    def test_a_callers_own_ray_is_used_left_up_and_our_actors_stopped(self, kill_dataset, tmp_path, monkeypatch):
        kw = dict(weights="random", progress=False, batch_size=4, engine="ray", workers=1)  # each imports Keras (~6 s)
        fs = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "a", **kw)
        assert fs.info["extracted"] == 40 and read_features(fs.path).info["feed"] == "ray x 1"
        assert json.loads(read_features(fs.path).info["versions"]) == cluster.library_versions()
        assert ray.is_initialized(), "a Ray the caller started is the caller's to stop"
        assert not _extractor_processes(), "our actors must not outlive the call on a cluster that stays up"
        # Workers with another Keras than this process's (here: this process says it has another) are refused.
        real = cluster.library_versions
        monkeypatch.setattr(cluster, "library_versions", lambda: {**real(), "keras": "0.0"})
        with pytest.raises(BottleneckError, match=r"the Ray worker pid \d+ on \S+ has other versions than this "
                                                  r"process: keras \S+ \(here 0\.0\)"):
            extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "b", **kw)
        assert not _extractor_processes(), "the refused actors must be stopped"
        assert not list((tmp_path / "b").glob("*.h5"))

    def test_a_base_registered_from_the_users_own_module_runs_on_ray_workers(self, kill_dataset, tmp_path, monkeypatch):
        """The workers cannot import the module the builder lives in (it is on this process's path
        only): the spec travels with each order and its builder by value (``ray_engine._ship_builder``)."""
        import importlib
        import sys

        from bottleneck.bases.registry import REGISTRY, BaseSpec, register_base

        (tmp_path / "mods").mkdir()
        (tmp_path / "mods" / "user_bases_for_ray.py").write_text(_USER_BASE)
        monkeypatch.syspath_prepend(str(tmp_path / "mods"))
        module = importlib.import_module("user_bases_for_ray")
        monkeypatch.setitem(REGISTRY, "user_cnn", REGISTRY.get("user_cnn"))  # undone after the test
        register_base(BaseSpec(name="user_cnn", native_size=32, min_size=8, preprocessing="unit", feature_dim=4,
                               default_layer="only", builder=module.build), replace=True)
        kw = dict(weights="random", progress=False, batch_size=4)
        local = extract("user_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "a", **kw)
        far = extract("user_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "b", engine="ray",
                      workers=1, **kw)
        assert far.path.name == local.path.name and np.array_equal(far.features, local.features)
        sys.modules.pop("user_bases_for_ray", None)


def test_a_node_removed_mid_run_costs_nothing_but_time(kill_dataset, tmp_path):
    """A two-node cluster on this machine (Ray's own ``cluster_utils.Cluster``, as Ray's test suite
    uses): the node running a worker is removed while its chunks are in flight. Its actors are
    restarted on the node left (it has room for them), their chunks are computed again, and the
    file is the local run's, bit for bit."""
    import shutil
    import tempfile
    import threading
    import time

    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    # Its own temp folder for its session files. Its address still goes to /tmp/ray/ray_current_cluster (Ray
    # 2.60's Cluster ignores temp_dir there), which every test's ray.init skips by asking for address="local".
    temp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # (short: Ray's socket paths must fit in 107 characters)
    cluster_ = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp})  # no worker on the head
    nodes = [cluster_.add_node(num_cpus=2, temp_dir=temp) for _ in range(2)]
    cluster_.wait_for_nodes()
    removed: list = []

    def extractors_on(node) -> list[int]:
        """The pids of the Extractor actors that ``node``'s raylet started (Ray titles them ray::Extractor)."""
        raylet = node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid
        found = []
        for pid in cluster._descendants(raylet):
            try:
                if b"Extractor" in open(f"/proc/{pid}/cmdline", "rb").read():
                    found.append(pid)
            except OSError:
                pass
        return found

    def remove_a_worker_node():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for node in nodes:
                if extractors_on(node):
                    cluster_.remove_node(node)  # SIGKILLs its raylet and every worker on it
                    removed.append(node)
                    return
            time.sleep(0.02)

    kw = dict(weights="random", progress=False, batch_size=4)
    try:
        ray.init(address=cluster_.address)
        watcher = threading.Thread(target=remove_a_worker_node, daemon=True)
        watcher.start()
        far = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "b", engine="ray",
                      workers=2, **kw)
        watcher.join(5)
    finally:
        ray.shutdown()
        cluster_.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert removed, "no node was removed while the run had actors"
    local = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "a", **kw)
    assert far.path.name == local.path.name and far.source_ids == local.source_ids
    assert np.array_equal(far.features, local.features)
    assert far.info["extracted"] == 40  # every chunk computed, some twice, none missing or doubled
