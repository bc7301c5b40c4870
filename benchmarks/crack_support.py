"""Crack clean-up threshold: accuracy and false damage against ``min_crack_solid_contact``.

A 3-D model's raw prediction (its card's clean-up switched off) on phantoms of
:mod:`benchmarks.model_domain`'s kinds, drawn from seeds that benchmark never
uses, is cleaned with :func:`crackseg.crack_support.drop_unsupported_cracks`
at each threshold of a sweep. Per threshold: per-class Dice (all voxels, dense
truth) on held-out training-range phantoms, the fixed imaging model and real
(MATBOX) particle shapes, and the share of crack-free MATBOX particles the
pipeline reports with damage above 0.01. The threshold a card ships is then
validated on ``model_domain.py``'s own seeds.

Run: ``python benchmarks/crack_support.py [--model DIR] [--n N] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, log, machine_info, write_results  # noqa: E402
from benchmarks.model_domain import KIND_OFFSET, SEED0, _volume, damaged_share  # noqa: E402

TUNING_OFFSET = 1000
"""Seeds SEED0 + 1000 + kind offset: disjoint from model_domain.py's."""
KINDS = {k: KIND_OFFSET[k] for k in ("randomized", "fixed_imaging", "matbox", "crack_free")}
THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7)


def raw_predictions(model, n: int, shape, appearance) -> dict:
    """(labels, truth) per kind, predicted without the card's clean-up."""
    from crackseg.inference import predict_volume

    net, card = model
    raw = (net, {k: v for k, v in card.items() if k != "postprocess"})
    out = {}
    for kind, off in KINDS.items():
        out[kind] = []
        for i in range(n):
            image, truth = _volume(kind, SEED0 + TUNING_OFFSET + off + i, shape, appearance)
            seg = np.asarray(predict_volume(raw, image, progress=False, device="cpu").labels)
            out[kind].append((seg, truth))
    return out


def sweep(preds: dict, thresholds) -> list[dict]:
    """One row per threshold (0 = no clean-up)."""
    from crackseg.crack_support import drop_unsupported_cracks
    from crackseg.metrics import dice_per_class

    def clean(seg, t):
        return drop_unsupported_cracks(seg, min_solid_contact=t)[0] if t > 0 else seg

    rows = []
    for t in thresholds:
        row = {"min_crack_solid_contact": t}
        for kind in ("randomized", "fixed_imaging", "matbox"):
            segs = [clean(s, t).ravel() for s, _ in preds[kind]]
            d = dice_per_class(np.concatenate(segs), np.concatenate([tr.ravel() for _, tr in preds[kind]]))
            row[kind] = {k: round(v, 4) for k, v in d.items()}
        dam, tot = damaged_share([clean(s, t) for s, _ in preds["crack_free"]])
        row["crack_free_damaged_share"] = round(dam / tot, 4) if tot else None
        row["crack_free_particles"] = tot
        rows.append(row)
        print(row)
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "nmc4-v5"))
    ap.add_argument("--n", type=int, default=4, help="phantoms per kind")
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 96, 96])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    from crackseg.model_io import load_model
    from crackseg.synthetic.randomize import AppearanceRanges

    started = time.time()
    model = load_model(args.model)
    card = model[1]
    if int(card["spatial_dims"]) != 3:
        raise SystemExit("crack_support.py: give a 3-D model")
    appearance = AppearanceRanges.from_dict((card.get("training_domain") or {}).get("appearance_ranges"))
    n = 1 if args.quick else args.n
    shape = (32, 48, 48) if args.quick else tuple(args.shape)
    log(f"{card.get('name')}: {n} phantoms of {shape} per kind")
    rows = sweep(raw_predictions(model, n, shape, appearance),
                 (0.0, 0.5) if args.quick else THRESHOLDS)
    res = {"model": card.get("name"), "model_sha256": card.get("weights_sha256"),
           "card_threshold": (card.get("postprocess") or {}).get("min_crack_solid_contact"),
           "seeds": {k: SEED0 + TUNING_OFFSET + v for k, v in KINDS.items()},
           "n_per_kind": n, "shape": list(shape), "rows": rows}
    name = f"crack_support_{card.get('name')}"
    print(f"wrote {write_results(name, res, quick=args.quick, machine=machine_info(), started=started)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
