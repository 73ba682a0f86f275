"""A finished run: what ``train`` keeps for export, predictions and pictures."""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from bottleneck.cache.store import FeatureSet
from bottleneck.report.results import ResultsDir, markdown_table, write_results  # noqa: F401  (tables live in results)

log = logging.getLogger("bottleneck")


@dataclasses.dataclass
class Fitted:
    """A finished run: its row, the fitted head, the features it saw and the test targets."""

    row: dict
    model: object
    train: FeatureSet
    test: FeatureSet
    y_test: np.ndarray  # the test targets (for segmentation: the confusion matrix)
    frames: object = None  # segmentation: () -> (image, truth, prediction) of a few test frames
    history: dict | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # detection: precision/recall curves
