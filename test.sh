#!/usr/bin/env bash
# The test suite (sets itself up first), on two worker processes (TEST_WORKERS=N for another
# number, 0 for one process), printing the 20 slowest tests. Extra arguments go to pytest,
# e.g. ./test.sh -m "not slow" (the quick lane) or ./test.sh tests/test_heads.py.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-2}" --dist worksteal --durations=20 "$@"
