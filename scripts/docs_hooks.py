"""MkDocs hook: the command-line reference is generated from the argparse parser at every build,
so it cannot drift from the code (docs/reference/cli.md holds only the marker it replaces)."""
from __future__ import annotations

import argparse

MARKER = "<!-- generated: command-line reference -->"


def _plain(text: str) -> str:
    """Help text as literal Markdown in a table cell (``BASE[:LAYER]`` is not a link)."""
    for c in "\\|[]*<>_`":
        text = text.replace(c, "\\" + c)
    return text.replace("\n", " ")


def _option_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:  # argparse has no public way to list a parser's options
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        name = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{action.dest}`"
        if action.metavar and action.option_strings:
            name += f" `{action.metavar}`"
        help_text = _plain(action.help or "")
        if action.choices and not isinstance(action.choices, dict):
            help_text += " (one of: " + ", ".join(f"`{c}`" for c in action.choices) + ")"
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            help_text += f" Default: `{action.default}`."
        rows.append(f"| {name} | {help_text} |")
    return rows


def cli_reference() -> str:
    from bottleneck.cli import build_parser

    parser = build_parser()
    out = [f"`bottleneck` {parser.description or ''}".strip(), ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, command in sub.choices.items():
        out += [f"## `bottleneck {name}`", "", helps.get(name) or "", "",
                "```text", command.format_usage().strip(), "```", ""]
        rows = _option_rows(command)
        if rows:
            out += ["| option | what it does |", "|---|---|", *rows, ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, cli_reference())
    return markdown
