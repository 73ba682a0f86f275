"""Lesson 6: what unlabeled images add, and when pseudo-labels hurt.

Labels are what is scarce; images are cheap. The classic lab labels 100 images per class, but a
training split usually holds many more images than anyone labelled, and with a feature cache
they cost one extraction. A head can learn from them without their labels: fit on the labelled
images, predict the unlabeled ones, keep the confident predictions as *pseudo-labels*, and fit
again on both.

Three things can go wrong. A wrong pseudo-label is learnt as if it were true, and the next model
believes it even more (confirmation bias): with very few labels the first model is weak, and
many of its confident guesses are wrong. And confidence is not spread evenly: the classes the
first model favours take most of the pool, so the refit favours them further. Taking the same
number of the most confident rows from each predicted class guards against the second; your
function below does that. And the unlabeled images may not be of the labelled classes at all
(a folder of "everything else"): each of them is pseudo-labelled as one of the known classes, so
the head learns that a truck is, say, an automobile, and the test images of the known classes
pay for it.

The lesson draws N labelled images per class from the embedded CIFAR-10 subset, treats the rest
of its training split as unlabeled, and compares the plain head with pseudo-labels taken by a
threshold and pseudo-labels taken class-balanced; then labels only 5 classes and pseudo-labels a
pool that holds the other 5 classes as well. It grades the pseudo-labels with the true labels
the method never saw (only to show how many were wrong), then runs the same with bottleneck's own
`train(..., unlabeled="all")`.

    .venv/bin/python -m lab.lesson6_unlabeled_images
"""
from __future__ import annotations

import numpy as np

import bottleneck
from bottleneck.core.sampling import per_class_draw
from bottleneck.learn.heads import LogRegHead

from .common import CACHE, DATA, OUT, base_for, options

THRESHOLD = 0.5  # the unbalanced way: every prediction at least this confident becomes a pseudo-label
SHARE = 0.5  # the balanced way: half of the unlabeled images, the same number from each predicted class


def balanced_pseudo_labels(probabilities: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels): for each class k, the ``per_class`` rows predicted k with the highest
    probability (fewer when fewer are predicted k); the rows in ascending order, each with the
    class it was predicted."""
    # TODO: the predicted class of each row is the argmax of its probabilities, its confidence the max.
    #       For each class, take the rows predicted that class, sort them by confidence (highest first) and
    #       keep the first per_class. Return the kept rows in ascending order, and their predicted classes.
    ### BEGIN SOLUTION balanced_pseudo_labels
    guess, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    kept = []
    for k in range(probabilities.shape[1]):
        mine = np.flatnonzero(guess == k)
        kept.extend(mine[np.argsort(-confidence[mine], kind="stable")[:per_class]])
    rows = np.sort(np.asarray(kept, dtype=np.int64))
    return rows, guess[rows]
    ### END SOLUTION


def threshold_pseudo_labels(probabilities: np.ndarray, threshold: float = THRESHOLD):
    """(rows, labels): every row predicted with at least ``threshold`` probability."""
    rows = np.flatnonzero(probabilities.max(axis=1) >= threshold)
    return rows, probabilities[rows].argmax(axis=1)


def with_pseudo_labels(X, y, labelled, pool, pick) -> tuple[LogRegHead, dict]:
    """Fit on the labelled rows, pseudo-label the pool with ``pick``, fit again on both; the
    refit head and how the pseudo-labels came out (graded with the pool's true labels ``y``,
    which the head never sees)."""
    first = LogRegHead().fit(X[labelled], y[labelled])
    rows, labels = pick(first.predict_proba(X[pool]))
    head = LogRegHead().fit(np.concatenate([X[labelled], X[pool][rows]]), np.concatenate([y[labelled], labels]))
    counts = np.bincount(labels, minlength=len(first.classes_))
    return head, {"pseudo": len(rows), "right": float(np.mean(labels == y[pool][rows])) if len(rows) else 0.0,
                  "largest_class": float(counts.max() / max(1, counts.sum()))}


def run(fast: bool = False, cache_dir=CACHE, out=OUT) -> list[dict]:
    """The lesson: plain, threshold and balanced pseudo-labels at a few labelled counts; then
    bottleneck's own semi-supervised run."""
    b = base_for(fast)
    train = bottleneck.extract(dataset="cifar10", split="train", data_dir=DATA, cache_dir=cache_dir, **b)
    test = bottleneck.extract(dataset="cifar10", split="test", data_dir=DATA, cache_dir=cache_dir, **b)
    X, y = train.features.reshape(len(train), -1), np.asarray(train.labels)
    X_test, y_test = test.features.reshape(len(test), -1), np.asarray(test.labels)
    n_classes = len(train.class_names)
    rows = []
    print(f"{len(train)} training images ({len(train) // n_classes} per class), {len(test)} test images")
    print("| labelled per class | plain | threshold pseudo-labels | balanced pseudo-labels |")
    print("|---|---|---|---|")
    for n in (2, 10) if fast else (2, 5, 20):
        labelled, _ = per_class_draw(y, n, seed=0)
        pool = np.setdiff1d(np.arange(len(y)), labelled)  # its labels are only used to grade, below
        plain = LogRegHead().fit(X[labelled], y[labelled]).score(X_test, y_test)
        per_class = int(SHARE * len(pool) / n_classes)
        cells, row = [f"{plain:.3f}"], {"per_class": n, "plain": plain}
        for name, pick in (("threshold", threshold_pseudo_labels),
                           ("balanced", lambda p: balanced_pseudo_labels(p, per_class))):
            head, how = with_pseudo_labels(X, y, labelled, pool, pick)
            row[name] = head.score(X_test, y_test)
            row[f"{name}_pseudo"] = how
            cells.append(f"{row[name]:.3f} ({how['pseudo']} pseudo-labels, {how['right']:.0%} right, "
                         f"largest class {how['largest_class']:.0%})")
        print(f"| {n} | " + " | ".join(cells) + " |")
        rows.append(row)
    print("\n(the pseudo-labels are graded with the true labels of the unlabeled images, which no head saw)")

    # When the pool holds classes nobody labelled: 5 known classes, scored on their test images only.
    known = np.arange(n_classes // 2)
    n = 10
    labelled, _ = per_class_draw(y, n, seed=0)
    labelled = labelled[np.isin(y[labelled], known)]
    scored = np.isin(y_test, known)
    rest = np.setdiff1d(np.arange(len(y)), labelled)
    print(f"\n{len(known)} classes labelled ({n} images each), scored on their {int(scored.sum())} test images:")
    plain = LogRegHead().fit(X[labelled], y[labelled]).score(X_test[scored], y_test[scored])
    mismatch = {"plain": plain}
    print(f"  plain: {plain:.3f}")
    for name, pool in (("pool of the known classes", rest[np.isin(y[rest], known)]),
                       ("pool of all 10 classes", rest)):
        per_class = int(SHARE * len(pool) / len(known))
        head, how = with_pseudo_labels(X, y, labelled, pool, lambda p: balanced_pseudo_labels(p, per_class))
        mismatch[name] = head.score(X_test[scored], y_test[scored])
        print(f"  balanced pseudo-labels, {name} ({len(pool)} images): {mismatch[name]:.3f} "
              f"({how['right']:.0%} of {how['pseudo']} pseudo-labels right)")
    rows.append(mismatch)

    library = bottleneck.train(dataset="cifar10", per_class=5, seed=0, unlabeled="all", data_dir=DATA,
                               cache_dir=cache_dir, progress=False, **b)
    print(f"bottleneck.train(..., per_class=5, unlabeled='all'): {library['n_train']} labelled + "
          f"{library['n_unlabeled']} unlabeled images, semi={library['semi']}: accuracy {library['accuracy']:.3f}")
    rows.append(library)
    return rows


def main() -> None:
    a = options(__doc__)
    run(a.fast, a.cache_dir, a.out)


if __name__ == "__main__":
    main()
