"""Coverage of crackseg's confidence intervals for the mean damage, on phantoms with known truth.

Each phantom (``crackseg.synthetic.generate_electrode``, ``imaging=False``)
has spatially clustered damage: a latent hot-spot field with correlation
length ``l`` plus a depth gradient plus particle noise.  Its generator knows
the superpopulation mean crack fraction (``params["true_mean_crack_fraction"]``).
For every phantom the per-particle table is measured from the ground-truth
labels and instances, and 95 % intervals of the mean crack fraction are
computed with

* the spatial block bootstrap with blocks of 1, ``BLOCK_FACTOR`` and 4 x the
  correlation length fitted to the damage variogram, each plain and widened
  for the covariance of neighbours across block faces (range
  ``RANGE_FACTOR`` x the correlation length); crackseg's default is
  ``block_x2+cross``;
* the iid bootstrap over particles (what ignoring clustering gives).

Coverage = share of phantoms whose interval contains the true mean.  The
result, with the machine and command, goes to
``benchmarks/results/calibration.json`` (``--quick``: ``calibration_quick.json``).

Usage::

    python benchmarks/calibration.py            # 50 phantoms of 192³ (about 17 min on 2 shared cores)
    python benchmarks/calibration.py --quick    # 8 small phantoms, < 3 min
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats as sps

from crackseg._version import __version__
from crackseg.io import write_json
from crackseg.stats.bootstrap import bootstrap_ci
from crackseg.stats.distribution import population
from crackseg.stats.spatial import correlation_length
from crackseg.stats.summary import BLOCK_FACTOR, RANGE_FACTOR, block_size_for
from crackseg.stats.table import particle_coords, particle_table, volume_extent
from crackseg.synthetic import generate_electrode


def machine_info() -> dict:
    """Platform, CPU model and core count of this machine."""
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(),
            "cpu_model": cpu or platform.processor(), "cpu_count": os.cpu_count()}


def phantom_particles(seed: int, args) -> dict:
    """Census of one phantom: the used particles' crack fraction, centroids, weights, truth."""
    cache = Path(args.cache) / f"phantom_{args.shape}_{args.voxel_size:g}_{args.correlation_length:g}_{seed}_{args.border}.npz" \
        if args.cache else None
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
                              cross_block_range=RANGE_FACTOR * length if corrected and length else None)
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
                  "mean_n_blocks": float(np.mean([r["methods"][m]["n_blocks"] for r in rows]))}
    return out


def main(argv=None) -> int:
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
    p.add_argument("--quick", action="store_true", help="8 phantoms of 128³ voxels (< 3 min)")
    p.add_argument("--out", default=None, help="result JSON")
    p.add_argument("--cache", default=None, help="folder to keep phantom censuses between runs")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.n_phantoms, args.shape, args.n_resamples = 8, 128, 999
    if len(set(args.factors)) != len(args.factors):
        args.factors = sorted(set(args.factors))
    out = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / (
        "calibration_quick.json" if args.quick else "calibration.json")
    rows = []
    t0 = time.time()
    from tqdm import tqdm

    for i in tqdm(range(args.n_phantoms), desc="phantoms", disable=args.quiet, file=sys.stderr):
        rows.append(one_phantom(args.seed0 + i, args))
    elapsed = time.time() - t0
    cov = coverage_table(rows, args.confidence)
    result = {
        "benchmark": "coverage of the CI for the mean crack fraction vs the generator's "
                     "superpopulation mean (true_mean_crack_fraction)",
        "crackseg_version": __version__,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(),
        "elapsed_s": elapsed,
        "settings": {k: v for k, v in vars(args).items()},
        "default_block_factor": BLOCK_FACTOR,
        "coverage": cov,
        "phantoms": rows,
    }
    write_json(out, result, overwrite=True)
    print(f"{'method':<20}{'coverage':>10}{'95% CI of coverage':>22}{'mean width':>12}{'blocks':>8}")
    for m, c in cov.items():
        print(f"{m:<20}{c['coverage']:>10.3f}   [{c['coverage_ci95'][0]:.3f}, {c['coverage_ci95'][1]:.3f}]"
              f"{c['mean_width']:>12.4f}{c['mean_n_blocks']:>8.1f}")
    print(f"{args.n_phantoms} phantoms of {args.shape}³ voxels at {args.voxel_size} µm in "
          f"{elapsed:.0f} s; mean particles used {np.mean([r['n_particles'] for r in rows]):.0f}; "
          f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
