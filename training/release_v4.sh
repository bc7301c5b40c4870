#!/usr/bin/env bash
# Export the nmc4-v4 run (3-D, nmc4-v3 trained on with lobed particle shapes) into models/, validate
# it with the phantom benchmark (inside/outside the training domain, crack-free real geometry)
# and record the result in its model card. Run from the repository root after training:
#   crackseg train fit -c training/nmc4_v2.yaml      # the parent, models/nmc4-v2
#   crackseg train fit -c training/nmc4_v3.yaml      # models/nmc4-v3
#   crackseg train fit -c training/nmc4_v4.yaml
#   bash training/release_v4.sh
set -euo pipefail
RUN=${RUN:-runs/nmc4-v4}
N=${N:-4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
REPRO="crackseg train fit -c training/nmc4_v2.yaml && crackseg train fit -c training/nmc4_v3.yaml && crackseg train fit -c training/nmc4_v4.yaml && bash training/release_v4.sh"

crackseg export "$RUN" -o models/nmc4-v4 --overwrite --quiet --reproduce "$REPRO" \
  --description "3-D U-Net (full-resolution first level, instance norm), domain-randomised phantoms with intact and damaged particles of varied, lobed shapes"
python benchmarks/model_domain.py --model models/nmc4-v4 --n "$N"
crackseg export "$RUN" -o models/nmc4-v4 --overwrite --quiet --reproduce "$REPRO" \
  --description "3-D U-Net (full-resolution first level, instance norm), domain-randomised phantoms with intact and damaged particles of varied, lobed shapes" \
  --validation benchmarks/results/model_domain_nmc4-v4.json
