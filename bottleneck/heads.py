"""Stage 2: small classifier heads trained on cached features, on the CPU.

scikit-learn's estimator contract: the constructor only stores parameters,
``fit`` returns self, learned state ends in ``_``. All heads are seeded: the same
features and seed give the same predictions.
"""
from __future__ import annotations

import numpy as np
from sklearn.preprocessing import StandardScaler

from .errors import BottleneckError
from .sampling import validation_split


class _Head:
    """What every head shares: its parameters, and accuracy from ``predict``."""

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.endswith("_")}

    def score(self, X, y) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))


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

    def _prepare(self, X) -> np.ndarray:
        X = np.asarray(X, np.float32).reshape(len(X), -1)
        return self.scaler_.transform(X).astype(np.float32) if self.scaler_ is not None else X

    def fit(self, X, y, groups=None):
        """Train on features ``X`` and labels ``y``. With ``validation_fraction``, that part of
        each class (whole ``groups`` at a time) is held out for early stopping."""
        import keras

        from . import determinism

        determinism.seed_everything(self.seed)
        y = np.asarray(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        X = np.asarray(X, np.float32).reshape(len(X), -1)
        self.scaler_ = StandardScaler().fit(X) if self.standardize else None
        X = self._prepare(X)
        callbacks, validation = [], None
        if self.validation_fraction > 0:
            tr, va = validation_split(y_idx, groups if groups is not None else np.arange(len(y)),
                                      self.validation_fraction, self.seed)
            if len(va):
                validation = (X[va], y_idx[va])
                X, y_idx = X[tr], y_idx[tr]
                callbacks.append(keras.callbacks.EarlyStopping(patience=self.patience, restore_best_weights=True))
        self.model_ = keras.Sequential([keras.Input((X.shape[1],)), *self._layers(len(self.classes_))])
        self.model_.compile(optimizer=keras.optimizers.Adam(self.learning_rate),
                            loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        self.history_ = self.model_.fit(X, y_idx, epochs=self.epochs, batch_size=self.batch_size, shuffle=True,
                                        validation_data=validation, callbacks=callbacks, verbose=self.verbose).history
        self.epochs_run_ = len(self.history_["loss"])
        return self

    def predict_proba(self, X) -> np.ndarray:
        return np.asarray(self.model_.predict(self._prepare(X), batch_size=1024, verbose=0))

    def predict(self, X) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class DenseHead(_KerasHead):
    """The classic lab's head: flatten, then one softmax layer."""

    def _layers(self, n_classes):
        from keras import layers

        return [layers.Dense(n_classes, activation="softmax")]


class MLPHead(_KerasHead):
    """A hidden ReLU layer with dropout, then softmax."""

    def __init__(self, hidden: int = 256, dropout: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.dropout = dropout

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

    def fit(self, X, y, groups=None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        X = np.asarray(X, np.float64).reshape(len(X), -1)
        self.pipeline_ = make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=self.max_iter,
                                                                            random_state=self.seed))
        self.pipeline_.fit(X, y)
        self.classes_ = self.pipeline_.classes_
        return self

    def predict_proba(self, X) -> np.ndarray:
        return self.pipeline_.predict_proba(np.asarray(X, np.float64).reshape(len(X), -1))

    def predict(self, X) -> np.ndarray:
        return self.pipeline_.predict(np.asarray(X, np.float64).reshape(len(X), -1))


HEADS = {"dense": DenseHead, "mlp": MLPHead, "logreg": LogRegHead}


def make_head(name: str, seed: int = 0, **params):
    """A head by name, e.g. ``make_head("mlp", seed=1, epochs=50)``."""
    from .errors import nearest

    if name not in HEADS:
        raise BottleneckError(f"unknown head {name!r}{nearest(name, list(HEADS))}", f"use one of: {', '.join(HEADS)}")
    return HEADS[name](seed=seed, **params)
