"""Shared fixtures: small real image subsets and an isolated, offline environment."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

# Before anything imports keras: offline, and no user cache leaks into tests.
_HOME = tempfile.mkdtemp(prefix="bottleneck-test-home-")
os.environ["BOTTLENECK_OFFLINE"] = "1"
os.environ["BOTTLENECK_HOME"] = _HOME
os.environ["KERAS_HOME"] = os.path.join(_HOME, "keras")
os.environ.pop("BOTTLENECK_WEIGHTS_DIR", None)
os.environ.pop("BOTTLENECK_DATA_DIR", None)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("SCIPY_ARRAY_API", "1")  # scikit-learn's array-API estimator check runs (else it skips)

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "data"


def copy_cifar_subset(dest: Path, classes: int = 4, train: int = 6, test: int = 3) -> Path:
    """An image folder of real CIFAR-10 JPEGs from the embedded data."""
    for split, n in (("train", train), ("test", test)):
        for cdir in sorted((DATA / "cifar10" / split).iterdir())[:classes]:
            out = dest / split / cdir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in sorted(cdir.iterdir())[:n]:
                shutil.copy2(f, out / f.name)
    return dest


@pytest.fixture
def small_cifar(tmp_path) -> Path:
    return copy_cifar_subset(tmp_path / "cifar_small")


@pytest.fixture
def kill_dataset(tmp_path) -> Path:
    """40 training images (4 classes x 10): 10 chunks of 4, for runs stopped part way."""
    return copy_cifar_subset(tmp_path / "kd", classes=4, train=10, test=1)


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    return tmp_path / "features"


@pytest.fixture(autouse=True)
def _root_logger_restored():
    """The command line configures the root logger (``logging.basicConfig``, ERROR under --quiet)
    once per process: restore it after each test, so in-process CLI calls leave no level behind
    for the next test's ``caplog``, whatever order the tests run in."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
