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
    fig.suptitle(f"{row['base']} on {row['dataset']}, target {row['target']}: mAP {metrics.get('mAP', float('nan')):.3f}; "
                 f"{row['n_train']} training images, {row['head']} head", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
