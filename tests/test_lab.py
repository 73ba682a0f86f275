"""The lab: every solution runs (fast variant), and the checker fails untouched exercises
helpfully and passes the solutions."""
from __future__ import annotations

import io
import sys

import pytest

from lab import check

from .conftest import REPO

EXPECT = {1: "lab head on tiny_cnn features", 2: "| tiny_cnn |", 3: "how_much_data.png",
          4: "(d) LeNet from scratch", 5: "from the pickles"}


@pytest.mark.parametrize("n", sorted(check.LESSONS))
def test_solution_runs_fast(n, tmp_path, monkeypatch, capsys):
    """Each lesson as ``python -m lab.lessonN --fast`` runs it, in this process."""
    import runpy

    module = f"lab.{check.LESSONS[n]}"
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [module, "--fast", "--cache-dir", str(tmp_path / "c"), "--out",
                                      str(tmp_path / "out")])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err[-2000:]
    assert EXPECT[n] in capsys.readouterr().out


@pytest.mark.parametrize("n", sorted(check.LESSONS))
def test_checker_fails_exercise_and_passes_solution(n):
    report = io.StringIO()
    assert not check.run(n, out=report)
    assert "MISSING TODO" in report.getvalue() and "complete the function marked TODO" in report.getvalue()
    report = io.StringIO()
    assert check.run(n, REPO / "lab" / f"{check.LESSONS[n]}.py", out=report), report.getvalue()
    assert ", 0 failed" in report.getvalue()


def test_checker_usage_error():
    assert check.main(["9"]) == 2


def test_exercises_are_generated_from_the_solutions():
    from lab.make_exercises import LAB, exercise_text, lesson_files

    assert len(lesson_files()) == len(check.LESSONS)
    for path in lesson_files():
        committed = (LAB / "exercises" / path.name).read_text()
        assert committed == exercise_text(path.read_text()), f"run `python -m lab.make_exercises` ({path.name})"
        assert "### BEGIN SOLUTION" not in committed and "NotImplementedError" in committed
