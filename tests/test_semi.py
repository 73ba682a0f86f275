"""Learning from unlabeled images: the unlabeled draw, each semi-supervised head on a case
whose answer is known, and --unlabeled / --semi through train, compare and export."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from bottleneck.core.sampling import per_class_draw, unlabeled_draw
from bottleneck.learn.heads import InvalidParameter
from bottleneck.learn.semi import BEST_SEMI, SEMI_HEADS, UNLABELED

from .conftest import DATA, REPO

TINY = dict(weights="random")  # (plan_run takes no run options: execute_fitted shows no bar in tests)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), labelled_count=st.integers(0, 60), counts=st.lists(st.integers(0, 400), min_size=2,
                                                                                  max_size=4), seed=st.integers(0, 9))
def test_the_unlabeled_draw_is_seeded_nested_and_disjoint_from_the_labelled_draw(n, labelled_count, counts, seed):
    labelled = np.random.default_rng(seed).choice(n, min(n, labelled_count), replace=False)
    draws = [set(unlabeled_draw(n, labelled, c, seed)) for c in sorted(counts)]
    pool = n - len(labelled)
    for c, d in zip(sorted(counts), draws):
        assert len(d) == min(c, pool) and not d & set(labelled.tolist())
    for smaller, larger in zip(draws, draws[1:]):
        assert smaller <= larger  # nested
    assert set(unlabeled_draw(n, labelled, None, seed)) == set(range(n)) - set(labelled.tolist())
    assert np.array_equal(unlabeled_draw(n, labelled, counts[0], seed), unlabeled_draw(n, labelled, counts[0], seed))


def test_the_unlabeled_draw_depends_only_on_the_layout_not_on_labels():
    """It takes the split's size and the labelled rows, never a label: scrambling the labels of a
    split cannot change which rows it draws (the labelled draw itself is per class)."""
    labels = np.repeat(np.arange(5), 40)
    labelled, _ = per_class_draw(labels, 10, seed=3)
    before = unlabeled_draw(len(labels), labelled, 50, seed=3)
    scrambled = np.random.default_rng(0).permutation(labels)
    assert np.array_equal(before, unlabeled_draw(len(scrambled), labelled, 50, seed=3))
    with pytest.raises(ValueError, match="whole number"):
        unlabeled_draw(10, [], -1)


def _two_clusters(seed: int = 0):
    """Two well separated clusters, one labelled point each, the rest unlabeled."""
    rng = np.random.default_rng(seed)
    X = np.concatenate([rng.normal(-4, 1, (100, 5)), rng.normal(4, 1, (100, 5))])
    truth = np.repeat([0, 1], 100)
    y = np.full(200, UNLABELED)
    y[[0, 100]] = [0, 1]
    return X, y, truth


@pytest.mark.parametrize("name", sorted(SEMI_HEADS))
def test_each_semi_supervised_head_labels_two_separated_clusters_from_one_label_each(name):
    X, y, truth = _two_clusters()
    params = {"selftrain": {"threshold": 0.7}}.get(name, {})  # (two labelled rows: probabilities stay modest)
    head = SEMI_HEADS[name](seed=0, **params).fit(X, y)
    assert list(head.classes_) == [0, 1]
    assert head.score(X, truth) == 1.0
    X_test, _, truth_test = _two_clusters(seed=1)
    assert head.score(X_test, truth_test) == 1.0
    again = clone(head).fit(X, y)  # the scikit-learn contract: parameters only, refit gives the same
    assert np.array_equal(again.predict_proba(X_test), head.predict_proba(X_test))


def test_label_spreading_counts_rows_it_cannot_reach():
    """Two clusters, only one of them labelled: the other is a part of the kNN graph no label
    reaches; its rows are counted, left out of the fit, and never turn into NaN predictions."""
    X, y, truth = _two_clusters()
    y[100] = UNLABELED
    y[1] = 1  # both labels in the first cluster
    head = SEMI_HEADS["spread"](n_neighbors=5, seed=0).fit(X, y)
    assert head.unreached_ == 100 and np.all(head.transduction_[100:] == UNLABELED)
    assert np.isfinite(head.predict_proba(X)).all()


@pytest.mark.parametrize("name", sorted(SEMI_HEADS))
def test_semi_supervised_heads_check_parameters_and_need_labels(name):
    X, y, _ = _two_clusters()
    with pytest.raises(InvalidParameter, match="every training row is unlabeled"):
        SEMI_HEADS[name]().fit(X, np.full(len(X), UNLABELED))
    bad = {"selftrain": {"threshold": 1.5}, "spread": {"alpha": 1.0}, "pseudo": {"fraction": 0}}[name]
    with pytest.raises(InvalidParameter, match="parameter"):
        SEMI_HEADS[name](**bad).fit(X, y)


def test_semi_heads_search_C_on_the_labelled_rows_only_and_keep_it(monkeypatch):
    from bottleneck.learn import heads

    seen = []
    real = heads.LogRegHead._search_C
    monkeypatch.setattr(heads.LogRegHead, "_search_C", lambda self, X, y, groups: (seen.append(len(y)),
                                                                                  real(self, X, y, groups))[1])
    X, y, truth = _two_clusters()
    y[[1, 2, 101, 102]] = [0, 0, 1, 1]  # 3 labelled rows a class: enough for 3 folds
    head = SEMI_HEADS["pseudo"](C="cv", cv_folds=3).fit(X, y)
    assert seen == [6] and head.C_ in heads.C_GRID and set(head.cv_scores_) == set(heads.C_GRID)
    assert head.logistic()[1].C == head.C_  # every refit used the C chosen on the labelled rows


def test_pseudo_refits_keep_the_regularisation_per_row_the_labelled_rows_chose():
    """C weighs the sum of the rows' losses: with scale_C a refit on k times the rows scales it by
    1/k, so each row is regularised as on the labelled rows (by default C is kept as it is)."""
    X, y, truth = _two_clusters()
    rows_of = {}
    for scale in (True, False):
        head = SEMI_HEADS["pseudo"](C=0.5, rounds=2, scale_C=scale).fit(X, y)
        rows_of[scale] = 2 + np.count_nonzero(head.pseudo_ != UNLABELED)
        assert head.C_ == 0.5 and head.score(X, truth) == 1.0
        assert head.logistic()[1].C == pytest.approx(0.5 * 2 / rows_of[scale] if scale else 0.5)
    assert rows_of[True] == 200  # the last round took the whole pool
    with pytest.raises(InvalidParameter, match="scale_C"):
        SEMI_HEADS["pseudo"](scale_C="yes").fit(X, y)


def test_a_changed_default_of_the_method_is_a_new_run_key(tmp_path, monkeypatch):
    """A run's key holds every parameter of its method, defaults too: results kept under the old
    default are never served as the new one's (results folders reuse a row by its key)."""
    from bottleneck.experiments.run import plan_run
    from bottleneck.learn.semi import PseudoLabelHead

    def key(**kw):
        return plan_run("tiny_cnn", "cifar10", 3, 0, data_dir=DATA, cache_dir=tmp_path, **TINY, **kw).key

    before, plain = key(unlabeled=2), key()
    defaults = dict(zip(PseudoLabelHead.__init__.__code__.co_varnames[1:], PseudoLabelHead.__init__.__defaults__))
    defaults["scale_C"] = not defaults["scale_C"]
    monkeypatch.setattr(PseudoLabelHead.__init__, "__defaults__", tuple(defaults.values()))
    assert PseudoLabelHead().scale_C == defaults["scale_C"] and key(unlabeled=2) != before
    assert key() == plain  # a run without unlabeled images keeps its key


# ------------------------------------------------------------------ --unlabeled through a run


def test_unlabeled_rows_are_the_rest_of_the_training_split_never_the_draw_or_the_test_split(tmp_path):
    from bottleneck.data.datasets import load_dataset
    from bottleneck.experiments.run import plan_run

    ds = load_dataset("gtsrb", DATA)
    n_classes = len(ds.class_names)

    def pool(unlabeled, seed=0):
        r = plan_run("tiny_cnn", ds, 3, seed, unlabeled=unlabeled, cache_dir=tmp_path, **TINY)
        return r, set(r.pool[0].ids)

    r, two = pool(2)
    labelled, test = set(r.train.ids), set(ds.split("test").ids)
    assert len(two) == 2 * n_classes and not two & labelled and not two & test
    assert two <= set(ds.split("train").ids)
    _, three = pool(3)
    _, every = pool("all")
    assert two < three < every and every == set(ds.split("train").ids) - labelled  # nested; all: the rest
    assert pool(2) [1] == two and pool(2, seed=1)[1] != two  # seeded
    assert r.semi == BEST_SEMI and r.pool[0].settings["unlabeled"] == 2 and r.pool[0].path != r.train.path
    plain = plan_run("tiny_cnn", ds, 3, 0, cache_dir=tmp_path, **TINY)
    assert plan_run("tiny_cnn", ds, 3, 0, unlabeled=0, cache_dir=tmp_path, **TINY).key == plain.key  # 0: plain
    assert r.key != plain.key and not plain.pool


def test_unlabeled_rows_never_come_from_the_part_test_fraction_holds_out(tmp_path):
    import shutil

    from bottleneck.experiments.run import plan_run

    from .conftest import copy_cifar_subset

    pets = copy_cifar_subset(tmp_path / "pets", classes=3, train=10, test=1)
    shutil.rmtree(pets / "test")
    r = plan_run("tiny_cnn", f"folder:{pets}", 3, 0, unlabeled="all", test_fraction=0.2, cache_dir=tmp_path, **TINY)
    held_out, pool = set(r.test.ids), set(r.pool[0].ids)
    assert len(held_out) == 6 and len(pool) == 30 - 6 - 9 and not pool & held_out and not pool & set(r.train.ids)


def test_the_labels_of_unlabeled_rows_are_never_read(tmp_path, monkeypatch):
    """Scramble every label the unlabeled rows have (in the dataset and in their cache file):
    the head, its predictions and its score are the same."""
    import dataclasses

    from bottleneck.data.datasets import load_dataset
    from bottleneck.experiments import run as runs
    from bottleneck.learn import semi

    ds = load_dataset("cifar10", DATA)
    r = runs.plan_run("tiny_cnn", ds, 4, 0, unlabeled=10, semi="pseudo", cache_dir=tmp_path, **TINY)
    given, grouped = [], []
    real_fit = semi.PseudoLabelHead.fit
    monkeypatch.setattr(semi.PseudoLabelHead, "fit", lambda self, X, y, groups=None: (
        given.append(np.array(y)), grouped.append(np.array(groups)), real_fit(self, X, y, groups))[-1])
    first = runs.execute_fitted(r)
    n_pool = len(r.pool[0].selected)
    assert first.row["n_unlabeled"] == n_pool == 100 and np.all(given[0][-n_pool:] == UNLABELED)
    assert np.all(given[0][:-n_pool] >= 0)
    # nor their groups, which can name the class (GTSRB's "class/track"): each its own, from nothing of the dataset
    pool_groups = grouped[0][-n_pool:]
    assert len(set(pool_groups)) == n_pool and list(pool_groups) == [f"unlabeled-{i}" for i in range(n_pool)]

    rng = np.random.default_rng(1)
    pool_rows = r.pool[0].selected
    ds.split("train").labels[pool_rows] = rng.permutation(ds.split("train").labels[pool_rows])[::-1]
    real_run = runs.run

    def scrambled(p, options=None):
        fs = real_run(p, options)
        if p.settings.get("unlabeled") is not None:
            fs = dataclasses.replace(fs, labels=(np.asarray(fs.labels) + 3) % len(fs.class_names))
        return fs

    monkeypatch.setattr(runs, "run", scrambled)
    again = runs.execute_fitted(r)
    assert again.row["score"] == first.row["score"]
    assert np.array_equal(again.model.predict_proba(again.test.features), first.model.predict_proba(first.test.features))


def test_compare_keeps_the_two_protocols_apart_and_the_plain_rows_as_they_were(tmp_path, capsys):
    import json

    from bottleneck.cli import main

    common = ["compare", "--bases", "tiny_cnn", "--weights", "random", "--datasets", "cifar10", "--data-dir",
              str(DATA), "--per-class", "4", "--seeds", "0,1", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(common + ["--out", str(tmp_path / "plain")]) == 0
    plain = {r["seed"]: r for r in json.loads((tmp_path / "plain" / "results.json").read_text())}
    capsys.readouterr()
    assert main(common + ["--unlabeled", "0,5", "--semi", "selftrain", "--out", str(tmp_path / "both"),
                          "--plots"]) == 0
    assert (tmp_path / "both" / "plots" / "score_vs_unlabeled.png").is_file()
    assert 'alt="score_vs_unlabeled.png"' in (tmp_path / "both" / "report.html").read_text()
    out = capsys.readouterr().out
    assert "| tiny_cnn (unlabeled=0) |" in out and "| tiny_cnn (unlabeled=5; semi=selftrain) |" in out
    rows = json.loads((tmp_path / "both" / "results.json").read_text())
    assert sorted((r["unlabeled"], r["semi"], r["seed"]) for r in rows) == [
        (0, None, 0), (0, None, 1), (5, "selftrain", 0), (5, "selftrain", 1)]
    for r in rows:
        assert r["n_unlabeled"] == (50 if r["unlabeled"] else 0)
        if r["unlabeled"] == 0:  # the plain protocol: the same run, the same numbers, the same key
            assert r["score"] == plain[r["seed"]]["score"] and r["train_cache"] == plain[r["seed"]]["train_cache"]
    keys = {p.stem for p in (tmp_path / "plain" / "rows").glob("*.json")}
    assert keys < {p.stem for p in (tmp_path / "both" / "rows").glob("*.json")}


def test_train_says_how_many_unlabeled_images_it_learnt_from(tmp_path, capsys):
    from bottleneck.cli import main

    assert main(["train", "--base", "tiny_cnn", "--weights", "random", "--dataset", "cifar10", "--data-dir", str(DATA),
                 "--per-class", "3", "--unlabeled", "2", "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    assert "30 training images (3 per class) + 20 unlabeled images (--semi pseudo), logreg head" in \
        capsys.readouterr().out


def test_unlabeled_misuse_is_a_clear_error(tmp_path, capsys):
    from bottleneck.cli import main

    common = ["--base", "tiny_cnn", "--weights", "random", "--dataset", "gtsrb", "--data-dir", str(DATA),
              "--per-class", "2", "--cache-dir", str(tmp_path / "c"), "--quiet"]
    cases = [(["--semi", "pseudo"], "--semi pseudo learns from unlabeled images"),
             (["--unlabeled", "5", "--head", "mlp"], "built around logreg"),
             (["--unlabeled", "5", "--target", "attributes"], "one class per image"),
             (["--unlabeled", "-1"], "not a whole number >= 0 or 'all'"),
             (["--unlabeled", "5", "--semi", "psuedo"], "invalid choice"),
             (["--unlabeled", "5", "--per-class", "all"], "no image outside the labelled draw")]
    def code(args):
        try:
            return main(args)
        except SystemExit as e:  # argparse's own errors
            return e.code

    for extra, message in cases:
        assert code(["train", *common, *extra]) == 2, extra
        assert message in capsys.readouterr().err
    grid = ["compare", "--bases", "tiny_cnn", "--weights", "random", "--datasets", "gtsrb", "--data-dir", str(DATA),
            "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(grid + ["--unlabeled", "0", "--semi", "spread"]) == 2
    assert "no run of this grid has any" in capsys.readouterr().err


def test_tables_never_average_rows_of_two_protocols():
    from bottleneck.report.results import markdown_table

    def row(unlabeled, semi, seed, acc):
        return {"base": "b", "head": "logreg", "dataset": "cifar10", "per_class": 100, "seed": seed,
                "unlabeled": unlabeled, "semi": semi, "accuracy": acc, "score": acc}

    old = {"base": "b", "head": "logreg", "dataset": "cifar10", "per_class": 100, "seed": 2, "accuracy": 0.5,
           "score": 0.5}  # a row from before --unlabeled: the plain protocol
    table = markdown_table([row(0, None, 0, 0.5), row(0, None, 1, 0.5), old, row("all", "pseudo", 0, 0.7),
                            row("all", "pseudo", 1, 0.7), row("all", "spread", 0, 0.9)])
    assert "| b (unlabeled=0) | 0.500 ± 0.000 |" in table
    assert "| b (unlabeled=all; semi=pseudo) | 0.700 ± 0.000 |" in table
    assert "| b (unlabeled=all; semi=spread) | 0.900 |" in table
    assert markdown_table([row(0, None, 0, 0.5), old]).splitlines()[2] == "| b | 0.500 ± 0.000 |"


def test_an_exported_model_holds_the_semi_supervised_head(tmp_path):
    from bottleneck.deploy.export import export
    from bottleneck.deploy.formats import load_model
    from bottleneck.experiments.run import execute_fitted, plan_run

    meta = export("tiny_cnn", "cifar10", 4, 0, out=tmp_path / "m.keras", data_dir=DATA, cache_dir=tmp_path / "c",
                  unlabeled=5, semi="spread", **TINY)
    assert meta["unlabeled"] == 5 and meta["semi"] == "spread" and meta["n_train"] == 40
    r = plan_run("tiny_cnn", "cifar10", 4, 0, unlabeled=5, semi="spread", data_dir=DATA, cache_dir=tmp_path / "c",
                 **TINY)
    fitted = execute_fitted(r)
    m = load_model(tmp_path / "m.keras")
    images = np.stack([r.test.recipe.pixels(r.test.samples, int(i), d) for i, d in
                       zip(r.test.selected[:20], r.test.digests[:20])])
    assert np.array_equal(m.run(images).argmax(axis=1), fitted.model.predict(fitted.test.features[:20]))


@pytest.mark.filterwarnings("ignore:No artists with labels")  # (the lines are recorded, not drawn)
def test_the_unlabeled_plot_draws_one_line_per_method_from_the_same_plain_rows(tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    from bottleneck.report.plots import score_vs_unlabeled

    drawn = []
    monkeypatch.setattr(Axes, "errorbar", lambda self, x, y, yerr=None, **kw: drawn.append(
        (kw["label"].split(", ")[-1], list(x), [round(v, 3) for v in y], [round(v, 3) for v in yerr])))

    def row(u, semi, seed, acc, recipe="best"):
        return {"base": "b", "head": "logreg", "dataset": "d", "per_class": 100, "seed": seed, "recipe": recipe,
                "unlabeled": u, "semi": semi, "score": acc, "n_unlabeled": 4900 if u == "all" else 0,
                "n_classes": 10}

    rows = [row(0, None, s, 0.5 + s / 100) for s in (0, 1)] + [row(100, "pseudo", s, 0.6) for s in (0, 1)]
    rows += [row("all", "pseudo", s, 0.7) for s in (0, 1)] + [row("all", "spread", 0, 0.4)]
    rows += [row(0, None, 0, 0.1, recipe="plain")]  # another recipe: a line of its own, never averaged in
    assert score_vs_unlabeled(rows, tmp_path / "u.png").stat().st_size > 0
    assert ("pseudo", [0, 1, 2], [0.505, 0.6, 0.7], [0.007, 0.0, 0.0]) in drawn
    assert ("spread", [0, 2], [0.505, 0.4], [0.007, 0.0]) in drawn and len(drawn) == 2


def test_the_best_semi_recipe_is_best_with_every_unlabeled_image(tmp_path, tiny_best):
    from bottleneck.core.errors import BottleneckError
    from bottleneck.data.datasets import load_dataset
    from bottleneck.experiments.run import plan_run

    ds = load_dataset("gtsrb", DATA)
    best = plan_run("tiny_cnn", ds, 3, 0, recipe="best", cache_dir=tmp_path, **TINY)
    semi = plan_run("tiny_cnn", ds, 3, 0, recipe="best-semi", semi="spread", cache_dir=tmp_path, **TINY)
    assert semi.train.path == best.train.path and semi.head_params == best.head_params  # best's features and C search
    assert semi.unlabeled == "all" and semi.semi == "spread" and len(semi.pool) == 1 + len(best.parts)
    assert semi.pool[0].settings["crop"] == best.train.settings["crop"]  # the unlabeled rows are made as best's
    assert set(semi.pool[0].ids) == set(ds.split("train").ids) - set(best.train.ids)
    with pytest.raises(BottleneckError, match="sets --unlabeled all, and --unlabeled 5 was given too"):
        plan_run("tiny_cnn", ds, 3, 0, recipe="best-semi", unlabeled=5, cache_dir=tmp_path, **TINY)


def test_a_C_search_on_the_same_rows_is_made_once(monkeypatch):
    """A grid's runs with and without unlabeled images search C on the same labelled rows: once."""
    import sklearn.model_selection as ms

    from bottleneck.learn.heads import C_GRID, LogRegHead

    calls = []
    real = ms.cross_val_score
    monkeypatch.setattr(ms, "cross_val_score", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    X, y, truth = _two_clusters(seed=7)
    y[[1, 2, 101, 102]] = [0, 0, 1, 1]
    plain = LogRegHead(C="cv", cv_folds=3).fit(X[y >= 0], y[y >= 0])
    semi = SEMI_HEADS["pseudo"](C="cv", cv_folds=3).fit(X, y)
    assert len(calls) == len(C_GRID) and semi.C_ == plain.C_ and semi.cv_scores_ == plain.cv_scores_
    LogRegHead(C="cv", cv_folds=3, seed=1).fit(X[y >= 0], y[y >= 0])  # another seed: other folds, searched
    assert len(calls) == 2 * len(C_GRID)


def test_the_guides_table_of_methods_gives_each_heads_defaults():
    """docs/guide/unlabeled.md names each method's parameters with their values: the heads' defaults
    (it once said 3 rounds to half the pool after the default became 10 rounds to all of it)."""
    import re

    guide = (REPO / "docs" / "guide" / "unlabeled.md").read_text()
    for name, cls in SEMI_HEADS.items():
        (line,) = [x for x in guide.splitlines() if x.startswith(f"| `{name}` |")]
        defaults = cls().get_params()
        said = {p: float(v) for p, v in re.findall(r"`(\w+)`[ ,(]*([0-9][0-9.]*)", line) if p in defaults}
        assert said, line
        assert said == {p: float(defaults[p]) for p in said}, (name, said)


def test_pseudo_labels_hold_at_most_two_copies_of_the_rows():
    """The pseudo head's peak (numpy's allocations, traced) stays under 3x the rows in float64:
    it held the unscaled and the scaled rows and a copy of the pool together (4.3x; a CIFAR-10 run
    with every unlabeled image peaked at 13.1 GB)."""
    import tracemalloc

    from bottleneck.learn.semi import PseudoLabelHead

    rng = np.random.default_rng(0)
    n, d, k = 12000, 256, 10
    truth = rng.integers(0, k, n)
    X = (rng.normal(0, 3, (k, d))[truth] + rng.normal(0, 1, (n, d))).astype(np.float32)
    y = np.where(np.arange(n) < 100, truth, UNLABELED)
    tracemalloc.start()
    try:
        head = PseudoLabelHead(C=1.0, rounds=2, max_iter=50).fit(X, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * n * d * 8, peak / (n * d * 8)
    assert np.mean(head.predict(X) == truth) > 0.9  # and it still learns
