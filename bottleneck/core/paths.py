"""Where things live by default: BOTTLENECK_HOME (unpacked archives, content indexes) and
the data folder (BOTTLENECK_DATA_DIR, else ./data)."""
from __future__ import annotations

import os
from pathlib import Path


def data_home() -> Path:
    return Path(os.environ.get("BOTTLENECK_HOME", Path.home() / ".cache" / "bottleneck"))


def default_data_dir() -> Path:
    return Path(os.environ.get("BOTTLENECK_DATA_DIR", "data"))
