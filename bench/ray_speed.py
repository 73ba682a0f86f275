"""The Ray engine against the local one, in one run: images/s, and what starting Ray costs.

For one base over ``--images`` CIFAR-10 training files (drawn evenly over classes), each engine
makes the same cache file from nothing, in a fresh folder:

- local        this process: the feed's threads decode and resize, this process runs the model;
- ray x N      a local Ray instance started for the run (``--engine ray --workers N``): N actors,
               each building the model once and computing whole chunks (decode, resize, model);
- ceiling      the model's ``predict_on_batch`` alone on preloaded, resized tensors.

Per engine: the seconds end to end, images/s end to end, the start-up seconds (for Ray:
starting the instance and its actors, and building the model in them; for local: building the
model) and images/s after start-up. The features of every engine are compared with the local
ones (the largest difference; 0 means bit for bit).

    .venv/bin/python bench/ray_speed.py --images 2000 --data-dir ../shared/datasets
    .venv/bin/python bench/ray_speed.py --images 2000 --data-dir ../shared/datasets --json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bottleneck.extraction import ray_engine as cluster
from bottleneck.extraction.model import clear_models, model_of
from bottleneck.extraction.plan import RunOptions
from bottleneck.extraction.plan import plan as make_plan
from bottleneck.extraction.run import run as run_plan

_HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(_HERE))
from extract_speed import _ceiling, _dataset  # noqa: E402  (the same draw and ceiling as extract_speed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="efficientnet_lite0")
    p.add_argument("--weights", default="random")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default=str(_HERE.parent / "data"))
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--ray-workers", default="1,2", help="actor counts to run, comma-separated")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a = p.parse_args()
    r = measure(a)
    print(json.dumps(r, indent=1) if a.json else table(r))


def _run(ds, a, cache: str, engine: str, workers: int | None) -> dict:
    clear_models()  # every engine builds its model from nothing
    options = RunOptions(a.batch_size, progress=False, workers=workers, engine=engine)
    plan = make_plan(a.base, ds, "train", None, cache_dir=cache, weights=a.weights)
    t = time.perf_counter()
    fs = run_plan(plan, options)  # a local Ray instance is started and stopped inside
    seconds = time.perf_counter() - t
    stages = json.loads(fs.info["stages"])
    startup = stages["start"] + stages["build"]
    return {"engine": engine if engine == "local" else f"ray x {workers}", "seconds": round(seconds, 2),
            "images_per_second": round(len(fs) / seconds, 1), "startup_seconds": round(startup, 2),
            "after_startup_images_per_second": round(len(fs) / max(1e-9, seconds - startup), 1),
            "stages": stages, "features": fs.features}


def driver_costs(ds, a, cache: str) -> dict:
    """ms per image the driver spends on its share under Ray: reading the files it ships, and
    committing the returned features (``PartialRun.write_chunk``, fsync included)."""
    from bottleneck.cache.store import PartialRun

    p = make_plan(a.base, ds, "train", None, cache_dir=cache, weights=a.weights)
    work = [(i, view, d) for (i, view), d in zip(p.rows, p.digests)]
    n = len(work) - len(work) % a.batch_size
    t = time.perf_counter()
    for s in range(0, n, a.batch_size):
        cluster.ship(p.samples, work[s:s + a.batch_size])
    read = time.perf_counter() - t
    partial = PartialRun(p.path, {"settings": p.settings, "batch_size": a.batch_size, "n": len(work)})
    partial.open()
    features = np.zeros((a.batch_size, p.spec.feature_dim), np.float32)
    t = time.perf_counter()
    for k in range(n // a.batch_size):
        partial.write_chunk(k, {"features": features}, np.ones(a.batch_size, bool))
    commit = time.perf_counter() - t
    return {"read_ms_per_image": round(1000 * read / n, 4), "commit_ms_per_image": round(1000 * commit / n, 4)}


def measure(a) -> dict:
    ds, repeats = _dataset(a)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        runs.append(_run(ds, a, os.path.join(tmp, "local"), "local", None))
        for n in [int(v) for v in a.ray_workers.split(",")]:
            t = time.perf_counter()
            with cluster.session():
                cluster.connect(None)
                ray_start = time.perf_counter() - t
            runs.append({**_run(ds, a, os.path.join(tmp, f"ray{n}"), "ray", n),
                         "ray_init_seconds": round(ray_start, 2)})
        plan = make_plan(a.base, ds, "train", None, cache_dir=tmp, weights=a.weights)
        split = ds.split("train")
        x = np.stack([plan.recipe.pixels(split, i, d) for i, d in zip(range(len(split)), plan.digests)])
        ceiling = _ceiling(model_of(plan.order), x, a.batch_size)  # as the pipeline feeds it
        driver = driver_costs(ds, a, os.path.join(tmp, "driver"))
    local = runs[0]["features"]
    for r in runs:
        r["max_feature_difference"] = float(np.abs(r.pop("features") - local).max())
    return {"machine": f"{platform.node() or 'vm'}: {os.cpu_count()} cores, {platform.machine()}",
            "base": a.base, "dataset": a.dataset, "images": a.images, "files_repeated": repeats,
            "batch_size": a.batch_size, "ceiling": round(ceiling, 1), "driver": driver, "runs": runs}


def table(r: dict) -> str:
    lines = [f"{r['base']}, {r['images']} {r['dataset']} images, batch {r['batch_size']}, {r['machine']}; "
             f"model ceiling {r['ceiling']} images/s", "",
             "| engine | seconds | images/s | start-up s | images/s after start-up | / ceiling | max feature diff |",
             "|---|---|---|---|---|---|---|"]
    for x in r["runs"]:
        lines.append(f"| {x['engine']} | {x['seconds']} | {x['images_per_second']} | {x['startup_seconds']} | "
                     f"{x['after_startup_images_per_second']} | "
                     f"{x['after_startup_images_per_second'] / r['ceiling']:.3f} | {x['max_feature_difference']:g} |")
    inits = [f"{x['engine']}: {x['ray_init_seconds']} s" for x in r["runs"] if "ray_init_seconds" in x]
    lines.append("")
    lines.append("starting a local Ray instance alone (ray.init, then shut down): " + ", ".join(inits))
    d = r["driver"]
    lines.append(f"the driver's own share under Ray: reading files {d['read_ms_per_image']} ms/image, "
                 f"committing features {d['commit_ms_per_image']} ms/image")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
