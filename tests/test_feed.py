"""The feed (threads or processes), resizing on the device, and where extraction time goes."""
from __future__ import annotations

import concurrent.futures as cf
import concurrent.futures.process  # noqa: F401  (cf.process: not loaded by `import concurrent.futures` alone)
import json
import os
import time

import numpy as np
import pytest
from PIL import Image

from bottleneck.extraction import feed
from bottleneck.cli import main
from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.extraction.plan import PooledFeatures, plan
from bottleneck.extraction.run import extract
from bottleneck.data.images import DEVICE_RESIZE, DEVICE_RESIZE_EACH, RESIZE_METHOD, BadImage, resize

TINY = dict(weights="random", progress=False)


def test_process_feed_gives_the_thread_feeds_features_bit_for_bit(small_cifar, tmp_path):
    ds = f"folder:{small_cifar}"
    a = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path / "a", feed="threads", batch_size=5, **TINY)
    b = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path / "b", feed="processes", workers=2, batch_size=5,
                **TINY)
    assert a.path.name == b.path.name  # how the feed ran is not part of what the features are
    assert np.array_equal(a.features, b.features) and a.source_ids == b.source_ids
    assert a.info["feed"].startswith("threads x")
    assert b.info["feed"] == "processes x 2, idle priority"  # the model computes on this machine's CPU


def test_a_bad_image_in_a_worker_process_is_named_or_skipped(small_cifar, tmp_path):
    (small_cifar / "train" / "cat" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    kw = dict(feed="processes", workers=2, **TINY)
    with pytest.raises(BadImage, match="zz_broken.jpg") as e:
        extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=tmp_path / "c", **kw)
    assert e.value.path.endswith("zz_broken.jpg")  # the error crossed the process boundary intact
    fs = extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=tmp_path / "c", skip_bad_images=True,
                 **kw)
    assert "train/cat/zz_broken.jpg" in fs.info["skipped"] and len(fs) == 24


def test_device_resize_is_a_recorded_setting_with_its_own_file(small_cifar, tmp_path):
    ds = f"folder:{small_cifar}"
    host = plan("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, weights="random")
    dev = plan("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, weights="random", resize="device")
    assert host.settings["resize"] == RESIZE_METHOD and "source_size" not in host.settings
    assert dev.settings["resize"] == DEVICE_RESIZE and dev.settings["source_size"] == [32, 32]
    assert host.path != dev.path
    assert dev.recipe.input_shape == (32, 32)  # the feed ships the images' own pixels
    with pytest.raises(BottleneckError, match="unknown --resize"):
        plan("tiny_cnn", ds, "train", None, cache_dir=tmp_path, weights="random", resize="gpu")


def test_device_resize_matches_the_hosts_bilinear_resize():
    """The model's resize layer against PIL's bilinear (which rounds to uint8): within rounding."""
    import keras

    from bottleneck.bases.registry import get_base

    pixels = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    recipe = PooledFeatures(96, (32, 32))
    host = np.stack([PooledFeatures(96).fit(Image.fromarray(p), "") for p in pixels]).astype(np.float32)
    layer = keras.layers.Resizing(96, 96, interpolation="bilinear", antialias=False)
    device = np.asarray(layer(keras.ops.cast(np.stack([recipe.fit(Image.fromarray(p), "") for p in pixels]),
                                             "float32")))
    assert np.abs(device - host).max() <= 1.0  # PIL rounds each pixel; nothing else differs
    assert get_base("tiny_cnn").native_size == 32


def test_device_resize_features_are_close_to_host_resize(small_cifar, tmp_path):
    ds = f"folder:{small_cifar}"
    host = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, **TINY)
    dev = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, resize="device", **TINY)
    scale = np.abs(host.features).max()
    assert 0 < np.abs(dev.features - host.features).max() < 0.02 * scale


def test_device_resize_refuses_an_image_of_another_size(small_cifar, tmp_path):
    odd = small_cifar / "train" / "cat" / "zz_big.png"
    Image.new("RGB", (40, 30), (9, 9, 9)).save(odd)
    with pytest.raises(DatasetError, match="zz_big.png is 40 x 30 pixels") as e:
        extract("tiny_cnn", f"folder:{small_cifar}", "train", None, cache_dir=tmp_path, resize="device", **TINY)
    assert "drop --resize device" in str(e.value) and "use --resize device-mixed" in str(e.value)


def _mixed_sizes(folder):
    """Images of other sizes beside the 32 x 32 ones: smaller than 64, and one larger."""
    rng = np.random.default_rng(1)
    for name, (w, h) in {"zz_wide": (40, 30), "zz_tall": (7, 63), "zz_big": (100, 80)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / "train" / "cat" / f"{name}.png")


def test_resize_each_image_is_pils_bilinear_within_rounding_and_a_full_size_image_is_untouched():
    from bottleneck.bases.build import resize_each_image, sized_canvas

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(17, 40), (64, 64), (1, 1), (63, 5)]]
    canvases = np.stack([sized_canvas(im, 64) for im in images])
    assert canvases.shape == (4, 65, 64, 3) and list(canvases[0, 64, :2, :2].ravel()) == [0, 17, 0, 40]
    canvases[0, 20:64] = 255  # outside its image: weight 0, whatever the canvas holds
    got = np.asarray(resize_each_image(64)(canvases))
    for image, out in zip(images, got):
        host = resize(Image.fromarray(image), 64).astype(np.float32)  # PIL rounds after each of its two passes
        assert np.abs(out - host).max() <= 1.0, image.shape
    assert np.array_equal(got[1], images[1])  # its own size: the identity, bit for bit
    assert np.all(got[2] == images[2][0, 0])  # one pixel: everywhere
    with pytest.raises(ValueError, match="does not fit"):
        sized_canvas(np.zeros((65, 3, 3), np.uint8), 64)


def test_device_mixed_ships_each_image_with_its_size_and_resizes_larger_ones_on_the_host(small_cifar, tmp_path):
    _mixed_sizes(small_cifar)
    ds = f"folder:{small_cifar}"
    p = plan("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, weights="random",
             resize="device-mixed")
    host = plan("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, weights="random")
    assert p.settings["resize"] == DEVICE_RESIZE_EACH and "source_size" not in p.settings and p.path != host.path
    assert p.recipe.input_shape == (65, 64)  # the canvas and the row that holds each image's size
    rows = {p.dataset.split("train").ids[i].split("/")[-1]: (i, d) for (i, _), d in zip(p.rows, p.digests)}
    wide = p.recipe.pixels(p.samples, *rows["zz_wide.png"])
    assert list(wide[64, :2, :2].ravel()) == [0, 30, 0, 40] and not wide[30:64].any() and not wide[:, 40:].any()
    assert np.array_equal(wide[:30, :40], np.asarray(Image.open(small_cifar / "train" / "cat" / "zz_wide.png")))
    big = p.recipe.pixels(p.samples, *rows["zz_big.png"])  # 100 x 80: resized on the host, as by default
    assert list(big[64, :2, :2].ravel()) == [0, 64, 0, 64]
    assert np.array_equal(big[:64], host.recipe.pixels(host.samples, *rows["zz_big.png"]))


@pytest.mark.parametrize("feed_kind", ["threads", "processes"])
def test_device_mixed_features_are_close_to_host_resize(small_cifar, tmp_path, feed_kind):
    _mixed_sizes(small_cifar)
    ds = f"folder:{small_cifar}"
    host = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, **TINY)
    each = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path, image_size=64, resize="device-mixed",
                   feed=feed_kind, workers=2, **TINY)
    assert each.source_ids == host.source_ids and len(each) == 27
    scale = np.abs(host.features).max()
    assert 0 < np.abs(each.features - host.features).max() < 0.02 * scale


def test_stages_are_recorded_in_the_file_the_row_and_info(small_cifar, tmp_path, capsys):
    args = ["--base", "tiny_cnn", "--weights", "random", "--dataset", f"folder:{small_cifar}", "--cache-dir",
            str(tmp_path / "c"), "--quiet", "--profile"]
    assert main(["train", *args, "--per-class", "2", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    for stage in ("decode", "resize", "start", "build", "wait", "model", "write", "stop", "finish"):
        assert f"  {stage} " in out
    row = json.loads((tmp_path / "r" / "results.json").read_text())[0]
    assert set(row["extract_stages"]) == {"decode", "resize", "start", "build", "wait", "model", "write", "stop",
                                         "finish"}
    assert row["extract_stages"]["finish"] > 0
    assert row["extract_stages"]["model"] > 0
    files = sorted((tmp_path / "c").glob("*.h5"))
    assert main(["info", str(files[0])]) == 0
    out = capsys.readouterr().out
    assert "stages" in out and '"model"' in out and "feed" in out
    assert main(["train", *args, "--per-class", "2"]) == 0  # all cached now
    assert "nothing was extracted" in capsys.readouterr().out


def test_auto_feed_uses_processes_only_where_they_pay(monkeypatch, tmp_path):
    from bottleneck.data.sources import ArraySource, FileSource

    files = FileSource(tmp_path, ["a.jpg"])
    monkeypatch.setattr(feed.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert feed.choose("auto", files, feed.PROCESS_MIN_ROWS, None) == ("processes", 16)
    assert feed.choose("auto", files, feed.PROCESS_MIN_ROWS - 1, None)[0] == "threads"  # too few to pay the start
    assert feed.choose("auto", ArraySource(np.zeros((1, 2, 2, 3), np.uint8)), 10 ** 6, None)[0] == "threads"
    assert feed.choose("threads", files, 10, 3) == ("threads", 3)
    monkeypatch.setattr(feed.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert feed.choose("auto", files, 10 ** 6, None)[0] == "threads"  # 2 cores beside a GPU: as before
    # beside a model on the same 2 cores, processes at idle priority take only the cycles it leaves
    assert feed.choose("auto", files, feed.PROCESS_MIN_ROWS, None, model_on_cpu=True) == ("processes", 2)
    assert feed.choose("auto", files, feed.PROCESS_MIN_ROWS - 1, None, model_on_cpu=True)[0] == "threads"
    with pytest.raises(BottleneckError, match="unknown feed"):
        feed.choose("gpu", files, 10, None)


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's (CI runs on Linux)")
@pytest.mark.parametrize("idle", [True, False])
def test_worker_processes_run_at_idle_priority_only_when_asked(small_cifar, idle):
    from bottleneck.data.datasets import load_dataset

    split = load_dataset(f"folder:{small_cifar}").split("train")
    rows = [(0, "", split.digests([0])[0])]
    with feed.Feed(split, PooledFeatures(32), False, 2, "processes", 4, slots=2, idle=idle) as pool:
        pool.release(pool.submit(rows).result())  # a worker has started and made a chunk
        policies = {os.sched_getscheduler(pid) for pid in pool._pool._processes}
    assert policies == ({os.SCHED_IDLE} if idle else {os.SCHED_OTHER})
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this process, the model's, is left as it was
    with pytest.raises(ValueError, match="GIL"):
        feed.Feed(split, PooledFeatures(32), False, 2, "threads", idle=True)


def test_make_chunk_times_its_stages_and_marks_skipped_rows(small_cifar):
    from bottleneck.data.datasets import load_dataset

    split = load_dataset(f"folder:{small_cifar}").split("train")
    digests = split.digests([0, 1])
    chunk = feed.make_chunk(split, PooledFeatures(48), [(0, "", digests[0]), (1, "", digests[1])], False)
    assert chunk.pixels.shape == (2, 48, 48, 3) and chunk.pixels.dtype == np.uint8
    assert chunk.valid.all() and chunk.decode > 0 and chunk.resize > 0
    assert np.array_equal(chunk.pixels[1], PooledFeatures(48).pixels(split, 1, digests[1]))


def test_feed_stages_are_cpu_seconds_not_the_time_a_worker_waited(small_cifar):
    from bottleneck.data.datasets import load_dataset

    class SlowDisk(PooledFeatures):
        def decode(self, split, index, digest):
            time.sleep(0.2)  # waiting (for a disk, or for a core the model holds) is not the feed's work
            return super().decode(split, index, digest)

    split = load_dataset(f"folder:{small_cifar}").split("train")
    chunk = feed.make_chunk(split, SlowDisk(48), [(0, "", split.digests([0])[0])], False)
    assert 0 < chunk.decode < 0.1 and 0 < chunk.resize < 0.1


class _CountingPool:
    """Stands in for a Feed: records what was submitted and when; futures it returns are done."""

    def __init__(self, fail_at: int | None = None):
        self.submitted, self.fail_at = [], fail_at

    def submit(self, work):
        if work == self.fail_at:
            raise cf.process.BrokenProcessPool("a worker died")
        self.submitted.append(work)
        f = cf.Future()
        f.set_result(work * 10)
        return f


def _settle(pool, n, timeout=5.0):
    """What was submitted once ``n`` works were (or ``timeout`` seconds passed), and a moment more.
    A check that no ``n``-th work comes passes a short ``timeout``: submissions come within
    milliseconds, and waiting 5 s for what never comes cost 10 s of the suite."""
    deadline = time.monotonic() + timeout
    while len(pool.submitted) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # long enough for a submission beyond n to show
    return list(pool.submitted)


def test_ahead_keeps_depth_in_flight_hands_futures_in_order_and_stops_on_close():
    pool = _CountingPool()
    works = [1, None, 2, 3, 4, 5, 6]
    ahead = feed.Ahead(pool, works, depth=2)
    assert _settle(pool, 2) == [1, 2]  # two in flight, no more: the third waits for a place
    got = [ahead.next(), ahead.next(), ahead.next()]
    assert got[0].result() == 10 and got[1] is None and got[2].result() == 20  # in order; None: nothing to make
    assert _settle(pool, 3, timeout=0.5) == [1, 2]
    ahead.done()
    assert _settle(pool, 3) == [1, 2, 3]
    ahead.close()
    time.sleep(0.05)
    assert pool.submitted == [1, 2, 3]  # closed: nothing more submitted


def test_ahead_holds_back_more_than_first_until_the_first_chunk_is_made():
    """More workers than cores: the first chunk, which the model waits for, is not made
    alongside all the others."""

    class HeldPool(_CountingPool):
        def submit(self, work):
            self.submitted.append(work)
            self.futures.append(cf.Future())
            return self.futures[-1]

    pool = HeldPool()
    pool.futures = []
    ahead = feed.Ahead(pool, [1, 2, 3, 4, 5], depth=4, first=2)
    assert _settle(pool, 2) == [1, 2]  # places for 4, but only 2 until the first is made
    pool.futures[1].set_result(20)
    assert _settle(pool, 3, timeout=0.5) == [1, 2]  # the second being made does not count
    pool.futures[0].set_result(10)
    assert _settle(pool, 4) == [1, 2, 3, 4]  # then up to depth
    ahead.close()


def test_ahead_raises_a_failed_submission_where_the_futures_are_awaited():
    pool = _CountingPool(fail_at=2)
    ahead = feed.Ahead(pool, [1, 2, 3], depth=4)
    assert ahead.next().result() == 10
    with pytest.raises(cf.process.BrokenProcessPool):
        ahead.next()
    ahead.close()


def test_profile_says_when_the_feed_is_the_limit():
    from bottleneck.cli import profile_text

    fed = {"decode": 9.0, "resize": 3.0, "start": 0.02, "wait": 0.1, "model": 1.4, "stop": 0.03, "finish": 0.08}
    starved = dict(fed, wait=1.0)
    assert "the feed is the limit" not in profile_text(fed, 32768, "processes x 14")
    text = profile_text(starved, 32768, "processes x 14")
    assert "waited for the feed 40% of the run" in text and "--resize device" in text
    assert "the feed is the limit" not in profile_text(starved, 32768, "ray x 2")  # there wait is all the work


_SCRIPT = """import sys
from bottleneck import extract
{guard}extract("tiny_cnn", "folder:" + sys.argv[1], "train", None, cache_dir=sys.argv[2], weights="random",
{indent}        feed="processes", workers=2, progress=False)
{indent}print("extracted")
"""


@pytest.mark.parametrize("guarded", [False, True])
def test_a_script_whose_calls_are_not_under_a_main_guard_is_told_so_not_left_hanging(small_cifar, tmp_path, guarded):
    """Feed workers import the script that started their parent, as with any multiprocessing: an
    unguarded call ran again in each of them and waited forever for the cache file's lock."""
    import subprocess
    import sys

    script = tmp_path / "lesson.py"
    script.write_text(_SCRIPT.format(guard='if __name__ == "__main__":\n    ' if guarded else "",
                                     indent="    " if guarded else ""))
    run = subprocess.run([sys.executable, str(script), str(small_cifar), str(tmp_path / "c")], capture_output=True,
                         text=True, timeout=90, cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    if guarded:
        assert run.returncode == 0 and "extracted" in run.stdout, run.stderr
        return
    assert run.returncode == 1 and "extracted" not in run.stdout  # the parent's error: an exception from the API
    assert f"error: a worker process of bottleneck's feed imported {script}" in run.stderr
    assert "put the script's calls under `if __name__ == \"__main__\":`" in run.stderr
    assert "a feed worker process died after 0 of 24 images" in run.stderr
