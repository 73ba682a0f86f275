"""Data sources: both layouts of each dataset, archives, image modes and bad input."""
from __future__ import annotations

import csv
import os
import pickle
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from bottleneck.data.datasets import list_datasets, load_dataset
from bottleneck.core.errors import DatasetError
from bottleneck.data.images import BadImage, load_image

from .conftest import DATA


def test_cifar10_image_folder_embedded():
    ds = load_dataset("cifar10", DATA)
    assert ds.layout == "image-folder"
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"]  # CIFAR's own label order
    assert len(ds.split("train")) == 1000 and len(ds.split("test")) == 500
    assert np.bincount(ds.split("train").labels).tolist() == [100] * 10
    image = ds.split("test").load(0)
    assert image.mode == "RGB" and image.size == (32, 32)


def _cifar_python(root, per_batch=4):
    """The official Python layout, built from real embedded CIFAR images."""
    ds = load_dataset("cifar10", DATA)
    tr = ds.split("train")
    root.mkdir(parents=True)
    pixels = lambda idx: np.stack([np.asarray(tr.load(int(i))) for i in idx]).transpose(0, 3, 1, 2).reshape(len(idx), -1)
    for b in range(1, 6):
        idx = np.arange((b - 1) * per_batch, b * per_batch) * 37 % len(tr)
        with open(root / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": pixels(idx), "labels": tr.labels[idx].tolist()}, f)
    idx = np.arange(per_batch) * 11
    with open(root / "test_batch", "wb") as f:
        pickle.dump({"data": pixels(idx), "labels": tr.labels[idx].tolist()}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ds.class_names}, f)
    return ds, tr


def test_cifar10_python_layout_and_archive(tmp_path):
    ds0, tr = _cifar_python(tmp_path / "data" / "cifar-10-batches-py")
    ds = load_dataset("cifar10", tmp_path / "data")
    assert ds.layout == "cifar-python" and len(ds.split("train")) == 20 and len(ds.split("test")) == 4
    assert ds.class_names == ds0.class_names
    first = np.asarray(ds.split("train").load(0))
    assert np.array_equal(first, np.asarray(tr.load(0)))  # pixels survive the CHW pickle round trip
    # The same layout as the official .tar.gz: unpacked once into BOTTLENECK_HOME.
    archive = tmp_path / "other" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "data" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    from_tar = load_dataset("cifar10", archive.parent)
    assert from_tar.identity("train") == ds.identity("train")


def test_gtsrb_kaggle_embedded():
    ds = load_dataset("gtsrb", DATA)
    assert ds.layout == "gtsrb-kaggle"
    assert len(ds.class_names) == 43 and ds.class_names[1] == "Speed limit (30km/h)"
    train, test = ds.split("train"), ds.split("test")
    assert len(train) == 43 * 50 and len(test) == 43 * 20
    assert train.groups[0].count("/") == 1  # class/track: frames of one track stay together
    assert len(set(train.groups)) < len(train)


def test_gtsrb_lab_pickles(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "gtsrb"
    root.mkdir()
    for split, n in (("train", 12), ("valid", 4), ("test", 6)):
        with open(root / f"{split}.p", "wb") as f:
            pickle.dump({"features": rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8),
                         "labels": np.arange(n) % 3}, f)
    shutil.copy2(DATA / "gtsrb" / "signnames.csv", root / "signnames.csv")
    ds = load_dataset("gtsrb", tmp_path)
    assert ds.layout == "pickles" and set(ds.splits) == {"train", "valid", "test"}
    assert ds.class_names[0] == "Speed limit (20km/h)"
    assert ds.split("train").load(5).size == (32, 32)



def test_a_head_trains_on_the_python_layout_whose_ids_hold_a_hash(tmp_path):
    """CIFAR's batches give ids like ``data_batch_1#3``: joining the targets to the cached rows
    must not cut them at the '#' (it once did, and every row was 'not in the dataset')."""
    from bottleneck.extraction.views import image_id
    from bottleneck.experiments.run import train

    _cifar_python(tmp_path / "data" / "cifar-10-batches-py")
    row = train("tiny_cnn", "cifar10", 2, data_dir=tmp_path / "data", cache_dir=tmp_path / "c", weights="random",
                progress=False)
    assert row["n_train"] > 0 and row["n_test"] == 4
    assert image_id("data_batch_1#3") == ("data_batch_1#3", "")
    assert image_id("data_batch_1#3#v2") == ("data_batch_1#3", "v2") and image_id("a.jpg#hflip") == ("a.jpg", "hflip")

def test_pickle_label_out_of_range(tmp_path):
    root = tmp_path / "gtsrb"
    root.mkdir()
    with open(root / "train.p", "wb") as f:
        pickle.dump({"features": np.zeros((3, 32, 32, 3), np.uint8), "labels": np.array([0, 1, 2])}, f)
    with open(root / "test.p", "wb") as f:
        pickle.dump({"features": np.zeros((2, 32, 32, 3), np.uint8), "labels": np.array([0, 7])}, f)
    with open(root / "signnames.csv", "w") as f:
        f.write("ClassId,SignName\n0,a\n1,b\n2,c\n")
    with pytest.raises(DatasetError, match="label 7 is out of range"):
        load_dataset("gtsrb", tmp_path)


def test_pickle_features_and_labels_of_different_lengths(tmp_path):
    root = tmp_path / "gtsrb"
    root.mkdir()
    with open(root / "train.p", "wb") as f:
        pickle.dump({"features": np.zeros((5, 32, 32, 3), np.uint8), "labels": np.array([0, 1, 2])}, f)
    with pytest.raises(DatasetError, match="5 images but 3 labels"):
        load_dataset("gtsrb", tmp_path)


def test_folder_dataset_tar_gz(small_cifar, tmp_path):
    archive = tmp_path / "mine.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(small_cifar, arcname="mine")
    ds = load_dataset(f"folder:{archive}")
    assert ds.layout == "image-folder" and len(ds.split("train")) == 24 and len(ds.split("test")) == 12


def test_folder_without_splits_and_ignored_files(tmp_path):
    for c in ("cats", "dogs"):
        (tmp_path / "pets" / c).mkdir(parents=True)
        Image.new("RGB", (20, 10), "red").save(tmp_path / "pets" / c / "a.png")
    (tmp_path / "pets" / "dogs" / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path / 'pets'}")
    assert list(ds.splits) == ["train"] and ds.class_names == ["cats", "dogs"]
    assert [p.endswith("notes.txt") for p in ds.ignored_files] == [True]


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "LA", "CMYK", "1"])
def test_any_mode_becomes_rgb(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    if mode == "I;16":
        Image.fromarray(np.full((4, 5), 65535, np.uint16)).save(path)
    else:
        Image.new(mode, (5, 4)).save(path)
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (5, 4)
    if mode == "I;16":  # 16-bit white stays white, not clipped garbage
        assert np.asarray(image).min() == 255


def test_corrupt_and_empty_images_name_the_file(tmp_path):
    good = DATA / "cifar10" / "train" / "cat"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(next(good.iterdir()).read_bytes()[:200])  # truncated JPEG
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path in (bad, empty):
        with pytest.raises(BadImage) as e:
            load_image(path)
        assert str(path) in str(e.value) and "--skip-bad-images" in str(e.value)


def test_split_class_mismatch(small_cifar):
    shutil.rmtree(small_cifar / "test" / "bird")
    with pytest.raises(DatasetError, match=r"missing from test: \['bird'\]"):
        load_dataset(f"folder:{small_cifar}")


def test_empty_dataset_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has no layout bottleneck knows"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


def test_empty_class_folder(small_cifar):
    (small_cifar / "train" / "zebra").mkdir()
    with pytest.raises(DatasetError, match="zebra has no images"):
        load_dataset(f"folder:{small_cifar}")


def test_unknown_and_missing_datasets(tmp_path):
    with pytest.raises(DatasetError, match="did you mean 'cifar10'"):
        load_dataset("cifar1O", tmp_path)
    with pytest.raises(DatasetError, match="dataset gtsrb not found") as e:
        load_dataset("gtsrb", tmp_path)
    assert "BOTTLENECK_DATA_DIR" in str(e.value)
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_digests_follow_content_and_the_index_reads_only_changed_files(small_cifar):
    from bottleneck.data.content import ContentIndex

    split = load_dataset(f"folder:{small_cifar}").split("train")
    everything = range(len(split))
    before = split.digests(everything)
    index = ContentIndex(small_cifar)
    assert index.digests(split.ids) == before and index.hashed == 0  # all remembered from the first call
    victim = small_cifar / split.ids[3]
    other = small_cifar / split.ids[7]
    data, stat = victim.read_bytes(), victim.stat()
    replacement = other.read_bytes()[: len(data)].ljust(len(data), b"\0")  # same byte size
    victim.write_bytes(replacement)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same modification time
    after = split.digests(everything)
    assert [i for i in everything if after[i] != before[i]] == [3]
    index = ContentIndex(small_cifar)
    index.digests(split.ids)
    assert index.hashed == 0  # the changed file was hashed once, then remembered by its new stat key


def test_list_datasets_reports_locations():
    rows = {r["name"]: r for r in list_datasets(DATA)}
    assert rows["cifar10"]["found"].endswith("cifar10") and rows["gtsrb"]["found"].endswith("gtsrb")


def test_gtsrb_test_csv_missing_file(tmp_path):
    root = tmp_path / "gtsrb"
    shutil.copytree(DATA / "gtsrb", root)
    with open(root / "Test.csv") as f:
        first = next(csv.DictReader(f))["Path"]
    (root / first).unlink()
    with pytest.raises(DatasetError, match="Test.csv lists 1 files that do not exist"):
        load_dataset("gtsrb", tmp_path)
