"""Export and predict: one .keras file, loadable without this package, predicting what the
pipeline predicts; `bottleneck predict` on files, folders and globs."""
from __future__ import annotations

import csv
import json
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from bottleneck.bases.registry import REGISTRY
from bottleneck.bases.build import build_feature_model
from bottleneck.cli import main
from bottleneck.data.datasets import load_dataset
from bottleneck.core.errors import BottleneckError
from bottleneck.deploy.export import export, feature_layers
from bottleneck.deploy.formats import load_model
from bottleneck.data.images import BadImage, resize
from bottleneck.deploy.predict import predict

from . import warm
from .conftest import DATA, copy_cifar_subset

TINY = dict(weights="random", progress=False)


@pytest.mark.parametrize("mode", sorted({s.preprocessing for s in REGISTRY.values()}))
def test_built_in_preprocessing_gives_the_pipelines_features(mode):
    """Every preprocessing, in Keras's own layers, gives the features the cache holds. On the tiny
    base's trunk given each registered preprocessing: the trunk is the same in both models, only
    the preprocessing differs (a real base of each kind took 12 s of the suite for the same check)."""
    import dataclasses

    import keras

    spec = dataclasses.replace(REGISTRY["tiny_cnn"], preprocessing=mode)
    size = 32
    pixels = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    pipeline = np.asarray(build_feature_model(spec, size, None).predict_on_batch(pixels))
    inputs = keras.Input((size, size, 3), dtype="uint8")
    exported = keras.Model(inputs, feature_layers(spec, size, None, None, "avg", inputs))
    np.testing.assert_allclose(np.asarray(exported.predict_on_batch(pixels)), pipeline, rtol=1e-4, atol=1e-4)


# Run in a fresh process, without this package: each folder's m.keras predicts its x.npy into y.npy.
_FRESH = """
import json, sys
import numpy as np
import keras
for folder in sys.argv[1:]:
    model = keras.saving.load_model(folder + "/m.keras")
    np.save(folder + "/y.npy", np.asarray(model.predict(np.load(folder + "/x.npy"), verbose=0)))
print(json.dumps({"bottleneck_imported": any(m == "bottleneck" or m.startswith("bottleneck.") for m in sys.modules)}))
"""
EXPORTS = [("class", "logreg", "avg"), ("class", "mlp", "avg"), ("class", "logreg", "grid2"),
           ("attributes", "logreg", "avg"), ("attributes", "dense", "avg"), ("box", "ridge", "avg"),
           ("box", "dense", "avg")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each exported model with the pipeline's predictions on the test images, and what one fresh
    process without this package predicts with every model (a process costs a Keras import, and
    what it shows is the same for each model). One cache serves them all, as it serves every target."""
    root = tmp_path_factory.mktemp("exported")
    split = load_dataset("gtsrb", DATA).split("test")
    where = {sid: i for i, sid in enumerate(split.ids)}
    made = {}
    for target, head, pooling in EXPORTS:
        folder = root / f"{target}-{head}-{pooling}"
        params = {"epochs": 3} if head in ("dense", "mlp") else None
        meta = export("tiny_cnn", "gtsrb", 5, 0, head, target=target, out=folder / "m.keras", data_dir=DATA,
                      cache_dir=root / "c", head_params=params, pooling=pooling, **TINY)
        fitted = meta["fitted"]
        pipeline = fitted.model.predict(fitted.test.features) if fitted.row["task"] == "regression" \
            else fitted.model.predict_proba(fitted.test.features)
        np.save(folder / "x.npy", np.stack([resize(split.load(where[sid], 32), 32) for sid in fitted.test.source_ids]))
        made[(target, head, pooling)] = (folder, fitted, pipeline)
    # A child of the tests' bare warm server: Keras imported, this package never (tests/warm.py).
    out = warm.run([sys.executable, "-c", _FRESH, *[str(f) for f, _, _ in made.values()]], cwd=root, timeout=300,
                   bare=True)
    assert out.returncode == 0, out.stderr
    return made, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("target,head,pooling", EXPORTS)
def test_exported_model_loads_without_bottleneck_and_predicts_like_the_pipeline(exported, target, head, pooling):
    made, fresh_process = exported
    folder, fitted, pipeline = made[(target, head, pooling)]
    assert fresh_process == {"bottleneck_imported": False}
    fresh = np.load(folder / "y.npy")
    assert fresh.shape == pipeline.shape == (860, {"class": 43, "attributes": 20, "box": 4}[target])
    np.testing.assert_allclose(fresh, pipeline, atol=1e-5)
    with zipfile.ZipFile(folder / "m.keras") as z:
        stored = json.loads(z.read("bottleneck.json"))
    assert stored["target"] == target and stored["head"] == head and stored["metrics"] == fitted.row["metrics"]
    assert stored["train_cache"]["settings"] == fitted.train.settings and stored["input"]["size"] == 32
    if target == "attributes":
        assert stored["groups"]["shape"][0] == "circle" and stored["output_names"][0] == "shows_number"


@pytest.fixture(scope="module")
def cifar_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    export("tiny_cnn", "cifar10", 10, 0, "logreg", out=d / "m.keras", data_dir=DATA, cache_dir=d / "c", **TINY)
    return d / "m.keras"


def list_constants(model) -> list[str]:
    """Layers (nested ones too) whose constants are Python lists: Keras tracks each item as a
    container, and a file of long ones loaded in seconds per layer (a detector's anchors: 22 s)."""
    found = []
    for layer in model.layers:
        if any(isinstance(getattr(layer, a, None), list) for a in ("scale", "offset")):
            found.append(layer.name)
        found += list_constants(layer) if hasattr(layer, "layers") else []
    return found


def test_an_exported_scaler_holds_arrays_not_lists(exported):
    import keras

    for key in (("class", "mlp", "avg"), ("box", "dense", "avg")):  # a Keras head's scaler; a decoder
        model = keras.saving.load_model(exported[0][key][0] / "m.keras", safe_mode=True)
        assert "scaler" in [layer.name for layer in model.layers] and not list_constants(model), key


def test_predict_on_a_folder_scores_what_the_table_says(cifar_model, tmp_path, capsys):
    folder = copy_cifar_subset(tmp_path / "imgs", classes=10, train=1, test=50) / "test"
    code = main(["predict", str(cifar_model), str(folder), "--csv", str(tmp_path / "p.csv"), "--quiet"])
    assert code == 0 and "500 images predicted" in capsys.readouterr().err
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    accuracy = np.mean([r["top1"] == r["path"].split("/")[-2] for r in rows])
    assert len(rows) == 500 and accuracy == pytest.approx(load_model(cifar_model).meta["score"])


def test_predict_files_globs_modes_and_bad_images(cifar_model, tmp_path, capsys):
    src = sorted((DATA / "cifar10" / "test" / "cat").iterdir())[:3]
    gray = tmp_path / "gray.png"
    Image.open(src[0]).convert("L").resize((300, 200)).save(gray)  # another size and mode
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    rows = list(predict(cifar_model, [src[1], str(DATA / "cifar10" / "test" / "dog" / "00[0-2]*.jpg"), gray, bad],
                        skip_bad_images=True, top_k=2))
    assert rows[0]["path"] == str(src[1]) and len(rows[0]["top"]) == 2
    assert rows[-2]["path"] == str(gray) and "prediction" in rows[-2]
    assert rows[-1] == {"path": str(bad), "error": rows[-1]["error"]} and "bad.jpg" in rows[-1]["error"]
    with pytest.raises(BadImage, match="bad.jpg"):
        list(predict(cifar_model, [bad]))
    with pytest.raises(BottleneckError, match="does not exist"):
        list(predict(cifar_model, [tmp_path / "nope.jpg"]))
    code = main(["predict", str(cifar_model), str(bad)])
    assert code == 2 and "bad.jpg" in capsys.readouterr().err


def test_predict_streams_in_flat_memory(cifar_model, tmp_path):
    """Decoded images are not kept: 10x the images must not mean 10x the memory."""
    import tracemalloc

    rng = np.random.default_rng(0)

    def folder(n):
        d = tmp_path / f"f{n}"
        d.mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
        return d

    model = load_model(cifar_model)
    list(predict(model, [folder(8)]))  # warm up
    peaks = {}
    for n in (40, 400):
        d = folder(n)
        tracemalloc.start()
        count = sum(1 for _ in predict(model, [d], batch_size=8))
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert count == n
    assert peaks[400] < 2 * peaks[40], peaks


def test_load_model_refuses_other_files(tmp_path):
    (tmp_path / "x.keras").write_text("not a zip")
    with pytest.raises(BottleneckError, match="is not a model exported by bottleneck"):
        load_model(tmp_path / "x.keras")
    with pytest.raises(BottleneckError, match="does not exist"):
        load_model(tmp_path / "nope.keras")


def test_export_command(capsys, tmp_path):
    code = main(["export", "--base", "tiny_cnn", "--weights", "random", "--dataset", f"folder:{DATA / 'cifar10'}",
                 "--per-class", "5", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "m.keras"),
                 "--quiet"])
    out = capsys.readouterr().out
    assert code == 0 and "keras.saving.load_model" in out and (tmp_path / "m.keras").exists()
    assert not list(tmp_path.glob(".*.tmp*"))


# ---------------------------------------------------------------- pictures and the report


def test_compare_plots_and_report_page(tmp_path, capsys):
    import re

    out = tmp_path / "R"
    code = main(["compare", "--bases", "tiny_cnn", "--weights", "random", "--datasets", "gtsrb", "--data-dir",
                 str(DATA), "--cache-dir", str(tmp_path / "c"), "--per-class", "3,6", "--seeds", "0", "--head",
                 "dense", "--epochs", "2", "--out", str(out), "--plots", "--quiet"])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    for r in rows:
        names = {p.split("/")[-1] for p in r["plots"]}
        assert names == {"confusion.png", "per_class.png", "images.png", "curves.png"}, names
        for p in r["plots"]:
            assert Image.open(out / p).size[0] > 300
    assert (out / "plots" / "score_vs_limit.png").exists()
    page = (out / "report.html").read_text()
    assert page.count("<details class='run'") == 2 and "<table>" in page and "dense" in page
    assert len(re.findall(r'<img src="data:image/png;base64,', page)) == 2 * 4 + 1  # self-contained
    assert "src=\"http" not in page and "href=\"http" not in page
    # `report` draws again from what the folder keeps (no dataset needed)
    for p in (out / "plots").rglob("*.png"):
        p.unlink()
    assert main(["report", str(out)]) == 0
    assert len(list((out / "plots").rglob("*.png"))) == 2 * 4 + 1


def test_pictures_of_the_other_tasks(tmp_path):
    from bottleneck.report.html import write_report
    from bottleneck.experiments.run import train

    kw = dict(data_dir=DATA, cache_dir=tmp_path / "c", image_size=32, out=tmp_path / "R", plots=True, **TINY)
    multi = train("tiny_cnn", "gtsrb", 5, target="attributes", **kw)
    box = train("tiny_cnn", "gtsrb", 5, target="box", **kw)
    assert {p.split("/")[-1] for p in multi["plots"]} == {"precision_recall.png"}
    assert {p.split("/")[-1] for p in box["plots"]} == {"boxes.png", "predicted_vs_true.png"}
    page = write_report(tmp_path / "R").read_text()
    assert "target attributes" in page and "mean_iou" in page


def test_plots_need_an_out_folder(capsys):
    code = main(["train", "--base", "tiny_cnn", "--weights", "random", "--dataset", "cifar10", "--data-dir", str(DATA),
                 "--plots"])
    assert code == 2 and "--plots needs --out" in capsys.readouterr().err


def test_saved_predictions_are_plain_arrays(tmp_path):
    from bottleneck.experiments.run import train

    train("tiny_cnn", "cifar10", 3, data_dir=DATA, cache_dir=tmp_path / "c", out=tmp_path / "R", **TINY)
    (saved,) = (tmp_path / "R" / "rows").glob("*.npz")
    with np.load(saved, allow_pickle=False) as z:  # nothing in it needs pickle
        assert z["y_true"].shape == (500,) and z["outputs"].shape == (500, 10) and len(z["thumbs"]) == 48


@pytest.mark.parametrize("setting", [{"crop": 0.1}, {"resize": "device"}, {"resize": "device-mixed"},
                                     {"compute": "bfloat16"}])
def test_export_refuses_features_the_exported_model_would_not_make(tmp_path, setting):
    """The exported model takes whole images, resized on the host, in float32: a head trained on
    cropped, device-resized or bfloat16 features would see other features there."""
    from bottleneck.core.errors import BottleneckError
    from bottleneck.deploy.export import export

    with pytest.raises(BottleneckError, match="exported model takes whole images"):
        export("tiny_cnn", "gtsrb", 2, data_dir=DATA, cache_dir=tmp_path / "c", weights="random", progress=False,
               out=tmp_path / "m.keras", image_size=40, **setting)
    assert not (tmp_path / "c").exists() and not (tmp_path / "m.keras").exists()  # refused before any work


# ---------------------------------------------------------------- hardening (issue 25)

def _with_meta(src, dest, **changes):
    """A copy of the model ``src`` whose bottleneck.json has ``changes``."""
    with zipfile.ZipFile(src) as z, zipfile.ZipFile(dest, "w") as out:
        for info in z.infolist():
            data = z.read(info)
            if info.filename == "bottleneck.json":
                data = json.dumps({**json.loads(data), **changes}).encode()
            out.writestr(info, data)
    return dest


def test_predict_refuses_to_overwrite_its_model_or_images_before_any_work(cifar_model, tmp_path, capsys):
    image = sorted((DATA / "cifar10" / "test" / "cat").iterdir())[0]
    model_bytes, copy = cifar_model.read_bytes(), tmp_path / "cat.jpg"
    copy.write_bytes(image.read_bytes())
    for target in (cifar_model, copy):
        assert main(["predict", str(cifar_model), str(copy), "--csv", str(target)]) == 2
    assert cifar_model.read_bytes() == model_bytes and copy.read_bytes() == image.read_bytes()
    (tmp_path / "p.csv").write_text("earlier predictions")
    assert main(["predict", str(cifar_model), str(copy), "--csv", str(tmp_path / "p.csv")]) == 2
    assert "exists; it is kept" in capsys.readouterr().err
    assert main(["predict", str(cifar_model), str(copy), "--csv", str(tmp_path / "p.csv"), "--force"]) == 0
    assert (tmp_path / "p.csv").read_text().startswith("path,top1")


def test_predict_on_one_image_never_pads_to_a_huge_batch(cifar_model, tmp_path):
    model = load_model(cifar_model)
    shapes = []
    real = model.keras_model.predict_on_batch
    model.keras_model.predict_on_batch = lambda x: (shapes.append(x.shape), real(x))[1]
    image = sorted((DATA / "cifar10" / "test" / "cat").iterdir())[0]
    rows = list(predict(model, [image, image, image], batch_size=100_000))
    assert len(rows) == 3 and [s[0] for s in shapes] == [3]


def test_a_fifo_or_device_in_a_predict_folder_is_skipped_not_waited_on(cifar_model, tmp_path, capsys):
    import os

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(sorted((DATA / "cifar10" / "test" / "cat").iterdir())[0].read_bytes())
    os.mkfifo(folder / "b.jpg")
    (folder / "c.jpg").symlink_to("/dev/zero")
    assert main(["predict", str(cifar_model), str(folder), "--skip-bad-images"]) == 0
    captured = capsys.readouterr()
    assert "FIFO" in captured.out and "character device" in captured.out
    assert "1 images predicted" in captured.err and "2 unreadable" in captured.err


def test_class_names_with_terminal_escapes_are_printed_escaped(cifar_model, tmp_path, capsys):
    names = load_model(cifar_model).meta["output_names"]
    evil = _with_meta(cifar_model, tmp_path / "evil.keras",
                      output_names=["\x1b]0;pwned\x07\x1b[2J" + n for n in names])
    image = sorted((DATA / "cifar10" / "test" / "cat").iterdir())[0]
    assert main(["predict", str(evil), str(image)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\\x1b]0;pwned" in out


def test_metadata_that_disagrees_with_the_model_is_refused(cifar_model, tmp_path):
    with pytest.raises(BottleneckError, match="says"):
        load_model(_with_meta(cifar_model, tmp_path / "a.keras", input={"size": 64}))
    with pytest.raises(BottleneckError, match="says"):
        load_model(_with_meta(cifar_model, tmp_path / "b.keras", output_names=["one", "two"]))


def test_a_model_refused_by_keras_safe_mode_is_a_clear_error(tmp_path, capsys):
    import keras

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    path = tmp_path / "lambda.keras"
    model.save(path)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("bottleneck.json", json.dumps({"format": "bottleneck-model", "task": "single_label",
                                                  "input": {"size": 8}, "output_names": ["a", "b", "c"]}))
    assert main(["predict", str(path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Keras could not load" in err and "unsafe" in err and "Traceback" not in err
