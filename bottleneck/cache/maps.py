"""Reading a feature-map cache file lazily, a few rows at a time: memory stays flat in the
number of frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np


class MapReader:
    """Reads a maps cache file lazily: the rows asked for, level by level, as float32."""

    def __init__(self, path: Path):
        import h5py

        self.path = path
        self.file = h5py.File(path, "r")
        self.levels = [k for k in self.file["maps"]]
        self.shapes = {lv: tuple(self.file["maps"][lv].shape[1:]) for lv in self.levels}

    def __len__(self) -> int:
        return len(self.file["labels"])

    def read(self, rows) -> dict[str, np.ndarray]:
        # One row (= one HDF5 chunk) at a time: h5py's fancy indexing over a list of rows is ~18x slower.
        out = {}
        for lv in self.levels:
            dataset = self.file["maps"][lv]
            out[lv] = np.empty((len(rows), *self.shapes[lv]), np.float32)
            for k, row in enumerate(rows):
                out[lv][k] = dataset[int(row)]
        return out

    def close(self):
        self.file.close()
