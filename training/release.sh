#!/usr/bin/env bash
# Export a training run into models/NAME, validate it with the phantom benchmark (inside and
# outside the training domain, crack-free real geometry) and record the result in its model card.
# Run from the repository root after training:
#   bash training/release.sh [--crack-solid-contact F] NAME RUN "DESCRIPTION" "REPRODUCE" \
#     [extra model_domain.py arguments]
# --crack-solid-contact records the card's crack clean-up threshold (crackseg.crack_support;
# chosen with benchmarks/crack_support.py on seeds the validation never uses).
# e.g. bash training/release_v5.sh (which calls this with the nmc4-v5 settings).
# N (default 4) sets the phantoms per benchmark row.
set -euo pipefail
EXPORT_EXTRA=()
if [ "${1:-}" = "--crack-solid-contact" ]; then
  EXPORT_EXTRA=(--crack-solid-contact "$2"); shift 2
fi
if [ $# -lt 4 ]; then
  echo "usage: bash training/release.sh NAME RUN DESCRIPTION REPRODUCE [model_domain.py args]" >&2
  exit 2
fi
NAME=$1; RUN=$2; DESC=$3; REPRO=$4; shift 4
N=${N:-4}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

crackseg export "$RUN" -o "models/$NAME" --overwrite --quiet --reproduce "$REPRO" --description "$DESC" \
  "${EXPORT_EXTRA[@]}"
python benchmarks/model_domain.py --model "models/$NAME" --n "$N" "$@"
crackseg export "$RUN" -o "models/$NAME" --overwrite --quiet --reproduce "$REPRO" --description "$DESC" \
  --validation "benchmarks/results/model_domain_$NAME.json" "${EXPORT_EXTRA[@]}"
