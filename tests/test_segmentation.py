"""Segmentation on cached feature maps: geometry and label maps, metrics against hand-computed
confusion matrices, the decoder's shapes, lazy reading, bad inputs, and the whole command."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from bottleneck.data.datasets import load_dataset
from bottleneck.core.errors import DatasetError
from bottleneck.core.tasks import Segmentation, confusion_matrix, segmentation_metrics
from bottleneck.learn.decoder import build_decoder, median_frequency_weights
from bottleneck.data.labelmaps import canvas_for, letterbox, letterbox_labels, read_label_map

from .conftest import DATA

TINY = dict(weights="random", progress=False)


def test_letterbox_keeps_the_aspect_and_pads():
    image = Image.fromarray(np.full((360, 480, 3), 200, np.uint8))
    canvas = canvas_for([(480, 360)], 240)
    assert canvas == (192, 256)  # 240 x 180, rounded up to multiples of 32
    out = letterbox(image, 240, canvas)
    assert out.shape == (192, 256, 3) and (out[:180, :240] == 200).all() and (out[180:] == 0).all()
    assert (out[:, 240:] == 0).all()


def test_label_maps_are_resized_with_nearest_only_and_padded_with_void():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 11, (360, 480)).astype(np.uint8)
    labels[:10] = 11  # a band of Void
    out = letterbox_labels(labels, 240, (192, 256), void=11)
    assert set(np.unique(out[:180, :240])) <= set(np.unique(labels))  # no blended ids
    assert (out[180:] == 11).all() and (out[:, 240:] == 11).all() and (out[:5, :240] == 11).all()
    assert np.array_equal(out[:180, :240], labels[1::2, 1::2])  # nearest at an exact halving: pixel centres


def test_bad_label_maps_are_clear_errors(tmp_path):
    image = tmp_path / "a.jpg"
    Image.new("RGB", (48, 32)).save(image)
    other = tmp_path / "a.png"
    Image.fromarray(np.zeros((30, 48), np.uint8)).save(other)
    with pytest.raises(DatasetError, match="a.png is 48x30 but its image .*a.jpg is 48x32"):
        read_label_map(other, image, 11, 11)
    Image.fromarray(np.full((32, 48), 14, np.uint8)).save(other)
    with pytest.raises(DatasetError, match="holds class id 14, beyond codes.txt's 11 classes"):
        read_label_map(other, image, 11, 11)
    with pytest.raises(DatasetError, match="the label map .*missing.png is missing"):
        read_label_map(tmp_path / "missing.png", None, 11, 11)


def test_label_maps_and_frames_over_the_pixel_limit_or_not_images_are_clear_errors(tmp_path, monkeypatch):
    """Their headers are read before anything is decoded, with decode's own checks."""
    from bottleneck.data.images import BadImage
    from bottleneck.extraction.maps import plan_maps

    image = tmp_path / "a.jpg"
    Image.new("RGB", (48, 32)).save(image)
    labels = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(labels)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 48 x 32 = 1,536 pixels is over it
    with pytest.raises(DatasetError, match="cannot read the label map .*a.png: 48 x 32 pixels is over the "
                                           "decompression-bomb limit"):
        read_label_map(labels, None, 11, 11)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # over twice the limit: PIL itself refuses to open it
    with pytest.raises(DatasetError, match="cannot read the label map .*a.png: DecompressionBombError"):
        read_label_map(labels, None, 11, 11)
    monkeypatch.undo()
    labels.write_bytes(b"\x89PNG not really")
    with pytest.raises(DatasetError, match="cannot read the label map .*a.png: UnidentifiedImageError"):
        read_label_map(labels, None, 11, 11)
    name = _segfolder(tmp_path / "seg", 5)
    frame = tmp_path / "seg" / "images" / "1.png"
    frame.write_bytes(b"\x89PNG not really")
    with pytest.raises(BadImage, match="1.png: UnidentifiedImageError"):
        plan_maps("tiny_cnn", name, "train", cache_dir=tmp_path / "c", weights="random")


def test_a_frame_without_its_map_and_a_map_of_another_size(tmp_path):
    root = tmp_path / "camvid"
    shutil.copytree(DATA / "camvid", root)
    victim = sorted((root / "labels" / "test").iterdir())[0]
    image = root / "images" / "test" / (victim.stem + ".jpg")
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(victim)
    from bottleneck.experiments.run import train

    with pytest.raises(DatasetError, match=f"{victim.name} is 100x100 but its image .*{image.name} is 480x360"):
        train("tiny_cnn", f"segfolder:{root}", None, cache_dir=tmp_path / "c", image_size=64,
              head_params={"epochs": 1}, **TINY)
    victim.unlink()
    with pytest.raises(DatasetError, match="has no label map"):
        load_dataset(f"segfolder:{root}")


def test_metrics_from_a_hand_computed_confusion_matrix():
    truth = np.array([[0, 0, 1], [1, 2, 11]])
    pred = np.array([[0, 1, 1], [1, 2, 2]])
    cm = confusion_matrix(truth, pred, 3, void=11)  # the Void pixel is left out
    assert cm.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    m = segmentation_metrics(cm, ["a", "b", "c"])
    assert m["pixel_accuracy"] == pytest.approx(4 / 5)
    assert m["class_accuracy"] == pytest.approx((1 / 2 + 1 + 1) / 3)
    # IoU: a 1/(2+1-1); b 2/(2+3-2); c 1/1
    assert m["iou/a"] == pytest.approx(0.5) and m["iou/b"] == pytest.approx(2 / 3) and m["iou/c"] == 1.0
    assert m["miou"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    # a class neither present nor predicted counts in no mean
    m = segmentation_metrics(np.array([[3, 0], [0, 0]]), ["a", "b"])
    assert m["miou"] == 1.0 and np.isnan(m["iou/b"])
    # a Void code among the classes (fastai's codes) is never scored
    task = Segmentation(("a", "Void", "b"), void=1)
    assert set(task.metrics(np.array([[2, 5, 0], [0, 0, 0], [0, 3, 1]]))) >= {"iou/a", "iou/b"}
    assert "iou/Void" not in task.metrics(np.eye(3, dtype=int))


def test_median_frequency_weights_by_hand():
    maps = [np.array([[0, 0, 0, 1]]), np.array([[0, 2, 2, 2]])]
    w = median_frequency_weights(maps, 3, void=11)
    # frequencies: class 0: 4/8, class 1: 1/4, class 2: 3/4 -> median 0.5
    np.testing.assert_allclose(w, [1.0, 2.0, 2 / 3])


@pytest.mark.parametrize("shapes,out", [({"s8": (7, 9, 4), "s16": (4, 5, 6), "s32": (2, 3, 8)}, (57, 71)),
                                        ({"s8": (35, 35, 3), "s16": (17, 17, 5), "s32": (8, 8, 7)}, (299, 299))])
def test_decoder_output_shape_for_odd_sizes(shapes, out):
    decoder = build_decoder(shapes, 5, out, width=8)
    x = {lv: np.zeros((2, *s), np.float32) for lv, s in shapes.items()}
    y = np.asarray(decoder.predict_on_batch(x))
    assert y.shape == (2, *out, 5)
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-4)


def _segfolder(root, n, size=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "codes.txt").write_text("a\nb\nc\nVoid\n")
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(rng.integers(0, 4, (size[1], size[0])).astype(np.uint8)).save(root / "labels" / f"{i}_P.png")
    (root / "valid.txt").write_text("\n".join(f"{i}.png" for i in range(0, n, 5)))
    return f"segfolder:{root}"


def test_fastais_flat_layout_and_test_fraction(tmp_path):
    name = _segfolder(tmp_path / "flat", 10)
    ds = load_dataset(name)
    assert set(ds.splits) == {"train", "val"} and len(ds.split("val")) == 2
    assert ds.target().task.class_names == ("a", "b", "c") and ds.target().task.void == 3
    from bottleneck.experiments.run import train

    row = train("tiny_cnn", name, None, cache_dir=tmp_path / "c", test_fraction=0.25, head_params={"epochs": 1},
                **TINY)
    assert row["task"] == "segmentation" and row["n_test"] == 2


_LAZY = """
import sys, tracemalloc
from pathlib import Path
from tests.test_segmentation import _segfolder, TINY
from bottleneck.experiments.run import plan_run, split_kwargs, train
from bottleneck.extraction.run import run
root, n = Path(sys.argv[1]), int(sys.argv[2])
name = _segfolder(root / f"d{n}", n, size=(128, 96), seed=n)
kw = dict(cache_dir=root / f"c{n}", test_fraction=0.2, flips=False, **TINY)
head_params = {"epochs": 1, "batch_size": 4}
plan_kwargs, options = split_kwargs(dict(kw))
r = plan_run("tiny_cnn", name, None, 0, head_params=head_params, **plan_kwargs)
for p in (r.train, r.val, r.test):  # the run's maps, extracted first: the measured run reads them from the cache
    if p is not None:
        run(p, options)
tracemalloc.start()
row = train("tiny_cnn", name, None, head_params=head_params, **kw)
assert row["extracted_images"] == 0, row["extracted_images"]
print(tracemalloc.get_traced_memory()[1])
"""


def test_training_reads_maps_lazily(tmp_path):
    """The decoder's batches come from the cache file a few frames at a time: 4x the frames
    must not mean 4x the memory. Each size runs in a process of its own that has run nothing
    yet, so what earlier tests left in this one (TensorFlow's traced functions) is not measured."""
    import sys

    from . import warm

    peaks = {}
    for n in (20, 80):
        out = warm.run([sys.executable, "-c", _LAZY, str(tmp_path), str(n)])
        assert out.returncode == 0, out.stderr
        peaks[n] = int(out.stdout.strip().splitlines()[-1])
    # 60 more frames must cost less than their s2 maps alone as stored (float16): reading every
    # frame's maps at once would add at least that. (Not the peak against all maps in float32:
    # TensorFlow's own allocations make the peak nearly that much, within 1% some runs.)
    extra_maps = 64 * 48 * 8 * 2 * (80 - 20)
    assert peaks[80] < 2 * peaks[20] and peaks[80] - peaks[20] < extra_maps, peaks


def test_camvid_end_to_end_twice(tmp_path, capsys):
    from bottleneck.cli import main

    argv = ["train", "--base", "tiny_cnn", "--weights", "random", "--dataset", "camvid", "--data-dir", str(DATA),
            "--image-size", "96", "--epochs", "2", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "R"), "--plots"]) == 0
    first = capsys.readouterr().out
    assert "12 training frames and their mirror images, 4 validation frames" in first and "miou" in first
    (row,) = json.loads((tmp_path / "R" / "results.json").read_text())
    assert {"miou", "pixel_accuracy", "class_accuracy", "iou/Road"} <= set(row["metrics"])
    assert row["n_test"] == 8 and row["precision"] == "float16" and row["views"] == "frame,hflip"
    names = {p.split("/")[-1] for p in row["plots"]}
    assert names == {"frames.png", "iou.png", "curves.png"}
    assert main([*argv, "--out", str(tmp_path / "R2")]) == 0
    (again,) = json.loads((tmp_path / "R2" / "results.json").read_text())
    assert again["extracted_images"] == 0 and again["metrics"] == row["metrics"]  # reproducible
    assert main([*argv, "--precision", "float32", "--no-flips", "--out", str(tmp_path / "R3")]) == 0
    (third,) = json.loads((tmp_path / "R3" / "results.json").read_text())
    assert third["precision"] == "float32" and third["views"] == "frame" and third["train_cache"] != row["train_cache"]


def test_the_dataset_keeps_its_name():
    assert load_dataset("camvid", DATA).name == "camvid"
