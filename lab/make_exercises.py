"""Write lab/exercises/ from the solutions: ``python -m lab.make_exercises``.

In a solution, the code between ``### BEGIN SOLUTION NAME`` and ``### END SOLUTION`` becomes
``raise NotImplementedError("TODO: NAME")`` in the exercise; the TODO comments above it stay.
The exercises are never edited by hand, so they cannot drift from the solutions
(tests/test_lab.py checks the committed ones are up to date).
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


def main() -> None:
    for path in lesson_files():
        target = LAB / "exercises" / path.name
        target.write_text(exercise_text(path.read_text()))
        print(target)


if __name__ == "__main__":
    main()
