#!/usr/bin/env bash
# The GPU checks in one call of a lent GPU machine (about 6 minutes):
#   benchmarks/gpu_wheels.sh                                # here, once
#   device run, carry [".whl"], timeout 540:  bash benchmarks/gpu_device.sh
# Installs the carried wheels, times predict on the GPU against the CPU
# (benchmarks/gpu.py) and a short 3-D training (training_speed.py --accelerator gpu);
# the result files land in $OUT (and benchmarks/results/ there).
set -uo pipefail
OUT="${OUT:-/tmp/crackseg-gpu-out}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
timeout 300 python3 benchmarks/gpu.py --size 512 --agree-size 160 2>&1 | tee "$OUT/gpu.log"
cp benchmarks/results/gpu.json "$OUT/" 2>/dev/null
timeout 180 python3 benchmarks/training_speed.py --recipes 3-D --accelerator gpu --steps 100 \
  --out "$OUT/training_speed_gpu.json" 2>&1 | tee "$OUT/training.log"
ls -l "$OUT"
