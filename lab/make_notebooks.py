"""Write each lesson, and its exercise, as a Jupyter notebook: ``python -m lab.make_exercises``.

A notebook is made from the same source as the lesson's module (the solution in ``lab/``, and
the exercise that ``make_exercises`` makes of it), so the two never drift: tests/test_lab.py
regenerates every notebook and compares it with the committed one. Its cells, top to bottom:

1. the lesson's prose (its docstring) in Markdown;
2. set-up: find the repository, ``FAST`` (a tiny random-weight base, for a quick check) and the
   folders the lesson writes to;
3. the lesson's imports, then each of its functions, one cell each (the TODOs of an exercise
   raise NotImplementedError until they are filled in);
4. ``check(N, globals())``: the checker's points and hints for the functions above; it stops
   "Run all" at the first lesson part not done yet;
5. ``run(...)``: the lesson itself, its tables printed and its plots shown inline.
"""
from __future__ import annotations

import ast
import re

import nbformat

SETUP = '''\
# The lab's code and data are in the repository: find its root from this notebook's folder.
import sys
from pathlib import Path

roots = [p for p in (Path.cwd(), *Path.cwd().parents) if (p / "lab" / "check.py").is_file()]
assert roots, "open this notebook from a clone of the repository (it lives in lab/notebooks/)"
sys.path.insert(0, str(roots[0]))

from bottleneck.core.procs import import_keras_quietly
from lab.common import CACHE, OUT

import_keras_quietly()  # TensorFlow's start-up notices would fill the first output

FAST = False  # True: a tiny random-weight base and a few images (checks that it runs; the accuracies mean nothing)
CACHE_DIR, OUT_DIR = CACHE, OUT  # the feature cache (./run.sh fills it) and where tables and plots go'''


def _cells_of(source: str) -> tuple[str, list[str], list[str]]:
    """(docstring, import lines and named constants, function sources) of a lesson module;
    ``main`` and the ``__main__`` block are the command line's, not the notebook's."""
    tree = ast.parse(source)
    lines = source.splitlines()
    doc = ast.get_docstring(tree) or ""
    imports, constants, functions = [], [], []
    for node in tree.body:
        text = "\n".join(lines[node.lineno - 1:node.end_lineno])
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if not (isinstance(node, ast.ImportFrom) and node.module == "__future__"):
                imports.append(re.sub(r"^from \.+(\w)", r"from lab.\1", text))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            constants.append(text)
        elif isinstance(node, ast.FunctionDef) and node.name != "main":
            functions.append(text)
    return doc, imports + ([""] + constants if constants else []), functions


def _prose(doc: str, module: str, exercise: bool) -> str:
    title, _, rest = doc.partition("\n")
    rest = re.sub(r"^[ \t]*\.venv/bin/python -m (\S+)[ \t]*$", r"On a terminal: `.venv/bin/python -m \1`", rest,
                  flags=re.M)
    intro = ("*The exercise*: fill in the parts marked `TODO` in the cells below, then run all cells (Run > Run "
             "All Cells). The check cell says what is right and gives a hint for what is not; the lesson runs "
             "once every check passes.\n\n" if exercise else "")
    return f"# {title.strip().rstrip('.')}\n\n{intro}{rest.strip()}\n\nThis notebook is generated from `lab/{module}.py`."


def notebook(source: str, n: int, module: str, exercise: bool) -> nbformat.NotebookNode:
    """The notebook of lesson ``n`` made from ``source`` (the lesson's module, or its exercise)."""
    doc, imports, functions = _cells_of(source)
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    cells = [
        md(_prose(doc, module, exercise)),
        md("## Set-up\n\nRun this first. Set `FAST = True` for a quick check that everything runs."),
        code(SETUP),
        code("\n".join([*imports, "", "from lab.check import check"])),
        md("## The lesson's code\n\n" + ("Fill in each `TODO`; the comments above it say what to write."
                                         if exercise else "The parts an exercise leaves to you are marked "
                                         "`### BEGIN SOLUTION`.")),
        *(code(f) for f in functions),
        md("## Check your work\n\nThe same points and hints as `python -m lab.check "
           f"{n}` on the command line, for the functions defined above."),
        code(f"check({n}, globals())"),
        md("## Run the lesson"),
        code("result = run(fast=FAST, cache_dir=CACHE_DIR, out=OUT_DIR)"),
    ]
    for k, cell in enumerate(cells):  # fixed ids: the same source gives the same file
        cell["id"] = f"lesson{n}-{k}"
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    return nb


def notebook_text(source: str, n: int, module: str, exercise: bool) -> str:
    return nbformat.writes(notebook(source, n, module, exercise)) + "\n"
