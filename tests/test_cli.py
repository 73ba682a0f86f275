"""The CLI: exit codes, messages without tracebacks, and a tiny end-to-end compare."""
from __future__ import annotations

import csv
import json

import h5py
import pytest

from bottleneck.cli import main

from .conftest import DATA, REPO


def run(capsys, *argv):
    try:
        code = main(list(argv))
    except SystemExit as e:  # argparse rejects bad arguments this way
        code = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_bases_lists_the_registry(capsys):
    from bottleneck.bases.registry import REGISTRY

    code, out, _ = run(capsys, "bases")
    assert code == 0
    for name in REGISTRY:
        assert f"| {name} |" in out
    assert "| efficientnet_lite0 | 224 | 32 | 1280 |" in out and "| yes |" in out


def test_datasets_says_where(capsys):
    code, out, _ = run(capsys, "datasets", "--data-dir", str(DATA))
    assert code == 0 and str(DATA / "cifar10") in out and str(DATA / "gtsrb") in out


@pytest.mark.parametrize("argv,message", [
    (["extract", "--base", "resnet_50", "--dataset", "cifar10"], "did you mean 'resnet50'"),
    (["extract", "--base", "vgg16", "--dataset", "cifar100"], "did you mean 'cifar10'"),
    (["train", "--base", "tiny_cnn", "--dataset", "cifar10", "--per-class", "0"], "must be at least 1"),
    (["train", "--base", "tiny_cnn", "--dataset", "cifar10", "--per-class", "-3"], "must be at least 1"),
    (["train", "--base", "tiny_cnn", "--dataset", "cifar10", "--per-class", "ten"], "not a whole number"),
    (["extract", "--base", "inception_v3", "--dataset", "cifar10", "--image-size", "32", "--weights", "random"],
     "minimum of 75"),
    (["extract", "--base", "tiny_cnn", "--dataset", "cifar10", "--weights", "random", "--layer", "conv7"],
     "has no layer 'conv7'"),
    (["extract", "--base", "vgg16", "--dataset", "cifar10"], "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    (["info", "does-not-exist.h5"], "does not exist"),
])
def test_bad_input_exits_2_with_a_clear_message(capsys, tmp_path, argv, message):
    argv = argv + (["--data-dir", str(DATA), "--cache-dir", str(tmp_path)] if argv[0] != "info" else [])
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_missing_data_dir(capsys, tmp_path):
    code, _, err = run(capsys, "extract", "--base", "tiny_cnn", "--weights", "random", "--dataset", "gtsrb",
                       "--data-dir", str(tmp_path))
    assert code == 2 and "dataset gtsrb not found" in err and "what to do" in err


def test_info_rejects_non_hdf5_and_verify_catches_tampering(capsys, tmp_path, small_cifar):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    code, _, err = run(capsys, "info", str(junk))
    assert code == 2 and "not a readable feature cache" in err
    code, out, _ = run(capsys, "extract", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--per-class", "2", "--cache-dir", str(tmp_path / "c"), "--quiet")
    assert code == 0 and "extracted 8 images" in out
    (path,) = (tmp_path / "c").glob("*.h5")
    code, out, _ = run(capsys, "info", str(path), "--verify")
    assert code == 0 and "checksum         ok" in out and "tiny_cnn" in out and "per_class        2" in out
    with h5py.File(path, "r+") as f:
        f["features"][1, 1] = 123.0
    code, _, err = run(capsys, "info", str(path), "--verify")
    assert code == 3 and "MISMATCH" in err


def test_compare_end_to_end_and_rerun_is_identical(capsys, tmp_path, small_cifar):
    argv = ["compare", "--bases", "tiny_cnn", "--datasets", f"folder:{small_cifar}", "--per-class", "2,4",
            "--seeds", "0,1", "--weights", "random", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"),
            "--quiet"]
    code, first, _ = run(capsys, *argv)
    assert code == 0 and "| tiny_cnn |" in first and " ± " in first and "N=2" in first and "N=4" in first
    rows = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert len(rows) == 4 and {r["seed"] for r in rows} == {"0", "1"}
    for key in ("accuracy", "extract_seconds", "images_per_second", "train_seconds", "weights", "image_size"):
        assert key in rows[0]
    assert json.loads((tmp_path / "r" / "results.json").read_text())[0]["base"] == "tiny_cnn"
    code, second, _ = run(capsys, *argv)
    assert code == 0 and "extracted 0 images" in second and "everything came from the feature cache" in second
    table = lambda text: text.split("\n\n")[0]
    assert table(first) == table(second)
    again = list(csv.DictReader(open(tmp_path / "r" / "results.csv")))
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in rows]


def test_train_prints_accuracy(capsys, tmp_path, small_cifar):
    code, out, _ = run(capsys, "train", "--base", "tiny_cnn", "--weights", "random", "--dataset",
                       f"folder:{small_cifar}", "--per-class", "3", "--head", "dense", "--epochs", "2",
                       "--cache-dir", str(tmp_path), "--quiet")
    assert code == 0 and "dense head: accuracy" in out and "12 training images" in out


def test_console_entry_point_runs_as_a_module():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bottleneck", "--help"], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0 and "compare" in out.stdout


def test_train_from_feature_files_refuses_mismatches(capsys, tmp_path, small_cifar):
    common = ["--weights", "random", "--dataset", f"folder:{small_cifar}", "--cache-dir", str(tmp_path), "--quiet"]
    assert run(capsys, "extract", "--base", "tiny_cnn", "--per-class", "3", *common)[0] == 0
    assert run(capsys, "extract", "--base", "tiny_cnn", "--split", "test", *common)[0] == 0
    assert run(capsys, "extract", "--base", "tiny_cnn", "--split", "test", "--image-size", "16", *common)[0] == 0
    train_file = next(tmp_path.glob("*_train_*.h5"))
    from bottleneck import read_features

    by_size = {read_features(p, load=False).settings["image_size"]: p for p in tmp_path.glob("*_test_*.h5")}
    code, out, _ = run(capsys, "train", "--features", str(train_file), "--test-features", str(by_size[32]))
    assert code == 0 and "tiny_cnn on folder:" in out and "accuracy" in out
    code, _, err = run(capsys, "train", "--features", str(train_file), "--test-features", str(by_size[32]),
                       "--base", "vgg16")
    assert code == 2 and "holds features of base tiny_cnn, not vgg16" in err
    code, _, err = run(capsys, "train", "--features", str(train_file), "--test-features", str(by_size[16]))
    assert code == 2 and "were made differently (image_size)" in err
    code, _, err = run(capsys, "train", "--features", str(train_file))
    assert code == 2 and "--features needs --test-features" in err


def test_weights_file_for_another_architecture_cli(capsys, tmp_path, small_cifar):
    from bottleneck.bases.build import build_trunk
    from bottleneck.bases.registry import get_base

    path = tmp_path / "tiny.weights.h5"
    build_trunk(get_base("tiny_cnn"), 32, None).save_weights(path)
    code, _, err = run(capsys, "extract", "--base", "mobilenet_v2", "--weights", str(path), "--image-size", "32",
                       "--dataset", f"folder:{small_cifar}", "--cache-dir", str(tmp_path / "c"), "--quiet")
    assert code == 2 and "does not fit mobilenet_v2" in err


def test_finetune_scratch_and_export_commands(capsys, tmp_path, small_cifar):
    ds = f"folder:{small_cifar}"
    code, out, _ = run(capsys, "finetune", "--base", "tiny_cnn", "--weights", "random", "--dataset", ds,
                       "--per-class", "3", "--unfreeze", "1", "--epochs", "1", "--head-epochs", "2",
                       "--cache-dir", str(tmp_path / "c"), "--quiet")
    assert code == 0 and "finetune(top 1)" in out and "accuracy" in out
    code, _, err = run(capsys, "finetune", "--base", "tiny_cnn", "--weights", "random", "--dataset", ds,
                       "--unfreeze", "9", "--cache-dir", str(tmp_path / "c"), "--quiet")
    assert code == 2 and "out of range" in err
    code, out, _ = run(capsys, "scratch", "--dataset", ds, "--per-class", "3", "--epochs", "2")
    assert code == 0 and "LeNet from scratch" in out
    code, out, _ = run(capsys, "export-lab", "--base", "tiny_cnn", "--weights", "random", "--dataset", ds,
                       "--per-class", "3", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "lab"),
                       "--quiet")
    assert code == 0 and "tiny_cnn_cifar_small_3_bottleneck_features_train.p" in out


def test_compare_lists_each_dataset_once(tmp_path, small_cifar, monkeypatch):
    import bottleneck.experiments.grid as grid

    calls = []
    real = grid.load_dataset
    monkeypatch.setattr(grid, "load_dataset", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rows = grid.compare(["tiny_cnn"], [f"folder:{small_cifar}"], [2, 3], [0, 1], weights="random",
                          cache_dir=tmp_path, progress=False)
    assert len(rows) == 4 and calls == [f"folder:{small_cifar}"]
    assert {r["dataset"] for r in rows} == {"folder:cifar_small"}  # recorded by name; content is in the cache


def test_the_command_names_a_clash_with_pypis_bottleneck(monkeypatch, capsys):
    """PyPI's Bottleneck installs the same import name; the command says so instead of failing obscurely."""
    from importlib import metadata

    import bottleneck_launcher

    class Dist:
        version = "1.6.0"

        def __init__(self, summary):
            self.metadata = {"Summary": summary}

        def locate_file(self, path):
            return "/somewhere/site-packages"

    real = metadata.distribution
    for summary, clash in (("Fast NumPy array functions written in C", True),
                           ("Cheap, correct, reproducible transfer-learning experiments on images", False)):
        monkeypatch.setattr(metadata, "distribution",
                            lambda name, s=summary: Dist(s) if name == "Bottleneck" else real(name))
        if clash:
            assert bottleneck_launcher.main() == 2
            err = capsys.readouterr().err
            assert "PyPI's 'Bottleneck' 1.6.0" in err and "separate virtual environment" in err
        else:
            assert bottleneck_launcher.clash() is None  # this project's own old install is no clash
