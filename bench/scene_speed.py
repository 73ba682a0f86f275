"""Scene extraction speed (detection, segmentation): the pipeline as a ratio to the model's
own ceiling, in one run, on large photos (GTSDB's 1360x800 JPEGs by default).

- pipeline     ``bottleneck`` from the scene files to a finished feature-map cache file (model
               built beforehand): the feed (read, decode the whole JPEG, letterbox) in workers,
               the pyramid model, the writer (float16 maps, one HDF5 chunk per scene and level);
- ceiling      the same pyramid model alone on preloaded letterboxed canvases, batch by batch;
- feed_per_core  the feed alone, one worker, no model: scenes/s one core decodes and letterboxes;
               split into decode and letterbox;
- stages       where the pipeline's time went (``extract_stages`` of the run).

    .venv/bin/python bench/scene_speed.py --data-dir ../shared/datasets --scenes 64
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from bottleneck.bases.build import build_pyramid_model
from bottleneck.data.datasets import load_dataset
from bottleneck.data.labelmaps import letterbox
from bottleneck.extraction.maps import plan_maps
from bottleneck.extraction.plan import RunOptions
from bottleneck.extraction.run import run, stages_of


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="efficientnet_lite0")
    p.add_argument("--weights", default="random", help="random is fine for speed")
    p.add_argument("--dataset", default="gtsdb")
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--scenes", type=int, default=64)
    p.add_argument("--image-size", type=int, help="the long side (default: the scenes' own)")
    p.add_argument("--batch-size", type=int, default=32, help="at most; large canvases make smaller batches")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    r = measure(a)
    if a.json:
        print(json.dumps(r, indent=1))
        return
    print(f"{r['base']} on {r['scenes']} {r['dataset']} scenes, long side {r['long_side']}, canvas "
          f"{r['canvas'][0]}x{r['canvas'][1]}, batch {r['batch_size']}, {r['cores']} cores ({r['machine']})")
    print("| measure | scenes/s | vs ceiling |\n|---|---|---|")
    for k in ("pipeline", "ceiling", "feed_per_core", "decode_per_core", "letterbox_per_core"):
        print(f"| {k} | {r[k]:.2f} | {r[k] / r['ceiling']:.2f} |")
    print("stages (s):", json.dumps(r["stages"]))


def measure(a) -> dict:
    ds = load_dataset(a.dataset, a.data_dir)
    split = ds.split("train")
    only = np.arange(min(a.scenes, len(split)))
    with tempfile.TemporaryDirectory() as cache:
        p = plan_maps(a.base, ds, "train", None, 0, image_size=a.image_size, cache_dir=cache, weights=a.weights,
                      only=only)
        model = build_pyramid_model(p.spec, p.recipe.canvas, p.weights_path, p.recipe.levels)  # built beforehand
        batch = min(a.batch_size, p.recipe.max_batch)  # as the pipeline batches them
        canvases = np.stack([letterbox(split.load(int(i)), p.recipe.long_side, p.recipe.canvas) for i in only])
        model.predict_on_batch(canvases[:batch])  # compiled before any timing
        t = time.perf_counter()
        for start in range(0, len(canvases), batch):
            model.predict_on_batch(canvases[start:start + batch])
        ceiling = len(canvases) / (time.perf_counter() - t)
        t = time.perf_counter()
        fs = run(p, RunOptions(batch_size=a.batch_size, progress=False))
        pipeline = len(only) / (time.perf_counter() - t)
        stages = stages_of([fs]) or {}
    decode = letterbox_s = 0.0
    for i in only:
        t0 = time.thread_time()
        image = split.load(int(i))
        t1 = time.thread_time()
        letterbox(image, p.recipe.long_side, p.recipe.canvas)
        decode += t1 - t0
        letterbox_s += time.thread_time() - t1
    n = len(only)
    return {"base": a.base, "dataset": a.dataset, "scenes": n, "long_side": p.recipe.long_side,
            "canvas": list(p.recipe.canvas), "batch_size": batch, "cores": os.cpu_count(),
            "machine": platform.processor() or platform.machine(), "pipeline": pipeline, "ceiling": ceiling,
            "feed_per_core": n / (decode + letterbox_s), "decode_per_core": n / decode,
            "letterbox_per_core": n / letterbox_s, "stages": stages}


if __name__ == "__main__":
    main()
