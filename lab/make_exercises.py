"""Write lab/exercises/ and lab/notebooks/ from the solutions: ``python -m lab.make_exercises``.

In a solution, the code between ``### BEGIN SOLUTION NAME`` and ``### END SOLUTION`` becomes
``raise NotImplementedError("TODO: NAME")`` in the exercise; the TODO comments above it stay.
The exercises are never edited by hand, so they cannot drift from the solutions
(tests/test_lab.py checks the committed ones are up to date). Each lesson and each exercise
is also written as a notebook (lab/make_notebooks.py): ``lab/notebooks/`` and
``lab/notebooks/exercises/``.
"""
from __future__ import annotations

import re
from pathlib import Path

LAB = Path(__file__).resolve().parent
_BEGIN = re.compile(r"^(\s*)### BEGIN SOLUTION (.+)$")


def exercise_text(solution: str) -> str:
    out, skipping = [], False
    for line in solution.splitlines():
        begin = _BEGIN.match(line)
        if begin:
            indent, name = begin.groups()
            out.append(f'{indent}raise NotImplementedError("TODO: {name.strip()}")')
            skipping = True
        elif line.strip() == "### END SOLUTION":
            skipping = False
        elif not skipping:
            out.append(line)
    text = "\n".join(out) + "\n"
    return re.sub(r"^from \.(\w)", r"from ..\1", text, flags=re.M)  # exercises live one package down


def lesson_files() -> list[Path]:
    return sorted(LAB.glob("lesson*.py"))


def generated() -> dict[Path, str]:
    """Every generated file and its text: the exercises and the notebooks of both."""
    from lab.make_notebooks import notebook_text

    files = {}
    for path in lesson_files():
        n = int(re.match(r"lesson(\d+)", path.stem).group(1))
        solution = path.read_text()
        exercise = exercise_text(solution)
        files[LAB / "exercises" / path.name] = exercise
        files[LAB / "notebooks" / f"{path.stem}.ipynb"] = notebook_text(solution, n, path.stem, exercise=False)
        files[LAB / "notebooks" / "exercises" / f"{path.stem}.ipynb"] = notebook_text(exercise, n, path.stem,
                                                                                     exercise=True)
    return files


def main() -> None:
    for target, text in generated().items():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(target)


if __name__ == "__main__":
    main()
