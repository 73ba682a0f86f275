"""The lab: every lesson runs, as a module and as a notebook (fast variant); the checker fails
untouched exercises helpfully and passes the solutions, on the command line and in a
notebook; the exercises and notebooks are generated from the solutions."""
from __future__ import annotations

import io
import re
import sys

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from lab import check

from .conftest import REPO

EXPECT = {1: "lab head on tiny_cnn features", 2: "| tiny_cnn |", 3: "how_much_data.png",
          4: "(d) LeNet from scratch", 5: "from the pickles", 6: "balanced pseudo-labels"}
NOTEBOOKS = REPO / "lab" / "notebooks"


def test_a_lesson_runs_as_a_module(tmp_path, monkeypatch, capsys):
    """``python -m lab.lessonN --fast`` (the notebooks below run the same ``run``)."""
    import runpy

    module = f"lab.{check.LESSONS[1]}"
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [module, "--fast", "--cache-dir", str(tmp_path / "c"), "--out",
                                      str(tmp_path / "out")])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        assert e.code in (0, None), capsys.readouterr().err[-2000:]
    assert EXPECT[1] in capsys.readouterr().out


@pytest.fixture(scope="module")
def kernel():
    """One Jupyter kernel for the notebooks of this module (per test process): each notebook
    starts on an emptied namespace, and the kernel's start and TensorFlow's import (most of a
    small notebook's time) are paid once."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(NOTEBOOKS))
    yield km
    km.shutdown_kernel(now=True)


def _execute(path, tmp_path, kernel):
    """Run a notebook top to bottom, as a student's "Run all" does, on an empty namespace, with
    the fast settings and the test's own folders set right after its set-up cell."""
    nb = nbformat.read(path, as_version=4)
    setup = next(k for k, c in enumerate(nb.cells) if "FAST = False" in c.source)
    nb.cells.insert(setup + 1, nbformat.v4.new_code_cell(
        f"FAST = True\nCACHE_DIR, OUT_DIR = {str(tmp_path / 'c')!r}, Path({str(tmp_path / 'out')!r})"))
    nb.cells.insert(0, nbformat.v4.new_code_cell("%reset -f"))  # nothing left from the notebook before
    client = NotebookClient(nb, km=kernel, timeout=240, resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
        error = None
    except CellExecutionError as e:
        error = e
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return nb, text, error


@pytest.mark.parametrize("n", sorted(check.LESSONS))
def test_solution_notebook_runs_top_to_bottom(n, tmp_path, kernel):
    nb, text, error = _execute(NOTEBOOKS / f"{check.LESSONS[n]}.ipynb", tmp_path, kernel)
    assert error is None, str(error)[-3000:]
    assert "0 failed" in text and EXPECT[n] in text
    if n == 3:  # the plot is shown in the notebook, not only written
        shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
        assert len(shown) == 1


@pytest.mark.parametrize("n", sorted(check.LESSONS))
def test_untouched_exercise_notebook_stops_at_its_first_todo(n, tmp_path, kernel):
    first_todo = re.search(r"### BEGIN SOLUTION (.+)", (REPO / "lab" / f"{check.LESSONS[n]}.py").read_text())[1]
    nb, text, error = _execute(NOTEBOOKS / "exercises" / f"{check.LESSONS[n]}.ipynb", tmp_path, kernel)
    assert error is not None and "LessonNotDone" in str(error)
    assert f"MISSING TODO: {first_todo.strip()}: complete the function marked TODO in this notebook" in text
    stopped = [c for c in nb.cells if c.cell_type == "code" and any(o.get("output_type") == "error"
                                                                    for o in c.get("outputs", []))]
    assert [c.source for c in stopped] == [f"check({n}, globals())"]
    assert not (tmp_path / "out").exists()  # the lesson itself never ran


def test_check_in_a_notebook_takes_the_functions_defined_there():
    from lab import lesson3_how_much_data as solution
    from lab.exercises import lesson3_how_much_data as exercise

    report = io.StringIO()
    assert check.check(3, vars(solution), out=report) and "3 passed, 0 failed" in report.getvalue()
    with pytest.raises(check.LessonNotDone, match="MISSING TODO: learning_curve"):
        check.check(3, vars(exercise), out=io.StringIO())


@pytest.mark.parametrize("n", sorted(check.LESSONS))
def test_checker_fails_an_untouched_exercise_file(n):
    report = io.StringIO()
    assert not check.run(n, out=report)
    assert "MISSING TODO" in report.getvalue() and "complete the function marked TODO" in report.getvalue()


def test_checker_passes_a_solution_file():
    """(Every solution passes its checker in its notebook above: the same points, on the same functions.)"""
    report = io.StringIO()
    assert check.run(3, REPO / "lab" / f"{check.LESSONS[3]}.py", out=report), report.getvalue()
    assert "3 passed, 0 failed" in report.getvalue()


def test_checker_usage_error():
    assert check.main(["9"]) == 2


def test_exercises_and_notebooks_are_generated_from_the_solutions():
    from lab.make_exercises import LAB, generated, lesson_files

    assert len(lesson_files()) == len(check.LESSONS)
    files = generated()
    assert len(files) == 3 * len(check.LESSONS)
    for path, text in files.items():
        assert path.read_text() == text, f"run `python -m lab.make_exercises` ({path.relative_to(LAB)})"
        if "exercises" in path.parts:
            assert "### BEGIN SOLUTION" not in text and "NotImplementedError" in text
    committed = {p for p in (LAB / "notebooks").rglob("*.ipynb")}
    assert committed == {p for p in files if p.suffix == ".ipynb"}  # no stale notebook of a removed lesson
