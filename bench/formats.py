"""The README's main model in every export format: file size, the largest difference from the
pipeline's predictions, accuracy on the embedded CIFAR-10 test images through ``predict``,
single-image latency and batch throughput on this CPU.

    python bench/formats.py [--out FOLDER] [--cache-dir features] [--repeats 50]

The model is ``bottleneck export --base efficientnet_lite0 --dataset cifar10 --per-class 100
--seed 0`` (logreg head; the features come from the cache that ``./run.sh`` fills). The
pipeline's predictions are the head's on the cached test features; each format's are its own
on the same 500 test images, decoded and resized as extraction does. Latency: the median of
``--repeats`` single-image calls after a warm-up; throughput: batches of 32 (``predict``'s
default), the model alone, then ``predict`` end to end (decoding included).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))

EXPORTS = (("keras", "model.keras", None), ("saved_model", "saved_model", None), ("onnx", "model.onnx", None),
           ("litert", "model.tflite", None), ("litert int8", "model_int8.tflite", "int8"))


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("formats_bench"))
    p.add_argument("--cache-dir", default=str(HERE / "features"))
    p.add_argument("--repeats", type=int, default=50)
    a = p.parse_args()

    from bottleneck.data.datasets import load_dataset
    from bottleneck.data.images import resize
    from bottleneck.deploy.export import export
    from bottleneck.deploy.formats import load_model
    from bottleneck.deploy.predict import predict

    data = HERE / "data"
    a.out.mkdir(parents=True, exist_ok=True)
    split = load_dataset("cifar10", data).split("test")
    where = {sid: i for i, sid in enumerate(split.ids)}
    rows, pixels, pipeline = [], None, None
    for name, file, quantize in EXPORTS:
        path = a.out / file
        t = time.perf_counter()
        meta = export("efficientnet_lite0", "cifar10", 100, 0, "logreg", out=path, quantize=quantize, data_dir=data,
                      cache_dir=a.cache_dir, progress=False, overwrite=True)
        export_s = time.perf_counter() - t
        if pixels is None:
            fitted = meta["fitted"]
            size = meta["input"]["size"]
            pixels = np.stack([resize(split.load(where[sid], size), size) for sid in fitted.test.source_ids])
            pipeline = fitted.model.predict_proba(fitted.test.features)
        model = load_model(path)
        outputs = np.concatenate([model.run(pixels[k:k + 32]) for k in range(0, len(pixels), 32)])
        # throughput of the model alone, batches of 32
        t = time.perf_counter()
        for k in range(0, len(pixels), 32):
            model.run(pixels[k:k + 32])
        model_ips = len(pixels) / (time.perf_counter() - t)
        one = pixels[:1]
        for _ in range(5):
            model.run(one)
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            model.run(one)
            times.append(time.perf_counter() - t)
        t = time.perf_counter()
        predicted = list(predict(model, [data / "cifar10" / "test"]))
        predict_ips = len(predicted) / (time.perf_counter() - t)
        accuracy = np.mean([r["prediction"] == Path(r["path"]).parent.name for r in predicted])
        rows.append({"format": name, "MB": size_of(path) / 1e6, "diff": float(np.abs(outputs - pipeline).max()),
                     "agree": float(np.mean(outputs.argmax(1) == pipeline.argmax(1))), "accuracy": accuracy,
                     "table": meta["score"], "latency_ms": 1000 * statistics.median(times),
                     "model_ips": model_ips, "predict_ips": predict_ips, "export_s": export_s})
        print(rows[-1], flush=True)

    print(f"\nmachine: {os.cpu_count()} CPU cores; efficientnet_lite0 + logreg, {size} x {size} input, 500 test images\n")
    print("| format | size MB | largest difference from the pipeline | same class as the pipeline | accuracy "
          "(predict) | 1-image latency ms | images/s, model (batch 32) | images/s, predict | export s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['format']} | {r['MB']:.1f} | {r['diff']:.1e} | {r['agree']:.3f} | {r['accuracy']:.3f} | "
              f"{r['latency_ms']:.1f} | {r['model_ips']:.0f} | {r['predict_ips']:.0f} | {r['export_s']:.0f} |")


if __name__ == "__main__":
    main()
