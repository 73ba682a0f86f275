"""Extraction speed: the project's pipeline against the plain loops, and head training time.

Prints images/s for one base at its native size (random weights are fine for speed):

1. pipeline  - ``bottleneck.extract`` from image files: threaded decode + resize, batched
               ``predict_on_batch``, chunks written to the cache (end to end, model already built);
2. ceiling   - the same model's ``predict_on_batch`` alone on preloaded, pre-resized tensors;
3. lab loop  - the classic lab's way: batches of 16, decode, resize each batch, ``model.predict``.

Then the seconds to train each head on the features the pipeline cached.

    .venv/bin/python bench/extract_speed.py --base efficientnet_lite0 --images 512
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import bottleneck
from bottleneck import extraction
from bottleneck.bases import build_feature_model, get_base
from bottleneck.datasets import load_dataset
from bottleneck.heads import make_head
from bottleneck.images import resize
from bottleneck.sampling import per_class_draw


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="efficientnet_lite0")
    p.add_argument("--weights", default="random")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[1] / "data"))
    p.add_argument("--images", type=int, default=512, help="images to run (drawn evenly over classes)")
    p.add_argument("--batch-size", type=int, default=32)
    a = p.parse_args()

    spec = get_base(a.base)
    size = spec.native_size
    ds = load_dataset(a.dataset, a.data_dir)
    split = ds.split("train")
    per_class = max(1, a.images // len(ds.class_names))
    idx, _ = per_class_draw(split.labels, per_class, seed=0)
    n = len(idx)
    print(f"{a.base} at {size}px, {n} images of {ds.name} ({ds.root}), keras backend "
          f"{__import__('keras').backend.backend()}")

    # 1. the pipeline, with its model built and warmed up beforehand
    with tempfile.TemporaryDirectory() as warm, tempfile.TemporaryDirectory() as cache:
        bottleneck.extract(a.base, ds, "train", 1, seed=99, cache_dir=warm, weights=a.weights,
                           batch_size=a.batch_size, progress=False)
        t = time.perf_counter()
        fs = bottleneck.extract(a.base, ds, "train", per_class, seed=0, cache_dir=cache, weights=a.weights,
                                batch_size=a.batch_size, progress=False)
        pipeline = n / (time.perf_counter() - t)
        features, labels = fs.features, fs.labels
    model = next(reversed(extraction._MODELS.values()))

    # 2. the ceiling: predict alone on tensors already decoded and resized
    x = np.stack([resize(split.load(int(i)), size) for i in idx])  # uint8, as the pipeline feeds it
    full = n - n % a.batch_size  # whole batches only: one input shape, as the pipeline pads to
    model.predict_on_batch(x[: a.batch_size])
    t = time.perf_counter()
    for s in range(0, full, a.batch_size):
        model.predict_on_batch(x[s:s + a.batch_size])
    ceiling = full / (time.perf_counter() - t)

    # 3. the lab's loop: batches of 16, decode, resize per batch, model.predict
    import keras

    lab_model = build_feature_model(spec, size, None, input_dtype="float32")
    lab_model.predict(x[:16].astype(np.float32), verbose=0)
    t = time.perf_counter()
    for s in range(0, n, 16):
        raw = np.stack([np.asarray(split.load(int(i)).resize((32, 32))) for i in idx[s:s + 16]]).astype(np.float32)
        batch = keras.ops.image.resize(raw, (size, size), interpolation="bilinear")
        lab_model.predict(batch, verbose=0)
    lab = n / (time.perf_counter() - t)

    print("\n| path | images/s |\n|---|---|")
    print(f"| bottleneck pipeline (files -> cache) | {pipeline:.1f} |")
    print(f"| predict_on_batch on preloaded tensors (ceiling) | {ceiling:.1f} |")
    print(f"| lab loop (batch 16, resize per batch, model.predict) | {lab:.1f} |")

    print(f"\n| head | seconds to train on {len(labels)} cached feature rows |\n|---|---|")
    for name in ("logreg", "dense", "mlp"):
        t = time.perf_counter()
        make_head(name, seed=0).fit(features, labels)
        print(f"| {name} | {time.perf_counter() - t:.2f} |")


if __name__ == "__main__":
    main()
