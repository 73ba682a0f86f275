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

# The public names, imported when first used (PEP 562): `import bottleneck.feed` in a feed
# worker process then costs what that module needs, not scikit-learn and the rest.
_EXPORTS = {"REGISTRY": "bases", "get_base": "bases", "list_bases": "bases", "list_datasets": "datasets",
            "load_dataset": "datasets", "BottleneckError": "errors", "export": "export", "load_model": "export",
            "extract": "extraction", "plan": "extraction", "run": "extraction", "predict": "predict",
            "DenseHead": "heads", "LogRegHead": "heads", "MLPHead": "heads", "make_head": "heads",
            "compare": "report", "train": "report", "markdown_table": "results", "read_features": "store",
            "verify": "store"}
__version__ = "0.1.0"
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bottleneck' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
