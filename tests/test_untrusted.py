"""Data files never run code: a pickle payload at every pickle position of every format
we read is refused, and its side effect never happens."""
from __future__ import annotations

import os
import pickle
import struct
import sys
import types
from unittest import mock

import numpy as np
import pytest

from bottleneck.core import safepickle
from bottleneck.data.datasets import load_dataset
from bottleneck.core.errors import BottleneckError
from bottleneck.cache.labpickle import load_lab_pickle
from bottleneck.bases.pth import load_state_dict
from bottleneck.core.safepickle import RefusedPickle

MAGIC = 0x1950A86A20F9469CFC6C


class MkdirPayload:
    """Unpickling this creates a folder: the side effect we look for."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


class ExecPayload(MkdirPayload):
    def __reduce__(self):
        import builtins

        return (builtins.exec, (f"import os; os.mkdir({self.marker!r})",))


PAYLOADS = [MkdirPayload, ExecPayload]


class _StorageRef:
    pass


class _Tensor:
    def __reduce__(self):
        return (_FAKE_TORCH["torch._utils"]._rebuild_tensor_v2, (_StorageRef(), 0, (2, 2), (2, 1), False, {}))


def _fake_torch() -> dict:
    """Stand-ins named like torch's globals, so that pickle writes the names torch writes."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only pickled, never called")

    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    return {"torch": torch, "torch._utils": utils}


_FAKE_TORCH = _fake_torch()


def _pth(path, magic=MAGIC, version=1001, sys_info=None, state=None, keys=None):
    """A legacy-format .pth with one float storage of 4 elements (or a payload anywhere)."""

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _StorageRef):
                return ("storage", _FAKE_TORCH["torch"].FloatStorage, "0", "cpu", 4)
            return None

    with mock.patch.dict(sys.modules, _FAKE_TORCH), open(path, "wb") as f:
        for obj in (magic, version, sys_info if sys_info is not None else {"little_endian": True}):
            pickle.dump(obj, f, protocol=2)
        Pickler(f, protocol=2).dump(state if state is not None else {"w": _Tensor()})
        pickle.dump(keys if keys is not None else ["0"], f, protocol=2)
        f.write(struct.pack("<q", 4) + np.arange(4, dtype=np.float32).tobytes())
    return path


def test_a_well_formed_pth_still_loads(tmp_path):
    state = load_state_dict(_pth(tmp_path / "ok.pth"))
    assert np.array_equal(state["w"], np.arange(4, dtype=np.float32).reshape(2, 2))


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("position", ["magic", "version", "sys_info", "sys_info_value", "state", "state_value",
                                      "state_nested", "keys", "key_item"])
def test_pth_payload_at_every_position_is_refused(tmp_path, payload, position):
    marker = tmp_path / "pwned"
    evil = payload(marker)
    kw = {"magic": dict(magic=evil), "version": dict(version=evil), "sys_info": dict(sys_info=evil),
          "sys_info_value": dict(sys_info={"little_endian": True, "x": evil}),
          "state": dict(state=evil), "state_value": dict(state={"w": evil}),
          "state_nested": dict(state={"w": {"inner": [1, evil]}}),
          "keys": dict(keys=evil), "key_item": dict(keys=["0", evil])}[position]
    path = _pth(tmp_path / "evil.pth", **kw)
    with pytest.raises(BottleneckError, match="refused to load the global (posix.mkdir|__builtin__.exec)"):
        load_state_dict(path)
    assert not marker.exists()


def test_pth_tensor_outside_its_storage_is_refused(tmp_path):
    """as_strided over a crafted shape would read memory beyond the storage."""
    path = _pth(tmp_path / "big.pth")
    data = path.read_bytes()
    # the storage has 4 elements; grow the tensor's declared shape (2, 2) to (2, 200)
    patched = data.replace(b"K\x02K\x02\x86", b"K\x02K\xc8\x86", 1)
    assert patched != data
    path.write_bytes(patched)
    with pytest.raises(BottleneckError, match="does not fit its storage"):
        load_state_dict(path)


def test_pth_storage_larger_than_the_file_is_refused_without_allocating(tmp_path):
    path = _pth(tmp_path / "huge.pth")
    data = path.read_bytes()
    count_at = len(data) - 16 - 8
    path.write_bytes(data[:count_at] + struct.pack("<q", 1 << 40) + data[count_at + 8:])
    with pytest.raises(BottleneckError, match="truncated"):
        load_state_dict(path)


def test_pth_pickle_declaring_more_bytes_than_the_file_holds_is_refused_without_allocating(tmp_path):
    """A pickle inside a .pth is read from the open file: its declared lengths are checked as those
    of a pickle given as bytes are (a BINBYTES8 of 2^40 bytes was a MemoryError before)."""
    path = tmp_path / "w.pth"
    path.write_bytes(b"\x80\x02\x8e" + struct.pack("<Q", 1 << 40) + b"abc")
    with pytest.raises(BottleneckError, match="not a whole pickle"):
        load_state_dict(path)
    os.mkfifo(tmp_path / "pipe.pth")
    with pytest.raises(BottleneckError, match="FIFO"):
        load_state_dict(tmp_path / "pipe.pth")


def _gtsrb_pickles(root, payload_at, evil):
    root.mkdir(parents=True)
    good = {"features": np.zeros((3, 32, 32, 3), np.uint8), "labels": np.array([0, 1, 2])}
    for split in ("train", "test"):
        data = dict(good)
        if split == payload_at[0]:
            if payload_at[1] == "top":
                data = evil
            elif payload_at[1] == "value":
                data["features"] = evil
            else:
                data["sizes"] = [np.zeros(2), {"deep": evil}]
        with open(root / f"{split}.p", "wb") as f:
            pickle.dump(data, f)


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("where", [("train", "top"), ("train", "value"), ("test", "nested")])
def test_gtsrb_lab_pickles_with_a_payload_are_refused(tmp_path, payload, where):
    marker = tmp_path / "pwned"
    _gtsrb_pickles(tmp_path / "signs", where, payload(marker))
    with pytest.raises(RefusedPickle, match=f"{where[0]}.p: refused to load the global"):
        load_dataset(f"folder:{tmp_path / 'signs'}")
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("where", ["top", "value", "nested"])
def test_lab_bottleneck_pickle_with_a_payload_is_refused(tmp_path, payload, where):
    marker = tmp_path / "pwned"
    evil = payload(marker)
    data = {"top": evil, "value": {"features": evil, "labels": np.zeros(2)},
            "nested": {"features": np.zeros((2, 1, 1, 4)), "labels": np.zeros(2), "meta": ({"x": [evil]},)}}[where]
    path = tmp_path / "vgg_cifar10_100_bottleneck_features_train.p"
    with open(path, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(RefusedPickle, match="refused to load the global"):
        load_lab_pickle(path)
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("file", ["batches.meta", "data_batch_1", "test_batch"])
def test_cifar_python_batches_with_a_payload_are_refused(tmp_path, payload, file):
    marker = tmp_path / "pwned"
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batch = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1]}
    contents = {"batches.meta": {"label_names": ["a", "b"]}, "data_batch_1": batch, "test_batch": batch}
    contents[file] = {**contents[file], "batch_label": payload(marker)}
    for name, data in contents.items():
        with open(root / name, "wb") as f:
            pickle.dump(data, f, protocol=2)
    with pytest.raises(RefusedPickle, match=f"{file}: refused to load the global"):
        load_dataset(f"folder:{root}")
    assert not marker.exists()


def test_plain_data_of_every_protocol_and_numpy_generation_loads():
    value = {"a": np.arange(6, dtype=np.uint8).reshape(2, 3), "f": np.float32(1.5), "s": np.array(["x", "yy"]),
             "b": b"bytes", "set": {1, 2}, "nested": [(1, 2.0), {"k": None}]}
    for protocol in (2, 3, 4, 5):
        blob = pickle.dumps(value, protocol=protocol)
        out = safepickle.load(blob)
        assert np.array_equal(out["a"], value["a"]) and out["f"] == value["f"] and out["b"] == b"bytes"
        assert out["set"] == {1, 2} and out["nested"] == value["nested"] and list(out["s"]) == ["x", "yy"]
    # numpy 1.x wrote numpy.core.multiarray where numpy 2 writes numpy._core.multiarray
    # (protocol 2 names globals as plain lines, so the name can be swapped in place)
    old = pickle.dumps(value, protocol=2).replace(b"numpy._core", b"numpy.core")
    assert b"numpy.core.multiarray" in old and np.array_equal(safepickle.load(old)["a"], value["a"])


def test_object_arrays_and_other_codecs_are_refused():
    with pytest.raises(RefusedPickle, match="dtype object"):
        safepickle.load(pickle.dumps(np.array([1, "a"], dtype=object)))

    class Rot13:
        def __reduce__(self):
            import _codecs

            return (_codecs.encode, ("text", "rot13"))

    with pytest.raises(RefusedPickle, match="rot13"):
        safepickle.load(pickle.dumps(Rot13(), protocol=2))


@pytest.mark.parametrize("filtered", [True, False])
def test_archives_cannot_write_outside_their_folder(tmp_path, monkeypatch, filtered):
    """A tar member named ../x (or a link out) is refused, with and without tarfile's filters."""
    import io
    import tarfile

    from bottleneck.core.paths import data_home
    from bottleneck.data.datasets import extract_archive

    if not filtered:  # the fallback for Pythons older than 3.10.12
        monkeypatch.delattr(tarfile, "data_filter")
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(BottleneckError, match="evil.tar.gz"):
        extract_archive(archive)
    assert not (data_home() / "archives" / "escaped.txt").exists()  # where ../ would have put it
    assert not list(data_home().rglob("escaped.txt"))
