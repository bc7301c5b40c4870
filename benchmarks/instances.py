"""Particle instance quality: phantoms against their truth, and the real NMC geometry.

1. Phantoms (``crackseg.synthetic``, several seeds): particle instances from
   the true semantic labels and, when a model is given or shipped, from its
   prediction of the phantom image; matched to the true instances at IoU 0.5
   (F1, precision, recall, split and merge rates).
2. Real NMC geometry (``../shared/data/nmc_matbox_labels.tif``, label 1 =
   NMC -> particle, the rest -> matrix): number of particles, their size
   distribution, how many touch the border, and a figure
   (``docs/figures/nmc_instances.png``).

Usage::

    nice -n 10 python benchmarks/instances.py [--quick] [--model DIR]

Writes ``benchmarks/results/instances.json`` (``instances_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crackseg.io import read_volume  # noqa: E402
from crackseg.model_io import default_model_dir  # noqa: E402
from crackseg.particles import (  # noqa: E402
    DEFAULT_H,
    border_labels,
    instance_matching,
    particle_instances,
)
from crackseg.synthetic import generate_electrode  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def phantom_scores(shape, seeds, model=None) -> list[dict]:
    rows = []
    for seed in seeds:
        ph = generate_electrode(shape, seed=seed, imaging=model is not None)
        t = time.perf_counter()
        inst = particle_instances(ph.labels, voxel_size_um=ph.voxel_size_um)
        dt = time.perf_counter() - t
        rows.append({"seed": seed, "source": "true labels", "seconds": dt,
                     **instance_matching(inst, ph.instances)})
        if model is not None:
            from crackseg.inference import predict_volume

            pred = predict_volume(model, ph.image, voxel_size_um=ph.voxel_size_um,
                                  progress=False)
            inst = particle_instances(pred.labels, voxel_size_um=ph.voxel_size_um)
            rows.append({"seed": seed, "source": "model prediction",
                         **instance_matching(inst, ph.instances)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def real_nmc(fig_path: Path) -> dict:
    lab = read_volume(DATA / "nmc_matbox_labels.tif").data
    seg = (lab == 1).astype(np.uint8)  # NMC -> particle (1); pore, binder -> matrix (0)
    t = time.perf_counter()
    inst = particle_instances(seg)
    dt = time.perf_counter() - t
    sizes = np.bincount(inst.ravel())[1:]
    border = border_labels(inst)
    eq_d = (6 * sizes / np.pi) ** (1 / 3)
    result = {
        "shape": list(seg.shape), "solid_fraction": float(seg.mean()),
        "n_particles": int(inst.max()), "n_touching_border": int(border.size),
        "n_interior": int(inst.max() - border.size),
        "equivalent_diameter_vox": {"median": float(np.median(eq_d)),
                                    "p10": float(np.percentile(eq_d, 10)),
                                    "p90": float(np.percentile(eq_d, 90))},
        "seconds": dt, "h": DEFAULT_H,
    }
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = seg.shape[0] // 2
    rng = np.random.default_rng(0)
    colours = rng.random((int(inst.max()) + 1, 3)) * 0.8 + 0.2
    colours[0] = 0
    fig, ax = plt.subplots(1, 3, figsize=(13, 4.4))
    ax[0].imshow(seg[z], cmap="gray")
    ax[0].set_title(f"NMC solid, slice z={z}")
    ax[1].imshow(colours[inst[z]])
    ax[1].set_title(f"particle instances ({result['n_particles']} in the volume)")
    ax[2].hist(eq_d, bins=40, color="0.3")
    ax[2].set_xlabel("equivalent diameter (voxels)")
    ax[2].set_ylabel("particles")
    ax[2].set_title(f"{result['n_interior']} interior, {result['n_touching_border']} at border")
    for a in ax[:2]:
        a.axis("off")
    fig.suptitle("crackseg particle instances on the real NMC geometry "
                 "(NREL MATBOX nmc-1-cal labels)")
    fig.tight_layout()
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(fig_path, dpi=110)
    plt.close(fig)
    result["figure"] = str(fig_path.relative_to(ROOT))
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller phantoms, fewer seeds")
    ap.add_argument("--model", default=None, help="also score instances of this model's prediction")
    args = ap.parse_args(argv)
    shape = (64, 96, 96) if args.quick else (96, 160, 160)
    seeds = (0, 1) if args.quick else (0, 1, 2, 3)
    model = args.model
    if model is None and (default_model_dir() / "model_card.json").exists():
        model = str(default_model_dir())
    rows = phantom_scores(shape, seeds, model)
    summary = {}
    for source in sorted({r["source"] for r in rows}):
        sel = [r for r in rows if r["source"] == source]
        tp = sum(r["tp"] for r in sel)
        n_true = sum(r["n_true"] for r in sel)
        n_pred = sum(r["n_pred"] for r in sel)
        p, rc = tp / max(1, n_pred), tp / max(1, n_true)
        summary[source] = {
            "f1": 2 * p * rc / max(1e-12, p + rc), "precision": p, "recall": rc,
            "n_true": n_true, "n_pred": n_pred,
            "split_rate": float(np.average([r["split_rate"] for r in sel],
                                           weights=[r["n_true"] for r in sel])),
            "merge_rate": float(np.average([r["merge_rate"] for r in sel],
                                           weights=[r["n_pred"] for r in sel])),
        }
    record = {"phantoms": {"shape": list(shape), "seeds": list(seeds), "model": model,
                           "per_volume": rows, "pooled": summary}}
    if (DATA / "nmc_matbox_labels.tif").exists():
        record["real_nmc"] = real_nmc(ROOT / "docs" / "figures" / "nmc_instances.png")
    record["command"] = "python benchmarks/instances.py " + " ".join(argv or sys.argv[1:])
    out = ROOT / "benchmarks" / "results" / ("instances_quick.json" if args.quick else "instances.json")
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(json.dumps({"pooled": summary, "real_nmc": record.get("real_nmc")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
