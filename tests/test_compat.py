"""Files written by the code before the subpackage layout still serve: a feature cache and a
results folder, made at b82a54d by tests/fixtures/make_before_layout.sh (the CLI, whose options
did not change), are found, verified and reused by today's code, and the report draws again
from what the folder kept."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bottleneck.cache.store import cache_path, read_features, verify
from bottleneck.cli import main
from bottleneck.extraction.plan import plan
from bottleneck.report.results import ResultsDir, markdown_table

from .conftest import REPO

BEFORE = REPO / "tests" / "fixtures" / "before_layout"
TRAIN = "oldmain_cifar_train_tiny_cnn_a987bbea8d91.h5"
TEST = "oldmain_cifar_test_tiny_cnn_4be7b549004d.h5"


@pytest.fixture
def before(tmp_path):
    """A copy of the fixtures (tests never write into the repository)."""
    shutil.copytree(BEFORE, tmp_path / "before")
    return tmp_path / "before"


def test_cache_files_written_before_the_move_are_verified_and_keep_their_names(before):
    for name in (TRAIN, TEST):
        path = before / "features" / name
        assert verify(path)
        fs = read_features(path)
        assert fs.settings["base"] == "tiny_cnn" and fs.settings["dataset"] == "folder:oldmain_cifar"
        assert cache_path(path.parent, fs.settings) == path  # today's fingerprint names the same file
    fs = read_features(before / "features" / TRAIN)
    assert fs.features.shape == (16, 16) and fs.class_names == ["airplane", "automobile", "bird", "cat"]
    # the plan made today for the same images and settings points at the file made before
    p = plan("tiny_cnn", f"folder:{before / 'oldmain_cifar'}", "train", 4, 0, cache_dir=before / "features",
             weights="random")
    assert p.path.name == TRAIN and p.settings == fs.settings


def test_a_results_folder_written_before_the_move_is_read_reused_and_reported(before, capsys):
    results = ResultsDir(before / "results")
    rows = results.rows()
    assert len(rows) == 1 and rows[0]["base"] == "tiny_cnn" and rows[0]["accuracy"] == 0.5
    assert "| tiny_cnn |" in markdown_table(rows)
    # the same run again: the cached features and the kept row are reused, nothing extracted or trained
    code = main(["train", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                 f"folder:{before / 'oldmain_cifar'}", "--per-class", "4", "--cache-dir", str(before / "features"),
                 "--out", str(before / "results"), "--quiet"])
    assert code == 0 and "accuracy 0.5000" in capsys.readouterr().out
    row = json.loads(next((before / "results" / "rows").glob("*.json")).read_text())
    assert row["train_cache"] == TRAIN and len(list((before / "results" / "rows").glob("*.json"))) == 1
    # report.html and the pictures, drawn again from the arrays the old folder kept
    assert main(["report", str(before / "results")]) == 0
    html = (before / "results" / "report.html").read_text()
    assert "tiny_cnn" in html and "data:image/png;base64" in html
    assert any((before / "results" / "plots").rglob("*.png"))
    kept = np.load(next((before / "results" / "rows").glob("*.npz")))
    assert len(kept.files) > 0
