"""Heads: the scikit-learn contract, seeding, early stopping."""
from __future__ import annotations

import numpy as np
import pytest

from bottleneck.core.errors import BottleneckError
from bottleneck.learn.heads import HEADS, DenseHead, MLPHead, heads_for, make_head

SINGLE = heads_for("single_label")


def _blobs(n=60, d=12, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (classes, d))
    y = np.repeat(np.arange(classes) * 10, n // classes)  # non-contiguous labels
    X = centers[y // 10] + rng.normal(0, 1, (len(y), d))
    return X.astype("float32"), y


@pytest.mark.parametrize("name", SINGLE)
def test_contract_and_accuracy(name):
    X, y = _blobs()
    head = make_head(name, seed=0, **({} if name == "logreg" else {"epochs": 40, "learning_rate": 0.05}))
    params = head.get_params()
    assert not any(k.endswith("_") for k in vars(head))  # constructor stores parameters only
    assert head.fit(X, y) is head
    assert list(head.classes_) == [0, 10, 20]
    assert set(head.predict(X)) <= {0, 10, 20}
    proba = head.predict_proba(X)
    assert proba.shape == (60, 3) and np.allclose(proba.sum(1), 1, atol=1e-4)
    assert head.score(X, y) > 0.9
    assert head.get_params() == params


@pytest.mark.parametrize("cls", [DenseHead, MLPHead])
def test_keras_heads_are_seeded(cls):
    X, y = _blobs(seed=1)
    a = cls(epochs=5, seed=3).fit(X, y).predict_proba(X)
    b = cls(epochs=5, seed=3).fit(X, y).predict_proba(X)
    c = cls(epochs=5, seed=4).fit(X, y).predict_proba(X)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_early_stopping_on_grouped_validation():
    X, y = _blobs(n=90)
    groups = np.arange(90) // 5
    head = MLPHead(epochs=200, learning_rate=0.05, validation_fraction=0.2, patience=3, seed=0).fit(X, y, groups=groups)
    assert head.epochs_run_ < 200 and "val_loss" in head.history_


def test_flattens_spatial_features():
    X, y = _blobs()
    X4 = np.repeat(X[:, None, None, :], 2, axis=1)  # (N, 2, 1, d)
    assert DenseHead(epochs=3).fit(X4, y).predict(X4).shape == (60,)


def test_unknown_head():
    with pytest.raises(BottleneckError, match="did you mean 'mlp'"):
        make_head("mlpp")


@pytest.mark.parametrize("name", SINGLE)
def test_get_params_set_params_and_clone(name):
    from sklearn.base import clone

    head = make_head(name, seed=2)
    params = head.get_params(deep=True)
    assert params["seed"] == 2 and not any(k.endswith("_") for k in params)
    twin = clone(head)
    assert twin is not head and twin.get_params() == params
    key = "C" if name == "logreg" else "epochs"
    assert head.set_params(**{key: 7}) is head and head.get_params()[key] == 7


@pytest.mark.parametrize("name,param,value,message", [
    ("mlp", "validation_fraction", 1.0, r"'validation_fraction' parameter of MLPHead must be a float in the range "
                                        r"\[0, 1\); got 1.0"),
    ("mlp", "validation_fraction", 5, r"range \[0, 1\); got 5"),
    ("dense", "validation_fraction", -1, r"got -1"),
    ("dense", "validation_fraction", float("nan"), r"got nan"),
    ("dense", "epochs", 0, r"'epochs' parameter of DenseHead must be an int in the range \[1, inf\]"),
    ("dense", "learning_rate", 0.0, r"'learning_rate' .* range \(0, inf\); got 0.0"),
    ("mlp", "dropout", 1.5, r"'dropout' parameter of MLPHead"),
    ("logreg", "C", -1.0, r"'C' parameter of LogRegHead must be a float in the range \(0, inf\); got -1.0"),
    ("logreg", "max_iter", 2.5, r"'max_iter' parameter of LogRegHead must be an int"),
])
def test_parameters_are_validated_like_scikit_learn(name, param, value, message):
    from bottleneck.learn.heads import InvalidParameter

    with pytest.raises(ValueError, match=message):  # a ValueError, as scikit-learn raises...
        make_head(name, **{param: value})
    head = HEADS[name](**{param: value})  # ...and the constructor only stores: fit checks
    X, y = _blobs()
    with pytest.raises(InvalidParameter, match=message):  # ...which the CLI reports as a clear error
        head.fit(X, y)


def test_unknown_parameter_names_the_valid_ones():
    with pytest.raises(ValueError, match="the logreg head has no parameter 'epochs'") as e:
        make_head("logreg", epochs=5)
    assert "C, max_iter, cv_folds, seed" in e.value.todo


@pytest.mark.parametrize("name", SINGLE)
def test_predict_before_fit_raises_not_fitted(name):
    from sklearn.exceptions import NotFittedError

    X, _ = _blobs()
    with pytest.raises(NotFittedError):
        make_head(name).predict(X)


@pytest.mark.parametrize("name", SINGLE)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_infinite_features_are_refused(name, bad):
    X, y = _blobs()
    X[5, 3] = bad
    with pytest.raises(ValueError, match="1 rows of the features hold NaN or infinite values"):
        make_head(name, **({} if name == "logreg" else {"epochs": 1})).fit(X, y)
    clean, _ = _blobs()
    head = make_head(name, **({} if name == "logreg" else {"epochs": 1})).fit(clean, y)
    with pytest.raises(ValueError, match="NaN or infinite"):
        head.predict(X)


def test_validation_that_cannot_take_effect_says_so():
    from bottleneck.learn.heads import HeadWarning

    X, y = _blobs(n=90)
    with pytest.warns(HeadWarning, match="held out nothing: every class of the training draw is a single group"):
        head = DenseHead(epochs=2, validation_fraction=0.2).fit(X, y, groups=y)  # one group per class
    assert head.validation_size_ == 0 and "val_loss" not in head.history_
    groups = np.where(y == 0, 0, np.arange(90))  # class 0 is one group, the others are not
    with pytest.warns(HeadWarning, match="1 of 3 classes are a single group"):
        DenseHead(epochs=2, validation_fraction=0.2).fit(X, y, groups=groups)


# ---------------------------------------------------------------- scikit-learn's ecosystem

# Checks a head fails, and why (README, "Heads"): the classic lab head is one softmax layer trained
# 30 epochs at Adam's 1e-3, which underfits the checks' synthetic blobs (it passes with
# learning_rate=0.01); it is kept as the lab defined it.
EXPECTED_FAILURES = {
    "dense": {"check_classifiers_train": "the lab's head underfits the check's blobs at its default learning rate"},
}


def _estimator_checks():
    """scikit-learn's estimator checks for the three heads, one test each (so that they spread
    over the test workers: the dense head's 60-odd Keras fits take over a minute on 2 cores).
    An expected failure is xfail, strict: it must fail, for the reason written down."""
    from sklearn.utils.estimator_checks import parametrize_with_checks

    # The dense head with 5 epochs, not its default 30: the contract the checks test (cloning, parameters,
    # fitted attributes, input validation, pickling...) does not depend on the epochs, and 30 took over a
    # minute of the suite for the same outcome (measured: 51 passed, the same 3 expected failures);
    # check_parameters_default_constructible still builds the head from its defaults.
    heads = [HEADS["logreg"](), HEADS["ridge"](), HEADS["dense"](epochs=5)]
    names = {type(h).__name__: n for n, h in zip(("logreg", "ridge", "dense"), heads)}
    mark = parametrize_with_checks(heads, expected_failed_checks=lambda est: EXPECTED_FAILURES.get(
        names[type(est).__name__], {}), xfail_strict=True)
    # The DataFrame checks need pandas, which this project leaves out on purpose: pandas imports any
    # package named "bottleneck" as PyPI's accelerator of that name, so with pandas installed, `import
    # keras` would import this package too. check_estimator skipped it silently; they are not listed.
    keep = [p for p in mark.args[1] if "data_not_an_array" not in str(
        (p.values if hasattr(p, "values") else p)[1])]
    return pytest.mark.parametrize(mark.args[0], keep, **mark.kwargs)


ESTIMATOR_CHECKS = _estimator_checks()


@pytest.mark.slow
@ESTIMATOR_CHECKS
def test_scikit_learn_estimator_checks(estimator, check):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_every_head_faces_the_whole_set_of_estimator_checks():
    """What ``check_estimator`` ran on each head before, the parametrised test runs: more than 40
    checks a head, the dense head's expected failure among them."""
    per_head, xfailed = {}, []
    for param in ESTIMATOR_CHECKS.args[1]:
        values, marks = (param.values, param.marks) if hasattr(param, "marks") else (param, ())
        per_head.setdefault(type(values[0]).__name__, []).append(values[1])
        if marks:
            xfailed.append((type(values[0]).__name__, str(values[1])))
    assert set(per_head) == {"LogRegHead", "RidgeHead", "DenseHead"}
    assert all(len(checks) > 40 for checks in per_head.values())
    assert xfailed and all(h == "DenseHead" and "check_classifiers_train" in c for h, c in xfailed)


def test_heads_in_pipelines_cross_validation_and_grid_search():
    from sklearn.decomposition import PCA
    from sklearn.model_selection import GridSearchCV, cross_val_score
    from sklearn.pipeline import make_pipeline

    from bottleneck.learn.heads import LogRegHead

    X, y = _blobs(n=90)
    pipe = make_pipeline(PCA(n_components=5), LogRegHead())
    assert pipe.fit(X, y).score(X, y) > 0.9
    scores = cross_val_score(MLPHead(epochs=20, learning_rate=0.05), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.8
    search = GridSearchCV(LogRegHead(), {"C": [0.01, 1.0]}, cv=3).fit(X, y)
    assert search.best_params_["C"] in (0.01, 1.0) and search.best_estimator_.classes_.tolist() == [0, 10, 20]
    deep = GridSearchCV(make_pipeline(PCA(), DenseHead(epochs=5)), {"pca__n_components": [3, 6],
                                                                     "densehead__learning_rate": [0.05]}, cv=2)
    assert deep.fit(X, y).best_score_ > 0.6
