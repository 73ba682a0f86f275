"""Learning from unlabeled images (issue 27, first part): the unlabeled draw, and each
semi-supervised head on a case whose answer is known."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.base import clone

from bottleneck.core.sampling import per_class_draw, unlabeled_draw
from bottleneck.learn.heads import InvalidParameter
from bottleneck.learn.semi import SEMI_HEADS, UNLABELED


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
