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


def base_for(fast: bool) -> dict:
    """The base a lesson uses: EfficientNet-Lite0 with ImageNet weights, or tiny_cnn when fast."""
    if fast:
        return {"base": "tiny_cnn", "weights": "random"}
    return {"base": "efficientnet_lite0", "weights": "imagenet"}
