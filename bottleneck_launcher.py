"""The `bottleneck` command's entry point, kept outside the `bottleneck` package on purpose.

PyPI's `Bottleneck` (fast NumPy array functions, used by pandas and xarray) installs an import
package of the same name. In one environment the two overwrite each other's files, and a
command that imported `bottleneck.cli` directly would die with an obscure ImportError. This
module checks first, and says what happened and what to do.
"""
from __future__ import annotations

import sys


def clash() -> str | None:
    """A description of PyPI's Bottleneck when it is installed in this environment, else None."""
    from importlib import metadata

    try:
        other = metadata.distribution("Bottleneck")
    except metadata.PackageNotFoundError:
        return None
    if (other.metadata.get("Summary") or "").startswith("Cheap, correct"):
        return None  # this project itself, installed before it took its own distribution name
    return f"PyPI's 'Bottleneck' {other.version} (fast NumPy array functions), installed in {other.locate_file('')}"


def main() -> int:
    found = clash()
    if found:
        print(f"error: {found}. It and this project (bottleneck-transfer) both install the import package "
              "'bottleneck', so in one environment one overwrites the other's files.\n"
              "  what to do: use a separate virtual environment for bottleneck-transfer (./run.sh and ./test.sh "
              "make one in .venv/; or python3 -m venv ~/bt && ~/bt/bin/pip install PATH/TO/THIS/PROJECT), or "
              "`pip uninstall Bottleneck bottleneck-transfer` then reinstall bottleneck-transfer here if nothing "
              "in this environment needs PyPI's Bottleneck (pandas and xarray only use it when it is there)",
              file=sys.stderr)
        return 2
    from bottleneck.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
