#!/usr/bin/env bash
# The main job: compare efficientnet_lite0 on the embedded CIFAR-10 and GTSRB subsets, offline,
# 100 training images per class (GTSRB's subset has 50), and print the accuracy table.
# Extra arguments go to `bottleneck compare` (e.g. --seeds 0,1,2 or --head mlp).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup.sh
exec .venv/bin/bottleneck compare --bases efficientnet_lite0 --datasets cifar10,gtsrb --per-class 100 \
  --data-dir data --cache-dir features --out results "$@"
