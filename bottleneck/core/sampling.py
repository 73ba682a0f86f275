"""Seeded, stratified, nested per-class draws and group-aware validation splits."""
from __future__ import annotations

import numpy as np


def _class_order(labels: np.ndarray, cls: int, seed: int) -> np.ndarray:
    """All indices of class ``cls`` in a seeded order; a draw of N takes the first N,
    so the draw for N is always inside the draw for any larger N (nested)."""
    idx = np.flatnonzero(labels == cls)
    return idx[np.random.default_rng([seed, int(cls)]).permutation(len(idx))]


def whole_draw(n: int, per_class: int | None, seed: int, stream: int, unit: str) -> tuple[np.ndarray, dict]:
    """Indices (sorted) of ``per_class`` of ``n`` items drawn as a whole (items without one
    class: frames, scenes, boxes of any class), seeded and nested (the first N of one seeded
    order, drawn from the random ``stream`` a target kind keeps its own), and {unit: n} when
    there were fewer. ``None`` keeps everything."""
    if per_class is None:
        return np.arange(n), {}
    order = np.random.default_rng([seed, stream]).permutation(n)
    return np.sort(order[:per_class]), ({unit: n} if n < per_class else {})


def per_class_draw(labels, per_class: int | None, seed: int = 0) -> tuple[np.ndarray, dict[int, int]]:
    """Indices (sorted) of up to ``per_class`` samples of each class, and the classes that
    had fewer ({class: how many it kept}). ``None`` keeps everything."""
    labels = np.asarray(labels)
    if per_class is None:
        return np.arange(len(labels)), {}
    if int(per_class) != per_class or per_class < 1:
        raise ValueError(f"per-class count must be a positive integer, got {per_class!r}")
    chosen, short = [], {}
    for cls in np.unique(labels):
        order = _class_order(labels, cls, seed)
        chosen.append(order[:per_class])
        if len(order) < per_class:
            short[int(cls)] = len(order)
    return np.sort(np.concatenate(chosen)), short


def unlabeled_draw(n_samples: int, labelled, count: int | None, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of ``count`` samples of a split of ``n_samples``, none of them in
    ``labelled`` (every other sample when ``count`` is None): the unlabeled rows beside a
    labelled draw. Drawn from the pool as a whole, in a seeded order, so a draw of N is inside
    any larger one for the same labelled draw (nested); it never sees a label, so it cannot
    favour a class (a count "per class" is only a way to size it: N times the number of classes)."""
    if count is not None and (int(count) != count or count < 0):
        raise ValueError(f"the unlabeled count must be a whole number >= 0, got {count!r}")
    pool = np.setdiff1d(np.arange(n_samples), np.asarray(labelled, dtype=np.int64))
    order = pool[np.random.default_rng([seed, 104729]).permutation(len(pool))]
    return np.sort(order if count is None else order[:int(count)])


def validation_split(labels, groups, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions): about ``fraction`` of each class goes to
    validation, whole groups at a time, so no group (e.g. a GTSRB track) is in both."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    rng = np.random.default_rng([seed, 7919])
    val = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        unique_groups = np.unique(groups[members])
        if len(unique_groups) < 2:
            continue  # one group: it cannot be split without leaking
        target = max(1, round(fraction * len(members)))
        taken = 0
        for g in rng.permutation(unique_groups):
            if taken >= target:
                break
            in_group = members[groups[members] == g]
            val.append(in_group)
            taken += len(in_group)
    val = np.sort(np.concatenate(val)) if val else np.empty(0, dtype=int)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val
