"""Tasks: losses, decoding, metrics and draws against hand-computed values on tiny arrays;
declarations that cannot be right; heads learning each kind of target."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bottleneck.learn.heads import heads_for, make_head
from bottleneck.core.tasks import MultiLabel, Regression, TaskError, box_iou, multilabel_draw, regression_metrics

# Two independent labels (night, rain) and one exclusive group (lanes: one, two, three).
TASK = MultiLabel.declare(["lanes_1", "night", "lanes_2", "rain", "lanes_3"],
                          {"lanes": ["lanes_1", "lanes_2", "lanes_3"]})


def test_declaration_orders_columns_independent_first():
    assert TASK.labels == ("night", "rain", "lanes_1", "lanes_2", "lanes_3")
    assert TASK.independent == 2 and TASK.group_slices() == [("lanes", slice(2, 5))]


@pytest.mark.parametrize("labels,groups,message", [
    (["a", "b", "c"], {"g": ["a", "b"], "h": ["b", "c"]}, "label 'b' is in two groups, 'g' and 'h'"),
    (["a", "b"], {"g": ["a", "z"]}, "group 'g' names label 'z'"),
    (["a", "b"], {"g": ["a"]}, "group 'g' has 1 label"),
])
def test_bad_declarations_name_the_culprit(labels, groups, message):
    with pytest.raises(TaskError, match=message):
        MultiLabel.declare(labels, groups, source="signs.task.json")


def test_images_must_have_exactly_one_label_per_group():
    Y = TASK.encode_sets([{"night", "lanes_2"}, {"lanes_1"}], ["a.jpg", "b.jpg"])
    assert Y.tolist() == [[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]]
    with pytest.raises(TaskError, match="b.jpg has 2 labels of the exclusive group 'lanes' \\(lanes_1, lanes_3\\)"):
        TASK.encode_sets([{"lanes_2"}, {"lanes_1", "lanes_3"}], ["a.jpg", "b.jpg"])
    with pytest.raises(TaskError, match="a.jpg has 0 labels of the exclusive group 'lanes'"):
        TASK.encode_sets([{"rain"}], ["a.jpg"])
    with pytest.raises(TaskError, match="a.jpg: unknown label 'fog'"):
        TASK.encode_sets([{"fog", "lanes_1"}], ["a.jpg"])


def _loss(task, y, p):
    from keras import ops

    return ops.convert_to_numpy(task.keras_loss()(np.asarray(y, "float32"), np.asarray(p, "float32")))


def test_grouped_loss_by_hand():
    y = [[1, 0, 0, 1, 0]]
    p = [[0.8, 0.3, 0.2, 0.5, 0.3]]
    bce = -math.log(0.8) - math.log(1 - 0.3)  # the two independent labels
    ce = -math.log(0.5)  # the group: minus the log of the true label's probability
    np.testing.assert_allclose(_loss(TASK, y, p), [(bce + ce) / 3], rtol=1e-5)  # 3 decisions
    whole = MultiLabel(TASK.labels, TASK.groups, loss="bce")
    cells = [-math.log(0.8), -math.log(0.7), -math.log(0.8), -math.log(0.5), -math.log(0.7)]
    np.testing.assert_allclose(_loss(whole, y, p), [np.mean(cells)], rtol=1e-5)


def test_decoding_thresholds_and_group_argmax():
    scores = np.array([[0.6, 0.4, 0.1, 0.2, 0.7], [0.2, 0.9, 0.5, 0.4, 0.1]])
    assert TASK.decode(scores).tolist() == [[1, 0, 0, 0, 1], [0, 1, 1, 0, 0]]
    assert TASK.decode(scores, thresholds=[0.7, 0.95]).tolist() == [[0, 0, 0, 0, 1], [0, 0, 1, 0, 0]]


def test_multilabel_metrics_by_hand():
    Y = np.array([[1, 0, 1, 0, 0], [1, 1, 0, 1, 0], [0, 0, 0, 0, 1], [0, 1, 0, 1, 0]])
    scores = np.array([[0.9, 0.2, 0.6, 0.3, 0.1], [0.4, 0.8, 0.2, 0.7, 0.1],
                       [0.7, 0.1, 0.1, 0.1, 0.8], [0.1, 0.6, 0.5, 0.4, 0.1]])
    pred = TASK.decode(scores)  # night: 1,0,1,0; rain: 0,1,0,1; lanes: 1,2,3,1
    m = TASK.metrics(Y, pred, scores)
    # night: predicted on images 0 and 2, true on 0 and 1 -> precision 1/2, recall 1/2
    assert (m["precision/night"], m["recall/night"], m["f1/night"], m["support/night"]) == (0.5, 0.5, 0.5, 2)
    assert (m["precision/rain"], m["recall/rain"]) == (1.0, 1.0)
    # lanes_2: true on images 1 and 3, predicted on 1 only
    assert (m["precision/lanes_2"], m["recall/lanes_2"]) == (1.0, 0.5)
    # night's AP: ranked 0.9 (pos), 0.7 (neg), 0.4 (pos), 0.1 -> (1/1 + 2/3) / 2
    ap_night = (1 + 2 / 3) / 2
    # rain, lanes_1 (ranked 0.6 pos, 0.5 neg...) and lanes_3 are ranked perfectly; lanes_2: 0.7 pos, 0.4 pos -> 1
    ap_lanes_1 = 1.0  # 0.6 for its one positive is the highest lanes_1 score
    assert m["mAP"] == pytest.approx(np.mean([ap_night, 1.0, ap_lanes_1, 1.0, 1.0]))
    wrong_cells = 2 + 0 + 2  # night on images 1 and 2; lanes on image 3 (two cells)
    assert m["accuracy_multi"] == pytest.approx(1 - wrong_cells / 20)
    assert m["exact_match"] == 0.25  # image 0 alone is right in every cell
    assert m["group_accuracy/lanes"] == 0.75


def test_multilabel_draw_is_seeded_nested_and_counts():
    rng = np.random.default_rng(3)
    for case in range(50):
        n, labels = int(rng.integers(5, 80)), int(rng.integers(1, 6))
        Y = (rng.random((n, labels)) < rng.random(labels)).astype(int)
        seed, per = int(rng.integers(0, 100)), int(rng.integers(1, 10))
        small, short = multilabel_draw(Y, per, seed)
        big, _ = multilabel_draw(Y, per + 3, seed)
        assert set(small) <= set(big)  # nested
        assert np.array_equal(small, multilabel_draw(Y, per, seed)[0])  # seeded
        counts = Y[small].sum(axis=0)
        for j in range(labels):
            assert counts[j] >= min(per, Y[:, j].sum())  # every label gets N positives where it has them
            assert (j in short) == (Y[:, j].sum() < per)
    assert np.array_equal(multilabel_draw(Y, None, 0)[0], np.arange(len(Y)))


def test_regression_encoding_round_trip_and_ranges():
    task = Regression(("x", "y"), ((0.0, 1.0), None))
    Y = np.array([[0.2, 10.0], [0.6, 30.0]])
    s = task.fit_scaling(Y)
    enc = task.encode(Y, s)
    np.testing.assert_allclose(enc, [[0.2, -1.0], [0.6, 1.0]], atol=1e-6)
    np.testing.assert_allclose(task.decode(enc, s), Y, atol=1e-5)
    with pytest.raises(TaskError, match="b.jpg: x = 1.5 is outside its range"):
        task.check(np.array([[0.1, 0], [1.5, 0]]), ["a.jpg", "b.jpg"])
    with pytest.raises(TaskError, match="a.jpg: a target is NaN"):
        task.check(np.array([[np.nan, 0]]), ["a.jpg"])
    with pytest.raises(TaskError, match="needs low < high"):
        Regression(("x",), ((1.0, 0.0),))


def test_regression_metrics_and_iou_by_hand():
    Y = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
    pred = np.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 2.0, 2.0]])
    assert box_iou(Y, pred).tolist() == [0.5, pytest.approx(1 / 7)]  # half the box; 1 of 4 + 4 - 1
    m = regression_metrics(Y, pred, baseline=Y.mean(axis=0), boxes=True)
    assert m["mse"] == pytest.approx(np.mean((Y - pred) ** 2)) and m["mae"] == pytest.approx(np.mean(abs(Y - pred)))
    assert m["r2"] == pytest.approx(np.mean([1 - np.sum((Y[:, j] - pred[:, j]) ** 2) / 0.5 for j in range(4)]))
    assert m["mean_iou"] == pytest.approx((0.5 + 1 / 7) / 2) and m["iou_50"] == 0.5 and m["iou_75"] == 0.0
    # the mean box (0.5, 0.5, 2.5, 2.5) overlaps each true box by 1.5 x 1.5
    assert m["baseline_r2"] == pytest.approx(0.0) and m["baseline_mean_iou"] == pytest.approx(2.25 / 5.75)


def _multilabel_blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10)).astype("float32")
    night, rain = X[:, 0] > 0, X[:, 1] > 0.3
    lanes = np.digitize(X[:, 2], [-0.4, 0.4])
    Y = np.zeros((n, 5), "float32")
    Y[:, 0], Y[:, 1] = night, rain
    Y[np.arange(n), 2 + lanes] = 1
    return X, Y


@pytest.mark.parametrize("name", heads_for("multi_label"))
def test_multilabel_heads_learn_and_decode(name):
    X, Y = _multilabel_blobs()
    params = {} if name == "logreg" else {"epochs": 100, "learning_rate": 0.05}
    head = make_head(name, seed=0, task=TASK, **params).fit(X[:80], Y[:80])
    scores = head.predict_proba(X[80:])
    np.testing.assert_allclose(scores[:, 2:].sum(axis=1), 1, atol=1e-4)  # the group is a softmax
    pred = head.predict(X[80:])
    assert (pred[:, 2:].sum(axis=1) == 1).all()
    m = head.evaluate(X[80:], Y[80:])
    assert m["mAP"] > 0.85 and head.score(X[80:], Y[80:]) == m["mAP"]


def test_thresholds_are_tuned_on_the_validation_part_only():
    X, Y = _multilabel_blobs(n=200)
    head = make_head("dense", task=TASK, epochs=30, learning_rate=0.02, validation_fraction=0.25,
                     tune_thresholds=True).fit(X, Y)
    assert head.thresholds_.shape == (2,) and head.validation_size_ == 50
    with pytest.raises(ValueError, match="tune_thresholds needs a validation part"):
        make_head("dense", task=TASK, epochs=1, tune_thresholds=True).fit(X, Y)


@pytest.mark.parametrize("name", heads_for("regression"))
def test_regression_heads_learn_bounded_outputs(name):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, 8)).astype("float32")
    centre = 1 / (1 + np.exp(-X[:, :2]))  # in (0, 1)
    Y = np.column_stack([centre[:, 0] * 0.5, centre[:, 1] * 0.5, centre[:, 0] * 0.5 + 0.4, centre[:, 1] * 0.5 + 0.4])
    task = Regression(("x1", "y1", "x2", "y2"), ((0.0, 1.0),) * 4, boxes=True)
    params = {} if name == "ridge" else {"epochs": 80, "learning_rate": 0.01}
    head = make_head(name, task=task, **params).fit(X[:150], Y[:150])
    pred = head.predict(X[150:])
    assert pred.shape == (50, 4) and pred.min() >= 0 and pred.max() <= 1
    m = head.evaluate(X[150:], Y[150:], baseline=Y[:150].mean(axis=0))
    assert m["r2"] > 0.6 and m["mean_iou"] > m["baseline_mean_iou"]
    assert head.score(X[150:], Y[150:]) == m["mean_iou"]


def test_heads_refuse_tasks_they_cannot_learn(tmp_path):
    from bottleneck.core.errors import BottleneckError
    from bottleneck.experiments.run import train

    from .conftest import DATA

    task = Regression(("x",))
    with pytest.raises(ValueError, match="LogRegHead cannot learn a regression target"):
        make_head("logreg", task=task)
    with pytest.raises(BottleneckError, match="the ridge head cannot learn target class \\(single_label\\)"):
        train("tiny_cnn", "cifar10", 2, head="ridge", data_dir=DATA, cache_dir=tmp_path, weights="random")


def test_ridge_without_a_task_is_a_plain_regressor():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.01 * rng.normal(size=80)
    head = make_head("ridge").fit(X, y)
    assert head.predict(X).shape == (80,) and head.score(X, y) > 0.99


def test_a_mixed_range_regression_head():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(150, 6)).astype("float32")
    Y = np.column_stack([1 / (1 + np.exp(-X[:, 0])), 50 + 10 * X[:, 1]])
    task = Regression(("share", "speed"), ((0.0, 1.0), None))
    head = make_head("dense", task=task, epochs=100, learning_rate=0.02).fit(X[:100], Y[:100])
    pred = head.predict(X[100:])
    assert 0 <= pred[:, 0].min() and pred[:, 0].max() <= 1 and pred[:, 1].std() > 3
    assert head.evaluate(X[100:], Y[100:])["r2"] > 0.5
