"""The documentation: the docs site builds in strict mode (broken links, missing pages and
docstring references fail it), its command-line reference is generated from the parser, and the
README stays short."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-f", str(REPO / "mkdocs.yml"),
                           "-d", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_the_docs_site_builds_strictly_and_has_every_page(site):
    import yaml

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!!python", ""))["nav"]
    listed = set(pages(nav))
    on_disk = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md")}
    assert listed == on_disk  # every page is in the navigation, and every entry is a page
    for page in listed:
        html = site / (page[:-3] + "/index.html" if page != "index.md" else "index.html")
        assert html.exists(), page


def test_the_cli_reference_is_generated_from_the_parser(site):
    from bottleneck.cli import build_parser

    html = (site / "reference" / "cli" / "index.html").read_text()
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f"bottleneck {name}" in html, name
        for action in command._actions:
            for flag in [] if isinstance(action, argparse._HelpAction) else action.option_strings:
                assert flag in html, (name, flag)


def test_the_api_reference_comes_from_the_docstrings(site):
    html = (site / "reference" / "api" / "index.html").read_text()
    assert "register_base" in html and "A name already registered is refused" in html


def test_the_readme_is_short_and_says_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert "./run.sh" in text and "./test.sh" in text
