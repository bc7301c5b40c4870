"""Predict on a GPU: speed of the shipped models and agreement with the CPU.

On a machine with CUDA, each model is timed with
:func:`crackseg.inference.predict_volume` (the path of ``crackseg predict``,
default settings, ``device="cuda"``) on a phantom of ``--size`` voxels per
edge, after a warm-up, in fp32 and bf16; on a smaller phantom
(``--agree-size``) the GPU labels are compared with the CPU labels (Dice per
class, share of voxels that differ).  ``benchmarks/gpu_device.sh`` runs this
and a short GPU training (``training_speed.py --accelerator gpu``) in one
call of a lent GPU machine.

Usage::

    python benchmarks/gpu.py [--size 512] [--agree-size 160] [--models DIR ...]
    python benchmarks/gpu.py --quick     # 48^3 on whatever device there is (CPU here)

Writes ``benchmarks/results/gpu.json`` (``gpu_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, log, machine_info, markdown_table, write_results  # noqa: E402

MODELS = [str(ROOT / "models" / "nmc4-synthetic-v1"), str(ROOT / "models" / "nmc4-v5")]


def _synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_predict(model, image, device: str, precision: str) -> tuple[float, np.ndarray, dict]:
    """Seconds of one ``predict_volume`` call, its labels and settings."""
    from crackseg.inference import predict_volume

    _synchronize(device)
    t0 = time.perf_counter()
    pred = predict_volume(model, image, device=device, precision=precision, progress=False)
    labels = np.asarray(pred.labels)
    _synchronize(device)
    return time.perf_counter() - t0, labels, pred.provenance["settings"]


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    """Dice per class of two label volumes and the share of voxels that differ."""
    from crackseg.metrics import dice_per_class

    return {"dice": {k: round(float(v), 5) for k, v in dice_per_class(a, b).items()},
            "share_differ": round(float(np.mean(a != b)), 6)}


def model_rows(path: str, big, small, device: str) -> list[dict]:
    """Speed on ``big`` (fp32, bf16) and agreement with the CPU on ``small`` for one model."""
    from crackseg.model_io import load_model

    model = load_model(path)
    timed_predict(model, small[:48, :48, :48], device, "fp32")   # warm-up (kernels, caches)
    rows = []
    _, cpu_labels, _ = timed_predict(model, small, "cpu", "fp32")
    for precision in ("fp32", "bf16"):
        seconds, labels, settings = timed_predict(model, big, device, precision)
        if big is not small:
            _, labels, _ = timed_predict(model, small, device, precision)
        rows.append({"model": model[1].get("name"), "device": device, "precision": precision,
                     "size": list(big.shape), "seconds": round(seconds, 2),
                     "mvoxel_per_s": round(big.size / seconds / 1e6, 2),
                     "settings": {k: settings.get(k) for k in ("roi_size", "halo", "batch_size")},
                     "vs_cpu_fp32": agreement(labels, cpu_labels)})
        log(f"{rows[-1]['model']} {precision}: {seconds:.1f} s, "
            f"{rows[-1]['mvoxel_per_s']} Mvoxel/s, Dice vs CPU {rows[-1]['vs_cpu_fp32']['dice']}")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512, help="edge of the timed phantom")
    ap.add_argument("--agree-size", type=int, default=160,
                    help="edge of the phantom compared with the CPU")
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--quick", action="store_true", help="48^3, the first model, any device")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    from crackseg.synthetic import generate_electrode

    started = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.quick:
        raise SystemExit("gpu.py: no CUDA device here; run it on a GPU machine "
                         "(benchmarks/gpu_device.sh) or with --quick")
    size, agree = (48, 48) if args.quick else (args.size, args.agree_size)
    models = args.models[:1] if args.quick else args.models
    small = generate_electrode((agree,) * 3, seed=3).image
    big = small if size == agree else np.tile(small, [-(-size // agree)] * 3)[:size, :size, :size]
    rows = [r for m in models for r in model_rows(m, big, small, device)]
    payload = {"device": device,
               "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
               "phantom": f"generate_electrode(({agree},) * 3, seed=3).image, tiled to {size}^3",
               "rows": rows}
    dest = write_results("gpu", payload, quick=args.quick, machine=machine_info(),
                         started=started, path=args.out)
    table = [{"model": r["model"], "precision": r["precision"], "s": r["seconds"],
              "Mvox/s": r["mvoxel_per_s"], "min Dice vs CPU": float(np.nanmin(list(r["vs_cpu_fp32"]["dice"].values())))}
             for r in rows]
    print(markdown_table(table, list(table[0])))
    print(f"-> {dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
