"""How often the out-of-distribution flags fire, inside and outside a model's training domain.

Rows (phantoms with dense truth, predictions through
:func:`crackseg.inference.predict_volume` with its defaults, flags from
:func:`crackseg.domain.domain_check` as ``crackseg run`` computes them):

- ``held_out``: phantoms of the model's own training domain from seeds never
  used in training (false alarms: the flag rate should be 0);
- ``rescaled_3x``: the same phantoms zoomed 3x (``scipy.ndimage.zoom``), so
  particles are three times as many voxels across;
- ``fringes_3x``: phase-contrast fringes three times the training maximum;
- ``inverted``: contrast inverted (dark particles on a bright matrix).

For a model trained with the ``randomized`` data source the phantoms are
label-pool members rendered with imaging drawn from the card's
``training_domain.appearance_ranges``. A card without a training domain (a
model trained on the fixed phantom imaging) gets one derived here from its
training phantoms (seeds, shape and phantom settings from the card), measured
as :func:`crackseg.randomized_data.training_domain` measures it; the results
say so. Each volume's flags, signals and per-class Dice against the truth
are recorded, so a flag can be set against the segmentation it warns about.

Run: ``python benchmarks/domain_flags.py [--model DIR] [--n N] [--quick]``
(default model: ``models/nmc4-v2`` when present, else ``models/nmc4-synthetic-v1``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import ROOT, log, machine_info, markdown_table, write_results  # noqa: E402

SEED0 = 600_000
"""First seed of the held-out phantoms of randomized models (training pools use < 200 000)."""
OLD_SEED0 = 1000
"""First seed of the held-out phantoms of models trained on fixed-imaging phantoms (seeds 0-6)."""
SETTINGS = ("held_out", "rescaled_3x", "fringes_3x", "inverted")


def default_model() -> Path:
    """``models/nmc4-v2`` when it has been exported, else the shipped default."""
    new = ROOT / "models" / "nmc4-v2"
    return new if (new / "model_card.json").exists() else ROOT / "models" / "nmc4-synthetic-v1"


def _old_phantom_settings(card: dict) -> tuple[list, tuple, dict]:
    """Training seeds, shape and phantom settings recorded in an old (synthetic) card."""
    data = ((card.get("training") or {}).get("data") or {})
    syn = data.get("synthetic") or {}
    seeds = list(data.get("train_seeds") or range(int(syn.get("n_volumes", 4))))
    shape = tuple(int(s) for s in syn.get("shape") or (128, 128, 128))
    return seeds, shape, dict(syn.get("phantom") or {})


def derived_domain(card: dict, *, n_seeds: int | None = None, shape=None) -> dict:
    """A training domain for a card without one, measured on its training phantoms.

    ``n_seeds`` and ``shape`` make it cheaper (``--quick``): the particle-size
    estimate leans with the field of view, so it is measured on phantoms the
    shape of the held-out ones.
    """
    from crackseg.scale import particle_diameter_vox
    from crackseg.synthetic import generate_electrode

    seeds, train_shape, phantom = _old_phantom_settings(card)
    seeds = seeds[:n_seeds] if n_seeds else seeds
    shape = tuple(shape) if shape else train_shape
    diam, frac = [], {"crack": [], "pore": []}
    for s in seeds:
        ph = generate_electrode(shape, seed=int(s), **phantom)
        d = particle_diameter_vox(ph.image)
        if np.isfinite(d):
            diam.append(float(d))
        env = max(1, int((ph.labels > 0).sum()))
        frac["crack"].append(float((ph.labels == 2).sum() / env))
        frac["pore"].append(float((ph.labels == 3).sum() / env))
    return {"particle_diameter_vox": [min(diam), max(diam)] if diam else None,
            "class_fraction_of_envelope": {k: {"min": min(v), "max": max(v),
                                               "mean": float(np.mean(v))}
                                           for k, v in frac.items()},
            "derived": f"measured here on the card's training phantoms (seeds {seeds}, shape "
                       f"{list(shape)}): the card has no training_domain"}


def _volume(setting: str, i: int, card: dict, dom: dict, shape) -> tuple:
    """(image, labels, voxel size) of phantom ``i`` of ``setting``."""
    from scipy import ndimage as ndi

    if setting == "rescaled_3x":
        img, lab, vs = _volume("held_out", i, card, dom, shape)
        return (ndi.zoom(img.astype(np.float32), 3, order=1), ndi.zoom(lab, 3, order=0),
                None if vs is None else tuple(v / 3 for v in vs))
    randomized = bool(dom.get("appearance_ranges"))
    if randomized:
        from crackseg.synthetic.pool import label_pool
        from crackseg.synthetic.randomize import AppearanceRanges, random_appearance, render

        ranges = AppearanceRanges.from_dict(dom.get("appearance_ranges"))
        vs_range = dom.get("voxel_size_um_range") or (0.16, 0.6)
        m = label_pool(1, shape, seed=SEED0 + i, voxel_size_um=tuple(vs_range))[0]
        rng = np.random.default_rng([SEED0 + i, 7])
        s = random_appearance(rng, ranges, ndim=3)
        if setting == "fringes_3x":
            s["phase_contrast"] = 3 * float(ranges.phase_contrast[1])
        if setting == "inverted":
            s["invert"] = True
        return render(m["labels"], m["binder"], s, rng), m["labels"], (m["voxel_size_um"],) * 3
    from crackseg.synthetic import generate_electrode

    _, _, phantom = _old_phantom_settings(card)
    extra = {}
    if setting == "fringes_3x":
        extra["phase_contrast"] = 3 * float(phantom.get("phase_contrast", 0.35))
    ph = generate_electrode(shape, seed=OLD_SEED0 + i, **{**phantom, **extra})
    img = ph.image.astype(np.float32)
    if setting == "inverted":
        img = img.max() - img
    return img, ph.labels, tuple(ph.voxel_size_um)


def _predict(model, image, vs):
    from crackseg.inference import predict_volume

    if int(model[1]["spatial_dims"]) == 2:
        preds = [predict_volume(model, im, progress=False, device="auto") for im in image]
        return np.stack([np.asarray(p.labels) for p in preds]), preds[0].provenance, True
    p = predict_volume(model, image, voxel_size_um=vs, progress=False, device="auto")
    return np.asarray(p.labels), p.provenance, False


def volume_record(model, setting: str, i: int, dom: dict, shape) -> dict:
    """Flags, signals and Dice of one phantom."""
    from crackseg.domain import domain_check
    from crackseg.metrics import dice_per_class
    from crackseg.particles import particle_instances

    t0 = time.time()
    image, labels, vs = _volume(setting, i, model[1], dom, shape)
    seg, prov, planar = _predict(model, image, vs)
    if planar:
        from crackseg.sections import section_instances as label_particles
    else:
        label_particles = particle_instances
    inst = label_particles(seg, voxel_size_um=vs)
    d = domain_check(seg, inst, training_domain=dom, scale=prov["settings"].get("scale"),
                     planar=planar)
    dice = dice_per_class(seg.ravel(), labels.ravel())
    env = max(1, int((labels > 0).sum()))
    return {"setting": setting, "index": i, "shape": list(image.shape),
            "flagged": bool(d["flags"]), "flags": [f["name"] for f in d["flags"]],
            "flag_values": {f["name"]: f["value"] for f in d["flags"]},
            "signals": d["signals"], "notes": d["notes"],
            "true_crack_fraction_of_envelope": round(float((labels == 2).sum() / env), 4),
            "dice": {k: round(float(v), 4) for k, v in dice.items()},
            "seconds": round(time.time() - t0, 1)}


def summarise(records: list[dict]) -> list[dict]:
    """One row per setting: flag rate, which flags, mean Dice."""
    rows = []
    for setting in SETTINGS:
        rs = [r for r in records if r["setting"] == setting]
        if not rs:
            continue
        counts: dict = {}
        for r in rs:
            for name in r["flags"]:
                counts[name] = counts.get(name, 0) + 1
        dice = {k: float(np.mean([r["dice"].get(k, np.nan) for r in rs]))
                for k in ("particle", "crack")}
        rows.append({"setting": setting, "n_volumes": len(rs),
                     "flag_rate": sum(r["flagged"] for r in rs) / len(rs),
                     "flags": ", ".join(f"{k} {v}/{len(rs)}" for k, v in sorted(counts.items()))
                     or "-",
                     "particle_dice": round(dice["particle"], 3),
                     "crack_dice": round(dice["crack"], 3)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None,
                    help="model directory (default: models/nmc4-v2, else nmc4-synthetic-v1)")
    ap.add_argument("--n", type=int, default=4, help="phantoms per setting")
    ap.add_argument("--shape", type=int, nargs=3, default=None,
                    help="phantom shape (default 96^3; 64 96 96 for fixed-imaging models)")
    ap.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    ap.add_argument("--quick", action="store_true", help="one small phantom per setting (< 1 min)")
    ap.add_argument("--name", default=None, help="results file name")
    args = ap.parse_args(argv)
    from crackseg.model_io import load_model

    started = time.time()
    path = Path(args.model) if args.model else default_model()
    model = load_model(path)
    card = model[1]
    dom = card.get("training_domain")
    source = "card"
    randomized = bool((dom or {}).get("appearance_ranges"))
    n = 1 if args.quick else args.n
    if args.shape:
        shape = tuple(args.shape)
    elif args.quick:
        shape = (40, 64, 64) if randomized else (40, 80, 80)
    else:
        shape = (96, 96, 96) if randomized else (64, 96, 96)
    if not dom:
        # Predictions stay as users get them (no training range: --scale auto leaves the
        # input alone); only the flags are judged against the derived domain.
        log(f"{card.get('name')}: no training_domain in the card; deriving one from its "
            "training phantoms for the flags")
        dom = derived_domain(card, n_seeds=2 if args.quick else None,
                             shape=shape if args.quick else None)
        source = dom["derived"]
    records = []
    for setting in args.settings:
        for i in range(n):
            r = volume_record(model, setting, i, dom, shape)
            log(f"{setting} {i}: flags {r['flags'] or '-'} ({r['seconds']} s)")
            records.append(r)
    rows = summarise(records)
    print(markdown_table(rows, ["setting", "n_volumes", "flag_rate", "flags", "particle_dice",
                                "crack_dice"]))
    from crackseg import domain as dm

    res = {"model": card.get("name"), "model_sha256": card.get("weights_sha256"),
           "model_path": str(path), "training_domain": dom, "training_domain_source": source,
           "shape": list(shape), "rows": rows, "volumes": records,
           "limits": {k: getattr(dm, k) for k in (
               "SIZE_MARGIN", "RESAMPLE_LIMIT", "CLASS_FRACTION_FACTOR", "CLASS_FRACTION_SLACK",
               "NECK_DISTANCE_VOX", "NECK_SHARE_LIMIT", "CRACK_MATRIX_LIMIT",
               "PARTICLE_FRACTION_RANGE", "ENTROPY_LIMIT", "MIN_CRACK_VOXELS")},
           "targets": {"held_out": "flag rate 0", "rescaled_3x": "flag rate 1",
                       "fringes_3x": "flag rate 1 where the segmentation suffers",
                       "inverted": "flag rate 1"}}
    name = args.name or f"domain_flags_{card.get('name')}"
    print(f"wrote {write_results(name, res, quick=args.quick, machine=machine_info(), started=started)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
