"""Detect then classify against the direct 43-class detector on GTSDB's 300 test scenes.

The two-stage pipeline (``bottleneck.detect_then_classify``): GTSDB's category detector, each box
named by a GTSRB sign classifier (recipe ``best``, every GTSRB training image) within its
category. The direct detector: ``bottleneck train --dataset gtsdb --target signs``. Both scored by
COCO's evaluation on GTSDB's 43 classes.

    .venv/bin/python bench/detect_then_classify.py --data-dir ../shared/datasets --cache-dir features
"""
from __future__ import annotations

import argparse
import json
import resource
import time

from bottleneck.experiments.run import train
from bottleneck.experiments.two_stage import detect_then_classify


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="efficientnet_lite0")
    p.add_argument("--data-dir", default="../shared/datasets")
    p.add_argument("--cache-dir", default="features")
    p.add_argument("--classifier-cache-dir", help="where GTSRB's features are cached (default --cache-dir)")
    p.add_argument("--recipe", default="best", help="the sign classifier's recipe")
    p.add_argument("--skip-direct", action="store_true", help="only the two-stage pipeline")
    a = p.parse_args()
    t = time.time()
    two = detect_then_classify(a.base, data_dir=a.data_dir, cache_dir=a.cache_dir, classifier_recipe=a.recipe,
                               classifier_cache_dir=a.classifier_cache_dir)
    out = {"two_stage": two["metrics"], "crops": two["crops"], "crops_on_signs": two["crops_on_signs"],
           "crop_accuracy": two["crop_accuracy"], "category_detector": two["detector"]["metrics"],
           "two_stage_seconds": round(time.time() - t, 1)}
    if not a.skip_direct:
        direct = train(a.base, "gtsdb", None, target="signs", data_dir=a.data_dir, cache_dir=a.cache_dir,
                       progress=False)
        out["direct"] = direct["metrics"]
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
