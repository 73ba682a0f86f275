"""Extraction speed: the project's pipeline as a ratio to the model's own ceiling, in one run.

For one base at its native size (random weights are fine for speed) over image files:

- pipeline     ``bottleneck`` from files to a finished cache file (model built and compiled
               beforehand): the feed (read, decode, resize) in workers, the model, the writer;
- ceiling      the same model's forward pass alone on preloaded, resized uint8 tensors, run as
               the pipeline runs it (``bottleneck.forward``: ``predict_on_batch`` under
               TensorFlow; under JAX and PyTorch two batches in flight, the next sent before the
               last is read back, with ``ceiling_predict_on_batch``, one at a time, beside it);
- *_device     the same two with the model resizing (the feed ships the images' own pixels):
               ``--resize device`` when every image has one size (CIFAR-10), else
               ``--resize device-mixed`` (each image in a canvas with its size; GTSRB); which one
               is ``device_resize``;
- feed_per_core  the feed alone, one worker, no model: images/s one core gives (so a GPU's
               ceiling divided by it says how many cores that GPU needs);
- lab_loop     the classic lab's way: batches of 16, decode, resize per batch, ``model.predict``;
- the model's GFLOP/s at its ceiling next to this machine's matmul rate through the same
  backend; on TensorFlow, the ceiling with XLA (``jit_compile``); with ``--bf16``, the
  ceiling under Keras's mixed_bfloat16 policy and the largest feature difference from float32.

    .venv/bin/python bench/extract_speed.py --base efficientnet_lite0 --images 512          # a table
    .venv/bin/python bench/extract_speed.py --images 2000 --json                           # one JSON object

``--images`` beyond the dataset's size repeats its files (said in the output): the OS keeps
them in memory either way after the first pass, as it would on any re-run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bottleneck.extraction.model import model_of
from bottleneck.extraction.plan import PooledFeatures, RunOptions
from bottleneck.extraction.plan import plan as make_plan
from bottleneck.extraction.run import run as run_plan
from bottleneck.extraction import feed
from bottleneck.extraction import forward
from bottleneck.bases.build import build_feature_model, compute_dtype
from bottleneck.bases.registry import get_base
from bottleneck.data.datasets import load_dataset
from bottleneck.data.images import resize
from bottleneck.core.sampling import per_class_draw

LAB_BATCH = 16  # the classic lab's batch
CEILING_IMAGES = 8192  # the ceiling, the feed alone and the lab loop run on at most this many images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="efficientnet_lite0")
    p.add_argument("--weights", default="random")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1] / "data"))
    p.add_argument("--images", type=int, default=512, help="images to run (drawn evenly over classes)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="rounds of pipeline then ceiling (medians reported)")
    p.add_argument("--feed", default="auto", choices=feed.KINDS)
    p.add_argument("--workers", type=int)
    p.add_argument("--bf16", action="store_true", help="also measure the ceiling under mixed_bfloat16")
    p.add_argument("--no-lab", action="store_true", help="skip the lab loop (slow on a CPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    a = p.parse_args()
    r = measure(a)
    print(json.dumps(r, indent=1) if a.json else tables(r))


def _dataset(a):
    """The dataset with its train split cut to ``--images`` files (repeated when it has fewer)."""
    ds = load_dataset(a.dataset, a.data_dir)
    split = ds.split("train")
    per_class = max(1, -(-a.images // len(ds.class_names)))
    idx, _ = per_class_draw(split.labels, per_class, seed=0)
    repeats = -(-a.images // len(idx))
    idx = np.tile(idx, repeats)[:a.images]
    ds = dataclasses.replace(ds, splits={"train": split.subset(idx)})
    return ds, repeats


def _timed_run(plan, a) -> tuple[float, dict, np.ndarray]:
    """images/s of the pipeline, files -> cache file, with its model built and compiled first."""
    options = RunOptions(a.batch_size, progress=False, workers=a.workers, feed=a.feed)
    run = forward.forward_of(model_of(plan.order))
    h, w = plan.recipe.input_shape
    run.take(run.send(np.zeros((min(a.batch_size, len(plan.selected)), h, w, 3), np.uint8)))  # compile
    t = time.perf_counter()
    fs = run_plan(plan, options)
    seconds = time.perf_counter() - t
    stages = json.loads(fs.info["stages"])
    # ``other``: the run's time in no stage (the main loop's own work between them)
    other = round(seconds - feed.wall_seconds(stages), 3)
    return len(fs) / seconds, {"feed": fs.info["feed"], **stages, "other": other}, fs.features


def _rounds(r: dict, suffix: str, ds, a, cache: str, resize_on: str, pixels) -> tuple:
    """A ceiling, then ``--rounds`` rounds of pipeline then ceiling: each round's ratio is its
    pipeline against the mean of the ceilings just before and just after it, so that a drift
    in the machine's speed (its ceiling moves by several percent within minutes here) falls
    on both sides alike. Into ``r``: the medians of the pipelines, the ceilings (each round's
    mean) and the per-round ratios; every pipeline, ceiling and ratio measured (the spread);
    the stages of the median round.
    Returns the features, the ceiling's preloaded pixels (``pixels()``, made first: it also
    reads every file once, so that no round reads them cold) and the model."""
    x = pixels()
    # one plan per round, each with a cache folder of its own, so that every round extracts
    plans = [make_plan(a.base, ds, "train", None, cache_dir=f"{cache}/{resize_on}{i}", weights=a.weights,
                             resize=resize_on) for i in range(a.rounds)]
    model = model_of(plans[0].order)  # the pipeline's model (built once: every round's is this one)
    ceilings, singles = [_ceiling(model, x, a.batch_size)], []
    pipelines, stages = [], []
    for plan in plans:
        rate, stage, features = _timed_run(plan, a)
        pipelines.append(rate)
        stages.append(stage)
        ceilings.append(_ceiling(model, x, a.batch_size))
        if forward.forward_of(model).queued:
            singles.append(_ceiling(model, x, a.batch_size, one_at_a_time=True))
    around = [(before + after) / 2 for before, after in zip(ceilings, ceilings[1:])]
    ratios = [p / c for p, c in zip(pipelines, around)]
    middle = int(np.argsort(ratios)[len(ratios) // 2])
    r.update({f"pipeline{suffix}": float(np.median(pipelines)), f"ceiling{suffix}": float(np.median(around)),
              f"ratio{suffix}": float(np.median(ratios)), f"ratios{suffix}": [round(v, 4) for v in ratios],
              f"stages{suffix}": stages[middle], f"pipelines{suffix}": [round(v, 2) for v in pipelines],
              f"ceilings{suffix}": [round(v, 2) for v in ceilings]})
    if singles:
        r[f"ceiling_predict_on_batch{suffix}"] = float(np.median(singles))
    return features, x, model


def _ceiling(model, x: np.ndarray, batch: int, one_at_a_time: bool = False) -> float:
    """images/s of the model alone over ``x``, whole batches only (the shape the pipeline
    compiles): through ``Forward`` as the pipeline runs it, or ``predict_on_batch`` one batch
    at a time."""
    full = len(x) - len(x) % batch
    run = forward.forward_of(model)
    if one_at_a_time:
        model.predict_on_batch(x[:batch])
        t = time.perf_counter()
        for s in range(0, full, batch):
            np.asarray(model.predict_on_batch(x[s:s + batch]))
        return full / (time.perf_counter() - t)
    run.take(run.send(x[:batch]))
    t = time.perf_counter()
    sent = []
    for s in range(0, full, batch):
        sent.append(run.send(x[s:s + batch]))
        if len(sent) >= run.in_flight:
            run.take(sent.pop(0))
    for handle in sent:
        run.take(handle)
    return full / (time.perf_counter() - t)


def _feed_alone(ds, recipe) -> float:
    """images/s of one feed worker (this thread), no model."""
    split = ds.split("train")
    m = min(len(split), CEILING_IMAGES // 2)
    digests = split.digests(range(m))
    rows = [(i, "", digests[i]) for i in range(m)]
    t = time.perf_counter()
    for s in range(0, len(rows), 64):
        feed.make_chunk(split, recipe, rows[s:s + 64], False)
    return len(rows) / (time.perf_counter() - t)


def model_flops(model) -> float:
    """Multiply-adds x 2 of one image through the convolutions and dense layers."""
    total = 0.0
    for layer in _layers(model):
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        out = layer.output.shape
        if kind == "Dense":
            total += 2.0 * layer.kernel.shape[0] * layer.kernel.shape[1]
        elif kind == "DepthwiseConv2D":
            kh, kw, cin, mult = layer.kernel.shape
            total += 2.0 * out[1] * out[2] * kh * kw * cin * mult
        else:
            kh, kw, cin, cout = layer.kernel.shape
            total += 2.0 * out[1] * out[2] * kh * kw * cin * cout
    return total


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _layers(layer)
        else:
            yield layer


def _matmul_rate(n: int = 2048, repeat: int = 10) -> float:
    """GFLOP/s of a float32 n x n matrix product through Keras's backend, on its device."""
    from keras import ops

    x = ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n), dtype=np.float32))
    ops.convert_to_numpy(ops.matmul(x, x))
    t = time.perf_counter()
    for _ in range(repeat):
        y = ops.matmul(x, x)
    ops.convert_to_numpy(y)  # waits for the device
    return 2.0 * n ** 3 * repeat / (time.perf_counter() - t) / 1e9


def measure(a) -> dict:
    import keras

    spec = get_base(a.base)
    size = spec.native_size
    ds, repeats = _dataset(a)
    split = ds.split("train")
    n = len(split)
    r = {"machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
         "backend": keras.backend.backend(), "base": a.base, "image_size": size, "dataset": ds.name, "images": n,
         "files_repeated": repeats, "batch_size": a.batch_size, "weights": a.weights}
    with tempfile.TemporaryDirectory() as cache:
        m = min(n, CEILING_IMAGES)
        host = lambda: np.stack([resize(split.load(i, size), size) for i in range(m)])  # as the pipeline feeds it
        features, x, model = _rounds(r, "", ds, a, cache, "host", host)
        sizes = {split.load(i).size for i in range(min(n, 200))}
        if len(sizes) == 1:  # the model takes the images' own size
            mode, device, draft = "device", PooledFeatures(size, tuple(sizes.pop())[::-1]), None
        else:  # each image in a sized canvas (larger ones resized on the host)
            mode, device, draft = "device-mixed", PooledFeatures(size, each_size=True), size
        own = lambda: np.stack([device.fit(split.load(i, draft), "") for i in range(m)])  # as the pipeline feeds it
        dev_features, _, _ = _rounds(r, "_device_resize", ds, a, cache, mode, own)
        r["device_resize"] = mode
        r["device_resize_max_feature_difference"] = float(np.abs(dev_features - features).max())
        r["feed_per_core_device_resize"] = _feed_alone(ds, device)
    r["feed_per_core"] = _feed_alone(ds, PooledFeatures(size))
    r["model_gflop_per_image"] = model_flops(model) / 1e9
    r["model_gflop_per_s_at_ceiling"] = r["model_gflop_per_image"] * r["ceiling"]
    r["matmul_gflop_per_s_float32"] = _matmul_rate()
    if keras.backend.backend() == "tensorflow":
        xla = build_feature_model(spec, size, None)
        xla.set_weights(model.get_weights())
        xla.jit_compile = True
        r["ceiling_xla"] = _ceiling(xla, x[:4 * a.batch_size], a.batch_size)  # 4 batches: it is slow on CPUs
        r["xla_max_feature_difference"] = float(np.abs(np.asarray(xla.predict_on_batch(x[:a.batch_size]))
                                                       - np.asarray(model.predict_on_batch(x[:a.batch_size]))).max())
    if a.bf16:
        with compute_dtype("bfloat16"):  # what --compute bfloat16 builds
            half = build_feature_model(spec, size, None)
        half.set_weights(model.get_weights())
        r["ceiling_bf16"] = _ceiling(half, x, a.batch_size)
        ref = np.asarray(model.predict_on_batch(x[:a.batch_size]), np.float32)
        got = np.asarray(half.predict_on_batch(x[:a.batch_size]), np.float32)
        r["bf16_max_feature_difference"] = float(np.abs(got - ref).max())
        r["bf16_feature_scale"] = float(np.abs(ref).max())
    if not a.no_lab:
        r["lab_loop"] = _lab_loop(spec, size, split, x, min(n, CEILING_IMAGES // 2))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


def _lab_loop(spec, size, split, x, n) -> float:
    import keras

    lab_model = build_feature_model(spec, size, None, input_dtype="float32")
    lab_model.predict(x[:LAB_BATCH].astype(np.float32), verbose=0)
    t = time.perf_counter()
    for s in range(0, n, LAB_BATCH):
        raw = np.stack([np.asarray(split.load(i).resize((32, 32))) for i in range(s, min(n, s + LAB_BATCH))])
        batch = keras.ops.image.resize(raw.astype(np.float32), (size, size), interpolation="bilinear")
        lab_model.predict(batch, verbose=0)
    return n / (time.perf_counter() - t)


def tables(r: dict) -> str:
    rows = [("bottleneck pipeline (files -> cache)", "pipeline"), ("model ceiling (preloaded, as the pipeline runs it)",
                                                                  "ceiling"),
            ("model ceiling, predict_on_batch one batch at a time", "ceiling_predict_on_batch"),
            ("pipeline, --resize device(-mixed)", "pipeline_device_resize"),
            ("ceiling, --resize device(-mixed) (the model resizes)", "ceiling_device_resize"),
            ("ceiling with XLA (jit_compile)", "ceiling_xla"), ("ceiling, mixed_bfloat16", "ceiling_bf16"),
            ("feed alone, one core (decode + resize)", "feed_per_core"),
            ("feed alone, one core, --resize device(-mixed) (decode)", "feed_per_core_device_resize"),
            ("lab loop (batch 16, resize per batch, model.predict)", "lab_loop")]
    out = [f"{r['base']} at {r['image_size']}px, {r['images']} images of {r['dataset']}"
           + (f" (files repeated x{r['files_repeated']})" if r["files_repeated"] > 1 else "")
           + f", batch {r['batch_size']}, keras backend {r['backend']}, {r['machine']}", "",
           "| path | images/s |", "|---|---|"]
    out += [f"| {label} | {r[key]:.1f} |" for label, key in rows if key in r]
    out += ["", f"pipeline / ceiling: {r['ratio']:.3f} (median of rounds: {r['ratios']})"
            + (f"; with --resize {r['device_resize']}: {r['ratio_device_resize']:.3f} ({r['ratios_device_resize']})"
               if "ratio_device_resize" in r else ""),
            f"where time went (s): {r['stages']}",
            f"model: {r['model_gflop_per_image']:.2f} GFLOP/image, {r['model_gflop_per_s_at_ceiling']:.0f} GFLOP/s at "
            f"its ceiling; this machine's float32 matmul through the backend: {r['matmul_gflop_per_s_float32']:.0f} "
            "GFLOP/s"]
    for key in ("device_resize_max_feature_difference", "xla_max_feature_difference", "bf16_max_feature_difference"):
        if key in r:
            out.append(f"{key}: {r[key]:.3g}")
    return "\n".join(out)


if __name__ == "__main__":
    main()
