"""Predict speed of shipped models at default settings (``crackseg predict``'s path), one thread.

``speed.py`` compares tilings with one fixed network; this script compares the
networks users get: each model directory given is timed on the same phantom
volume with :func:`crackseg.inference.predict_volume` at its defaults (the
automatic scale check included), after one warm-up run.

Run: ``python benchmarks/model_speed.py --models models/nmc4-synthetic-v1 models/nmc4-v2
[--size 160] [--repeats 2] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, log, machine_info, write_results  # noqa: E402


def time_model(path, image, repeats: int) -> dict:
    """Median seconds and Mvoxel/s of ``predict_volume`` with one model on ``image``."""
    from crackseg.inference import predict_volume
    from crackseg.model_io import load_model

    model = load_model(path)
    predict_volume(model, image[:64, :64, :64], progress=False, device="cpu")   # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pred = predict_volume(model, image, progress=False, device="cpu")
        times.append(time.perf_counter() - t0)
    t = float(np.median(times))
    return {"model": model[1].get("name"), "seconds": round(t, 2),
            "mvoxel_per_s": round(image.size / t / 1e6, 3),
            "settings": {k: pred.provenance["settings"][k] for k in ("roi_size", "halo", "scale")}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[str(ROOT / "models" / "nmc4-synthetic-v1")])
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    import torch

    from crackseg.synthetic import generate_electrode

    torch.set_num_threads(1)
    started = time.time()
    size = 64 if args.quick else args.size
    image = generate_electrode((size,) * 3, seed=3).image
    rows = []
    for m in args.models:
        log(f"{m} on {size}^3")
        rows.append(time_model(m, image, 1 if args.quick else args.repeats))
        print(rows[-1])
    if len(rows) > 1:
        base = rows[0]["mvoxel_per_s"]
        for r in rows:
            r["speed_vs_first"] = round(r["mvoxel_per_s"] / base, 3)
    path = write_results("model_speed", {"size": size, "threads": 1, "rows": rows},
                         quick=args.quick, machine=machine_info(), started=started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
