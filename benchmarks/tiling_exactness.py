"""Tiled prediction against the whole-volume forward pass: agreement per class and seconds.

For each model, on one phantom volume (``crackseg.synthetic.generate_electrode``):

- ``whole volume``: the network applied to the whole normalised volume in one
  forward pass (no windows): the answer every tiling approximates;
- ``MONAI``: ``sliding_window_inference`` (window 96, overlap 0.25, Gaussian),
  the baseline of ``benchmarks/speed.py``;
- ``crackseg``: :func:`crackseg.inference.predict_volume` with its default halo
  (the receptive field, :func:`crackseg.tiling.default_halo`) and with halos of
  8, 16, 24, 32 voxels, each in one chunk (the default plan) and in chunks of
  ``--chunk`` voxels (so chunk faces cross the volume).

Each row gives the per-class Dice of its labels against the whole-volume
pass, Dice against the phantom's true labels, seconds (one torch thread) and
the executed-voxel factor (voxels pushed through the network / volume
voxels); ``projection_1024`` gives that factor for a 1024^3 volume, where
the time ratio of two tilings is close to the ratio of their factors.

Instance normalisation (``nmc4-v2``) makes every output depend on the
statistics of the whole input, so the whole-volume pass itself changes with
the volume's extent; ``instance_norm_spread`` measures that: the whole-volume
pass of the central 128^3 crop against the whole-volume pass of the full
volume, on the crop.

Usage::

    nice -n 10 python benchmarks/tiling_exactness.py           # 160^3, both shipped 3-D models
    python benchmarks/tiling_exactness.py --quick              # 64^3, nmc4-synthetic-v1

Writes ``benchmarks/results/tiling_exactness.json`` (``_quick.json`` with --quick).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import log, machine_info, markdown_table, write_results  # noqa: E402
from benchmarks.speed import baseline_labels, dice_per_class, exact_labels, named_dice  # noqa: E402

MODELS = ("nmc4-synthetic-v1", "nmc4-v2")


def executed_factor(plan: dict, shape) -> float:
    """Voxels crackseg's valid-centre windows push through the network, per volume voxel."""
    from crackseg.tiling import chunk_grid, round_up, valid_tiling

    div, total = plan["divisor"], 0
    for c in chunk_grid(shape, plan["chunk_size"], plan["halo"]):
        grid = [round_up(e, div) for e in c.ext_shape]
        roi, halo, _ = valid_tiling(grid, plan["roi_size"], plan["halo"], div)
        per_axis = [r if g <= r else r * -(-(g - 2 * h) // (r - 2 * h))
                    for g, r, h in zip(grid, roi, halo)]
        total += int(np.prod(per_axis))
    return total / float(np.prod(shape))


def monai_factor(shape, roi: int = 96, overlap: float = 0.25) -> float:
    """Voxels MONAI's sliding window pushes through the network, per volume voxel."""
    from monai.data.utils import dense_patch_slices

    interval = [int(roi * (1 - overlap))] * len(shape)
    n = len(dense_patch_slices(tuple(shape), (roi,) * len(shape), interval))
    return n * roi ** len(shape) / float(np.prod(shape))


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def row(method: str, labels, exact, truth, seconds: float, **extra) -> dict:
    d = named_dice(dice_per_class(labels, exact))
    return {"method": method, "seconds": round(seconds, 2), **extra,
            "dice_vs_whole": d, "min_dice_vs_whole": min(d.values()),
            "dice_vs_truth": named_dice(dice_per_class(labels, truth))}


def crackseg_rows(model, vol, exact, truth, halos, chunk: int) -> list[dict]:
    """predict_volume at the default halo and at each of ``halos``, in one chunk and in chunks."""
    from crackseg.inference import predict_volume
    from crackseg.tiling import downsampling_factor

    divisor, rows = downsampling_factor(model[1]["architecture"]), []
    for halo in [None, *halos]:
        for chunk_size in (None, chunk):
            pred, s = timed(lambda h=halo, c=chunk_size: predict_volume(
                model, vol, halo=h, chunk_size=c, device="cpu", scale="none", progress=False))
            st = pred.provenance["settings"]
            plan = {"divisor": divisor, **{k: st[k] for k in ("halo", "roi_size", "chunk_size")}}
            name = f"crackseg halo {'default' if halo is None else halo}"
            rows.append(row(name + (" (chunks)" if chunk_size else ""), pred.labels, exact, truth,
                            s, halo=st["halo"][0], roi=st["roi_size"][0],
                            chunk=st["chunk_size"][0],
                            executed_factor=round(executed_factor(plan, vol.shape), 3)))
            log(f"  {rows[-1]['method']}: {s:.1f} s, min Dice {rows[-1]['min_dice_vs_whole']:.4f}")
    return rows


def instance_norm_spread(net, vn: np.ndarray, exact: np.ndarray, crop: int = 128) -> dict:
    """Whole-volume pass of the central ``crop``^3 against the full whole-volume pass, on the crop."""
    o = [(s - crop) // 2 // 8 * 8 for s in vn.shape]
    sl = tuple(slice(a, a + crop) for a in o)
    part = exact_labels(net, np.ascontiguousarray(vn[sl]))
    return {"crop": crop, "dice": named_dice(dice_per_class(part, exact[sl]))}


def measure_model(name: str, ph, halos, chunk: int) -> dict:
    """All rows of one model on phantom ``ph``."""
    import torch

    from crackseg.inference import intensity_range
    from crackseg.model_io import load_model
    from crackseg.nets import receptive_halo
    from crackseg.tiling import default_halo, plan_inference

    net, card = load_model(ROOT / "models" / name)
    vol, truth = ph.image, ph.labels
    lo, hi = intensity_range(vol, card["normalization"])
    vn = ((vol.astype(np.float32) - np.float32(lo)) * np.float32(1 / (hi - lo)))
    exact, s_whole = timed(lambda: exact_labels(net, vn))
    log(f"{name}: whole-volume pass {s_whole:.1f} s")
    rows = [row("whole volume", exact, exact, truth, s_whole, executed_factor=1.0)]
    monai, s_monai = timed(lambda: baseline_labels(net, vn))
    rows.append(row("MONAI roi 96 overlap 0.25 gaussian", monai, exact, truth, s_monai,
                    executed_factor=round(monai_factor(vol.shape), 3)))
    log(f"  MONAI: {s_monai:.1f} s")
    with torch.inference_mode():
        rows += crackseg_rows((net, card), vol, exact, truth,
                              [h for h in halos if h < default_halo(card["architecture"])], chunk)
    for r in rows:
        r["speedup_vs_monai"] = round(s_monai / r["seconds"], 2)
    big = (1024,) * 3
    out = {"model": name, "receptive_field": receptive_halo(card["architecture"]),
           "default_halo": default_halo(card["architecture"]),
           "norm": card["architecture"]["args"].get("norm"), "rows": rows,
           "projection_1024": {"monai_factor": round(monai_factor(big), 3),
                               "crackseg_default_plan": plan_inference(card, big),
                               "crackseg_default_factor":
                                   round(executed_factor(plan_inference(card, big), big), 3)}}
    if out["norm"] == "instance" and min(vn.shape) >= 128:
        out["instance_norm_spread"] = instance_norm_spread(net, vn, exact)
    return out


def print_model(m: dict) -> None:
    print(f"\n{m['model']} (receptive field {m['receptive_field']} voxels, default halo "
          f"{m['default_halo']}, norm {m['norm']})")
    cols = ["method", "halo", "roi", "chunk", "seconds", "speedup_vs_monai", "executed_factor",
            "min_dice_vs_whole", "matrix", "particle", "crack", "pore", "crack_vs_truth"]
    table = [{**r, **r["dice_vs_whole"], "crack_vs_truth": r["dice_vs_truth"]["crack"]}
             for r in m["rows"]]
    print(markdown_table(table, cols, digits=4))
    p = m["projection_1024"]
    print(f"1024^3 executed-voxel factor: MONAI {p['monai_factor']}, crackseg default "
          f"{p['crackseg_default_factor']}")
    if "instance_norm_spread" in m:
        print(f"instance norm: whole pass of a 128^3 crop vs the full whole pass: "
              f"{m['instance_norm_spread']['dice']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64^3, nmc4-synthetic-v1, halo 8")
    ap.add_argument("--size", type=int, default=160, help="phantom edge, voxels (default 160)")
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--halos", type=int, nargs="+", default=[8, 16, 24, 32])
    ap.add_argument("--chunk", type=int, default=64, help="chunk edge of the chunked rows")
    ap.add_argument("--seed", type=int, default=3, help="phantom seed")
    args = ap.parse_args(argv)
    import torch

    from crackseg.synthetic import generate_electrode

    torch.set_num_threads(1)
    started, machine = time.time(), machine_info()
    size, models, halos, chunk = args.size, args.models, args.halos, args.chunk
    if args.quick:
        size, models, halos, chunk = 64, ["nmc4-synthetic-v1"], [8], 32
    ph = generate_electrode((size,) * 3, seed=args.seed)
    results = []
    for name in models:
        results.append(measure_model(name, ph, halos, chunk))
        print_model(results[-1])
    path = write_results("tiling_exactness", {"size": size, "phantom_seed": args.seed,
                                              "threads": 1, "models": results},
                         quick=args.quick, machine=machine, started=started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
