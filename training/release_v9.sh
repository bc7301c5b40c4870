#!/usr/bin/env bash
# Export and validate nmc4-v9 (3-D, nmc4-v5 trained on over a fresh pool at a lower learning rate).
# Run from the repository root after training:
#   crackseg train fit -c training/nmc4_v2.yaml      # parents: models/nmc4-v2 ... -v5
#   crackseg train fit -c training/nmc4_v3.yaml
#   crackseg train fit -c training/nmc4_v4.yaml
#   crackseg train fit -c training/nmc4_v5.yaml
#   crackseg train fit -c training/nmc4_v9.yaml
#   python benchmarks/crack_support.py --model models/nmc4-v9   # checks the clean-up threshold
#   bash training/release_v9.sh
set -euo pipefail
bash training/release.sh --crack-solid-contact 0.6 nmc4-v9 "${RUN:-runs/nmc4-v9}" \
  "3-D U-Net (full-resolution first level, instance norm), domain-randomised phantoms with intact and damaged particles of varied, lobed shapes and rough surfaces; nmc4-v5 trained on over a fresh pool" \
  "crackseg train fit -c training/nmc4_v2.yaml && crackseg train fit -c training/nmc4_v3.yaml && crackseg train fit -c training/nmc4_v4.yaml && crackseg train fit -c training/nmc4_v5.yaml && crackseg train fit -c training/nmc4_v9.yaml && bash training/release_v9.sh"
