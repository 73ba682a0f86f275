"""bottleneck: cheap, correct, reproducible transfer-learning experiments on images.

Stage 1, ``extract``: run a frozen ImageNet base over a dataset once and cache the
features in HDF5 with a full record of how they were made. Stage 2, ``train`` /
``compare``: fit small heads on the cached features on a CPU in seconds.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's C++ chatter (e.g. no-CUDA notices) out of tables


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
    pass


# The public names, imported when first used (PEP 562): `import bottleneck.extraction.feed` in a
# feed worker process then costs what that module needs, not scikit-learn and the rest.
_EXPORTS = {
    "REGISTRY": "bases.registry", "BaseSpec": "bases.registry", "WeightsSource": "bases.registry",
    "get_base": "bases.registry", "list_bases": "bases.registry", "register_base": "bases.registry",
    "list_datasets": "data.datasets", "load_dataset": "data.datasets", "register_dataset": "data.datasets",
    "register_format": "data.datasets", "Dataset": "data.sources", "Split": "data.sources",
    "BottleneckError": "core.errors",
    "export": "deploy.export", "load_model": "deploy.formats", "predict": "deploy.predict",
    "extract": "extraction.run", "plan": "extraction.plan", "run": "extraction.run",
    "DenseHead": "learn.heads", "LogRegHead": "learn.heads", "MLPHead": "learn.heads", "make_head": "learn.heads",
    "register_head": "learn.heads", "make_semi_head": "learn.semi", "SEMI_HEADS": "learn.semi",
    "compare": "experiments.grid", "train": "experiments.run", "markdown_table": "report.results",
    "read_features": "cache.store", "verify": "cache.store",
    "detect_then_classify": "experiments.two_stage", "coco_metrics": "core.boxes",
}
# Modules the documentation has named as `bottleneck.<name>` since before the subpackages.
_MODULES = {"cluster": "extraction.ray_engine", "finetune": "experiments.finetune", "labpickle": "cache.labpickle",
            "tasks": "core.tasks", "safepickle": "core.safepickle"}

__version__ = "0.1.0"
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    import importlib

    if name in _MODULES:
        value = importlib.import_module(f".{_MODULES[name]}", __name__)
    elif name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        raise AttributeError(f"module 'bottleneck' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
