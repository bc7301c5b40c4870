"""Fine-tuning the shipped model for other imaging settings, with 10 annotated slices.

A phantom is rendered with imaging settings the shipped model never saw
(more noise, more blur, stronger phase-contrast fringes, stronger drift, and a
gamma change of contrast).  Ten of its slices are annotated (5 along z, 5
along y); ``crackseg finetune`` adapts the shipped model within a time budget
(default 10 minutes).  The base and fine-tuned models are evaluated on
held-out phantoms of the same shifted setting, per class, over all voxels.
Results go to ``benchmarks/results/finetune_shift.json``.

Usage::

    python benchmarks/finetune_shift.py [--model models/nmc4-synthetic-v1] [--minutes 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHIFTED = {"snr": 4.0, "blur_sigma": 1.8, "phase_contrast": 0.9, "drift": 0.3,
           "dtype": "float32"}
GAMMA = 0.6


def shifted_phantom(shape, seed: int):
    """Phantom with the shifted imaging settings; returns (image, labels)."""
    from crackseg.synthetic import generate_electrode

    ph = generate_electrode(tuple(shape), seed=seed, **SHIFTED)
    img = np.asarray(ph.image, dtype=np.float32)
    lo, hi = np.percentile(img, [0.1, 99.9])
    img = np.clip((img - lo) / (hi - lo), 0, 1) ** GAMMA * 4000.0 + 1000.0
    return img.astype(np.float32), np.asarray(ph.labels, dtype=np.uint8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "nmc4-synthetic-v1"))
    p.add_argument("--minutes", type=float, default=10.0, help="fine-tuning time budget")
    p.add_argument("--max-steps", type=int, default=3000)
    p.add_argument("--shape", type=int, nargs=3, default=[96, 96, 96])
    p.add_argument("--seed", type=int, default=2000, help="seed of the annotated phantom")
    p.add_argument("--n-test", type=int, default=2, help="held-out phantoms (next seeds)")
    p.add_argument("--slices", type=int, default=10, help="annotated slices (half z, half y)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "finetune_shift.json"))
    args = p.parse_args(argv)

    from crackseg.io import write_volume
    from crackseg.synthetic import sparse_labels
    from crackseg.training import evaluate_model

    img, labels = shifted_phantom(args.shape, args.seed)
    per_axis = args.slices // 2
    every = int(np.ceil(args.shape[0] / per_axis))
    sparse = sparse_labels(labels, every=every, axes=(0, 1), seed=args.seed)
    n_slices = sum(int((sparse != 255).all(axis=tuple(b for b in range(3) if b != a)).sum())
                   for a in (0, 1))
    test = [shifted_phantom(args.shape, args.seed + 1 + i) for i in range(args.n_test)]
    base = evaluate_model(args.model, test)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_volume(tmp / "image.tif", img, (0.5, 0.5, 0.5))
        write_volume(tmp / "labels.tif", sparse, (0.5, 0.5, 0.5))
        cmd = [sys.executable, "-m", "crackseg", "finetune", "--model", args.model,
               "--image", str(tmp / "image.tif"), "--labels", str(tmp / "labels.tif"),
               "-o", str(tmp / "model"), "--max-minutes", str(args.minutes),
               "--max-steps", str(args.max_steps), "--quiet", "--run-dir", str(tmp / "run")]
        load0 = os.getloadavg()
        t0 = time.time()
        subprocess.run(cmd, check=True)
        seconds = time.time() - t0
        tuned = evaluate_model(tmp / "model", test)
        card = json.loads((tmp / "model" / "model_card.json").read_text())
    result = {
        "shifted_imaging": {**SHIFTED, "gamma": GAMMA},
        "annotated_phantom": {"seed": args.seed, "shape": args.shape, "annotated_slices": n_slices,
                              "slice_spacing": every, "axes": [0, 1]},
        "test_phantoms": {"seeds": [args.seed + 1 + i for i in range(args.n_test)],
                          "shape": args.shape, "voxels": "all"},
        "base_model": {"model": args.model, **base},
        "finetuned": {**tuned, "seconds": round(seconds, 1),
                      "steps": card["training"]["finetune"]["steps_done"],
                      "budget_minutes": args.minutes},
        "claim": "crack Dice >= 0.75 after <= 10 minutes of fine-tuning on 2 CPU cores",
        "claim_met": bool((tuned["dice"].get("crack") or 0) >= 0.75 and seconds <= 60 * 10 + 60),
        "command": " ".join([sys.executable, *sys.argv]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "load_average_at_start": [round(v, 2) for v in load0]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    names = list(base["dice"])
    print(f"{'model':12} " + " ".join(f"{n:>9}" for n in names))
    for key, r in (("base", base), ("fine-tuned", tuned)):
        print(f"{key:12} " + " ".join(f"{(r['dice'][n] or float('nan')):9.3f}" for n in names))
    print(f"fine-tuning: {result['finetuned']['steps']} steps in {seconds:.0f} s "
          f"on {os.cpu_count()} CPUs (load {load0[0]:.1f}); written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
