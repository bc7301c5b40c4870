#!/usr/bin/env bash
# Export and validate nmc4-v3 (3-D, nmc4-v2 trained on with intact particles).
# Run from the repository root after training (parents first):
#   crackseg train fit -c training/nmc4_v2.yaml
#   crackseg train fit -c training/nmc4_v3.yaml
#   bash training/release_v3.sh
set -euo pipefail
bash training/release.sh nmc4-v3 "${RUN:-runs/nmc4-v3}" \
  "3-D U-Net (full-resolution first level, instance norm), domain-randomised phantoms with intact and damaged particles" \
  "crackseg train fit -c training/nmc4_v2.yaml && crackseg train fit -c training/nmc4_v3.yaml && bash training/release_v3.sh"
