"""Accuracy of a shipped model inside and outside its training domain (phantoms, dense truth).

Rows (all voxels scored, predictions through :func:`crackseg.inference.predict_volume`
with its defaults, the path ``crackseg predict`` runs):

- ``held-out, training ranges``: phantom label maps from seeds never used in
  training, rendered with imaging drawn from the model's own appearance ranges;
- ``outside: fixed imaging model``: the phantom generator's fixed imaging
  (:func:`crackseg.synthetic.imaging.render_image`), a contrast model the
  randomised training never used (binder at a fixed mid-grey, textures,
  fringes and rings of its own);
- ``outside: strong fringes``: phase-contrast fringes 2-3x the training maximum;
- ``outside: real particle shapes``: particle geometry from the real MATBOX
  cathode labels (a shape family left out of training), damaged as phantoms are;
- ``crack-free real geometry``: MATBOX geometry without any crack or pore,
  rendered with training-range imaging: the share of particles that the
  pipeline (particle instances, particle table) reports with damage above 0.01.

Each Dice row (3-D models) also gives every volume's mean damage as the
pipeline reports it (particle instances and table of the prediction,
particles touching the border left out) beside the same pipeline on the
true labels, and the median factor between them (``damage``): how far the
mean damage a user would read is from the truth, volume by volume.

A 2-D model is scored on every z-section of the same volumes.

Run: ``python benchmarks/model_domain.py [--model DIR] [--n N] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, log, machine_info, write_results  # noqa: E402

SEED0 = 500_000
"""First seed of the evaluation phantoms (training pools use seeds below 200 000)."""
KIND_OFFSET = {"randomized": 0, "fixed_imaging": 100, "strong_fringes": 200, "matbox": 300,
               "crack_free": 400}


def _volume(kind: str, seed: int, shape, appearance) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) of one evaluation phantom of ``kind``."""
    from crackseg.synthetic import generate_electrode
    from crackseg.synthetic.imaging import binder_mask
    from crackseg.synthetic.pool import label_pool
    from crackseg.synthetic.randomize import AppearanceRanges, random_appearance, render

    rng = np.random.default_rng([seed, 7])
    vs = float(np.exp(rng.uniform(np.log(0.25), np.log(0.5))))
    if kind == "fixed_imaging":
        ph = generate_electrode(shape, seed=seed, voxel_size_um=vs, hollow_probability=0.3,
                                damage_logit_mean=-2.5)
        return ph.image.astype(np.float32), ph.labels
    if kind in ("matbox", "crack_free"):
        extra = (dict(max_crack_fraction=0.0, hollow_probability=0.0, pore_density_per_um3=0.0)
                 if kind == "crack_free" else dict(hollow_probability=0.3, damage_logit_mean=-2.5))
        ph = generate_electrode(shape, seed=seed, voxel_size_um=vs, geometry="matbox",
                                imaging=False, **extra)
        labels = ph.labels
        binder = binder_mask(ph.instances > 0, rng, binder_fraction=0.5, voxel_size_um=(vs,) * 3)
    else:
        m = label_pool(1, shape, seed=seed, voxel_size_um=(0.25, 0.5))[0]
        labels, binder = m["labels"], m["binder"]
    ranges = appearance
    if kind == "strong_fringes":
        hi = ranges.phase_contrast[1]
        ranges = AppearanceRanges(**{**vars(ranges), "phase_contrast": (2 * hi, 3 * hi)})
    setting = random_appearance(rng, ranges, ndim=3)
    return render(labels, binder, setting, rng), labels


def _predict(model, image) -> np.ndarray:
    from crackseg.inference import predict_volume

    if int(model[1]["spatial_dims"]) == 2:
        return np.stack([np.asarray(predict_volume(model, im, progress=False, device="cpu").labels)
                         for im in image])
    return np.asarray(predict_volume(model, image, progress=False, device="cpu").labels)


def dice_row(model, kind: str, n: int, shape, appearance) -> dict:
    """Per-class Dice over ``n`` phantoms of ``kind`` (voxel counts pooled), and mean damage."""
    from crackseg.metrics import dice_per_class

    preds, truths, damage = [], [], []
    for i in range(n):
        image, labels = _volume(kind, SEED0 + KIND_OFFSET[kind] + i, shape, appearance)
        pred = _predict(model, image)
        if pred.ndim == 3 and int(model[1]["spatial_dims"]) == 3:
            damage.append([mean_damage(pred), mean_damage(labels)])
        preds.append(pred.ravel())
        truths.append(labels.ravel())
    d = dice_per_class(np.concatenate(preds), np.concatenate(truths))
    row = {"setting": kind, "n_volumes": n, **{k: round(v, 4) for k, v in d.items()}}
    if damage:
        row["damage"] = damage_agreement(damage)
    return row


def mean_damage(seg) -> float:
    """Mean crack fraction of the particles of ``seg`` away from the border (the pipeline's)."""
    tab = interior_table(seg)
    return float(tab["crack_fraction"].mean()) if len(tab) else float("nan")


def damage_agreement(pairs) -> dict:
    """Per-volume (predicted, true) mean damage and the median factor between them.

    Examples
    --------
    >>> damage_agreement([[0.02, 0.04], [0.09, 0.03]])["median_factor"]
    2.5
    """
    p, t = np.asarray(pairs, float).T
    ok = (p > 0) & (t > 0)
    factor = np.exp(np.abs(np.log(p[ok] / t[ok])))
    return {"predicted_vs_true": [[round(float(a), 4), round(float(b), 4)] for a, b in zip(p, t)],
            "median_factor": round(float(np.median(factor)), 3) if ok.any() else None,
            "mean_ratio": round(float(np.mean(p[ok] / t[ok])), 3) if ok.any() else None}


def interior_table(seg):
    """The pipeline's particle table of ``seg`` (instances, table), border particles left out."""
    from crackseg.particles import particle_instances
    from crackseg.stats import particle_table

    tab = particle_table(seg, particle_instances(seg))
    return tab[~tab["touches_border"]]


def damaged_share(segs) -> tuple[int, int]:
    """(particles reported damaged above 0.01, particles) away from the border, over ``segs``.

    Each 3-D segmentation goes through the pipeline's particle instances and table.
    """
    damaged = total = 0
    for seg in segs:
        tab = interior_table(seg)
        damaged += int((tab["crack_fraction"] > 0.01).sum())
        total += len(tab)
    return damaged, total


def crack_free_row(model, n: int, shape, appearance) -> dict:
    """Share of particles reported damaged (> 0.01) on crack-free real geometry."""
    segs = (_predict(model, _volume("crack_free", SEED0 + KIND_OFFSET["crack_free"] + i, shape,
                                    appearance)[0]) for i in range(n))
    damaged, total = damaged_share(seg for seg in segs if seg.ndim == 3)
    return {"setting": "crack_free_matbox", "n_volumes": n, "n_particles": total,
            "fraction_damaged_above_0.01": damaged / total if total else None,
            "target": "< 0.02"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "nmc4-v2"))
    ap.add_argument("--n", type=int, default=4, help="phantoms per row")
    ap.add_argument("--shape", type=int, nargs=3, default=[96, 96, 96])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default=None, help="results file name")
    args = ap.parse_args(argv)
    from crackseg.model_io import load_model
    from crackseg.synthetic.randomize import AppearanceRanges

    started = time.time()
    model = load_model(args.model)
    card = model[1]
    dom = card.get("training_domain") or {}
    appearance = AppearanceRanges.from_dict(dom.get("appearance_ranges"))
    n = 1 if args.quick else args.n
    shape = (32, 48, 48) if args.quick else tuple(args.shape)
    rows = []
    for kind in ("randomized", "fixed_imaging", "strong_fringes", "matbox"):
        log(f"{kind}: {n} phantoms of {shape}")
        rows.append(dice_row(model, kind, n, shape, appearance))
        print(rows[-1])
    cf = crack_free_row(model, n, shape, appearance) if card["spatial_dims"] == 3 else None
    if cf:
        print(cf)
    res = {"model": card.get("name"), "model_sha256": card.get("weights_sha256"),
           "rows": rows, "crack_free": cf,
           "targets": {"randomized": "particle >= 0.95, crack >= 0.80, pore >= 0.70",
                       "outside": "crack >= 0.65", "crack_free": "< 2 % of particles > 0.01"}}
    name = args.name or f"model_domain_{card.get('name')}"
    print(f"wrote {write_results(name, res, quick=args.quick, machine=machine_info(), started=started)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
