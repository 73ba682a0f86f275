"""Every file format the package reads, fuzzed (``tests/fuzzing.py``): seeded mutations of a
valid file must each end in a result or a clear error, within a time and a memory limit,
writing nothing outside their folder.

Each format runs in a child process of its own (its memory limit is its alone). CI runs
``FUZZ_CASES`` cases per format; more with ``BOTTLENECK_FUZZ_CASES=300 pytest tests/test_fuzz.py``
(and another seed with ``BOTTLENECK_FUZZ_SEED``)."""
from __future__ import annotations

import json
import os
import sys

import pytest

from . import warm
from .fuzzing import FORMATS

FUZZ_CASES = int(os.environ.get("BOTTLENECK_FUZZ_CASES", "10"))
FUZZ_SEED = int(os.environ.get("BOTTLENECK_FUZZ_SEED", "0"))


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_mutated_files_end_in_a_result_or_a_clear_error(fmt):
    done = warm.run([sys.executable, "-m", "tests.fuzzing", fmt, "--cases", str(FUZZ_CASES), "--seed", str(FUZZ_SEED)],
                    timeout=60 + 25 * FUZZ_CASES)
    assert done.returncode == 0, done.stderr[-3000:]
    tally = json.loads(done.stdout.strip().splitlines()[-1])
    assert tally["failure"] is None, tally["failure"]
    assert tally["cases"] == FUZZ_CASES and tally["result"] + tally["clear_error"] == FUZZ_CASES
