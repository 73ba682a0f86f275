"""Detection on cached feature maps: box coding, matching, focal loss and NMS against
hand-computed values; COCO evaluation on cases whose AP is known; mirrored boxes and
classes; the GTSDB, COCO and YOLO readers and their errors; whole runs on small folders
made here, twice; memory flat in the number of scenes."""
from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bottleneck.core.boxes import coco_metrics, mirrored
from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.data.datasets import load_dataset
from bottleneck.learn.detector import (
    BACKGROUND,
    IGNORE,
    anchor_boxes,
    match,
    suppress,
)

from . import warm
from .conftest import REPO

SHARED = REPO.parent / "shared" / "datasets"
TINY = dict(weights="random", progress=False)


# ------------------------------------------------------------------ folders made here

def _scene(rng, size, n_objects):
    """Dark noise with red (class 0) and blue (class 1) squares of 16-40 pixels."""
    w, h = size
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    objects = []
    for _ in range(n_objects):
        s = int(rng.integers(16, 40))
        x, y, c = int(rng.integers(0, w - s)), int(rng.integers(0, h - s)), int(rng.integers(0, 2))
        img[y:y + s, x:x + s] = (230, 30, 30) if c == 0 else (30, 30, 230)
        objects.append((x, y, x + s, y + s, c))
    return img, objects


def yolo_folder(root, n_train=12, n_test=6, size=(160, 128), seed=0) -> str:
    """A YOLO folder (images/{train,test}, labels/{train,test}, classes.txt); scene 0 of each
    split has no object and no label file, scene 1 an empty label file."""
    rng = np.random.default_rng(seed)
    (root / "labels").mkdir(parents=True)
    (root / "classes.txt").write_text("red\nblue\n")
    for split, n in (("train", n_train), ("test", n_test)):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir()
        for i in range(n):
            img, objects = _scene(rng, size, 0 if i < 2 else int(rng.integers(1, 3)))
            Image.fromarray(img).save(root / "images" / split / f"{i:03d}.png")
            lines = [f"{c} {(x1 + x2) / 2 / size[0]:.6f} {(y1 + y2) / 2 / size[1]:.6f} {(x2 - x1) / size[0]:.6f} "
                     f"{(y2 - y1) / size[1]:.6f}" for x1, y1, x2, y2, c in objects]
            if i != 0:
                (root / "labels" / split / f"{i:03d}.txt").write_text("".join(f"{line}\n" for line in lines))
    return f"yolo:{root}"


def coco_from_yolo(yolo_root, root) -> str:
    """The same scenes as a COCO folder: train.json, test.json, images/ (copied)."""
    ds = load_dataset(f"yolo:{yolo_root}")
    for split in ("train", "test"):
        s = ds.split(split)
        images, annotations = [], []
        for i, sid in enumerate(s.ids):
            name = sid.split("/", 1)[1]
            (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "images" / name).write_bytes((yolo_root / sid).read_bytes())
            images.append({"id": 100 + i, "file_name": name, "width": 160, "height": 128})
            for x1, y1, x2, y2, c in ds.target().values(s)[i]:
                annotations.append({"id": len(annotations) + 7, "image_id": 100 + i, "category_id": int(c) + 1,
                                    "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)], "iscrowd": 0})
        doc = {"images": images, "annotations": annotations,
               "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]}
        (root / f"{split}.json").write_text(json.dumps(doc))
    return f"coco:{root}"


def gtsdb_folder(root, scenes: dict[int, list[tuple]], size=(136, 80)) -> str:
    """A GTSDB-shaped folder: images/NNNNN.jpg, gt.txt (inclusive pixel boxes), ReadMe.txt's table."""
    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    lines = []
    for n, objects in scenes.items():
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / f"{n:05d}.jpg")
        lines += [f"{n:05d}.ppm;{x1};{y1};{x2 - 1};{y2 - 1};{c}" for x1, y1, x2, y2, c in objects]
    (root / "gt.txt").write_text("\n".join(lines) + "\n")
    return str(root)


# ------------------------------------------------------------------ anchors, matching, box coding

def test_anchors_are_laid_out_level_row_column_anchor():
    a = anchor_boxes({"s8": (2, 3), "s16": (1, 1)}, {"s8": 8, "s16": 16})
    assert a.shape == ((2 * 3 + 1) * 3, 4)
    first = a[0]  # level s8, row 0, column 0, scale 1: side 16 centred on (4, 4)
    np.testing.assert_allclose(first, [-4, -4, 12, 12])
    np.testing.assert_allclose(a[3], [4, -4, 20, 12])  # the next column's first anchor
    np.testing.assert_allclose(a[9], [-4, 4, 12, 20])  # the next row's
    np.testing.assert_allclose(a[18], [8 - 16, 8 - 16, 8 + 16, 8 + 16])  # level s16: side 32 centred on (8, 8)
    side = a[:3, 2] - a[:3, 0]
    np.testing.assert_allclose(side, 16 * np.array([1, 2 ** (1 / 3), 2 ** (2 / 3)]), rtol=1e-6)


def test_match_positive_ignored_background_and_forced():
    anchors = np.array([[0, 0, 10, 10],  # the object itself: IoU 1
                        [0, 0, 10, 9],  # IoU 0.9: positive too
                        [0, 0, 10, 4.5],  # IoU 0.45: ignored
                        [50, 50, 60, 60],  # background
                        [100, 100, 140, 140]], np.float32)  # the best anchor of a small object inside it
    objects = np.array([[0, 0, 10, 10, 3], [110, 110, 120, 120, 1]], np.float32)  # the second: IoU 0.0625 with anchor 4
    classes, deltas = match(anchors, objects)
    assert classes.tolist() == [3, 3, IGNORE, BACKGROUND, 1]
    np.testing.assert_allclose(deltas[0], 0, atol=1e-6)
    # Keras's centre_yxhw coding: anchor 1 is centre (y 4.5, x 5), size (9, 10); the object's centre is 0.5 lower
    # (0.5 / 9 of the anchor's height), its height 10/9 of the anchor's; divided by the variance (.1, .1, .2, .2)
    np.testing.assert_allclose(deltas[1], [0.5 / 9 / 0.1, 0, np.log(10 / 9) / 0.2, 0], atol=1e-5)
    empty_classes, _ = match(anchors, np.zeros((0, 5), np.float32))
    assert (empty_classes == BACKGROUND).all()


def test_box_coding_round_trip():
    """Every anchor that learns an object decodes its deltas back to that object's box."""
    from keras.utils import bounding_boxes

    from bottleneck.learn.detector import VARIANCE

    anchors = anchor_boxes({"s8": (6, 8), "s16": (3, 4)}, {"s8": 8, "s16": 16})
    for box in ([5, 7, 25, 30], [30, 10, 48, 29], [2, 12, 60, 47], [40.5, 3.25, 57, 19.75]):
        classes, deltas = match(anchors, np.array([[*box, 1]], np.float32))
        positive = classes >= 0
        assert positive.any() and (classes[positive] == 1).all()
        decoded = np.asarray(bounding_boxes.decode_deltas_to_boxes(anchors[positive], deltas[positive], "xyxy", "xyxy",
                                                                   variance=VARIANCE))
        np.testing.assert_allclose(decoded, np.broadcast_to(box, decoded.shape), atol=1e-3)


def test_focal_loss_by_hand():
    """The detector's class loss is Keras's focal loss with RetinaNet's alpha .25, gamma 2:
    -alpha_t (1 - p_t)^gamma log p_t, averaged over classes, summed over anchors."""
    import keras

    from bottleneck.learn.detector import build_detector, compile_detector

    model = build_detector({"s8": 4}, 2, 3)
    compile_detector(model, 1e-3)
    loss = model.loss["classes"]
    logits = np.array([[[2.0, -1.0], [-3.0, 0.5]]], np.float32)
    y = np.array([[[1.0, 0.0], [0.0, 1.0]]], np.float32)
    p = 1 / (1 + np.exp(-logits))
    p_t = np.where(y == 1, p, 1 - p)
    alpha_t = np.where(y == 1, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_t) ** 2 * np.log(p_t)).mean(axis=-1).sum()
    assert float(loss(y, logits)) == pytest.approx(expected, rel=1e-5)
    assert isinstance(loss, keras.losses.BinaryFocalCrossentropy)


def test_nms_by_hand():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 9], [0, 0, 10, 9], [20, 20, 30, 30], [0, 0, 4, 10]], np.float32)
    scores = np.array([[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.6, 0.0], [0.5, 0.01]], np.float32)
    out = suppress(boxes, scores, score_threshold=0.05, iou_threshold=0.5)
    # box 1 (IoU 0.9 with box 0, same class) goes; box 2 is another class; box 4 (IoU 0.4) stays; 0.01 is dropped
    kept = {(tuple(np.round(r[:4], 3)), int(r[4]), round(float(r[5]), 3)) for r in out}
    assert kept == {((0, 0, 10, 10), 0, 0.9), ((0, 0, 10, 9), 1, 0.7), ((20, 20, 30, 30), 0, 0.6),
                    ((0, 0, 4, 10), 0, 0.5)}
    assert list(out[:, 5]) == sorted(out[:, 5], reverse=True)
    assert suppress(boxes, scores * 0, 0.05).shape == (0, 6)


# ------------------------------------------------------------------ COCO evaluation

def test_coco_metrics_on_cases_with_a_known_ap():
    names = ("a", "b", "c")
    truth = [np.array([[0, 0, 10, 10, 0], [20, 20, 40, 40, 1]], np.float32), np.zeros((0, 5), np.float32)]
    perfect = [np.array([[0, 0, 10, 10, 0, .9], [20, 20, 40, 40, 1, .8]], np.float32), np.zeros((0, 6), np.float32)]
    m = coco_metrics(truth, perfect, names)
    assert m["map"] == pytest.approx(1) and m["map50"] == pytest.approx(1) and "ap50/c" not in m  # c: no object
    # class b missed, and a false positive of class a in the empty scene scored above the true one
    found = [np.array([[0, 0, 10, 10, 0, .8]], np.float32), np.array([[50, 50, 60, 60, 0, .9]], np.float32)]
    m = coco_metrics(truth, found, names)
    assert m["ap50/a"] == pytest.approx(0.5) and m["ap50/b"] == 0  # precision 1/2 at the only recall level
    assert m["map50"] == pytest.approx(0.25)
    # IoU 0.64 (8x10 inside 10x10... shifted): counts at .50, not at .75
    shifted = [np.array([[0, 0, 10, 10, 0, .9], [20, 20, 40, 32.8, 1, .8]], np.float32), np.zeros((0, 6))]
    m = coco_metrics(truth, shifted, names, groups=(("ab", (0, 1)), ("c only", (2,))))
    assert m["ap50/b"] == pytest.approx(1) and m["map75"] == pytest.approx(0.5)
    assert m["ap50/ab"] == pytest.approx(1) and "ap50/c only" not in m
    assert coco_metrics(truth, [np.zeros((0, 6))] * 2, names)["map50"] == 0


# ------------------------------------------------------------------ mirror images

def test_mirrored_boxes_and_the_sign_flip_table(tmp_path):
    from bottleneck.experiments.detection import mirror_table
    from bottleneck.data.detection import gtsrb_class_names

    names = gtsrb_class_names()
    left, right, limit = names.index("Turn left ahead"), names.index("Turn right ahead"), 1
    objects = np.array([[10, 20, 30, 40, left], [50, 5, 60, 15, names.index("Yield")]], np.float32)
    ds = load_dataset(f"folder:{gtsdb_folder(tmp_path / 'g', {0: [(1, 1, 20, 20, left)]})}")
    signs, _ = mirror_table(ds, ds.target("signs"))
    assert signs[left] == right and signs[right] == left and limit not in signs
    out = mirrored(objects, 100, signs)
    np.testing.assert_allclose(out, [[70, 20, 90, 40, right], [40, 5, 50, 15, names.index("Yield")]])
    with pytest.raises(KeyError):
        mirrored(np.array([[1, 1, 5, 5, limit]], np.float32), 100, signs)
    cats, _ = mirror_table(ds, ds.target("categories"))
    assert cats == {0: 0, 1: 1, 2: 2, 3: 3}  # a mirrored sign keeps its category (no vehicles: prohibitory)


def test_only_scenes_whose_signs_all_mirror_are_mirrored(tmp_path):
    from bottleneck.experiments.run import plan_run

    names = load_dataset(f"folder:{gtsdb_folder(tmp_path / 'x', {0: []})}").target().task.class_names
    left, limit = names.index("Turn left ahead"), 1
    root = gtsdb_folder(tmp_path / "g", {0: [(5, 5, 30, 30, left)], 1: [(5, 5, 30, 30, left), (40, 5, 70, 40, limit)],
                                         2: [], 3: [(60, 20, 90, 50, names.index("Yield"))], 600: [(1, 1, 20, 20, 13)]})
    r = plan_run("tiny_cnn", f"folder:{root}", None, 0, target="signs", cache_dir=tmp_path / "c", **TINY)
    assert r.train.samples.ids == [f"images/{n:05d}.jpg" for n in (0, 1, 2, 3)]
    assert [r.train.samples.ids[i] for i in r.mirror.selected] == ["images/00000.jpg", "images/00003.jpg"]
    assert r.mirror.recipe.views == ("hflip",) and r.mirror.recipe.canvas == r.train.recipe.canvas
    assert plan_run("tiny_cnn", f"folder:{root}", None, 0, target="signs", cache_dir=tmp_path / "c", flips=False,
                    **TINY).mirror is None


# ------------------------------------------------------------------ readers

def test_gtsdb_categories_are_the_readme_s():
    """The package's table (gtsdb_categories.json) against the benchmark's own ReadMe.txt."""
    from bottleneck.data.detection import gtsdb_table

    with tarfile.open(SHARED / "gtsdb.tar.gz") as tar:
        member = next(m for m in tar if m.name.endswith("ReadMe.txt"))
        text = tar.extractfile(member).read().decode("latin-1")
    listed = re.findall(r"^(\d+) = (.*) \((\w+)\)\s*$", text, re.M)
    assert len(listed) == 43
    table = gtsdb_table()
    assert {c: v["category"] for c, v in table["classes"].items()} == {c: cat for c, _, cat in listed}
    assert table["categories"] == ["prohibitory", "danger", "mandatory", "other"]


def test_gtsdb_reader(tmp_path):
    root = gtsdb_folder(tmp_path / "g", {0: [(10, 20, 30, 44, 14)], 1: [], 599: [(0, 0, 16, 16, 38)],
                                         600: [(100, 50, 136, 80, 1), (5, 5, 21, 21, 33)]})
    ds = load_dataset(f"folder:{root}")
    assert ds.layout == "gtsdb" and len(ds.split("train")) == 3 and len(ds.split("test")) == 1
    signs = ds.target().values(ds.split("train"))
    np.testing.assert_array_equal(signs[0], [[10, 20, 30, 44, 14]])  # gt.txt's inclusive right/bottom + 1
    assert signs[1].shape == (0, 5)  # a scene without a sign stays in, as a negative
    cats = ds.target("categories").values(ds.split("test"))[0]
    assert cats[:, 4].tolist() == [0, 2]  # speed limit 30: prohibitory; go right: mandatory
    assert ds.target("categories").task.class_names == ("prohibitory", "danger", "mandatory", "other")


@pytest.mark.parametrize("line, culprit", [
    ("00000.ppm;10;20;30", "line 2: '00000.ppm;10;20;30' is not"),
    ("00000.ppm;10;20;30;40;43", "line 2: unknown class id 43"),
    ("00000.ppm;10;20;9;40;1", "line 2: the box (10, 20, 10, 41) has zero or negative size"),
    ("00000.ppm;100;20;140;40;1", "line 2: the box (100, 20, 141, 41) is outside its 136x80 image"),
    ("00007.ppm;10;20;30;40;1", "line 2: the scene 00007.ppm is not in"),
    ("00000.ppm;a;20;30;40;1", "line 2: the box and class must be whole numbers"),
])
def test_gtsdb_errors_name_the_line(tmp_path, line, culprit):
    root = tmp_path / "g"
    gtsdb_folder(root, {0: [(1, 1, 5, 5, 1)]})
    (root / "gt.txt").write_text((root / "gt.txt").read_text() + line + "\n")
    with pytest.raises(DatasetError, match=re.escape(culprit)) as e:
        load_dataset(f"folder:{root}")
    assert "gt.txt" in str(e.value)


def test_a_readme_that_disagrees_with_the_package_is_an_error(tmp_path):
    root = tmp_path / "g"
    gtsdb_folder(root, {0: []})
    (root / "ReadMe.txt").write_text("0 = speed limit 20 (prohibitory)\n1 = speed limit 30 (danger)\n")
    with pytest.raises(DatasetError, match="puts class 1 in category danger"):
        load_dataset(f"folder:{root}")


def test_coco_and_yolo_give_the_same_objects(tmp_path):
    yolo = yolo_folder(tmp_path / "y")
    coco = coco_from_yolo(tmp_path / "y", tmp_path / "c")
    a, b = load_dataset(yolo), load_dataset(coco)
    assert a.target().task.class_names == b.target().task.class_names == ("red", "blue")
    for split in ("train", "test"):
        va, vb = a.target().values(a.split(split)), b.target().values(b.split(split))
        assert len(va) == len(vb)
        for x, y in zip(va, vb):
            np.testing.assert_allclose(x, y, atol=1e-3)
    assert sum(len(v) for v in a.target().values(a.split("train"))) > 5


def _edit_json(path, edit):
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("edit, culprit", [
    (lambda d: d["annotations"][0].update(bbox=[150, 10, 20, 20]), "annotation id 7: the box (150, 10, 170, 30) is "
                                                                    "outside its 160x128 image"),
    (lambda d: d["annotations"][0].update(bbox=[10, 10, 0, 20]), "annotation id 7: the box (10, 10, 10, 30) has zero"),
    (lambda d: d["annotations"][0].update(category_id=9), "annotation id 7: unknown category_id 9"),
    (lambda d: d["annotations"][0].update(image_id=5), "annotation id 7: image_id 5 is no image"),
    (lambda d: d["images"][0].update(file_name="gone.png"), "image id 100: the image 'gone.png' is not under"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), "image id 100: the image '../../etc/passwd'"),
    (lambda d: d["annotations"][0].update(bbox="10 10 5 5"), "annotation id 7: bbox must be"),
    (lambda d: d["annotations"][0].update(iscrowd=1), "annotation id 7 is a crowd region"),
    (lambda d: d.pop("categories"), "has no 'images' and 'categories' lists"),
])
def test_coco_errors_name_the_annotation(tmp_path, edit, culprit):
    coco_from_yolo(tmp_path / "y", tmp_path / "c") if yolo_folder(tmp_path / "y") else None
    _edit_json(tmp_path / "c" / "train.json", edit)
    with pytest.raises(DatasetError, match=re.escape(culprit)) as e:
        load_dataset(f"coco:{tmp_path / 'c'}")
    assert "train.json" in str(e.value)


@pytest.mark.parametrize("write, culprit", [
    (lambda r: (r / "labels/train/orphan.txt").write_text("0 .5 .5 .1 .1\n"),
     "orphan.txt is the label file of no image"),
    (lambda r: (r / "labels/train/001.txt").write_text("2 .5 .5 .1 .1\n"), "001.txt, line 1: unknown class id 2"),
    (lambda r: (r / "labels/train/001.txt").write_text("0 .5 .5 .1 .1\n0 .95 .5 .2 .1\n"),
     "001.txt, line 2: the box (136, 57.6, 168, 70.4) is outside its 160x128 image"),
    (lambda r: (r / "labels/train/001.txt").write_text("0 .5 .5 0 .1\n"), "001.txt, line 1: the box (80, 57.6, 80, 70.4) "
                                                                        "has zero"),
    (lambda r: (r / "labels/train/001.txt").write_text("0 .5 .5\n"), "001.txt, line 1: '0 .5 .5' is not 'class cx cy w h'"),
    (lambda r: (r / "labels/train/001.txt").write_text("x .5 .5 .1 .1\n"), "001.txt, line 1: 'x .5 .5 .1 .1': the class"),
    (lambda r: (r / "classes.txt").unlink(), "names no classes"),
])
def test_yolo_errors_name_the_file_and_line(tmp_path, write, culprit):
    root = tmp_path / "y"
    yolo_folder(root)
    write(root)
    with pytest.raises(DatasetError, match=re.escape(culprit)):
        load_dataset(f"yolo:{root}")


def test_yolo_names_from_data_yaml(tmp_path):
    root = tmp_path / "y"
    yolo_folder(root)
    (root / "classes.txt").unlink()
    (root / "data.yaml").write_text("path: .\nnames:\n  0: red\n  1: blue\n")
    assert load_dataset(f"yolo:{root}").target().task.class_names == ("red", "blue")
    (root / "data.yaml").write_text("names: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(DatasetError, match="data.yaml is not YAML"):  # safe_load: data, never code
        load_dataset(f"yolo:{root}")


# ------------------------------------------------------------------ whole runs

def test_yolo_and_coco_train_and_score_twice_the_same(tmp_path, capsys):
    from bottleneck.cli import main

    yolo = yolo_folder(tmp_path / "y")
    coco = coco_from_yolo(tmp_path / "y", tmp_path / "c")
    argv = ["train", "--base", "tiny_cnn", "--weights", "random", "--epochs", "2", "--window", "64",
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main([*argv, "--dataset", yolo, "--out", str(tmp_path / "R"), "--plots"]) == 0
    printed = capsys.readouterr().out
    assert "12 training scenes, detector: map50" in printed and "on 6 test scenes" in printed
    (row,) = json.loads((tmp_path / "R" / "results.json").read_text())
    assert row["task"] == "detection" and row["metric"] == "map50" and row["views"] == "scene"
    assert {"map", "map50", "map75", "ap50/red", "ap50/blue"} <= set(row["metrics"])
    assert row["extracted_images"] == 18 and row["n_objects_test"] > 0
    assert {p.split("/")[-1] for p in row["plots"]} == {"scenes.png", "precision_recall.png", "curves.png"}
    assert "every training scene" in (tmp_path / "R" / "table.md").read_text()
    assert "scenes.png" in (tmp_path / "R" / "report.html").read_text()
    assert main([*argv, "--dataset", yolo, "--out", str(tmp_path / "R2")]) == 0
    (again,) = json.loads((tmp_path / "R2" / "results.json").read_text())
    assert again["extracted_images"] == 0 and again["metrics"] == row["metrics"]  # reproducible, from the cache
    assert main([*argv, "--dataset", coco, "--out", str(tmp_path / "R3")]) == 0
    (third,) = json.loads((tmp_path / "R3" / "results.json").read_text())
    assert third["n_train"] == 12 and set(third["metrics"]) == set(row["metrics"])


def test_a_detector_learns_the_coloured_squares(tmp_path):
    """Not a benchmark: on scenes whose objects are plain red and blue squares, a few epochs on
    a random tiny base must find most of them (AP50 well above a detector that guesses)."""
    from bottleneck.experiments.run import train

    name = yolo_folder(tmp_path / "y", n_train=40, n_test=10, seed=3)
    row = train("tiny_cnn", name, None, cache_dir=tmp_path / "c", head_params={"epochs": 12, "window": 64},
                **TINY)
    assert row["metrics"]["map50"] > 0.3, row["metrics"]


def test_misuse_is_a_clear_error(tmp_path):
    from bottleneck.experiments.run import plan_run

    name = yolo_folder(tmp_path / "y", n_train=3, n_test=2)
    kw = dict(cache_dir=tmp_path / "c", **TINY)
    for bad, what in ((dict(head="logreg"), "the logreg head cannot learn target boxes (detection)"),
                      (dict(head_params={"window": 100}), "window 100 is not a multiple of 32"),
                      (dict(head_params={"anchors": 3}), "the detector head has no parameter anchors"),
                      (dict(recipe="best"), "recipes are for pooled features, not detection"),
                      (dict(layer="s2"), "--layer and --pooling are for pooled features")):
        with pytest.raises(BottleneckError, match=re.escape(what)):
            plan_run("tiny_cnn", name, None, 0, **{**kw, **bad})


def test_export_then_predict_gives_the_runs_detections(tmp_path, capsys):
    """The exported file (boxes decoded inside it, NMS after it) loads without this package and,
    run with NMS on the test scenes, gives the run's mAP."""
    import csv
    import sys

    from bottleneck.cli import main
    from bottleneck.core.boxes import coco_metrics

    name = yolo_folder(tmp_path / "y", n_train=16, n_test=6, seed=3)
    model = tmp_path / "det.keras"
    assert main(["export", "--base", "tiny_cnn", "--weights", "random", "--dataset", name, "--epochs", "6",
                 "--window", "64", "--cache-dir", str(tmp_path / "c"), "--out", str(model), "--quiet"]) == 0
    assert ", input uint8 128x160x3; map50" in capsys.readouterr().out  # the canvas, not a square
    meta = json.loads(__import__("zipfile").ZipFile(model).read("bottleneck.json"))
    assert meta["task"] == "detection" and meta["nms"]["iou_threshold"] == 0.5
    capsys.readouterr()
    boxes = tmp_path / "boxes.csv"
    assert main(["predict", str(model), str(tmp_path / "y" / "images" / "test"), "--csv", str(boxes),
                 "--draw", str(tmp_path / "drawn")]) == 0
    rows = list(csv.DictReader(boxes.open()))
    assert rows and set(rows[0]) == {"path", "x1", "y1", "x2", "y2", "class", "score", "error"}
    assert len(list((tmp_path / "drawn").iterdir())) == 6
    ds = load_dataset(name)
    split = ds.split("test")
    truth = list(ds.target().values(split))
    found = [np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] + [("red", "blue").index(r["class"]),
                                                                           float(r["score"])]
                       for r in rows if r["path"].endswith(sid)]).reshape(-1, 6) for sid in split.ids]
    assert coco_metrics(truth, found, ("red", "blue"))["map50"] == pytest.approx(meta["metrics"]["map50"], abs=1e-3)
    # a fresh process without the package: plain Keras loads it (safe mode) and its output has the documented shape
    code = ("import sys; sys.modules['bottleneck'] = None; import keras, numpy as np; "  # importing it would fail
            "m = keras.saving.load_model(sys.argv[1], safe_mode=True); "
            "print(m.predict(np.zeros((1, *m.input_shape[1:]), 'uint8'), verbose=0).shape)")
    done = warm.run([sys.executable, "-c", code, str(model)], cwd=tmp_path, bare=True)  # Keras alone imported
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith(", 6)")  # (1, anchors, 4 + 2 classes)
    import keras

    from .test_export import list_constants

    assert not list_constants(keras.saving.load_model(model, safe_mode=True))  # the anchors: arrays
    # the same detector as ONNX gives the same boxes and scores
    from bottleneck.deploy.formats import load_model

    assert main(["export", "--base", "tiny_cnn", "--weights", "random", "--dataset", name, "--epochs", "6",
                 "--window", "64", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "det.onnx"),
                 "--quiet"]) == 0
    a, b = load_model(model), load_model(tmp_path / "det.onnx")
    pixels = np.random.default_rng(0).integers(0, 255, (1, *a.input_shape, 3), dtype=np.uint8)
    np.testing.assert_allclose(b.run(pixels), a.run(pixels), atol=1e-3)


def test_detect_then_classify_names_each_box_within_its_category(tmp_path, capsys):
    """The two-stage pipeline end to end on a GTSDB-shaped folder and the embedded GTSRB: each
    box found by the category detector is cropped, classified among its category's classes,
    and the result scored on the 43 sign classes."""
    from bottleneck.data.detection import gtsdb_table
    from bottleneck.experiments.two_stage import detect_then_classify

    data = tmp_path / "data"
    data.mkdir()
    (data / "gtsrb").symlink_to(REPO / "data" / "gtsrb")
    signs = {n: [(10 + 5 * (n % 7), 10, 50 + 5 * (n % 7), 50, [1, 14, 33, 18][n % 4])] for n in range(8)}
    signs.update({600 + n: [(20, 15, 60, 55, [1, 14, 33, 18][n % 4])] for n in range(4)})
    gtsdb_folder(data / "gtsdb", signs, size=(160, 96))
    out = detect_then_classify("tiny_cnn", data_dir=data, cache_dir=tmp_path / "c", weights="random",
                               detector_params={"epochs": 2, "window": 64}, classifier_recipe="plain",
                               classifier_per_class=5)
    from bottleneck.cli import main

    assert main(["detect-then-classify", "--base", "tiny_cnn", "--weights", "random", "--data-dir", str(data),
                 "--cache-dir", str(tmp_path / "c"), "--recipe", "plain", "--per-class", "5", "--epochs", "2",
                 "--window", "64"]) == 0  # the same run again, from the cache
    assert f"map50 {out['metrics']['map50']:.4f}" in capsys.readouterr().out
    assert out["detector"]["target"] == "categories" and out["classifier"]["n_train"] == 5 * 43
    assert out["crops"] > 0 and {"map", "map50", "map75"} <= set(out["metrics"])
    assert set(k for k in out["metrics"] if k.startswith("ap50/")) <= {
        f"ap50/{n}" for n in load_dataset("gtsdb", data).target("signs").task.class_names} | {
        f"ap50/{c}" for c in gtsdb_table()["categories"]}


def test_boxes_are_named_within_their_category_by_hand():
    from bottleneck.experiments.two_stage import name_boxes

    groups = (("round", (0, 1)), ("square", (2, 3)))
    found = [np.array([[0, 0, 10, 10, 0, 0.8], [5, 5, 9, 9, 1, 0.5]], np.float32), np.zeros((0, 6), np.float32)]
    probs = np.array([[0.1, 0.3, 0.6, 0.0],  # category round: class 1 (0.3 of its 0.4), though class 2 is likelier
                      [0.5, 0.0, 0.1, 0.4]])  # category square: class 3 (0.4 of its 0.5)
    named, chosen = name_boxes(found, [(0, 0), (0, 1)], probs, groups)
    assert chosen.tolist() == [1, 3] and named[1].shape == (0, 6)
    np.testing.assert_allclose(named[0], [[0, 0, 10, 10, 1, 0.8 * 0.75], [5, 5, 9, 9, 3, 0.5 * 0.8]], rtol=1e-6)


_LAZY = """
import sys, tracemalloc
from pathlib import Path
from tests.test_detection import yolo_folder, TINY
from bottleneck.experiments.run import plan_run, split_kwargs, train
from bottleneck.extraction.run import run
root, n = Path(sys.argv[1]), int(sys.argv[2])
name = yolo_folder(root / f"d{n}", n_train=n, n_test=4, size=(256, 192), seed=n)
head_params = {"epochs": 1, "batch_size": 4, "window": 64}
plan_kwargs, options = split_kwargs(dict(cache_dir=root / f"c{n}", **TINY))
r = plan_run("tiny_cnn", name, None, 0, head_params=head_params, **plan_kwargs)
for p in (r.train, r.mirror, r.test):  # the run's maps, extracted first: the measured run reads them from the cache
    if p is not None:
        run(p, options)
tracemalloc.start()
row = train("tiny_cnn", name, None, head_params=head_params, cache_dir=root / f"c{n}", **TINY)
assert row["extracted_images"] == 0, row["extracted_images"]
print(tracemalloc.get_traced_memory()[1])
"""


@pytest.mark.slow
def test_training_reads_scene_maps_lazily(tmp_path):
    """The detector's windows come from the cache file a few scenes at a time: 4x the scenes must
    not mean 4x the memory (each size in a process of its own, as segmentation's test does)."""
    import sys

    peaks = {}
    for n in (20, 80):
        out = warm.run([sys.executable, "-c", _LAZY, str(tmp_path), str(n)])
        assert out.returncode == 0, out.stderr[-3000:]
        peaks[n] = int(out.stdout.strip().splitlines()[-1])
    # 60 more scenes must cost less than their finest maps as stored (float16, 128x96 cells of 8 channels)
    extra_maps = 128 * 96 * 8 * 2 * (80 - 20)
    assert peaks[80] < 2 * peaks[20] and peaks[80] - peaks[20] < extra_maps, peaks


def test_the_embedded_gtsdb_end_to_end_twice(tmp_path, capsys):
    """The real scenes of data/gtsdb through the command line: categories, mirrored scenes,
    COCO's figures; the second run extracts nothing and gives the same numbers."""
    from bottleneck.cli import main

    from .conftest import DATA

    argv = ["train", "--base", "tiny_cnn", "--weights", "random", "--dataset", "gtsdb", "--data-dir", str(DATA),
            "--target", "categories", "--image-size", "320", "--epochs", "2", "--window", "64",
            "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "R")]) == 0
    printed = capsys.readouterr().out
    assert "16 training scenes and" in printed and "on 8 test scenes (" in printed
    (row,) = json.loads((tmp_path / "R" / "results.json").read_text())
    assert row["n_mirrored"] > 0 and row["views"] == "scene,hflip" and row["image_size"] == 320
    assert {"map", "map50", "map75", "ap50/prohibitory"} <= set(row["metrics"])
    assert main([*argv, "--out", str(tmp_path / "R2")]) == 0
    (again,) = json.loads((tmp_path / "R2" / "results.json").read_text())
    assert again["extracted_images"] == 0 and again["metrics"] == row["metrics"]


def test_large_scenes_are_extracted_in_small_batches(tmp_path, monkeypatch):
    """A batch holds at most PIXELS_PER_BATCH canvas pixels (a batch of 32 GTSDB scenes peaked at
    11 GB); the features do not depend on the batch."""
    from bottleneck.extraction import maps
    from bottleneck.extraction.run import run

    root = gtsdb_folder(tmp_path / "g", {n: [] for n in range(6)}, size=(136, 80))
    p = maps.plan_maps("tiny_cnn", f"folder:{root}", "train", cache_dir=tmp_path / "a", weights="random")
    assert p.recipe.canvas == (96, 160) and p.recipe.max_batch == maps.PIXELS_PER_BATCH // (96 * 160)
    whole = run(p)
    monkeypatch.setattr(maps, "PIXELS_PER_BATCH", 2 * 96 * 160)
    q = maps.plan_maps("tiny_cnn", f"folder:{root}", "train", cache_dir=tmp_path / "b", weights="random")
    small = run(q)
    assert small.info["batch_size"] == 2 and whole.info["batch_size"] == 6
    from bottleneck.cache.maps import MapReader

    a, b = MapReader(whole.path), MapReader(small.path)
    for lv in a.levels:
        np.testing.assert_allclose(a.read(range(6))[lv], b.read(range(6))[lv], atol=1e-2)
    a.close(), b.close()


def test_an_exported_gtsdb_detector_gives_the_same_boxes_without_the_package(tmp_path):
    """bench/standalone_detect.py (plain Keras, PIL, TensorFlow's NMS, pycocotools; importing
    bottleneck fails there) on the embedded GTSDB's test scenes finds the boxes ``predict`` finds
    (a low score threshold, so that a barely trained tiny base still finds many), and scores them."""
    import sys

    from bottleneck.cli import main
    from bottleneck.deploy.predict import predict

    from .conftest import DATA

    model = tmp_path / "cat.keras"
    assert main(["export", "--base", "tiny_cnn", "--weights", "random", "--dataset", "gtsdb", "--data-dir", str(DATA),
                 "--target", "categories", "--image-size", "320", "--epochs", "2", "--window", "64",
                 "--score-threshold", "0.001", "--cache-dir", str(tmp_path / "c"), "--out", str(model),
                 "--quiet"]) == 0
    done = warm.run([sys.executable, str(REPO / "bench" / "standalone_detect.py"), str(model), str(DATA / "gtsdb"),
                     str(tmp_path / "found.json")], cwd=tmp_path, timeout=300, bare=True)  # Keras alone imported
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["scenes"] == 8 and r["found"] > 50
    theirs = json.loads((tmp_path / "found.json").read_text())
    tests = sorted(p for p in (DATA / "gtsdb" / "images").iterdir() if int(p.stem) >= 600)
    for row in predict(model, tests):
        mine = np.asarray(row["prediction"])
        other = np.asarray(theirs.get(Path(row["path"]).name, []), np.float32).reshape(-1, 6)
        assert mine.shape == other.shape
        np.testing.assert_allclose(mine, other, atol=1e-3)
