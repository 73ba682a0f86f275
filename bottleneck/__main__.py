"""``python -m bottleneck``: the command line."""
from __future__ import annotations

import sys

from bottleneck.cli import main

sys.exit(main())
