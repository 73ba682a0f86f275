"""What every lesson shares: where the data and caches are, and the fast (CI) settings."""
from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data"
CACHE = ROOT / "features"
OUT = ROOT / "lab" / "output"


def options(doc: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fast", action="store_true",
                   help="a tiny random-weight base and few images: checks that the lesson runs (used by CI)")
    p.add_argument("--cache-dir", default=str(CACHE))
    p.add_argument("--out", type=Path, default=OUT, help="where tables and plots go (default lab/output)")
    return p.parse_args()


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (where pictures are shown inline)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(path: Path) -> None:
    """A picture the lesson wrote: shown inline in a notebook, named on a terminal."""
    print(f"plot: {path}")
    if in_notebook():
        from IPython.display import Image, display

        display(Image(filename=str(path)))


def base_for(fast: bool) -> dict:
    """The base a lesson uses: EfficientNet-Lite0 with ImageNet weights, or tiny_cnn when fast."""
    if fast:
        return {"base": "tiny_cnn", "weights": "random"}
    return {"base": "efficientnet_lite0", "weights": "imagenet"}
