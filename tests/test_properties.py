"""Property and fuzz tests: fingerprints, the CIFAR download fallback, loaders on junk bytes."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bottleneck.data.images import BadImage, load_image
from bottleneck.cache.store import feature_key, fingerprint

from .conftest import DATA, REPO

SETTINGS = {"dataset": "cifar10", "dataset_id": "abc", "split": "train", "base": "vgg16", "weights": "imagenet:x",
            "layer": "block5_pool", "pooling": "avg", "image_size": 224, "resize": "pil-bilinear",
            "preprocessing": "caffe", "per_class": 100, "seed": 0, "selection": "def", "content": "0123",
            "test_fraction": None, "extractor": 2}


def test_fingerprint_stable_across_processes_and_key_order():
    code = f"from bottleneck.cache.store import fingerprint; print(fingerprint({SETTINGS!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == fingerprint(SETTINGS) == fingerprint(dict(reversed(SETTINGS.items())))


@pytest.mark.parametrize("key", list(SETTINGS))
def test_fingerprint_changes_with_every_setting(key):
    changed = {**SETTINGS, key: f"{SETTINGS[key]}-other"}
    assert fingerprint(changed) != fingerprint(SETTINGS)
    # the feature key ignores only what selects samples, so files can share rows (matched by image content)
    same_rows = key in ("dataset_id", "split", "test_fraction", "per_class", "seed", "selection", "content")
    assert (feature_key(changed) == feature_key(SETTINGS)) == same_rows


def test_random_bytes_never_crash_the_loader(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(40):
        path = tmp_path / f"junk{i}.{['jpg', 'png', 'gif', 'bmp'][i % 4]}"
        path.write_bytes(rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes())
        with pytest.raises(BadImage, match=path.name):
            load_image(path)


@pytest.mark.parametrize("source", [DATA / "gtsrb" / "Test", DATA / "cifar10" / "test" / "cat"])
def test_truncated_real_images_fail_cleanly(tmp_path, source):
    rng = np.random.default_rng(1)
    for f in sorted(source.iterdir())[:5]:
        data = f.read_bytes()
        for cut in rng.integers(1, len(data) - 1, 6):
            path = tmp_path / f"cut{cut}{f.suffix}"
            path.write_bytes(data[:cut])
            try:
                image = load_image(path)
            except BadImage as e:
                assert path.name in str(e)
            else:  # some formats still decode when only trailing bytes are lost
                assert image.mode == "RGB"


def test_cifar10_download_fallback_when_online(tmp_path, monkeypatch):
    """Online with nothing local, keras.datasets.cifar10 fetches it; its cache folder is then read."""
    import pickle

    import keras

    from bottleneck.data.datasets import load_dataset

    monkeypatch.setenv("BOTTLENECK_OFFLINE", "0")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))

    def fake_download():
        root = tmp_path / "keras" / "datasets" / "cifar-10-batches-py"
        root.mkdir(parents=True)
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            with open(root / name, "wb") as f:
                pickle.dump({"data": rng.integers(0, 255, (2, 3072), dtype=np.uint8), "labels": [0, 1]}, f)
        with open(root / "batches.meta", "wb") as f:
            pickle.dump({"label_names": ["a", "b"]}, f)

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", fake_download)
    ds = load_dataset("cifar10", tmp_path / "empty")
    assert ds.layout == "cifar-python" and len(ds.split("train")) == 10
