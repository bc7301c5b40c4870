#!/usr/bin/env bash
# Export and validate nmc4-v4 (3-D, nmc4-v3 trained on with lobed particle shapes).
# Run from the repository root after training (parents first):
#   crackseg train fit -c training/nmc4_v2.yaml
#   crackseg train fit -c training/nmc4_v3.yaml
#   crackseg train fit -c training/nmc4_v4.yaml
#   bash training/release_v4.sh
set -euo pipefail
bash training/release.sh nmc4-v4 "${RUN:-runs/nmc4-v4}" \
  "3-D U-Net (full-resolution first level, instance norm), domain-randomised phantoms with intact and damaged particles of varied, lobed shapes" \
  "crackseg train fit -c training/nmc4_v2.yaml && crackseg train fit -c training/nmc4_v3.yaml && crackseg train fit -c training/nmc4_v4.yaml && bash training/release_v4.sh"
