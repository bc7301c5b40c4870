"""Zero-shot accuracy of the shipped 2-D model on real images (no annotation, no tuning).

Two checks, both through :func:`crackseg.inference.predict_volume` with its
defaults (``--scale auto``), the path ``crackseg predict`` runs:

1. **NMC811 holotomography slice** (``../shared/data/nmc811_holotomo_slice_left.tif``,
   GPL-3.0, read in place): per-particle internal-void fraction against a
   reference. The reference covers 17 isolated particles chosen by eye
   (:data:`REFERENCE_PARTICLES`, their centroids in pixels); for each, the
   envelope is its distance-watershed region of the smoothed, Otsu-thresholded,
   hole-filled image, eroded by 2 px to stay off the edge fringe, and its voids
   are the envelope pixels darker (Gaussian sigma 1) than the midpoint between
   the particle's median and the matrix's median grey value, opened by one
   pixel. The overlays were checked by eye: central voids and wide cracks
   are captured, cracks of one or two pixels are not. The model's void
   fraction is its crack + pore pixels in the same envelope.
2. **SegmentPy slices** (Apache-2.0; group A ``1, 100, 200, 300, 400`` and
   group B ``1501-1504``): Dice of the model's ``particle`` class (solid) against
   the annotation's particle class.

A 3-D model gets a third check instead: the four consecutive SegmentPy
slices ``1501-1504`` as one thin volume (4 x 400 x 400): the share of voxels
it calls crack (the annotators see no cracks there: their pore class is the
space between particles) and the Dice of its particle envelopes (particle,
crack and pore classes) against the annotation's particle class. Four
sections give a 3-D network little context along z, so this is a weak check
of grey values, not of 3-D accuracy.

Run: ``python benchmarks/zero_shot_real.py [--model DIR] [--scale auto|none|F] [--quick]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import DATA, ROOT, log, machine_info, write_results  # noqa: E402

NMC811 = DATA / "nmc811_holotomo_slice_left.tif"
REFERENCE_PARTICLES = [
    (114, 164), (153, 552), (155, 680), (111, 907), (279, 644), (390, 537), (321, 857),
    (520, 199), (431, 91), (406, 218), (492, 767), (525, 639), (500, 457), (490, 938),
    (262, 957), (70, 716), (431, 842)]
"""Centroids (row, column, pixels) of the reference particles of the NMC811 slice."""
GROUPS = {"A": ["1", "100", "200", "300", "400"], "B": ["1501", "1502", "1503", "1504"]}


def segmentpy_file(name: str) -> Path | None:
    """A SegmentPy file from ``../shared/data`` or, failing that, the project's own copy."""
    for p in (DATA / "segmentpy", ROOT / "data" / "segmentpy"):
        if (p / name).exists():
            return p / name
    return None


def particle_envelopes(image: np.ndarray) -> np.ndarray:
    """Distance-watershed particle regions of the NMC811 slice (int labels, 0 = matrix)."""
    from skimage.feature import peak_local_max
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk
    from skimage.segmentation import watershed

    s = ndi.gaussian_filter(image, 2)
    m = s > threshold_otsu(s[image > 30])
    m = ndi.binary_closing(ndi.binary_opening(m, disk(3)), disk(4))
    m = ndi.binary_fill_holes(m)
    d = ndi.distance_transform_edt(m)
    pk = peak_local_max(d, min_distance=35, threshold_abs=20, labels=ndi.label(m)[0])
    markers = np.zeros(m.shape, int)
    markers[tuple(pk.T)] = np.arange(1, len(pk) + 1)
    return watershed(-d, markers, mask=m)


def reference_voids(image: np.ndarray):
    """Per reference particle: (eroded envelope mask, reference void mask)."""
    regions = particle_envelopes(image)
    s1 = ndi.gaussian_filter(image, 1.0)
    matrix = (regions == 0) & (image > 30)
    dark = float(np.median(s1[matrix]))
    out = []
    for r, c in REFERENCE_PARTICLES:
        k = regions[r, c]
        if k == 0:
            raise RuntimeError(f"reference particle at {(r, c)} not found")
        env = ndi.binary_erosion(regions == k, iterations=2)
        thr = 0.5 * (float(np.median(s1[env])) + dark)
        out.append((env, ndi.binary_opening(env & (s1 < thr))))
    return out


def nmc811_check(model, scale) -> dict:
    import tifffile

    from crackseg.inference import predict_volume

    image = tifffile.imread(NMC811).astype(np.float32)
    pred = predict_volume(model, image, scale=scale, progress=False, device="cpu")
    labels = np.asarray(pred.labels)
    void_values = [pred.schema.value(n) for n in ("crack", "pore") if pred.schema.has(n)]
    pvoid = np.isin(labels, void_values)
    ref, est = [], []
    for env, void in reference_voids(image):
        ref.append(void.sum() / env.sum())
        est.append(pvoid[env].sum() / env.sum())
    ref, est = np.array(ref), np.array(est)
    r = float(np.corrcoef(ref, est)[0, 1]) if est.std() > 0 else float("nan")
    return {
        "n_particles": len(ref), "pearson_r": r,
        "mean_reference": float(ref.mean()), "mean_model": float(est.mean()),
        "mean_ratio": float(est.mean() / ref.mean()),
        "per_particle": {"reference": ref.round(4).tolist(), "model": est.round(4).tolist()},
        "fraction_crack_pixels": float(np.mean(labels == pred.schema.value("crack"))),
        "fraction_pore_pixels": float(np.mean(labels == pred.schema.value("pore"))),
        "scale": pred.provenance["settings"].get("scale"),
        "targets": {"pearson_r": ">= 0.8", "mean": "within 30 % of the reference"},
    }


def segmentpy_check(model, scale, quick: bool) -> dict:
    import tifffile

    from crackseg.inference import predict_volume
    from crackseg.labels import load_schema
    from crackseg.metrics import dice_per_class

    binary = load_schema({"name": "particle-vs-rest", "classes": {"rest": 0, "particle": 1}})

    out = {}
    for g, names in GROUPS.items():
        scores = []
        names = [n for n in names if segmentpy_file(f"{n}_label.tif")]
        for n in names[:2] if quick else names:
            image = tifffile.imread(segmentpy_file(f"{n}.tif")).astype(np.float32)
            truth = tifffile.imread(segmentpy_file(f"{n}_label.tif")) == 0
            pred = predict_volume(model, image, scale=scale, progress=False, device="cpu")
            solid = np.asarray(pred.labels) == pred.schema.value("particle")
            scores.append({"slice": n, "dice_particle": dice_per_class(
                solid.astype(np.uint8), truth.astype(np.uint8), binary)["particle"],
                           "scale": pred.provenance["settings"].get("scale")})
        out[g] = {"slices": scores,
                  "mean_dice_particle": float(np.mean([s["dice_particle"] for s in scores]))}
    out["target"] = "particle Dice >= 0.92 on both groups"
    return out


def segmentpy_stack_check(model, scale) -> dict:
    """A 3-D model on SegmentPy slices 1501-1504 stacked into one thin volume."""
    import tifffile

    from crackseg.inference import predict_volume
    from crackseg.labels import load_schema
    from crackseg.metrics import dice_per_class

    binary = load_schema({"name": "particle-vs-rest", "classes": {"rest": 0, "particle": 1}})
    names = [n for n in GROUPS["B"] if segmentpy_file(f"{n}_label.tif")]
    volume = np.stack([tifffile.imread(segmentpy_file(f"{n}.tif")).astype(np.float32)
                       for n in names])
    truth = np.stack([tifffile.imread(segmentpy_file(f"{n}_label.tif")) == 0 for n in names])
    pred = predict_volume(model, volume, scale=scale, progress=False, device="cpu")
    labels, sch = np.asarray(pred.labels), pred.schema
    crack = labels == sch.value("crack")
    envelope = np.isin(labels, [sch.value(c) for c in ("particle", "crack", "pore")])
    dice = [dice_per_class(e.astype(np.uint8), t.astype(np.uint8), binary)["particle"]
            for e, t in zip(envelope, truth)]
    return {"slices": names, "crack_share_of_voxels": float(crack.mean()),
            "crack_share_outside_annotated_particles": float(crack[~truth].mean()),
            "envelope_dice_particle": {n: float(d) for n, d in zip(names, dice)},
            "mean_envelope_dice_particle": float(np.mean(dice)),
            "scale": pred.provenance["settings"].get("scale")}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "nmc4-2d-v2"))
    ap.add_argument("--scale", default="auto")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default="zero_shot_real", help="results file name")
    args = ap.parse_args(argv)
    from crackseg.model_io import load_model

    scale = args.scale if args.scale in ("auto", "none") else float(args.scale)
    started = time.time()
    model = load_model(args.model)
    res = {"model": model[1].get("name"), "model_sha256": model[1].get("weights_sha256"),
           "scale": args.scale}
    if int(model[1].get("spatial_dims", 3)) == 3:
        log("SegmentPy 1501-1504 as a thin volume (3-D model)")
        res["segmentpy_stack"] = st = segmentpy_stack_check(model, scale)
        print(f"SegmentPy stack: crack {100 * st['crack_share_of_voxels']:.1f} % of voxels, "
              f"envelope Dice vs annotated particles {st['mean_envelope_dice_particle']:.3f}")
    elif NMC811.exists():
        log("NMC811 slice")
        res["nmc811"] = nmc811_check(model, scale)
        print(f"NMC811: r = {res['nmc811']['pearson_r']:.3f}, mean void fraction "
              f"{res['nmc811']['mean_model']:.4f} vs reference {res['nmc811']['mean_reference']:.4f}")
    else:
        print(f"NMC811 slice not found at {NMC811} (GPL data, not shipped): skipped")
    if segmentpy_file("100_label.tif") is not None and "segmentpy_stack" not in res:
        log("SegmentPy slices")
        res["segmentpy"] = segmentpy_check(model, scale, args.quick)
        for g in GROUPS:
            print(f"SegmentPy group {g}: particle Dice {res['segmentpy'][g]['mean_dice_particle']:.3f}")
    path = write_results(args.name, res, quick=args.quick, machine=machine_info(),
                         started=started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
