"""Pictures of results, drawn with matplotlib's headless backend.

Every picture is made from what a results folder keeps (the rows, and each run's
predictions in ``rows/<run>.npz``), so ``bottleneck report`` can draw them again later.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from bottleneck.core.files import atomic_write
from bottleneck.data.labelmaps import class_palette, label_palette


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    # Text in pictures comes from data (class names from folder names, codes.txt): never parse it as math
    # ($\foo$ would crash the drawing) or hand it to TeX.
    matplotlib.rcParams.update({"text.parse_math": False, "text.usetex": False})
    import matplotlib.pyplot as plt

    return plt


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def _save(fig, path, tight: bool = True) -> Path:
    """Write the picture atomically (a link planted at ``path`` is replaced, never written through)."""
    if tight:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    atomic_write(Path(path), buffer.getvalue())
    return Path(path)


def _title(row: dict) -> str:
    n = row["per_class"] if row.get("per_class") is not None else "all"
    return (f"{row['base']} on {row['dataset']}, target {row.get('target', 'class')}, {row['head']} head,\n"
            f"N={n}, seed {row['seed']}: {row.get('metric', 'accuracy')} {row.get('score', row.get('accuracy')):.3f}")


def confusion_matrix(row: dict, y_true, y_pred, class_names: list[str], path) -> Path:
    """Rows: true classes; columns: predicted; each row normalized to 1. Readable up to ~50 classes."""
    plt = _pyplot()
    n = len(class_names)
    counts = np.zeros((n, n))
    np.add.at(counts, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = max(8.0, 0.3 * n + 3)
    fig, ax = plt.subplots(figsize=(side, side), dpi=100)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [_short(c) for c in class_names]
    font = 9 if n <= 12 else 6
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    if n <= 15:
        for i in range(n):
            for j in range(n):
                if share[i, j] >= 0.01:
                    ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(_title(row) + "\nconfusion matrix, each row normalized", fontsize=9)
    return _save(fig, path)


def per_class_accuracy(row: dict, y_true, y_pred, class_names: list[str], path) -> Path:
    """Each class's accuracy (recall), sorted, with its number of test images."""
    plt = _pyplot()
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    present = [c for c in range(len(class_names)) if (y_true == c).any()]
    acc = {c: float(np.mean(y_pred[y_true == c] == c)) for c in present}
    order = sorted(present, key=lambda c: acc[c])
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.22 * len(order) + 1.5)), dpi=100)
    ax.barh([f"{_short(class_names[c])} ({int((y_true == c).sum())})" for c in order], [acc[c] for c in order],
            color="tab:blue", alpha=0.75)
    ax.axvline(float(np.mean(y_pred == y_true)), color="tab:red", lw=1, label="overall")
    ax.set_xlim(0, 1)
    ax.tick_params(axis="y", labelsize=7 if len(order) > 15 else 9)
    ax.set_xlabel("accuracy (test images of the class)")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(_title(row), fontsize=9)
    return _save(fig, path)


def image_grid(row: dict, thumbs: np.ndarray, true_text: list[str], pred_text: list[str], path,
               boxes_true=None, boxes_pred=None) -> Path:
    """Test images with their true and predicted label (errors first, titled in red), or with
    the true (green) and predicted (red) boxes."""
    plt = _pyplot()
    n = len(thumbs)
    cols = 8
    rows_ = max(1, -(-n // cols))
    fig, axes = plt.subplots(rows_, cols, figsize=(cols * 1.6, rows_ * 1.9), dpi=100, squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        ax.imshow(thumbs[k])
        if boxes_true is not None:
            size = thumbs[k].shape[0]
            for box, colour in ((boxes_true[k], "lime"), (boxes_pred[k], "red")):
                x1, y1, x2, y2 = np.asarray(box) * size
                ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=colour, lw=1.5))
            ax.set_title(pred_text[k], fontsize=6)
        else:
            wrong = true_text[k] != pred_text[k]
            ax.set_title(f"{_short(true_text[k], 18)}\n→ {_short(pred_text[k], 18)}", fontsize=6,
                         color="tab:red" if wrong else "black")
    legend = "green: true box, red: predicted" if boxes_true is not None else "true → predicted; errors first, in red"
    fig.suptitle(_title(row) + f"\n{legend}", fontsize=9)
    return _save(fig, path)


def training_curves(row: dict, history: dict, path) -> Path:
    """Loss (and accuracy) per epoch of a Keras head, training and validation."""
    plt = _pyplot()
    keys = [k for k in ("loss", "accuracy") if k in history]
    fig, axes = plt.subplots(1, len(keys), figsize=(max(7, 5 * len(keys)), 3.8), dpi=100, squeeze=False)
    for ax, key in zip(axes[0], keys):
        ax.plot(range(1, len(history[key]) + 1), history[key], label="training")
        if f"val_{key}" in history:
            ax.plot(range(1, len(history[f"val_{key}"]) + 1), history[f"val_{key}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_title(row), fontsize=9)
    return _save(fig, path)


def score_vs_limit(rows: list[dict], path) -> Path:
    """The main metric against training images per class, one line per base (and head,
    dataset, target, recipe, unlabeled images), with error bars over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    lines: dict[tuple, dict] = {}
    for r in rows:
        if r.get("per_class") is None:
            continue
        key = (r["base"], r["head"], r["dataset"], r.get("target", "class"), _protocol(r))
        lines.setdefault(key, {}).setdefault(int(r["per_class"]), []).append(r.get("score", r.get("accuracy")))
    metrics = sorted({r.get("metric", "accuracy") for r in rows})
    for (base, head, dataset, target, protocol), by_n in sorted(lines.items()):
        ns = sorted(by_n)
        means = [np.mean(by_n[n]) for n in ns]
        errs = [np.std(by_n[n], ddof=1) if len(by_n[n]) > 1 else 0.0 for n in ns]
        ax.errorbar(ns, means, yerr=errs, marker="o", capsize=3,
                    label=f"{base}, {head}, {dataset} {target}{protocol}")
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    limits = sorted({int(r["per_class"]) for r in rows if r.get("per_class") is not None})
    ax.set_xticks(limits, [str(n) for n in limits])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("training images per class (N)")
    ax.set_ylabel(" / ".join(metrics))
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    ax.set_title("mean ± std over seeds", fontsize=9)
    return _save(fig, path)


def _protocol(row: dict) -> str:
    """What else makes a line its own: the recipe, the unlabeled images and how they were used."""
    parts = [f"recipe={row['recipe']}"] if row.get("recipe") else []
    if row.get("unlabeled"):
        parts.append(f"unlabeled={row['unlabeled']} ({row.get('semi')})")
    return "".join(f", {p}" for p in parts)


def _unlabeled_order(value) -> float:
    return math.inf if value == "all" else float(value or 0)


def score_vs_unlabeled(rows: list[dict], path) -> Path:
    """The main metric against the unlabeled images per class (0, 100, ..., all), one line per
    base, dataset, recipe, labelled draw and semi-supervised method (each starting from the same
    rows without unlabeled images), with error bars over seeds. The x axis is ordinal: "all" is
    every other image of the training split, its mean count per class written under it."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    values = sorted({r.get("unlabeled") or 0 for r in rows}, key=_unlabeled_order)
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["base"], r["dataset"], r.get("target", "class"), r.get("recipe"), r.get("per_class"))
        groups.setdefault(key, []).append(r)
    for (base, dataset, target, recipe, n), mine in sorted(groups.items(), key=lambda kv: str(kv[0])):
        start = [r for r in mine if not r.get("unlabeled")]
        for method in sorted({r.get("semi") for r in mine if r.get("unlabeled")}):
            by_u = {0: [r.get("score", r.get("accuracy")) for r in start]} if start else {}
            for r in mine:
                if r.get("unlabeled") and r.get("semi") == method:
                    by_u.setdefault(r["unlabeled"], []).append(r.get("score", r.get("accuracy")))
            us = sorted(by_u, key=_unlabeled_order)
            ax.errorbar([values.index(u) for u in us], [np.mean(by_u[u]) for u in us],
                        yerr=[np.std(by_u[u], ddof=1) if len(by_u[u]) > 1 else 0.0 for u in us], marker="o",
                        capsize=3, label=f"{base}, {dataset} {target}" + (f", recipe={recipe}" if recipe else "")
                        + f", N={n if n is not None else 'all'}, {method}")
    every: dict[str, list] = {}  # what "all" was, per dataset: its images outside the draw, per class
    for r in rows:
        if r.get("unlabeled") == "all" and r.get("n_unlabeled"):
            every.setdefault(r["dataset"], []).append(r["n_unlabeled"] / max(1, r.get("n_classes", 1)))
    all_text = "all" + "".join(f"\n{d} ~{np.mean(v):,.0f}" for d, v in every.items())
    ax.set_xticks(range(len(values)), [all_text if v == "all" else str(v) for v in values])
    ax.set_xlabel("unlabeled images per class (the rest of the training split, labels never read)")
    ax.set_ylabel(" / ".join(sorted({r.get("metric", "accuracy") for r in rows})))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("mean ± std over seeds", fontsize=9)
    return _save(fig, path)


def precision_recall_scatter(row: dict, path: str | Path) -> Path:
    """Each label of a multi-label result as a dot at (recall, precision), its size the
    label's support (positive test images), as the road-safety model was judged; beside
    it, every label's F1 as a bar, so that crowded labels stay readable."""
    plt = _pyplot()
    metrics = row["metrics"]
    labels = [k.split("/", 1)[1] for k in metrics if k.startswith("precision/")]
    support = [metrics[f"support/{lab}"] for lab in labels]
    recall = [metrics[f"recall/{lab}"] for lab in labels]
    precision = [metrics[f"precision/{lab}"] for lab in labels]
    biggest = max(support) or 1
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(12, max(5, 0.22 * len(labels) + 1.5)), dpi=110,
                                   gridspec_kw={"width_ratios": [3, 2]})
    ax.scatter(recall, precision, s=[20 + 600 * n / biggest for n in support], alpha=0.45, c=range(len(labels)),
               cmap="tab20")
    for lab, x, y in zip(labels, recall, precision):
        ax.annotate(lab, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    low = min(min(recall), min(precision), 0.5) - 0.05
    ax.set_xlim(low, 1.03)
    ax.set_ylim(low, 1.03)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.set_title("each label: dot size = positive test images", fontsize=9)
    order = sorted(range(len(labels)), key=lambda j: metrics[f"f1/{labels[j]}"])
    bars.barh([f"{labels[j]} ({int(support[j])})" for j in order], [metrics[f"f1/{labels[j]}"] for j in order],
              color="tab:blue", alpha=0.7)
    bars.set_xlim(0, 1)
    bars.tick_params(axis="y", labelsize=7)
    bars.set_xlabel("F1 (positive test images)")
    bars.grid(axis="x", alpha=0.3)
    fig.suptitle(_title(row), fontsize=10)
    return _save(fig, path)


def predicted_vs_true(row: dict, y_true, y_pred, names: list[str], path) -> Path:
    """Regression: each output's predictions against the truth, with the diagonal."""
    plt = _pyplot()
    k = len(names)
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 3.4), dpi=100, squeeze=False)
    for j, ax in enumerate(axes[0]):
        ax.scatter(y_true[:, j], y_pred[:, j], s=4, alpha=0.4)
        lo, hi = float(min(y_true[:, j].min(), y_pred[:, j].min())), float(max(y_true[:, j].max(), y_pred[:, j].max()))
        ax.plot([lo, hi], [lo, hi], color="tab:red", lw=1)
        ax.set_xlabel(f"true {names[j]}")
        ax.set_ylabel(f"predicted {names[j]}")
        ax.grid(alpha=0.3)
    fig.suptitle(_title(row), fontsize=9)
    return _save(fig, path)


def colour_map(labels: np.ndarray, n_classes: int, void: int) -> np.ndarray:
    """Class ids as colours (CamVid's own palette for up to 11 classes); Void black."""
    out = label_palette(n_classes)[np.minimum(labels, 255)]
    out[labels == void] = 0
    return out


def segmentation_grid(row: dict, images, truth, pred, class_names: list[str], void: int, path) -> Path:
    """Test frames, their true maps and the predicted ones, in CamVid's colours, with a legend."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(11, 2.6 * n + 1), dpi=90, squeeze=False)
    for k in range(n):
        for ax, picture, title in zip(axes[k], (images[k], colour_map(truth[k], len(class_names), void),
                                                colour_map(pred[k], len(class_names), void)),
                                      ("frame", "true classes", "predicted")):
            ax.imshow(picture)
            ax.axis("off")
            if k == 0:
                ax.set_title(title, fontsize=9)
    from matplotlib.patches import Patch

    palette = class_palette(len(class_names)) / 255.0
    fig.legend(handles=[Patch(color=palette[i], label=c) for i, c in enumerate(class_names)], loc="lower center",
               ncol=min(6, len(class_names)), fontsize=8)
    fig.suptitle(_title(row), fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    return _save(fig, path, tight=False)


def iou_bars(row: dict, class_names: list[str], path) -> Path:
    """Each class's IoU on the test frames, sorted, with the mean."""
    plt = _pyplot()
    metrics = row["metrics"]
    values = [(c, metrics.get(f"iou/{c}")) for c in class_names]
    values = sorted(((c, v) for c, v in values if v is not None and v == v), key=lambda cv: cv[1])
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(values) + 1.5), dpi=100)
    palette = class_palette(len(class_names)) / 255.0
    ax.barh([c for c, _ in values], [v for _, v in values],
            color=[palette[class_names.index(c)] for c, _ in values], edgecolor="black", lw=0.3)
    ax.axvline(metrics["miou"], color="tab:red", lw=1, label=f"mean IoU {metrics['miou']:.3f}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU on the test frames")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(_title(row), fontsize=9)
    return _save(fig, path)


def detection_grid(row: dict, images, sizes, scales, truth, found, class_names: list[str], path,
                   min_score: float = 0.3) -> Path:
    """Test scenes with their true boxes (white, dashed) and the detections scoring at least
    ``min_score`` (coloured by class, with the class and score)."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    n = len(images)
    cols = 2 if n > 1 else 1
    rows_ = -(-n // cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(7 * cols, 4.3 * rows_ + 0.6), dpi=90, squeeze=False)
    palette = class_palette(max(len(class_names), 12)) / 255.0
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k >= n:
            continue
        h, w = sizes[k]
        ax.imshow(images[k][:h, :w])
        s = float(scales[k])
        for x1, y1, x2, y2, _ in truth[k]:
            ax.add_patch(Rectangle((x1 * s, y1 * s), (x2 - x1) * s, (y2 - y1) * s, fill=False, ec="white", lw=1.2,
                                   ls="--"))
        for x1, y1, x2, y2, c, score in found[k]:
            if score < min_score:
                continue
            colour = palette[int(c) % len(palette)]
            ax.add_patch(Rectangle((x1 * s, y1 * s), (x2 - x1) * s, (y2 - y1) * s, fill=False, ec=colour, lw=1.4))
            ax.text(x1 * s, y1 * s - 2, f"{_short(class_names[int(c)], 18)} {score:.2f}", color="white", fontsize=6,
                    bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "lw": 0})
        ax.set_title(f"{len(truth[k])} true (dashed), {int((found[k][:, 5] >= min_score).sum())} found "
                     f"(score >= {min_score})", fontsize=8)
    fig.suptitle(_title(row), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path, tight=False)


def precision_recall_curves(row: dict, curves, class_names: list[str], path) -> Path:
    """Precision against recall at IoU .50 (COCO's interpolated curve) for each class with
    test objects, its AP50 in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.8), dpi=100)
    recall = np.linspace(0, 1, curves.shape[1])
    present = [k for k in range(len(class_names)) if np.isfinite(curves[k]).all()]
    palette = class_palette(max(len(class_names), 12)) / 255.0
    for k in present:
        ap = row["metrics"].get(f"ap50/{class_names[k]}", float(np.mean(curves[k])))
        ax.plot(recall, curves[k], color=palette[k % len(palette)], lw=1.5 if len(present) <= 10 else 0.8,
                label=f"{_short(class_names[k], 24)} (AP50 {ap:.2f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision (interpolated)")
    if len(present) <= 12:
        ax.legend(loc="lower left", fontsize=7)
    ax.set_title(f"{_title(row)}\nmAP50 {row['metrics'].get('map50', float('nan')):.3f} over {len(present)} classes",
                 fontsize=9)
    return _save(fig, path)
