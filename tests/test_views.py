"""Augmented views cached per image, and stacked features: the accuracy levers that survive caching."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bottleneck.extraction import views as augment
from bottleneck.data.datasets import load_dataset
from bottleneck.core.errors import BottleneckError
from bottleneck.extraction.run import extract
from bottleneck.extraction.plan import plan
from bottleneck.cache.store import read_features

from .conftest import DATA

TINY = dict(weights="random", progress=False)


def test_views_are_seeded_nested_and_only_new_ones_are_extracted(tmp_path):
    ds = load_dataset("cifar10", DATA)
    four = extract("tiny_cnn", ds, "train", 2, 0, cache_dir=tmp_path, views=4, **TINY)
    n = len(four) // 4
    assert four.info["extracted"] == 4 * n  # nothing cached: every view computed
    assert four.source_ids[:4] == [four.source_ids[0]] + [f"{four.source_ids[0]}#v{j}" for j in (1, 2, 3)]
    again = plan("tiny_cnn", ds, "train", 2, 0, cache_dir=tmp_path, views=4, weights="random")
    assert again.digests == four.digests  # seeded: the same transforms in every plan
    eight = extract("tiny_cnn", ds, "train", 2, 0, cache_dir=tmp_path, views=8, **TINY)
    assert eight.info["extracted"] == 4 * n and eight.info["reused"] == 4 * n  # only views 4..7 computed
    first = {d: f for d, f in zip(eight.digests, eight.features)}
    for d, f in zip(four.digests, four.features):
        np.testing.assert_array_equal(first[d], f)  # K=4 is K=8's first four views of each image
    assert [eight.digests[8 * i + j] for i in range(n) for j in range(4)] == four.digests
    plain = extract("tiny_cnn", ds, "train", 2, 0, cache_dir=tmp_path, **TINY)
    assert plain.info["extracted"] == 0  # view 0 of each image is the image: copied, not computed
    np.testing.assert_array_equal(plain.features, four.features[::4])
    assert len(set(four.digests)) == len(four.digests)  # views differ


def test_the_augmentation_is_part_of_the_fingerprint(tmp_path, monkeypatch):
    ds = load_dataset("cifar10", DATA)
    one = plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random")
    four = plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", views=4)
    assert one.path != four.path and four.settings["augment_views"] == 4 and "flip (any)" in four.settings["augment"]
    monkeypatch.setattr(augment, "COLOUR", 0.3)  # another augmentation: other transforms, another file
    other = plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", views=4)
    assert other.path != four.path and other.digests[0] == four.digests[0] and other.digests[1] != four.digests[1]


def test_sign_flips_map_mirror_classes_and_never_flip_the_others():
    names = load_dataset("gtsrb", DATA).class_names
    ids = {n: i for i, n in enumerate(names)}
    mirror = augment.views_for("gtsrb", 4).mirror(names)
    assert mirror[ids["Turn left ahead"]] == ids["Turn right ahead"]
    assert mirror[ids["Keep right"]] == ids["Keep left"] and mirror[ids["Keep left"]] == ids["Keep right"]
    assert mirror[ids["Dangerous curve to the left"]] == ids["Dangerous curve to the right"]
    assert mirror[ids["Go straight or left"]] == ids["Go straight or right"]
    assert mirror[ids["Yield"]] == ids["Yield"] and mirror[ids["No entry"]] == ids["No entry"]
    assert ids["Speed limit (30km/h)"] not in mirror and ids["Stop"] not in mirror  # a mirrored 30 is no sign
    assert augment.views_for("gtsrb", 4, test=True).mirror(names) == {}  # the class is unknown at test time
    assert augment.views_for("cifar10", 4).mirror(["a", "b"]) == {0: 0, 1: 1}
    assert augment.views_for("folder:mine", 4).mirror(["a", "b"]) == {}  # unknown datasets: no flips

    views = augment.views_for("gtsrb", 8)
    labels = np.repeat([ids["Turn left ahead"], ids["Speed limit (30km/h)"], ids["Yield"]], 40)
    digests = views.digests([f"img{i}" for i in range(len(labels))], labels, names)
    flags = {}
    for d, y in zip(digests, np.repeat(labels, 8)):
        view = augment.split_digest(d)[1]
        if view:
            flags.setdefault(int(y), set()).add(view.split(":")[1])
            expect = ids["Turn right ahead"] if view.split(":")[1].startswith("fm") else int(y)
            assert augment.label_of(d, int(y)) == expect
    assert flags[ids["Turn left ahead"]] == {"f0", f"fm{ids['Turn right ahead']}"}  # flipped views are relabelled
    assert flags[ids["Speed limit (30km/h)"]] == {"f0"}
    assert flags[ids["Yield"]] == {"f0", "f1"}  # flipped, the same class


def test_a_flipped_view_is_the_mirror_image_and_its_row_carries_the_mapped_label(tmp_path):
    image = Image.fromarray(np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3))
    same = augment.apply(image, "v1:f0:0,0,1,1:r0.00:c1,1,1")
    np.testing.assert_array_equal(np.asarray(same), np.asarray(image))
    flipped = augment.apply(image, "v1:f1:0,0,1,1:r0.00:c1,1,1")
    np.testing.assert_array_equal(np.asarray(flipped), np.asarray(image)[:, ::-1])
    assert augment.apply(image, "v1:f0:0.5,0,1,0.5:r0.00:c1,1,1").size == (3, 2)

    ds = load_dataset("gtsrb", DATA)
    fs = extract("tiny_cnn", ds, "train", 3, 0, cache_dir=tmp_path, views=6, **TINY)
    s = ds.split("train")
    row = {sid: i for i, sid in enumerate(s.ids)}
    mapped = 0
    for sid, d, y in zip(fs.source_ids, fs.digests, fs.labels):
        truth = int(s.labels[row[sid.partition("#")[0]]])
        assert y == augment.label_of(d, truth)
        mapped += y != truth
    assert mapped > 0  # this draw has mirrored signs, stored under their mirror class
    from bottleneck.experiments.run import train

    r = train("tiny_cnn", ds, 3, 0, views=6, cache_dir=tmp_path, weights="random", progress=False)
    assert r["views"] == 6 and r["n_train"] == len(fs)


def test_test_views_are_averaged_per_image_and_never_flip_signs(tmp_path):
    from bottleneck.experiments.run import train

    ds = load_dataset("gtsrb", DATA)
    te = plan("tiny_cnn", ds, "test", 2, 0, cache_dir=tmp_path, weights="random", views=3, for_test=True)
    assert all(":f0:" in d for d in te.digests if "|" in d) and "no flip" in te.settings["augment"]
    fs = extract("tiny_cnn", ds, "test", 2, 0, cache_dir=tmp_path, views=3, for_test=True, **TINY)
    mean = augment.averaged(fs)
    assert len(mean) == len(fs) // 3 and "#" not in "".join(mean.source_ids)
    np.testing.assert_allclose(mean.features[1], fs.features[3:6].mean(axis=0), rtol=1e-6)
    r = train("tiny_cnn", ds, 2, 0, test_views=3, eval_per_class=2, cache_dir=tmp_path, weights="random",
              progress=False)
    assert r["test_views"] == 3 and r["n_test"] == len(mean)
    broken = fs.__class__(**{**fs.__dict__, "source_ids": fs.source_ids[1:] + fs.source_ids[:1]})
    with pytest.raises(BottleneckError, match="does not hold 3 views of every image"):
        augment.averaged(broken)


def test_views_refuse_what_they_would_make_wrong(tmp_path):
    ds = load_dataset("gtsrb", DATA)
    with pytest.raises(BottleneckError, match="one class per image"):
        plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", views=2, target="box")
    with pytest.raises(BottleneckError, match="resize device"):
        plan("tiny_cnn", load_dataset("cifar10", DATA), "train", 2, cache_dir=tmp_path, weights="random", views=2,
             resize="device")
    with pytest.raises(BottleneckError, match="number of views"):
        plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", views=0)


def test_views_keep_an_images_rows_in_one_cross_validation_fold(tmp_path, monkeypatch):
    """C by cross-validation sees training rows only, and never one view of an image in the
    fitting folds while another is scored."""
    import sklearn.model_selection as ms

    from bottleneck.experiments.run import train

    seen = []
    real = ms.cross_val_score

    def spy(estimator, X, y, groups=None, cv=None, **kw):
        seen.append((len(X), list(cv.split(X, y, groups))))
        return real(estimator, X, y, groups=groups, cv=cv, **kw)

    monkeypatch.setattr(ms, "cross_val_score", spy)
    ds = load_dataset("cifar10", DATA)
    r = train("tiny_cnn", ds, 5, 0, views=3, head_params={"C": "cv"}, eval_per_class=2, cache_dir=tmp_path,
              weights="random", progress=False)
    fs = read_features(tmp_path / r["train_cache"])
    image = np.array([sid.partition("#")[0] for sid in fs.source_ids])
    assert seen and all(n == len(fs) == r["n_train"] for n, _ in seen)  # the training rows, never the test's
    for _, folds in seen:
        for fit_rows, val_rows in folds:
            assert not set(image[fit_rows]) & set(image[val_rows])


def test_stacked_parts_are_cached_on_their_own_and_reused(tmp_path):
    from bottleneck.experiments.run import train

    ds = load_dataset("cifar10", DATA)
    kw = dict(cache_dir=tmp_path, weights="random", progress=False, eval_per_class=2)
    alone = train("tiny_cnn", ds, 3, 0, **kw)
    both = train("tiny_cnn", ds, 3, 0, stack=[":conv1"], **kw)
    assert both["stack"] == "tiny_cnn:conv1:avg" and both["extracted_images"] == alone["n_train"] + alone["n_test"]
    part = extract("tiny_cnn", ds, "train", 3, 0, cache_dir=tmp_path, layer="conv1", **TINY)
    assert part.info["extracted"] == 0  # the part is an ordinary cache file: the same as asking for that layer
    main = read_features(tmp_path / alone["train_cache"])
    assert both["n_train"] == len(main)
    again = train("tiny_cnn", ds, 3, 0, stack=[":conv1"], **kw)
    assert again["extracted_images"] == 0 and again["accuracy"] == both["accuracy"]
    with pytest.raises(BottleneckError, match="the run's own features"):
        train("tiny_cnn", ds, 3, 0, stack=["tiny_cnn"], **kw)
    with pytest.raises(BottleneckError, match="unknown base"):
        train("tiny_cnn", ds, 3, 0, stack=["tiny_cnnn"], **kw)


def test_stacking_refuses_parts_of_other_rows():
    from bottleneck.core.errors import CacheError
    from bottleneck.experiments.stacking import stacked
    from bottleneck.cache.store import FeatureSet

    def fs(ids, width):
        return FeatureSet(np.ones((len(ids), width), np.float32), np.zeros(len(ids), np.int64), ids, ids, ["a"],
                          {"base": "b", "layer": "l", "pooling": "avg"}, Path(f"{width}.h5"), {})

    joined = stacked(fs(["x", "y"], 2), [fs(["x", "y"], 3)])
    assert joined.features.shape == (2, 5) and joined.settings["stack"] == ["b:l:avg"]
    with pytest.raises(CacheError, match="does not hold the rows"):
        stacked(fs(["x", "y"], 2), [fs(["y", "x"], 3)])


@pytest.mark.parametrize("setting,says", [({"test_views": 2}, "test-views"), ({"stack": [":conv1"]}, "stack")])
def test_export_refuses_what_one_exported_model_would_not_reproduce(tmp_path, setting, says):
    from bottleneck.deploy.export import export

    with pytest.raises(BottleneckError, match=says):
        export("tiny_cnn", "gtsrb", 2, data_dir=DATA, cache_dir=tmp_path / "c", weights="random", progress=False,
               out=tmp_path / "m.keras", **setting)
    assert not (tmp_path / "m.keras").exists()


def test_the_first_test_view_is_the_mirror_image_where_any_class_may_be_mirrored():
    views = augment.views_for("cifar10", 3, test=True)
    digests = views.digests(["a", "b"], np.array([0, 1]), ["x", "y"])
    assert digests[1] == "a|v1:f1:0.0000,0.0000,1.0000,1.0000:r0.00:c1.000,1.000,1.000"
    assert digests[4].startswith("b|v1:f1:")
    assert "|v2:" in digests[2] and digests[2] != digests[5]  # later views seeded per image
    image = Image.fromarray(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))
    np.testing.assert_array_equal(np.asarray(augment.apply(image, augment.split_digest(digests[1])[1])),
                                  np.asarray(image)[:, ::-1])


def test_views_made_in_worker_processes_are_the_threads_views_bit_for_bit(tmp_path):
    ds = load_dataset("gtsrb", DATA)
    a = extract("tiny_cnn", ds, "train", 2, 0, cache_dir=tmp_path / "a", views=3, crop=0.1, feed="threads", **TINY)
    b = extract("tiny_cnn", ds, "train", 2, 0, cache_dir=tmp_path / "b", views=3, crop=0.1, feed="processes",
                workers=2, **TINY)
    assert b.info["feed"] == "processes x 2, idle priority" and a.digests == b.digests
    np.testing.assert_array_equal(a.features, b.features)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_train_says_images_times_views_the_stack_and_the_test_views(tmp_path, capsys):
    from bottleneck.cli import main

    assert main(["train", "--base", "tiny_cnn", "--weights", "random", "--dataset", "cifar10", "--data-dir", str(DATA),
                 "--per-class", "2", "--eval-per-class", "2", "--views", "3", "--test-views", "2", "--stack", "::max",
                 "--cache-dir", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "tiny_cnn + tiny_cnn:conv2:max on cifar10, 20 training images x 3 views (2 per class)" in out
    assert "on 20 test images (mean of 2 views each)" in out
