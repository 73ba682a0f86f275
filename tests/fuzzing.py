"""The fuzzing harness: every file format the package reads, mutated at random.

For each format, a valid file (or folder) is made, then Hypothesis draws mutations of it,
seeded: the file truncated, bytes flipped, a size field inflated, a value swapped for one of
another type, a link added. The package's reader runs on each mutant, and must end in a
result or a clear error (a ``BottleneckError`` with what to do):

- never a traceback (any other exception fails the case),
- never a hang (each case has ``CASE_SECONDS``; SIGALRM stops it),
- never more memory than ``MEMORY_HEADROOM`` above what the process held before the case
  (``RLIMIT_AS``: an allocation beyond it is a MemoryError, which fails the case),
- never a write outside the case's folder and BOTTLENECK_HOME (both are compared before and
  after).

It runs as a child process, one per format, so that limits apply to it alone:

    python -m tests.fuzzing FORMAT --cases N --seed S

prints one JSON line: the format, the cases run, how many ended in a result and in a clear
error, and the first failure (shrunk by Hypothesis) if any. ``tests/test_fuzz.py`` runs every
format with a few cases in CI; ``--cases`` runs as many as you like.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import pickle
import resource
import shutil
import signal
import tempfile
import traceback
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"
CASE_SECONDS = 20
MEMORY_HEADROOM = 1 << 30  # 1 GiB over what the process held before the cases


# ------------------------------------------------------------------ valid files, one maker per format

def _image(folder: Path, name: str = "a.jpg") -> Path:
    src = sorted((DATA / "cifar10" / "test" / "cat").iterdir())[0]
    shutil.copy(src, folder / name)
    return folder / name


def make_hdf5(folder: Path) -> Path:
    from bottleneck.cache.store import PartialRun

    settings = {"base": "tiny_cnn", "dataset": "d", "split": "train", "per_class": None, "weights": "random",
                "layer": "x", "pooling": "avg", "image_size": 32, "levels": {"a": 8}}
    run = PartialRun(folder / "f.h5", {"rows": 6}, {"features": "float32"}, rows=6)
    run.open()
    rng = np.random.default_rng(0)
    run.add(0, {"features": rng.random((6, 8), np.float32)}, np.ones(6, bool))
    run.finish(1, settings, [f"id{i}" for i in range(6)], np.arange(6) % 2, [f"g{i}" for i in range(6)],
               ["a", "b"], [f"{i:032x}" for i in range(6)], {})
    return folder / "f.h5"


def read_hdf5(folder: Path):
    from bottleneck.cache.store import read_features
    from bottleneck.experiments.run import train_on_features

    fs = read_features(folder / "f.h5")
    read_features(folder / "f.h5", load=False)
    if len(fs) and len(set(fs.labels.tolist())) > 1:
        train_on_features(fs, fs, "logreg")


def _results(folder: Path) -> None:
    from bottleneck.report.results import ResultsDir

    results = ResultsDir(folder / "R")
    key = "0123456789ab"
    y = np.array([0, 1, 1, 0])
    np.savez_compressed(results.rows_dir / f"{key}.npz", y_true=y, y_pred=np.array([0, 1, 0, 0]),
                        outputs=np.zeros((4, 2), np.float32), names=np.array(["cat", "dog"]),
                        source_ids=np.array(list("abcd")), thumbs=np.zeros((2, 8, 8, 3), np.uint8),
                        thumb_rows=np.array([0, 2]), history=json.dumps({"loss": [1.0, 0.5]}))
    row = {"base": "tiny_cnn", "dataset": "cifar10", "head": "logreg", "seed": 0, "per_class": 10, "target": "class",
           "task": "single_label", "metric": "accuracy", "score": 0.75, "accuracy": 0.75,
           "metrics": {"accuracy": 0.75}, "finished": "2026-12-06T00:00:00+00:00", "run_key": key}
    (results.rows_dir / f"{key}.json").write_text(json.dumps(row, indent=1))


def make_row_json(folder: Path) -> Path:
    _results(folder)
    return folder / "R" / "rows" / "0123456789ab.json"


def make_row_npz(folder: Path) -> Path:
    _results(folder)
    return folder / "R" / "rows" / "0123456789ab.npz"


def read_results(folder: Path):
    from bottleneck.report.html import write_report
    from bottleneck.report.results import ResultsDir

    if ResultsDir(folder / "R").rows():
        write_report(folder / "R")


_MODEL: dict = {}


def make_keras(folder: Path) -> Path:
    """A small exported model (made once per process, then copied)."""
    if "bytes" not in _MODEL:
        import keras

        from bottleneck.deploy.formats import MODEL_FORMAT

        inputs = keras.Input((16, 16, 3), dtype="uint8")
        x = keras.layers.Rescaling(1 / 255.0)(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
        path = folder / "made.keras"
        model.save(path)
        meta = {"format": MODEL_FORMAT, "version": 1, "input": {"size": 16, "dtype": "uint8"}, "task": "single_label",
                "output_names": ["a", "b", "c"], "metric": "accuracy", "score": 0.5}
        with zipfile.ZipFile(path, "a") as z:
            z.writestr("bottleneck.json", json.dumps(meta))
        _MODEL["bytes"] = path.read_bytes()
        path.unlink()
    (folder / "m.keras").write_bytes(_MODEL["bytes"])
    _image(folder)
    return folder / "m.keras"


def read_keras(folder: Path):
    from bottleneck.deploy.predict import predict

    list(predict(folder / "m.keras", [folder / "a.jpg"], batch_size=4))


def _exported(folder: Path, format: str, name: str) -> Path:
    """The small model of make_keras written in another format (once per process, then copied)."""
    if format not in _MODEL:
        import keras

        from bottleneck.deploy.formats import read_meta, save

        make_keras(folder)
        meta = read_meta(folder / "m.keras")
        model = keras.saving.load_model(folder / "m.keras")
        save(model, meta, folder / f"made-{name}", format)
        _MODEL[format] = (folder / f"made-{name}").read_bytes()
        for p in (folder / "m.keras", folder / f"made-{name}"):
            p.unlink()
    (folder / name).write_bytes(_MODEL[format])
    _image(folder)
    return folder / name


def make_onnx(folder: Path) -> Path:
    return _exported(folder, "onnx", "m.onnx")


def make_litert(folder: Path) -> Path:
    return _exported(folder, "litert", "m.tflite")


def read_onnx(folder: Path):
    from bottleneck.deploy.predict import predict

    list(predict(folder / "m.onnx", [folder / "a.jpg"], batch_size=4))


def read_litert(folder: Path):
    from bottleneck.deploy.predict import predict

    list(predict(folder / "m.tflite", [folder / "a.jpg"], batch_size=4))


def make_lab_pickle(folder: Path) -> Path:
    data = {"features": np.random.default_rng(0).random((6, 4), np.float32), "labels": np.arange(6) % 3}
    (folder / "vgg_cifar10_100_bottleneck_features_train.p").write_bytes(pickle.dumps(data, protocol=4))
    return folder / "vgg_cifar10_100_bottleneck_features_train.p"


def read_lab_pickle(folder: Path):
    from bottleneck.cache.labpickle import load_lab_pickle

    load_lab_pickle(folder / "vgg_cifar10_100_bottleneck_features_train.p")


def make_gtsrb_pickles(folder: Path) -> Path:
    root = folder / "signs"
    root.mkdir()
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        data = {"features": rng.integers(0, 255, (4, 8, 8, 3), dtype=np.uint8), "labels": np.array([0, 1, 2, 1])}
        (root / f"{split}.p").write_bytes(pickle.dumps(data, protocol=4))
    (root / "signnames.csv").write_text("ClassId,SignName\n0,Stop\n1,Yield\n2,Priority road\n")
    return root / "train.p"


def _use_dataset(what: str):
    """Load a dataset and touch what a run touches: each split's first image and target values."""
    from bottleneck.data.datasets import load_dataset

    ds = load_dataset(what)
    for name in ds.splits:
        split = ds.split(name)
        if len(split):
            split.load(0, 16)
        for target in ds.targets.values():
            target.values(split)


def read_gtsrb_pickles(folder: Path):
    _use_dataset(f"folder:{folder / 'signs'}")


def make_csv_targets(folder: Path) -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        _image(folder, name)
    (folder / "t.csv").write_text("file,labels,is_valid\na.jpg,car road,false\nb.jpg,road,false\nc.jpg,car,true\n")
    (folder / "t.task.json").write_text(json.dumps({"labels": ["car", "road", "sky"], "groups": {}}))
    return folder / "t.csv"


def make_task_json(folder: Path) -> Path:
    make_csv_targets(folder)
    return folder / "t.task.json"


def read_csv_targets(folder: Path):
    _use_dataset(f"multilabel:{folder / 't.csv'}")


def make_regression_csv(folder: Path) -> Path:
    for name in ("a.jpg", "b.jpg"):
        _image(folder, name)
    (folder / "r.csv").write_text("file,x,y,is_valid\na.jpg,0.1,0.9,0\nb.jpg,0.5,0.5,1\n")
    (folder / "r.task.json").write_text(json.dumps({"ranges": {"x": [0, 1], "y": [0, 1]}, "boxes": False}))
    return folder / "r.csv"


def read_regression_csv(folder: Path):
    _use_dataset(f"regression:{folder / 'r.csv'}")


def _camvid(folder: Path) -> Path:
    root = folder / "seg"
    src = DATA / "camvid"
    for split in ("train", "test"):
        for part in ("images", "labels"):
            (root / part / split).mkdir(parents=True)
        image = sorted((src / "images" / split).iterdir())[0]
        shutil.copy(image, root / "images" / split / image.name)
        label = next(p for p in (src / "labels" / split).iterdir() if p.stem.startswith(image.stem))
        shutil.copy(label, root / "labels" / split / label.name)
    shutil.copy(src / "codes.txt", root / "codes.txt")
    return root


def make_codes(folder: Path) -> Path:
    return _camvid(folder) / "codes.txt"


def make_label_map(folder: Path) -> Path:
    root = _camvid(folder)
    return sorted((root / "labels" / "train").iterdir())[0]


def read_segmentation(folder: Path):
    """Load the folder, then read every frame's label map as a segmentation run and the presence target do."""
    from bottleneck.data.datasets import load_dataset
    from bottleneck.data.labelmaps import read_label_map

    ds = load_dataset(f"segfolder:{folder / 'seg'}")
    task = ds.targets["segmentation"].task
    for name in ds.splits:
        split = ds.split(name)
        for k, label in enumerate(ds.targets["segmentation"].values(split)):
            read_label_map(Path(label), Path(split.source.name(k)), len(task.class_names), task.void)
        ds.targets["presence"].values(split)


def make_test_csv(folder: Path) -> Path:
    root = folder / "gtsrb"
    for split in ("Train/0", "Train/1", "Test"):
        (root / split).mkdir(parents=True)
    src = DATA / "gtsrb"
    rows, train = [], []
    for c in ("0", "1"):
        image = sorted((src / "Train" / c).iterdir())[0]
        shutil.copy(image, root / "Train" / c / image.name)
        train.append(f"30,30,5,5,25,25,{c},Train/{c}/{image.name}")
    tests = sorted((src / "Test").iterdir())[:2]
    for k, image in enumerate(tests):
        shutil.copy(image, root / "Test" / image.name)
        rows.append(f"30,30,5,5,25,25,{k % 2},Test/{image.name}")
    header = "Width,Height,Roi.X1,Roi.Y1,Roi.X2,Roi.Y2,ClassId,Path\n"
    (root / "Test.csv").write_text(header + "\n".join(rows) + "\n")
    (root / "Train.csv").write_text(header + "\n".join(train) + "\n")
    (root / "signnames.csv").write_text("ClassId,SignName\n0,Speed limit (20km/h)\n1,Speed limit (30km/h)\n")
    return root / "Test.csv"


def read_test_csv(folder: Path):
    _use_dataset(f"folder:{folder / 'gtsrb'}")  # its box target reads Train.csv and Test.csv


def _detection_folders(folder: Path) -> None:
    """A GTSDB-shaped folder, a YOLO folder and a COCO folder of two small scenes each."""
    from PIL import Image

    scene = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    g = folder / "gtsdb"
    (g / "images").mkdir(parents=True)
    for n in ("00000", "00600"):
        scene.save(g / "images" / f"{n}.jpg")
    (g / "gt.txt").write_text("00000.ppm;5;6;20;22;14\n00600.ppm;30;10;50;30;33\n")
    y = folder / "yolo"
    for split in ("train", "test"):
        (y / "images" / split).mkdir(parents=True)
        (y / "labels" / split).mkdir(parents=True)
        scene.save(y / "images" / split / "a.png")
        (y / "labels" / split / "a.txt").write_text("0 0.25 0.5 0.2 0.3\n1 0.7 0.4 0.1 0.2\n")
    (y / "data.yaml").write_text("names:\n  0: stop\n  1: yield\n")
    c = folder / "coco"
    (c / "images").mkdir(parents=True)
    scene.save(c / "images" / "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png", "width": 60, "height": 40}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [5, 6, 10, 12], "iscrowd": 0}],
           "categories": [{"id": 3, "name": "stop"}, {"id": 4, "name": "yield"}]}
    (c / "train.json").write_text(json.dumps(doc))


def make_gtsdb_gt(folder: Path) -> Path:
    _detection_folders(folder)
    return folder / "gtsdb" / "gt.txt"


def make_yolo_labels(folder: Path) -> Path:
    _detection_folders(folder)
    return folder / "yolo" / "labels" / "train" / "a.txt"


def make_yolo_yaml(folder: Path) -> Path:
    _detection_folders(folder)
    return folder / "yolo" / "data.yaml"


def make_coco_json(folder: Path) -> Path:
    _detection_folders(folder)
    return folder / "coco" / "train.json"


def read_detection(folder: Path):
    for name in (f"folder:{folder / 'gtsdb'}", f"yolo:{folder / 'yolo'}", f"coco:{folder / 'coco'}"):
        _use_dataset(name)


def make_image(folder: Path) -> Path:
    return _image(folder)


def make_png(folder: Path) -> Path:
    from PIL import Image

    Image.open(_image(folder)).save(folder / "a.png")
    return folder / "a.png"


def read_image(folder: Path):
    from bottleneck.data.images import image_size, load_image

    for path in folder.iterdir():
        if path.suffix in (".jpg", ".png"):
            image_size(path)
            load_image(path, 16)


# name -> (make a valid file (the one mutated) in a folder, read that folder as the package does, the mutations'
# structure: json, csv, hdf5, pickle, zip, or bytes)
FORMATS = {
    "hdf5-cache": (make_hdf5, read_hdf5, "hdf5"),
    "results-row-json": (make_row_json, read_results, "json"),
    "results-row-npz": (make_row_npz, read_results, "zip"),
    "keras-model": (make_keras, read_keras, "zip"),
    "onnx-model": (make_onnx, read_onnx, "bytes"),
    "litert-model": (make_litert, read_litert, "bytes"),
    "lab-pickle": (make_lab_pickle, read_lab_pickle, "pickle"),
    "gtsrb-pickles": (make_gtsrb_pickles, read_gtsrb_pickles, "pickle"),
    "csv-targets": (make_csv_targets, read_csv_targets, "csv"),
    "regression-csv": (make_regression_csv, read_regression_csv, "csv"),
    "task-json": (make_task_json, read_csv_targets, "json"),
    "codes-txt": (make_codes, read_segmentation, "text"),
    "label-map": (make_label_map, read_segmentation, "bytes"),
    "gtsrb-test-csv": (make_test_csv, read_test_csv, "csv"),
    "gtsdb-gt-txt": (make_gtsdb_gt, read_detection, "text"),
    "yolo-labels": (make_yolo_labels, read_detection, "text"),
    "yolo-data-yaml": (make_yolo_yaml, read_detection, "text"),
    "coco-json": (make_coco_json, read_detection, "json"),
    "image-jpeg": (make_image, read_image, "bytes"),
    "image-png": (make_png, read_image, "bytes"),
}


# ------------------------------------------------------------------ mutations

HUGE = [2**31 - 1, 2**32 - 1, 2**63 - 1, 10**9, 1_500_000_000, -1, 0]


def mutate_bytes(data: bytes, draw) -> bytes:
    from hypothesis import strategies as st

    if not data:
        return data
    how = draw(st.sampled_from(["truncate", "flip", "inflate", "insert", "repeat", "zero"]))
    at = draw(st.integers(0, len(data) - 1))
    if how == "truncate":
        return data[:at]
    if how == "flip":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            out[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    if how == "inflate":  # a size or count field replaced by a huge one
        width = draw(st.sampled_from([2, 4, 8]))
        value = draw(st.sampled_from(HUGE)) % (1 << (8 * width))
        order = draw(st.sampled_from(["little", "big"]))
        return data[:at] + value.to_bytes(width, order) + data[at + width:]
    if how == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    if how == "repeat":
        end = min(len(data), at + draw(st.integers(1, 4096)))
        return data[:end] + data[at:end] * draw(st.integers(1, 50)) + data[end:]
    return data[:at] + bytes(draw(st.integers(1, 256))) + data[at + 1:]


def other_value(value, draw):
    """A value of another type, or an extreme one of the same."""
    from hypothesis import strategies as st

    choices = [None, True, -1, 0, 10**12, 1e308, float("nan"), "", "x" * 300, "=cmd|' /C calc'!A0", "$\\foo$",
               "\x1b]0;pwned\x07", "../../../etc/passwd", [], [1, "a"], {}, {"a": {"b": [1]}}, [[[[[]]]]]]
    return draw(st.sampled_from(choices))


def mutate_json(value, draw, depth: int = 0):
    from hypothesis import strategies as st

    if isinstance(value, dict) and value and depth < 4:
        key = draw(st.sampled_from(sorted(value)))
        how = draw(st.sampled_from(["swap", "delete", "recurse", "add"]))
        out = dict(value)
        if how == "swap":
            out[key] = other_value(value[key], draw)
        elif how == "delete":
            del out[key]
        elif how == "add":
            out[draw(st.sampled_from(["extra", "__proto__", key + "_"]))] = other_value(None, draw)
        else:
            out[key] = mutate_json(value[key], draw, depth + 1)
        return out
    if isinstance(value, list) and value and depth < 4:
        i = draw(st.integers(0, len(value) - 1))
        out = list(value)
        out[i] = mutate_json(value[i], draw, depth + 1) if draw(st.booleans()) else other_value(value[i], draw)
        return out
    return other_value(value, draw)


def mutate_file(path: Path, structure: str, draw) -> None:
    """Mutate ``path`` in place: by its structure, or as bytes."""
    from hypothesis import strategies as st

    data = path.read_bytes()
    kind = draw(st.sampled_from([structure, "bytes"])) if structure != "bytes" else "bytes"
    if kind == "json":
        try:
            value = json.loads(data)
        except ValueError:
            value = None
        text = json.dumps(mutate_json(value, draw))
        if draw(st.booleans()) and len(text) < 10_000:
            text = draw(st.sampled_from(["[" * 50_000 + "]" * 50_000, text + text, "[]", "null", "1e999"]))
        path.write_text(text)
    elif kind in ("csv", "text"):
        rows = list(csv.reader(io.StringIO(data.decode("utf-8", "replace"))))
        if rows:
            i = draw(st.integers(0, len(rows) - 1))
            how = draw(st.sampled_from(["cell", "drop", "extra", "dup", "empty"]))
            if how == "cell" and rows[i]:
                j = draw(st.integers(0, len(rows[i]) - 1))
                rows[i][j] = str(other_value(rows[i][j], draw))
            elif how == "drop":
                del rows[i]
            elif how == "extra":
                rows[i] = rows[i] + ["x"]
            elif how == "dup":
                rows = rows + [rows[i]] * draw(st.integers(1, 300))
            else:
                rows[i] = []
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        path.write_text(buffer.getvalue())
    elif kind == "hdf5":
        mutate_hdf5(path, draw)
    elif kind == "pickle":
        value = pickle.loads(data)
        path.write_bytes(pickle.dumps(mutate_json_like(value, draw), protocol=draw(st.sampled_from([2, 4, 5]))))
    elif kind == "zip":
        mutate_zip(path, draw)
    else:
        path.write_bytes(mutate_bytes(data, draw))


def mutate_json_like(value, draw):
    """A pickled dict of arrays, mutated: a key dropped or retyped, an array reshaped or retyped."""
    from hypothesis import strategies as st

    if not isinstance(value, dict) or not value:
        return value
    key = draw(st.sampled_from(sorted(value)))
    out = dict(value)
    how = draw(st.sampled_from(["swap", "delete", "reshape", "dtype", "grow"]))
    a = np.asarray(value[key])
    if how == "swap":
        out[key] = other_value(None, draw)
    elif how == "delete":
        del out[key]
    elif how == "reshape":
        out[key] = a.reshape(-1) if a.ndim > 1 else a.reshape(-1, 1)
    elif how == "dtype":
        out[key] = a.astype(draw(st.sampled_from(["float64", "int8", "<U3", "bool", "complex64"])))
    else:
        out[key] = np.concatenate([a, a[:1]]) if len(a) else a
    return out


def mutate_hdf5(path: Path, draw) -> None:
    import h5py
    from hypothesis import strategies as st

    how = draw(st.sampled_from(["resize", "external", "soft", "virtual", "vlen", "attr", "delete", "dtype"]))
    with h5py.File(path, "a") as f:
        name = draw(st.sampled_from(sorted(f)))
        if how == "resize" and f[name].chunks and f[name].maxshape[0] is None:
            f[name].resize(draw(st.sampled_from([10**6, 2 * 10**7, 10**9])), axis=0)  # declared, never stored
        elif how == "external":
            del f[name]
            target = path.parent / "other.h5"
            if draw(st.booleans()):
                os.mkfifo(target)
            f[name] = h5py.ExternalLink(str(target), "/x")
        elif how == "soft":
            del f[name]
            f[name] = h5py.SoftLink(draw(st.sampled_from(["/" + name, "/nowhere", "/labels"])))
        elif how == "virtual":
            shape = f[name].shape
            other = path.parent / "v.h5"
            with h5py.File(other, "w") as g:
                g["x"] = np.zeros(shape, f[name].dtype)
            layout = h5py.VirtualLayout(shape=shape, dtype=f[name].dtype)
            layout[...] = h5py.VirtualSource(str(other), "x", shape=shape)
            del f[name]
            f.create_virtual_dataset(name, layout)
        elif how == "vlen":
            n = f[name].shape[0] if f[name].shape else 1
            del f[name]
            f.create_dataset(name, shape=(n,), dtype=h5py.vlen_dtype(np.int64))
        elif how == "attr":
            key = draw(st.sampled_from(sorted(f.attrs)))
            value = other_value(None, draw)
            if key == "settings" and draw(st.booleans()):
                value = json.dumps(mutate_json(json.loads(f.attrs["settings"]), draw))
            f.attrs[key] = json.dumps(value) if not isinstance(value, (str, int, float)) else value
        elif how == "delete":
            del f[name]
        elif f[name].dtype.kind in "fiu":
            data = f[name][()]
            del f[name]
            f[name] = np.asarray(data).astype(draw(st.sampled_from(["float16", "int8", "S3", "float64"])))
    if draw(st.booleans()):
        path.write_bytes(mutate_bytes(path.read_bytes(), draw))


def mutate_zip(path: Path, draw) -> None:
    """Rewrite one member: mutated (JSON by structure, others as bytes), inflated, or dropped."""
    from hypothesis import strategies as st

    with zipfile.ZipFile(path) as z:
        members = [(info, z.read(info)) for info in z.infolist()]
    i = draw(st.integers(0, len(members) - 1))
    how = draw(st.sampled_from(["mutate", "inflate", "drop", "bytes"]))
    if how == "bytes":
        path.write_bytes(mutate_bytes(path.read_bytes(), draw))
        return
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, (info, data) in enumerate(members):
            if k == i and how == "drop":
                continue
            if k == i and how == "inflate":
                data = data + b" " * (20 << 20)  # 20 MB of spaces: a few KB compressed
            elif k == i and info.filename.endswith(".json"):
                try:
                    data = json.dumps(mutate_json(json.loads(data), draw)).encode()
                except ValueError:
                    data = mutate_bytes(data, draw)
            elif k == i:
                data = mutate_bytes(data, draw)
            z.writestr(info.filename, data)


# ------------------------------------------------------------------ running the cases

class Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise Hang(f"no result after {CASE_SECONDS} s")


def _listing(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = Path(dirpath) / name
            with contextlib.suppress(OSError):
                st = p.lstat()
                out[str(p)] = (st.st_size, st.st_mtime_ns)
    return out


def _limit_memory() -> None:
    """RLIMIT_AS at what the process maps now plus MEMORY_HEADROOM."""
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    limit = mapped + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run(fmt: str, cases: int, seed: int) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from bottleneck.core.errors import BottleneckError

    make, read, structure = FORMATS[fmt]
    sandbox = Path(tempfile.mkdtemp(prefix=f"fuzz-{fmt}-"))
    home = sandbox / "home"
    os.environ["BOTTLENECK_HOME"] = str(home)
    os.environ["BOTTLENECK_OFFLINE"] = "1"
    outside = sandbox / "outside"  # a neighbour of each case's folder: nothing may appear or change here
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    warm = sandbox / "warm"  # one valid round first: imports, caches, the memory the reader needs anyway
    warm.mkdir()
    make(warm)
    read(warm)
    _limit_memory()
    signal.signal(signal.SIGALRM, _on_alarm)
    tally = {"format": fmt, "cases": 0, "result": 0, "clear_error": 0, "errors_seen": {}}
    counter = [0]

    @hypothesis_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None, derandomize=False, print_blob=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink])
    @given(st.data())
    def case(data):
        counter[0] += 1
        folder = sandbox / f"case{counter[0]}"
        folder.mkdir()
        target = make(folder)
        mutate_file(target, structure, data.draw)
        before = _listing(outside), _listing(REPO / "data")
        signal.alarm(CASE_SECONDS)
        try:
            read(folder)
            outcome = "result"
        except BottleneckError as e:
            assert e.todo, f"an error without what to do: {e}"
            outcome = "clear_error"
            tally["errors_seen"].setdefault(type(e).__name__, str(e).splitlines()[0][:160])
        finally:
            signal.alarm(0)
        assert (_listing(outside), _listing(REPO / "data")) == before, "a file outside the case's folder changed"
        tally["cases"] += 1
        tally[outcome] += 1
        shutil.rmtree(folder, ignore_errors=True)

    try:
        case()
        tally["failure"] = None
    except BaseException as e:  # the shrunk failing case, as Hypothesis re-raises it
        tally["failure"] = "".join(traceback.format_exception(type(e), e, e.__traceback__))[-4000:]
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("format", choices=sorted(FORMATS))
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    a = parser.parse_args()
    print(json.dumps(run(a.format, a.cases, a.seed)))


if __name__ == "__main__":
    main()
