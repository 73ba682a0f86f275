"""The forward pass with the next batch sent before the last is read back (``bottleneck.forward``).

This suite runs on TensorFlow, where ``send`` and ``take`` are one step. The queued path that
JAX and PyTorch take is checked two ways: here, with a stand-in ``Forward`` that reads each
batch late (as a GPU may), and under Keras's JAX backend itself, in a subprocess.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from bottleneck.extraction import run as extraction
from bottleneck.extraction import forward
from bottleneck.extraction.run import extract

from .conftest import REPO

TINY = dict(weights="random", progress=False)


class LateForward:
    """A queued ``Forward`` whose device reads each batch only when it is taken back, a while
    later: a batch whose pixels changed in between gives other features."""

    queued, in_flight = True, forward.IN_FLIGHT

    def __init__(self, model):
        self.model, self.events, self.pending, self.most_in_flight = model, [], 0, 0

    def send(self, x):
        self.pending += 1
        self.most_in_flight = max(self.most_in_flight, self.pending)
        self.events.append("send")
        return x  # the batch itself, not a copy: what the device will read

    def take(self, x):
        time.sleep(0.05)  # the feed's workers run meanwhile
        self.pending -= 1
        self.events.append("take")
        return self.model.predict_on_batch(x)


def test_tensorflow_runs_one_batch_at_a_time_with_predict_on_batchs_features():
    from bottleneck.bases.build import build_feature_model
    from bottleneck.bases.registry import get_base

    model = build_feature_model(get_base("tiny_cnn"), 32, None)
    run = forward.forward_of(model)
    assert run.backend == "tensorflow" and not run.queued and run.in_flight == 1
    assert forward.forward_of(model) is run  # made once per model
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(run.take(run.send(x)), model.predict_on_batch(x))


def test_a_models_forward_does_not_keep_the_model_alive():
    import gc
    import weakref

    from bottleneck.bases.build import build_feature_model
    from bottleneck.bases.registry import get_base

    model = build_feature_model(get_base("tiny_cnn"), 32, None)
    forward.forward_of(model)
    gone = weakref.ref(model)
    del model
    gc.collect()
    assert gone() is None  # a grid over many bases frees each model it is done with


@pytest.mark.parametrize("feed_kind", ["threads", "processes"])
def test_a_queued_forward_keeps_each_batch_until_it_is_read_back(kill_dataset, tmp_path, monkeypatch, feed_kind):
    ds = f"folder:{kill_dataset}"
    plain = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path / "a", batch_size=4, **TINY)
    made = []
    monkeypatch.setattr(forward, "forward_of", lambda model: made.append(LateForward(model)) or made[-1])
    queued = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path / "b", batch_size=4, feed=feed_kind,
                     workers=2, **TINY)
    late = made[0]
    assert late.most_in_flight == forward.IN_FLIGHT  # batch k+1 was sent before batch k was read back
    assert late.events[:3] == ["send", "send", "take"] and late.pending == 0
    # the shared-memory slot of a batch in flight was not handed to the next chunk
    assert np.array_equal(queued.features, plain.features) and queued.source_ids == plain.source_ids


def test_chunks_from_donor_files_keep_their_place_between_queued_batches(small_cifar, tmp_path, monkeypatch):
    ds = f"folder:{small_cifar}"
    fresh = extract("tiny_cnn", ds, "train", None, cache_dir=tmp_path / "fresh", batch_size=1, **TINY)
    donors = tmp_path / "donors"
    extract("tiny_cnn", ds, "train", 3, seed=1, cache_dir=donors, batch_size=1, **TINY)  # half the rows
    monkeypatch.setattr(forward, "forward_of", LateForward)
    add, written = extraction.PartialRun.add, []
    monkeypatch.setattr(extraction.PartialRun, "add", lambda run, k, *a: written.append(k) or add(run, k, *a))
    mixed = extract("tiny_cnn", ds, "train", None, cache_dir=donors, batch_size=1, **TINY)
    assert mixed.info["reused"] == 12 and mixed.info["extracted"] == 12
    assert written == sorted(written) == list(range(24))  # in order: the file is appended to as chunks come
    assert np.array_equal(mixed.features, fresh.features) and mixed.source_ids == fresh.source_ids


JAX_CHECK = """
import numpy as np
from bottleneck.extraction import forward
from bottleneck.bases.build import build_feature_model, build_pyramid_model, compute_dtype
from bottleneck.bases.registry import get_base
from bottleneck.extraction.model import model_of
from bottleneck.extraction.plan import plan
from bottleneck.extraction.run import extract

spec = get_base("tiny_cnn")
x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
for dtype in ("float32", "bfloat16"):
    with compute_dtype(dtype):
        model = build_feature_model(spec, 32, None)
    run = forward.forward_of(model)
    assert run.backend == "jax" and run.queued and run.in_flight == forward.IN_FLIGHT
    handles = [run.send(x), run.send(x[::-1])]
    assert np.array_equal(run.take(handles[0]), model.predict_on_batch(x)), dtype
    assert np.array_equal(run.take(handles[1]), model.predict_on_batch(x[::-1])), dtype
# the weights as they are now, not as they were when the forward pass was made: set anew, or
# replaced by predict_on_batch (which donates them to XLA on a GPU and stores new arrays)
model.set_weights([w * 0.5 for w in model.get_weights()])
assert np.array_equal(run.take(run.send(x)), model.predict_on_batch(x))
assert np.array_equal(run.take(run.send(x)), model.predict_on_batch(x))
pyramid = build_pyramid_model(spec, (32, 48), None, None)  # a dict of maps, as segmentation extracts
run = forward.forward_of(pyramid)
frames = np.concatenate([x, x[:, :, :16]], axis=2)  # 32 x 48
got, want = run.take(run.send(frames)), pyramid.predict_on_batch(frames)
assert sorted(got) == sorted(want) and all(np.array_equal(got[k], want[k]) for k in want)

from PIL import Image
from bottleneck.bases.build import resize_each_image, sized_canvas
from bottleneck.data.images import resize
image = np.random.default_rng(1).integers(0, 256, (17, 40, 3), dtype=np.uint8)  # --resize device-mixed, under JAX
each = np.asarray(resize_each_image(64)(sized_canvas(image, 64)[None]))[0]
assert np.abs(each - resize(Image.fromarray(image), 64)).max() <= 1.0

ds = "folder:" + DATA
fs = extract("tiny_cnn", ds, "train", None, cache_dir=CACHE, batch_size=4, feed="processes", workers=2,
             weights="random", progress=False)
p = plan("tiny_cnn", ds, "train", None, cache_dir=CACHE, weights="random")
pixels = np.stack([p.recipe.pixels(p.samples, i, d) for (i, _), d in zip(p.rows, p.digests)])
one = np.concatenate([model_of(p.order).predict_on_batch(pixels[s:s + 4]) for s in range(0, len(pixels), 4)])
assert np.array_equal(fs.features, one)
print("ok", len(fs))
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="JAX is in requirements.txt for Python 3.11+ (CI runs it)")
def test_under_jax_the_pipeline_gives_predict_on_batchs_features_bit_for_bit(kill_dataset, tmp_path):
    script = f"DATA = {str(kill_dataset)!r}\nCACHE = {str(tmp_path / 'c')!r}\n" + textwrap.dedent(JAX_CHECK)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-2:] == ["ok", "40"]
