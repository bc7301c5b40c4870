"""Chunked particle labelling against the whole-volume labelling: agreement, resume, speed.

On a phantom (``crackseg.synthetic.generate_electrode``, true semantic labels,
0.15 µm voxels, so that particles are 20-150 voxels wide, wider than the
48-voxel margin chunks used to have), the particle instances are computed

- on the whole volume in memory (the reference);
- chunk by chunk with the margin sized from the particle radius, with 1 and
  2 worker processes;
- chunk by chunk into a store, interrupted after a few chunks and resumed;

and each chunked result is matched to the reference (instance F1 at IoU 0.9,
voxels that differ).  The full run also times the labelling of one 256^3
chunk with its margin, cut from the phantom tiled 2x2x2 (what every chunk of
a 1024^3 volume costs), and projects a 1024^3 run from it.

Usage::

    nice -n 10 python benchmarks/particle_chunks.py [--quick]

256^3 with chunks of 128 (about 10 minutes on 2 busy cores); ``--quick``:
96^3 at 0.25 µm with chunks of 48 (about 1 minute).  Writes
``benchmarks/results/particle_chunks.json`` (``particle_chunks_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import crackseg.particle_chunks as pc  # noqa: E402
from benchmarks._common import log, machine_info, write_results  # noqa: E402
from crackseg.labels import NMC4  # noqa: E402
from crackseg.particle_blocks import block_instances  # noqa: E402
from crackseg.particles import instance_matching, particle_instances  # noqa: E402
from crackseg.synthetic import generate_electrode  # noqa: E402

VOXEL_UM = {"full": 0.15, "quick": 0.25}
"""Voxel size (µm): particles 20-150 voxels wide (full), 12-90 (quick, so that a 96^3 box holds several)."""


def agreement(inst, whole) -> dict:
    """Instance F1 at IoU 0.9 against the whole-volume labels, and voxels that differ."""
    inst = np.asarray(inst[...])
    m = instance_matching(inst, whole, iou_threshold=0.9)
    return {"f1_iou09": m["f1"], "n_chunked": m["n_pred"], "n_whole": m["n_true"],
            "split_rate": m["split_rate"], "merge_rate": m["merge_rate"],
            "voxels_differ": int((inst != whole).sum()), "identical": bool((inst == whole).all())}


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def interrupted_and_resumed(seg, vs, chunk: int, stop_after: int) -> dict:
    """Label into a store, stop after ``stop_after`` chunks, resume; labels and timings."""
    saved = pc.save_counts
    done = []

    def stop(store, index, counts):
        if len(done) == stop_after:
            raise KeyboardInterrupt
        done.append(index)
        saved(store, index, counts)

    with tempfile.TemporaryDirectory(prefix="crackseg-bench-") as d:
        kw = dict(voxel_size_um=vs, chunk_size=chunk, workers=1, store=Path(d) / "store")
        pc.save_counts = stop
        t = time.perf_counter()
        try:
            particle_instances(seg, **kw)
        except KeyboardInterrupt:
            pass
        finally:
            pc.save_counts = saved
        first = time.perf_counter() - t
        inst, second = timed(lambda: particle_instances(seg, **kw))
        return {"labels": np.asarray(inst[...]), "chunks_before_stop": stop_after,
                "seconds_until_stop": first, "seconds_resumed": second}


def chunk_cost(seg, vs, margin, context) -> dict:
    """Seconds to label one 256^3 chunk with its margin and context, cut from ``seg`` tiled 2x2x2."""
    big = np.tile(seg, (2, 2, 2))
    c0 = [max(0, s // 2 - 128 - w) for s, w in zip(big.shape, context)]
    block = big[tuple(slice(a, min(s, a + 256 + 2 * w)) for a, s, w in
                      zip(c0, big.shape, context))]
    crop = tuple(slice(s // 2 - 128 - a, s // 2 + 128 - a) for a, s in zip(c0, big.shape))
    labelled = tuple(slice(max(0, c.start - m), min(n, c.stop + m))
                     for c, m, n in zip(crop, margin, block.shape))
    _, dt = timed(lambda: block_instances(block, origin=tuple(c0), shape=big.shape,
                                          voxel_size_um=vs, crop=crop, labelled=labelled))
    n_chunks_1024 = 64
    return {"block_shape": list(block.shape), "margin": list(margin), "context": list(context),
            "seconds_per_256_chunk": dt,
            "projected_1024_seconds": {"1 worker": n_chunks_1024 * dt,
                                       "2 workers": n_chunks_1024 * dt / 2}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="96^3 phantom, chunks of 48")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    started = time.time()
    n, chunk = (96, 48) if args.quick else (256, 128)
    voxel_um = VOXEL_UM["quick" if args.quick else "full"]
    warnings.simplefilter("ignore")  # the margin exceeds small chunks: expected here
    log(f"phantom {n}^3 at {voxel_um} µm")
    ph = generate_electrode((n, n, n), seed=args.seed, voxel_size_um=voxel_um, imaging=False)
    seg, vs = ph.labels, ph.voxel_size_um
    whole, t_whole = timed(lambda: particle_instances(seg, voxel_size_um=vs))
    radius, _ = pc.scan_radius(seg, (chunk,) * 3, {"schema": NMC4, "voxel_size_um": vs,
                                                   "closing_radius": 1}, None, progress=False)
    margin = pc.margin_for_radius(radius, sigma=1.0, closing_radius=1, voxel_size_um=vs, ndim=3)
    context = pc.margin_for_radius(radius, sigma=1.0, closing_radius=1, voxel_size_um=vs, ndim=3,
                                   per_radius=pc.CONTEXT_PER_RADIUS)
    sizes = np.bincount(whole.ravel())[1:]
    record = {"shape": [n] * 3, "voxel_size_um": voxel_um, "seed": args.seed, "chunk": chunk,
              "largest_radius_vox": radius, "margin_vox": list(margin),
              "context_vox": list(context),
              "particles": int(whole.max()),
              "median_equivalent_diameter_vox": float(np.median((6 * sizes / np.pi) ** (1 / 3))),
              "seconds_whole_volume": t_whole, "runs": {}}
    for workers in (1, 2):
        log(f"chunked, {workers} worker(s)")
        inst, dt = timed(partial(particle_instances, seg, voxel_size_um=vs, chunk_size=chunk,
                                 workers=workers))
        record["runs"][f"{workers} worker(s)"] = {"seconds": dt, **agreement(inst, whole)}
    log("interrupted after 3 chunks, then resumed")
    res = interrupted_and_resumed(seg, vs, chunk, 3)
    record["runs"]["interrupted+resumed"] = {**{k: v for k, v in res.items() if k != "labels"},
                                             **agreement(res["labels"], whole)}
    if not args.quick:
        log("one 256^3 chunk with its margin")
        record["chunk_cost"] = chunk_cost(seg, vs, margin, context)
    path = write_results("particle_chunks", record, quick=args.quick, machine=machine_info(),
                         started=started)
    print(json.dumps(record, indent=2, default=float))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
