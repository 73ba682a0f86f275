"""The speed benchmark runs and says what the README's speed table is made from."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bottleneck.extraction.feed import wall_seconds

REPO = Path(__file__).resolve().parents[1]
BENCH = [str(REPO / "bench" / "extract_speed.py"), "--base", "tiny_cnn", "--images", "40", "--rounds", "3"]


def _bench(argv, monkeypatch, capsys) -> subprocess.CompletedProcess:
    """``python bench/extract_speed.py ARGV``, run in this process."""
    import runpy

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", list(argv))
    code = 0
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, out.out, out.err)


def test_extract_speed_json_has_every_figure_and_the_rounds_spread(monkeypatch, capsys):
    run = _bench(BENCH + ["--json"], monkeypatch, capsys)
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout)
    for key in ("pipeline", "ceiling", "lab_loop", "feed_per_core", "ratio", "stages", "model_gflop_per_s_at_ceiling",
                "matmul_gflop_per_s_float32", "pipeline_device_resize", "ceiling_device_resize"):
        assert key in r, key
    assert len(r["ratios"]) == 3 and r["ratio"] == round(float(np.median(r["ratios"])), 4)
    # each round against the ceilings measured just before and just after it (a drift falls on both sides)
    pipelines, ceilings = r["pipelines"], r["ceilings"]
    assert len(pipelines) == 3 and len(ceilings) == 4
    around = [(ceilings[i] + ceilings[i + 1]) / 2 for i in range(3)]
    assert np.allclose(r["ratios"], [p / c for p, c in zip(pipelines, around)], atol=2e-3)
    stages = r["stages"]
    assert {"decode", "resize", "start", "model", "write", "stop", "finish", "other", "feed"} <= set(stages)
    # ``other``: the reported round's time (its images / its pipeline rate) that no stage holds
    middle = int(np.argsort(r["ratios"])[len(r["ratios"]) // 2])
    seconds = r["images"] / r["pipelines"][middle]
    assert abs(seconds - wall_seconds(stages) - stages["other"]) < 0.01
    assert r["images"] == 40 and all(r[k] > 0 for k in ("pipeline", "ceiling", "lab_loop", "feed_per_core"))
    assert r["device_resize"] == "device"  # CIFAR-10: every image 32 x 32


def test_extract_speed_measures_device_mixed_for_images_of_many_sizes(monkeypatch, capsys):
    run = _bench(BENCH[:-1] + ["1", "--dataset", "gtsrb", "--no-lab", "--json"], monkeypatch, capsys)
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout)
    assert r["device_resize"] == "device-mixed" and r["pipeline_device_resize"] > 0
    assert r["feed_per_core_device_resize"] > 0 and len(r["ratios_device_resize"]) == 1


def test_extract_speed_prints_a_table_without_json(monkeypatch, capsys):
    run = _bench(BENCH, monkeypatch, capsys)
    assert run.returncode == 0, run.stderr
    assert "| bottleneck pipeline (files -> cache) |" in run.stdout and "pipeline / ceiling:" in run.stdout
    assert "median of rounds" in run.stdout


def test_scene_speed_runs_on_a_gtsdb_shaped_folder(monkeypatch, capsys, tmp_path):
    from .test_detection import gtsdb_folder

    gtsdb_folder(tmp_path / "gtsdb", {n: [] for n in range(6)}, size=(136, 80))
    run = _bench([str(REPO / "bench" / "scene_speed.py"), "--base", "tiny_cnn", "--data-dir", str(tmp_path),
                  "--scenes", "6", "--json"], monkeypatch, capsys)
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout)
    assert r["scenes"] == 6 and r["canvas"] == [96, 160] and r["pipeline"] > 0 and r["ceiling"] > 0
    assert r["stages"] and {"decode", "model"} <= set(r["stages"])


def test_unlabeled_ceilings_grades_the_runs_own_semi_supervised_head(monkeypatch, capsys, tmp_path):
    """bench/unlabeled_ceilings.py reads a run's rows (labelled, the whole pool, the test split) and
    its teacher is the run's ``pseudo`` head: the same accuracy as ``train --unlabeled all``."""
    from bottleneck.experiments.run import train

    data, cache = REPO / "data", tmp_path / "c"
    run = _bench([str(REPO / "bench" / "unlabeled_ceilings.py"), "--base", "tiny_cnn", "--weights", "random",
                  "--dataset", "cifar10", "--recipe", "plain", "--per-class", "3", "--C", "1", "--epochs", "1",
                  "--data-dir", str(data), "--cache-dir", str(cache)], monkeypatch, capsys)
    assert run.returncode == 0, run.stderr
    r = json.loads(run.stdout)
    assert (r["labelled"], r["pool"], r["test"]) == (30, 970, 500)
    row = train("tiny_cnn", "cifar10", 3, 0, unlabeled="all", head_params={"C": 1.0}, weights="random",
                data_dir=data, cache_dir=cache, progress=False)
    assert row["semi"] == "pseudo" and r["teacher"] == pytest.approx(row["accuracy"], abs=1e-6)
    assert all(0 <= r[k] <= 1 for k in ("ceiling_linear", "ceiling_mlp", "teacher_pool_right", "student_mlp"))
