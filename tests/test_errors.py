"""Every user error is a clear error (error: + what to do:, exit 2, no traceback), and the
small things a user trips on: datasets without a test split, what was drawn, unused options."""
from __future__ import annotations

import contextlib
import csv
import shutil
import subprocess

import numpy as np
import pytest

from bottleneck.cli import main
from bottleneck.data.datasets import load_dataset
from bottleneck.core.errors import DatasetError
from bottleneck.extraction.run import extract

from .conftest import DATA, copy_cifar_subset

TINY = dict(weights="random", progress=False)


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def _clear(code, err, *needles):
    assert code == 2 and err.startswith("error: ") and "what to do:" in err, err
    for needle in needles:
        assert needle in err, err


@contextlib.contextmanager
def read_only(folder):
    """A folder this process cannot write to, even as root (which ignores permission bits):
    chmod, and the immutable attribute where permissions are not enough."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    immutable = False
    try:
        probe = folder / ".probe"
        try:
            probe.touch()
            probe.unlink()
            subprocess.run(["chattr", "+i", str(folder)], check=True, capture_output=True)
            immutable = True
        except PermissionError:
            pass
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=False)
        folder.chmod(0o755)


def test_read_only_cache_dir(capsys, small_cifar, tmp_path):
    with read_only(tmp_path / "ro") as ro:
        code, _, err = run(capsys, "extract", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                           f"folder:{small_cifar}", "--cache-dir", str(ro), "--quiet")
    _clear(code, err, f"cannot write feature files in --cache-dir {ro}", "a --cache-dir you can write to")


def test_read_only_cache_dir_still_serves_finished_features(small_cifar, tmp_path):
    """A shared, read-only cache of finished features is fine: nothing needs writing."""
    first = extract("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=tmp_path / "ro", **TINY)
    with read_only(tmp_path / "ro"):
        again = extract("tiny_cnn", f"folder:{small_cifar}", "train", 2, cache_dir=tmp_path / "ro", **TINY)
    assert again.info["cached"] and np.array_equal(again.features, first.features)


def test_cache_dir_that_is_a_file(capsys, small_cifar, tmp_path):
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "extract", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--cache-dir", str(tmp_path / "afile"), "--quiet")
    _clear(code, err, "is a file, not a folder")


def _gtsrb_copy(tmp_path):
    root = tmp_path / "gtsrb"
    shutil.copytree(DATA / "gtsrb", root)
    return root


def test_test_csv_with_a_non_numeric_class(tmp_path):
    root = _gtsrb_copy(tmp_path)
    lines = (root / "Test.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[6] = "stop"
    lines[2] = ",".join(cells)
    (root / "Test.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"Test.csv, line 3: ClassId 'stop' is not a class number"):
        load_dataset("gtsrb", tmp_path)


def test_test_csv_with_a_header_only_names_it(capsys, tmp_path):
    root = _gtsrb_copy(tmp_path)
    header = (root / "Test.csv").read_text().splitlines()[0]
    (root / "Test.csv").write_text(header + "\n")
    code, _, err = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset", "gtsrb",
                       "--data-dir", str(tmp_path), "--cache-dir", str(tmp_path / "c"), "--quiet")
    _clear(code, err, "has no split 'test'", "Test.csv has a header but lists no images")


@pytest.mark.parametrize("row", ["../../etc/passwd", "/etc/passwd"])
def test_test_csv_paths_never_leave_the_dataset(tmp_path, row):
    root = _gtsrb_copy(tmp_path)
    with open(root / "Test.csv", "a", newline="") as f:
        csv.writer(f).writerow([30, 30, 1, 1, 29, 29, 0, row])
    with pytest.raises(DatasetError, match="is not a file inside"):
        load_dataset("gtsrb", tmp_path)


@pytest.mark.parametrize("value", ["1.0", "5", "-1", "nan", "ten"])
def test_validation_fraction_out_of_range(capsys, small_cifar, tmp_path, value):
    code, _, err = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--head", "mlp", "--validation-fraction", value,
                       "--cache-dir", str(tmp_path), "--quiet")
    _clear(code, err, "--validation-fraction")
    assert "between 0 and 1" in err or "not a number" in err


def test_validation_fraction_that_cannot_take_effect_is_said(capsys, tmp_path):
    """GTSRB's embedded training images of a class come from one or two tracks: with a draw of
    2 per class from one track, nothing can be held out without splitting a track."""
    code, _, err = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset", "gtsrb",
                       "--data-dir", str(DATA), "--per-class", "1", "--head", "dense", "--epochs", "1",
                       "--validation-fraction", "0.2", "--cache-dir", str(tmp_path), "--eval-per-class", "1")
    assert code == 0 and "note: validation_fraction=0.2 held out nothing" in err, err


def test_nan_features_reaching_a_head_name_the_file_and_image(small_cifar, tmp_path):
    """A damaged weights file (an infinite bias) gives infinite features; no head may train on them."""
    from keras import ops

    from bottleneck.bases.build import build_trunk
    from bottleneck.bases.registry import get_base
    from bottleneck.core.errors import CacheError
    from bottleneck.experiments.run import train

    trunk = build_trunk(get_base("tiny_cnn"), 32, None)
    for w in trunk.weights:
        w.assign(ops.convert_to_numpy(w) + 0.01)  # every kernel differs from the random start, as loading checks
    trunk.get_layer("conv2").bias.assign(np.full(16, np.inf, "float32"))
    path = tmp_path / "nan.weights.h5"
    trunk.save_weights(path)
    with pytest.raises(CacheError, match=r"feature rows with NaN or infinite values \(the first is image train/"):
        train("tiny_cnn", f"folder:{small_cifar}", 2, weights=str(path), cache_dir=tmp_path / "c", progress=False)


def test_info_on_a_folder_or_another_file_never_advises_deleting(capsys, tmp_path):
    (tmp_path / "notes.h5").write_text("my notes")
    for target, said in ((tmp_path, "is a folder, not a feature file"),
                         (tmp_path / "notes.h5", "is not a readable feature cache")):
        code, _, err = run(capsys, "info", str(target))
        _clear(code, err, said)
        assert "delete" not in err.lower()


def test_argparse_errors_have_the_same_shape(capsys):
    code, _, err = run(capsys, "train", "--per-class", "ten")
    _clear(code, err, "not a whole number", "--help")


# ---------------------------------------------------------------- small things


def test_test_fraction_for_a_dataset_without_a_test_split(capsys, tmp_path):
    pets = copy_cifar_subset(tmp_path / "pets", classes=3, train=10, test=1)
    shutil.rmtree(pets / "test")
    code, _, err = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset", f"folder:{pets}",
                       "--cache-dir", str(tmp_path / "c"), "--quiet")
    _clear(code, err, "has no split 'test'", "--test-fraction")
    code, out, _ = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset", f"folder:{pets}",
                       "--test-fraction", "0.2", "--per-class", "5", "--cache-dir", str(tmp_path / "c"), "--quiet")
    assert code == 0 and "15 training images" in out and "on 6 test images" in out, out
    tr = extract("tiny_cnn", f"folder:{pets}", "train", 5, cache_dir=tmp_path / "c", test_fraction=0.2, **TINY)
    te = extract("tiny_cnn", f"folder:{pets}", "test", None, cache_dir=tmp_path / "c", test_fraction=0.2, **TINY)
    assert tr.info["cached"] and te.info["cached"]  # the CLI's run made exactly these files
    assert tr.settings["test_fraction"] == te.settings["test_fraction"] == 0.2
    assert not set(tr.source_ids) & set(te.source_ids)  # never trained on a test image
    assert np.bincount(te.labels).tolist() == [2, 2, 2]  # stratified
    other_seed = extract("tiny_cnn", f"folder:{pets}", "train", 5, 1, cache_dir=tmp_path / "c", test_fraction=0.2,
                         **TINY)
    assert not set(other_seed.source_ids) & set(te.source_ids)  # one held-out set for every draw seed


def test_test_fraction_keeps_groups_whole():
    import dataclasses

    gtsrb = load_dataset("gtsrb", DATA)
    ds = dataclasses.replace(gtsrb, splits={"train": gtsrb.split("train")}).with_test_fraction(0.3)
    train_groups, test_groups = set(ds.split("train").groups), set(ds.split("test").groups)
    assert test_groups and not train_groups & test_groups  # no GTSRB track on both sides


def test_test_fraction_with_a_dataset_that_has_a_test_split(capsys, small_cifar, tmp_path):
    code, _, err = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--test-fraction", "0.2", "--cache-dir", str(tmp_path), "--quiet")
    _clear(code, err, "has its own test split")


def test_train_prints_what_was_drawn(capsys, small_cifar, tmp_path):
    code, out, _ = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--per-class", "100", "--cache-dir", str(tmp_path), "--quiet")
    assert code == 0 and "24 training images (6 per class; 100 asked, the classes have fewer)" in out, out
    code, out, _ = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--per-class", "3", "--cache-dir", str(tmp_path), "--quiet")
    assert code == 0 and "12 training images (3 per class)" in out, out


def test_keras_head_options_with_logreg_are_said(capsys, caplog, small_cifar, tmp_path):
    code, _, _ = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                     f"folder:{small_cifar}", "--per-class", "2", "--epochs", "5", "--learning-rate", "0.1",
                     "--cache-dir", str(tmp_path))
    said = [r.getMessage() for r in caplog.records]
    assert code == 0 and any("--epochs, --learning-rate not used by the logreg head" in m for m in said), said


def test_finetune_refuses_options_it_does_not_use(capsys, small_cifar, tmp_path):
    code, _, err = run(capsys, "finetune", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--layer", "conv1", "--cache-dir", str(tmp_path), "--quiet")
    _clear(code, err, "finetune does not take --layer")


@pytest.mark.parametrize("option", [["--resize", "device"], ["--compute", "bfloat16"],
                                    ["--feed", "processes"], ["--workers", "2"], ["--profile"], ["--views", "4"],
                                    ["--test-views", "2"], ["--stack", ":conv1"]])
def test_finetune_refuses_the_extraction_only_options(capsys, small_cifar, tmp_path, option):
    code, _, err = run(capsys, "finetune", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", *option, "--cache-dir", str(tmp_path), "--quiet")
    _clear(code, err, f"finetune does not take {option[0]}")


def test_finetune_crop_needs_boxes(capsys, small_cifar, tmp_path):
    code, _, err = run(capsys, "finetune", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--crop", "0.1", "--cache-dir", str(tmp_path), "--quiet")
    _clear(code, err, "gives no boxes to crop to")


@pytest.mark.parametrize("command", ["export", "export-lab"])
def test_profile_is_refused_where_nothing_would_print_it(capsys, small_cifar, tmp_path, command):
    code, _, err = run(capsys, command, "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--profile", "--cache-dir", str(tmp_path), "--out",
                       str(tmp_path / "o"), "--quiet")
    _clear(code, err, f"{command} does not take --profile")


@pytest.mark.parametrize("command,option,says", [
    ("export-lab", ["--views", "4"], "export-lab writes the lab's pickles"),
    ("export-lab", ["--stack", ":conv1"], "export-lab writes the lab's pickles"),
    ("extract", ["--test-views", "2"], "--test-views is for train and compare"),
    ("extract", ["--stack", ":conv1"], "--stack is for train and compare"),
    ("train", ["--views", "2", "--target", "segmentation"], "are for pooled features, not segmentation's maps"),
    ("train", ["--pooling", "grid9"], "unknown pooling 'grid9'")])
def test_view_and_stack_options_are_refused_where_they_would_do_nothing_or_harm(capsys, small_cifar, tmp_path, command,
                                                                                  option, says):
    dataset = ["--dataset", "camvid"] if "segmentation" in option else ["--dataset", f"folder:{small_cifar}"]
    code, _, err = run(capsys, command, "--base", "tiny_cnn", "--weights", "random", *dataset, *option,
                       "--cache-dir", str(tmp_path), *(["--out", str(tmp_path / "o")] if command == "export-lab"
                                                       else []), "--quiet")
    _clear(code, err, says)
    assert not list(tmp_path.glob("*.h5"))  # refused before any extraction


def test_train_on_given_feature_files_refuses_extraction_settings(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--features", str(tmp_path / "a.h5"), "--test-features",
                       str(tmp_path / "b.h5"), "--crop", "0.1", "--test-views", "2")
    _clear(code, err, "--features files are trained on the class labels they hold, as they were made")
    assert "drop --crop, --test-views, or train" in err  # names what was given
