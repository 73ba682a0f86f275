"""Stage 2: small classifier heads trained on cached features, on the CPU.

scikit-learn's estimator contract (they are ``BaseEstimator`` subclasses): the
constructor only stores parameters, ``fit`` validates them and returns self,
learned state ends in ``_``; ``get_params(deep)``, ``set_params`` and
``sklearn.base.clone`` work; ``predict`` before ``fit`` raises ``NotFittedError``.
All heads are seeded: the same features and seed give the same predictions.
"""
from __future__ import annotations

import math
import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from bottleneck.core import determinism
from bottleneck.core.errors import BottleneckError, nearest
from bottleneck.core.registries import add, is_plain_name
from bottleneck.core.sampling import validation_split
from bottleneck.core.tasks import Regression, SingleLabel, Task


class InvalidParameter(BottleneckError, ValueError):
    """A head parameter out of its range: a ValueError (as scikit-learn raises) that the
    CLI reports as a clear error."""


class HeadWarning(UserWarning):
    """Something about a head's training the user should know (e.g. early stopping is off)."""


def check_param(estimator, name: str, kind, low=None, high=None, closed: str = "both") -> None:
    """scikit-learn-style validation of one parameter: a number of ``kind`` in [low, high]
    (``closed`` says which ends are included); NaN and booleans are never numbers here."""
    value = getattr(estimator, name)
    ok = isinstance(value, kind) and not isinstance(value, bool)
    if ok and isinstance(value, numbers.Real) and math.isnan(value):
        ok = False
    if ok and low is not None:
        ok = value >= low if closed in ("both", "left") else value > low
    if ok and high is not None:
        ok = value <= high if closed in ("both", "right") else value < high
    if not ok:
        what = "an int" if kind is numbers.Integral else "a float"
        left = "[" if closed in ("both", "left") else "("
        right = "]" if closed in ("both", "right") else ")"
        lo, hi = ("-inf" if low is None else low), ("inf" if high is None else high)
        raise InvalidParameter(
            f"the {name!r} parameter of {type(estimator).__name__} must be {what} in the range "
            f"{left}{lo}, {hi}{right}; got {value!r}",
            f"pass {name} in that range" + (f" ({OPTION_FLAGS[name]} on the command line)" if name in OPTION_FLAGS else ""))


OPTION_FLAGS = {"epochs": "--epochs", "learning_rate": "--learning-rate", "batch_size": "--head-batch-size",
            "validation_fraction": "--validation-fraction", "tune_thresholds": "--tune-thresholds"}


def _check_finite(X: np.ndarray, what: str = "features") -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InvalidParameter(f"{int(bad.sum())} rows of the {what} hold NaN or infinite values (first: row "
                               f"{int(np.flatnonzero(bad)[0])})",
                               "check the features: a base run in too low a precision, or a damaged file")


def task_kind(task) -> str:
    return "single_label" if task is None else task.kind


class _Common:
    """What every head shares: parameter checks, 2-D float features, targets, metrics.
    (A plain mixin: each head puts scikit-learn's classifier or regressor mixin first.)"""

    tasks = ("single_label", "multi_label")  # the kinds of target a head can learn

    def check_params(self) -> None:
        """Raise ``InvalidParameter`` for a parameter out of range (a head of your own overrides
        this; ``validate`` and ``fit`` call it)."""

    def _check_task(self) -> None:
        if self.task is not None and not isinstance(self.task, Task):
            raise InvalidParameter(f"the 'task' parameter of {type(self).__name__} must be a bottleneck Task or "
                                   f"None; got {self.task!r}", "pass e.g. tasks.MultiLabel.declare(...)")
        if task_kind(self.task) not in self.tasks:
            raise InvalidParameter(f"{type(self).__name__} cannot learn a {task_kind(self.task)} target",
                                   f"use a head for it: {', '.join(heads_for(task_kind(self.task)))}")

    def validate(self):
        """Check the parameters now (``fit`` does too); returns self."""
        self.check_params()
        self._check_task()
        return self

    def _features(self, X, dtype=np.float32, reset: bool = False) -> np.ndarray:
        """Features as a 2-D finite array: scikit-learn's own validation (sparse refused, the
        number of features remembered at fit and checked after), any further axes flattened
        (spatial features), NaN and infinity refused with our message."""
        from sklearn.utils.validation import validate_data

        X = validate_data(self, X, reset=reset, dtype=dtype, ensure_all_finite=False, allow_nd=True)
        X = X.reshape(len(X), -1)
        _check_finite(X)
        return X

    def _targets(self, y) -> np.ndarray:
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import assert_all_finite, column_or_1d

        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        kind = task_kind(self.task)
        if kind == "single_label":  # scikit-learn's checks: a class per sample, never NaN or a float target
            y = column_or_1d(y, warn=True)
            if y.dtype.kind == "f":
                assert_all_finite(y, input_name="y")
            check_classification_targets(y)
            return y
        y = np.asarray(y, np.float32)
        if kind != "single_label":
            y = y.reshape(len(y), -1)
            if y.shape[1] != self.task.width:
                raise InvalidParameter(f"targets have {y.shape[1]} columns; the task has {self.task.width}",
                                       "pass the target matrix the task describes")
            self.task.check(y)
        return y

    def _checked(self, X, y, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
        """What every fit starts with: parameters and task checked, 2-D finite features, targets
        of the task's shape."""
        self.check_params()
        self._check_task()
        return self._features(X, dtype, reset=True), self._targets(y)

    def evaluate(self, X, y, baseline=None) -> dict:
        """Every metric of the task on (X, y)."""

        kind = task_kind(self.task)
        if kind == "single_label":
            return (self.task or SingleLabel()).metrics(np.asarray(y), self.predict(X))
        y = self._targets(y)
        if kind == "multi_label":
            scores = self.predict_proba(X)
            return self.task.metrics(y, self.task.decode(scores, self._thresholds()), scores)
        return self.task.metrics(y, self.predict(X), baseline)

    def _thresholds(self):
        return getattr(self, "thresholds_", None)


class Head(ClassifierMixin, _Common, BaseEstimator):
    """A head that scikit-learn sees as a classifier (its score: the task's main metric).

    The base of a head of your own: list the target kinds it learns in ``tasks``, take
    ``seed`` and ``task`` (None for one label per image) as keyword parameters beside its
    own, check them in ``check_params``, and implement ``fit(X, y, groups=None)`` (start
    with ``X, y = self._checked(X, y)``), ``predict`` and, for multi-label targets,
    ``predict_proba``; ``evaluate`` and ``score`` then give the task's metrics. Register it
    with ``register_head`` to use it by name in ``train`` and ``compare``.
    """

    def score(self, X, y, sample_weight=None) -> float:
        """The task's main metric (accuracy for one label, mAP, R² or mean IoU): higher is better."""
        kind = task_kind(self.task)
        if kind == "single_label":
            return super().score(X, y, sample_weight)
        y = self._targets(y)
        return self.evaluate(X, y)[self.task.main_metric]


class KerasHead(Head):
    """Shared training loop of the Keras heads; subclasses define the hidden layers."""

    tasks = ("single_label", "multi_label", "regression")

    def __init__(self, epochs: int = 30, batch_size: int = 64, learning_rate: float = 1e-3,
                 validation_fraction: float = 0.0, patience: int = 5, standardize: bool = True, seed: int = 0,
                 verbose: int = 0, task=None, tune_thresholds: bool = False):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.seed = seed
        self.verbose = verbose
        self.task = task
        self.tune_thresholds = tune_thresholds

    def check_params(self) -> None:
        check_param(self, "epochs", numbers.Integral, 1)
        check_param(self, "batch_size", numbers.Integral, 1)
        check_param(self, "learning_rate", numbers.Real, 0, None, "neither")
        check_param(self, "validation_fraction", numbers.Real, 0, 1, "left")
        check_param(self, "patience", numbers.Integral, 0)
        check_param(self, "seed", numbers.Integral)

    def _prepare(self, X, fitting: bool = False) -> np.ndarray:
        if not fitting:
            X = self._features(X)
        return self.scaler_.transform(X).astype(np.float32) if self.scaler_ is not None else X

    def _hidden(self) -> list:
        return []

    def fit(self, X, y, groups=None):
        """Train on features ``X`` and targets ``y`` (class labels, or the task's target
        matrix). With ``validation_fraction``, that part of each class (whole ``groups`` at
        a time) is held out for early stopping (and, for multi-label with
        ``tune_thresholds``, to choose each label's threshold)."""
        import keras

        X, y = self._checked(X, y)
        determinism.seed_everything(self.seed)
        kind = task_kind(self.task)
        if kind == "single_label":
            self.classes_, y_fit = np.unique(y, return_inverse=True)
            strata = y_fit
        elif kind == "multi_label":
            y_fit, strata = y, np.zeros(len(y), int)
        else:
            self.scaling_ = self.task.fit_scaling(y)
            y_fit, strata = self.task.encode(y, self.scaling_), np.zeros(len(y), int)
        self.scaler_ = StandardScaler().fit(X) if self.standardize else None
        X = self._prepare(X, fitting=True)
        callbacks, validation, va = [], None, []
        self.validation_size_ = 0
        if self.validation_fraction > 0:
            groups = np.asarray(groups) if groups is not None else np.arange(len(y))
            tr, va = validation_split(strata, groups, self.validation_fraction, self.seed)
            _warn_about_validation(self.validation_fraction, strata, groups, len(va))
            if len(va):
                validation = (X[va], y_fit[va])
                X_va, y_va = X[va], y_fit[va]
                X, y_fit = X[tr], y_fit[tr]
                callbacks.append(keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True))
                self.validation_size_ = len(va)
        self.model_ = self._network(X.shape[1])
        if kind == "single_label":
            loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
        else:
            loss, metrics = self.task.keras_loss(), None
        self.model_.compile(optimizer=keras.optimizers.Adam(self.learning_rate), loss=loss, metrics=metrics)
        self.history_ = self.model_.fit(X, y_fit, epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
                                        validation_data=validation, callbacks=callbacks, verbose=self.verbose).history
        self.epochs_run_ = self.n_iter_ = len(self.history_["loss"])
        if self.tune_thresholds and kind != "multi_label":
            warnings.warn(f"tune_thresholds is for multi-label targets; this one is {kind} (ignored)", HeadWarning,
                          stacklevel=2)
        if kind == "multi_label" and self.tune_thresholds:
            if not len(va):
                raise InvalidParameter("tune_thresholds needs a validation part of the training draw",
                                       "pass validation_fraction > 0 (whole groups are held out; never test images)")
            self.thresholds_ = self.task.tune_thresholds(y_va, self._raw(X_va))
        return self

    def _network(self, n_features: int):
        """The head's layers (uncompiled): hidden layers, then the task's output."""
        import keras

        if task_kind(self.task) == "single_label":  # exactly the layers of the classic head, so numbers stay
            return keras.Sequential([keras.Input((n_features,)), *self._hidden(),
                                     keras.layers.Dense(len(self.classes_), activation="softmax")])
        inputs = keras.Input((n_features,))
        x = inputs
        for layer in self._hidden():
            x = layer(x)
        return keras.Model(inputs, self.task.keras_output(x))

    def _raw(self, X_prepared) -> np.ndarray:
        return np.asarray(self.model_.predict(X_prepared, batch_size=1024, verbose=0))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (one label), or each label's score (multi-label)."""
        check_is_fitted(self)
        if task_kind(self.task) == "regression":
            raise AttributeError("a regression head has no predict_proba; use predict")
        return self._raw(self._prepare(X))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        kind = task_kind(self.task)
        if kind == "single_label":
            return self.classes_[self.predict_proba(X).argmax(axis=1)]
        if kind == "multi_label":
            return self.task.decode(self.predict_proba(X), self._thresholds())
        return self.task.decode(self._raw(self._prepare(X)), self.scaling_)


def _warn_about_validation(fraction: float, labels: np.ndarray, groups: np.ndarray, held: int) -> None:
    """Say so when groups make ``validation_fraction`` impossible to honour."""
    single = [c for c in np.unique(labels) if len(np.unique(groups[labels == c])) < 2]
    if not held:
        warnings.warn(f"validation_fraction={fraction} held out nothing: every class of the training draw is a "
                      "single group (e.g. one GTSRB track), and a group is never split between training and "
                      "validation; early stopping is off", HeadWarning, stacklevel=3)
    elif single:
        warnings.warn(f"validation_fraction={fraction}: {len(single)} of {len(np.unique(labels))} classes are a "
                      "single group and have no validation images", HeadWarning, stacklevel=3)


class DenseHead(KerasHead):
    """The classic lab's head: flatten, then the task's output layer (one softmax layer for a class)."""


class MLPHead(KerasHead):
    """A hidden ReLU layer with dropout, then the task's output layer."""

    def __init__(self, hidden: int = 256, dropout: float = 0.5, epochs: int = 30, batch_size: int = 64,
                 learning_rate: float = 1e-3, validation_fraction: float = 0.0, patience: int = 5,
                 standardize: bool = True, seed: int = 0, verbose: int = 0, task=None, tune_thresholds: bool = False):
        super().__init__(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         validation_fraction=validation_fraction, patience=patience, standardize=standardize,
                         seed=seed, verbose=verbose, task=task, tune_thresholds=tune_thresholds)
        self.hidden = hidden
        self.dropout = dropout

    def check_params(self) -> None:
        super().check_params()
        check_param(self, "hidden", numbers.Integral, 1)
        check_param(self, "dropout", numbers.Real, 0, 1, "left")

    def _hidden(self):
        from keras import layers

        return [layers.Dense(self.hidden, activation="relu"), layers.Dropout(self.dropout, seed=self.seed)]


C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # what C="cv" chooses from
C_SEARCH_FOLDS = 5
# Searches already made in this process, by a digest of everything they depend on: a grid's runs
# with and without unlabeled images search on the same labelled rows (minutes each on GTSRB).
_SEARCHED: dict[str, dict] = {}


def _digest(X: np.ndarray, y: np.ndarray, groups, *settings) -> str:
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(X).tobytes())
    h.update(np.ascontiguousarray(y).tobytes())
    h.update(repr((None if groups is None else list(map(str, groups)), X.shape, X.dtype.str, settings)).encode())
    return h.hexdigest()


class LogRegHead(Head):
    """L2-regularised logistic regression (scikit-learn) on standardized features: multinomial
    for one label; for multi-label, one binary model per independent label and one
    multinomial model per exclusive group."""

    def __init__(self, C: float | str = 1.0, max_iter: int = 1000, cv_folds: int = C_SEARCH_FOLDS, seed: int = 0,
                 task=None):
        self.C = C
        self.max_iter = max_iter
        self.cv_folds = cv_folds
        self.seed = seed
        self.task = task

    def check_params(self) -> None:
        if self.C != "cv":
            check_param(self, "C", numbers.Real, 0, None, "neither")
        elif task_kind(self.task) != "single_label":
            raise InvalidParameter("C='cv' (a search by cross-validation) is for one class per image",
                                   "pass a number for C with this target")
        check_param(self, "max_iter", numbers.Integral, 1)
        check_param(self, "cv_folds", numbers.Integral, 2)
        check_param(self, "seed", numbers.Integral)

    def _model(self, C: float | None = None):
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.C if C is None else C, max_iter=self.max_iter, random_state=self.seed)

    def _search_C(self, X, y, groups) -> float:
        """C with the best mean accuracy over seeded folds of the training rows only (whole
        groups per fold, e.g. GTSRB's tracks, so no fold scores images of a track it trained on)."""
        from sklearn.model_selection import (
            StratifiedGroupKFold,
            StratifiedKFold,
            cross_val_score,
        )
        from sklearn.pipeline import make_pipeline

        folds = min(self.cv_folds, int(np.bincount(np.unique(y, return_inverse=True)[1]).min()))
        if folds < 2:
            raise InvalidParameter("C='cv' needs at least 2 training images of every class", "pass a number for C")
        if groups is not None and len(set(groups)) < len(groups):
            cv = StratifiedGroupKFold(folds, shuffle=True, random_state=self.seed)
        else:
            cv, groups = StratifiedKFold(folds, shuffle=True, random_state=self.seed), None
        key = _digest(X, y, groups, folds, self.seed, self.max_iter, C_GRID)
        if key not in _SEARCHED:
            scores = {}
            for C in C_GRID:
                pipeline = make_pipeline(StandardScaler(), self._model(C))
                scores[C] = float(np.mean(cross_val_score(pipeline, X, y, groups=groups, cv=cv)))
            if len(_SEARCHED) >= 64:
                _SEARCHED.clear()
            _SEARCHED[key] = scores
        self.cv_scores_ = dict(_SEARCHED[key])
        return max(C_GRID, key=lambda C: (self.cv_scores_[C], -C))  # ties: the stronger regularisation

    def fit(self, X, y, groups=None):
        from sklearn.pipeline import make_pipeline

        X, y = self._checked(X, y, np.float64)
        if task_kind(self.task) == "single_label":
            self.C_ = self._search_C(X, y, groups) if self.C == "cv" else self.C
            self.pipeline_ = make_pipeline(StandardScaler(), self._model(self.C_))
            self.pipeline_.fit(X, y)
            self.classes_ = self.pipeline_.classes_
            self.n_iter_ = self.pipeline_[-1].n_iter_
            return self
        self.scaler_ = StandardScaler().fit(X)
        Xs = self.scaler_.transform(X)
        self.models_ = []  # (columns, fitted model or the constant it always says)
        for j in range(self.task.independent):
            column = y[:, j]
            self.models_.append(([j], self._model().fit(Xs, column) if 0 < column.sum() < len(column)
                                 else float(column[0])))
        for _, sl in self.task.group_slices():
            chosen = y[:, sl].argmax(axis=1)
            columns = list(range(sl.start, sl.stop))
            self.models_.append((columns, self._model().fit(Xs, chosen) if len(np.unique(chosen)) > 1
                                 else int(chosen[0])))
        self.n_iter_ = np.array([max([int(np.max(m.n_iter_)) for _, m in self.models_ if hasattr(m, "n_iter_")]
                                     or [0])])
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._features(X, np.float64)
        if task_kind(self.task) == "single_label":
            return self.pipeline_.predict_proba(X)
        Xs = self.scaler_.transform(X)
        out = np.zeros((len(X), self.task.width))
        for columns, model in self.models_:
            if len(columns) == 1 and columns[0] < self.task.independent:  # an independent label
                out[:, columns[0]] = model.predict_proba(Xs)[:, 1] if not isinstance(model, float) else model
            elif isinstance(model, int):
                out[:, columns[model]] = 1.0
            else:
                out[:, [columns[c] for c in model.classes_]] = model.predict_proba(Xs)
        return out

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        if task_kind(self.task) == "single_label":
            return self.pipeline_.predict(self._features(X, np.float64))
        return self.task.decode(self.predict_proba(X))


class RidgeHead(RegressorMixin, _Common, BaseEstimator):
    """Ridge regression (scikit-learn) on standardized features, for regression targets:
    bounded outputs are fitted on [0, 1] and clipped to their range. Without a task it is a
    plain (multi-output) regressor, as scikit-learn's Ridge."""

    tasks = ("regression",)

    def __init__(self, alpha: float = 1.0, seed: int = 0, task=None):
        self.alpha = alpha
        self.seed = seed
        self.task = task

    def check_params(self) -> None:
        check_param(self, "alpha", numbers.Real, 0, None, "left")
        check_param(self, "seed", numbers.Integral)

    def _check_task(self) -> None:
        if self.task is not None:
            super()._check_task()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True  # y of several columns is a vector target, as for Ridge
        return tags

    def fit(self, X, y, groups=None):
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import make_pipeline
        from sklearn.utils.validation import assert_all_finite

        self.check_params()
        self._check_task()
        X = self._features(X, np.float64, reset=True)
        if self.task is None:  # a plain regressor: as many unbounded outputs as y has columns
            if y is None:
                raise ValueError("RidgeHead requires y to be passed, but the target y is None")
            y = np.asarray(y, np.float64)
            assert_all_finite(y, input_name="y")
            self.one_output_ = y.ndim == 1
            y = y.reshape(len(y), -1)
            self.task_ = Regression(tuple(f"y{j}" for j in range(y.shape[1])))
        else:
            y, self.one_output_, self.task_ = self._targets(y), False, self.task
        self.scaling_ = self.task_.fit_scaling(y)
        self.pipeline_ = make_pipeline(StandardScaler(), Ridge(alpha=self.alpha))
        self.pipeline_.fit(X, self.task_.encode(y, self.scaling_))
        return self

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._features(X, np.float64)
        out = self.pipeline_.predict(X).reshape(len(X), -1)
        s = self.scaling_
        out = self.task_.decode(np.where(s["bounded"], np.clip(out, 0, 1), out), s)
        return out[:, 0] if self.one_output_ else out

    def evaluate(self, X, y, baseline=None) -> dict:
        """Every metric of the task on (X, y)."""
        Y = np.asarray(y, np.float64).reshape(len(y), -1)
        return self.task_.metrics(Y, self.predict(X).reshape(len(Y), -1), baseline)

    def score(self, X, y, sample_weight=None) -> float:
        """R² (scikit-learn's), or with a task its main metric (mean IoU for boxes)."""
        if self.task is None:
            return super().score(X, y, sample_weight)
        return self.evaluate(X, self._targets(y))[self.task.main_metric]


HEADS = {"dense": DenseHead, "mlp": MLPHead, "logreg": LogRegHead, "ridge": RidgeHead}


def register_head(name: str, cls: type, *, replace: bool = False) -> type:
    """Make ``name`` a head ``make_head``, ``train``, ``compare`` and ``--head`` know: ``cls``
    is a scikit-learn estimator class that follows ``Head``'s contract (see its docstring).
    A name already registered is refused unless ``replace``."""
    import inspect

    kinds = ("single_label", "multi_label", "regression")
    problems = []
    if not isinstance(cls, type) or not issubclass(cls, BaseEstimator):
        problems.append("it is not a scikit-learn estimator class (subclass bottleneck.learn.heads.Head)")
    else:
        tasks = getattr(cls, "tasks", ())
        if not tasks or not set(tasks) <= set(kinds):
            problems.append(f"its 'tasks' {tasks!r} are not among {', '.join(kinds)}")
        params = inspect.signature(cls.__init__).parameters
        if not {"seed", "task"} <= set(params):
            problems.append("its constructor does not take 'seed' and 'task'")
        missing = [m for m in ("fit", "predict", "evaluate", "validate") if not callable(getattr(cls, m, None))]
        if missing:
            problems.append(f"it has no {', '.join(missing)}")
    if not is_plain_name(name):
        problems.append(f"the name {name!r} is not letters, digits, - and _")
    if problems:
        raise BottleneckError(f"cannot register head {name!r}: {'; '.join(problems)}",
                              "see bottleneck.learn.heads.Head for what a head needs")
    add(HEADS, name, cls, what="a head named", replace=replace)
    return cls


def heads_for(kind: str) -> list[str]:
    """The heads that can learn a target of this kind."""
    return [name for name, cls in HEADS.items() if kind in cls.tasks]


def make_head(name: str, seed: int = 0, task=None, **params):
    """A head by name with its parameters checked, e.g. ``make_head("mlp", seed=1, epochs=50)``."""
    return make_from(HEADS, "head", name, seed, task, params)


def make_from(table: dict, what: str, name: str, seed: int, task, params: dict):
    """``table[name]`` built with ``params``, checked; an unknown name or parameter is an error
    that names the nearest (``what``: how the error calls an entry, e.g. "head")."""
    import inspect

    if name not in table:
        raise BottleneckError(f"unknown {what} {name!r}{nearest(name, list(table))}", f"use one of: {', '.join(table)}")
    cls = table[name]
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidParameter(f"the {name} head has no parameter {', '.join(map(repr, unknown))}",
                               f"its parameters are: {', '.join(known)}")
    return cls(seed=seed, task=task, **params).validate()
