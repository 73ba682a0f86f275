"""What finishing a cache file costs once the model is done: assembled at the end from the chunk
files (how extraction worked before) against appended chunk by chunk as they come (now).

Writes ``--rows`` x ``--dim`` float32 features (random numbers; the cost does not depend on the
values) as chunks of ``--batch`` rows through ``store.PartialRun``, times the writer's share during
the run (each chunk kept, and now also appended: the writer thread's time, off the model's path)
and the finish (labels, ids, record, sync, rename, and the features returned: kept in memory as
they were appended, read back from the file when it was assembled at the end),
alternating the two ways ``--rounds`` times:

    .venv/bin/python bench/finish_cost.py --rows 32768 --dim 1280     # 168 MB: a JAX H200 run of 2.7 s
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import keras  # noqa: F401  (imported by any real run before its file is finished: not timed here)
import numpy as np

from bottleneck.cache import store


def one(way: str, chunks: list[np.ndarray], ids: list[str], folder: Path) -> tuple[float, float]:
    n = len(ids)
    run = store.PartialRun(folder / "f.h5", {"bench": way}, rows=n)
    run.open()
    keep = run.add if way == "incremental" else run.write_chunk  # write_chunk alone: all assembled at the end
    valid = np.ones(len(chunks[0]), bool)
    t = time.perf_counter()
    for k, block in enumerate(chunks):
        keep(k, {"features": block}, valid)
    writer = time.perf_counter() - t
    t = time.perf_counter()
    run.finish(len(chunks), {"bench": way}, ids, np.zeros(n, int), ids, ["c"], ids, {})
    fs = store.read_features(folder / "f.h5", load=False)  # as extraction.run returns the file it wrote
    fs.features = run.features  # (kept in memory either way: the chunks appended at the end are too)
    finish = time.perf_counter() - t
    assert store.verify(folder / "f.h5")
    return writer, finish


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=32768)
    p.add_argument("--dim", type=int, default=1280)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    store._versions()  # (the first call imports what the record names)
    rng = np.random.default_rng(0)
    chunks = [rng.standard_normal((a.batch, a.dim), dtype=np.float32) for _ in range(a.rows // a.batch)]
    ids = [f"image{i}" for i in range(len(chunks) * a.batch)]
    times: dict[str, list] = {"at the end": [], "incremental": []}
    for _ in range(a.rounds):
        for way in times:
            folder = Path(tempfile.mkdtemp(prefix="finish_cost_"))
            try:
                times[way].append(one(way, chunks, ids, folder))
            finally:
                shutil.rmtree(folder, ignore_errors=True)
    print(f"{len(ids)} x {a.dim} float32 ({len(ids) * a.dim * 4 / 1e6:.0f} MB), chunks of {a.batch}, "
          f"{a.rounds} rounds (median s)")
    print("| file assembled | writer thread during the run | finish |\n|---|---|---|")
    for way, rows in times.items():
        w, f = np.median(np.array(rows), axis=0)
        print(f"| {way} | {w:.2f} | {f:.2f} |")


if __name__ == "__main__":
    main()
