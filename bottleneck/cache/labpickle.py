"""The classic transfer-learning lab's pickle format, both ways.

The lab handed out ``{network}_{dataset}_{N}_bottleneck_features_train.p`` and
``{network}_{dataset}_bottleneck_features_validation.p``: pickled dicts with
``features`` (N, 1, 1, D) float32 and ``labels`` (N,). Exporting cached features in
that shape lets the original exercise code read them unchanged.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from bottleneck.cache.store import FeatureSet, dataset_slug
from bottleneck.core import safepickle
from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.core.files import atomic_output


def lab_file_names(network: str, dataset: str, per_class: int | None) -> tuple[str, str]:
    n = f"_{per_class}" if per_class else ""
    return (f"{network}_{dataset}{n}_bottleneck_features_train.p",
            f"{network}_{dataset}_bottleneck_features_validation.p")


def _lab_array(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float32)
    return features.reshape(len(features), 1, 1, -1) if features.ndim == 2 else features


def export_lab_pickles(train: FeatureSet, test: FeatureSet, out_dir: str | Path,
                       network: str | None = None, dataset: str | None = None) -> tuple[Path, Path]:
    """Write the training and test features as the lab's train / validation pickles."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    network = network or train.settings["base"]
    dataset = dataset or dataset_slug(train.settings["dataset"])
    paths = [out_dir / name for name in lab_file_names(network, dataset, train.settings.get("per_class"))]
    for fs, path in zip((train, test), paths):
        with atomic_output(path) as tmp, open(tmp, "wb") as f:
            pickle.dump({"features": _lab_array(fs.features), "labels": np.asarray(fs.labels, np.int64)}, f,
                        protocol=4)
    return paths[0], paths[1]


def load_lab_pickle(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) from one of the lab's bottleneck pickles."""
    try:
        data = safepickle.load_file(path)  # plain data only: these files come from the web
        features, labels = np.asarray(data["features"]), np.asarray(data["labels"]).ravel()
    except FileNotFoundError:
        raise DatasetError(f"{path} does not exist", "check the file name") from None
    except BottleneckError:
        raise
    except Exception as e:
        raise DatasetError(f"{path} is not a lab bottleneck pickle ({type(e).__name__}: {e})",
                           "it must be a pickled dict with 'features' and 'labels'") from e
    if features.ndim < 2 or features.dtype.kind not in "fiu" or labels.dtype.kind not in "iu":
        raise DatasetError(f"{path}: 'features' must be rows of numbers and 'labels' whole numbers (found "
                           f"{features.dtype} {features.shape} and {labels.dtype} {labels.shape})",
                           "regenerate the file with `bottleneck export-lab`")
    if len(features) != len(labels):
        raise DatasetError(f"{path}: {len(features)} feature rows but {len(labels)} labels", "regenerate the file")
    return features, labels
