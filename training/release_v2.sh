#!/usr/bin/env bash
# Export the nmc4-v2 (3-D) and nmc4-2d-v2 (2-D) runs into models/, validate them with the
# benchmarks (phantoms inside/outside the training domain, real images zero-shot, speed) and
# record the results in the model cards. Run from the repository root after training:
#   crackseg train fit -c training/nmc4_v2.yaml
#   crackseg train fit -c training/nmc4_2d_v2.yaml
#   bash training/release_v2.sh
set -euo pipefail
RUN3=${RUN3:-runs/nmc4-v2}
RUN2=${RUN2:-runs/nmc4-2d-v2}
N3=${N3:-4}
N2=${N2:-2}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

crackseg export "$RUN3" -o models/nmc4-v2 --overwrite --quiet \
  --reproduce "crackseg train fit -c training/nmc4_v2.yaml && bash training/release_v2.sh"
crackseg export "$RUN2" -o models/nmc4-2d-v2 --overwrite --quiet \
  --reproduce "crackseg train fit -c training/nmc4_2d_v2.yaml && bash training/release_v2.sh"

python benchmarks/zero_shot_real.py --model models/nmc4-2d-v2
python benchmarks/model_domain.py --model models/nmc4-v2 --n "$N3"
python benchmarks/model_domain.py --model models/nmc4-2d-v2 --n "$N2"

crackseg export "$RUN3" -o models/nmc4-v2 --overwrite --quiet \
  --reproduce "crackseg train fit -c training/nmc4_v2.yaml && bash training/release_v2.sh" \
  --validation benchmarks/results/model_domain_nmc4-v2.json
crackseg export "$RUN2" -o models/nmc4-2d-v2 --overwrite --quiet \
  --reproduce "crackseg train fit -c training/nmc4_2d_v2.yaml && bash training/release_v2.sh" \
  --validation benchmarks/results/model_domain_nmc4-2d-v2.json benchmarks/results/zero_shot_real.json
