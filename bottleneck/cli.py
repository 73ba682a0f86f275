"""The command line: a thin layer over the Python API, with the same names."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from bottleneck.core.errors import BottleneckError
from bottleneck.core.procs import import_keras_quietly
from bottleneck.core.text import printable

log = logging.getLogger("bottleneck")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _limit(text: str) -> int | str | None:
    if text == "auto":  # the default: 100 per class, or every frame for segmentation (report.AUTO)
        return text
    return None if text == "all" else _positive_int(text)


def _unlabeled(text: str) -> int | str:
    if text == "all":
        return text
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0 or 'all'")
    return n


def _list_of(kind):
    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        return [kind(t) for t in items]

    return parse


def _number_in(low: float, high: float, what: str):
    """An argparse type: a number strictly between ``low`` and ``high`` (NaN is refused too)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low < value < high:  # False for NaN
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    return parse


_fraction = _number_in(0.0, 1.0, "between 0 and 1 (exclusive)")
_positive_float = _number_in(0.0, float("inf"), "a positive number")


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"seed {text!r} is not a whole number") from None


def _common() -> argparse.ArgumentParser:
    from bottleneck.data.images import RESIZES

    p = _Parser(add_help=False)
    g = p.add_argument_group("data and cache")
    g.add_argument("--data-dir", default=os.environ.get("BOTTLENECK_DATA_DIR", "data"),
                   help="where datasets are looked for (env BOTTLENECK_DATA_DIR; default ./data)")
    g.add_argument("--cache-dir", default="features", help="where feature files go (default ./features)")
    g.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images and list them")
    g = p.add_argument_group("base")
    g.add_argument("--weights", default="imagenet", help="imagenet, random or the path of a weights file")
    g.add_argument("--weights-dir", default=os.environ.get("BOTTLENECK_WEIGHTS_DIR"),
                   help="folder holding weights files under Keras's names (env BOTTLENECK_WEIGHTS_DIR)")
    g.add_argument("--image-size", type=_positive_int, help="input size (default: the base's native size)")
    g.add_argument("--batch-size", type=_positive_int, default=32,
                   help="images per forward pass (never changes the features)")
    g.add_argument("--resize", choices=list(RESIZES), default="host",
                   help="resize on the host (PIL, default) or inside the model on the device: device for images of "
                        "one size (e.g. CIFAR-10: ships 32x32 pixels, not 224x224), device-mixed for any sizes (each "
                        "ships as it is up to the input size, with its size; larger ones resized on the host); "
                        "a recorded setting")
    g.add_argument("--crop", type=_fraction, metavar="MARGIN",
                   help="crop each image to its box (GTSRB's CSVs) grown by MARGIN of its size on each side, before "
                        "resizing; a recorded setting (e.g. --crop 0.1)")
    g.add_argument("--views", type=_positive_int, default=1, metavar="K",
                   help="K views of each training image: itself and K-1 seeded variations (crop, mirror where the "
                        "class allows it, colour), each cached as a row; K=8 after K=4 extracts only the new ones")
    g.add_argument("--test-views", type=_positive_int, default=1, metavar="K",
                   help="score each test image on the mean features of K views of it (never a flip that needs the "
                        "class); train and compare")
    g.add_argument("--stack", type=_list_of(str), metavar="PART,...",
                   help="train on these features too, side by side with the base's: [BASE][:LAYER[:POOLING]], "
                        "e.g. :stage5:grid4 (the base's stage-5 map, grid-pooled) or efficientnet_lite2; each part "
                        "is cached on its own (train and compare)")
    g.add_argument("--compute", choices=["float32", "bfloat16"], default="float32",
                   help="the base's compute dtype (bfloat16: mixed precision, for GPUs; a recorded setting)")
    g.add_argument("--feed", choices=["auto", "threads", "processes"], default="auto",
                   help="who decodes and resizes: threads, processes, or auto (processes for 2,000 or more "
                        "image files on more than 2 cores, or beside a model on the CPU; there they run at "
                        "idle priority)")
    g.add_argument("--workers", type=_positive_int, help="feed workers (default: one process per core, or "
                                                         "cores + 4 threads); with --engine ray, Ray actors "
                                                         "(default: one per CPU of the cluster)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="who computes the features: this process (local, default) or a pool of Ray actors, each "
                        "holding the base once (ray: pip install 'bottleneck-transfer[ray]'); same cache file")
    g.add_argument("--address", help="with --engine ray: an existing Ray cluster (auto, or HOST:PORT); without it, "
                                     "RAY_ADDRESS's where that is set, else a local Ray instance started for the "
                                     "command and stopped after it")
    g.add_argument("--profile", action="store_true",
                   help="print where extraction time went: decode, resize, waiting for the feed, model, write")
    g.add_argument("--layer", help="take features from this layer (default: the last convolutional block)")
    g.add_argument("--pooling", default="avg", metavar="avg|max|gridG|none",
                   help="how the feature map becomes a vector: its average (default) or maximum; gridG: the "
                        "averages of a G x G grid of cells, side by side (G*G times the features; keeps where "
                        "things are); none: the whole map")
    g.add_argument("--test-fraction", type=_fraction,
                   help="for a dataset without a test split: hold out this part of train (seeded, stratified, "
                        "whole groups) as its test split")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes")
    return p


def _draw_options(p: argparse.ArgumentParser, default: int | None) -> None:
    """--per-class and --seed: which training images are drawn."""
    shown = {None: "all", "auto": "100; every frame (scene) for segmentation and detection"}.get(default, default)
    p.add_argument("--per-class", type=_limit, default=default,
                   help=f"training images per class to draw, or 'all' (default: {shown})")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the draw (and of the head)")


def _extract_kwargs(a) -> dict:
    kw = dict(data_dir=a.data_dir, cache_dir=a.cache_dir, weights=a.weights, weights_dir=a.weights_dir,
              image_size=a.image_size, layer=a.layer, pooling=a.pooling, test_fraction=a.test_fraction,
              batch_size=a.batch_size, skip_bad_images=a.skip_bad_images, progress=not a.quiet,
              feed=a.feed, workers=a.workers, engine=a.engine, address=a.address)
    if a.resize != "host":
        kw["resize"] = a.resize
    if a.compute != "float32":
        kw["compute"] = a.compute
    if a.crop is not None:
        kw["crop"] = a.crop
    if a.views != 1:
        kw["views"] = a.views
    if a.test_views != 1:
        kw["test_views"] = a.test_views
    if a.stack:
        kw["stack"] = a.stack
    if getattr(a, "precision", None):
        kw["precision"] = a.precision
    if getattr(a, "no_flips", False):
        kw["flips"] = False
    return kw


# command-line option -> head parameter (a head that does not take one says so, see report._head_for)
_HEAD_OPTIONS = {"epochs": "epochs", "learning_rate": "learning_rate", "validation_fraction": "validation_fraction",
                 "head_batch_size": "batch_size", "tune_thresholds": "tune_thresholds",
                 "class_weights": "class_weights", "C": "C", "window": "window", "score_threshold": "score_threshold"}


def _C(text: str) -> float | str:
    """--C: a positive number, or 'cv' (chosen by cross-validation on the training draw)."""
    return text if text == "cv" else _positive_float(text)


def _head_params(a) -> dict:
    """The head options given, as head parameters."""
    return {param: getattr(a, opt) for opt, param in _HEAD_OPTIONS.items() if getattr(a, opt) not in (None, False)}


def _head_options(p: argparse.ArgumentParser) -> None:
    from bottleneck.learn.heads import C_GRID, HEADS
    from bottleneck.learn.semi import BEST_SEMI, SEMI_HEADS

    g = p.add_argument_group("head")
    g.add_argument("--head", choices=list(HEADS),
                   help="default: the target's (logreg for classes and labels, ridge for regression)")
    g.add_argument("--semi", choices=list(SEMI_HEADS),
                   help=f"with --unlabeled: how the head learns from the unlabeled images (default {BEST_SEMI}, "
                        "the best measured; README, Unlabeled images)")
    g.add_argument("--epochs", type=_positive_int, help="training epochs of the Keras heads")
    g.add_argument("--C", type=_C, dest="C",
                   help="logreg: inverse regularisation, or 'cv': chosen from %s by 5-fold cross-validation on the "
                        "training draw only (whole groups per fold), seeded" % ", ".join(map(str, C_GRID)))
    g.add_argument("--learning-rate", type=_positive_float, help="the Keras heads' learning rate")
    g.add_argument("--head-batch-size", type=_positive_int, help="the Keras heads' batch size")
    g.add_argument("--validation-fraction", type=_fraction,
                   help="hold out this part of the training draw (whole groups) for early stopping")
    g.add_argument("--tune-thresholds", action="store_true",
                   help="multi-label, dense/mlp heads: each label's threshold chosen on the validation part")
    g.add_argument("--loss", choices=["grouped", "bce"],
                   help="multi-label: BCE on independent labels + cross-entropy per group (grouped, the default), "
                        "or BCE over the whole vector")
    g.add_argument("--class-weights", choices=["none", "median-frequency"],
                   help="segmentation: weight each class's pixels (median-frequency balancing, as SegNet)")
    g.add_argument("--window", type=_positive_int,
                   help="detection: the side (pixels, a multiple of 32) of the windows of the cached maps the "
                        "detector trains on (default 256)")
    g.add_argument("--score-threshold", type=_fraction,
                   help="detection: detections scoring below this are dropped before NMS (default 0.05)")
    g.add_argument("--precision", choices=["float16", "float32"],
                   help="segmentation, detection: how the cached feature maps are stored (default float16)")
    g.add_argument("--no-flips", action="store_true",
                   help="segmentation, detection: do not cache mirror images of the training frames (scenes whose "
                        "signs all have a mirror image) as a second view")
    g.add_argument("--holdout-classes", type=_list_of(str),
                   help="train without these classes and score only on them (targets that describe classes, "
                        "e.g. gtsrb's attributes)")
    g.add_argument("--eval-per-class", type=_limit, help="score on this many test images per class (default all)")


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in this tool's shape: ``error:`` and ``what to do:``, exit 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}\n  what to do: see `{self.prog} --help` for the options",
              file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(prog="bottleneck", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("bases", help="the registry of bases")
    p.add_argument("--weights-dir", default=os.environ.get("BOTTLENECK_WEIGHTS_DIR"),
                   help="a folder of weight files, looked in before Keras's cache (env BOTTLENECK_WEIGHTS_DIR)")
    p.add_argument("--layers", metavar="BASE", help="list BASE's named cut points (for --layer)")

    sub.add_parser("recipes", help="the named recipes (--recipe, --recipes) and what each does")

    p = sub.add_parser("datasets", help="known datasets and where each was found")
    p.add_argument("--data-dir", default=os.environ.get("BOTTLENECK_DATA_DIR", "data"),
                   help="where named datasets are looked for (env BOTTLENECK_DATA_DIR)")

    p = sub.add_parser("extract", parents=[common], help="run a base over a split and cache the features")
    p.add_argument("--base", required=True, help="a base's name (`bottleneck bases` lists them)")
    p.add_argument("--dataset", required=True,
                   help="a dataset's name, or folder:PATH, segfolder:PATH, multilabel:CSV, regression:CSV")
    p.add_argument("--split", default="train", help="the split to extract (train, test, ...)")
    p.add_argument("--target", help="the target whose classes or labels --per-class draws for (default: the "
                                    "dataset's first)")
    _draw_options(p, default=None)

    p = sub.add_parser("train", parents=[common], help="train a head on cached features and score it")
    p.add_argument("--base", help="required unless --features is given (then it is checked against the file)")
    p.add_argument("--dataset", help="required unless --features is given (then it is checked against the file)")
    p.add_argument("--features", help="a training feature file made by `extract` (skips extraction)")
    p.add_argument("--test-features", help="the test feature file to score on (with --features)")
    p.add_argument("--target", help="what to predict (default: the dataset's first target; `bottleneck datasets` "
                                    "lists them)")
    _draw_options(p, default="auto")
    _head_options(p)
    p.add_argument("--recipe", help="a named bundle of settings (`bottleneck recipes` lists them)")
    p.add_argument("--unlabeled", type=_unlabeled, default=0,
                   help="also learn from N images per class of the rest of the training split, without their labels "
                        "(all: every one; default 0; see --semi)")
    p.add_argument("--out", help="folder to keep the result row in (results.csv, results.json, table.md, pictures)")
    p.add_argument("--plots", action="store_true", help="draw the run's pictures and write report.html in --out")

    p = sub.add_parser("compare", parents=[common], help="the accuracy table over bases x datasets x limits x seeds")
    p.add_argument("--bases", type=_list_of(str), required=True, help="comma list of bases")
    p.add_argument("--datasets", type=_list_of(str), required=True, help="comma list of datasets")
    p.add_argument("--per-class", type=_list_of(_limit), default=["auto"],
                   help="limits, comma-separated (default: 100 per class; every frame for segmentation)")
    p.add_argument("--seeds", type=_list_of(_seed), default=[0],
                   help="comma list of draw seeds (each run draws its training images with its seed)")
    p.add_argument("--target", type=_list_of(str), default=[None],
                   help="targets, comma-separated (default: each dataset's first); one table per target")
    p.add_argument("--recipes", type=_list_of(str), default=[None],
                   help="named recipes, comma-separated, side by side (e.g. plain,best; `bottleneck recipes`)")
    p.add_argument("--unlabeled", type=_list_of(_unlabeled), default=[0],
                   help="unlabeled images per class from the rest of the training split, comma-separated (e.g. "
                        "0,100,all), a column of the grid like --per-class (see --semi)")
    p.add_argument("--out", help="folder for results.csv, results.json and table.md; each finished run is kept "
                                 "there at once, and running the same grid again reuses finished runs")
    p.add_argument("--plots", action="store_true", help="draw every run's pictures and write report.html in --out")
    _head_options(p)

    p = sub.add_parser("finetune", parents=[common],
                       help="head on frozen features, then unfreeze the top blocks with a lower learning rate")
    p.add_argument("--base", required=True, help="a base's name (`bottleneck bases` lists them)")
    p.add_argument("--dataset", required=True,
                   help="a dataset's name, or folder:PATH, segfolder:PATH, multilabel:CSV, regression:CSV")
    _draw_options(p, default=100)
    p.add_argument("--unfreeze", type=int, default=1, help="blocks to unfreeze, counted from the top cut point")
    p.add_argument("--head-epochs", type=_positive_int, default=20,
                   help="epochs of the head on frozen features, before the blocks are unfrozen")
    p.add_argument("--epochs", type=int, default=3, help="epochs with the top blocks unfrozen")
    p.add_argument("--learning-rate", type=float, default=0.01, help="the head's (SGD, momentum 0.9)")
    p.add_argument("--base-lr-factor", type=float, default=0.1, help="the unfrozen blocks' rate, times the head's")
    p.add_argument("--eval-per-class", type=_limit, help="score on this many test images per class (default all)")

    p = sub.add_parser("scratch", help="train LeNet from random weights on the same draw (the baseline)")
    p.add_argument("--dataset", required=True,
                   help="a dataset's name, or folder:PATH, segfolder:PATH, multilabel:CSV, regression:CSV")
    p.add_argument("--data-dir", default=os.environ.get("BOTTLENECK_DATA_DIR", "data"),
                   help="where named datasets are looked for (env BOTTLENECK_DATA_DIR)")
    _draw_options(p, default=100)
    p.add_argument("--image-size", type=_positive_int, default=32, help="input size of LeNet")
    p.add_argument("--epochs", type=_positive_int, default=30, help="training epochs of the Keras heads")
    p.add_argument("--eval-per-class", type=_limit, help="score on this many test images per class (default all)")
    p.add_argument("--test-fraction", type=_fraction, help="for a dataset without a test split (see extract)")

    p = sub.add_parser("export-lab", parents=[common],
                       help="write train/test features as the classic lab's bottleneck pickles")
    p.add_argument("--base", required=True, help="a base's name (`bottleneck bases` lists them)")
    p.add_argument("--dataset", required=True,
                   help="a dataset's name, or folder:PATH, segfolder:PATH, multilabel:CSV, regression:CSV")
    _draw_options(p, default=100)
    p.add_argument("--network", help="the name in the file names (default: the base's name)")
    p.add_argument("--out", default="lab_pickles", help="folder for the two .p files")

    p = sub.add_parser("export", parents=[common],
                       help="train a head and write ONE model file (preprocessing, frozen base, head, metadata): "
                            ".keras, a SavedModel folder, .onnx or .tflite")
    p.add_argument("--base", required=True, help="a base's name (`bottleneck bases` lists them)")
    p.add_argument("--dataset", required=True,
                   help="a dataset's name, or folder:PATH, segfolder:PATH, multilabel:CSV, regression:CSV")
    p.add_argument("--target", help="what to predict (default: the dataset's first target)")
    _draw_options(p, default="auto")  # as train: the model exported is the run train makes
    _head_options(p)
    p.add_argument("--unlabeled", type=_unlabeled, default=0,
                   help="the head also learns from N images per class of the rest of the training split (as train)")
    p.add_argument("--out", default="model.keras", help="the model file to write (default model.keras; a folder "
                                                           "name for --format saved_model)")
    p.add_argument("--format", choices=["keras", "saved_model", "onnx", "litert"],
                   help="the file format (default: the one --out's name says: .keras, .onnx, .tflite, a folder)")
    p.add_argument("--quantize", choices=["int8"],
                   help="8-bit weights and activations, calibrated on the training draw's images (litert only)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (it is kept otherwise)")

    p = sub.add_parser("predict", help="predict with an exported model on images, folders or globs")
    p.add_argument("model", help="a model written by `bottleneck export`: .keras, .onnx, .tflite or a SavedModel "
                                 "folder")
    p.add_argument("paths", nargs="+", help="image files, folders (walked) or glob patterns")
    p.add_argument("--top-k", type=_positive_int, default=3, help="classes shown per image (single-label)")
    p.add_argument("--csv", help="also write the predictions to this new CSV file (never the model or an image)")
    p.add_argument("--force", action="store_true", help="replace --csv if it exists (it is kept otherwise)")
    p.add_argument("--masks", help="segmentation: write each image's class map to this folder as <name>.png "
                                   "(pixel values are class ids)")
    p.add_argument("--draw", help="detection: write each image with its boxes (score >= 0.3) to this folder as "
                                  "<name>.jpg")
    p.add_argument("--batch-size", type=_positive_int, default=32,
                   help="images per forward pass (never changes the features)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="skip unreadable images (listed) instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no per-image lines (with --csv)")

    p = sub.add_parser("detect-then-classify",
                       help="GTSDB's 43 sign classes by a category detector whose boxes a GTSRB sign classifier "
                            "names (it beats the direct 43-class detector: docs/guide/detection.md)")
    p.add_argument("--base", default="efficientnet_lite0", help="the base of both stages")
    p.add_argument("--data-dir", default=os.environ.get("BOTTLENECK_DATA_DIR", "data"),
                   help="where gtsdb and gtsrb are found (env BOTTLENECK_DATA_DIR)")
    p.add_argument("--cache-dir", default="features", help="where feature files go (default ./features)")
    p.add_argument("--classifier-cache-dir", help="where GTSRB's features are cached (default --cache-dir)")
    p.add_argument("--weights", default="imagenet", help="imagenet, random or the path of a weights file")
    p.add_argument("--recipe", default="best", help="the sign classifier's recipe (default best)")
    p.add_argument("--per-class", type=_limit, default=None,
                   help="GTSRB training images per class for the classifier (default all)")
    p.add_argument("--epochs", type=_positive_int, help="the category detector's epochs (default 30)")
    p.add_argument("--window", type=_positive_int, help="the category detector's training windows (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")

    p = sub.add_parser("report", help="draw the pictures of a results folder and write its report.html")
    p.add_argument("results", help="a folder written by train/compare --out")

    p = sub.add_parser("info", help="what a feature file holds and how it was made")
    p.add_argument("file")
    p.add_argument("--verify", action="store_true", help="recompute the checksum of the feature data")
    return parser


def cmd_bases(a) -> int:
    from bottleneck.bases.build import build_trunk
    from bottleneck.bases.registry import REGISTRY, get_base
    from bottleneck.bases.weights import find_weights
    from bottleneck.core.errors import WeightsError

    if a.layers:
        spec = get_base(a.layers)
        trunk = build_trunk(spec, spec.native_size, None)
        print(f"cut points of {spec.name} (use with --layer; output at {spec.native_size} px):")
        for short, layer in spec.cut_points:
            shape = tuple(trunk.get_layer(layer).output.shape[1:])
            default = "  (default)" if layer == spec.default_layer else ""
            print(f"  {short:10s} {layer:24s} {shape}{default}")
        return 0

    print("| base | input | min | features | layer | preprocessing | ImageNet weights | offline |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in REGISTRY.values():
        if spec.weights is None:
            source, offline = "none (random only)", "-"
        else:
            source = f"pip {spec.weights.package}" if spec.weights.package else spec.weights.file_name
            try:
                find_weights(spec, a.weights_dir, download=False)
                offline = "yes"
            except WeightsError:
                offline = "no"
        print(f"| {spec.name} | {spec.native_size} | {spec.min_size} | {spec.feature_dim} | {spec.default_layer} "
              f"| {spec.preprocessing} | {source} | {offline} |")
    return 0


def cmd_recipes(a) -> int:
    from bottleneck.experiments.recipes import RECIPES

    width = max(len(name) for name in RECIPES)
    for r in RECIPES.values():
        print(f"{r.name:{width}s}  {r.description}")
    return 0


def cmd_datasets(a) -> int:
    from bottleneck.data.datasets import list_datasets

    for row in list_datasets(a.data_dir):
        print(f"{row['name']:10s} {row['found'] or 'not found under ' + str(a.data_dir)}  ({row['citation']})")
        print(f"{'':10s} targets: {', '.join(row['targets'])}")
    print("folder:PATH        any image folder: <class>/* or train/<class>/* [test/<class>/*], or a .tar.gz of one;"
          " target: class")
    print("multilabel:CSV     file,labels[,is_valid] (labels space-separated; groups in CSV.task.json); "
          "target: labels")
    print("regression:CSV     file,value1,value2,...[,is_valid] (ranges in CSV.task.json); target: values")
    return 0


def cmd_extract(a) -> int:
    from bottleneck.extraction.run import extract

    kw = _extract_kwargs(a)
    if kw.pop("stack", None):
        raise BottleneckError("--stack is for train and compare (they put the parts side by side)",
                              "extract each part on its own: --layer LAYER, or another --base")
    if kw.pop("test_views", None):
        raise BottleneckError("--test-views is for train and compare (they average a test image's views)",
                              "use --views K --split test: K views of each test image (never a flip that needs "
                              "the class)")
    fs = extract(a.base, a.dataset, a.split, a.per_class, a.seed, target=a.target, for_test=a.split != "train", **kw)
    what = "cached already" if fs.info["cached"] else (
        f"extracted {fs.info['extracted']} images in {fs.info['seconds']:.1f}s"
        + (f", reused {fs.info['reused']}" if fs.info["reused"] else ""))
    print(f"{fs.path}: {len(fs)} samples x {fs.features.shape[1:]} ({what})")
    if a.profile:
        from bottleneck.extraction.run import stages_of

        print(profile_text(stages_of([fs]), fs.info.get("extracted", 0), fs.info.get("feed")))
    return 0


def _print_profile(a, rows: list[dict]) -> None:
    """--profile on train/compare: the stages of the extractions these rows made, summed."""
    if not getattr(a, "profile", False):
        return
    from bottleneck.extraction.feed import total

    print(profile_text(total([r["extract_stages"] for r in rows if r.get("extract_stages")]),
                       sum(r.get("extracted_images", 0) for r in rows), "ray" if a.engine == "ray" else None))


# --profile says the feed is the limit when the model waited for it this share of the run or more.
FEED_BOUND = 0.25


def profile_text(stages: dict | None, images: int, feed: str | None = None) -> str:
    """Where extraction time went, one line per stage (``--profile``)."""
    from bottleneck.extraction.feed import wall_seconds

    if not stages:
        return "profile: nothing was extracted (all features came from the cache)"
    lines = [f"profile: {images} images extracted" + (f", feed {feed}" if feed else "")]
    per = lambda v: f"{1000 * v / max(1, images):8.2f} ms/image"
    notes = {"decode": "read + decode, summed over feed workers", "resize": "resize, summed over feed workers",
             "start": "resume, donor rows, pool start", "build": "building the model (first use in this process)",
             "wait": "model waiting for the feed (workers starting too)",
             "model": "model forward passes, transfers included", "write": "waiting for the cache writer",
             "stop": "closing the feed's workers and shared memory",
             "finish": "the file's last chunks, record, sync and rename"}
    ray = bool(feed and feed.startswith("ray"))
    if ray:  # each actor decodes and runs the model itself
        notes.update(decode="read + decode, summed over Ray workers", resize="resize, summed over Ray workers",
                     start="resume, donor rows, starting Ray and its actors",
                     build="building the model (the slowest actor's first chunk)",
                     wait="driver waiting for the actors (all their work)",
                     model="model forward passes, summed over Ray workers")
    for key, what in notes.items():
        lines.append(f"  {key:7s} {stages.get(key, 0.0):9.2f} s {per(stages.get(key, 0.0))}  ({what})")
    wall = wall_seconds(stages)
    if not ray and wall > 0 and stages.get("wait", 0.0) >= FEED_BOUND * wall:
        lines.append(f"  the model waited for the feed {stages['wait'] / wall:.0%} of the run: the feed is the limit. "
                     "More cores (--workers), or --resize device (images of one size) / device-mixed (any "
                     "sizes), where the model resizes and the feed only decodes (a setting of its own cache "
                     "file; README, Speed), would raise it")
    return "\n".join(lines)


def cmd_train(a) -> int:
    from bottleneck.cache.store import read_features
    from bottleneck.experiments.run import train, train_on_features

    if a.features or a.test_features:
        if not (a.features and a.test_features):
            raise BottleneckError("--features needs --test-features (and the other way round)",
                                  "pass both feature files, the training one and the test one")
        given = _given(("--target", a.target not in (None, "class")), ("--holdout-classes", a.holdout_classes),
                       ("--loss", a.loss), ("--recipe", a.recipe), ("--crop", a.crop is not None),
                       ("--resize", a.resize != "host"), ("--compute", a.compute != "float32"),
                       ("--views", a.views != 1), ("--test-views", a.test_views != 1), ("--stack", a.stack))
        if given:
            raise BottleneckError("--features files are trained on the class labels they hold, as they were made",
                                  f"drop {', '.join(given)}, or train from --base and --dataset")
        row = train_on_features(read_features(a.features), read_features(a.test_features), a.head or "logreg",
                                a.seed, head_params=_head_params(a), base=a.base, dataset=a.dataset)
    elif not (a.base and a.dataset):
        raise BottleneckError("train needs --base and --dataset (or --features and --test-features)",
                              "e.g. bottleneck train --base efficientnet_lite0 --dataset cifar10 --per-class 100")
    else:
        row = train(a.base, a.dataset, a.per_class, a.seed, a.head, target=a.target, eval_per_class=a.eval_per_class,
                    head_params=_head_params(a), holdout_classes=a.holdout_classes, loss=a.loss, out=a.out,
                    plots=a.plots, recipe=a.recipe, unlabeled=a.unlabeled, semi=a.semi, **_extract_kwargs(a))
    _print_profile(a, [row])
    target = "" if row["task"] == "single_label" else f", target {row['target']} ({row['task']})"
    held = f", classes {row['holdout_classes']} held out" if row.get("holdout_classes") else ""
    if row["task"] == "segmentation":
        flips = "hflip" in row.get("views", "")
        drawn = (f"{row['n_train'] // 2} training frames and their mirror images" if flips
                 else f"{row['n_train']} training frames") + f", {row['n_val']} validation frames"
        print(f"{row['base']} on {row['dataset']}{target}, {drawn}, decoder: {_scores_text(row)} on "
              f"{row['n_test']} test frames (extraction {row['extract_seconds']:.1f}s, decoder trained in "
              f"{row['train_seconds']:.1f}s, {row['epochs_run']} epochs; maps cached: "
              f"{row['cache_bytes'] / 2**20:.0f} MB)" + (f"; results in {a.out}/" if a.out else ""))
        return 0
    if row["task"] == "detection":
        mirrored = f" and {row['n_mirrored']} mirrored" if row.get("n_mirrored") else ""
        print(f"{row['base']} on {row['dataset']}{target}, {row['n_train'] - row.get('n_mirrored', 0)} training "
              f"scenes{mirrored}, detector: {_scores_text(row)} on {row['n_test']} test scenes "
              f"({row['n_objects_test']} objects) (extraction {row['extract_seconds']:.1f}s, detector trained in "
              f"{row['train_seconds']:.1f}s, {row['epochs_run']} epochs, test scenes in {row['predict_seconds']:.1f}s; "
              f"maps cached: {row['cache_bytes'] / 2**20:.0f} MB)" + (f"; results in {a.out}/" if a.out else ""))
        return 0
    views = row.get("views") or 1
    images = (f"{row['n_train'] // views} training images x {views} views" if views > 1
              else f"{row['n_train']} training images")
    stack = f" + {row['stack']}" if row.get("stack") else ""
    test_views = f" (mean of {row['test_views']} views each)" if (row.get("test_views") or 1) > 1 else ""
    unlabeled = f" + {row['n_unlabeled']} unlabeled images (--semi {row['semi']})" if row.get("n_unlabeled") else ""
    print(f"{row['base']}{stack} on {row['dataset']}{target}{held}, {images} "
          f"({_per_class_text(row)}){unlabeled}, {row['head']} head: {_scores_text(row)} on {row['n_test']} test images"
          f"{test_views} "
          f"(head trained in {row['train_seconds']:.1f}s)" + (f"; results in {a.out}/" if a.out else ""))
    return 0


def _scores_text(row: dict) -> str:
    """The main metric, then the task's other headline numbers."""
    m = row["metrics"]
    more = {"multi_label": ["accuracy_multi", "exact_match"] + sorted(k for k in m if k.startswith("group_accuracy/")),
            "regression": ["r2", "mae", "baseline_mean_iou", "baseline_r2"],
            "segmentation": ["pixel_accuracy", "class_accuracy"], "detection": ["map", "map75"]}.get(row["task"], [])
    parts = [f"{row['metric']} {row['score']:.4f}"] + [f"{k} {m[k]:.4f}" for k in more if k in m and k != row["metric"]]
    return ", ".join(parts)


def _per_class_text(row: dict) -> str:
    """What was drawn per class, and what was asked when the classes had fewer."""
    drawn, asked, draw = row.get("drawn_per_class"), row.get("per_class"), row.get("draw") or "class"
    if asked is not None and draw.startswith("labels:"):
        return f"{asked} positive images per label" + (f"; {drawn} per class" if drawn else "")
    if not drawn:
        return f"{asked} per class" if asked else "all images"
    if asked is None:
        return f"all images: {drawn} per class"
    return f"{drawn} per class" + ("" if drawn == str(asked) else f"; {asked} asked, the classes have fewer")


def cmd_compare(a) -> int:
    from bottleneck.experiments.grid import compare
    from bottleneck.report.results import markdown_table, recipe_costs

    rows = compare(a.bases, a.datasets, a.per_class, a.seeds, a.head, out=a.out, targets=a.target,
                   eval_per_class=a.eval_per_class, head_params=_head_params(a), holdout_classes=a.holdout_classes,
                   loss=a.loss, plots=a.plots, recipes=a.recipes, unlabeled=a.unlabeled, semi=a.semi,
                   **_extract_kwargs(a))
    print(markdown_table(rows))
    _print_profile(a, rows)
    extracted = sum(r["extracted_images"] for r in rows)
    reused = sum(bool(r.get("reused_row")) for r in rows)
    print(f"\n{len(rows)} runs; extracted {extracted} images this time"
          + (" (everything came from the feature cache)" if not extracted else "")
          + (f"; {reused} runs were finished already and reused from {a.out}/" if reused else ""))
    if len(set(a.recipes)) > 1:
        print(recipe_costs(rows))
    if a.out:
        from bottleneck.report.results import ResultsDir

        held = len(ResultsDir(a.out).rows())
        print(f"results in {a.out}/" + (f" (it holds {held} runs: {held - len(rows)} more from earlier runs with "
                                        "other settings, kept and listed in its tables)" if held > len(rows) else ""))
    return 0


def cmd_info(a) -> int:
    from bottleneck.cache.store import read_features, verify

    fs = read_features(a.file, load=False)
    print(printable(fs.path))
    for key, value in sorted(fs.settings.items()):
        print(printable(f"  {key:16s} {value}"))
    print(f"  {'samples':16s} {fs.info['n_samples']} in {len(fs.class_names)} classes")
    for key in ("created", "extract_seconds", "images_per_second", "model_images_per_second", "batch_size", "feed",
                "stages", "versions", "skipped"):
        if key in fs.info:
            print(printable(f"  {key:16s} {fs.info[key]}"))
    if a.verify:
        if not verify(a.file):
            print(f"checksum MISMATCH: the data of {a.file} changed after it was written; it is never used for "
                  "training (an extraction that finds it moves it aside and extracts again)", file=sys.stderr)
            return 3
        print("  checksum         ok")
    return 0


def cmd_finetune(a) -> int:
    from bottleneck.experiments.finetune import finetune

    unused = _given(("--layer", a.layer), ("--pooling", a.pooling != "avg"), ("--skip-bad-images", a.skip_bad_images),
                    ("--views", a.views != 1), ("--test-views", a.test_views != 1),
                    ("--stack", a.stack), ("--resize", a.resize != "host"), ("--compute", a.compute != "float32"),
                    ("--feed", a.feed != "auto"), ("--workers", a.workers), ("--engine", a.engine != "local"),
                    ("--address", a.address), ("--profile", a.profile))
    if unused:
        raise BottleneckError(f"finetune does not take {', '.join(unused)}: it unfreezes blocks of the whole base, "
                              "average-pooled, and trains on every drawn image",
                              "drop those options (they apply to extract, train and compare)")

    row = finetune(a.base, a.dataset, a.per_class, a.seed, unfreeze=a.unfreeze, head_epochs=a.head_epochs,
                   epochs=a.epochs, learning_rate=a.learning_rate, base_lr_factor=a.base_lr_factor,
                   batch_size=a.batch_size, image_size=a.image_size, weights=a.weights, weights_dir=a.weights_dir,
                   data_dir=a.data_dir, cache_dir=a.cache_dir, eval_per_class=a.eval_per_class,
                   progress=not a.quiet, test_fraction=a.test_fraction, crop=a.crop)
    print(f"{a.base} on {a.dataset}, {row['head']}, {row['n_train']} training images: accuracy "
          f"{row['accuracy']:.4f} on {row['n_test']} test images ({row['train_seconds']:.1f}s)")
    return 0


def cmd_scratch(a) -> int:
    from bottleneck.experiments.finetune import train_scratch

    row = train_scratch(a.dataset, a.per_class, a.seed, image_size=a.image_size, epochs=a.epochs,
                        data_dir=a.data_dir, eval_per_class=a.eval_per_class, test_fraction=a.test_fraction)
    print(f"LeNet from scratch on {a.dataset}, {row['n_train']} training images: accuracy {row['accuracy']:.4f} "
          f"on {row['n_test']} test images ({row['train_seconds']:.1f}s)")
    return 0


def _given(*options: tuple[str, object]) -> list[str]:
    """The flags, of (flag, given) pairs, that were given: to name them in a refusal."""
    return [flag for flag, given in options if given]


def _no_profile(a, command: str) -> None:
    if a.profile:
        raise BottleneckError(f"{command} does not take --profile", "use it with extract, train or compare")


def cmd_export_lab(a) -> int:
    from bottleneck.cache.labpickle import export_lab_pickles
    from bottleneck.extraction.run import extract

    _no_profile(a, "export-lab")
    given = _given(("--views", a.views != 1), ("--test-views", a.test_views != 1), ("--stack", a.stack))
    if given:
        raise BottleneckError(f"export-lab writes the lab's pickles, one row of one base's features per image; "
                              f"{', '.join(given)} would make other files", f"drop {', '.join(given)}")
    kw = _extract_kwargs(a)
    tr = extract(a.base, a.dataset, "train", a.per_class, a.seed, **kw)
    te = extract(a.base, a.dataset, "test", None, 0, **kw)
    for path in export_lab_pickles(tr, te, a.out, a.network):
        print(path)
    return 0


def _input_text(spec: dict) -> str:
    """An exported model's input: HxWx3 (the canvas, for models of scenes and frames)."""
    height, width = spec.get("canvas") or (spec["size"], spec["size"])
    return f"{height}x{width}x3"


def cmd_export(a) -> int:
    from bottleneck.deploy.export import export

    _no_profile(a, "export")
    meta = export(a.base, a.dataset, a.per_class, a.seed, a.head, out=a.out, format=a.format, quantize=a.quantize,
                  target=a.target, head_params=_head_params(a), eval_per_class=a.eval_per_class, overwrite=a.force,
                  unlabeled=a.unlabeled, semi=a.semi, **_extract_kwargs(a))
    print(f"{meta['path']} ({meta['file_format']}{', ' + meta['quantize'] if meta['quantize'] else ''}): "
          f"{meta['base']} + {meta['head']} head for {meta['dataset']} target {meta['target']} "
          f"({meta['task']}), input uint8 {_input_text(meta['input'])}; "
          f"{meta['metric']} {meta['score']:.4f} on {meta['n_test']} test images"
          + (" (the float pipeline's; predict gives the quantized model's own)" if meta["quantize"] else ""))
    print(f"{HOW_TO_LOAD[meta['file_format']].format(path=a.out)}; `bottleneck predict {a.out} IMAGES` "
          "predicts with it")
    return 0


# How each format loads without this package (printed after an export).
HOW_TO_LOAD = {
    "keras": "load it anywhere with keras.saving.load_model({path!r}); what it predicts: unzip -p {path} "
             "bottleneck.json",
    "saved_model": "load it with model = tf.saved_model.load({path!r}), then model.serve(pixels); what it "
                   "predicts: {path}/assets.extra/bottleneck.json",
    "onnx": "run it with onnxruntime.InferenceSession({path!r}); what it predicts: its metadata_props "
            "'bottleneck.json'",
    "litert": "run it with ai_edge_litert.interpreter.Interpreter({path!r}); what it predicts: its metadata "
              "buffer 'bottleneck.json'",
}


def _prediction_text(row: dict) -> str:
    if "error" in row:
        return f"skipped: {row['error']}"
    if "boxes" in row:  # detection: the boxes found, best first
        shown = [f"{b['class']} {b['score']:.2f} at ({b['x1']:.0f}, {b['y1']:.0f}, {b['x2']:.0f}, {b['y2']:.0f})"
                 for b in row["boxes"] if b["score"] >= 0.3][:5]
        return ("; ".join(shown) or "nothing scoring 0.30 or more") + (f" -> {row['drawn']}" if "drawn" in row else "")
    if "fractions" in row:  # segmentation: the classes covering most of the image
        top = sorted(row["fractions"].items(), key=lambda kv: -kv[1])[:4]
        return ", ".join(f"{name} {share:.0%}" for name, share in top) + (f" -> {row['mask']}" if "mask" in row else "")
    if "top" in row:
        return ", ".join(f"{name} ({p:.3f})" for name, p in row["top"])
    if isinstance(row["prediction"], dict):
        return " ".join(f"{k}={v:.4f}" for k, v in row["prediction"].items())
    return " ".join(row["prediction"]) or "(no label)"


def cmd_predict(a) -> int:
    import time

    from bottleneck.deploy.formats import load_model
    from bottleneck.deploy.predict import check_csv_output, predict, write_csv, write_drawn, write_masks

    if a.csv:
        check_csv_output(a.csv, a.model, a.paths, overwrite=a.force)
    model = load_model(a.model)
    if a.masks and model.meta["task"] != "segmentation":
        raise BottleneckError(f"--masks writes class maps; {a.model} predicts {model.meta['task']}",
                              "drop --masks (it is for segmentation models)")
    if a.draw and model.meta["task"] != "detection":
        raise BottleneckError(f"--draw draws boxes; {a.model} predicts {model.meta['task']}",
                              "drop --draw (it is for detection models)")
    t, n, skipped = time.perf_counter(), 0, 0
    rows = predict(model, a.paths, top_k=a.top_k, batch_size=a.batch_size, skip_bad_images=a.skip_bad_images)
    if a.masks:
        rows = write_masks(model, rows, a.masks)
    if a.draw:
        rows = write_drawn(model, rows, a.draw)
    if a.csv:
        rows = write_csv(model, rows, a.csv, a.top_k, overwrite=a.force)
    for row in rows:
        n += 1
        skipped += "error" in row
        if not a.quiet:
            print(printable(f"{row['path']}\t{_prediction_text(row)}", keep="\t"))
    seconds = time.perf_counter() - t
    print(f"{n - skipped} images predicted in {seconds:.1f}s ({(n - skipped) / max(seconds, 1e-9):.1f} images/s)"
          + (f"; {skipped} unreadable, skipped" if skipped else "") + (f"; written to {a.csv}" if a.csv else ""),
          file=sys.stderr)
    return 0


def cmd_detect_then_classify(a) -> int:
    import json

    from bottleneck.experiments.two_stage import detect_then_classify

    params = {k: v for k, v in (("epochs", a.epochs), ("window", a.window)) if v is not None}
    out = detect_then_classify(a.base, data_dir=a.data_dir, cache_dir=a.cache_dir, seed=a.seed,
                               detector_params=params, classifier_recipe=a.recipe, classifier_per_class=a.per_class,
                               classifier_cache_dir=a.classifier_cache_dir, weights=a.weights)
    if a.json:
        print(json.dumps(out, indent=1, default=str))
        return 0
    m, d = out["metrics"], out["detector"]["metrics"]
    cats = ", ".join(f"{k[5:]} {v:.3f}" for k, v in m.items() if k[5:] in ("prohibitory", "danger", "mandatory",
                                                                          "other"))
    print(f"{a.base}: categories detected with map50 {d['map50']:.4f}; {out['crops']} boxes named by the "
          f"{a.recipe} sign classifier: map50 {m['map50']:.4f}, map {m['map']:.4f}, map75 {m['map75']:.4f} on "
          f"GTSDB's 43 classes ({cats})")
    return 0


def cmd_report(a) -> int:
    from bottleneck.report.html import write_report

    path = write_report(a.results)
    print(f"{path} (pictures in {path.parent / 'plots'}/)")
    return 0


COMMANDS = {"bases": cmd_bases, "recipes": cmd_recipes, "datasets": cmd_datasets, "extract": cmd_extract,
            "train": cmd_train, "compare": cmd_compare, "info": cmd_info,
            "export-lab": cmd_export_lab, "finetune": cmd_finetune, "scratch": cmd_scratch,
            "export": cmd_export, "predict": cmd_predict, "report": cmd_report,
            "detect-then-classify": cmd_detect_then_classify}


def _say_warnings_as_notes(quiet: bool) -> None:
    """Warnings meant for the user (a head's) print as one-line notes; PIL's decompression-bomb
    warning is dropped, because such images are reported as bad images by name."""
    import warnings

    from PIL import Image

    from bottleneck.learn.heads import HeadWarning

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, HeadWarning):
            if not quiet:
                print(f"note: {message}", file=sys.stderr)
        else:
            print(warnings.formatwarning(message, category, filename, lineno, line), file=sys.stderr, end="")

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in ("datasets", "report", "info"):  # (those never build a model: no TensorFlow start-up)
        import_keras_quietly()
    logging.basicConfig(format="note: %(message)s", stream=sys.stderr,
                        level=logging.ERROR if getattr(args, "quiet", False) else logging.INFO)
    _say_warnings_as_notes(quiet=getattr(args, "quiet", False))
    try:
        return COMMANDS[args.command](args)
    except BottleneckError as e:
        print(printable(f"error: {e}"), file=sys.stderr)  # (messages quote file names and contents)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to pick up where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
