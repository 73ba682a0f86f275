"""The package's shape: rooms, the one-way import rule, no private names across modules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .conftest import REPO

PACKAGE = REPO / "bottleneck"
ROOMS = {"core", "data", "bases", "cache", "learn", "extraction", "report", "experiments", "deploy"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path):
    """(node, the module it imports from, whether it is inside a function) of each import of ours."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        ours = node.module == "bottleneck" or (node.module or "").startswith("bottleneck.") if isinstance(
            node, ast.ImportFrom) else False
        if ours and not node.level:
            yield node, node.module, id(node) not in top
        elif isinstance(node, ast.ImportFrom) and node.level:
            pytest.fail(f"{path}:{node.lineno}: a relative import; the package imports by full name")


def test_the_top_of_the_package_is_only_its_face_and_the_rooms():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py"]  # at most six: the face
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert rooms == ROOMS
    for room in ROOMS:  # each room says what lives in it
        doc = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert doc and len(doc) > 80, room


def test_the_import_rule_holds():
    """import-linter's contracts in pyproject.toml: rooms import only downwards, and the modules
    of each room import one another one way (function-level imports counted). In a process of its
    own: its command configures logging with dictConfig, which disables every logger that exists
    (ours too) for the rest of the process."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                           "sys.exit(lint_imports_command())", "--config", str(REPO / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in done.stdout


def test_no_private_name_is_imported_across_modules():
    modules = _modules()
    crossing = []
    for name, path in modules.items():
        for node, source, _ in _imports(path):
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and f"{source}.{alias.name}" not in modules and source != name:
                    crossing.append(f"{name} imports {alias.name} from {source}")
    assert crossing == []


def test_function_level_imports_of_our_modules_only_in_the_cli_and_for_ray():
    """Everywhere else an import of the package's own modules sits at the top of the module,
    where the import rule and a reader see it."""
    lazy = [(name, source, [a.name for a in node.names]) for name, path in _modules().items()
            for node, source, inside in _imports(path) if inside]
    ray = ("bottleneck.extraction.run", "bottleneck.extraction", ["ray_engine"])  # the optional Ray engine
    assert [x for x in lazy if x[0] != "bottleneck.cli" and x != ray] == []
    assert ray in lazy and any(x[0] == "bottleneck.cli" for x in lazy)


def test_the_documented_public_names_resolve():
    """``bottleneck.<name>`` as the README documents it, functions and modules both."""
    import bottleneck

    for name in bottleneck.__all__:
        assert getattr(bottleneck, name) is not None, name
    assert bottleneck.cluster.session and bottleneck.finetune.finetune and bottleneck.labpickle.load_lab_pickle
    assert bottleneck.tasks.MultiLabel and bottleneck.safepickle.load_file
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        bottleneck.nonesuch  # noqa: B018
