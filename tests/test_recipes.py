"""Preprocessing recipes that change what the base sees: crops to the sign's box."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bottleneck.data.datasets import load_dataset
from bottleneck.core.errors import BottleneckError
from bottleneck.extraction.plan import PooledFeatures, crop_to_box, plan
from bottleneck.extraction.run import extract
from bottleneck.data.images import resize

from .conftest import DATA

TINY = dict(weights="random", progress=False)


def test_crop_to_box_grows_by_the_margin_and_stays_inside():
    image = Image.new("RGB", (100, 50))
    assert crop_to_box(image, [0.2, 0.2, 0.6, 0.8], 0.0).size == (40, 30)
    assert crop_to_box(image, [0.2, 0.2, 0.6, 0.8], 0.25).size == (60, 46)  # 10 px and 7.5 px (out to 8) a side
    assert crop_to_box(image, [0.0, 0.0, 1.0, 1.0], 0.5).size == (100, 50)  # never beyond the image
    assert crop_to_box(image, [0.5, 0.5, 0.5, 0.5], 0.1).size == (1, 1)  # an empty box still gives a pixel


def test_crop_is_a_recorded_setting_and_each_rows_box_is_in_its_digest(tmp_path):
    ds = load_dataset("gtsrb", DATA)
    plain = plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random")
    a = plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", crop=0.1)
    b = plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", crop=0.2)
    assert "crop" not in plain.settings and a.settings["crop"] == "box + 0.1 margin"
    assert len({plain.path, a.path, b.path}) == 3
    assert all(d.startswith(p + ":") for d, p in zip(a.digests, plain.digests))
    box = [float(v) for v in a.digests[0].split(":")[1].split(",")]
    assert 0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1


def test_cropped_rows_are_the_crop_resized(tmp_path):
    ds = load_dataset("gtsrb", DATA)
    p = plan("tiny_cnn", ds, "train", 1, cache_dir=tmp_path, weights="random", crop=0.1)
    s, i = p.samples, int(p.selected[0])
    box = [float(v) for v in p.digests[0].split(":")[1].split(",")]
    expected = resize(crop_to_box(s.load(i), box, 0.1), 32)
    assert np.array_equal(PooledFeatures(32, crop=0.1).pixels(s, i, p.digests[0]), expected)
    full = resize(s.load(i), 32)
    assert not np.array_equal(expected, full)  # the crop changes what the base sees
    fs = extract("tiny_cnn", ds, "train", 1, cache_dir=tmp_path, crop=0.1, **TINY)
    assert fs.settings["crop"] == "box + 0.1 margin" and len(fs) == len(p.selected)


def test_crop_errors(tmp_path, small_cifar):
    with pytest.raises(BottleneckError, match="gives no boxes"):
        plan("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=tmp_path, weights="random", crop=0.1)
    ds = load_dataset("gtsrb", DATA)
    with pytest.raises(BottleneckError, match="--resize device"):
        plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", crop=0.1, resize="device")
    with pytest.raises(BottleneckError, match="between 0 and 1"):
        plan("tiny_cnn", ds, "train", 2, cache_dir=tmp_path, weights="random", crop=1.5)


def test_logreg_C_search_sees_the_training_draw_only(small_cifar, tmp_path, monkeypatch):
    import sklearn.model_selection as ms

    from bottleneck.learn.heads import C_GRID
    from bottleneck.experiments.run import train

    seen = []
    real = ms.cross_val_score

    def spy(estimator, X, y, groups=None, cv=None, **kw):
        seen.append((len(X), None if groups is None else len(set(groups)), type(cv).__name__))
        return real(estimator, X, y, groups=groups, cv=cv, **kw)

    monkeypatch.setattr(ms, "cross_val_score", spy)
    row = train("tiny_cnn", f"folder:{small_cifar}", None, 0, "logreg", head_params={"C": "cv"},
                cache_dir=tmp_path / "c", **TINY)
    assert row["n_train"] == 24 and row["n_test"] == 12
    assert len(seen) == len(C_GRID) and all(n == 24 for n, _, _ in seen)  # never a test row
    assert row["chosen_C"] in C_GRID and set(row["cv_accuracy"]) == {str(c) for c in C_GRID}
    again = train("tiny_cnn", f"folder:{small_cifar}", None, 0, "logreg", head_params={"C": "cv"},
                  cache_dir=tmp_path / "c", **TINY)
    assert again["chosen_C"] == row["chosen_C"] and again["cv_accuracy"] == row["cv_accuracy"]  # seeded


def test_logreg_C_search_keeps_groups_whole(monkeypatch):
    """GTSRB's images come in tracks of one sign: a fold must never score a track it trained on."""
    import sklearn.model_selection as ms

    from bottleneck.learn.heads import LogRegHead

    used = []
    real = ms.cross_val_score
    monkeypatch.setattr(ms, "cross_val_score", lambda est, X, y, groups=None, cv=None, **kw: (
        used.append((cv, groups)), real(est, X, y, groups=groups, cv=cv, **kw))[1])
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 5))
    y = np.repeat([0, 1, 2], 20)
    groups = np.array([f"track{i // 4}" for i in range(60)])  # 15 tracks of 4 images, each in one class
    head = LogRegHead(C="cv", seed=3).fit(X, y, groups=groups)
    assert head.C_ in head.cv_scores_
    cv, passed = used[0]
    assert type(cv).__name__ == "StratifiedGroupKFold" and list(passed) == list(groups)
    for fit_rows, val_rows in cv.split(X, y, passed):
        assert not set(groups[fit_rows]) & set(groups[val_rows])
    LogRegHead(C="cv", seed=3).fit(X, y)  # no groups: plain stratified folds
    assert type(used[-1][0]).__name__ == "StratifiedKFold"


def test_logreg_C_search_is_for_one_label_per_image():
    from bottleneck.learn.heads import InvalidParameter, LogRegHead
    from bottleneck.core.tasks import MultiLabel

    with pytest.raises(InvalidParameter, match="one class per image"):
        LogRegHead(C="cv", task=MultiLabel(("a", "b"))).fit(np.zeros((4, 2)), np.array([[0, 1], [1, 0]] * 2))


def test_compare_recipes_side_by_side(tmp_path, capsys, tiny_best):
    from bottleneck.cli import main

    args = ["compare", "--bases", "tiny_cnn", "--weights", "random", "--datasets", "gtsrb", "--per-class", "3",
            "--recipes", "plain,best", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "recipe=plain" in out and "recipe=best" in out  # two rows, never averaged together
    assert "recipe plain: " in out and "recipe best: " in out and "images run through the bases in" in out
    import json

    rows = {r["recipe"]: r for r in json.loads((tmp_path / "r" / "results.json").read_text())}
    assert rows["plain"]["crop"] is None and "chosen_C" not in rows["plain"]
    assert rows["best"]["crop"] == "box + 0.1 margin" and rows["best"]["chosen_C"] > 0
    assert rows["best"]["train_cache"] != rows["plain"]["train_cache"]
    assert rows["best"]["stack"] == "tiny_cnn:conv1:grid2" and rows["plain"]["stack"] is None
    assert main(["recipes"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("plain", "crop", "tuned", "views", "spatial", "wide", "best"))


def test_recipe_conflicts_and_misuse_are_errors(tmp_path, small_cifar, tiny_best):
    from bottleneck.experiments.run import plan_run

    ds = load_dataset("gtsrb", DATA)
    with pytest.raises(BottleneckError, match="--crop was given too"):
        plan_run("tiny_cnn", ds, 2, 0, recipe="crop", crop=0.2, cache_dir=tmp_path, weights="random")
    with pytest.raises(BottleneckError, match="given too"):
        plan_run("tiny_cnn", ds, 2, 0, recipe="tuned", head_params={"C": 0.5}, cache_dir=tmp_path, weights="random")
    with pytest.raises(BottleneckError, match="tunes the logreg head"):
        plan_run("tiny_cnn", ds, 2, 0, recipe="tuned", head="mlp", cache_dir=tmp_path, weights="random")
    with pytest.raises(BottleneckError, match="unknown recipe 'bset' \\(did you mean 'best'"):
        plan_run("tiny_cnn", ds, 2, 0, recipe="bset", cache_dir=tmp_path, weights="random")
    run = plan_run("tiny_cnn", f"folder:{small_cifar}", 2, 0, recipe="best", cache_dir=tmp_path, weights="random")
    assert "crop" not in run.train.settings and run.head_params == {"C": "cv", "cv_folds": 3}  # no boxes: no crop
    assert [tr.settings["layer"] for tr, _ in run.parts] == ["conv1"]
    mirrored = plan_run("tiny_cnn", load_dataset("cifar10", DATA), 2, 0, recipe="best", cache_dir=tmp_path,
                        weights="random")
    assert mirrored.test.settings["augment_views"] == 2 and "flip (any)" in mirrored.test.settings["augment"]
    assert "augment" not in mirrored.train.settings  # the mirror image at test time only
    signs = plan_run("tiny_cnn", ds, 2, 0, recipe="best", cache_dir=tmp_path, weights="random")
    assert "augment" not in signs.test.settings  # a sign's mirror image may be another sign: never at test time
    attributes = plan_run("tiny_cnn", ds, 2, 0, recipe="best", target="attributes", cache_dir=tmp_path,
                          weights="random")  # best serves a multi-label target too: crop and stack, default C
    assert attributes.head_params == {} and attributes.train.settings["crop"] and len(attributes.parts) == 1
    views = plan_run("tiny_cnn", ds, 2, 0, recipe="views", cache_dir=tmp_path, weights="random")
    assert views.train.settings["augment_views"] == 4 and views.test.settings["augment_views"] == 2
    assert "no flip" in views.test.settings["augment"] and "flip (signs)" in views.train.settings["augment"]
    with pytest.raises(BottleneckError, match="sets --views, and it was given too"):
        plan_run("tiny_cnn", ds, 2, 0, recipe="views", views=8, cache_dir=tmp_path, weights="random")
    with pytest.raises(BottleneckError, match="sets --stack, and it was given too"):
        plan_run("tiny_cnn", ds, 2, 0, recipe="best", stack=[":conv1"], cache_dir=tmp_path, weights="random")


def test_table_rows_are_recipes_and_runs_made_differently_stay_apart():
    from bottleneck.report.results import markdown_table

    def row(recipe, dataset, crop, C, seed, acc):
        return {"base": "b", "head": "logreg", "dataset": dataset, "per_class": 100, "seed": seed, "recipe": recipe,
                "crop": crop, "head_params": f'{{"C": "{C}"}}', "accuracy": acc, "score": acc,
                "target": "class", "task": "single_label", "metric": "accuracy"}

    rows = [row("plain", d, None, 1.0, s, 0.5) for d in ("cifar10", "gtsrb") for s in (0, 1)]
    rows += [row("best", "cifar10", None, "cv", s, 0.6) for s in (0, 1)]
    rows += [row("best", "gtsrb", "box + 0.1 margin", "cv", s, 0.7) for s in (0, 1)]
    table = markdown_table(rows)
    assert "| b (recipe=plain) | 0.500 ± 0.000 | 0.500 ± 0.000 |" in table
    assert "| b (recipe=best) | 0.600 ± 0.000 | 0.700 ± 0.000 |" in table  # what best sets differs by dataset
    rows.append(row("plain", "gtsrb", None, 0.5, 2, 0.9))  # a plain run with another C: never averaged in
    table = markdown_table(rows)
    assert "0.9" in table and "C=0.5" in table


def test_logreg_C_search_takes_its_number_of_folds(monkeypatch):
    import sklearn.model_selection as ms

    from bottleneck.learn.heads import InvalidParameter, LogRegHead

    used = []
    real = ms.cross_val_score
    monkeypatch.setattr(ms, "cross_val_score", lambda est, X, y, groups=None, cv=None, **kw: (
        used.append(cv.get_n_splits()), real(est, X, y, groups=groups, cv=cv, **kw))[1])
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), np.repeat([0, 1], 20)
    LogRegHead(C="cv", cv_folds=3).fit(X, y)
    assert set(used) == {3}
    with pytest.raises(InvalidParameter, match="cv_folds"):
        LogRegHead(C="cv", cv_folds=1).fit(X, y)


def test_best_grids_is_best_with_three_finer_grids_beside_it(tmp_path):
    """best-grids plans best's own cache files (the same crop, C search and parts), then the base's
    stage-4 grid and efficientnet_lite1's and lite2's stage-5 grids (planned here, never extracted)."""
    from bottleneck.bases.registry import get_base
    from bottleneck.data.datasets import load_dataset
    from bottleneck.experiments.run import plan_run

    from .conftest import DATA

    ds = load_dataset("gtsrb", DATA)
    best = plan_run("efficientnet_lite0", ds, 2, 0, recipe="best", cache_dir=tmp_path, weights="random")
    grids = plan_run("efficientnet_lite0", ds, 2, 0, recipe="best-grids", cache_dir=tmp_path, weights="random")
    assert grids.train.path == best.train.path and grids.head_params == best.head_params
    assert [p.path for p, _ in grids.parts[:3]] == [p.path for p, _ in best.parts]
    added = [(p.settings["base"], p.settings["layer"], p.settings["pooling"]) for p, _ in grids.parts[3:]]
    assert [(b, pool) for b, _, pool in added] == [("efficientnet_lite0", "grid4"), ("efficientnet_lite1", "grid4"),
                                                   ("efficientnet_lite2", "grid4")]
    cut = {name: dict(get_base(name).cut_points) for name, _, _ in added}
    stages = [cut[b]["stage4" if b == "efficientnet_lite0" else "stage5"] for b, _, _ in added]
    assert [layer for _, layer, _ in added] == stages
    assert all(te.settings["crop"] == best.test.settings["crop"] for _, te in grids.parts)
