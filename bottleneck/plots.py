"""Pictures of results, drawn with matplotlib's headless backend."""
from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    return plt


def precision_recall_scatter(row: dict, path: str | Path) -> Path:
    """Each label of a multi-label result as a dot at (recall, precision), its size the
    label's support (positive test images), as the road-safety model was judged."""
    plt = _pyplot()
    metrics = row["metrics"]
    labels = [k.split("/", 1)[1] for k in metrics if k.startswith("precision/")]
    support = [metrics[f"support/{lab}"] for lab in labels]
    biggest = max(support) or 1
    fig, ax = plt.subplots(figsize=(7, 6), dpi=110)
    for lab, n in zip(labels, support):
        x, y = metrics[f"recall/{lab}"], metrics[f"precision/{lab}"]
        ax.scatter(x, y, s=20 + 600 * n / biggest, alpha=0.5)
        ax.annotate(lab, (x, y), fontsize=7, ha="center", va="center")
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    title = f"{row['base']} on {row['dataset']}, target {row['target']}: mAP {metrics.get('mAP', float('nan')):.3f}"
    ax.set_title(title + f"\n{row['n_train']} training images, {row['head']} head; dot size = positive test images",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
