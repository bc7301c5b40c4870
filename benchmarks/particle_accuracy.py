"""Per-particle accuracy: instances, per-particle damage and electrode mean damage vs truth.

On held-out phantom electrodes (known instances and per-particle crack
fractions), each method's semantic segmentation is turned into particle
instances by the same distance-transform watershed
(:func:`crackseg.particles.particle_instances`) and measured by the same
per-particle table (:func:`crackseg.stats.particle_table`).  Methods: the
shipped crackseg model, and the classical pipeline and random forest fitted
on the shipped model's own training annotations (as in
``segmentation_accuracy.py``).  The true semantic labels run through the same
instance step give the reference: what instance separation alone costs.

Reported per method (pooled over volumes):

- instance F1 at IoU 0.5, precision, recall, split and merge rates
  (:func:`crackseg.particles.instance_matching`);
- per matched particle, predicted vs true ``crack_fraction``: Pearson r,
  mean absolute error, bias (mean of predicted - true);
- electrode mean damage: mean ``crack_fraction`` of the particles that do not
  touch the volume border, predicted vs true, per volume.

Usage::

    nice -n 10 python benchmarks/particle_accuracy.py           # 19 min on a shared, loaded 2-core CPU
    python benchmarks/particle_accuracy.py --quick              # < 3 min (CI)

Writes ``benchmarks/results/particle_accuracy.json`` (``..._quick.json`` with
``--quick``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    SHIPPED_MODEL,
    crackseg_method,
    fit_peers,
    log,
    machine_info,
    markdown_table,
    require_model,
    results_path,
    training_phantoms,
    write_results,
)

FULL = {
    "train": {"n": 6, "shape": [128, 128, 128], "seed": 0, "sparse_every": 12, "sparse_axes": [0, 1]},
    "shape": [128, 128, 128],
    "volumes": [["default", 2000], ["default", 2001], ["default", 2002], ["low_snr", 2003]],
}
QUICK = {
    "train": {"n": 2, "shape": [64, 64, 64], "seed": 0, "sparse_every": 8, "sparse_axes": [0, 1]},
    "shape": [96, 96, 96],
    "volumes": [["default", 2000]],
}
SETTINGS = {"default": {}, "low_snr": {"snr": 4.0}, "blur": {"blur_sigma": 2.0}}
REFERENCE = "reference: true labels"


def volume_records(seg: np.ndarray, ph) -> dict:
    """Instances, matching and per-particle damage of one segmentation of one phantom."""
    from crackseg.metrics import instance_pairs
    from crackseg.particles import instance_matching, particle_instances
    from crackseg.stats.table import particle_table

    inst = particle_instances(seg, voxel_size_um=ph.voxel_size_um)
    match = instance_matching(inst, ph.instances, iou_threshold=0.5)
    pairs = instance_pairs(inst, ph.instances, iou_threshold=0.5)
    truth = ph.truth.set_index("label")
    if inst.max() > 0:
        table = particle_table(seg, inst, voxel_size_um=ph.voxel_size_um).set_index("label")
        pred_cf = table.loc[pairs[:, 1].astype(int), "crack_fraction"].to_numpy()
        pred_mean = float(table.loc[~table["touches_border"], "crack_fraction"].mean())
    else:
        pred_cf, pred_mean = np.zeros(0), float("nan")
    true_cf = truth.loc[pairs[:, 0].astype(int), "crack_fraction"].to_numpy()
    true_mean = float(truth.loc[~truth["touches_border"], "crack_fraction"].mean())
    return {"matching": match, "pred_cf": pred_cf, "true_cf": true_cf,
            "pred_mean_damage": pred_mean, "true_mean_damage": true_mean}


def pooled(records: list[dict]) -> dict:
    """Pooled instance counts and per-particle damage agreement over volumes."""
    from scipy import stats

    tp = sum(r["matching"]["tp"] for r in records)
    n_true = sum(r["matching"]["n_true"] for r in records)
    n_pred = sum(r["matching"]["n_pred"] for r in records)
    precision, recall = tp / max(n_pred, 1), tp / max(n_true, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    split = sum(r["matching"]["split_rate"] * r["matching"]["n_true"] for r in records) / max(n_true, 1)
    merge = sum(r["matching"]["merge_rate"] * r["matching"]["n_pred"] for r in records) / max(n_pred, 1)
    p = np.concatenate([r["pred_cf"] for r in records])
    t = np.concatenate([r["true_cf"] for r in records])
    r_val = float(stats.pearsonr(p, t).statistic) if p.size > 2 and np.ptp(p) > 0 and np.ptp(t) > 0 \
        else float("nan")
    mean_err = [r["pred_mean_damage"] - r["true_mean_damage"] for r in records]
    return {
        "n_true": n_true, "n_pred": n_pred, "tp": tp, "precision": precision, "recall": recall,
        "instance_f1": f1, "split_rate": split, "merge_rate": merge, "n_matched": int(p.size),
        "crack_fraction_pearson_r": r_val,
        "crack_fraction_mae": float(np.mean(np.abs(p - t))) if p.size else float("nan"),
        "crack_fraction_bias": float(np.mean(p - t)) if p.size else float("nan"),
        "mean_damage_pred": [r["pred_mean_damage"] for r in records],
        "mean_damage_true": [r["true_mean_damage"] for r in records],
        "mean_damage_abs_error": float(np.mean(np.abs(mean_err))),
        "mean_damage_rel_error": float(np.mean([abs(e) / r["true_mean_damage"]
                                                for e, r in zip(mean_err, records)])),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small, fast version (< 3 min)")
    p.add_argument("--model", default=str(SHIPPED_MODEL), help="crackseg model directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the peer methods")
    p.add_argument("--reuse-peers", action="store_true",
                   help="take the classical and random-forest results from the existing results "
                        "file (same settings) and only rerun crackseg")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    from crackseg.errors import CracksegError
    from crackseg.synthetic import generate_electrode

    try:
        model = require_model(args.model)
    except CracksegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = time.time()
    machine = machine_info()
    cfg = QUICK if args.quick else FULL
    t = cfg["train"]
    prev = None
    if args.reuse_peers:
        path = results_path("particle_accuracy", args.quick)
        prev = json.loads(path.read_text()) if path.exists() else None
        if prev is None or prev.get("training_annotations") != t or prev.get("seed") != args.seed \
                or [[v["setting"], v["seed"]] for v in prev["volumes"]] != cfg["volumes"] \
                or prev.get("shape") != cfg["shape"]:
            print(f"error: {path}: no earlier results with these settings; run without "
                  "--reuse-peers", file=sys.stderr)
            return 2
    if prev is None:
        pairs = training_phantoms(t["n"], t["shape"], seed=t["seed"],
                                  sparse_every=t["sparse_every"], sparse_axes=t["sparse_axes"])
        peers, peer_info, _ = fit_peers(pairs, seed=args.seed, quick=args.quick, quiet=args.quiet)
        del pairs
    else:
        peers, peer_info = {}, prev["peers"]
    methods = {"crackseg": crackseg_method(model, quiet=args.quiet), **peers}
    records: dict = {m: [] for m in [*methods, REFERENCE]}
    per_volume = []
    if prev is not None:
        for row in prev["per_volume"]:
            if row["method"] in ("crackseg", REFERENCE):
                continue
            records.setdefault(row["method"], []).append({
                "matching": {k: row[k] for k in ("tp", "n_true", "n_pred", "split_rate", "merge_rate")},
                "pred_cf": np.asarray(row["pred_cf"], float), "true_cf": np.asarray(row["true_cf"], float),
                "pred_mean_damage": row["pred_mean_damage"], "true_mean_damage": row["true_mean_damage"]})
            per_volume.append(row)
    for setting, seed in cfg["volumes"]:
        ph = generate_electrode(tuple(cfg["shape"]), seed=seed, **SETTINGS[setting])
        for name in [*methods, REFERENCE]:
            t0 = time.time()
            seg = ph.labels if name == REFERENCE else methods[name](ph.image)
            rec = volume_records(seg, ph)
            records[name].append(rec)
            per_volume.append({"setting": setting, "seed": seed, "method": name,
                               "seconds": round(time.time() - t0, 1), **rec["matching"],
                               "pred_mean_damage": rec["pred_mean_damage"],
                               "true_mean_damage": rec["true_mean_damage"],
                               "pred_cf": rec["pred_cf"].tolist(),
                               "true_cf": rec["true_cf"].tolist()})
            log(f"{setting} seed {seed} {name}: F1 {rec['matching']['f1']:.3f}, mean damage "
                f"{rec['pred_mean_damage']:.4f} vs true {rec['true_mean_damage']:.4f}", args.quiet)
    order = sorted(records, key=lambda m: (m == REFERENCE, m != "crackseg"))
    summary = {name: pooled(records[name]) for name in order}
    res = {"model": str(model), "seed": args.seed, "training_annotations": t, "peers": peer_info,
           **({"peers_reused_from": prev["written"]} if prev else {}),
           "volumes": [{"setting": s, "seed": sd, "phantom_args": SETTINGS[s]} for s, sd in cfg["volumes"]],
           "shape": cfg["shape"], "instances": "crackseg.particles.particle_instances (defaults, "
           "voxel size of the phantom)", "iou_threshold": 0.5,
           "summary": summary, "per_volume": per_volume}
    cols = ["method", "instance_f1", "split_rate", "merge_rate", "n_matched",
            "crack_fraction_pearson_r", "crack_fraction_mae", "crack_fraction_bias",
            "mean_damage_abs_error", "mean_damage_rel_error"]
    rows = [{"method": m, **s} for m, s in summary.items()]
    text = markdown_table(rows, cols, digits=3)
    dmg = [{"method": m, **{f"{s}/{sd}": f"{pm:.4f} ({tm:.4f})" for (s, sd), pm, tm in
                            zip(cfg["volumes"], v["mean_damage_pred"], v["mean_damage_true"])}}
           for m, v in summary.items()]
    text += "\n\nElectrode mean damage per volume, predicted (true):\n" + markdown_table(
        dmg, ["method"] + [f"{s}/{sd}" for s, sd in cfg["volumes"]])
    path = write_results("particle_accuracy", res, quick=args.quick, machine=machine, started=started)
    print(f"Per-particle accuracy ({len(cfg['volumes'])} phantom(s) of "
          f"{'x'.join(map(str, cfg['shape']))} voxels, pooled):")
    print(text)
    print(f"\nwritten {path} ({time.time() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
