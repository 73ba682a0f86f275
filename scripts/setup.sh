#!/usr/bin/env bash
# Create ./.venv (Python 3.10+) and install the pinned requirements and this package, once:
# a stamp keyed on requirements.txt and pyproject.toml skips the work when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "error: Python 3.10+ is needed ($PY is $("$PY" --version 2>&1))" >&2; exit 1; }
stamp=.venv/.bottleneck-installed
want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
echo "setting up .venv (first run: downloads TensorFlow, a few minutes)..." >&2
.venv/bin/python -m pip install -q --upgrade pip >&2
.venv/bin/python -m pip install -q -r requirements.txt >&2
# this project was once installed as "bottleneck", PyPI's name for another package: drop that old record
if .venv/bin/python -m pip show bottleneck 2>/dev/null | grep "^Summary: Cheap, correct" >/dev/null; then
  .venv/bin/python -m pip uninstall -q -y bottleneck >&2
fi
.venv/bin/python -m pip install -q --no-deps -e . >&2
echo "$want" > "$stamp"
