"""The feature cache: reuse, mismatch, atomic writes, resume after SIGKILL, nested draws."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

import bottleneck.extraction.model as ex_model
import bottleneck.extraction.plan as ex_plan
from bottleneck.cache import store
from bottleneck.cache.store import read_features, verify
from bottleneck.cli import main
from bottleneck.core.errors import CacheError
from bottleneck.data.images import BadImage
from bottleneck.extraction.run import extract

from . import warm
from .conftest import REPO, copy_cifar_subset

TINY = dict(weights="random", progress=False)


def _cli(*args, fault=None, cwd=REPO, mark=None):
    env = {**os.environ, "BOTTLENECK_FAULT": fault} if fault else dict(os.environ)
    if mark:
        env["BOTTLENECK_TEST_MARK"] = mark  # inherited by every process the run starts
    return warm.run([sys.executable, "-m", "bottleneck", *args], env=env, cwd=cwd, timeout=300)


def _marked_processes(mark: str, wait: float = 5.0) -> list[int]:
    """Processes still alive whose environment holds ``mark`` (after up to ``wait`` seconds)."""
    import time

    needle = f"BOTTLENECK_TEST_MARK={mark}".encode()
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/environ", "rb") as f:
                        if needle in f.read().split(b"\0"):
                            alive.append(int(entry))
                except OSError:
                    pass  # gone meanwhile, or not ours to read
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def test_record_and_reuse_without_running_the_base(small_cifar, cache_dir, monkeypatch):
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", 3, seed=1, cache_dir=cache_dir, **TINY)
    assert fs.features.shape == (12, 16) and fs.info["extracted"] == 12 and not fs.info["cached"]
    s = fs.settings
    assert (s["base"], s["weights"], s["layer"], s["image_size"], s["pooling"], s["per_class"], s["seed"]) == \
        ("tiny_cnn", "random:seed0", "conv2", 32, "avg", 3, 1)
    assert s["preprocessing"] == "unit" and s["resize"] == "pil-bilinear+jpeg-draft" and s["split"] == "train"
    assert fs.class_names == ["airplane", "automobile", "bird", "cat"]
    assert len(set(fs.source_ids)) == 12 and fs.info["versions"] and fs.info["created"]
    assert fs.path.name.startswith("cifar_small_train_tiny_cnn_")

    def no_model(*a, **k):
        raise AssertionError("the base must not run for cached features")

    monkeypatch.setattr(ex_plan, "build_feature_model", no_model)
    ex_model.clear_models()
    again = extract("tiny_cnn", f"folder:{small_cifar}", "train", 3, seed=1, cache_dir=cache_dir, **TINY)
    assert again.info["cached"] and again.path == fs.path
    assert np.array_equal(again.features, fs.features)
    # batch size and worker count do not change what the features are
    third = extract("tiny_cnn", f"folder:{small_cifar}", "train", 3, seed=1, cache_dir=cache_dir, batch_size=5,
                    workers=1, **TINY)
    assert third.path == fs.path


def test_any_setting_change_makes_a_new_file(small_cifar, cache_dir):
    ds = f"folder:{small_cifar}"
    base = extract("tiny_cnn", ds, "train", 2, cache_dir=cache_dir, **TINY).path
    variants = [dict(image_size=16), dict(pooling="max"), dict(layer="conv1"), dict(seed=5),
                dict(per_class=3), dict(split="test")]
    paths = {base}
    for v in variants:
        kw = {"split": "train", "per_class": 2, "seed": 0, **v}
        paths.add(extract("tiny_cnn", ds, kw.pop("split"), kw.pop("per_class"), kw.pop("seed"),
                          cache_dir=cache_dir, **TINY, **kw).path)
    assert len(paths) == len(variants) + 1


def test_file_with_other_settings_is_never_used(small_cifar, cache_dir, tmp_path):
    ds = f"folder:{small_cifar}"
    a = extract("tiny_cnn", ds, "train", 2, seed=0, cache_dir=cache_dir, **TINY)
    b = extract("tiny_cnn", ds, "train", 2, seed=1, cache_dir=tmp_path / "other", **TINY)
    shutil.copy(a.path, cache_dir / b.path.name)  # a file that claims to be seed 1
    with pytest.raises(CacheError, match="differs in: content, seed, selection"):
        extract("tiny_cnn", ds, "train", 2, seed=1, cache_dir=cache_dir, **TINY)


@pytest.mark.parametrize("damage", ["truncate", "text", "foreign-hdf5", "flipped-byte", "changed-id"])
def test_damaged_cache_is_moved_aside_and_extracted_again(small_cifar, cache_dir, damage, caplog):
    """A cache file that is not whole or changed after writing is never used: it is moved aside
    (kept for inspection, said so) and the features are extracted again, equal to the originals."""
    import logging

    ds = f"folder:{small_cifar}"
    fs = extract("tiny_cnn", ds, "train", 2, cache_dir=cache_dir, **TINY)
    if damage == "truncate":
        data = fs.path.read_bytes()
        fs.path.write_bytes(data[: len(data) // 2])
    elif damage == "text":
        fs.path.write_text("hello")
    elif damage == "foreign-hdf5":
        with h5py.File(fs.path, "w") as f:
            f["x"] = np.zeros(3)
    elif damage == "flipped-byte":  # one bit of one float, as a bad disk would do it
        with h5py.File(fs.path, "r") as f:
            offset = f["features"].id.get_chunk_info(0).byte_offset
        data = bytearray(fs.path.read_bytes())
        data[offset + 5] ^= 0x01
        fs.path.write_bytes(bytes(data))
    else:
        with h5py.File(fs.path, "r+") as f:
            f["source_ids"][0] = "train/cat/some_other_image.jpg"
    damaged = fs.path.read_bytes()
    caplog.set_level(logging.WARNING, logger="bottleneck")
    again = extract("tiny_cnn", ds, "train", 2, cache_dir=cache_dir, **TINY)
    assert again.path == fs.path and again.info["extracted"] == 8
    assert np.array_equal(again.features, fs.features) and again.source_ids == fs.source_ids
    (aside,) = cache_dir.glob(fs.path.name + ".damaged-*")
    assert aside.read_bytes() == damaged  # kept as it was, for inspection
    said = " ".join(r.getMessage() for r in caplog.records)
    assert fs.path.name in said and aside.name in said and "extracting again" in said


def test_damaged_feature_file_given_by_the_user_is_an_error_not_a_move(small_cifar, cache_dir):
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=cache_dir, **TINY)
    with h5py.File(fs.path, "r+") as f:
        f["features"][0, 0] += 1.0
    with pytest.raises(CacheError, match="fails its checksum") as e:
        read_features(fs.path)
    assert "delete" not in str(e.value) and fs.path.exists()


def test_verify_detects_changed_features(small_cifar, cache_dir):
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=cache_dir, **TINY)
    assert verify(fs.path)
    with h5py.File(fs.path, "r+") as f:
        f["features"][0, 0] += 1.0
    assert not verify(fs.path)


def test_nested_draw_extracts_only_the_difference(small_cifar, cache_dir):
    ds = f"folder:{small_cifar}"
    small = extract("tiny_cnn", ds, "train", 2, cache_dir=cache_dir, **TINY)
    big = extract("tiny_cnn", ds, "train", 5, cache_dir=cache_dir, **TINY)
    assert big.info["reused"] == 8 and big.info["extracted"] == 12
    fresh = extract("tiny_cnn", ds, "train", 5, cache_dir=cache_dir.parent / "fresh", **TINY)
    assert fresh.source_ids == big.source_ids
    np.testing.assert_allclose(big.features, fresh.features, rtol=1e-5, atol=1e-6)
    rows = [big.source_ids.index(s) for s in small.source_ids]
    assert np.array_equal(big.features[rows], small.features)


def test_an_image_replaced_by_one_of_the_same_size_and_time_gives_new_features(small_cifar, cache_dir):
    """The cache follows the images' content, not their names, sizes or times; only the
    changed image goes through the base again."""
    ds = f"folder:{small_cifar}"
    first = extract("tiny_cnn", ds, "train", None, cache_dir=cache_dir, **TINY)
    sizes = [(small_cifar / sid).stat().st_size for sid in first.source_ids]
    v = int(np.argmax(sizes))
    o = next(i for i, size in enumerate(sizes) if size < sizes[v])
    victim, other = small_cifar / first.source_ids[v], small_cifar / first.source_ids[o]
    data, stat = victim.read_bytes(), victim.stat()
    # another image, padded (JPEG decoders ignore trailing bytes) to the victim's byte size
    victim.write_bytes(other.read_bytes().ljust(len(data), b"\0"))
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = extract("tiny_cnn", ds, "train", None, cache_dir=cache_dir, **TINY)
    assert second.path != first.path and second.info["extracted"] == 1 and second.info["reused"] == 23
    fresh = extract("tiny_cnn", ds, "train", None, cache_dir=cache_dir.parent / "fresh", **TINY)
    np.testing.assert_allclose(second.features, fresh.features, rtol=1e-5, atol=1e-6)
    assert not np.allclose(second.features[v], first.features[v])
    np.testing.assert_allclose(second.features[v], first.features[o], rtol=1e-5, atol=1e-6)  # it is that image now


def test_the_same_folder_by_another_path_reuses_its_features(tmp_path, monkeypatch):
    pets = copy_cifar_subset(tmp_path / "pets", classes=2, train=3, test=1)
    monkeypatch.chdir(tmp_path)
    a = extract("tiny_cnn", "folder:pets", "train", None, cache_dir=tmp_path / "c", **TINY)
    b = extract("tiny_cnn", f"folder:{pets.resolve()}/", "train", None, cache_dir=tmp_path / "c", **TINY)
    assert b.path == a.path and b.info["cached"] and a.settings["dataset"] == "folder:pets"
    moved = tmp_path / "elsewhere" / "pets"
    moved.parent.mkdir()
    pets.rename(moved)
    c = extract("tiny_cnn", f"folder:{moved}", "train", None, cache_dir=tmp_path / "c", **TINY)
    assert c.path == a.path and c.info["cached"]


def test_bad_images_error_or_skip(small_cifar, cache_dir):
    bad = small_cifar / "train" / "cat" / "zz_broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(BadImage, match="zz_broken.jpg"):
        extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=cache_dir, **TINY)
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=cache_dir, skip_bad_images=True, **TINY)
    assert len(fs) == 24 and "train/cat/zz_broken.jpg" in fs.info["skipped"]
    assert "train/cat/zz_broken.jpg" not in fs.source_ids


def _extract_args(dataset, cache, feed="threads"):
    return ["extract", "--base", "tiny_cnn", "--weights", "random", "--dataset", f"folder:{dataset}",
            "--cache-dir", str(cache), "--batch-size", "4", "--quiet", "--feed", feed, "--workers", "2"]


FEEDS = ["threads", "processes"]  # every fault test runs with both pools


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The file an uninterrupted run makes of ``kill_dataset``'s images (the same folder name and
    content, so the same cache file name): made once for the fault tests to compare with."""
    root = tmp_path_factory.mktemp("uninterrupted")
    dataset = copy_cifar_subset(root / "kd", classes=4, train=10, test=1)
    assert main(_extract_args(dataset, root / "clean")) == 0
    (path,) = list((root / "clean").glob("*.h5"))
    return path


@pytest.mark.subprocess
@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("fault", ["start", "after-chunk:0", "mid-chunk:3", "after-chunk:4", "before-rename"])
def test_sigkill_then_rerun_equals_uninterrupted(kill_dataset, tmp_path, fault, feed, uninterrupted):
    import uuid

    killed = tmp_path / "killed"
    mark = uuid.uuid4().hex
    run = _cli(*_extract_args(kill_dataset, killed, feed), fault=fault, mark=mark)
    assert run.returncode == -9, run.stderr  # a real SIGKILL of a real process
    assert not _marked_processes(mark), "a feed worker outlived the killed run"
    assert not list(killed.glob("*.h5")), "a killed run must leave no cache file"
    if feed == "processes":  # its workers must end with it
        again = _cli(*_extract_args(kill_dataset, killed, feed), mark=mark)
        assert not _marked_processes(mark), "a feed worker outlived the run"
    else:  # a threads run starts no process: it resumes in this one
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main(_extract_args(kill_dataset, killed, feed))
        again = subprocess.CompletedProcess([], code, out.getvalue(), "")
    assert again.returncode == 0, again.stderr
    done = {"start": 0, "after-chunk:0": 4, "mid-chunk:3": 12, "after-chunk:4": 20, "before-rename": 40}[fault]
    assert f"extracted {40 - done} images" in again.stdout or (done == 40 and "extracted 0 images" in again.stdout)
    (a,), b = list(killed.glob("*.h5")), uninterrupted
    assert a.name == b.name
    fa, fb = read_features(a), read_features(b)
    assert np.array_equal(fa.features, fb.features) and fa.source_ids == fb.source_ids
    assert not list(killed.glob("*.partial")) and not list(killed.glob(".*.tmp"))


def test_the_file_is_assembled_as_its_chunks_come(kill_dataset, tmp_path, monkeypatch):
    """Each chunk goes into the final file when it is written, not read back at the end: a
    fresh run reads no chunk file; a resumed one reads only those its killed predecessor left."""

    read = []
    real = store.PartialRun.read_chunk
    monkeypatch.setattr(store.PartialRun, "read_chunk", lambda self, k: read.append(k) or real(self, k))
    args = dict(weights="random", progress=False, batch_size=4, feed="threads", workers=2)
    fresh = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "a", **args)
    assert read == [] and len(fresh) == 40 and fresh.info["extracted"] == 40
    assert _cli(*_extract_args(kill_dataset, tmp_path / "b"), fault="after-chunk:4").returncode == -9
    resumed = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path / "b", **args)
    assert read == [0, 1, 2, 3, 4] and resumed.info["extracted"] == 20
    assert resumed.path.name == fresh.path.name and np.array_equal(resumed.features, fresh.features)
    assert store.verify(resumed.path) and not list((tmp_path / "b").glob("*.partial"))


def _join_removals():
    import threading

    for t in threading.enumerate():
        if t.name == "bottleneck-remove-chunks":
            t.join()


@pytest.mark.parametrize("feed", FEEDS)
def test_the_run_returns_the_bytes_it_wrote_without_reading_them_back(small_cifar, tmp_path, monkeypatch, feed):
    """Pooled features come from memory, kept as they were appended (a bad image skipped too):
    they equal the file's bytes, read afresh and verified; the run reads back only ids and record."""
    from bottleneck.extraction import run as extraction

    (small_cifar / "train" / "cat" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    loads = []
    real = extraction.read_features
    monkeypatch.setattr(extraction, "read_features", lambda path, **kw: loads.append(kw.get("load", True))
                        or real(path, **kw))
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=tmp_path, skip_bad_images=True,
                 batch_size=4, feed=feed, workers=2, **TINY)
    assert loads == [False] and len(fs) == 24 and "train/cat/zz_broken.jpg" in fs.info["skipped"]
    disk = read_features(fs.path)  # verified against the checksum written with the file
    assert fs.features.dtype == disk.features.dtype and np.array_equal(fs.features, disk.features)
    assert fs.source_ids == disk.source_ids and np.array_equal(fs.labels, disk.labels)
    _join_removals()
    assert not [p for p in tmp_path.rglob("*") if p.suffix == ".npz" or store.REMOVING in p.name]


def test_the_feed_closes_while_the_file_is_finished_and_the_run_waits_for_it(small_cifar, tmp_path, monkeypatch):
    """No worker outlives the run, though the feed is closed in the background (a slow close here)."""
    import multiprocessing
    import time

    from bottleneck.extraction import feed

    real, closed = feed.Feed.close, []
    monkeypatch.setattr(feed.Feed, "close", lambda pool: time.sleep(0.5) or real(pool)
                        or closed.append(time.perf_counter()))
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=tmp_path, batch_size=4,
                 feed="processes", workers=2, **TINY)
    returned = time.perf_counter()
    assert not multiprocessing.active_children()
    assert len(closed) == 1 and closed[0] <= returned  # the run returned only once the feed had closed
    # the wait after the file was finished is recorded (the close began before the finish, so it is
    # what was left of the 0.5 s, not all of it)
    assert json.loads(fs.info["stages"])["stop"] > 0.2


def test_an_error_closing_the_feed_is_said_unless_finishing_the_file_failed_first(small_cifar, tmp_path, monkeypatch):
    import errno

    from bottleneck.extraction import feed

    def broken(pool):
        raise RuntimeError("the feed failed to close")

    monkeypatch.setattr(feed.Feed, "close", broken)
    kw = dict(batch_size=4, feed="threads", workers=2, **TINY)
    with pytest.raises(RuntimeError, match="failed to close"):  # never silently dropped
        extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=tmp_path / "a", **kw)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.PartialRun, "finish", full)
    with pytest.raises(OSError, match="No space left"):  # the file's error, not the feed's
        extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=tmp_path / "b", **kw)


def test_pooled_features_in_memory_match_however_the_rows_were_announced(tmp_path):
    """``PartialRun`` keeps what it appends, growing past a wrong row count, per-row chunks too."""
    rng = np.random.default_rng(0)
    blocks = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(3)]
    for rows, per_row in ((2, False), (12, True)):
        run = store.PartialRun(tmp_path / f"f{rows}.h5", {"rows": rows}, rows=rows, per_row_chunks=per_row)
        run.open()
        valid = [np.ones(4, bool), np.array([True, False, True, True]), np.ones(4, bool)]
        for k, (block, ok) in enumerate(zip(blocks, valid)):
            run.add(k, {"features": block}, ok)
        assert run.features is None  # not finished yet
        run.finish(3, {"rows": rows}, [str(i) for i in range(12)], np.zeros(12, int), ["g"] * 12, ["c"],
                   [str(i) for i in range(12)], {})
        expect = np.concatenate([b[ok] for b, ok in zip(blocks, valid)])
        assert np.array_equal(run.features, expect)
        assert np.array_equal(read_features(tmp_path / f"f{rows}.h5").features, expect)


def test_chunk_folders_left_by_a_killed_removal_are_swept(small_cifar, tmp_path):
    """A finished run's chunk folder is renamed, then deleted by a thread; one left by a process
    killed meanwhile goes with the next run in that cache folder, one of a live process stays."""
    import subprocess as sp

    dead = sp.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".x.h5.partial{store.REMOVING}{dead.pid}-0"
    busy = tmp_path / f".y.h5.partial{store.REMOVING}{os.getpid()}-7"
    for folder in (left, busy):
        folder.mkdir(parents=True)
        (folder / "chunk-000000.npz").write_bytes(b"rows")
    extract("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=tmp_path, **TINY)
    _join_removals()
    assert not left.exists() and (busy / "chunk-000000.npz").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


def test_a_slow_writer_does_not_hold_up_the_model(kill_dataset, tmp_path, monkeypatch):
    """The writer may fall behind by up to WRITE_AHEAD_BYTES (not just two chunks): a disk that
    stalls on one chunk's fsync does not stop the model."""
    import time


    made, seen = [], []
    real_outputs, real_add = ex_plan.PooledFeatures.outputs, store.PartialRun.add
    monkeypatch.setattr(ex_plan.PooledFeatures, "outputs", lambda self, out: made.append(1) or real_outputs(self, out))

    def slow_add(self, k, arrays, valid):
        seen.append(len(made))  # chunks the model had made when the writer took chunk k
        time.sleep(0.5 if k == 0 else 0)
        real_add(self, k, arrays, valid)

    monkeypatch.setattr(store.PartialRun, "add", slow_add)
    fs = extract("tiny_cnn", f"folder:{kill_dataset}", "train", None, cache_dir=tmp_path, batch_size=4,
                 weights="random", progress=False, feed="threads", workers=2)
    assert len(fs) == 40 and store.verify(fs.path)
    assert seen[1] == 10  # all 10 made while the writer was stuck on the first (3 with a two-chunk limit)


@pytest.mark.parametrize("feed", FEEDS)
def test_ctrl_c_exits_130_with_a_resume_hint(kill_dataset, tmp_path, feed):
    import uuid

    mark = uuid.uuid4().hex
    run = _cli(*_extract_args(kill_dataset, tmp_path / "c", feed), fault="after-chunk:2:INT", mark=mark)
    assert run.returncode == 130
    assert "interrupted after 12 of 40 images" in run.stderr and "run the same command again" in run.stderr
    assert "Traceback" not in run.stderr
    assert not _marked_processes(mark)
    again = _cli(*_extract_args(kill_dataset, tmp_path / "c", feed))
    assert again.returncode == 0 and "extracted 28 images" in again.stdout


@pytest.mark.parametrize("feed", FEEDS)
def test_disk_full_keeps_previous_cache_and_removes_temporary(small_cifar, cache_dir, monkeypatch, feed):
    import errno


    ds = f"folder:{small_cifar}"
    TINY = dict(weights="random", progress=False, feed=feed, workers=2)
    done = extract("tiny_cnn", ds, "train", 2, cache_dir=cache_dir, **TINY)
    before = done.path.read_bytes()
    real_savez = np.savez
    saved = []

    def full_disk(f, **arrays):  # the disk fills while the second chunk is written
        real_savez(f, **arrays)
        saved.append(f)
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.np, "savez", full_disk)
    with pytest.raises(CacheError, match="disk full") as e:
        extract("tiny_cnn", ds, "train", 3, cache_dir=cache_dir, batch_size=4, **TINY)
    assert "run the same command again" in str(e.value)
    assert done.path.read_bytes() == before
    assert not list(cache_dir.rglob("*.tmp")) and len(list(cache_dir.glob("*.h5"))) == 1
    # the chunks written are kept, to resume from (the run fills the hole); the file begun is gone
    kept = {p.name for p in cache_dir.rglob("*.partial/*")}
    assert "chunk-000000.npz" in kept and "chunk-000001.npz" not in kept and "assembling.h5" not in kept
    monkeypatch.setattr(store.np, "savez", real_savez)
    assert len(extract("tiny_cnn", ds, "train", 3, cache_dir=cache_dir, **TINY)) == 12


@pytest.mark.parametrize("feed", FEEDS)
def test_two_processes_same_features_extract_once(kill_dataset, tmp_path, feed):

    args = [sys.executable, "-m", "bottleneck", *_extract_args(kill_dataset, tmp_path / "c", feed)]
    procs = [warm.popen(args) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = sorted("cached already" in out for out, _ in outs)
    assert said == [False, True]  # one extracted, the other waited and reused its result
    assert len(list((tmp_path / "c").glob("*.h5"))) == 1


def _blocked_on(path) -> bool:
    """Whether a process waits for a lock on ``path`` (the kernel lists it in /proc/locks with '->')."""
    inode = f":{path.stat().st_ino} "
    with open("/proc/locks") as f:
        return any("->" in line and inode in line for line in f)


@pytest.mark.subprocess
def test_locks_are_per_file(kill_dataset, tmp_path):
    """Different features extract while another file's lock is held; the same features wait, and
    go on once the lock is free (seen in /proc/locks: no timeout waited out)."""
    import time

    from bottleneck.cache.store import exclusive

    cache = tmp_path / "c"
    held = extract("tiny_cnn", f"folder:{kill_dataset}", "train", 2, cache_dir=cache, **TINY).path
    held.unlink()
    other = _extract_args(kill_dataset, cache) + ["--per-class", "3"]
    same = _extract_args(kill_dataset, cache) + ["--per-class", "2"]
    lock = held.parent / ".locks" / (held.name + ".lock")
    with exclusive(held):
        # not blocked by the held lock (in this process too: flock locks of two opens of a file conflict)
        assert main(list(other)) == 0
        waiting = warm.popen([sys.executable, "-m", "bottleneck", *same])
        deadline = time.monotonic() + 120
        while not _blocked_on(lock) and waiting.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert waiting.poll() is None and _blocked_on(lock), "the same features must wait for the lock"
        assert not held.exists()
    out, err = waiting.communicate(timeout=300)  # the lock is free: it goes on
    assert waiting.returncode == 0, err
    assert held.exists()


def test_peak_memory_does_not_grow_with_the_dataset(tmp_path):
    """Decoded images are streamed: 10x the images must not mean 10x the memory."""
    import tracemalloc

    from PIL import Image

    rng = np.random.default_rng(0)

    def folder(n):
        for c in range(2):
            d = tmp_path / f"d{n}" / "train" / f"c{c}"
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
        return f"folder:{tmp_path / f'd{n}'}"

    kw = dict(weights="random", progress=False, batch_size=8, image_size=64)
    extract("tiny_cnn", folder(4), "train", None, cache_dir=tmp_path / "warm", **kw)  # builds the model
    peaks = {}
    for n in (40, 400):
        ds = folder(n)
        tracemalloc.start()
        extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path / f"c{n}", **kw)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    all_decoded = 800 * 64 * 64 * 3  # what holding every decoded image of the big run would take
    assert peaks[400] < 2 * peaks[40] and peaks[400] < all_decoded / 3, peaks


def test_short_classes_are_noted_once(small_cifar, cache_dir, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="bottleneck")
    for seed in (0, 1):
        fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", 50, seed, cache_dir=cache_dir, weights="random")
        assert len(fs) == 24  # 6 per class: every class kept all of its images
    notes = [r.getMessage() for r in caplog.records if "fewer than 50 images" in r.getMessage()]
    assert notes == ["folder:%s/train: 4 of 4 classes have fewer than 50 images; kept all of theirs (6 each)"
                     % small_cifar]


def test_cache_files_of_the_first_format_are_read_and_newer_ones_refused(small_cifar, cache_dir):
    """Files written before content hashes (format 1: no digests, a checksum of features and
    labels only) are still read, never misread; a format this version does not know is refused."""
    import hashlib

    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=cache_dir, **TINY)
    old = cache_dir / "old.h5"
    shutil.copy(fs.path, old)
    with h5py.File(old, "r+") as f:
        del f["digests"]
        h = hashlib.sha256(f["features"][()].astype(np.float32).tobytes())
        h.update(f["labels"][()].astype(np.int64).tobytes())
        f.attrs.update({"format_version": 1, "checksum": h.hexdigest()})
    back = read_features(old)
    assert np.array_equal(back.features, fs.features) and back.digests == [] and verify(old)
    with h5py.File(old, "r+") as f:
        f.attrs["format_version"] = 9
    with pytest.raises(CacheError, match="made by a newer bottleneck \\(cache format 9"):
        read_features(old)


@pytest.mark.parametrize("values, fixed", [(["train/cat/1.jpg", "train/café/22.png", "x"], True), ([], True),
                                           (["a" * 3000] + ["b"] * 1000, False)])
def test_ids_are_stored_fixed_length_unless_that_wastes_space_and_read_back_the_same(tmp_path, values, fixed):
    data = store._strings(values)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("ids", data=data)
    with h5py.File(tmp_path / "s.h5", "r") as f:
        info = h5py.check_string_dtype(f["ids"].dtype)
        assert info.encoding == "utf-8" and (info.length is not None) == fixed
        assert [s.decode() for s in f["ids"][()]] == values


def test_an_id_ending_in_nul_is_refused_not_cut(tmp_path):
    with h5py.File(tmp_path / "s.h5", "w") as f, pytest.raises(ValueError, match="NULL"):
        f.create_dataset("ids", data=store._strings(["a\0", "b"]))
