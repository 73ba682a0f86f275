"""Targets: the GTSRB attribute table, boxes, CamVid presence, users' CSVs, and one feature
cache serving every target of its images."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from PIL import Image

import bottleneck.extraction.model as ex_model
import bottleneck.extraction.plan as ex_plan
from bottleneck.extraction.run import extract
from bottleneck.cli import main
from bottleneck.data.datasets import load_dataset
from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.experiments.run import train
from bottleneck.data.targets import gtsrb_attribute_table, gtsrb_attributes

from .conftest import DATA, copy_cifar_subset

TINY = dict(weights="random", progress=False)


# ---------------------------------------------------------------- the GTSRB attribute table


def test_attribute_table_is_consistent_with_the_signs():
    table = gtsrb_attribute_table()
    names = {int(r["ClassId"]): r["SignName"] for r in csv.DictReader(open(DATA / "gtsrb" / "signnames.csv"))}
    assert sorted(map(int, table["classes"])) == list(range(43))
    for c, entry in table["classes"].items():
        name = names[int(c)]
        assert entry["name"] == name
        for group, values in table["groups"].items():
            assert entry[group] in values, (c, group)  # exactly one value of each exclusive group
        assert set(entry["has"]) <= set(table["labels"])
        # what the names say
        if name.startswith("Speed limit"):
            assert entry["category"] == "speed_limit" and "shows_number" in entry["has"]
        if name.startswith("End of"):
            assert entry["category"] == "end_of_restriction" and "crossed_out" in entry["has"]
            assert entry["colour"] == "white"
        if entry["category"] == "mandatory":
            assert entry["colour"] == "blue" and "shows_arrow" in entry["has"]
        if entry["category"] == "warning":
            assert entry["shape"] == "triangle"
    _, by_class = gtsrb_attributes()
    assert by_class.shape == (43, 20) and len({tuple(r) for r in by_class}) < 43  # some signs look alike


def test_attribute_shapes_and_colours_match_meta_csv():
    """GTSRB's own Meta.csv gives each class a ShapeId and ColorId: the table agrees with every one."""
    shapes = {0: "triangle", 1: "circle", 2: "diamond", 3: "octagon", 4: "inverted_triangle"}
    colours = {0: "red", 1: "blue", 2: "yellow", 3: "white"}
    table = gtsrb_attribute_table()["classes"]
    rows = list(csv.DictReader(open(DATA / "gtsrb" / "Meta.csv")))
    assert len(rows) == 43
    for row in rows:
        entry = table[row["ClassId"]]
        assert entry["shape"] == shapes[int(row["ShapeId"])], row
        assert entry["colour"] == colours[int(row["ColorId"])], row


def test_boxes_are_fractions_of_the_image():
    ds = load_dataset("gtsrb", DATA)
    split = ds.split("test")
    boxes = ds.target("box").values(split)
    assert boxes.shape == (len(split), 4) and boxes.min() >= 0 and boxes.max() <= 1
    with open(DATA / "gtsrb" / "Test.csv") as f:
        first = next(csv.DictReader(f))
    i = split.ids.index(first["Path"])
    w, h = float(first["Width"]), float(first["Height"])
    expected = [float(first["Roi.X1"]) / w, float(first["Roi.Y1"]) / h, float(first["Roi.X2"]) / w,
                float(first["Roi.Y2"]) / h]
    np.testing.assert_allclose(boxes[i], expected)


# ---------------------------------------------------------------- one cache, every target


def test_one_feature_cache_serves_three_targets_without_a_second_model_run(tmp_path, monkeypatch):
    builds = []
    real = ex_plan.build_feature_model
    monkeypatch.setattr(ex_plan, "build_feature_model", lambda *a, **k: builds.append(a) or real(*a, **k))
    ex_model.clear_models()
    kw = dict(cache_dir=tmp_path / "c", data_dir=DATA, image_size=32, **TINY)
    rows = {t: train("tiny_cnn", "gtsrb", None, target=t, **kw) for t in ("class", "attributes", "box")}
    assert len(builds) == 1  # the base ran for the first target only
    assert rows["attributes"]["extracted_images"] == rows["box"]["extracted_images"] == 0
    assert len({r["train_cache"] for r in rows.values()}) == 1 and len({r["test_cache"] for r in rows.values()}) == 1
    assert (rows["class"]["task"], rows["attributes"]["task"], rows["box"]["task"]) == \
        ("single_label", "multi_label", "regression")
    assert {"mAP", "accuracy_multi", "exact_match", "group_accuracy/shape"} <= set(rows["attributes"]["metrics"])
    assert {"mean_iou", "baseline_mean_iou", "r2", "mse"} <= set(rows["box"]["metrics"])
    assert rows["box"]["head"] == "ridge" and rows["attributes"]["head"] == "logreg"


def test_a_per_label_draw_reuses_rows_extracted_for_another_target(tmp_path):
    kw = dict(cache_dir=tmp_path / "c", data_dir=DATA, image_size=32, **TINY)
    by_class = extract("tiny_cnn", "gtsrb", "train", 20, target="class", **kw)
    by_label = extract("tiny_cnn", "gtsrb", "train", 20, target="attributes", **kw)
    assert by_class.settings["draw"] == "class" and by_label.settings["draw"] == "labels:attributes"
    assert by_label.path != by_class.path
    ds = load_dataset("gtsrb", DATA)
    Y = ds.target("attributes").join(ds.split("train"), by_label.source_ids)
    assert (Y.sum(axis=0) >= 20).all()  # every attribute has 20 positive images
    shared = len(set(by_label.source_ids) & set(by_class.source_ids))
    assert by_label.info["reused"] == shared and by_label.info["extracted"] == len(by_label) - shared


def test_train_and_compare_write_metrics_pictures_and_one_table_per_target(capsys, tmp_path):
    out = tmp_path / "R"
    common = ["--base", "tiny_cnn", "--weights", "random", "--image-size", "32", "--dataset", "gtsrb",
              "--data-dir", str(DATA), "--cache-dir", str(tmp_path / "c"), "--per-class", "10", "--quiet"]
    assert main(["train", *common, "--target", "attributes", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "target attributes (multi_label)" in said and "mAP" in said and "group_accuracy/shape" in said
    (row,) = json.loads((out / "results.json").read_text())
    assert {"mAP", "accuracy_multi", "exact_match", "group_accuracy/shape", "group_accuracy/category",
            "group_accuracy/colour", "precision/circle", "support/shows_arrow"} <= set(row["metrics"])
    png = out / row["plots"][0]
    assert png.exists() and Image.open(png).size[0] > 400
    assert main(["train", *common, "--target", "box", "--out", str(out)]) == 0
    box = [r for r in json.loads((out / "results.json").read_text()) if r["target"] == "box"][0]
    assert box["metric"] == "mean_iou" and "baseline_mean_iou" in box["metrics"]
    capsys.readouterr()
    assert main(["compare", "--bases", "tiny_cnn", "--weights", "random", "--image-size", "32", "--datasets", "gtsrb",
                 "--data-dir", str(DATA), "--cache-dir", str(tmp_path / "c"), "--per-class", "10",
                 "--target", "class,attributes,box", "--quiet"]) == 0
    table = capsys.readouterr().out
    for heading in ("**target class** (single_label): accuracy", "**target attributes** (multi_label): mAP",
                    "**target box** (regression): mean_iou"):
        assert heading in table
    assert "mean_iou on each dataset's test split" in table


def test_camvid_presence(tmp_path):
    ds = load_dataset("camvid", DATA)
    assert set(ds.splits) == {"train", "val", "test"} and ds.target().name == "segmentation"
    Y = ds.target("presence").values(ds.split("train"))
    assert Y.shape == (12, 11) and Y[:, 0].all()  # every frame shows sky
    row = train("tiny_cnn", "camvid", None, target="presence", data_dir=DATA, cache_dir=tmp_path / "c",
                image_size=32, **TINY)
    assert row["task"] == "multi_label" and row["metric"] == "mAP" and row["n_test"] == 8


def test_camvid_bad_label_maps(tmp_path):
    root = tmp_path / "camvid"
    shutil.copytree(DATA / "camvid", root)
    victim = sorted((root / "labels" / "train").iterdir())[0]
    Image.fromarray(np.full((360, 480), 15, np.uint8)).save(victim)
    ds = load_dataset(f"folder:{root}")
    with pytest.raises(DatasetError, match=f"{victim.name} holds class id 15, beyond codes.txt's 11 classes"):
        ds.target("presence").values(ds.split("train"))
    victim.unlink()
    with pytest.raises(DatasetError, match="has no label map"):
        load_dataset(f"folder:{root}")


# ---------------------------------------------------------------- a user's CSVs


def _images(tmp_path, n=12):
    src = copy_cifar_subset(tmp_path / "src", classes=3, train=4, test=1)
    files = sorted(src.rglob("*.jpg"))[:n]
    folder = tmp_path / "ds" / "img"
    folder.mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / f"{f.parent.name}_{f.name}")
    return sorted(p.name for p in folder.iterdir())


def _write(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_multilabel_csv_with_groups_trains(tmp_path):
    names = _images(tmp_path)
    labels = [("day" if i % 2 else "night") + (" rain" if i % 3 == 0 else "") for i in range(len(names))]
    path = _write(tmp_path / "ds" / "labels.csv", ["file", "labels", "is_valid"],
                  [(f"img/{n}", lab, i >= 9) for i, (n, lab) in enumerate(zip(names, labels))])
    (tmp_path / "ds" / "labels.task.json").write_text(json.dumps({"groups": {"light": ["day", "night"]}}))
    ds = load_dataset(f"multilabel:{path}")
    assert len(ds.split("train")) == 9 and len(ds.split("test")) == 3
    task = ds.target().task
    assert task.labels == ("rain", "day", "night") and task.groups == (("light", ("day", "night")),)
    row = train("tiny_cnn", f"multilabel:{path}", None, cache_dir=tmp_path / "c", **TINY)
    assert row["target"] == "labels" and "group_accuracy/light" in row["metrics"]


@pytest.mark.parametrize("case,message", [
    ("missing file", "line 3: image 'img/nope.jpg' is not a file inside"),
    ("two of a group", "line 2 \\(img/.*\\) has 2 labels of the exclusive group 'light' \\(day, night\\)"),
    ("unknown label", "line 2 \\(img/.*\\): unknown label 'fog'"),
    ("label in two groups", "label 'day' is in two groups, 'light' and 'time'"),
    ("group of one", "group 'light' has 1 label"),
    ("escaping path", "line 3: image '../../etc/passwd' is not a file inside"),
    ("bad is_valid", "line 2: is_valid is 'maybe'"),
])
def test_multilabel_csv_errors_name_the_row(tmp_path, case, message):
    names = _images(tmp_path, 3)
    rows = [[f"img/{names[0]}", "day", "0"], [f"img/{names[1]}", "night", "1"]]
    decl = {"groups": {"light": ["day", "night"]}}
    if case == "missing file":
        rows[1][0] = "img/nope.jpg"
    elif case == "two of a group":
        rows[0][1] = "day night"
    elif case == "unknown label":
        rows[0][1] = "day fog"
        decl["labels"] = ["day", "night"]
    elif case == "label in two groups":
        decl = {"groups": {"light": ["day", "night"], "time": ["day", "night"]}}
    elif case == "group of one":
        decl = {"groups": {"light": ["day"]}}
    elif case == "escaping path":
        rows[1][0] = "../../etc/passwd"
    elif case == "bad is_valid":
        rows[0][2] = "maybe"
    path = _write(tmp_path / "ds" / "labels.csv", ["file", "labels", "is_valid"], rows)
    (tmp_path / "ds" / "labels.task.json").write_text(json.dumps(decl))
    with pytest.raises(DatasetError, match=message):
        load_dataset(f"multilabel:{path}")


@pytest.mark.parametrize("value,message", [("fast", "speed is 'fast', not a number"),
                                           ("nan", "a target is NaN or infinite"),
                                           ("1.5", "share = 1.5 is outside its range")])
def test_regression_csv_errors_name_the_row(tmp_path, value, message):
    names = _images(tmp_path, 3)
    rows = [[f"img/{names[0]}", "0.5", "30"], [f"img/{names[1]}", "0.2", "50"], [f"img/{names[2]}", "0.1", "70"]]
    rows[2][2 if value == "fast" else 1] = value
    path = _write(tmp_path / "ds" / "values.csv", ["file", "share", "speed"], rows)
    (tmp_path / "ds" / "values.task.json").write_text(json.dumps({"ranges": {"share": [0, 1]}}))
    with pytest.raises(DatasetError, match=message) as e:
        load_dataset(f"regression:{path}")
    assert "values.csv, line 4 (img/" in str(e.value)


def test_regression_csv_without_a_test_split_trains_with_test_fraction(tmp_path):
    names = _images(tmp_path, 12)
    rows = [[f"img/{n}", f"{(i % 5) / 5:.2f}", str(10 * i)] for i, n in enumerate(names)]
    path = _write(tmp_path / "ds" / "values.csv", ["file", "share", "speed"], rows)
    with pytest.raises(DatasetError, match="values.csv has no is_valid column"):
        train("tiny_cnn", f"regression:{path}", 5, cache_dir=tmp_path / "c", **TINY)
    row = train("tiny_cnn", f"regression:{path}", None, cache_dir=tmp_path / "c", test_fraction=0.25, **TINY)
    assert row["task"] == "regression" and row["metric"] == "r2" and "baseline_r2" in row["metrics"]
    assert row["n_train"] + row["n_test"] == 12


# ---------------------------------------------------------------- classes never seen


def test_holding_out_classes_scores_only_unseen_classes(tmp_path):
    kw = dict(cache_dir=tmp_path / "c", data_dir=DATA, image_size=32, **TINY)
    row = train("tiny_cnn", "gtsrb", 10, target="attributes", holdout_classes=["1", "Keep left"], **kw)
    assert row["holdout_classes"] == [1, 39] and row["n_test"] == 40  # 20 test images of each held-out class
    from bottleneck.cache.store import read_features

    tr = read_features(tmp_path / "c" / row["train_cache"])
    te = read_features(tmp_path / "c" / row["test_cache"])
    assert not {1, 39} & set(tr.labels.tolist()) and set(te.labels.tolist()) == {1, 39}
    with pytest.raises(BottleneckError, match="holding out classes needs a target that describes classes"):
        train("tiny_cnn", "gtsrb", 10, holdout_classes=["1"], **kw)
    with pytest.raises(DatasetError, match="has no class 'Keep middle'"):
        train("tiny_cnn", "gtsrb", 10, target="attributes", holdout_classes=["Keep middle"], **kw)


def test_unknown_target_suggests_the_nearest(tmp_path):
    with pytest.raises(DatasetError, match="has no target 'atributes' \\(did you mean 'attributes'\\?\\)"):
        train("tiny_cnn", "gtsrb", 10, target="atributes", data_dir=DATA, cache_dir=tmp_path, **TINY)


def test_the_listed_targets_are_the_datasets_own():
    from bottleneck.data.datasets import DATASETS

    for name, known in DATASETS.items():
        assert list(load_dataset(name, DATA).targets) == list(known.targets)


def test_options_a_head_does_not_use_are_said(tmp_path, caplog):
    import logging
    import warnings

    from bottleneck.learn.heads import HeadWarning

    caplog.set_level(logging.WARNING, logger="bottleneck")
    kw = dict(cache_dir=tmp_path / "c", data_dir=DATA, image_size=32, **TINY)
    train("tiny_cnn", "gtsrb", 2, target="attributes", loss="bce", head_params={"tune_thresholds": True}, **kw)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "--tune-thresholds not used by the logreg head" in said and "--loss bce not used by the logreg head" in said
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train("tiny_cnn", "gtsrb", 2, head="dense", head_params={"epochs": 1, "tune_thresholds": True}, **kw)
    assert any(issubclass(w.category, HeadWarning) and "tune_thresholds is for multi-label" in str(w.message)
               for w in caught)
