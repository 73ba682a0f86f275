"""bottleneck: cheap, correct, reproducible transfer-learning experiments on images.

Stage 1, ``extract``: run a frozen ImageNet base over a dataset once and cache the
features in HDF5 with a full record of how they were made. Stage 2, ``train`` /
``compare``: fit small heads on the cached features on a CPU in seconds.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _warn_if_pypi_bottleneck() -> None:
    """PyPI's Bottleneck shares this import name; in one environment their files mix."""
    import warnings

    from bottleneck_launcher import clash

    found = clash()
    if found:
        warnings.warn(f"{found}: it shares the import name 'bottleneck' with this project (bottleneck-transfer), "
                      "and their files overwrite each other. Use a separate virtual environment.", RuntimeWarning,
                      stacklevel=3)


try:
    _warn_if_pypi_bottleneck()
except ImportError:  # the launcher module is not installed (running from a source tree): nothing to check
    pass  # keep TensorFlow's C++ chatter (e.g. no-CUDA notices) out of tables

from .bases import REGISTRY, get_base, list_bases  # noqa: E402
from .datasets import list_datasets, load_dataset  # noqa: E402
from .errors import BottleneckError  # noqa: E402
from .export import export, load_model  # noqa: E402
from .extraction import extract, plan, run  # noqa: E402
from .predict import predict  # noqa: E402
from .heads import DenseHead, LogRegHead, MLPHead, make_head  # noqa: E402
from .report import compare, train  # noqa: E402
from .results import markdown_table  # noqa: E402
from .store import read_features, verify  # noqa: E402

__version__ = "0.1.0"
__all__ = ["REGISTRY", "get_base", "list_bases", "list_datasets", "load_dataset", "BottleneckError", "extract", "plan",
           "run", "export", "load_model", "predict",
           "DenseHead", "LogRegHead", "MLPHead", "make_head", "compare", "markdown_table", "train", "read_features",
           "verify"]
