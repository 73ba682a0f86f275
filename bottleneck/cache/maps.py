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

    def read_windows(self, rows, corners, size: tuple[int, int], strides: dict[str, int]) -> dict[str, np.ndarray]:
        """A window of each row's maps: ``size`` (height, width) canvas pixels from corner
        (y0, x0), on each level its cells (corners and size multiples of the level's stride)."""
        out = {}
        for lv in self.levels:
            s, dataset = strides[lv], self.file["maps"][lv]
            h, w = size[0] // s, size[1] // s
            out[lv] = np.empty((len(rows), h, w, self.shapes[lv][-1]), np.float32)
            for k, (row, (y0, x0)) in enumerate(zip(rows, corners)):
                out[lv][k] = dataset[int(row), y0 // s:y0 // s + h, x0 // s:x0 // s + w]
        return out

    def close(self):
        self.file.close()
