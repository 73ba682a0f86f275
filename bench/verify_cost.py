"""What verifying a cache file on every open costs: 10,000 x 1,280 features (the size of
efficientnet_lite0 on CIFAR-10's test split), read with and without the checksum.

    .venv/bin/python bench/verify_cost.py [--rows 10000] [--dim 1280]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from bottleneck.cache import store


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()

    rng = np.random.default_rng(0)
    n = a.rows
    fs = store.FeatureSet(rng.standard_normal((n, a.dim)).astype(np.float32), rng.integers(0, 10, n),
                          [f"test/class/{i:05d}.jpg" for i in range(n)], [f"test/class/{i:05d}.jpg" for i in range(n)],
                          [f"class{i}" for i in range(10)], {}, Path(), {}, [f"{i:032x}" for i in range(n)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "features.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("features", data=fs.features, chunks=(256, a.dim))
            f.create_dataset("labels", data=fs.labels)
            for key in ("source_ids", "groups", "class_names", "digests"):
                f.create_dataset(key, data=np.array(getattr(fs, key), dtype=object), dtype=h5py.string_dtype())
            f.attrs.update({"format": store.FORMAT, "format_version": store.FORMAT_VERSION, "settings": "{}",
                            "complete": True, "n_samples": n, "checksum": store.checksum(fs)})

        def best(fn) -> float:
            times = []
            for _ in range(a.repeat):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
            return min(times)

        verified = best(lambda: store.read_features(path))
        with h5py.File(path, "r") as f:
            raw = best(lambda: f["features"][()])
        hashing = best(lambda: store.checksum(fs))
    mb = fs.features.nbytes / 1e6
    print(f"{n} x {a.dim} float32 features ({mb:.0f} MB), best of {a.repeat}:")
    print(f"  read_features (open, read everything, verify the SHA-256): {verified * 1000:.0f} ms")
    print(f"  of which the SHA-256 over all datasets:                      {hashing * 1000:.0f} ms "
          f"({mb / hashing:.0f} MB/s)")
    print(f"  reading the feature array alone:                             {raw * 1000:.0f} ms")


if __name__ == "__main__":
    main()
