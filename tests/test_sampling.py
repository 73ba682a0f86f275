"""The per-class draw (seeded, stratified, nested) and group-aware validation splits."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from bottleneck.core.sampling import per_class_draw, validation_split


def _labels():
    return np.repeat(np.arange(5), [30, 12, 50, 3, 20])


def test_counts_and_short_classes():
    labels = _labels()
    idx, short = per_class_draw(labels, 10, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10, 3, 10]
    assert short == {3: 3}
    assert list(idx) == sorted(set(idx.tolist()))  # sorted, no repeats


def test_seeded_and_nested():
    labels = _labels()
    a, _ = per_class_draw(labels, 10, seed=3)
    assert np.array_equal(a, per_class_draw(labels, 10, seed=3)[0])
    assert not np.array_equal(a, per_class_draw(labels, 10, seed=4)[0])
    for small, large in [(5, 10), (10, 25), (1, 100)]:
        s, _ = per_class_draw(labels, small, seed=3)
        big, _ = per_class_draw(labels, large, seed=3)
        assert set(s) <= set(big)


def test_same_draw_in_another_process():
    code = ("import numpy as np; from bottleneck.core.sampling import per_class_draw; "
            "print(per_class_draw(np.repeat(np.arange(5), [30, 12, 50, 3, 20]), 7, 11)[0].tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(per_class_draw(_labels(), 7, 11)[0].tolist())


def test_all_and_invalid():
    labels = _labels()
    assert len(per_class_draw(labels, None)[0]) == len(labels)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError):
            per_class_draw(labels, bad)


def test_validation_split_keeps_groups_whole():
    labels = np.repeat([0, 1], 60)
    groups = np.array([f"{c}/{i // 30 if c == 0 else i // 10}" for c, i in zip(labels, list(range(60)) * 2)])
    train, val = validation_split(labels, groups, 0.2, seed=0)
    assert len(set(groups[train]) & set(groups[val])) == 0
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(120))
    assert set(labels[val]) == {0, 1}
    # a class with a single group cannot be split without leaking: it stays in training
    train, val = validation_split(np.zeros(10, int), np.array(["t"] * 10), 0.5)
    assert len(val) == 0


def test_random_cases_counts_nested_and_seeded():
    """Property check over random class sizes, limits and seeds."""
    rng = np.random.default_rng(42)
    for _ in range(200):
        sizes = rng.integers(1, 40, rng.integers(1, 8))
        labels = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
        n, seed = int(rng.integers(1, 45)), int(rng.integers(0, 10**6))
        idx, short = per_class_draw(labels, n, seed)
        assert np.bincount(labels[idx], minlength=len(sizes)).tolist() == [min(n, s) for s in sizes]
        assert short == {c: int(s) for c, s in enumerate(sizes) if s < n}
        bigger, _ = per_class_draw(labels, n + int(rng.integers(1, 10)), seed)
        assert set(idx) <= set(bigger)
        assert np.array_equal(idx, per_class_draw(labels, n, seed)[0])
