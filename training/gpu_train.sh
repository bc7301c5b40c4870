#!/usr/bin/env bash
# Train the nmc4-v5 recipe on from nmc4-v5 on a lent GPU machine, in one call, over a fresh
# phantom pool (seeds from 9000, never used by a model card or a benchmark); the checkpoint
# and the training log come back in $OUT.  Usage, with a lent machine (15 minutes of device
# time per session: run benchmarks/gpu_device.sh first, about 6 minutes, then this):
#   bash benchmarks/gpu_wheels.sh                            # here, once
#   device run, carry [".whl"], timeout 600:  bash training/gpu_train.sh STEPS MINUTES
# STEPS sets the cosine schedule's length (default 6000; pick it from the steps/s that
# gpu_device.sh measured), MINUTES stops training earlier (default 6). Back here:
#   RUN=<folder holding checkpoints/last.ckpt> bash training/release.sh ...   (as release_v5.sh)
# then measure it with benchmarks/model_domain.py and benchmarks/crack_support.py before
# shipping anything.
set -uo pipefail
STEPS="${1:-6000}"
MINUTES="${2:-6}"
OUT="${OUT:-/tmp/crackseg-gpu-out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
POOL='{"n_volumes": 28, "n_val": 2, "shape": [96, 96, 96], "seed": 9000,
       "voxel_size_um": [0.16, 0.6], "focus_probability": 0.5, "intact_fraction": [0.0, 0.8],
       "intact_volume_probability": 0.25, "asphericity": [0.1, 0.35], "roughness": [0.05, 0.3],
       "surface_noise_vox": [0.0, 2.0]}'
timeout $((MINUTES * 60 + 120)) python3 -m crackseg train fit -c training/nmc4_v5.yaml \
  --trainer.accelerator gpu --trainer.max_steps "$STEPS" \
  --trainer.max_time "00:00:$(printf %02d "$MINUTES"):00" \
  --trainer.logger.init_args.save_dir "$OUT/runs" --trainer.logger.init_args.name nmc4-v5-gpu \
  --model.init_from models/nmc4-v5 --model.name nmc4-v5-gpu --model.warmup_steps 100 \
  --data.randomized "$POOL" --data.num_workers 8 --data.batch_size 8 \
  --data.samples_per_epoch 4000 2>&1 | tee "$OUT/train.log"
find "$OUT/runs" -name last.ckpt -exec cp {} "$OUT/last.ckpt" \;
find "$OUT/runs" -name metrics.csv -exec cp {} "$OUT/metrics.csv" \;
ls -l "$OUT"
