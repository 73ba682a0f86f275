"""Export formats: each format round-trips (written by `export`, run where it runs, in a fresh
process without this package, predicting what the pipeline predicts), `predict` takes each,
and what a format cannot do, or a file that is not safe to load, is refused clearly."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from bottleneck.cli import main
from bottleneck.core.errors import BottleneckError
from bottleneck.data.datasets import load_dataset
from bottleneck.data.images import resize
from bottleneck.deploy.export import export
from bottleneck.deploy.formats import FORMATS, META_NAME, load_model, read_meta
from bottleneck.deploy.predict import predict

from . import warm
from .conftest import DATA

TINY = dict(weights="random", progress=False)
OUT = {"keras": "m.keras", "saved_model": "m_saved", "onnx": "m.onnx", "litert": "m.tflite"}
TARGETS = (("class", "logreg"), ("attributes", "logreg"), ("box", "ridge"))
# Float formats compute the same float32 graph by other kernels: outputs agree to this.
TOLERANCE = 1e-4

# Run in a fresh process, without this package: each format by its own runtime.
_FRESH = """
import json, sys
from pathlib import Path
import numpy as np

def run_saved_model(path, x):
    import tensorflow as tf
    model = tf.saved_model.load(path)  # kept in a name: a temporary's variables are freed before serve runs
    return model.serve(tf.constant(x)).numpy()

def run_onnx(path, x):
    import onnxruntime
    s = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]

def run_litert(path, x):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=path)
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    it.set_tensor(inp["index"], x)
    it.invoke()
    out = it.get_output_details()[0]
    y = it.get_tensor(out["index"])
    scale, zero = out["quantization"]
    return (y.astype(np.float32) - zero) * scale if scale else y

def run_keras(path, x):
    import keras
    return np.asarray(keras.saving.load_model(path).predict(x, verbose=0))

for path, x_path, y_path in json.loads(sys.argv[1]):
    fmt = {".onnx": "onnx", ".tflite": "litert", ".keras": "keras"}.get(Path(path).suffix, "saved_model")
    np.save(y_path, globals()["run_" + fmt](path, np.load(x_path)))
print(json.dumps({"bottleneck_imported": any(m == "bottleneck" or m.startswith("bottleneck.") for m in sys.modules)}))
"""


def _once(tmp_path_factory, worker_id: str, name: str, build):
    """``build(folder)`` once per test run, however many xdist workers use it: the first builds
    it under a lock and leaves a mark, the others find the mark (pytest-xdist's own pattern)."""
    from bottleneck.core.files import file_lock

    if worker_id == "master":  # one process: nothing to share
        return build(tmp_path_factory.mktemp(name))
    root = tmp_path_factory.getbasetemp().parent / name  # the run's folder, above each worker's own
    root.mkdir(exist_ok=True)
    with file_lock(root.parent / f"{name}.lock"):
        if not (root / "done").exists():
            build(root)
            (root / "done").write_text("built")
    return json.loads((root / "made.json").read_text())


def _build_models(root: Path) -> dict:
    """Every target in every format (and LiteRT int8 for one class), the pipeline's outputs on
    100 test images, and what one fresh process without this package computes with each file."""
    split = load_dataset("gtsrb", DATA).split("test")
    where = {sid: i for i, sid in enumerate(split.ids)}
    made, jobs = {}, []
    for target, head in TARGETS:
        for fmt, name in [*OUT.items(), *((("int8", "q.tflite"),) if target == "class" else ())]:
            folder = root / f"{target}-{fmt}"
            folder.mkdir()
            meta = export("tiny_cnn", "gtsrb", 5, 0, head, target=target, out=folder / name, data_dir=DATA,
                          cache_dir=root / "c", quantize="int8" if fmt == "int8" else None, **TINY)
            fitted = meta.pop("fitted")
            pipeline = fitted.model.predict(fitted.test.features) if fitted.row["task"] == "regression" \
                else fitted.model.predict_proba(fitted.test.features)
            x = np.stack([resize(split.load(where[sid], 32), 32) for sid in fitted.test.source_ids[:100]])
            np.save(folder / "x.npy", x)
            np.save(folder / "pipeline.npy", pipeline[:100])
            jobs.append((str(folder / name), str(folder / "x.npy"), str(folder / "y.npy")))
            made[f"{target}/{fmt}"] = {"path": str(folder / name), "meta": json.loads(json.dumps(meta, default=str))}
    # A child of the tests' bare warm server: Keras imported, this package never (tests/warm.py). The suite's
    # environment, not what tf2onnx left in this process's as it converted (its log level).
    out = warm.run([sys.executable, "-c", _FRESH, json.dumps(jobs)], env=warm.BASE_ENV, cwd=root, timeout=300,
                   bare=True)
    assert out.returncode == 0, out.stderr[-3000:]
    result = {"models": made, "fresh": json.loads(out.stdout.strip().splitlines()[-1])}
    (root / "made.json").write_text(json.dumps(result))
    return result


@pytest.fixture(scope="module")
def made(tmp_path_factory, worker_id):
    """(path, metadata, pipeline outputs, the fresh process's outputs) of each (target, format),
    and what the fresh process had imported."""
    built = _once(tmp_path_factory, worker_id, "formats", _build_models)
    models = {}
    for key, m in built["models"].items():
        path = Path(m["path"])
        models[tuple(key.split("/"))] = (path, m["meta"], np.load(path.parent / "pipeline.npy"), path.parent / "y.npy")
    return models, built["fresh"]


@pytest.mark.parametrize("fmt", sorted(OUT))
@pytest.mark.parametrize("target,head", TARGETS)
def test_each_format_runs_without_bottleneck_and_predicts_like_the_pipeline(made, target, head, fmt):
    models, fresh_process = made
    path, meta, pipeline, fresh = models[(target, fmt)]
    assert fresh_process == {"bottleneck_imported": False}
    np.testing.assert_allclose(np.load(fresh), pipeline, atol=TOLERANCE)
    stored = read_meta(path)  # the metadata travels inside each format
    assert stored["file_format"] == fmt and stored["target"] == target and stored["metrics"] == meta["metrics"]
    loaded = load_model(path)
    assert loaded.format == fmt
    np.testing.assert_allclose(loaded.run(np.load(path.parent / "x.npy")), pipeline, atol=TOLERANCE)


def test_int8_litert_is_smaller_integer_and_still_gives_probabilities(made):
    models, _ = made
    float_path, _, pipeline, _ = models[("class", "litert")]
    path, meta, _, fresh = models[("class", "int8")]
    assert meta["quantize"] == "int8" and meta["calibration"]["images"] > 0
    assert path.stat().st_size < float_path.stat().st_size
    q = np.load(fresh)
    assert q.shape == pipeline.shape and np.allclose(q.sum(1), 1, atol=0.05)  # probabilities, each in steps of 1/256
    from ai_edge_litert.interpreter import Interpreter

    # Weights and activations in 8 bits: float32 is left only where the graph meets its float input and output
    # (how close int8 stays on real features is measured in bench/formats.py: README, Export formats).
    types = [t["dtype"] for t in Interpreter(model_path=str(path)).get_tensor_details()]
    assert types.count(np.int8) > 4 * types.count(np.float32)


@pytest.mark.parametrize("fmt", sorted(OUT))
def test_predict_takes_every_format_and_gives_the_same_rows(made, fmt, tmp_path, capsys):
    models, _ = made
    images = sorted((DATA / "gtsrb" / "Test").iterdir())[:12]
    reference = [r["top"] for r in predict(models[("class", "keras")][0], images)]
    rows = list(predict(models[("class", fmt)][0], images))
    assert [r["top"][0][0] for r in rows] == [t[0][0] for t in reference]
    np.testing.assert_allclose([p for r in rows for _, p in r["top"]], [p for t in reference for _, p in t],
                               atol=TOLERANCE)
    code = main(["predict", str(models[("class", fmt)][0]), *map(str, images), "--csv", str(tmp_path / "p.csv"),
                 "--quiet"])
    assert code == 0 and "12 images predicted" in capsys.readouterr().err


def test_cli_export_names_the_format_and_how_to_load_it(tmp_path, capsys):
    code = main(["export", "--base", "tiny_cnn", "--weights", "random", "--dataset", "cifar10", "--data-dir",
                 str(DATA), "--per-class", "2", "--cache-dir", str(tmp_path / "c"), "--out",
                 str(tmp_path / "m.onnx"), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "(onnx)" in out and "onnxruntime.InferenceSession" in out
    assert read_meta(tmp_path / "m.onnx")["file_format"] == "onnx"


@pytest.mark.parametrize("args,message", [
    (["--out", "m.onnx", "--quantize", "int8"], "--quantize int8 is not a quantization the onnx format takes"),
    (["--out", "m.keras", "--format", "litert"], "must end in .tflite"),
    (["--out", "m.pt"], "says no model format"),
    (["--out", "m.tflite", "--format", "saved_model"], "a SavedModel is a folder"),
])
def test_what_a_format_cannot_do_is_refused_before_any_work(args, message, tmp_path, capsys):
    code = main(["export", "--base", "tiny_cnn", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"),
                 "--cache-dir", str(tmp_path / "c"), *[str(tmp_path / a) if a.startswith("m.") else a for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "what to do" in err
    assert not (tmp_path / "c").exists()


def test_saved_model_force_replaces_only_a_saved_model(made, tmp_path):
    from bottleneck.deploy.formats import check_model_output

    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.jpg").write_bytes(b"x")
    with pytest.raises(BottleneckError, match="not a SavedModel folder"):
        check_model_output(folder, "saved_model", overwrite=True)
    with pytest.raises(BottleneckError, match="exists; it is kept"):
        check_model_output(made[0][("class", "saved_model")][0], "saved_model")
    assert (folder / "keep.jpg").exists()
    # checked before any work, the SavedModel's folder itself is made only when the model is complete
    assert check_model_output(tmp_path / "new" / "served", "saved_model") == tmp_path / "new" / "served"
    assert (tmp_path / "new").is_dir() and not (tmp_path / "new" / "served").exists()


def test_a_saved_model_that_writes_files_is_refused_before_it_loads(made, tmp_path):
    import tensorflow as tf

    target = tmp_path / "written.txt"

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.uint8)])
        def serve(self, pixels):
            tf.io.write_file(str(target), "owned")
            return tf.zeros((tf.shape(pixels)[0], 43))

    m = Writer()
    tf.saved_model.save(m, str(tmp_path / "evil"), signatures={"serving_default": m.serve})
    (tmp_path / "evil" / "assets.extra").mkdir()
    meta = read_meta(made[0][("class", "saved_model")][0])
    (tmp_path / "evil" / "assets.extra" / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(BottleneckError, match="WriteFile"):
        load_model(tmp_path / "evil")
    assert not target.exists()


def test_an_onnx_model_with_outside_data_is_refused(made, tmp_path):
    import onnx

    model = onnx.load(str(made[0][("class", "onnx")][0]))
    onnx.save_model(model, str(tmp_path / "x.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    with pytest.raises(BottleneckError, match="keeps tensors in other files"):
        read_meta(tmp_path / "x.onnx")


def test_a_litert_graph_that_cannot_run_is_a_clear_error(made, tmp_path):
    """A file whose metadata reads but whose graph LiteRT cannot prepare (a flipped operator input)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(made[0][("class", "litert")][0]))
    last = model.subgraphs[0].operators[-1]
    last.inputs = np.array([], np.int32)  # the softmax loses its input
    flatbuffer_utils.write_model(model, str(tmp_path / "broken.tflite"))
    with pytest.raises(BottleneckError, match="LiteRT could not load"):
        load_model(tmp_path / "broken.tflite")


def test_non_tensorflow_backends_say_how_to_export_other_formats_before_any_work(monkeypatch, tmp_path):
    import keras

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for name in ("m.onnx", "m.tflite"):
        with pytest.raises(BottleneckError, match="KERAS_BACKEND=tensorflow"):
            export("tiny_cnn", "cifar10", 2, 0, out=tmp_path / name, data_dir=tmp_path / "none",
                   cache_dir=tmp_path / "c", **TINY)
    assert not (tmp_path / "c").exists()


def test_every_format_is_documented():
    from .conftest import REPO

    guide = (REPO / "docs" / "guide" / "export-predict.md").read_text()
    for fmt in FORMATS:
        assert f"`{fmt}`" in guide


def _build_segmentation(root: Path) -> dict:
    made = {}
    for fmt, name in OUT.items():
        meta = export("tiny_cnn", "camvid", 4, 0, out=root / name, data_dir=DATA, cache_dir=root / "c", image_size=64,
                      head_params={"epochs": 2}, **TINY)
        meta.pop("fitted")
        made[fmt] = {"path": str(root / name), "meta": json.loads(json.dumps(meta, default=str))}
    (root / "made.json").write_text(json.dumps(made))
    return made


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory, worker_id):
    """A CamVid decoder (tiny base, 64 px long side) exported in every format: (path, metadata)."""
    built = _once(tmp_path_factory, worker_id, "segmentation-formats", _build_segmentation)
    return {fmt: (Path(m["path"]), m["meta"]) for fmt, m in built.items()}


@pytest.mark.parametrize("fmt", sorted(OUT))
def test_segmentation_exports_to_every_format_and_predict_scores_the_runs_miou(segmentation, fmt):
    from bottleneck.core.tasks import confusion_matrix
    from bottleneck.data.labelmaps import read_label_map
    from bottleneck.data.sources import file_path

    path, meta = segmentation[fmt]
    ds = load_dataset("camvid", DATA)
    split, task = ds.split("test"), ds.target(None).task
    maps = ds.target(None).values(split)
    images = [file_path(split, i) for i in range(len(split))]
    confusion = np.zeros((task.width, task.width), np.int64)
    for i, row in enumerate(predict(path, images)):
        truth = read_label_map(Path(maps[i]), images[i], task.width, task.void)
        assert row["prediction"].shape == truth.shape and sum(row["fractions"].values()) == pytest.approx(1)
        confusion += confusion_matrix(truth, row["prediction"], task.width, task.void)
    # the run scored maps cached in float16; the exported model computes them in float32
    assert task.metrics(confusion)["miou"] == pytest.approx(meta["score"], abs=2e-3)
    assert read_meta(path)["input"]["canvas"] == meta["input"]["canvas"]


def test_predict_writes_segmentation_masks_and_refuses_them_for_other_models(segmentation, made, tmp_path, capsys):
    from PIL import Image

    from bottleneck.data.labelmaps import class_palette

    images = sorted((DATA / "camvid" / "images" / "test").iterdir())[:2]
    code = main(["predict", str(segmentation["onnx"][0]), *map(str, images), "--masks", str(tmp_path / "masks"),
                 "--csv", str(tmp_path / "s.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "%" in out and "masks" in out
    for image in images:
        mask = Image.open(tmp_path / "masks" / f"{image.stem}.png")
        assert mask.mode == "P" and mask.size == Image.open(image).size
        n = len(segmentation["onnx"][1]["output_names"])
        assert mask.getpalette()[:3 * n] == class_palette(n).ravel().tolist()  # the report's colours
    header = (tmp_path / "s.csv").read_text().splitlines()[0].split(",")
    assert header[1:-1] == segmentation["onnx"][1]["output_names"]
    code = main(["predict", str(made[0][("class", "keras")][0]), str(images[0]), "--masks", str(tmp_path / "m2")])
    assert code == 2 and "--masks writes class maps" in capsys.readouterr().err


def test_segmentation_refuses_int8(tmp_path):
    with pytest.raises(BottleneckError, match="calibrated for pooled heads"):
        export("tiny_cnn", "camvid", 4, 0, out=tmp_path / "s.tflite", quantize="int8", data_dir=DATA,
               cache_dir=tmp_path / "c", image_size=64, **TINY)


def test_int8_holds_near_constant_features_at_their_mean():
    """A feature that barely varies gets a weight that dwarfs the others once standardized: an
    8-bit model holds it at its mean (its part moves into the bias), and the rest keep their weights."""
    import keras

    from bottleneck.deploy.export import QUIET, head_layers
    from bottleneck.learn.heads import make_head

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 6)).astype(np.float32)
    X[:, 2] = 5.0 + 1e-4 * rng.normal(size=200)  # almost constant
    y = (X[:, 0] + X[:, 1] + 1e3 * (X[:, 2] - 5.0) > 0).astype(int)
    head = make_head("logreg", seed=0).fit(X, y)
    inputs = keras.Input((6,))
    plain = keras.Model(inputs, head_layers(head, inputs))
    held = keras.Model(inputs, head_layers(head, inputs, quiet=QUIET))
    w_plain, w_held = plain.get_layer("logreg").get_weights()[0], held.get_layer("logreg").get_weights()[0]
    assert np.abs(w_plain[2]).max() > 10 * np.abs(w_plain[[0, 1]]).max()  # the weight that dwarfs the others
    assert np.all(w_held[2] == 0) and np.allclose(w_held[[0, 1, 3, 4, 5]], w_plain[[0, 1, 3, 4, 5]])
    at_mean = X.copy()
    at_mean[:, 2] = head.pipeline_.steps[0][1].mean_[2]
    # (float32: the plain model's bias cancels a huge weight times the mean, to about 1e-4)
    np.testing.assert_allclose(held.predict(X, verbose=0), plain.predict(at_mean, verbose=0), atol=1e-3)
    np.testing.assert_allclose(plain.predict(X, verbose=0), head.predict_proba(X), atol=1e-3)


def test_mask_files_use_the_reports_class_colours(tmp_path):
    """Past CamVid's 11 classes too: a mask file shows the colours the report's pictures use."""
    from PIL import Image

    from bottleneck.data.labelmaps import class_palette
    from bottleneck.deploy.formats import LoadedModel
    from bottleneck.deploy.predict import write_masks

    names = [f"class{k}" for k in range(15)]
    model = LoadedModel(run=None, meta={"output_names": names, "task": "segmentation"}, path=tmp_path / "m.onnx")
    labels = np.arange(15, dtype=np.uint8).reshape(3, 5)
    (row,) = write_masks(model, [{"path": "a/frame.png", "prediction": labels}], tmp_path / "masks")
    mask = Image.open(row["mask"])
    assert np.array_equal(np.asarray(mask), labels)
    assert mask.getpalette()[:45] == class_palette(15).ravel().tolist()
