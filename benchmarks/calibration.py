"""Coverage of crackseg's confidence intervals for the mean damage, on phantoms with known truth.

Each phantom (``crackseg.synthetic.generate_electrode``) has spatially
clustered damage: a latent hot-spot field with correlation length ``l`` plus
a depth gradient plus particle noise.  Its generator knows the
superpopulation mean crack fraction (``params["true_mean_crack_fraction"]``),
the target every interval below is scored against.  Three arms, over the same
seeded phantoms (seeds ``seed0 .. seed0 + n - 1``, one damage law):

**Census** (``coverage``, ``phantoms``).  The per-particle table is measured
from the ground-truth labels and instances (``imaging=False``), and 95 %
intervals of the mean crack fraction are computed with

* the spatial block bootstrap with blocks of 1, ``BLOCK_FACTOR`` and 4 x the
  correlation length fitted to the damage variogram, each plain and widened
  for the covariance of neighbours across block faces (range: the fitted
  variogram model's radius holding 95 % of its covariance); crackseg's default is
  ``block_x2+cross``;
* the iid bootstrap over particles (what ignoring clustering gives).

**Known segmentation error** (``segmentation_error``).  Each census particle
gets a measured crack fraction with a known random error, multiplicative and
mean-preserving (so the measured mean is unbiased)::

    measured_i = min(1, c_i * exp(a + b_i - (tau^2 + sigma^2) / 2))
    a ~ N(0, tau^2)      one per volume: the whole segmentation calls more or
                         fewer crack voxels (default tau = 0.15)
    b_i ~ N(0, sigma^2)  independent per particle (default sigma = 0.30)

and ``--seg-error-samples`` posterior samples drawn from the same law around
the measurement (``measured_i * exp(a_s + b_is - (tau^2 + sigma^2) / 2)``,
fresh ``a_s``, ``b_is`` per sample), so that the posterior is right by
construction.  The error sits on the log scale rather than the logit scale
because its mean is then exactly zero on the crack-fraction scale: a logit
error would add a Jensen bias of the mean that no interval is meant to
absorb.  Intervals that ignore the samples (the measured values alone) are
compared with intervals that propagate them through
``bootstrap_ci(..., posterior=samples)``, iid and ``block_x2+cross``.  The
shared term ``a`` is what propagation must catch: independent per-particle
errors average out over hundreds of particles.

**Shipped model end to end** (``end_to_end``).  For every seed a phantom with
imaging is generated at the voxel size the model was trained on (0.5 µm; the
census arms use 1 µm so that many particles fit in 192³, where the model's
particles would be half their trained size in voxels) and segmented with
``predict_volume(..., uncertainty="tta")``; particle instances
(``particle_instances``), posterior counts (``particle_posterior_counts``),
the particle table with posterior samples and ``summarize`` follow as in
``crackseg run``.  Scored against the superpopulation mean: the default
interval with the TTA samples propagated and ignored, the iid interval, and
the same statistics on the phantom's true labels and instances (what the
statistics can do at this field of view without segmentation error).  Also
reported: the bias of the predicted mean damage against the superpopulation
mean and against the true census of the same volume, and how often the
TTA-only interval contains that census mean.

**Annotated sections** (``annotated``).  The shipped model segments
phantoms (``--annotated-shape``³ at ``--model-voxel-size``) rendered with an
imaging outside its training (``--annotated-snr`` 4 and ``--annotated-blur``
1.8 against the training's 8 and 1.2), which biases its crack calls; three
evenly spaced z-sections of the true labels are the annotation.
``crackseg.stats.annotation_error.apply_annotation_error`` corrects the
default interval of the mean (``summarize``, border-truncated particles
excluded) with what the sections measure: the mean crack fraction of the
annotation's own 2-D particle profiles (``sections``, the default); the
profile ratio ``R`` = that mean over the model's profile mean in the same
sections, times the model's mean (``profiles``); the same annotated mean
converted to the volume by the model's volume mean over its profile mean in
all sections (``direct``, scored here only); and, on the model's particles
crossing the sections, ``R`` from crack pixel sums (``ratio_area``), from
per-profile crack fractions (``ratio_particle``) and a calibration line
(``line``).  Scored
against the volume's true census mean (the mean true crack fraction of the
true particles not touching the border, as the end-to-end arm's truth):
coverage, median relative error of the corrected and uncorrected estimates,
and the mean segmentation share of the corrected interval's variance.

**Point patterns** (``point_patterns``).  The statistics see particles as
centroids with a damage value, so their calibration can be measured without
voxels, at sizes and covariances the phantoms do not reach:
``crackseg.synthetic.points.damage_points`` draws centroids uniformly in a cube
and each particle's crack fraction from the phantoms' damage law, with a
squared-exponential or an exponential latent field (``POINT_ROWS``: about 900
particles in 192 µm, as the census phantoms, and 2 x 10^4 particles in 540 µm).
Intervals: crackseg's default, the same widened out to the former fixed range
(3 x the exponential model's length, ``cross_3L``), the plain block bootstrap
and iid.

**Compare** (``compare_false_positives``).  ``compare_samples`` on two volumes
of one electrode (two cubes of one latent field, a cube width apart, same
law): how often each test rejects at level ``1 - confidence``, and how often
the intervals of the differences exclude 0.  All of these are false calls.

Coverage = share of phantoms whose interval contains the true mean, with its
Clopper-Pearson 95 % interval.  The result, with the machine and command,
goes to ``benchmarks/results/calibration.json`` (``--quick``:
``calibration_quick.json``).

Usage::

    python benchmarks/calibration.py            # 50 phantoms / volumes per row, 100 compare pairs
    python benchmarks/calibration.py --quick    # 8 census phantoms of 128³, 2 model phantoms of 96³ (CI smoke test)
    python benchmarks/calibration.py --arms model --cache /tmp/calcache   # one arm, reusing cached work
    python benchmarks/calibration.py --arms annotated --jobs 1   # shipped model corrected on 3 annotated sections

Arms run separately keep the other arms' results already in the output file
(``earlier_runs`` says which run measured them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import SHIPPED_MODEL, machine_info  # noqa: E402
from crackseg._version import __version__  # noqa: E402
from crackseg.errors import CracksegError, InputError  # noqa: E402
from crackseg.io import atomic_path, write_json  # noqa: E402
from crackseg.stats.bootstrap import bootstrap_ci, cross_block_factors  # noqa: E402
from crackseg.stats.distribution import population  # noqa: E402
from crackseg.stats.spatial import correlation_length  # noqa: E402
from crackseg.stats.summary import BLOCK_FACTOR, block_size_for  # noqa: E402
from crackseg.stats.table import particle_coords, particle_table, volume_extent  # noqa: E402
from crackseg.synthetic import generate_electrode  # noqa: E402

ARMS = ("census", "known-error", "model", "points", "compare", "annotated")


_CENSUSES: dict = {}


def phantom_particles(seed: int, args) -> dict:
    """Census of one phantom: the used particles' crack fraction, centroids, weights, truth."""
    key = f"phantom_{args.shape}_{args.voxel_size:g}_{args.correlation_length:g}_{seed}_{args.border}"
    if key not in _CENSUSES:
        _CENSUSES[key] = _phantom_particles(seed, args, key)
    return _CENSUSES[key]


def _phantom_particles(seed: int, args, key: str) -> dict:
    cache = Path(args.cache) / f"{key}.npz" if args.cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    ph = generate_electrode((args.shape,) * 3, seed=seed, imaging=False,
                            voxel_size_um=args.voxel_size,
                            correlation_length_um=args.correlation_length)
    table = particle_table(ph.labels, ph.instances, voxel_size_um=ph.voxel_size_um)
    mask, weights, _ = population(table, args.border)
    extent, _ = volume_extent(table)
    out = {"values": table.loc[mask, "crack_fraction"].to_numpy(float),
           "coords": particle_coords(table)[0][mask], "weights": weights,
           "extent": np.asarray(extent, float), "truth": np.float64(ph.params["true_mean_crack_fraction"])}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **out)
    return out


def one_phantom(seed: int, args) -> dict:
    """Intervals of the mean crack fraction of one phantom, for every method."""
    p = phantom_particles(seed, args)
    values, coords, extent, truth = p["values"], p["coords"], p["extent"], float(p["truth"])
    w = p["weights"] if args.border == "miles" else None
    length, fit, _ = correlation_length(values, coords, seed=seed)
    row = {"seed": seed, "n_particles": int(values.size), "truth": truth,
           "estimate": float(np.average(values, weights=w)),
           "correlation_length_fit_um": length, "spatial_fraction": fit.get("spatial_fraction"),
           "methods": {}}
    for factor in args.factors:
        size, _ = block_size_for(length, extent, factor=factor)
        for corrected in (False, True):
            ci = bootstrap_ci(values, "mean", method="block", coords=coords, block_size_um=size,
                              extent=extent, weights=w, n_resamples=args.n_resamples,
                              confidence=args.confidence, seed=seed,
                              cross_block_range=fit["correlation_range"] if corrected and length
                              else None)
            name = f"block_x{factor:g}" + ("+cross" if corrected else "")
            row["methods"][name] = _record(ci, truth)
    ci = bootstrap_ci(values, "mean", method="iid", weights=w, n_resamples=args.n_resamples,
                      confidence=args.confidence, seed=seed)
    row["methods"]["iid"] = _record(ci, truth)
    return row


def _record(ci, truth) -> dict:
    lo, hi = ci.ci if ci.ci is not None else (np.nan, np.nan)
    return {"ci": [lo, hi], "covered": bool(lo <= truth <= hi), "width": float(hi - lo),
            "n_blocks": ci.n_blocks, "block_size_um": ci.block_size, "method": ci.method,
            "cross_block_factor": ci.extra.get("cross_block_factor")}


def _record_posterior(ci, truth) -> dict:
    """:func:`_record` plus the estimate and the segmentation share of the variance."""
    unc = ci.extra.get("uncertainty") or {}
    return {**_record(ci, truth), "estimate": float(ci.estimate),
            "share_segmentation": unc.get("share_segmentation")}


def coverage_table(rows: list[dict], confidence: float) -> dict:
    """Coverage, its Clopper-Pearson 95 % interval and mean width per method."""
    out = {}
    for m in rows[0]["methods"]:
        cov = np.array([r["methods"][m]["covered"] for r in rows])
        k, n = int(cov.sum()), cov.size
        ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        out[m] = {"coverage": k / n, "covered": k, "n_phantoms": n,
                  "coverage_ci95": [float(ci.low), float(ci.high)],
                  "mean_width": float(np.nanmean([r["methods"][m]["width"] for r in rows])),
                  "mean_n_blocks": float(np.nanmean([np.nan if r["methods"][m]["n_blocks"] is None
                                                     else r["methods"][m]["n_blocks"] for r in rows]))}
    return out


# ---------------------------------------------------------------- known segmentation error


def measured_with_error(values, *, seed: int, shared_sd: float, particle_sd: float,
                        n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Measured crack fractions and posterior samples under a known multiplicative error.

    ``measured_i = min(1, c_i * exp(a + b_i - v / 2))`` with ``a ~ N(0,
    shared_sd^2)`` shared by all particles (one per volume), ``b_i ~ N(0,
    particle_sd^2)`` per particle and ``v = shared_sd^2 + particle_sd^2``, so
    that ``E[measured_i] = c_i``.  Posterior sample ``s`` applies a fresh
    draw of the same law to the measurement.

    Parameters
    ----------
    values : array_like, shape (n,)
        True crack fractions (0..1).
    seed : int
        Seed of the error draws.
    shared_sd, particle_sd : float
        Standard deviations of the shared and per-particle log-scale errors.
    n_samples : int
        Posterior samples.

    Returns
    -------
    measured : numpy.ndarray, shape (n,)
    posterior : numpy.ndarray, shape (n_samples, n)

    Examples
    --------
    >>> m, post = measured_with_error(np.full(4000, 0.05), seed=0, shared_sd=0.0,
    ...                               particle_sd=0.3, n_samples=4)
    >>> post.shape, round(float(m.mean()), 2)
    ((4, 4000), 0.05)
    """
    c = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng([int(seed), 1])
    half_var = (shared_sd ** 2 + particle_sd ** 2) / 2

    def factors(k: int) -> np.ndarray:
        a = rng.normal(0.0, shared_sd, (k, 1))
        b = rng.normal(0.0, particle_sd, (k, c.size))
        return np.exp(a + b - half_var)

    measured = np.minimum(1.0, c * factors(1)[0])
    posterior = np.minimum(1.0, measured[None] * factors(int(n_samples)))
    return measured, posterior


def known_error_phantom(seed: int, args) -> dict:
    """Intervals of the mean from measured values with a known error, posterior ignored vs propagated."""
    p = phantom_particles(seed, args)
    values, coords, extent, truth = p["values"], p["coords"], p["extent"], float(p["truth"])
    w = p["weights"] if args.border == "miles" else None
    measured, post = measured_with_error(values, seed=seed, shared_sd=args.seg_error_shared,
                                         particle_sd=args.seg_error_particle,
                                         n_samples=args.seg_error_samples)
    length, fit, _ = correlation_length(measured, coords, seed=seed)
    size, _ = block_size_for(length, extent, factor=BLOCK_FACTOR)
    cross = fit["correlation_range"] if length else None
    row = {"seed": seed, "n_particles": int(values.size), "truth": truth,
           "census_mean": float(np.average(values, weights=w)),
           "measured_mean": float(np.average(measured, weights=w)),
           "correlation_length_fit_um": length, "methods": {}}
    common = dict(weights=w, n_resamples=args.n_resamples, confidence=args.confidence, seed=seed)
    for posterior, suffix in ((None, ""), (post, "+posterior")):
        ci = bootstrap_ci(measured, "mean", method="iid", posterior=posterior, **common)
        row["methods"]["iid" + suffix] = _record_posterior(ci, truth)
        ci = bootstrap_ci(measured, "mean", method="block", coords=coords, block_size_um=size,
                          extent=extent, cross_block_range=cross, posterior=posterior, **common)
        row["methods"][f"block_x{BLOCK_FACTOR:g}+cross" + suffix] = _record_posterior(ci, truth)
    return row


# ---------------------------------------------------------------- shipped model end to end


def _table_arrays(table, prefix: str) -> dict:
    out = {f"{prefix}__{c}": table[c].to_numpy() for c in table.columns}
    out[f"{prefix}__attrs"] = np.array(json.dumps(table.attrs, default=float))
    return out


def _table_from(z, prefix: str):
    import pandas as pd

    cols = [k for k in z.files if k.startswith(prefix + "__") and k != prefix + "__attrs"]
    table = pd.DataFrame({k[len(prefix) + 2:]: z[k] for k in cols})
    table.attrs.update(json.loads(str(z[prefix + "__attrs"])))
    return table


def model_particles(seed: int, args, model) -> dict:
    """Predicted (with TTA posterior) and true particle tables of one imaged phantom.

    Returns ``{"pred", "true"}`` (particle tables), ``"posterior"`` (labels,
    crack-fraction samples of shape (n_samples, n_particles)), ``"truth"``
    and ``"seconds"`` per stage.
    """
    from crackseg.inference import predict_volume
    from crackseg.particles import particle_instances
    from crackseg.uncertainty import particle_posterior_counts

    sha = str(model[1].get("weights_sha256", ""))[:12]
    cache = Path(args.cache) / (f"model_{args.model_shape}_{args.model_voxel_size:g}_"
                                f"{args.correlation_length:g}_tta{args.tta_samples}_{sha}_{seed}.npz") \
        if args.cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return {"pred": _table_from(z, "pred"), "true": _table_from(z, "true"),
                    "posterior": (z["post_label"], z["post_crack_fraction"]),
                    "truth": float(z["truth"]), "seconds": json.loads(str(z["seconds"])),
                    "cached": True}
    sec = {}
    t0 = time.perf_counter()
    ph = generate_electrode((args.model_shape,) * 3, seed=seed, voxel_size_um=args.model_voxel_size,
                            correlation_length_um=args.correlation_length)
    sec["phantom"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = predict_volume(model, ph.image, voxel_size_um=ph.voxel_size_um, uncertainty="tta",
                          n_samples=args.tta_samples, seed=seed, progress=False)
    sec["predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = np.asarray(pred.labels)
    inst = particle_instances(labels, schema=pred.schema, voxel_size_um=pred.voxel_size_um)
    counts = particle_posterior_counts(inst, pred.sample_bits, pred.n_samples)
    post = (counts["label"], counts["crack_voxels"] / np.maximum(counts["envelope_voxels"], 1.0))
    sec["particles"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred_table = particle_table(labels, inst, schema=pred.schema, voxel_size_um=pred.voxel_size_um,
                                posterior=post)
    true_table = particle_table(ph.labels, ph.instances, voxel_size_um=ph.voxel_size_um)
    sec["tables"] = time.perf_counter() - t0
    out = {"pred": pred_table, "true": true_table, "posterior": post,
           "truth": float(ph.params["true_mean_crack_fraction"]), "seconds": sec, "cached": False}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, overwrite=True) as tmp, open(tmp, "wb") as f:
            np.savez(f, **_table_arrays(pred_table, "pred"), **_table_arrays(true_table, "true"),
                     post_label=post[0], post_crack_fraction=post[1], truth=np.float64(out["truth"]),
                     seconds=np.array(json.dumps(sec)))
    return out


def _record_summary(interval: dict | None, truth: float) -> dict:
    """Coverage record of a ``summary.json`` interval (``None``: no summary)."""
    interval = interval or {}
    ci = interval.get("ci") or [None, None]
    lo, hi = (np.nan if v is None else float(v) for v in ci)
    unc = (interval.get("extra") or {}).get("uncertainty") or {}
    return {"ci": [lo, hi], "covered": bool(lo <= truth <= hi), "width": float(hi - lo),
            "estimate": interval.get("estimate"), "n_blocks": interval.get("n_blocks"),
            "block_size_um": interval.get("block_size"), "method": interval.get("method"),
            "cross_block_factor": (interval.get("extra") or {}).get("cross_block_factor"),
            "share_segmentation": unc.get("share_segmentation"), "note": interval.get("note")}


def model_phantom(seed: int, args, model) -> dict:
    """Intervals of the mean damage from the shipped model's segmentation of one phantom."""
    from crackseg.stats.summary import summarize

    p = model_particles(seed, args, model)
    truth = p["truth"]
    opts = dict(confidence=args.confidence, n_resamples=args.n_resamples, seed=seed,
                border=args.border, spatial=False, protocols=False)
    summaries, notes = {}, []
    for key, table, post in (("model", p["pred"], None), ("model+tta", p["pred"], p["posterior"]),
                             ("truth", p["true"], None)):
        try:
            summaries[key] = summarize(table, posterior=post, **opts)
        except InputError as e:
            summaries[key] = None
            notes.append(f"{key}: {e}")

    def damage(key, stat="mean"):
        return (summaries[key] or {}).get("damage", {}).get(stat)

    methods = {
        "model_block+cross+tta": _record_summary(damage("model+tta"), truth),
        "model_block+cross": _record_summary(damage("model"), truth),
        "model_iid": _record_summary(damage("model", "mean_iid"), truth),
        "truth_block+cross": _record_summary(damage("truth"), truth),
        "truth_iid": _record_summary(damage("truth", "mean_iid"), truth),
    }
    pred_mean = methods["model_block+cross"]["estimate"]
    census = methods["truth_block+cross"]["estimate"]
    unc = ((damage("model+tta") or {}).get("extra") or {}).get("uncertainty") or {}
    seg_ci = unc.get("ci_segmentation_only")

    def diff(a, b):
        return None if a is None or b is None else float(a - b)

    return {
        "seed": seed, "truth": truth,
        "n_particles_pred": None if summaries["model"] is None else summaries["model"]["n_particles"],
        "n_particles_true": None if summaries["truth"] is None else summaries["truth"]["n_particles"],
        "pred_mean": pred_mean, "pred_posterior_mean": methods["model_block+cross+tta"]["estimate"],
        "census_mean": census, "bias_vs_truth": diff(pred_mean, truth),
        "bias_vs_census": diff(pred_mean, census), "census_minus_truth": diff(census, truth),
        "share_segmentation": unc.get("share_segmentation"),
        "tta_only_ci": seg_ci,
        "tta_only_covers_census": None if seg_ci is None or census is None
        else bool(seg_ci[0] <= census <= seg_ci[1]),
        "block_size_rule": None if summaries["model"] is None
        else summaries["model"]["bootstrap"]["block_size_rule"],
        "seconds": {k: round(v, 2) for k, v in p["seconds"].items()}, "cached": p["cached"],
        "notes": notes, "methods": methods,
    }


def mean_with_ci(x) -> dict:
    """Mean of per-phantom values with its Student-t 95 % interval (None values dropped)."""
    v = np.asarray([a for a in x if a is not None and np.isfinite(a)], dtype=np.float64)
    out = {"mean": float(v.mean()) if v.size else None,
           "sd": float(v.std(ddof=1)) if v.size > 1 else None, "n": int(v.size), "ci95": None}
    if v.size > 1:
        ci = sps.ttest_1samp(v, 0.0).confidence_interval(0.95)
        out["ci95"] = [float(ci.low), float(ci.high)]
    return out


def model_findings(rows: list[dict], cov: dict, bias: dict, args) -> list[str]:
    """Plain-language reading of the end-to-end arm, computed from its numbers."""
    n = len(rows)
    tta, ref = cov["model_block+cross+tta"], cov["truth_block+cross"]
    half = 0.5 * tta["mean_width"]
    b = bias["bias_vs_census"]
    out = [f"Shipped model, default interval with TTA samples propagated: covers the true mean in "
           f"{tta['covered']}/{n} phantoms ({tta['coverage']:.2f}); the same statistics on the "
           f"true labels of the same volumes: {ref['covered']}/{n} ({ref['coverage']:.2f})."]
    if b["mean"] is not None:
        rel = abs(b["mean"]) / half if half > 0 else float("nan")
        ci = b["ci95"]
        out.append(f"Predicted mean damage minus the true census mean of the same volume: "
                   f"{b['mean']:+.4f}" + (f" (95 % CI {ci[0]:+.4f} to {ci[1]:+.4f})" if ci else "")
                   + f", {rel:.2f} x the interval's mean half-width {half:.4f}.")
        if ci and (ci[0] > 0 or ci[1] < 0):
            out.append("The model's mean damage is biased. TTA samples describe how the prediction "
                       "changes under flips and rotations, not the model's systematic error, so "
                       "propagating them cannot correct for it"
                       + (": the lower coverage than with true labels comes from this bias."
                          if tta["coverage"] < ref["coverage"] else "."))
        else:
            out.append(f"No model bias is resolved by {b['n']} phantoms at this precision.")
    shares = [r["share_segmentation"] for r in rows if r["share_segmentation"] is not None]
    if shares:
        out.append(f"TTA samples contribute {np.mean(shares):.1%} of the interval's variance on "
                   "average; the TTA-only interval contains the volume's true census mean in "
                   f"{sum(bool(r['tta_only_covers_census']) for r in rows)}/{n} phantoms.")
    if ref["coverage_ci95"][1] < args.confidence:
        out.append(f"Even the true labels under-cover at this field of view "
                   f"({args.model_shape * args.model_voxel_size:g} µm, on average "
                   f"{np.mean([r['n_particles_true'] or 0 for r in rows]):.0f} particles used): the "
                   "volume spans too few correlation lengths for an interval of the "
                   "superpopulation mean (the summary says so in its notes).")
    return out


# ---------------------------------------------------------------- annotated sections


def annotated_slices(depth: int, n: int) -> list[int]:
    """``n`` evenly spaced slice indices of ``depth`` slices (centres of ``n`` equal slabs).

    Examples
    --------
    >>> annotated_slices(128, 3)
    [21, 64, 107]
    """
    return [int((k + 0.5) * depth / n) for k in range(n)]


def annotated_prediction(seed: int, args, model) -> dict:
    """The model's labels and instances, and the truth, of one phantom with shifted imaging."""
    from crackseg.inference import predict_volume
    from crackseg.particles import particle_instances

    sha = str(model[1].get("weights_sha256", ""))[:12]
    cache = Path(args.cache) / (f"annotated_{args.annotated_shape}_{args.model_voxel_size:g}_"
                                f"snr{args.annotated_snr:g}_blur{args.annotated_blur:g}_"
                                f"{args.correlation_length:g}_{sha}_{seed}.npz") \
        if args.cache else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    ph = generate_electrode((args.annotated_shape,) * 3, seed=seed,
                            voxel_size_um=args.model_voxel_size, snr=args.annotated_snr,
                            blur_sigma=args.annotated_blur,
                            correlation_length_um=args.correlation_length)
    pred = predict_volume(model, ph.image, voxel_size_um=ph.voxel_size_um, progress=False)
    labels = np.asarray(pred.labels)
    inst = particle_instances(labels, schema=pred.schema, voxel_size_um=pred.voxel_size_um)
    out = {"labels": labels, "instances": inst, "true_labels": ph.labels,
           "true_instances": ph.instances, "voxel_size_um": np.asarray(ph.voxel_size_um, float)}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache, overwrite=True) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **out)
    return out


def annotated_phantom(seed: int, args, model) -> dict:
    """Uncorrected and annotation-corrected intervals of one phantom's mean damage.

    The model segments a phantom whose imaging lies outside its training
    (``--annotated-snr``, ``--annotated-blur``); ``--annotated-sections``
    evenly spaced z-sections of the true labels are the annotation.  Scored
    against the volume's true census mean (border-truncated particles
    excluded, as in the end-to-end arm).
    """
    import copy

    from crackseg.stats.annotation_error import apply_annotation_error
    from crackseg.stats.summary import summarize

    t0 = time.perf_counter()
    p = annotated_prediction(seed, args, model)
    vs = tuple(float(v) for v in p["voxel_size_um"])
    true_table = particle_table(p["true_labels"], p["true_instances"], voxel_size_um=vs)
    mask, _, _ = population(true_table, args.border)
    census = float(true_table.loc[mask, "crack_fraction"].mean())
    slices = annotated_slices(p["labels"].shape[0], args.annotated_sections)
    row = {"seed": seed, "truth": census, "sections": slices, "methods": {}, "notes": []}
    try:
        table = particle_table(p["labels"], p["instances"], voxel_size_um=vs)
        summary = summarize(table, confidence=args.confidence, n_resamples=args.n_resamples,
                            seed=seed, border=args.border, spatial=False, protocols=False)
    except InputError as e:
        row["notes"].append(str(e))
        return row
    mean = summary["damage"]["mean"]
    row["n_particles_pred"] = summary["n_particles"]
    row["n_particles_true"] = int(mask.sum())
    row["methods"]["uncorrected"] = _record_annotated(mean, census)
    crack = p["labels"] == 2
    inside = p["instances"] > 0
    row["volume_ratio"] = float((p["true_labels"][inside] == 2).sum() / max(crack[inside].sum(), 1))
    for name in args.annotated_models:
        s = copy.deepcopy(summary)
        kind, _, weighting = name.partition("_")
        if kind == "direct":
            entry = _direct_entry(mean, p["labels"], p["true_labels"][slices], slices, seed, args)
        else:
            entry = apply_annotation_error(s, p["labels"], p["instances"],
                                           p["true_labels"][slices], slices, seed=seed,
                                           n_resamples=args.n_resamples, kind=kind,
                                           weighting=weighting or "area")
        row["methods"][f"corrected_{name}"] = {
            **_record_annotated(entry, census), "n_blocks": mean.get("n_blocks"),
            **{k: entry.get(k) for k in ("ratio", "ratio_ci", "segmentation_share", "kind",
                                         "line", "line_ci",
                                         "n_particles", "n_profiles", "sufficient", "note")}}
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _direct_entry(mean: dict, labels, sections, slices, seed: int, args) -> dict:
    """The annotated sections' mean profile damage ``A`` times the model's volume mean over its
    mean profile damage in all sections (``direct``): the profile ratio with the model's side
    measured on every section instead of the annotated ones."""
    from crackseg.sections import section_instances
    from crackseg.stats.annotation_error import corrected_mean, profile_model, section_profiles
    from crackseg.stats.table import section_stack_table

    model = profile_model(section_profiles(labels, slices, sections), kind="sections",
                          n_resamples=args.n_resamples, confidence=args.confidence, seed=seed)
    every = section_stack_table(labels, section_instances(labels))
    b_all = float(every.loc[~every["touches_border"], "crack_fraction"].mean())
    a_reps = model.line_replicates[:, 0] / b_all
    direct = model._replace(ratio=model.line[0] / b_all, replicates=a_reps, kind="profiles",
                            line=(0.0, model.line[0] / b_all), line_replicates=None)
    return corrected_mean(mean, direct, seed=seed)


def _record_annotated(entry: dict, truth: float) -> dict:
    """Estimate, interval, coverage and relative error of one interval of the mean."""
    ci = entry.get("ci") or [None, None]
    lo, hi = (np.nan if v is None else float(v) for v in ci)
    est = entry.get("estimate")
    return {"estimate": est, "ci": [lo, hi], "covered": bool(lo <= truth <= hi),
            "width": float(hi - lo),
            "relative_error": None if est is None or truth <= 0 else abs(est - truth) / truth,
            "n_blocks": entry.get("n_blocks")}


def _annotated_phantom_from(seed: int, args) -> dict:
    """:func:`annotated_phantom` with the model loaded once per worker process."""
    if args.model not in _WORKER_MODEL:
        from crackseg.model_io import load_model

        _WORKER_MODEL[args.model] = load_model(args.model)
    return annotated_phantom(seed, args, _WORKER_MODEL[args.model])


def _annotated_arm(args, result: dict) -> None:
    """Coverage and error of the annotation-corrected mean with a deliberately biased model."""
    t0 = time.time()
    rows = map_seeds(_annotated_phantom_from, seeds(args, args.annotated_phantoms), args,
                     "annotated")
    scored = [r for r in rows if r["methods"]]
    cov = coverage_table(scored, args.confidence) if scored else {}
    for name, c in cov.items():
        rel = [r["methods"][name]["relative_error"] for r in scored]
        c["median_relative_error"] = float(np.nanmedian([np.nan if v is None else v for v in rel]))
        shares = [r["methods"][name].get("segmentation_share") for r in scored]
        shares = [s for s in shares if s is not None]
        c["mean_segmentation_share"] = float(np.mean(shares)) if shares else None
        c["n_insufficient"] = int(sum(r["methods"][name].get("sufficient") is False
                                      for r in scored))
    result["annotated"] = {
        "setting": {"shape": [args.annotated_shape] * 3, "voxel_size_um": args.model_voxel_size,
                    "snr": args.annotated_snr, "blur_sigma": args.annotated_blur,
                    "training_imaging": "snr 8, blur_sigma 1.2 (generate_electrode defaults)",
                    "n_sections": args.annotated_sections, "error_models": args.annotated_models,
                    "annotation": "the true labels of evenly spaced z-sections",
                    "model": args.model,
                    "truth": "true census mean: mean true crack fraction of the particles of "
                             "the true instances not touching the border"},
        "elapsed_s": time.time() - t0, "n_phantoms": len(rows), "n_scored": len(scored),
        "coverage": cov,
        "mean_bias_uncorrected": mean_with_ci([r["methods"]["uncorrected"]["estimate"] - r["truth"]
                                               for r in scored]),
        "median_volume_ratio": float(np.median([r["volume_ratio"] for r in scored]))
        if scored else None,
        "phantoms": rows,
    }
    _print_coverage(f"Annotated sections ({args.annotated_sections} of the true labels; shipped "
                    f"model on {args.annotated_shape}³ phantoms at {args.model_voxel_size:g} µm "
                    f"imaged with snr {args.annotated_snr:g}, blur {args.annotated_blur:g}):", cov)
    for name, c in cov.items():
        share = c["mean_segmentation_share"]
        print(f"  {name:<26} median relative error {c['median_relative_error']:.3f}"
              + (f", mean segmentation share {share:.1%}" if share is not None else "")
              + (f", {c['n_insufficient']} phantoms too few annotated particles"
                 if c["n_insufficient"] else ""))
    print()


# ---------------------------------------------------------------- point patterns


#: Rows of the point-pattern arm: name -> (kernel, correlation length µm,
#: particles per volume, cube side µm).  The first mirrors the census phantoms
#: (about 900 particles in 192 µm); the exponential field at 20 µm holds 95 % of
#: its covariance within 126 µm, more than half the 192 µm volume (the summary
#: flags such volumes); at 10 µm it fits; the last two hold 2 x 10^4 particles.
POINT_ROWS = {
    "squared_exponential_l20_n900": ("squared_exponential", 20.0, 900, 192.0),
    "exponential_l20_n900": ("exponential", 20.0, 900, 192.0),
    "exponential_l10_n900": ("exponential", 10.0, 900, 192.0),
    "squared_exponential_l20_n20000": ("squared_exponential", 20.0, 20000, 540.0),
    "exponential_l20_n20000": ("exponential", 20.0, 20000, 540.0),
}


def points_volume(seed: int, args, row: str) -> dict:
    """Intervals of the mean damage of one simulated point pattern (``damage_points``).

    Methods: ``default`` (blocks of 2 x the fitted correlation length, widened
    out to the fitted model's range, as ``crackseg stats``), ``cross_3L``
    (the same widened out to 3 x the exponential model's length, the former
    rule), ``block_x2`` (not widened) and ``iid``.
    """
    from crackseg.synthetic.points import damage_points

    kernel, length_um, n, side = POINT_ROWS[row]
    extent = (side,) * 3
    (vol,), truth = damage_points(n, extent, seed=seed, kernel=kernel,
                                  correlation_length_um=length_um)
    values, coords = vol
    length, fit, _ = correlation_length(values, coords, seed=seed)
    size, _ = block_size_for(length, extent, factor=BLOCK_FACTOR)
    common = dict(coords=coords, block_size_um=size, extent=extent, n_resamples=args.n_resamples,
                  confidence=args.confidence, seed=seed)
    default = fit.get("correlation_range") if length else None
    methods = {"default": _record(bootstrap_ci(values, "mean", cross_block_range=default,
                                               **common), truth)}
    plain = bootstrap_ci(values, "mean", **common)
    methods["block_x2"] = _record(plain, truth)
    old = fit["candidates"]["exponential"] if fit.get("converged") else {}
    if old.get("converged"):
        # what bootstrap_ci gives with that range: the same resamples, widened by the factor
        f = float(cross_block_factors((values - values.mean())[None], np.ones(n), coords, size,
                                      3 * old["length"], extent=extent)[0])
        e = plain.estimate
        plain.ci = (e + f * (plain.ci[0] - e), e + f * (plain.ci[1] - e))
        plain.extra = {"cross_block_factor": f}
    methods["cross_3L"] = _record(plain, truth)
    methods["iid"] = _record(bootstrap_ci(values, "mean", method="iid",
                                          n_resamples=args.n_resamples,
                                          confidence=args.confidence, seed=seed), truth)
    return {"seed": seed, "n_particles": n, "truth": truth, "model": fit.get("model"),
            "correlation_length_fit_um": length, "correlation_range_um": default,
            "range_over_half_volume": bool(default and default > side / 2), "methods": methods}


def _points_arm(args, result: dict) -> None:
    """The point-pattern rows: coverage per row and method."""
    from functools import partial

    out = {}
    for row in args.point_rows:
        kernel, length_um, n, side = POINT_ROWS[row]
        t0 = time.time()
        rows = map_seeds(partial(points_volume, row=row), seeds(args, args.point_volumes[row]),
                         args, row)
        cov = coverage_table(rows, args.confidence)
        out[row] = {"kernel": kernel, "correlation_length_um": length_um, "n_particles": n,
                    "side_um": side, "elapsed_s": time.time() - t0, "coverage": cov,
                    "share_squared_exponential_chosen": float(np.mean(
                        [r["model"] == "squared_exponential" for r in rows])),
                    "share_range_over_half_volume": float(np.mean(
                        [r["range_over_half_volume"] for r in rows])),
                    "median_cross_block_factor": float(np.nanmedian(
                        [r["methods"]["default"]["cross_block_factor"] or np.nan for r in rows])),
                    "phantoms": rows}
        _print_coverage(f"Point patterns {row} ({kernel}, l = {length_um:g} µm, {n} particles in "
                        f"{side:g} µm, {len(rows)} volumes, {out[row]['elapsed_s']:.0f} s):", cov)
    result["point_patterns"] = out


# ---------------------------------------------------------------- compare: false positives


def compare_pair(seed: int, args, kernel: str) -> dict:
    """``compare_samples`` of two volumes of one clustered electrode: which calls are false."""
    from crackseg.stats.compare import Volume, compare_samples
    from crackseg.synthetic.points import damage_points

    extent = (args.compare_side,) * 3
    vols, _ = damage_points(args.compare_particles, extent, seed=seed, kernel=kernel,
                            correlation_length_um=args.correlation_length, n_volumes=2)
    groups = {"a": [Volume(*vols[0], extent)], "b": [Volume(*vols[1], extent)]}
    r = compare_samples(groups, n_resamples=args.n_resamples, seed=seed)
    c = r["comparisons"]["b"]
    alpha = 1 - args.confidence

    def excludes_zero(key):
        lo, hi = c[key]["ci"]
        return not lo <= 0 <= hi

    return {"seed": seed, "calls": {
        "permutation_test (block, means)": c["permutation_test"]["p_value"] < alpha,
        "mann_whitney (block, ranks)": c["mann_whitney"]["p_value"] < alpha,
        "mann_whitney, particles independent": c["mann_whitney"]["p_value_particles_independent"]
        < alpha,
        "CI of the difference of means excludes 0": excludes_zero("difference_of_means"),
        "CI of Cliff's delta excludes 0": excludes_zero("cliffs_delta")},
        "n_blocks": r["groups"]["a"]["n_blocks"][0]}


def _compare_arm(args, result: dict) -> None:
    """False-positive rate of ``compare`` on pairs of volumes of one electrode."""
    from functools import partial

    out = {}
    for kernel in args.compare_kernels:
        t0 = time.time()
        rows = map_seeds(partial(compare_pair, kernel=kernel), seeds(args, args.compare_pairs),
                         args, f"compare {kernel}")
        rates = {}
        for name in rows[0]["calls"]:
            k = int(sum(r["calls"][name] for r in rows))
            ci = sps.binomtest(k, len(rows)).proportion_ci(confidence_level=0.95, method="exact")
            rates[name] = {"rate": k / len(rows), "calls": k, "n_pairs": len(rows),
                           "rate_ci95": [float(ci.low), float(ci.high)]}
        out[kernel] = {"elapsed_s": time.time() - t0, "false_positive_rate": rates, "pairs": rows}
        print(f"compare, two volumes of one electrode ({kernel}, {args.compare_particles} "
              f"particles in {args.compare_side:g} µm each, {len(rows)} pairs, level "
              f"{1 - args.confidence:g}):")
        for name, v in rates.items():
            print(f"  {name:<44}{v['rate']:>7.3f}   [{v['rate_ci95'][0]:.3f}, {v['rate_ci95'][1]:.3f}]")
    result["compare_false_positives"] = {
        "setting": {"particles_per_volume": args.compare_particles, "side_um": args.compare_side,
                    "correlation_length_um": args.correlation_length,
                    "volumes": "two cubes of one latent damage field, one cube width apart"},
        **out}


def _print_coverage(title: str, cov: dict) -> None:
    print(title)
    print(f"{'method':<28}{'coverage':>10}{'95% CI of coverage':>22}{'mean width':>12}{'blocks':>8}")
    for m, c in cov.items():
        print(f"{m:<28}{c['coverage']:>10.3f}   [{c['coverage_ci95'][0]:.3f}, {c['coverage_ci95'][1]:.3f}]"
              f"{c['mean_width']:>12.4f}{c['mean_n_blocks']:>8.1f}")


_WORKER_MODEL: dict = {}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _model_phantom_from(seed: int, args) -> dict:
    """:func:`model_phantom` with the model loaded once per worker process from ``args.model``."""
    if args.model not in _WORKER_MODEL:
        from crackseg.model_io import load_model

        _WORKER_MODEL[args.model] = load_model(args.model)
    return model_phantom(seed, args, _WORKER_MODEL[args.model])


def map_seeds(fn, seeds, args, desc: str) -> list[dict]:
    """``[fn(seed, args) for seed in seeds]``, over ``args.jobs`` processes (one thread each).

    Every phantom is seeded, so the rows do not depend on the number of processes.
    """
    from tqdm import tqdm

    seeds = list(seeds)
    bar = tqdm(total=len(seeds), desc=desc, disable=args.quiet, file=sys.stderr)
    if args.jobs <= 1 or len(seeds) <= 1:
        rows = []
        for seed in seeds:
            rows.append(fn(seed, args))
            bar.update()
        bar.close()
        return rows
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    rows = {}
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn"),
                             initializer=_init_worker) as ex:
        futures = {ex.submit(fn, seed, args): seed for seed in seeds}
        for f in as_completed(futures):
            rows[futures[f]] = f.result()
            bar.update()
    bar.close()
    return [rows[seed] for seed in seeds]


def seeds(args, n: int) -> range:
    """The seeds of ``n`` phantoms (or volumes, or pairs): ``seed0 .. seed0 + n - 1``."""
    return range(args.seed0, args.seed0 + n)


def _census_arm(args, result: dict) -> None:
    """Coverage on the true particle tables of the phantoms."""
    t0 = time.time()
    rows = map_seeds(one_phantom, seeds(args, args.n_phantoms), args, "census")
    result["coverage"] = cov = coverage_table(rows, args.confidence)
    result["phantoms"] = rows
    result["census_elapsed_s"] = time.time() - t0
    _print_coverage("Census (true particle tables):", cov)
    print(f"{args.n_phantoms} phantoms of {args.shape}³ voxels at {args.voxel_size} µm in "
          f"{result['census_elapsed_s']:.0f} s; mean particles used "
          f"{np.mean([r['n_particles'] for r in rows]):.0f}\n")


def _known_error_arm(args, result: dict) -> None:
    """Coverage with a known segmentation error, its posterior ignored and propagated."""
    t0 = time.time()
    rows = map_seeds(known_error_phantom, seeds(args, args.n_phantoms), args, "known error")
    cov = coverage_table(rows, args.confidence)
    shares = [r["methods"][f"block_x{BLOCK_FACTOR:g}+cross+posterior"]["share_segmentation"]
              for r in rows]
    result["segmentation_error"] = {
        "error_model": {
            "measured": "min(1, c_i * exp(a + b_i - (tau^2 + sigma^2) / 2)), c_i the true "
                        "crack fraction of particle i",
            "shared": "a ~ N(0, tau^2), one draw per volume (and per posterior sample)",
            "per_particle": "b_i ~ N(0, sigma^2), independent per particle",
            "posterior": "sample s: measured_i * exp(a_s + b_is - (tau^2 + sigma^2) / 2), "
                         "fresh draws of the same law",
            "tau": args.seg_error_shared, "sigma": args.seg_error_particle,
            "n_posterior_samples": args.seg_error_samples,
            "phantoms": f"the census phantoms ({args.shape}³ at {args.voxel_size} µm)"},
        "elapsed_s": time.time() - t0,
        "coverage": cov,
        "mean_share_segmentation": float(np.mean(shares)),
        "bias_measured_vs_census": mean_with_ci([r["measured_mean"] - r["census_mean"]
                                                 for r in rows]),
        "phantoms": rows,
    }
    _print_coverage(f"Known segmentation error (tau {args.seg_error_shared:g}, sigma "
                    f"{args.seg_error_particle:g}, {args.seg_error_samples} posterior samples):",
                    cov)
    print(f"segmentation share of the variance (block+cross+posterior): {np.mean(shares):.1%}\n")


def _model_arm(args, result: dict, model) -> None:
    """Coverage and bias of the shipped model end to end."""
    t0 = time.time()
    rows = map_seeds(_model_phantom_from, seeds(args, args.model_phantoms), args, "model")
    cov = coverage_table(rows, args.confidence)
    bias = {k: mean_with_ci([r[k] for r in rows])
            for k in ("bias_vs_truth", "bias_vs_census", "census_minus_truth")}
    findings = model_findings(rows, cov, bias, args)
    card = model[1]
    result["end_to_end"] = {
        "model": {"path": args.model, "name": card.get("name"),
                  "weights_sha256": card.get("weights_sha256")},
        "pipeline": "generate_electrode (imaging) -> predict_volume(uncertainty='tta') -> "
                    "particle_instances -> particle_posterior_counts -> particle_table"
                    "(posterior) -> summarize (block bootstrap + cross-block widening; "
                    "with and without the posterior samples)",
        "phantoms_setting": {"shape": [args.model_shape] * 3, "voxel_size_um": args.model_voxel_size,
                             "correlation_length_um": args.correlation_length,
                             "tta_samples": args.tta_samples},
        "elapsed_s": time.time() - t0,
        "mean_seconds_per_phantom": {k: float(np.mean([r["seconds"].get(k, 0.0) for r in rows]))
                                     for k in rows[0]["seconds"]} if rows else {},
        "coverage": cov,
        "bias": bias,
        "findings": findings,
        "phantoms": rows,
    }
    _print_coverage(f"Shipped model end to end ({args.model_shape}³ at {args.model_voxel_size:g} "
                    f"µm, TTA {args.tta_samples} samples):", cov)
    for k, b in bias.items():
        ci = b["ci95"]
        print(f"{k:<28}{'' if b['mean'] is None else format(b['mean'], '+.4f'):>10}"
              + (f"   [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""))
    print("\n".join(findings) + "\n")


#: Keys of the result JSON that each arm writes.
ARM_KEYS = {"census": ("coverage", "phantoms", "census_elapsed_s"),
            "known-error": ("segmentation_error",), "model": ("end_to_end",),
            "points": ("point_patterns",), "compare": ("compare_false_positives",),
            "annotated": ("annotated",)}


def _keep_earlier_arms(out: Path, result: dict, arms) -> None:
    """Carry over from an existing ``out`` the results of arms this run did not run.

    So that arms can run one at a time; ``earlier_runs`` names, per carried
    arm, the command, version and time of the run that measured it.
    """
    if not out.exists():
        return
    try:
        prev = json.loads(out.read_text())
    except (OSError, ValueError):
        return
    earlier = {}
    for arm, keys in ARM_KEYS.items():
        if arm in arms or not all(k in prev for k in keys):
            continue
        result.update({k: prev[k] for k in keys})
        earlier[arm] = prev.get("earlier_runs", {}).get(arm) or {
            "command": prev.get("command"), "crackseg_version": prev.get("crackseg_version"),
            "finished_utc": prev.get("finished_utc"), "settings": prev.get("settings")}
    if earlier:
        result["earlier_runs"] = earlier


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-phantoms", type=int, default=50)
    p.add_argument("--shape", type=int, default=192, help="cube side in voxels")
    p.add_argument("--voxel-size", type=float, default=1.0, help="µm")
    p.add_argument("--correlation-length", type=float, default=20.0,
                   help="generator's hot-spot correlation length (µm)")
    p.add_argument("--factors", type=float, nargs="+", default=[1.0, 2.0, BLOCK_FACTOR, 4.0],
                   help="block side / fitted correlation length")
    p.add_argument("--border", default="exclude", choices=["exclude", "miles", "include"])
    p.add_argument("--n-resamples", type=int, default=2000)
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--seed0", type=int, default=1000, help="first phantom seed")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                   help="census: true particle tables; known-error: measured values with a known "
                        "segmentation error and its posterior; model: the shipped model end to "
                        "end; points: simulated damage point patterns (two covariances, 2 x 10^4 "
                        "particles); compare: false positives of compare; annotated: the "
                        "shipped model on phantoms with shifted imaging, corrected with 3 "
                        "annotated sections")
    p.add_argument("--seg-error-shared", type=float, default=0.15,
                   help="known-error arm: SD of the log-scale error shared by all particles of a volume")
    p.add_argument("--seg-error-particle", type=float, default=0.30,
                   help="known-error arm: SD of the independent per-particle log-scale error")
    p.add_argument("--seg-error-samples", type=int, default=16,
                   help="known-error arm: posterior samples per phantom")
    p.add_argument("--model", default=str(SHIPPED_MODEL), help="model arm: model directory")
    p.add_argument("--model-phantoms", type=int, default=None,
                   help="model arm: number of phantoms (default --n-phantoms)")
    p.add_argument("--model-shape", type=int, default=160, help="model arm: cube side in voxels")
    p.add_argument("--model-voxel-size", type=float, default=0.5,
                   help="model arm: µm (the shipped model's training phantoms: 0.5)")
    p.add_argument("--tta-samples", type=int, default=4, help="model arm: TTA posterior samples")
    p.add_argument("--annotated-phantoms", type=int, default=None,
                   help="annotated arm: number of phantoms (default --n-phantoms)")
    p.add_argument("--annotated-shape", type=int, default=128,
                   help="annotated arm: cube side in voxels (at --model-voxel-size)")
    p.add_argument("--annotated-snr", type=float, default=4.0,
                   help="annotated arm: imaging SNR (the shipped model's training: 8)")
    p.add_argument("--annotated-blur", type=float, default=1.8,
                   help="annotated arm: imaging blur sigma, voxels (training: 1.2)")
    p.add_argument("--annotated-sections", type=int, default=3,
                   help="annotated arm: evenly spaced annotated z-sections")
    p.add_argument("--annotated-models", nargs="+",
                   default=["sections", "profiles", "direct", "ratio_area", "ratio_particle",
                            "line"],
                   choices=["sections", "profiles", "direct", "ratio_area", "ratio_particle",
                            "line", "auto"],
                   help="annotated arm: error models scored (annotated profiles alone, profile "
                   "ratio, annotated profiles with the model's volume/profile conversion, ratio "
                   "of crack pixels or of crack fractions, calibration line, auto)")
    p.add_argument("--point-rows", nargs="+", choices=list(POINT_ROWS), default=list(POINT_ROWS),
                   help="points arm: rows to run")
    p.add_argument("--compare-pairs", type=int, default=100, help="compare arm: volume pairs")
    p.add_argument("--compare-particles", type=int, default=900,
                   help="compare arm: particles per volume")
    p.add_argument("--compare-side", type=float, default=192.0, help="compare arm: cube side (µm)")
    p.add_argument("--compare-kernels", nargs="+", default=["squared_exponential", "exponential"],
                   choices=["squared_exponential", "exponential"],
                   help="compare arm: covariances of the damage field")
    p.add_argument("--quick", action="store_true",
                   help="8 census phantoms of 128³, 2 model phantoms of 96³ with 2 TTA samples, "
                        "8 point patterns per row (2 of 2 x 10^4), 10 compare pairs")
    p.add_argument("--out", default=None, help="result JSON")
    p.add_argument("--cache", default=None,
                   help="folder to keep phantom censuses and model predictions between runs")
    p.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                   help="phantoms processed in parallel, one thread each (default: usable cores)")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    args.point_volumes = {r: args.n_phantoms for r in POINT_ROWS}
    if args.quick:
        args.n_phantoms, args.shape, args.n_resamples = 8, 128, 999
        args.model_phantoms, args.model_shape, args.tta_samples = 2, 96, 2
        args.point_volumes = {r: 2 if POINT_ROWS[r][2] > 5000 else 8 for r in POINT_ROWS}
        args.compare_pairs = 10
        args.annotated_phantoms, args.annotated_shape = 2, 96
    if args.model_phantoms is None:
        args.model_phantoms = args.n_phantoms
    if args.annotated_phantoms is None:
        args.annotated_phantoms = args.n_phantoms
    if len(set(args.factors)) != len(args.factors):
        args.factors = sorted(set(args.factors))
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / (
        "calibration_quick.json" if args.quick else "calibration.json")
    model = None
    if {"model", "annotated"} & set(args.arms):
        from crackseg.model_io import load_model

        try:
            model = load_model(args.model)
        except CracksegError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    settings = dict(vars(args))
    tmp_cache = None
    if args.jobs > 1 and args.cache is None and {"census", "known-error"} <= set(args.arms):
        import tempfile

        # The census and known-error arms share each phantom: processes pass them on disk.
        tmp_cache = tempfile.TemporaryDirectory(prefix="crackseg-calibration-")
        args.cache = tmp_cache.name
    t_start = time.time()
    result = {
        "benchmark": "coverage of the CI for the mean crack fraction vs the generator's "
                     "superpopulation mean (true_mean_crack_fraction); false positives of compare",
        "crackseg_version": __version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "elapsed_s": None,
        "settings": settings,
        "default_block_factor": BLOCK_FACTOR,
    }
    for arm, run in (("census", _census_arm), ("known-error", _known_error_arm),
                     ("points", _points_arm), ("compare", _compare_arm)):
        if arm in args.arms:
            run(args, result)
    if "model" in args.arms:
        _model_arm(args, result, model)
    if "annotated" in args.arms:
        _annotated_arm(args, result)
    result["elapsed_s"] = time.time() - t_start
    result["finished_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    _keep_earlier_arms(out, result, args.arms)
    write_json(out, result, overwrite=True)
    print(f"{result['elapsed_s']:.0f} s; written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
