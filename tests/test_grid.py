"""A grid never loses finished work: up-front checks, rows kept as they finish, reruns that
reuse them, two grids into one folder."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from bottleneck.experiments import grid
from bottleneck.cli import main
from bottleneck.core.errors import BottleneckError
from bottleneck.report.results import ResultsDir

from . import warm
from .conftest import copy_cifar_subset


@pytest.fixture
def grid_data(tmp_path):
    return copy_cifar_subset(tmp_path / "g", classes=3, train=6, test=2)


def _compare(dataset, cache, out, *extra, fault=None):
    """`bottleneck compare` on a 2 x 2 grid: in this process, or in a process of its own when a
    fault is to stop it."""
    argv = ["compare", "--bases", "tiny_cnn", "--datasets", f"folder:{dataset}", "--per-class", "2,4",
            "--seeds", "0,1", "--weights", "random", "--cache-dir", str(cache), "--out", str(out), "--quiet", *extra]
    if fault is None:
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(argv)
        return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())
    env = {**os.environ, "BOTTLENECK_FAULT": fault}
    return warm.run([sys.executable, "-m", "bottleneck", *argv], env=env)


def _rows(out):
    return json.loads((out / "results.json").read_text())


@pytest.mark.subprocess
@pytest.mark.parametrize("fault,exit_code", [("after-run:2:INT", 130), ("after-run:1:KILL", -9)])
def test_a_stopped_grid_keeps_finished_rows_and_a_rerun_reuses_them(grid_data, tmp_path, fault, exit_code):
    stopped = _compare(grid_data, tmp_path / "c", tmp_path / "r", fault=fault)
    assert stopped.returncode == exit_code, stopped.stderr
    kept = int(fault.split(":")[1]) + 1
    assert len(_rows(tmp_path / "r")) == kept and len(list((tmp_path / "r" / "rows").glob("*.json"))) == kept
    again = _compare(grid_data, tmp_path / "c", tmp_path / "r")
    assert again.returncode == 0, again.stderr
    assert f"{kept} runs were finished already and reused" in again.stdout
    clean = _compare(grid_data, tmp_path / "c2", tmp_path / "r2")
    assert clean.returncode == 0, clean.stderr
    accuracy = lambda out: sorted((r["per_class"], r["seed"], r["accuracy"]) for r in _rows(out))
    assert accuracy(tmp_path / "r") == accuracy(tmp_path / "r2")  # the same table as an uninterrupted grid


def test_everything_is_checked_before_the_first_extraction(grid_data, tmp_path):
    cache = tmp_path / "c"
    with pytest.raises(BottleneckError, match="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        grid.compare(["efficientnet_lite0", "vgg16"], [f"folder:{grid_data}"], [2], [0], cache_dir=cache,
                       progress=False)
    no_test = copy_cifar_subset(tmp_path / "no_test", classes=2, train=3, test=1)
    shutil.rmtree(no_test / "test")
    with pytest.raises(BottleneckError, match="has no split 'test'") as e:
        grid.compare(["tiny_cnn"], [f"folder:{grid_data}", f"folder:{no_test}"], [2], [0], weights="random",
                       cache_dir=cache, progress=False)
    assert "--test-fraction" in e.value.todo
    with pytest.raises(ValueError, match="'epochs' parameter of MLPHead"):
        grid.compare(["tiny_cnn"], [f"folder:{grid_data}"], [2], [0], head="mlp", head_params={"epochs": 0},
                       weights="random", cache_dir=cache, progress=False)
    assert not cache.exists() or not list(cache.rglob("*.h5"))  # nothing was extracted


def test_two_grids_into_one_folder_keep_both(grid_data, tmp_path):
    """Run at the same time into one --out, with other heads: every row of both is kept, and the
    merged table tells the heads apart instead of averaging them."""
    def grid(i, head, *extra):
        argv = ["compare", "--bases", "tiny_cnn", "--datasets", f"folder:{grid_data}", "--per-class", "2,4",
                "--seeds", "0,1", "--weights", "random", "--cache-dir", str(tmp_path / f"c{i}"),
                "--out", str(tmp_path / "r"), "--quiet", "--head", head, *extra]
        return warm.popen([sys.executable, "-m", "bottleneck", *argv])

    procs = [grid(0, "logreg"), grid(1, "dense", "--epochs", "2")]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    rows = _rows(tmp_path / "r")
    assert len(rows) == 8 and sorted(r["head"] for r in rows) == ["dense"] * 4 + ["logreg"] * 4
    table = (tmp_path / "r" / "table.md").read_text()
    assert "tiny_cnn (dense head" in table and "tiny_cnn (logreg head" in table
    assert any("it holds 8 runs: 4 more from earlier runs" in out for out, _ in outs)


def test_tables_are_replaced_atomically(tmp_path, monkeypatch):
    from pathlib import Path

    store = ResultsDir(tmp_path / "r")
    row = {"base": "b", "dataset": "d", "per_class": 1, "seed": 0, "head": "logreg", "accuracy": 0.5}
    store.add("0000000000a1", row)
    before = (tmp_path / "r" / "results.json").read_text()
    real = Path.write_bytes

    def cut_short(self, data, *a, **k):  # the disk fills halfway through the new results.json
        if self.name.startswith(".results.json"):
            real(self, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real(self, data, *a, **k)

    monkeypatch.setattr(Path, "write_bytes", cut_short)
    with pytest.raises(OSError):
        store.add("0000000000a2", {**row, "seed": 1})
    assert (tmp_path / "r" / "results.json").read_text() == before  # whole: the old one
    assert not list((tmp_path / "r").glob(".*.tmp"))
    monkeypatch.setattr(Path, "write_bytes", real)
    assert len(ResultsDir(tmp_path / "r").rows()) == 2  # the finished row itself was kept


def test_an_older_results_folder_is_kept(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    old = [{"base": "vgg16", "dataset": "cifar10", "per_class": 100, "seed": 0, "head": "logreg", "accuracy": 0.7}]
    (out / "results.json").write_text(json.dumps(old))
    store = ResultsDir(out)
    store.add("0000000000b1", {**old[0], "base": "resnet50"})
    assert {r["base"] for r in _rows(out)} == {"vgg16", "resnet50"}


def test_rows_of_different_kinds_share_one_csv(tmp_path):
    """A train row and a finetune row have different columns; the CSV holds both."""
    import csv

    from bottleneck.report.results import write_results

    train_row = {"base": "b", "dataset": "d", "per_class": 1, "seed": 0, "head": "logreg", "accuracy": 0.5,
                 "metrics": {"accuracy": 0.5}, "train_cache": "x.h5"}
    finetune_row = {"base": "b", "dataset": "d", "per_class": 1, "seed": 0, "head": "finetune(top 1)",
                    "accuracy": 0.6, "unfrozen_base_parameters": 1234, "epochs": 3}
    write_results([train_row, finetune_row], tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert rows[0]["train_cache"] == "x.h5" and rows[0]["unfrozen_base_parameters"] == ""
    assert rows[1]["unfrozen_base_parameters"] == "1234" and json.loads(rows[0]["metrics"]) == {"accuracy": 0.5}
    assert "finetune(top 1)" in (tmp_path / "table.md").read_text()
