"""Speed of the statistics layer: the per-particle table and each step of the electrode summary.

1. ``particle_table`` on labelled volumes made of phantom tiles
   (``crackseg.synthetic.generate_electrode`` labels and instances, 128³ at
   0.5 µm, instance labels kept distinct across tiles): seconds, voxels/s and
   particles/s.  A volume holding 10^5 particles of this size would be about
   2 x 10^9 voxels, which neither fits this machine's memory budget nor
   can be generated in minutes, so the time for 10^5 particles is
   extrapolated linearly from the largest measured volume (the table's work
   grows with the voxels, and the particle density is the phantom's) and
   marked as such.
2. Each step of the electrode summary for ``n`` = 10^3, 10^4, 10^5
   particles (``--quick``: 10^3, 10^4), on particle tables with the columns
   and spatial layout of real ones: the particle tables of a few phantoms,
   tiled through a larger electrode with shifted centroids and bounding
   boxes, with the damage of every particle redrawn from the phantom
   generator's damage law over the whole electrode (latent hot-spot field,
   depth gradient, particle noise), so that damage is clustered on the
   generator's correlation length, as in a real tomogram, not periodic.
   Steps, with the settings ``crackseg stats`` uses (2000 resamples, seed 0,
   border-truncated particles excluded):

   ``correlation_length`` (variogram and its fit), ``bootstrap_ci`` (mean,
   spatial block bootstrap widened for cross-block covariance),
   ``bootstrap_ci_iid`` (mean, iid), ``distribution``
   (``distribution_statistics``), ``morans_i``, ``depth_profile``,
   ``hot_spots``, ``representativeness`` (with ``particles_needed``),
   ``compare`` (``compare_samples`` of two electrodes of ``n`` particles
   each, with their centroids: spatial blocks, block permutation tests) and ``summarize`` (the whole ``summary.json``, which runs the steps
   above except ``compare`` and adds the other per-particle quantities).

Every time is the best of ``--repeats`` runs, as wall-clock seconds and as
CPU seconds of this process; on a machine shared with other jobs the CPU
seconds are the steadier measure.  The load average at start and end, the
machine and the command are recorded.

Usage::

    nice -n 10 python benchmarks/stats_speed.py [--quick] [--sizes N ...] [--repeats R]

Writes ``benchmarks/results/stats_speed.json`` (``stats_speed_quick.json``
with ``--quick``) and prints a table.
"""

from __future__ import annotations

import argparse
import inspect
import os
import resource
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import log, machine_info, markdown_table, write_results  # noqa: E402
from crackseg.stats.bootstrap import bootstrap_ci  # noqa: E402
from crackseg.stats.compare import Volume, compare_samples  # noqa: E402
from crackseg.stats.distribution import distribution_statistics, population  # noqa: E402
from crackseg.stats.representativeness import particles_needed, representativeness  # noqa: E402
from crackseg.stats.spatial import (  # noqa: E402
    correlation_length,
    depth_profile,
    hot_spots,
    morans_i,
)
from crackseg.stats.summary import block_size_for, summarize  # noqa: E402
from crackseg.stats.table import particle_coords, particle_table, volume_extent  # noqa: E402
from crackseg.synthetic import generate_electrode  # noqa: E402
from crackseg.synthetic.damage import latent_field, target_crack_fraction  # noqa: E402

TILE = (128, 128, 128)
STEPS = ("correlation_length", "bootstrap_ci", "bootstrap_ci_iid", "distribution", "morans_i",
         "depth_profile", "hot_spots", "representativeness", "compare", "summarize")
AXES = "zyx"


def phantoms(n: int, seed: int) -> list:
    """``n`` label-only phantoms of one tile each (seeds ``seed .. seed + n - 1``)."""
    return [generate_electrode(TILE, seed=seed + i, imaging=False) for i in range(n)]


def grid_for(tiles: int) -> tuple[int, int, int]:
    """Near-cubic grid (z, y, x) of at least ``tiles`` tiles."""
    gz = max(1, round(tiles ** (1 / 3)))
    gy = max(1, round((tiles / gz) ** 0.5))
    return gz, gy, -(-tiles // (gz * gy))


def electrode_table(n: int, tables: list[pd.DataFrame], *, seed: int = 0) -> pd.DataFrame:
    """A particle table of ``n`` particles laid out like one large electrode.

    The phantom tables are repeated on a near-cubic grid of tiles, centroids
    and bounding boxes shifted by each tile's offset, labels kept distinct;
    ``touches_border`` is recomputed for the whole volume; the crack fraction
    of every particle is redrawn from the generator's damage law at its
    position in the whole electrode (seeded), and the surface and internal
    crack fractions are scaled with it.

    Parameters
    ----------
    n : int
        Particles in the table.
    tables : list of pandas.DataFrame
        ``particle_table`` of phantoms of shape :data:`TILE`, same voxel size.
    seed : int
        Seed of the damage draw.

    Returns
    -------
    pandas.DataFrame
        With ``attrs`` of the first table and ``attrs["shape"]`` the whole volume.
    """
    per_tile = int(np.mean([len(t) for t in tables]))
    grid = grid_for(-(-n // per_tile))
    vs = np.asarray(tables[0].attrs["voxel_size_um"], dtype=np.float64)
    parts, next_label = [], 1
    for i, off in enumerate(np.ndindex(*grid)):
        t = tables[i % len(tables)].copy()
        shift = np.asarray(off) * np.asarray(TILE)
        for a, ax in enumerate(AXES):
            t[f"centroid_{ax}_vox"] += shift[a]
            t[f"centroid_{ax}_um"] += shift[a] * vs[a]
            t[f"bbox_{ax}0"] += shift[a]
            t[f"bbox_{ax}1"] += shift[a]
        t["label"] = np.arange(next_label, next_label + len(t), dtype=np.uint32)
        next_label += len(t)
        parts.append(t)
        if next_label > n:
            break
    big = pd.concat(parts, ignore_index=True).iloc[:n].copy()
    shape = np.asarray(grid) * np.asarray(TILE)
    big["depth_vox"] = big["centroid_z_vox"]
    big["depth_um"] = big["centroid_z_um"]
    lo = big[[f"bbox_{ax}0" for ax in AXES]].to_numpy()
    hi = big[[f"bbox_{ax}1" for ax in AXES]].to_numpy()
    big["touches_border"] = (lo <= 0).any(axis=1) | (hi >= shape).any(axis=1)

    law = {k: p.default for k, p in inspect.signature(generate_electrode).parameters.items()}
    rng = np.random.default_rng(seed)
    xyz = big[[f"centroid_{ax}_um" for ax in AXES]].to_numpy()
    field = latent_field(rng, law["correlation_length_um"])
    cf = target_crack_fraction(xyz[:, 0] / (shape[0] * vs[0]), field(xyz),
                               rng.standard_normal(len(big)),
                               logit_mean=law["damage_logit_mean"],
                               depth_gradient=law["depth_gradient"],
                               hotspot_sd=law["hotspot_sd"], particle_sd=law["particle_sd"],
                               max_crack_fraction=law["max_crack_fraction"])
    old = big["crack_fraction"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(old > 0, cf / old, 1.0)
    for col in ("surface_crack_fraction", "internal_crack_fraction"):
        big[col] = np.clip(big[col].to_numpy() * ratio, 0.0, 1.0)
    big["crack_fraction"] = cf
    big.attrs = dict(tables[0].attrs)
    big.attrs["shape"] = [int(s) for s in shape]
    return big


def timed(fn, repeats: int) -> tuple[dict, object]:
    """Best wall and CPU seconds of ``repeats`` calls, and the last result."""
    wall, cpu, out = [], [], None
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"wall_s": round(min(wall), 3), "cpu_s": round(min(cpu), 3)}, out


def tiled_volume(phs: list, reps: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and instances of phantom tiles on a grid, instance labels distinct per tile."""
    seg = np.empty(tuple(r * s for r, s in zip(reps, TILE)), np.uint8)
    inst = np.empty(seg.shape, np.uint32)
    offset = 0
    for i, off in enumerate(np.ndindex(*reps)):
        ph = phs[i % len(phs)]
        sl = tuple(slice(o * s, (o + 1) * s) for o, s in zip(off, TILE))
        seg[sl] = ph.labels
        inst[sl] = np.where(ph.instances > 0, ph.instances.astype(np.uint32) + offset, 0)
        offset += int(ph.instances.max())
    return seg, inst


def table_speed(phs: list, grids: list[tuple[int, int, int]], repeats: int, quiet: bool) -> dict:
    """Time ``particle_table`` on tiled volumes; extrapolate to 10^5 particles."""
    rows = []
    vs = phs[0].voxel_size_um
    for reps in grids:
        seg, inst = tiled_volume(phs, reps)
        times, table = timed(partial(particle_table, seg, inst, voxel_size_um=vs), repeats)
        n, vox = len(table), int(seg.size)
        rows.append({"shape": list(seg.shape), "voxels": vox, "n_particles": n, **times,
                     "voxels_per_s": vox / times["wall_s"], "particles_per_s": n / times["wall_s"],
                     "cpu_particles_per_s": n / max(times["cpu_s"], 1e-9)})
        log(f"particle_table {seg.shape}: {n} particles, {times['wall_s']:.2f} s wall "
            f"({times['cpu_s']:.2f} s CPU)", quiet)
        del seg, inst, table
    last = rows[-1]
    return {"volumes": rows, "extrapolated_1e5": {
        "wall_s": round(1e5 / last["particles_per_s"], 2),
        "cpu_s": round(1e5 / last["cpu_particles_per_s"], 2),
        "voxels": int(last["voxels"] * 1e5 / last["n_particles"]),
        "from": f"{last['shape']} ({last['n_particles']} particles)",
        "note": "extrapolated linearly from the largest measured volume, same particle density"}}


def step_functions(table: pd.DataFrame, other: pd.DataFrame) -> tuple[dict, dict]:
    """The summary's steps on ``table`` (as ``summarize`` runs them), and what they ran on."""
    mask, _, _ = population(table, "exclude")
    used = table.loc[mask]
    v = used["crack_fraction"].to_numpy(np.float64)
    xyz = particle_coords(table)[0][mask]
    extent, _ = volume_extent(table)
    depth = used["depth_um"].to_numpy()
    length, fit, _ = correlation_length(v, xyz, seed=0)
    block, _ = block_size_for(length, extent)
    cross = fit["correlation_range"] if length else None
    block_kw = dict(coords=xyz, extent=extent, cross_block_range=cross, n_resamples=2000, seed=0)
    keep = ~other["touches_border"].to_numpy(bool)
    # what `crackseg compare` reads: values, centroids and extent of each volume
    vol_a = Volume(v, xyz, extent)
    vol_b = Volume(other.loc[keep, "crack_fraction"].to_numpy(np.float64),
                   particle_coords(other)[0][keep], volume_extent(other)[0])
    nn = float(np.median(cKDTree(xyz).query(xyz, k=2)[0][:, 1]))
    hot_distance = max(float(length), 1.5 * nn) if length else 2.0 * nn

    def rep():
        r = representativeness(v, xyz, seed=0, depth=depth,
                               surface_crack_fraction=used["surface_crack_fraction"].to_numpy())
        return r, particles_needed(v)

    steps = {
        "correlation_length": lambda: correlation_length(v, xyz, seed=0),
        "bootstrap_ci": lambda: bootstrap_ci(v, "mean", block_size_um=block, **block_kw),
        "bootstrap_ci_iid": lambda: bootstrap_ci(v, "mean", method="iid", n_resamples=2000, seed=0),
        "distribution": lambda: distribution_statistics(v, block_size=block, **block_kw),
        "morans_i": lambda: morans_i(v, xyz, seed=0),
        "depth_profile": lambda: depth_profile(v, depth, n_bins=8, block_size=block,
                                               **{**block_kw, "n_resamples": 1000}),
        "hot_spots": lambda: hot_spots(v, xyz, distance=hot_distance),
        "representativeness": rep,
        "compare": lambda: compare_samples({"A": [vol_a], "B": [vol_b]}, seed=0),
        "summarize": lambda: summarize(table),
    }
    info = {"n_particles": len(table), "n_used": int(mask.sum()),
            "extent_um": [round(float(e), 1) for e in extent],
            "correlation_length_um": length, "block_size_um": block,
            "correlation_range_um": cross}
    return steps, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^3 and 10^4 particles, one repeat")
    ap.add_argument("--sizes", type=int, nargs="+", default=None,
                    help="particles per table (default 1000 10000 100000)")
    ap.add_argument("--repeats", type=int, default=None, help="runs per step, best kept (default 3)")
    ap.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS))
    ap.add_argument("--no-table", action="store_true", help="skip the particle_table timing")
    ap.add_argument("--seed", type=int, default=0, help="first phantom seed")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/...)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    started = time.time()
    machine = machine_info()
    sizes = args.sizes or ([1000, 10000] if args.quick else [1000, 10000, 100000])
    repeats = args.repeats or (1 if args.quick else 3)

    n_ph = 1 if args.quick else 4
    log(f"generating {n_ph} phantom(s) of {TILE}", args.quiet)
    phs = phantoms(n_ph, args.seed)
    tables = [particle_table(p.labels, p.instances, voxel_size_um=p.voxel_size_um) for p in phs]

    record: dict = {"settings": {"sizes": sizes, "repeats": repeats, "steps": args.steps,
                                 "tile": list(TILE), "phantoms": n_ph, "seed": args.seed,
                                 "voxel_size_um": list(phs[0].voxel_size_um),
                                 "n_resamples": 2000, "omp_num_threads":
                                 os.environ.get("OMP_NUM_THREADS")}}
    if not args.no_table:
        grids = [(1, 1, 1), (2, 2, 2)] if args.quick else [(2, 2, 2), (3, 3, 3), (4, 4, 4)]
        record["particle_table"] = table_speed(phs, grids, repeats, args.quiet)

    per_size = []
    for n in sizes:
        table = electrode_table(n, tables, seed=args.seed)
        other = electrode_table(n, tables, seed=args.seed + 1)
        steps, info = step_functions(table, other)
        row = {**info, "steps": {}}
        for name in args.steps:
            times, _ = timed(steps[name], repeats)
            row["steps"][name] = times
            log(f"n={n}: {name} {times['wall_s']:.2f} s wall ({times['cpu_s']:.2f} s CPU)",
                args.quiet)
        per_size.append(row)
    record["summary_steps"] = per_size
    record["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    record["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]

    rows = [{"step": name, **{f"n={r['n_particles']}": f"{r['steps'][name]['wall_s']:.2f} "
                              f"({r['steps'][name]['cpu_s']:.2f})" for r in per_size}}
            for name in args.steps]
    print("seconds wall (CPU), best of", repeats)
    print(markdown_table(rows, ["step"] + [f"n={r['n_particles']}" for r in per_size]))
    if "particle_table" in record:
        pt = record["particle_table"]
        print(markdown_table(pt["volumes"], ["shape", "n_particles", "wall_s", "cpu_s",
                                             "particles_per_s", "voxels_per_s"], digits=2))
        e = pt["extrapolated_1e5"]
        print(f"particle_table, 10^5 particles (extrapolated from {e['from']}): "
              f"{e['wall_s']} s wall, {e['cpu_s']} s CPU")
    path = write_results("stats_speed", record, quick=args.quick, machine=machine,
                         started=started, path=args.out)
    log(f"wrote {path}", args.quiet)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
