"""Hardening of the newer surfaces (issue 25): each defect found by trying them as an attacker
and a careless user would, kept as a test. Grouped by kind: writes outside the place named,
inputs that hang, inputs that exhaust memory, data followed out of its file, tracebacks
instead of clear errors, text from data, switches that must not be live for users.

Hanging inputs run under ``finishes_within``: a regression fails the test instead of hanging it."""
from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from bottleneck.cache.store import DamagedCache, read_features
from bottleneck.core.errors import BottleneckError, DatasetError
from bottleneck.core.files import atomic_output, check_output, inside_folder
from bottleneck.core.text import printable, spreadsheet_safe
from bottleneck.core.userfiles import UnsafeFile, read_bytes
from bottleneck.data import datasets
from bottleneck.data.images import BadImage, _budget_from_environment, load_image
from bottleneck.data.labelmaps import read_label_map
from bottleneck.deploy.formats import META_NAME, read_meta
from bottleneck.deploy.predict import check_csv_output, csv_cells
from bottleneck.report import html as pages
from bottleneck.report.results import ResultsDir, write_tables

KEY = "0123456789ab"


def finishes_within(seconds: float, call):
    """Run ``call`` in a thread; fail (rather than hang) when it has not returned in time."""
    out: dict = {}

    def target():
        try:
            out["value"] = call()
        except BaseException as e:  # handed to the test
            out["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s (it would hang)"
    if "error" in out:
        raise out["error"]
    return out.get("value")


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------- a results folder made by hand

def make_row(key: str = KEY, **changes) -> dict:
    row = {"base": "tiny_cnn", "dataset": "cifar10", "head": "logreg", "seed": 0, "per_class": 10,
           "target": "class", "task": "single_label", "metric": "accuracy", "score": 0.5, "accuracy": 0.5,
           "metrics": {"accuracy": 0.5}, "finished": "2026-12-06T00:00:00+00:00", "run_key": key}
    row.update(changes)
    return row


def make_results(root: Path, names=("cat", "dog"), **npz_changes) -> ResultsDir:
    results = ResultsDir(root)
    y = np.array([0, 1, 1, 0])
    arrays = dict(y_true=y, y_pred=np.array([0, 1, 0, 0]), outputs=np.zeros((4, 2), np.float32),
                  names=np.array(names), source_ids=np.array(["a", "b", "c", "d"]),
                  thumbs=np.zeros((2, 8, 8, 3), np.uint8), thumb_rows=np.array([0, 2]), history=json.dumps({}))
    arrays.update(npz_changes)
    np.savez(results.rows_dir / f"{KEY}.npz", **arrays)
    (results.rows_dir / f"{KEY}.json").write_text(json.dumps(make_row()))
    return results


# ---------------------------------------------------------------- writes outside the place named

def test_report_never_builds_paths_from_a_rows_run_key(tmp_path):
    results = make_results(tmp_path / "R")
    row = make_row(run_key="../../outside")  # the key a row *says* it has is not used: its file name is
    (results.rows_dir / f"{KEY}.json").write_text(json.dumps(row))
    (results.rows_dir / "evil..json").write_text(json.dumps(make_row()))  # a name that is no run key: ignored
    pages.write_report(results.out)
    assert (results.out / "plots" / KEY / "confusion.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R"]
    assert not (results.out / "outside").exists()


def test_report_refuses_a_symlinked_plots_folder(tmp_path):
    results = make_results(tmp_path / "R")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (results.out / "plots").mkdir()
    (results.out / "plots" / KEY).symlink_to(elsewhere)
    with pytest.raises(BottleneckError, match="symlink"):
        pages.write_report(results.out)
    assert list(elsewhere.iterdir()) == []


def test_a_picture_planted_as_a_symlink_is_replaced_not_written_through(tmp_path):
    results = make_results(tmp_path / "R")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    folder = inside_folder(results.out, "plots", KEY)
    (folder / "confusion.png").symlink_to(victim)
    pages.write_report(results.out)
    assert victim.read_text() == "keep me"
    assert not (folder / "confusion.png").is_symlink()


def test_report_does_not_embed_a_planted_link_to_another_file(tmp_path):
    results = make_results(tmp_path / "R")
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"SECRET")
    folder = inside_folder(results.out, "plots", KEY)
    (folder / "zz.png").symlink_to(secret)
    page = pages.write_report(results.out, draw=False).read_text()
    assert "U0VDUkVU" not in page  # base64 of SECRET


def test_atomic_output_uses_a_fresh_name_and_never_follows_a_planted_link(tmp_path):
    target, victim = tmp_path / "model.keras", tmp_path / "victim"
    victim.write_text("keep me")
    for planted in (tmp_path / ".model.keras.tmp.keras", tmp_path / "model.keras.tmp"):
        planted.symlink_to(victim)  # the names older versions wrote through
    target.symlink_to(victim)
    with atomic_output(target, suffix=".keras") as tmp:
        assert tmp.parent == tmp_path and not tmp.is_symlink()
        tmp.write_text("new")
    assert victim.read_text() == "keep me" and target.read_text() == "new" and not target.is_symlink()


def test_two_writers_of_one_new_output_one_wins_whole_and_the_other_is_told(tmp_path):
    target = tmp_path / "m.keras"
    with pytest.raises(FileExistsError):
        with atomic_output(target, replace=False) as tmp:
            tmp.write_text("second")
            target.write_text("first, finished meanwhile")
    assert target.read_text() == "first, finished meanwhile"
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary left


@pytest.mark.parametrize("case", ["exists", "folder", "under a file", "h5"])
def test_check_output_refuses_before_any_work(tmp_path, case):
    out = tmp_path / "model.keras"
    if case == "exists":
        out.write_text("an earlier model")
    elif case == "folder":
        out.mkdir()
    elif case == "under a file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "model.keras"
    else:
        out = tmp_path / "model.h5"
    with pytest.raises(BottleneckError) as e:
        check_output(out, suffixes=(".keras",), what="model")
    assert "--out" in str(e.value) and "what to do" in str(e.value)
    if case == "exists":
        assert out.read_text() == "an earlier model"
        assert check_output(out, overwrite=True, suffixes=(".keras",)) == out


def test_export_refuses_a_bad_out_before_training(tmp_path, capsys):
    from bottleneck.cli import main

    (tmp_path / "model.keras").write_text("an earlier model")
    for out, format in (("model.keras", []), ("model.h5", []), ("model.h5", ["--format", "keras"]),
                        ("model.keras", ["--format", "onnx"])):
        code = main(["export", "--base", "tiny_cnn", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nothing"),
                     "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / out), *format])
        assert code == 2
    err = capsys.readouterr().err
    assert "exists; it is kept" in err and "says no model format" in err and "must end in .keras" in err
    assert "must end in .onnx" in err
    assert not (tmp_path / "c").exists()  # nothing planned, nothing extracted
    assert (tmp_path / "model.keras").read_text() == "an earlier model"


def test_predict_csv_may_not_be_the_model_or_an_input(tmp_path):
    model, image = tmp_path / "m.keras", tmp_path / "a.jpg"
    model.write_bytes(b"model")
    Image.new("RGB", (8, 8)).save(image)
    for csv_path, paths in ((model, [image]), (image, [image]), (tmp_path / "x.jpg", [tmp_path])):
        with pytest.raises(BottleneckError):
            check_csv_output(csv_path, model, paths)
    assert model.read_bytes() == b"model"
    assert check_csv_output(tmp_path / "out.csv", model, [image, tmp_path]) == tmp_path / "out.csv"


# ---------------------------------------------------------------- inputs that hang

def test_a_fifo_image_is_a_bad_image_not_a_hang(tmp_path):
    path = fifo(tmp_path / "cat.jpg")
    with pytest.raises(BadImage, match="FIFO"):
        finishes_within(10, lambda: load_image(path, 32))


def test_a_fifo_label_map_is_a_clear_error(tmp_path):
    path = fifo(tmp_path / "map.png")
    with pytest.raises(DatasetError, match="FIFO"):
        finishes_within(10, lambda: read_label_map(path, None, 3, 255))


def test_a_fifo_result_row_is_ignored_with_a_warning(tmp_path, caplog):
    results = make_results(tmp_path / "R")
    fifo(results.rows_dir / "aaaaaaaaaaaa.json")
    with caplog.at_level(logging.WARNING, logger="bottleneck"):
        rows = finishes_within(10, results.rows)
    assert [r["run_key"] for r in rows] == [KEY]
    assert "FIFO" in caplog.text


def test_an_hdf5_external_link_to_a_fifo_is_refused_unread(tmp_path):
    target = fifo(tmp_path / "pipe.h5")
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["labels"] = h5py.ExternalLink(str(target), "/labels")
        f.attrs.update(format="bottleneck-features", complete=True)
    with pytest.raises(DamagedCache, match="link to"):
        finishes_within(10, lambda: read_features(path, load=False))


def test_a_fifo_as_a_feature_file_is_refused(tmp_path):
    path = fifo(tmp_path / "f.h5")
    with pytest.raises(UnsafeFile, match="FIFO"):
        finishes_within(10, lambda: read_features(path))


# ---------------------------------------------------------------- inputs that exhaust memory

def crafted_cache(path: Path, rows: int, **extra) -> Path:
    """A 'feature file' whose datasets declare ``rows`` rows but store none (chunked, never written)."""
    with h5py.File(path, "w") as f:
        f.create_dataset("features", shape=(rows, 64), maxshape=(None, 64), chunks=(256, 64), dtype="f4")
        f.create_dataset("labels", shape=(rows,), maxshape=(None,), chunks=(4096,), dtype="i8")
        for k in ("source_ids", "groups", "digests"):
            f.create_dataset(k, shape=(rows,), maxshape=(None,), chunks=(4096,), dtype="S8")
        if rows <= 1000:  # small: stored, as a real file's are
            for k in ("features", "labels", "source_ids", "groups", "digests"):
                f[k][...] = np.zeros(f[k].shape, f[k].dtype)
        f["class_names"] = np.array([b"a", b"b"])
        f.attrs.update(format="bottleneck-features", format_version=2, complete=True, n_samples=rows,
                       settings=json.dumps({"base": "x", "dataset": "y", "split": "train"}), checksum="0", **extra)
    return path


@pytest.mark.parametrize("rows", [2 * 10**7, 10**9])
def test_declared_rows_beyond_the_stored_bytes_are_refused_before_allocating(tmp_path, rows):
    path = crafted_cache(tmp_path / "f.h5", rows)
    assert path.stat().st_size < 100_000
    for load in (False, True):
        with pytest.raises(DamagedCache, match="declares"):
            read_features(path, load=load)


def test_an_inflating_model_metadata_member_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(META_NAME, b" " * (17 << 20))  # inflates to 17 MB from a few KB
    assert path.stat().st_size < 100_000
    with pytest.raises(UnsafeFile, match="over the 16 MB"):
        read_meta(path)


def test_an_inflating_npz_member_of_a_results_row_is_refused(tmp_path, monkeypatch, caplog):
    results = make_results(tmp_path / "R", thumbs=np.zeros((64, 64, 64, 3), np.uint8))  # 786 KB of zeros
    monkeypatch.setattr(pages, "NPZ_LIMIT", 100_000)
    with pytest.raises(BottleneckError, match="over"):
        pages._load(results, KEY)
    with caplog.at_level(logging.WARNING, logger="bottleneck"):
        pages.write_report(results.out)  # the report is still written, without that run's pictures
    assert "not drawn" in caplog.text


def test_npz_arrays_declaring_more_than_they_hold_are_refused(tmp_path):
    results = make_results(tmp_path / "R")
    path = results.rows_dir / f"{KEY}.npz"
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (10**9,)})
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("huge.npy", buffer.getvalue() + b"\0" * 64)
    with pytest.raises(BottleneckError, match="declares"):
        pages._load(results, KEY)


@pytest.mark.parametrize("kind", ["large", "device"])
def test_huge_or_endless_image_files_are_refused_unread(tmp_path, kind):
    path = tmp_path / "big.jpg"
    if kind == "large":
        with open(path, "wb") as f:
            f.truncate(300 << 20)  # sparse: 300 MB that take no disk
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(BadImage, match="over the 256 MB" if kind == "large" else "character device"):
        finishes_within(10, lambda: load_image(path))


def test_an_archive_that_unpacks_beyond_its_budget_is_refused_unwritten(tmp_path, monkeypatch):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("bomb/zeros.bin")
        info.size = 4 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    monkeypatch.setattr(datasets, "UNPACK_BUDGET", 1 << 20)
    with pytest.raises(DatasetError, match="would unpack to more than"):
        datasets.extract_archive(archive)
    assert not any((datasets.data_home() / "archives").glob("bomb-*"))


# ---------------------------------------------------------------- data followed out of its file

def test_hdf5_files_reaching_into_other_files_are_refused(tmp_path):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["labels"] = np.arange(10)
    path = crafted_cache(tmp_path / "virtual.h5", 10)
    with h5py.File(path, "a") as f:
        del f["labels"]
        layout = h5py.VirtualLayout(shape=(10,), dtype="i8")
        layout[:] = h5py.VirtualSource(str(other), "labels", shape=(10,))
        f.create_virtual_dataset("labels", layout)
    with pytest.raises(DamagedCache, match="virtual dataset"):
        read_features(path, load=False)
    path = crafted_cache(tmp_path / "external.h5", 10)
    with h5py.File(path, "a") as f:
        del f["labels"]
        f.create_dataset("labels", shape=(10,), dtype="i8", external=[(str(tmp_path / "raw.bin"), 0, 80)])
    with pytest.raises(DamagedCache, match="external files"):
        read_features(path, load=False)


# ---------------------------------------------------------------- tracebacks instead of clear errors

@pytest.mark.parametrize("content", [
    "[1, 2]", "[" * 100_000 + "]" * 100_000, json.dumps(make_row(score="0.9")), json.dumps(make_row(seed=None)),
    json.dumps({k: v for k, v in make_row().items() if k != "base"}), json.dumps(make_row(metrics=[0.5])),
    "{not json",
])
def test_malformed_result_rows_are_named_and_left_out(tmp_path, caplog, content):
    results = make_results(tmp_path / "R")
    (results.rows_dir / "bbbbbbbbbbbb.json").write_text(content)
    with caplog.at_level(logging.WARNING, logger="bottleneck"):
        rows = results.rows()
    assert [r["run_key"] for r in rows] == [KEY]
    assert "bbbbbbbbbbbb.json" in caplog.text
    assert results.get("bbbbbbbbbbbb") is None  # a run whose row is unusable is made again


@pytest.mark.parametrize("arrays", [{"y_true": np.array([0, 7, 1, 0])}, {"y_pred": np.array([0, -1, 0, 0])},
                                    {"thumb_rows": np.array([0, 99])}, {"history": "[1, 2]"}])
def test_result_arrays_out_of_range_leave_the_pictures_out_not_the_report(tmp_path, caplog, arrays):
    results = make_results(tmp_path / "R", **arrays)
    with caplog.at_level(logging.WARNING, logger="bottleneck"):
        page = pages.write_report(results.out)
    assert page.is_file() and "not drawn" in caplog.text


def test_result_arrays_of_objects_are_never_unpickled(tmp_path, caplog):
    results = make_results(tmp_path / "R")
    np.save(results.rows_dir / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(results.rows_dir / f"{KEY}.npz", "a") as z:
        z.write(results.rows_dir / "x.npy", "objects.npy")
    with pytest.raises(BottleneckError, match="objects"):
        pages._load(results, KEY)


@pytest.mark.parametrize("decl, message", [
    ({"groups": ["a", "b"]}, "groups is"), ({"labels": "a b"}, "labels is"), ({"loss": 3}, "loss is"),
    ({"ranges": {"x": [1, 0]}}, "ranges is"), ({"boxes": "yes"}, "boxes is"), ({"group": {}}, "means nothing"),
])
def test_task_json_of_wrong_types_is_a_clear_error(tmp_path, decl, message):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    kind = "regression" if set(decl) & {"ranges", "boxes"} else "multilabel"
    (tmp_path / "t.csv").write_text("file,x\na.png,0.5\n" if kind == "regression" else "file,labels\na.png,a\n")
    (tmp_path / "t.task.json").write_text(json.dumps(decl))
    with pytest.raises(DatasetError, match=message):
        datasets.load_dataset(f"{kind}:{tmp_path / 't.csv'}")


@pytest.mark.parametrize("codes, message", [("\n".join(f"c{i}" for i in range(300)), "8-bit"), ("", "no class"),
                                            ("Void\n", "no class but Void"), ("a\nb\na\n", "twice")])
def test_bad_codes_txt_is_a_clear_error(tmp_path, codes, message):
    for part in ("images", "labels"):
        (tmp_path / part).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "a.png")
    Image.new("L", (8, 8)).save(tmp_path / "labels" / "a.png")
    (tmp_path / "codes.txt").write_text(codes)
    with pytest.raises(DatasetError, match=message):
        datasets.load_dataset(f"segfolder:{tmp_path}")


def model_file(path: Path, meta) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(META_NAME, json.dumps(meta))
    return path


GOOD_META = {"format": "bottleneck-model", "task": "single_label", "input": {"size": 32},
             "output_names": ["cat", "dog"]}


@pytest.mark.parametrize("change, message", [
    ({"output_names": None}, "output names"), ({"output_names": "cat"}, "output names"),
    ({"task": "captioning"}, "task 'captioning'"), ({"task": "segmentation"}, "canvas"), ({"task": "detection"}, "canvas"),
    ({"task": "detection", "input": {"size": 64, "canvas": [64, 64]}}, "non-maximum suppression"),
    ({"task": "detection", "input": {"size": 64, "canvas": [64, 64]},
      "nms": {"iou_threshold": 2, "score_threshold": 0.1, "max_detections": 10, "pre_nms": 10}}, "non-maximum"),
    ({"task": "segmentation", "input": {"size": 64, "canvas": [64, "a"]}}, "canvas"),
    ({"task": "segmentation", "input": {"size": 96, "canvas": [64, 64]}}, "canvas"),
    ({"input": {"size": 10**6}}, "input size"),
    ({"input": [32]}, "input size"), ({"task": "multi_label", "independent": 1, "groups": {}}, "names 2 outputs"),
])
def test_bad_model_metadata_is_a_clear_error(tmp_path, change, message):
    with pytest.raises(BottleneckError, match=message):
        read_meta(model_file(tmp_path / "m.keras", {**GOOD_META, **change}))
    with pytest.raises(BottleneckError, match="not a usable"):
        read_meta(model_file(tmp_path / "l.keras", [GOOD_META]))


def test_hdf5_of_object_types_or_nested_settings_is_a_clear_error(tmp_path):
    path = crafted_cache(tmp_path / "f.h5", 0)
    with h5py.File(path, "a") as f:
        del f["labels"]
        f.create_dataset("labels", shape=(0,), dtype=h5py.vlen_dtype(np.int64))
    with pytest.raises(DamagedCache, match="holds object values"):
        read_features(path)
    path = crafted_cache(tmp_path / "g.h5", 0)
    with h5py.File(path, "a") as f:
        f.attrs["settings"] = json.dumps({"base": {"nested": {"deeper": 1}}})
    with pytest.raises(DamagedCache, match="not an object of names"):
        read_features(path)


def test_a_bad_decode_budget_is_a_clear_error_not_an_import_traceback(monkeypatch):
    monkeypatch.setenv("BOTTLENECK_DECODE_BUDGET_MB", "abc")
    with pytest.raises(BottleneckError, match="BOTTLENECK_DECODE_BUDGET_MB='abc'"):
        _budget_from_environment()
    env = {**os.environ, "BOTTLENECK_DECODE_BUDGET_MB": "abc"}
    done = subprocess.run([sys.executable, "-c", "import bottleneck.data.images"], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------- text from data is data

def test_class_names_that_look_like_math_text_draw(tmp_path):
    results = make_results(tmp_path / "R", names=np.array(["$\\foo$", "$x^{$"]))
    pages.write_report(results.out)
    assert (results.out / "plots" / KEY / "confusion.png").stat().st_size > 1000


def test_control_characters_are_escaped_for_the_terminal():
    shown = printable("cat\x1b]0;pwned\x07\x1b[31m\u009b2J\ttab\nline")
    assert "\x1b" not in shown and "\x07" not in shown and "\u009b" not in shown and "\t" not in shown
    assert "\\x1b" in shown and shown.endswith("\nline")
    assert printable("Zürich ± 0.5 → ok") == "Zürich ± 0.5 → ok"


def test_formula_cells_are_quoted_for_spreadsheets(tmp_path):
    assert [spreadsheet_safe(c) for c in ("=1+1", "+x", "-x", "@x", "cat", 0.5, -1)] == \
           ["'=1+1", "'+x", "'-x", "'@x", "cat", 0.5, -1]
    write_tables([make_row(base="=HYPERLINK(\"http://x\")")], tmp_path)
    assert "'=HYPERLINK" in (tmp_path / "results.csv").read_text()

    class Model:
        meta = {"output_names": ["=cmd|' /C calc'!A0", "b"], "task": "single_label"}

    cells = csv_cells(Model(), {"path": "-rf.jpg", "top": [("=cmd|' /C calc'!A0", 0.9), ("b", 0.1)]}, top_k=2)
    assert cells[:3] == ["'-rf.jpg", "'=cmd|' /C calc'!A0", "0.900000"]


# ---------------------------------------------------------------- switches that must not be live

def test_fault_injection_is_inert_unless_the_test_suite_arms_it():
    env = {k: v for k, v in os.environ.items() if k != "BOTTLENECK_TEST_FAULTS"}
    env["BOTTLENECK_FAULT"] = "start"
    code = ("import logging; logging.basicConfig()\n"
            "from bottleneck.core import faults\nfaults.checkpoint('start')\nprint('alive')")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "alive" in done.stdout
    assert "is ignored" in done.stderr
    armed = subprocess.run([sys.executable, "-c", code], env={**env, "BOTTLENECK_TEST_FAULTS": "1"},
                           capture_output=True, text=True, timeout=60)
    assert armed.returncode == -9  # what the tests rely on still works when armed


def test_read_bytes_refuses_what_is_not_a_regular_file(tmp_path):
    with pytest.raises(UnsafeFile, match="folder"):
        read_bytes(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_bytes(tmp_path / "missing")
