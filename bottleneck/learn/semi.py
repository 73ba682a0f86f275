"""Semi-supervised heads: learn from labelled features and unlabeled ones (issue 27, in progress).

Each head takes scikit-learn's convention for a training set that is partly unlabeled: ``y``
is ``UNLABELED`` (-1) for an unlabeled row. The labels an unlabeled row may have are never
given to a head, so it cannot read them. Three methods, each a scikit-learn estimator like the
other heads (keyword parameters stored as given, ``fit`` returns self, learned state ends in ``_``):

- ``selftrain``: scikit-learn's ``SelfTrainingClassifier`` around the logistic regression:
  rows predicted above ``threshold`` get that label, and the model is refit, until none is added.
- ``spread``: scikit-learn's ``LabelSpreading`` on a k-nearest-neighbour graph of the
  standardized features (labels flow along the graph, ``alpha`` of each row's label may change),
  then the logistic regression on the labels spread.
- ``pseudo``: rounds of confident pseudo-labels kept class-balanced (each round, the same number
  of the most confident rows of each predicted class, a growing share of the unlabeled rows:
  ``fraction`` of them in the last round), then a refit on labelled + pseudo-labelled rows; a
  class never outnumbers the others, so one class cannot swallow the pool. With ``scale_C`` each
  refit keeps the regularisation per row that C was chosen for on the labelled rows (for a pool
  of more frames of the labelled objects; off by default, see ``PseudoLabelHead.refit_C``).

Each fits the logistic regression of the ``logreg`` head inside (``C``, or ``C="cv"``: chosen
by cross-validation on the labelled rows only, then kept for every refit). ``train`` and
``compare`` use them with ``--unlabeled N|all`` and ``--semi METHOD`` (``BEST_SEMI`` when
``--semi`` is left out); they are not ``--head`` names, since without unlabeled rows each is
the logistic regression.
"""
from __future__ import annotations

import numbers

import numpy as np
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from bottleneck.learn.heads import C_SEARCH_FOLDS, Head, InvalidParameter, LogRegHead, check_param, make_from

UNLABELED = -1  # scikit-learn's mark of an unlabeled row
BLOCK_ROWS = 4096  # rows predicted at a time where a copy of them all would be large


def _split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labelled positions, unlabeled positions) of ``y``."""
    unlabeled = y == UNLABELED
    if not (~unlabeled).any():
        raise InvalidParameter("every training row is unlabeled", "give the head labelled rows as well")
    return np.flatnonzero(~unlabeled), np.flatnonzero(unlabeled)


def _in_blocks(predict, X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``predict(X[rows])``, a block of rows at a time: a copy of a whole CIFAR-10 pool's rows in
    float64 would be 2.2 GB."""
    return np.concatenate([predict(X[rows[i:i + BLOCK_ROWS]]) for i in range(0, len(rows), BLOCK_ROWS)]
                          or [np.zeros((0, 0))])


class SemiHead(Head):
    """What the three share: one class per image, and the logistic regression each fits (C or
    "cv", cv_folds, max_iter, seed)."""

    tasks = ("single_label",)

    def check_params(self) -> None:
        self._logreg_head().check_params()
        if self.task is not None:
            raise InvalidParameter("the semi-supervised heads learn one class per image", "pass task=None")

    def _logreg_head(self) -> LogRegHead:
        return LogRegHead(C=self.C, max_iter=self.max_iter, cv_folds=self.cv_folds, seed=self.seed)

    def _start(self, X, y, labelled, groups):
        """The logistic regression on the labelled rows alone, where every method starts; its C
        (searched there when "cv", never on unlabeled rows) is the one every refit uses."""
        first = self._logreg_head().fit(X[labelled], y[labelled],
                                        groups=None if groups is None else np.asarray(groups)[labelled])
        self.C_ = first.C_
        if hasattr(first, "cv_scores_"):
            self.cv_scores_ = first.cv_scores_
        return first.pipeline_

    def _choose_C(self, X, y, labelled, groups) -> None:
        """``C_`` as ``_start`` chooses it, without fitting a model nobody uses when C is given."""
        if self.C == "cv":
            self._start(X, y, labelled, groups)
        else:
            self.C_ = self.C

    def _logreg(self):
        """The regression every refit uses: C as chosen at the start, and warm-started, since each
        refit's optimum is near the last one's (the same convex problem, solved in fewer steps)."""
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C_, max_iter=self.max_iter, random_state=self.seed, warm_start=True)

    def logistic(self):
        """(the fitted StandardScaler, the fitted LogisticRegression) that predict: what an
        exported model holds as layers, as for the logreg head."""
        check_is_fitted(self)
        scaler, model = self.pipeline_.steps[0][1], self.pipeline_.steps[-1][1]
        return scaler, getattr(model, "estimator_", model)  # self-training wraps the regression

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.pipeline_.predict_proba(self._features(X, np.float64))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class SelfTrainingHead(SemiHead):
    """Self-training (scikit-learn's SelfTrainingClassifier) around the logistic regression."""

    def __init__(self, C: float | str = 1.0, threshold: float = 0.9, max_rounds: int = 10, max_iter: int = 1000,
                 cv_folds: int = C_SEARCH_FOLDS, seed: int = 0, task=None):
        self.C = C
        self.threshold = threshold
        self.max_rounds = max_rounds
        self.max_iter = max_iter
        self.cv_folds = cv_folds
        self.seed = seed
        self.task = task

    def check_params(self) -> None:
        super().check_params()
        check_param(self, "threshold", numbers.Real, 0, 1, "right")
        check_param(self, "max_rounds", numbers.Integral, 1)

    def fit(self, X, y, groups=None):
        from sklearn.pipeline import make_pipeline
        from sklearn.semi_supervised import SelfTrainingClassifier

        X, y = self._checked(X, y, np.float64)
        self._choose_C(X, y, _split(y)[0], groups)
        model = SelfTrainingClassifier(self._logreg(), threshold=self.threshold, max_iter=self.max_rounds)
        self.pipeline_ = make_pipeline(StandardScaler(), model).fit(X, y)
        self.classes_ = self.pipeline_.classes_
        self.labeled_iter_ = model.labeled_iter_  # the round each row got its label in (0: given)
        return self


class LabelSpreadingHead(SemiHead):
    """Label spreading (scikit-learn's LabelSpreading) on a kNN graph of standardized features,
    then the logistic regression fit on the labels spread: predicting a new image is the
    regression's (fast, no graph of the training rows kept); rows the spreading never reached (a
    part of the graph with no labelled row: its label distribution is all zeros) are left out of
    that fit and counted in ``unreached_``."""

    def __init__(self, n_neighbors: int = 10, alpha: float = 0.2, max_rounds: int = 30, C: float | str = 1.0,
                 max_iter: int = 1000, cv_folds: int = C_SEARCH_FOLDS, seed: int = 0, task=None):
        self.n_neighbors = n_neighbors
        self.alpha = alpha
        self.max_rounds = max_rounds
        self.C = C
        self.max_iter = max_iter
        self.cv_folds = cv_folds
        self.seed = seed
        self.task = task

    def check_params(self) -> None:
        super().check_params()
        check_param(self, "n_neighbors", numbers.Integral, 1)
        check_param(self, "alpha", numbers.Real, 0, 1, "neither")
        check_param(self, "max_rounds", numbers.Integral, 1)

    def fit(self, X, y, groups=None):
        import warnings

        from sklearn.pipeline import make_pipeline
        from sklearn.semi_supervised import LabelSpreading

        X, y = self._checked(X, y, np.float64)
        self._choose_C(X, y, _split(y)[0], groups)
        Xs = StandardScaler().fit_transform(X)
        spreading = LabelSpreading(kernel="knn", n_neighbors=min(self.n_neighbors, len(X) - 1), alpha=self.alpha,
                                   max_iter=self.max_rounds)
        with warnings.catch_warnings():  # an unreached part of the graph divides 0 by 0: counted below
            warnings.simplefilter("ignore", RuntimeWarning)
            spreading.fit(Xs, y)
        dist = spreading.label_distributions_  # an unreached row's is all zeros (or NaN: 0/0)
        reached = (np.isfinite(dist).all(axis=1) & (np.nan_to_num(dist).sum(axis=1) > 0)) | (y != UNLABELED)
        self.unreached_ = int((~reached).sum())
        self.transduction_ = np.where(reached, spreading.transduction_, UNLABELED)  # each row's spread label
        self.pipeline_ = make_pipeline(StandardScaler(), self._logreg()).fit(X[reached], self.transduction_[reached])
        self.classes_ = self.pipeline_.classes_
        return self


class PseudoLabelHead(SemiHead):
    """Rounds of class-balanced confident pseudo-labels, refit on labelled + pseudo-labelled rows."""

    def __init__(self, C: float | str = 1.0, rounds: int = 10, fraction: float = 1.0, scale_C: bool = False,
                 max_iter: int = 1000, cv_folds: int = C_SEARCH_FOLDS, seed: int = 0, task=None):
        self.C = C
        self.rounds = rounds
        self.fraction = fraction
        self.scale_C = scale_C
        self.max_iter = max_iter
        self.cv_folds = cv_folds
        self.seed = seed
        self.task = task

    def check_params(self) -> None:
        super().check_params()
        check_param(self, "rounds", numbers.Integral, 1)
        check_param(self, "fraction", numbers.Real, 0, 1, "right")
        if not isinstance(self.scale_C, (bool, np.bool_)):
            raise InvalidParameter(f"the 'scale_C' parameter of PseudoLabelHead must be True or False; "
                                   f"got {self.scale_C!r}", "pass scale_C=True or scale_C=False")

    def fit(self, X, y, groups=None):
        from sklearn.pipeline import make_pipeline

        X, y = self._checked(X, y, np.float64)
        labelled, pool = _split(y)
        self.pipeline_ = self._start(X, y, labelled, groups)
        self.classes_ = self.pipeline_.classes_
        self.pseudo_ = np.full(len(y), UNLABELED)  # the pseudo-label each unlabeled row ended with
        # The first round asks the labelled rows' model, each later round the last refit.
        first = _in_blocks(self.pipeline_.predict_proba, X, pool)
        # The refits standardize with every row's statistics (labels not needed), computed once;
        # the unscaled rows are not needed after that (dropping them halves this head's peak).
        scaler = StandardScaler().fit(X)
        Xs, model = scaler.transform(X), self._logreg()
        del X
        for r in range(1, self.rounds + 1):
            if not len(pool):
                break
            # each round takes a growing share of the pool: r/rounds of `fraction`, equal per class
            per_class = int(self.fraction * len(pool) * r / self.rounds / len(self.classes_))
            probs = first if r == 1 else _in_blocks(model.predict_proba, Xs, pool)
            guess, confidence = probs.argmax(axis=1), probs.max(axis=1)
            chosen = []
            for k in range(len(self.classes_)):
                mine = np.flatnonzero(guess == k)
                chosen.extend(mine[np.argsort(-confidence[mine], kind="stable")[:per_class]])
            chosen = np.asarray(sorted(chosen), dtype=np.int64)
            self.pseudo_[:] = UNLABELED
            self.pseudo_[pool[chosen]] = self.classes_[guess[chosen]]
            rows = np.concatenate([labelled, pool[chosen]])
            targets = np.concatenate([y[labelled], self.classes_[guess[chosen]]])
            model.set_params(C=self.refit_C(len(labelled), len(rows)))
            model.fit(Xs[rows], targets)
        if len(pool):
            self.pipeline_ = make_pipeline(scaler, model)  # both fitted already
        return self

    def refit_C(self, n_labelled: int, n_rows: int) -> float:
        """C of a refit on ``n_rows`` rows, ``n_labelled`` of them labelled.

        scikit-learn's C weighs the sum of the rows' losses against the penalty, so the same C on
        k times the rows regularises each row k times less: right for new images (more evidence),
        too little where the pool is more frames of the labelled objects (GTSRB's tracks add little
        new). ``scale_C`` scales C by n_labelled / n_rows, keeping the per-row regularisation C
        was chosen for. Measured (docs/guide/unlabeled.md): GTSRB, best-grids + every unlabeled
        image, 3 seeds 0.926 -> 0.929; CIFAR-10, best, 49 times the labelled rows: seeds 0 and 2 up
        half a point, seed 1 down 5 (its search chose C 0.001, scaled to 0.00002: far too much
        regularisation for new images). So it is off by default.
        """
        return self.C_ * n_labelled / n_rows if self.scale_C else self.C_


SEMI_HEADS = {"selftrain": SelfTrainingHead, "spread": LabelSpreadingHead, "pseudo": PseudoLabelHead}
# What --unlabeled uses without --semi: at 100 labels a class pseudo-labels and self-training measured the
# same (GTSRB 0.924 both, CIFAR-10 on lite0's features 0.752 and 0.751); at 5 a class self-training fell below
# the plain head (CIFAR-10 0.515 against 0.533) where class-balanced pseudo-labels gained 11 points (0.643):
# the robust one is the default (docs/guide/unlabeled.md).
BEST_SEMI = "pseudo"


def make_semi_head(name: str, seed: int = 0, **params) -> SemiHead:
    """A semi-supervised head by name, its parameters checked, e.g. ``make_semi_head("pseudo", C="cv")``."""
    return make_from(SEMI_HEADS, "semi-supervised method", name, seed, None, params)
