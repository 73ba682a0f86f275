"""Issue 25's list of defects, each tried as a command against a source tree: before the fix
(an older checkout) and after it, so each is shown reproduced, then fixed.

    python bench/attacks.py [--tree PATH] [--only NAME,...]

``--tree`` is the checkout whose ``bottleneck`` runs (default: this one); the Python running this
script is used for it. Each attack prints one line: its name, what happened (exit status, or
"HANG" when it ran past its time, or "KILLED at 4 GB" when it grew past that), the peak resident
memory of the command, and the verdict ("DEFECT: ..." or "ok: ..."). The commands run in a
scratch folder, with ``BOTTLENECK_HOME`` inside it.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # (this checkout's package makes the crafted files' checksums)
WATCH_LIMIT = 4 << 30  # a command whose resident memory passes this is killed (the machine has 24 GB)
TIMEOUT = 60


def run(tree: Path, work: Path, *args, env=None, timeout=TIMEOUT, python=None):
    """Run ``args`` (a ``bottleneck`` command, or ``-c CODE``) in ``tree``; returns
    (status, stdout, stderr, peak RSS in MB)."""
    cmd = [sys.executable, *(args if args[0] == "-c" else ("-m", "bottleneck", *args))]
    full_env = {**os.environ, "PYTHONPATH": str(tree), "BOTTLENECK_HOME": str(work / "home"),
                "BOTTLENECK_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    full_env.pop("BOTTLENECK_TEST_FAULTS", None)
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, cwd=work, env=full_env, stdout=out, stderr=err)
    state = {"status": None, "peak": 0}

    def watch():
        # The peak is read from /proc (VmHWM, the command's own high-water mark), not from wait4's
        # ru_maxrss: exec carries the parent's high-water mark into the child's, so a large set-up here
        # would show in every command's figure.
        start = time.monotonic()
        while p.poll() is None:
            try:
                status = {line.split(":")[0]: int(line.split()[1]) for line in open(f"/proc/{p.pid}/status")
                          if line.startswith(("VmRSS", "VmHWM"))}
            except (OSError, StopIteration, ValueError, IndexError):
                status = {}
            rss = status.get("VmRSS", 0)
            state["peak"] = max(state["peak"], status.get("VmHWM", 0))
            if rss * 1024 > WATCH_LIMIT:
                state["status"] = "KILLED at 4 GB"
                p.kill()
            elif time.monotonic() - start > timeout:
                state["status"] = "HANG"
                p.kill()
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    watcher.join()
    p.wait()
    out.seek(0), err.seek(0)
    return (state["status"] or f"exit {p.returncode}", out.read().decode(errors="replace"),
            err.read().decode(errors="replace"), state["peak"] // 1024)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def image(path: Path) -> Path:
    src = sorted((HERE / "data" / "cifar10" / "test" / "cat").iterdir())[0]
    shutil.copy(src, path)
    return path


def results(root: Path, key: str = "0123456789ab", names=("cat", "dog"), row=None, npz_at=None) -> Path:
    (root / "rows").mkdir(parents=True)
    r = {"base": "tiny_cnn", "dataset": "cifar10", "head": "logreg", "seed": 0, "per_class": 10, "target": "class",
         "task": "single_label", "metric": "accuracy", "score": 0.5, "accuracy": 0.5, "metrics": {"accuracy": 0.5},
         "finished": "2026-12-06T00:00:00+00:00", "run_key": key}
    r.update(row or {})
    (root / "rows" / f"{key}.json").write_text(json.dumps(r))
    np.savez(npz_at or root / "rows" / f"{key}.npz", y_true=np.array([0, 1]), y_pred=np.array([0, 0]),
             outputs=np.zeros((2, 2), np.float32), names=np.array(names), source_ids=np.array(["a", "b"]),
             thumbs=np.zeros((1, 8, 8, 3), np.uint8), thumb_rows=np.array([0]), history=json.dumps({}))
    return root


def crafted_h5(path: Path, rows: int, labels_from: Path | None = None, labels: int | None = None) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        n = rows
        f.create_dataset("features", shape=(n, 64), maxshape=(None, 64), chunks=(256, 64), dtype="f4")
        f.create_dataset("labels", shape=(n,), maxshape=(None,), chunks=(4096,), dtype="i8")
        for k in ("source_ids", "groups", "digests"):
            f.create_dataset(k, shape=(n,), maxshape=(None,), chunks=(4096,), dtype="S8")
        if rows <= 1000:
            for k in ("features", "labels", "source_ids", "groups", "digests"):
                f[k][...] = (np.arange(np.prod(f[k].shape)).reshape(f[k].shape) % 2).astype(f[k].dtype)
            if labels is not None:
                f["labels"][...] = labels
        f["class_names"] = np.array([b"a", b"b"])
        settings = {"base": "tiny_cnn", "dataset": "d", "split": "train", "per_class": None, "weights": "random",
                    "layer": "x", "pooling": "avg", "image_size": 32}
        f.attrs.update(format="bottleneck-features", format_version=2, complete=True, n_samples=rows,
                       settings=json.dumps(settings), checksum="x", arrays='["features"]')
        if labels_from is not None:
            del f["labels"]
            layout = h5py.VirtualLayout(shape=(rows,), dtype="i8")
            layout[:] = h5py.VirtualSource(str(labels_from), "labels", shape=(rows,))
            f.create_virtual_dataset("labels", layout)
    if labels_from is None and rows <= 1000:  # a true checksum, so that only what is tested differs
        from bottleneck.cache.store import checksum, read_features

        fs = read_features(path, verify=False)
        with h5py.File(path, "a") as f:
            f.attrs["checksum"] = checksum(fs)
    return path


def with_meta(model: Path, dest: Path, **changes) -> Path:
    with zipfile.ZipFile(model) as z, zipfile.ZipFile(dest, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            if info.filename == "bottleneck.json":
                data = json.dumps({**json.loads(data), **changes}).encode()
            out.writestr(info, data)
    return dest


def attacks(tree: Path, work: Path, model: Path):
    """(name, what is tried, a function that runs it and returns (outcome, peak MB, verdict))."""
    def bn(*args, **kw):
        return run(tree, work, *args, **kw)

    def said(status, out, err):
        lines = err.strip().splitlines() or [""]
        shown = next((line for line in lines if line.startswith(("error:", "note:"))), lines[-1])
        return "Traceback" in err, shown[:150]

    def report_run_key():
        r = results(work / "R1", row={"run_key": "../../pwn1"}, npz_at=work / "pwn1.npz")
        status, out, err, mb = bn("report", str(r))
        leaked = (work / "pwn1").exists()
        return status, mb, ("DEFECT: wrote outside R: " + str(sorted(os.listdir(work / "pwn1")))) if leaked else \
            f"ok: nothing outside R ({said(status, out, err)[1] or 'report written'})"

    def report_symlink():
        r = results(work / "R2")
        (work / "elsewhere").mkdir()
        (r / "plots").mkdir()
        (r / "plots" / "0123456789ab").symlink_to(work / "elsewhere")
        status, out, err, mb = bn("report", str(r))
        wrote = os.listdir(work / "elsewhere")
        return status, mb, f"DEFECT: written through the link: {wrote}" if wrote else \
            f"ok: {said(status, out, err)[1]}"

    def export_planted_tmp():
        victim = work / "victim.txt"
        victim.write_text("keep me")
        (work / "out").mkdir()
        for name in (".model.keras.tmp.keras",):
            (work / "out" / name).symlink_to(victim)
        status, out, err, mb = bn("export", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                                  f"folder:{HERE / 'data' / 'cifar10'}", "--per-class", "5", "--out",
                                  str(work / "out" / "model.keras"), "--quiet", timeout=300)
        return status, mb, "DEFECT: the victim was overwritten" if victim.read_bytes() != b"keep me" else \
            "ok: the victim is untouched"

    def export_twice_at_once():
        out = work / "both.keras"
        args = ["export", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                f"folder:{HERE / 'data' / 'cifar10'}", "--per-class", "5", "--out", str(out), "--quiet"]
        done: list = []
        threads = [threading.Thread(target=lambda: done.append(bn(*args, timeout=300))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        check = run(tree, work, "-c", f"import keras; keras.saving.load_model({str(out)!r}); print('loads')")
        statuses = " and ".join(d[0] for d in done)
        loads = "loads" in check[1]
        return statuses, max(d[3] for d in done), ("ok: the model loads" if loads else
                                                   f"DEFECT: the model does not load ({check[2].strip().splitlines()[-1][:100]})")

    def export_existing():
        existing = work / "existing.keras"
        existing.write_text("an earlier model")
        status, out, err, mb = bn("export", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                                  f"folder:{HERE / 'data' / 'cifar10'}", "--per-class", "5", "--out", str(existing),
                                  "--quiet", timeout=300)
        return status, mb, "DEFECT: replaced silently" if existing.read_bytes() != b"an earlier model" else \
            f"ok: {said(status, out, err)[1]}"

    def export_h5():
        status, out, err, mb = bn("export", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                                  f"folder:{HERE / 'data' / 'cifar10'}", "--per-class", "5", "--out",
                                  str(work / "m.h5"), "--quiet", timeout=300)
        return status, mb, "DEFECT: wrote a .keras zip named .h5" if (work / "m.h5").exists() else \
            f"ok: {said(status, out, err)[1]}"

    def predict_csv_model():
        m = work / "m.keras"
        shutil.copy(model, m)
        before = m.read_bytes()
        status, out, err, mb = bn("predict", str(m), str(image(work / "a.jpg")), "--csv", str(m))
        return status, mb, "DEFECT: the model was overwritten" if m.read_bytes() != before else \
            f"ok: {said(status, out, err)[1]}"

    def predict_fifo():
        (work / "imgs").mkdir()
        image(work / "imgs" / "a.jpg")
        fifo(work / "imgs" / "b.jpg")
        status, out, err, mb = bn("predict", str(model), str(work / "imgs"), "--skip-bad-images", timeout=30)
        return status, mb, "DEFECT: hangs" if status == "HANG" else f"ok: {err.strip().splitlines()[-1][:120]}"

    def label_map_fifo():
        path = fifo(work / "map.png")
        code = f"from bottleneck.data.labelmaps import read_label_map; read_label_map(__import__('pathlib').Path({str(path)!r}), None, 3, 255)"
        status, out, err, mb = run(tree, work, "-c", code, timeout=20)
        return status, mb, "DEFECT: hangs" if status == "HANG" else f"ok: {said(status, out, err)[1]}"

    def row_fifo():
        r = results(work / "R3")
        fifo(r / "rows" / "aaaaaaaaaaaa.json")
        status, out, err, mb = bn("report", str(r), timeout=30)
        return status, mb, "DEFECT: hangs" if status == "HANG" else f"ok: {said(status, out, err)[1]}"

    def h5_link_fifo():
        import h5py

        path = crafted_h5(work / "link.h5", 10)
        with h5py.File(path, "a") as f:
            del f["labels"]
            f["labels"] = h5py.ExternalLink(str(fifo(work / "pipe.h5")), "/labels")
        status, out, err, mb = bn("info", str(path), timeout=30)
        return status, mb, "DEFECT: hangs" if status == "HANG" else f"ok: {said(status, out, err)[1]}"

    def h5_rows(rows, *cmd):
        def attack():
            path = crafted_h5(work / f"rows{rows}.h5", rows)
            args = [a.replace("F", str(path)) for a in cmd]
            status, out, err, mb = bn(*args, timeout=120)
            tb, last = said(status, out, err)
            bad = mb > 1024 or status.startswith("KILLED") or tb
            return status, mb, (f"DEFECT: {mb} MB, {last}" if bad else f"ok: {mb} MB, {last}")
        return attack

    def meta_inflating():
        big = work / "inflating.keras"
        with zipfile.ZipFile(model) as z, zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as out:
            for info in z.infolist():
                data = z.read(info)
                if info.filename == "bottleneck.json":
                    data = data[:-1] + b"," + b'"pad": "' + b" " * 1_450_000_000 + b'"}'
                out.writestr(info.filename, data)
        status, out, err, mb = bn("predict", str(big), str(image(work / "b.jpg")), timeout=180)
        tb, last = said(status, out, err)
        return status, mb, (f"DEFECT: {mb} MB, {last}" if mb > 1024 or tb else f"ok: {mb} MB, {last}")

    def meta_input_size():
        m = with_meta(model, work / "big-input.keras", input={"size": 10**6, "dtype": "uint8"})
        status, out, err, mb = bn("predict", str(m), str(image(work / "c.jpg")), timeout=120)
        tb, last = said(status, out, err)
        return status, mb, (f"DEFECT: {mb} MB, {last}" if mb > 1024 or tb or status.startswith("KILLED")
                            else f"ok: {mb} MB, {last}")

    def npz_inflating():
        r = results(work / "R4")
        np.savez_compressed(r / "rows" / "0123456789ab.npz", y_true=np.zeros(300_000_000, np.int8),
                            y_pred=np.zeros(2, np.int64), names=np.array(["a", "b"]), thumbs=np.zeros((0, 8, 8, 3)),
                            thumb_rows=np.zeros(0, np.int64), history="{}")
        status, out, err, mb = bn("report", str(r), timeout=180)
        tb, last = said(status, out, err)
        return status, mb, (f"DEFECT: {mb} MB, {last}" if mb > 1024 or tb or status.startswith("KILLED")
                            else f"ok: {mb} MB, {last}")

    def predict_huge_file(kind):
        def attack():
            folder = work / f"huge-{kind}"
            folder.mkdir()
            image(folder / "a.jpg")
            if kind == "sparse":
                with open(folder / "big.jpg", "wb") as f:
                    f.truncate(8 << 30)
            else:
                (folder / "zero.jpg").symlink_to("/dev/zero")
            status, out, err, mb = bn("predict", str(model), str(folder), "--skip-bad-images", timeout=60)
            bad = status.startswith("KILLED") or status == "HANG" or "MemoryError" in err or mb > 1024
            return status, mb, (f"DEFECT: {mb} MB, {said(status, out, err)[1]}" if bad
                                else f"ok: {mb} MB, {err.strip().splitlines()[-1][:100]}")
        return attack

    def tar_bomb():
        archive = work / "bomb.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for c in ("a", "b"):
                info = tarfile.TarInfo(f"bomb/train/{c}/zeros.png")
                info.size = 950_000_000
                tar.addfile(info, _Zeros(info.size))
        status, out, err, mb = bn("extract", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                                  f"folder:{archive}", "--quiet", timeout=300)
        used = sum(p.stat().st_size for p in (work / "home").rglob("*") if p.is_file())
        return status, mb, (f"DEFECT: unpacked {used / 1e9:.1f} GB from a {archive.stat().st_size / 1e6:.1f} MB "
                            "archive" if used > 1e9 else f"ok: {used / 1e6:.0f} MB on disk; {said(status, out, err)[1]}")

    def predict_batch():
        status, out, err, mb = bn("predict", str(model), str(image(work / "d.jpg")), "--batch-size", "100000",
                                  timeout=120)
        return status, mb, f"DEFECT: {mb} MB" if mb > 1024 or status.startswith("KILLED") else f"ok: {mb} MB"

    def h5_virtual():
        import h5py

        other = crafted_h5(work / "other.h5", 100, labels=1)
        path = crafted_h5(work / "virtual.h5", 100, labels=1)  # its checksum covers these labels...
        with h5py.File(path, "a") as f:  # ...which are then read from the other file
            del f["labels"]
            layout = h5py.VirtualLayout(shape=(100,), dtype="i8")
            layout[:] = h5py.VirtualSource(str(other), "labels", shape=(100,))
            f.create_virtual_dataset("labels", layout)
        status, out, err, mb = bn("info", str(path), "--verify")
        return status, mb, ("DEFECT: --verify says ok for labels read from another file" if "checksum         ok"
                            in out else f"ok: {said(status, out, err)[1]}")

    def traceback_case(setup):
        def attack():
            args, env = setup()
            status, out, err, mb = bn(*args, env=env, timeout=120)
            tb, last = said(status, out, err)
            return status, mb, f"DEFECT: a traceback ({last})" if tb else f"ok: {last}"
        return attack

    def rows_list():
        r = results(work / "R5")
        (r / "rows" / "bbbbbbbbbbbb.json").write_text("[1, 2]")
        return ["report", str(r)], None

    def codes_300():
        root = work / "seg"
        for part in ("images/train", "labels/train"):
            (root / part).mkdir(parents=True)
        image(root / "images" / "train" / "a.jpg")
        from PIL import Image

        Image.new("L", (32, 32)).save(root / "labels" / "train" / "a.png")
        (root / "codes.txt").write_text("\n".join(f"c{i}" for i in range(300)))
        return ["extract", "--base", "tiny_cnn", "--weights", "random", "--dataset", f"segfolder:{root}",
                "--quiet"], None

    def meta_no_names():
        m = work / "nonames.keras"
        with zipfile.ZipFile(model) as z, zipfile.ZipFile(m, "w") as out:
            for info in z.infolist():
                data = z.read(info)
                if info.filename == "bottleneck.json":
                    meta = json.loads(data)
                    del meta["output_names"]
                    data = json.dumps(meta).encode()
                out.writestr(info, data)
        return ["predict", str(m), str(image(work / "e.jpg"))], None

    def keras_lambda():
        code = ("import keras, json, zipfile\ninputs = keras.Input((8, 8, 3))\n"
                "m = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))\nm.save('lambda.keras')\n"
                "z = zipfile.ZipFile('lambda.keras', 'a')\nz.writestr('bottleneck.json', json.dumps({'format': "
                "'bottleneck-model', 'task': 'single_label', 'input': {'size': 8}, 'output_names': ['a','b','c']}))\n"
                "z.close()")
        run(tree, work, "-c", code)
        return ["predict", str(work / "lambda.keras"), str(image(work / "f.jpg"))], None

    def budget_abc():
        return ["datasets"], {"BOTTLENECK_DECODE_BUDGET_MB": "abc"}

    def h5_vlen():
        import h5py

        path = crafted_h5(work / "vlen.h5", 10)
        with h5py.File(path, "a") as f:
            del f["labels"]
            f.create_dataset("labels", shape=(10,), dtype=h5py.vlen_dtype(np.int64))
        return ["info", str(path), "--verify"], None

    def math_names():
        r = results(work / "R6", names=("$\\foo$", "dog"))
        return ["report", str(r)], None

    def escapes():
        m = with_meta(model, work / "escapes.keras",
                      output_names=["\x1b]0;pwned\x07" + n for n in json.loads(
                          zipfile.ZipFile(model).read("bottleneck.json"))["output_names"]])
        status, out, err, mb = bn("predict", str(m), str(image(work / "g.jpg")), "--csv", str(work / "p.csv"))
        return status, mb, "DEFECT: raw escape sequences printed" if "\x1b" in out else "ok: printed escaped"

    def csv_injection():
        m = with_meta(model, work / "formula.keras",
                      output_names=["=HYPERLINK(\"http://x\")" for _ in json.loads(
                          zipfile.ZipFile(model).read("bottleneck.json"))["output_names"]])
        status, out, err, mb = bn("predict", str(m), str(image(work / "h.jpg")), "--csv", str(work / "q.csv"))
        import csv

        cells = list(csv.reader(open(work / "q.csv")))[1] if (work / "q.csv").exists() else []
        return status, mb, "DEFECT: a formula cell" if any(c.startswith("=") for c in cells) else \
            f"ok: {cells[1][:30] if len(cells) > 1 else 'no csv'}"

    def fault_switch():
        status, out, err, mb = bn("extract", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                                  f"folder:{HERE / 'data' / 'cifar10'}", "--per-class", "2", "--quiet",
                                  env={"BOTTLENECK_FAULT": "start"})
        return status, mb, "DEFECT: killed itself silently" if status == "exit -9" else f"ok: {status}, " + \
            (err.strip().splitlines() or [""])[0][:100]

    return [
        ("report-run-key", report_run_key), ("report-symlinked-plots", report_symlink),
        ("export-planted-tmp", export_planted_tmp), ("export-twice-at-once", export_twice_at_once),
        ("export-existing-out", export_existing),
        ("export-out-h5", export_h5), ("predict-csv-is-model", predict_csv_model),
        ("predict-fifo", predict_fifo), ("label-map-fifo", label_map_fifo), ("row-fifo", row_fifo),
        ("info-h5-link-to-fifo", h5_link_fifo),
        ("info-verify-2e7-rows", h5_rows(2 * 10**7, "info", "F", "--verify")),
        ("train-features-1e9-rows", h5_rows(10**9, "train", "--features", "F", "--test-features", "F")),
        ("info-verify-1e9-rows", h5_rows(10**9, "info", "F", "--verify")),
        ("predict-inflating-meta", meta_inflating), ("predict-meta-input-1e6", meta_input_size),
        ("report-npz-inflating", npz_inflating), ("predict-8GB-jpg", predict_huge_file("sparse")),
        ("predict-dev-zero", predict_huge_file("zero")), ("tar-bomb", tar_bomb),
        ("predict-batch-100000", predict_batch), ("info-verify-virtual-labels", h5_virtual),
        ("tb-row-list", traceback_case(rows_list)), ("tb-codes-300", traceback_case(codes_300)),
        ("tb-meta-no-output-names", traceback_case(meta_no_names)), ("tb-keras-lambda", traceback_case(keras_lambda)),
        ("tb-decode-budget-abc", traceback_case(budget_abc)), ("tb-h5-vlen", traceback_case(h5_vlen)),
        ("tb-math-class-name", traceback_case(math_names)), ("predict-escapes", escapes),
        ("predict-csv-injection", csv_injection), ("fault-switch", fault_switch),
    ]


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, streamed (a tar member that takes no memory to write)."""

    def __init__(self, size: int):
        self.left = size

    def readable(self):
        return True

    def readinto(self, buffer):
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", default=str(HERE))
    parser.add_argument("--only", default="")
    a = parser.parse_args()
    tree = Path(a.tree).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="attacks-"))
    model_dir = scratch / "model"
    model_dir.mkdir()
    status, out, err, mb = run(tree, model_dir, "export", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                               f"folder:{HERE / 'data' / 'cifar10'}", "--per-class", "5", "--out",
                               str(model_dir / "m.keras"), "--quiet", timeout=600)
    assert (model_dir / "m.keras").exists(), err
    only = set(filter(None, a.only.split(",")))
    print(f"tree {tree} (git {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=tree, capture_output=True, text=True).stdout.strip()})")
    for name in [n for n, _ in attacks(tree, scratch, model_dir / "m.keras")]:
        if only and name not in only:
            continue
        work = scratch / name
        work.mkdir()
        attack = dict(attacks(tree, work, model_dir / "m.keras"))[name]  # (its files go in its own folder)
        try:
            status, mb, verdict = attack()
        except Exception as e:  # the attack's own set-up failed: say so, go on
            status, mb, verdict = "setup failed", 0, f"{type(e).__name__}: {e}"
        print(f"{name:28s} {status:16s} peak {mb:6d} MB  {verdict}", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
