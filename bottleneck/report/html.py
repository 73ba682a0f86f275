"""A results folder's pictures and its one-page report.

Each kept run's predictions on its test images are saved next to its row
(``rows/<run>.npz``: true targets, outputs, a few thumbnails, a Keras head's training
curves), so every picture can be drawn again at any time: by ``train``/``compare`` with
``--plots``, or afterwards by ``bottleneck report RESULTS_DIR``. ``report.html`` is one
self-contained page (pictures embedded) with the tables, every run's settings and metrics,
and the pictures.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from bottleneck.core.errors import BottleneckError
from bottleneck.core.files import atomic_output, atomic_write, inside_folder
from bottleneck.core.tasks import box_iou
from bottleneck.core.userfiles import check_size, open_regular, read_bytes
from bottleneck.report import plots
from bottleneck.report.results import ResultsDir, markdown_table

log = logging.getLogger("bottleneck")
NPZ_LIMIT = 256 << 20  # bytes a run's kept arrays may unpack to (48 thumbnails and the test outputs: a few MB)

THUMBS = 48  # test images kept per run for the picture grid
THUMB_SIZE = 64


def save_predictions(results: ResultsDir, key: str, fitted, test_plan) -> Path:
    """Keep what the pictures need from a finished run: targets, outputs, thumbnails, curves."""
    model, te = fitted.model, fitted.test
    kind = fitted.row["task"]
    y_true = np.asarray(fitted.y_test)
    if kind == "single_label":
        outputs = model.predict_proba(te.features)
        y_pred = np.asarray(model.predict(te.features))
        names = list(te.class_names)
        order = np.concatenate([_round_robin(np.flatnonzero(y_pred != y_true), y_true),
                                _round_robin(np.flatnonzero(y_pred == y_true), y_true)])[:THUMBS]
    elif kind == "multi_label":
        outputs = model.predict_proba(te.features)
        y_pred = model.task.decode(outputs, getattr(model, "thresholds_", None))
        names, order = list(model.task.labels), np.arange(0)
    else:
        outputs = y_pred = model.predict(te.features)
        names = list(model.task.names)
        order = np.arange(min(len(y_true), 24)) if model.task.boxes else np.arange(0)
    split = test_plan.samples
    where = {sid: i for i, sid in enumerate(split.ids)}
    thumbs = np.zeros((len(order), THUMB_SIZE, THUMB_SIZE, 3), np.uint8)
    for k, i in enumerate(order):
        try:
            image = split.load(where[te.source_ids[int(i)]], THUMB_SIZE)
            thumbs[k] = np.asarray(image.resize((THUMB_SIZE, THUMB_SIZE)))
        except Exception:  # a thumbnail is a nicety; an image that vanished since is left grey
            thumbs[k] = 128
    return _save_npz(results, key, y_true=y_true, y_pred=np.asarray(y_pred), outputs=np.asarray(outputs, np.float32),
                     names=np.array(names, dtype=str), source_ids=np.array(te.source_ids, dtype=str),
                     thumbs=thumbs, thumb_rows=np.asarray(order, np.int64),
                     history=json.dumps(getattr(model, "history_", None) or {}))


def _save_npz(results: ResultsDir, key: str, **arrays) -> Path:
    """A run's kept arrays, ``rows/<key>.npz``, written whole or not at all."""
    path = results.rows_dir / f"{key}.npz"
    with atomic_output(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)
    return path


def save_segmentation(results: ResultsDir, key: str, fitted, task) -> Path:
    """Keep what a segmentation run's pictures need: the confusion matrix, a few test frames
    with their true and predicted maps, the training curves."""
    frames = list(fitted.frames())
    return _save_npz(results, key, confusion=np.asarray(fitted.y_test), names=np.array(task.class_names, dtype=str),
                     images=np.stack([f[0] for f in frames]) if frames else np.zeros((0, 1, 1, 3), np.uint8),
                     truth=np.stack([f[1] for f in frames]) if frames else np.zeros((0, 1, 1), np.uint8),
                     pred=np.stack([f[2] for f in frames]) if frames else np.zeros((0, 1, 1), np.uint8),
                     void=np.int64(task.void), history=json.dumps(fitted.history or {}))


def save_detection(results: ResultsDir, key: str, truth, found, ids, class_names, curves, shown, images, scales,
                   history=None) -> Path:
    """Keep a detection run's test scenes: their true objects ((n, 5) each) and detections
    ((m, 6) each) as flat arrays with each scene's count, the scenes' ids, the precision/recall
    curves at IoU .50 (classes x 101 recalls), and a few scenes (rows ``shown``) as images
    scaled by ``scales`` for pictures."""
    side = max([im.shape[0] for im in images] + [im.shape[1] for im in images] + [1])
    canvas = np.zeros((len(images), side, side, 3), np.uint8)  # one array: scenes padded to one square
    for k, im in enumerate(images):
        canvas[k, :im.shape[0], :im.shape[1]] = im
    return _save_npz(results, key, names=np.array(class_names, dtype=str), ids=np.array(ids, dtype=str),
                     truth=np.concatenate([np.reshape(t, (-1, 5)) for t in truth] + [np.zeros((0, 5))]).astype(np.float32),
                     truth_counts=np.array([len(t) for t in truth], np.int64),
                     found=np.concatenate([np.reshape(f, (-1, 6)) for f in found] + [np.zeros((0, 6))]).astype(np.float32),
                     found_counts=np.array([len(f) for f in found], np.int64), curves=np.asarray(curves, np.float64),
                     shown=np.asarray(shown, np.int64), images=canvas, sizes=np.array([im.shape[:2] for im in images],
                                                                                      np.int64).reshape(-1, 2),
                     scales=np.asarray(scales, np.float64), history=json.dumps(history or {}))


def _round_robin(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``rows`` reordered to take one of each class in turn, so a grid shows many classes."""
    by_class: dict = {}
    for i in rows:
        by_class.setdefault(int(classes[i]), []).append(int(i))
    out, queues = [], [list(v) for _, v in sorted(by_class.items())]
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return np.asarray(out, np.int64)


def _load(results: ResultsDir, key: str) -> dict | None:
    """A run's kept arrays, or None when there are none. The file may come from anyone: it is
    never unpickled, and its arrays are checked (declared sizes, before any is read) against
    ``NPZ_LIMIT``; a file that fails is a BottleneckError naming it."""
    path = results.rows_dir / f"{key}.npz"
    if not path.exists():
        return None
    try:
        with open_regular(path, "results file") as f, zipfile.ZipFile(f) as z:
            total = 0
            for info in z.infolist():
                total += info.file_size
                check_size(f"{path}!{info.filename}", total, "results file", NPZ_LIMIT)
                with z.open(info) as member:  # the header's declared shape, before numpy allocates it
                    version = np.lib.format.read_magic(member)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise ValueError(f"{info.filename} is in .npy format {version}")
                    shape, _, dtype = read_header(member, max_header_size=10000)
                    if dtype.hasobject:
                        raise ValueError(f"{info.filename} holds Python objects")
                    if int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > info.file_size:
                        raise ValueError(f"{info.filename} declares {shape} but holds {info.file_size} bytes")
            f.seek(0)
            with np.load(f, allow_pickle=False) as arrays:
                return {k: arrays[k] for k in arrays.files}
    except BottleneckError:
        raise
    except Exception as e:  # zipfile and numpy raise many types for a damaged file
        raise BottleneckError(f"{path} is not a run's kept arrays ({type(e).__name__}: {str(e)[:200]})",
                              "remove it (its run's pictures are then not drawn), or run that run again") from None


def _checked(saved: dict, row: dict, path: str) -> dict:
    """The arrays a run's pictures need, of the kinds and ranges they must have."""
    kind = row.get("task", "single_label")
    need = {"segmentation": ("confusion", "names", "images", "truth", "pred", "void"),
            "detection": ("names", "truth", "truth_counts", "found", "found_counts", "curves", "shown", "images",
                          "sizes", "scales"),
            "single_label": ("y_true", "y_pred", "names", "thumbs", "thumb_rows"),
            "multi_label": ("names",), "regression": ("y_true", "y_pred", "names", "thumbs", "thumb_rows")}.get(kind)
    if need is None:
        raise ValueError(f"its row's task {kind!r} is unknown")
    missing = [k for k in need + ("history",) if k not in saved]
    if missing:
        raise ValueError(f"it has no {', '.join(missing)}")
    names = saved["names"]
    if names.ndim != 1 or names.dtype.kind not in "US" or not len(names):
        raise ValueError("its names are not a list of text")
    if kind == "single_label":
        y_true, y_pred, rows_ = saved["y_true"], saved["y_pred"], saved["thumb_rows"]
        for label, a in (("y_true", y_true), ("y_pred", y_pred)):
            if a.ndim != 1 or a.dtype.kind not in "iu" or len(a) and (a.min() < 0 or a.max() >= len(names)):
                raise ValueError(f"its {label} are not class numbers below {len(names)}")
        if len(y_true) != len(y_pred) or rows_.dtype.kind not in "iu" or len(rows_) and (
                rows_.min() < 0 or rows_.max() >= len(y_true)) or len(saved["thumbs"]) < len(rows_):
            raise ValueError("its predictions and thumbnails do not match")
    if kind == "regression":
        rows_ = saved["thumb_rows"]
        if saved["y_true"].shape != saved["y_pred"].shape or saved["y_true"].ndim != 2 or len(rows_) and (
                rows_.dtype.kind not in "iu" or rows_.min() < 0 or rows_.max() >= len(saved["y_true"])):
            raise ValueError("its values and predictions do not match")
    if kind == "segmentation":
        c = saved["confusion"]
        if c.ndim != 2 or c.shape[0] != c.shape[1] or c.shape[0] != len(names):
            raise ValueError("its confusion matrix does not match its class names")
        if not (saved["images"].ndim == 4 and saved["truth"].shape == saved["pred"].shape == saved["images"].shape[:3]):
            raise ValueError("its frames and maps do not match")
    if kind == "detection":
        n = len(saved["truth_counts"])
        if (saved["truth"].ndim != 2 or saved["truth"].shape[1] != 5 or saved["found"].ndim != 2
                or saved["found"].shape[1] != 6 or saved["truth_counts"].sum() != len(saved["truth"])
                or saved["found_counts"].sum() != len(saved["found"]) or len(saved["found_counts"]) != n
                or (saved["truth_counts"] < 0).any() or (saved["found_counts"] < 0).any()):
            raise ValueError("its boxes and their counts do not match")
        if saved["curves"].shape != (len(names), 101):
            raise ValueError("its precision/recall curves do not match its class names")
        shown = saved["shown"]
        if (saved["images"].ndim != 4 or len(shown) != len(saved["images"]) or saved["sizes"].shape != (len(shown), 2)
                or len(saved["scales"]) != len(shown) or len(shown) and (shown.min() < 0 or shown.max() >= n)):
            raise ValueError("its scenes do not match")
    history = json.loads(str(saved["history"]))
    if not isinstance(history, dict) or not all(isinstance(v, list) and all(isinstance(x, (int, float)) for x in v)
                                                for v in history.values()):
        raise ValueError("its training curves are not lists of numbers")
    return {**saved, "history": history}


def draw_run(results: ResultsDir, row: dict) -> list[str]:
    """Every picture of one run, into ``plots/<run>/``; returns their paths relative to the folder.
    A run whose kept arrays are damaged gets the pictures its row alone allows, and a warning."""
    key = row.get("run_key")
    folder = inside_folder(results.out, "plots", str(key))  # (the key is a checked hex name: ResultsDir)
    saved = None
    try:
        saved = _load(results, key)
        saved = _checked(saved, row, str(results.rows_dir / f"{key}.npz")) if saved is not None else None
    except (BottleneckError, ValueError, TypeError, RecursionError) as e:
        log.warning("the pictures of run %s from its kept arrays are not drawn: %s", key, getattr(e, "what", e))
        saved = None
    made: list = []
    try:
        _draw(row, saved, folder, made)
    except (KeyError, ValueError, TypeError, IndexError) as e:  # a row or arrays malformed in a way not checked
        log.warning("some pictures of run %s are not drawn: %s: %s", key, type(e).__name__, str(e)[:200])
    return [str(Path(p).relative_to(results.out)) for p in made]


def _draw(row: dict, saved: dict | None, folder: Path, made: list) -> None:
    kind = row.get("task", "single_label")
    if kind == "multi_label":
        made.append(plots.precision_recall_scatter(row, folder / "precision_recall.png"))
    if saved is not None and kind == "detection":
        names = [str(n) for n in saved["names"]]
        truth = np.split(saved["truth"], np.cumsum(saved["truth_counts"])[:-1])
        found = np.split(saved["found"], np.cumsum(saved["found_counts"])[:-1])
        if len(saved["shown"]):
            made.append(plots.detection_grid(row, saved["images"], saved["sizes"], saved["scales"],
                                             [truth[k] for k in saved["shown"]], [found[k] for k in saved["shown"]],
                                             names, folder / "scenes.png"))
        made.append(plots.precision_recall_curves(row, saved["curves"], names, folder / "precision_recall.png"))
    elif saved is not None and kind == "segmentation":
        names = [str(n) for n in saved["names"]]
        if len(saved["images"]):
            made.append(plots.segmentation_grid(row, saved["images"], saved["truth"], saved["pred"], names,
                                                int(saved["void"]), folder / "frames.png"))
        made.append(plots.iou_bars(row, names, folder / "iou.png"))
    elif saved is not None:
        names = [str(n) for n in saved["names"]]
        y_true, y_pred = saved["y_true"], saved["y_pred"]
        if kind == "single_label":
            made.append(plots.confusion_matrix(row, y_true, y_pred, names, folder / "confusion.png"))
            made.append(plots.per_class_accuracy(row, y_true, y_pred, names, folder / "per_class.png"))
            rows_ = saved["thumb_rows"]
            if len(rows_):
                made.append(plots.image_grid(row, saved["thumbs"], [names[int(y_true[i])] for i in rows_],
                                             [names[int(y_pred[i])] for i in rows_], folder / "images.png"))
        elif kind == "regression":
            rows_ = saved["thumb_rows"]
            if len(rows_):
                iou = box_iou(y_true[rows_], y_pred[rows_])
                made.append(plots.image_grid(row, saved["thumbs"], [""] * len(rows_), [f"IoU {v:.2f}" for v in iou],
                                             folder / "boxes.png", y_true[rows_], y_pred[rows_]))
            made.append(plots.predicted_vs_true(row, y_true, y_pred, names, folder / "predicted_vs_true.png"))
    if saved is not None and saved["history"].get("loss"):
        made.append(plots.training_curves(row, saved["history"], folder / "curves.png"))


def draw_grid(results: ResultsDir, rows: list[dict]) -> list[str]:
    """Pictures across runs: the score against training images per class, and against unlabeled
    images per class, when a grid has several."""
    made = []
    if len({r.get("per_class") for r in rows if r.get("per_class") is not None}) > 1:
        made.append(plots.score_vs_limit(rows, inside_folder(results.out, "plots") / "score_vs_limit.png"))
    if len({r.get("unlabeled") or 0 for r in rows}) > 1:
        made.append(plots.score_vs_unlabeled(rows, inside_folder(results.out, "plots") / "score_vs_unlabeled.png"))
    return [str(Path(p).relative_to(results.out)) for p in made]


def _drawn(results: ResultsDir, row: dict) -> list[str]:
    folder = results.out / "plots" / str(row.get("run_key"))
    if folder.is_symlink() or not folder.is_dir():
        return []
    return [str(p.relative_to(results.out)) for p in sorted(folder.glob("*.png")) if not p.is_symlink()]


def _img(path: Path) -> str:
    if path.is_symlink():  # a picture planted as a link could embed any file the user can read
        raise BottleneckError(f"{path} is a symlink; the report embeds only the pictures drawn in its folder",
                              f"remove {path}, then run `bottleneck report` again")
    data = base64.b64encode(read_bytes(path, "image")).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def _markdown_tables_to_html(text: str) -> str:
    out, table = [], []

    def flush():
        if table:
            head, *body = [[html.escape(c.strip()) for c in line.strip().strip("|").split("|")] for line in table
                           if not set(line.replace("|", "").strip()) <= {"-"}]
            out.append("<table><tr>" + "".join(f"<th>{c}</th>" for c in head) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in body) + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.startswith("**"):
            out.append(f"<h3>{html.escape(line.replace('**', ''))}</h3>")
        elif line.strip():
            out.append(f"<p class='note'>{html.escape(line)}</p>")
    flush()
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}
th{background:#f0f0f0}details{margin:.6em 0;border:1px solid #ddd;padding:.4em .8em;border-radius:4px}
summary{cursor:pointer;font-weight:600}img{max-width:100%;margin:.4em 0;display:block}.note{color:#555;font-size:13px}
.metrics td:first-child,.settings td:first-child{font-family:monospace}"""


def write_report(out: str | Path, draw: bool = True) -> Path:
    """Draw every picture of the results folder ``out`` and write ``report.html``."""
    results = ResultsDir(out)
    rows = results.rows()
    if not rows:
        raise BottleneckError(f"{out} holds no results", "run `bottleneck compare ... --out FOLDER` first")
    pictures = {r.get("run_key"): draw_run(results, r) if draw else _drawn(results, r) for r in rows}
    grid = draw_grid(results, rows) if draw else [str(p.relative_to(results.out))
                                                  for p in sorted((results.out / "plots").glob("*.png"))]
    parts = [f"<h1>Results in {html.escape(str(results.out))}</h1>",
             f"<p class='note'>{len(rows)} runs; each cell the mean ± std over seeds of the target's main metric on "
             "the dataset's test split.</p>", _markdown_tables_to_html(markdown_table(rows))]
    parts += [_img(results.out / p) for p in grid]
    parts.append("<h2>Runs</h2>")
    for k, r in enumerate(rows):
        metrics = r.get("metrics") or {"accuracy": r.get("accuracy")}
        settings = {k: v for k, v in r.items() if k not in ("metrics", "plots")}
        summary = (f"{r['base']} · {r['dataset']} · {r.get('target', 'class')} · {r['head']} head · "
                   f"N={r['per_class']} · seed {r['seed']}: {r.get('metric', 'accuracy')} "
                   f"{r.get('score', r.get('accuracy')):.4f}")
        rows_html = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                            for k, v in settings.items())
        metrics_html = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in metrics.items()
                               if isinstance(v, (int, float)) and v is not None)
        imgs = "".join(_img(results.out / p) for p in pictures.get(r.get("run_key"), []))
        parts.append(f"<details class='run'{' open' if k == 0 else ''}><summary>{html.escape(summary)}</summary>"
                     f"<h4>metrics</h4><table class='metrics'>{metrics_html}</table>"
                     f"<h4>settings</h4><table class='settings'>{rows_html}</table>{imgs}</details>")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>bottleneck results</title>"
            f"<style>{_CSS}</style></head><body>{''.join(parts)}</body></html>")
    path = results.out / "report.html"
    atomic_write(path, page)
    return path
