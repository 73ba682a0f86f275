"""Check a lesson: ``python -m lab.check N [FILE]``, or ``check(N, globals())`` in a notebook.

Runs the functions of lesson N's file (by default the exercise in lab/exercises/), or those a
notebook defined, on small inputs and says what is right, what is missing, and a hint for each
problem. Exit code 0 when everything passes, 1 otherwise; in a notebook a failure raises
LessonNotDone with the same report.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from types import SimpleNamespace

import numpy as np

LAB = Path(__file__).resolve().parent
LESSONS = {1: "lesson1_feature_extraction", 2: "lesson2_comparing_bases", 3: "lesson3_how_much_data",
           4: "lesson4_four_cases", 5: "lesson5_interoperability", 6: "lesson6_unlabeled_images"}


def _load(path: Path):
    package = "lab.exercises" if path.parent.name == "exercises" else "lab"
    spec = importlib.util.spec_from_file_location(f"{package}.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = package
    spec.loader.exec_module(module)
    return module


def _blobs(n_per_class=50, d=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 6, (classes, d))
    y = np.repeat(np.arange(classes), n_per_class)
    X = (centers[y] + rng.normal(0, 1, (len(y), d))).astype("float32")
    return SimpleNamespace(features=X, labels=y, class_names=[str(c) for c in range(classes)])


def _small_dataset(tmp: Path) -> str:
    """A 3-class image folder of real CIFAR-10 JPEGs, 6 train and 3 test per class."""
    for split, n in (("train", 6), ("test", 3)):
        for cdir in sorted((LAB.parent / "data" / "cifar10" / split).iterdir())[:3]:
            (tmp / "small" / split / cdir.name).mkdir(parents=True, exist_ok=True)
            for f in sorted(cdir.iterdir())[:n]:
                shutil.copy2(f, tmp / "small" / split / cdir.name / f.name)
    return f"folder:{tmp / 'small'}"


def check_1(m, tmp):
    import keras

    model = m.build_lab_head(8, 3)
    yield isinstance(model, keras.Model), "build_lab_head returns a Keras model", "return keras.Sequential([...])"
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    yield len(dense) == 1 and dense[0].units == 3, "one Dense layer with n_classes units", \
        "the lab's head has exactly one Dense layer: keras.layers.Dense(n_classes, ...)"
    yield bool(dense) and dense[0].activation.__name__ == "softmax", "the Dense layer uses a softmax", \
        "pass activation='softmax'"
    yield any(isinstance(layer, keras.layers.Flatten) for layer in model.layers), "the features are flattened", \
        "add keras.layers.Flatten() before the Dense layer"
    train, test = _blobs(), _blobs(seed=0)
    accuracy = m.train_and_score(train, test, epochs=150)
    yield isinstance(accuracy, float) and 0.9 <= accuracy <= 1, f"train_and_score learns separable data ({accuracy})", \
        "fit on train.features/train.labels, predict test.features, compare argmax with test.labels"


def check_2(m, tmp):
    rows, table = m.accuracy_table(["tiny_cnn"], [_small_dataset(tmp)], 2, weights="random",
                                   cache_dir=tmp / "c", progress=False)
    yield len(rows) == 1 and rows[0]["per_class"] == 2, "accuracy_table runs one base x one dataset", \
        "pass [per_class] and seeds [0] to bottleneck.compare"
    yield rows[0]["head"] == "logreg", "it uses the logreg head", "pass head='logreg'"
    yield "| tiny_cnn |" in table, "it returns the markdown table", "return rows, bottleneck.markdown_table(rows)"


def check_3(m, tmp):
    rows = [{"dataset": "d", "per_class": n, "seed": s, "accuracy": a}
            for n, s, a in [(10, 0, 0.5), (10, 1, 0.7), (5, 0, 0.4), (5, 1, 0.4)]] + \
           [{"dataset": "other", "per_class": 5, "seed": 0, "accuracy": 0.9}]
    curve = m.learning_curve(rows, "d")
    yield [p[0] for p in curve] == [5, 10], "one point per limit, ascending", "sort the per_class values"
    yield np.allclose([p[1] for p in curve], [0.4, 0.6]), "means over seeds", "use np.mean of the accuracies"
    yield np.allclose([p[2] for p in curve], [0.0, 0.1]), "spread over seeds", "use np.std of the accuracies"


def check_4(m, tmp):
    rows = m.four_cases("cifar10", fast=True, cache_dir=str(tmp / "c"))
    cases = [r["case"] for r in rows]
    yield len(rows) == 4, f"four cases ({len(rows)} rows)", "append one row per case (a) to (d)"
    yield any(c.startswith("(b)") for c in cases) and any(r.get("layer") == "conv1" for r in rows), \
        "(b) uses an earlier layer", "call bottleneck.train(..., layer=earlier, ...)"
    yield any(str(r.get("head", "")).startswith("finetune") for r in rows), "(c) fine-tunes", \
        "call finetune(b['base'], dataset, n, 0, unfreeze=1, ...)"
    yield all(0 <= r["accuracy"] <= 1 for r in rows), "accuracies are fractions", "use the rows the calls return"


def check_5(m, tmp):
    import pickle

    rng = np.random.default_rng(0)
    data = [{"features": rng.normal(size=(n, 1, 1, 4)).astype("float32"), "labels": np.arange(n) % 2} for n in (6, 4)]
    paths = [tmp / "t.p", tmp / "v.p"]
    for d, p in zip(data, paths):
        p.write_bytes(pickle.dumps(d))
    out = m.load_bottleneck_data(*paths)
    yield isinstance(out, tuple) and len(out) == 4, "returns X_train, y_train, X_val, y_val", "return four arrays"
    ok = len(out) == 4 and all(np.array_equal(a, b) for a, b in zip(out, [data[0]["features"], data[0]["labels"],
                                                                          data[1]["features"], data[1]["labels"]]))
    yield ok, "the arrays are the pickles' features and labels", "train_data['features'], train_data['labels'], ..."


def check_6(m, tmp):
    probabilities = np.array([[0.9, 0.1, 0.0], [0.6, 0.4, 0.0], [0.95, 0.05, 0.0], [0.2, 0.7, 0.1],
                              [0.1, 0.3, 0.6], [0.8, 0.1, 0.1], [0.3, 0.6, 0.1]])
    rows, labels = m.balanced_pseudo_labels(probabilities, 2)
    rows, labels = np.asarray(rows), np.asarray(labels)
    yield len(rows) == len(labels), "one label for each row kept", "return (rows, labels) of the same length"
    yield list(rows) == [0, 2, 3, 4, 6], f"the 2 most confident rows of each predicted class ({[int(r) for r in rows]})", \
        "class 0 is predicted for rows 0, 1, 2, 5: keep the 2 with the highest probability (2 and 0)"
    yield list(labels) == [0, 0, 1, 2, 1], "each kept row labelled with its predicted class", \
        "labels = probabilities.argmax(axis=1)[rows]"
    yield list(np.bincount(labels, minlength=3)) == [2, 2, 1], "no class gets more than per_class", \
        "a class predicted for fewer rows keeps them all (class 2: one row)"
    rows, labels = m.balanced_pseudo_labels(probabilities[[1, 0]], 5)
    yield list(np.asarray(rows)) == [0, 1], "the kept rows come in ascending order", "np.sort the rows you keep"


def run(n: int, path: str | Path | None = None, out=sys.stdout) -> bool:
    """Check lesson ``n``'s file (by default its exercise); print the report; True if all passed."""
    path = Path(path) if path else LAB / "exercises" / f"{LESSONS[n]}.py"
    print(f"checking lesson {n}: {path}", file=out)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            module = _load(path)
        except Exception as e:
            print(f"  ERROR {type(e).__name__}: {e} (loading {path.name})\n0 passed, 1 failed", file=out)
            return False
        return _report(n, module, path.name, Path(tmp), out)


class LessonNotDone(Exception):
    """Raised by :func:`check` in a notebook: the checker's report, so that "Run all" stops there."""


def check(n: int, namespace: dict, out=sys.stdout) -> bool:
    """Check lesson ``n`` from a notebook cell: ``check(1, globals())`` runs the functions the
    notebook defined, with the same points and hints as ``python -m lab.check``, and raises
    LessonNotDone with the report when a point fails."""
    import io

    report = io.StringIO()
    print(f"checking lesson {n}: the functions defined in this notebook", file=report)
    with tempfile.TemporaryDirectory() as tmp:
        ok = _report(n, SimpleNamespace(**namespace), "this notebook", Path(tmp), report)
    print(report.getvalue(), end="", file=out)
    if not ok:
        raise LessonNotDone(report.getvalue().strip())
    return True


def _report(n: int, module, where: str, tmp: Path, out) -> bool:
    passed = failed = 0
    try:
        for ok, what, hint in globals()[f"check_{n}"](module, tmp):
            passed, failed = passed + bool(ok), failed + (not ok)
            print(f"  {'ok  ' if ok else 'FAIL'} {what}" + ("" if ok else f"\n       hint: {hint}"), file=out)
    except NotImplementedError as e:
        failed += 1
        print(f"  MISSING {e}: complete the function marked TODO in {where}", file=out)
    except Exception as e:
        failed += 1
        frame = traceback.extract_tb(e.__traceback__)[-1]
        print(f"  ERROR {type(e).__name__}: {e} (at {Path(frame.filename).name}:{frame.lineno})", file=out)
    print(f"{passed} passed, {failed} failed", file=out)
    return failed == 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].isdigit() or int(argv[0]) not in LESSONS:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    return 0 if run(int(argv[0]), argv[1] if len(argv) > 1 else None) else 1


if __name__ == "__main__":
    sys.exit(main())
