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
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

from .errors import BottleneckError
from .sampling import validation_split


class InvalidParameter(BottleneckError, ValueError):
    """A head parameter out of its range: a ValueError (as scikit-learn raises) that the
    CLI reports as a clear error."""


class HeadWarning(UserWarning):
    """Something about a head's training the user should know (e.g. early stopping is off)."""


def _check(estimator, name: str, kind, low=None, high=None, closed: str = "both") -> None:
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
            f"pass {name} in that range" + (f" ({_OPTIONS[name]} on the command line)" if name in _OPTIONS else ""))


_OPTIONS = {"epochs": "--epochs", "learning_rate": "--learning-rate", "batch_size": "--head-batch-size",
            "validation_fraction": "--validation-fraction"}


def _check_finite(X: np.ndarray, what: str = "features") -> None:
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise InvalidParameter(f"{int(bad.sum())} rows of the {what} hold NaN or infinite values (first: row "
                               f"{int(np.flatnonzero(bad)[0])})",
                               "check the features: a base run in too low a precision, or a damaged file")


class _Head(ClassifierMixin, BaseEstimator):
    """What every head shares: parameter checks and 2-D float features."""

    def _check_params(self) -> None:
        raise NotImplementedError

    def validate(self):
        """Check the parameters now (``fit`` does too); returns self."""
        self._check_params()
        return self

    @staticmethod
    def _as_2d(X, dtype=np.float32) -> np.ndarray:
        X = np.asarray(X, dtype)
        return X.reshape(len(X), -1)


class _KerasHead(_Head):
    """Shared training loop of the Keras heads; subclasses define ``_layers``."""

    def __init__(self, epochs: int = 30, batch_size: int = 64, learning_rate: float = 1e-3,
                 validation_fraction: float = 0.0, patience: int = 5, standardize: bool = True, seed: int = 0,
                 verbose: int = 0):
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.standardize = standardize
        self.seed = seed
        self.verbose = verbose

    def _check_params(self) -> None:
        _check(self, "epochs", numbers.Integral, 1)
        _check(self, "batch_size", numbers.Integral, 1)
        _check(self, "learning_rate", numbers.Real, 0, None, "neither")
        _check(self, "validation_fraction", numbers.Real, 0, 1, "left")
        _check(self, "patience", numbers.Integral, 0)
        _check(self, "seed", numbers.Integral)

    def _prepare(self, X) -> np.ndarray:
        X = self._as_2d(X)
        _check_finite(X)
        return self.scaler_.transform(X).astype(np.float32) if self.scaler_ is not None else X

    def fit(self, X, y, groups=None):
        """Train on features ``X`` and labels ``y``. With ``validation_fraction``, that part of
        each class (whole ``groups`` at a time) is held out for early stopping."""
        import keras

        from . import determinism

        self._check_params()
        X = self._as_2d(X)
        _check_finite(X)  # before the scaler, which would say it less clearly
        determinism.seed_everything(self.seed)
        y = np.asarray(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        self.scaler_ = StandardScaler().fit(X) if self.standardize else None
        X = self._prepare(X)
        callbacks, validation = [], None
        self.validation_size_ = 0
        if self.validation_fraction > 0:
            groups = np.asarray(groups) if groups is not None else np.arange(len(y))
            tr, va = validation_split(y_idx, groups, self.validation_fraction, self.seed)
            _warn_about_validation(self.validation_fraction, y_idx, groups, len(va))
            if len(va):
                validation = (X[va], y_idx[va])
                X, y_idx = X[tr], y_idx[tr]
                callbacks.append(keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True))
                self.validation_size_ = len(va)
        self.model_ = keras.Sequential([keras.Input((X.shape[1],)), *self._layers(len(self.classes_))])
        self.model_.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.history_ = self.model_.fit(X, y_idx, epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
                                        validation_data=validation, callbacks=callbacks, verbose=self.verbose).history
        self.epochs_run_ = len(self.history_["loss"])
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        return np.asarray(self.model_.predict(self._prepare(X), batch_size=1024, verbose=0))

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


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


class DenseHead(_KerasHead):
    """The classic lab's head: flatten, then one softmax layer."""

    def _layers(self, n_classes):
        from keras import layers

        return [layers.Dense(n_classes, activation="softmax")]


class MLPHead(_KerasHead):
    """A hidden ReLU layer with dropout, then softmax."""

    def __init__(self, hidden: int = 256, dropout: float = 0.5, epochs: int = 30, batch_size: int = 64,
                 learning_rate: float = 1e-3, validation_fraction: float = 0.0, patience: int = 5,
                 standardize: bool = True, seed: int = 0, verbose: int = 0):
        super().__init__(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                         validation_fraction=validation_fraction, patience=patience, standardize=standardize,
                         seed=seed, verbose=verbose)
        self.hidden = hidden
        self.dropout = dropout

    def _check_params(self) -> None:
        super()._check_params()
        _check(self, "hidden", numbers.Integral, 1)
        _check(self, "dropout", numbers.Real, 0, 1, "left")

    def _layers(self, n_classes):
        from keras import layers

        return [layers.Dense(self.hidden, activation="relu"), layers.Dropout(self.dropout, seed=self.seed),
                layers.Dense(n_classes, activation="softmax")]


class LogRegHead(_Head):
    """L2-regularised multinomial logistic regression (scikit-learn) on standardized features."""

    def __init__(self, C: float = 1.0, max_iter: int = 1000, seed: int = 0):
        self.C = C
        self.max_iter = max_iter
        self.seed = seed

    def _check_params(self) -> None:
        _check(self, "C", numbers.Real, 0, None, "neither")
        _check(self, "max_iter", numbers.Integral, 1)
        _check(self, "seed", numbers.Integral)

    def fit(self, X, y, groups=None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        self._check_params()
        X = self._as_2d(X, np.float64)
        _check_finite(X)
        self.pipeline_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter,
                                                                            random_state=self.seed))
        self.pipeline_.fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._as_2d(X, np.float64)
        _check_finite(X)
        return self.pipeline_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        check_is_fitted(self)
        X = self._as_2d(X, np.float64)
        _check_finite(X)
        return self.pipeline_.predict(X)


HEADS = {"dense": DenseHead, "mlp": MLPHead, "logreg": LogRegHead}


def make_head(name: str, seed: int = 0, **params):
    """A head by name with its parameters checked, e.g. ``make_head("mlp", seed=1, epochs=50)``."""
    import inspect

    from .errors import nearest

    if name not in HEADS:
        raise BottleneckError(f"unknown head {name!r}{nearest(name, list(HEADS))}", f"use one of: {', '.join(HEADS)}")
    cls = HEADS[name]
    known = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidParameter(f"the {name} head has no parameter {', '.join(map(repr, unknown))}",
                               f"its parameters are: {', '.join(known)}")
    return cls(seed=seed, **params).validate()
