"""Particle labelling speed and memory: whole volume, chunks, where the time goes.

On a phantom segmentation (``crackseg.synthetic.generate_electrode``, true
semantic labels, 0.3 µm voxels) the particle instances are computed

- on the whole volume in memory, with the CPU seconds of each step
  (envelope, distance map, smoothing, seeds, flood, the rest);
- on the whole volume with the watershed flooded at full resolution only,
  and compared with the default coarse-to-fine flood (instance F1 at IoU
  0.9, share of envelope voxels labelled differently);
- chunk by chunk (chunks of 128, margin and distance-map context sized from
  the particle radius) with 1 and 2 worker processes, and checked equal to
  the whole-volume labels;

and the peak memory of labelling one chunk with its margin and context is
measured in a fresh process (bytes per labelled voxel, and of the context
step per context voxel: what ``LABEL_BYTES_PER_VOXEL`` and
``CONTEXT_BYTES_PER_VOXEL`` in ``crackseg/particle_chunks.py`` budget).  From it, the labelling plan of a
512^3 volume under several memory budgets (chunk, workers, voxels labelled
per volume voxel) and its projected seconds.  A SHA-256 of the labels lets
two versions of the code be compared: ``--code DIR`` imports ``crackseg``
from ``DIR`` (e.g. ``git archive <commit> crackseg | tar -x -C DIR``) and
``--tag`` names the result file.

Usage::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/particle_speed.py [--quick] [--code DIR --tag NAME]

256^3 (about 5 minutes on one core); ``--quick``: 80^3 with chunks of 40
(under a minute).  Writes ``benchmarks/results/particle_speed[_NAME].json``
(``_quick`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import multiprocessing
import resource
import sys
import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PLAN_RADIUS = 23.2
PLAN_MARGIN = 42
"""Chunk margin (voxels) of the 512^3 volume of ``benchmarks/memory.py`` (largest radius 23.2
voxels in its 0.5 µm tile of ``generate_electrode((128, 256, 256), seed=0)``)."""
STEPS = {"envelope_mask": "envelope", "distance_map": "distance map",
         "gaussian_filter": "smoothing", "_seed_markers": "seeds", "_grid_seeds": "seeds",
         "_seed_unflooded": "seeds", "flood": "flood", "watershed": "flood",
         "coarse_to_fine_labels": "flood"}
"""Functions timed in the whole-volume run (present in one version of the code or another)."""


def timed_steps(fn):
    """Run ``fn()``; its result, CPU seconds and CPU seconds per step (:data:`STEPS`)."""
    import skimage.segmentation

    import crackseg.particle_blocks as pb

    spent: dict[str, float] = {}
    patched = []
    for mod in (pb, pb.ndi, skimage.segmentation):
        for name, step in STEPS.items():
            f = getattr(mod, name, None)  # (scikit-image loads its functions lazily)
            if f is None:
                continue

            def wrapper(*a, _f=f, _step=step, **k):
                t = time.process_time()
                try:
                    return _f(*a, **k)
                finally:
                    spent[_step] = spent.get(_step, 0.0) + time.process_time() - t
            setattr(mod, name, wrapper)
            patched.append((mod, name, f))
    t = time.process_time()
    try:
        out = fn()
    finally:
        for mod, name, f in patched:
            setattr(mod, name, f)
    total = time.process_time() - t
    spent["rest"] = total - sum(spent.values())
    return out, total, {k: round(v, 2) for k, v in spent.items()}


def full_resolution_reference(seg, vox) -> np.ndarray | None:
    """Whole-volume labels with the watershed flooded at full resolution only.

    The reference of the coarse-to-fine flood (``None`` for code without it).
    """
    import crackseg.particle_blocks as pb
    from crackseg.particles import particle_instances

    try:
        from crackseg.particle_coarse import full_resolution_labels
    except ImportError:
        return None
    saved = pb.coarse_to_fine_labels
    pb.coarse_to_fine_labels = full_resolution_labels
    try:
        return particle_instances(seg, voxel_size_um=vox)
    finally:
        pb.coarse_to_fine_labels = saved


def run(fn):
    """``fn()``; its result, wall and CPU seconds (this process)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def _peak_rss() -> int:
    """Peak resident memory of this process (bytes), since the last :func:`_reset_peak`."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> None:
    """Start the peak of :func:`_peak_rss` at the present memory (Linux; else nothing)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _block_peak(block, crop, labelled, shape, vs, code: str, queue) -> None:
    """In a fresh process: peak resident memory above the loaded block, per labelled voxel.

    ``block`` is the chunk with its distance-map context, ``labelled`` the
    chunk with its margin in it (``None``: all of it, for code without a
    context).  Also the peak of the context step alone (envelope and
    distance map of the block, the labelled part cut out), per block voxel.
    """
    sys.path.insert(0, code)  # the crackseg measured
    import cc3d  # noqa: F401  (imported before the measurement: not part of it)
    import edt  # noqa: F401
    import skimage.morphology  # noqa: F401
    import skimage.segmentation  # noqa: F401

    from crackseg.particle_blocks import block_instances, distance_map, envelope_mask

    n_labelled = int(np.prod([s.stop - s.start for s in labelled])) if labelled else block.size
    _reset_peak()
    before = _peak_rss()
    env = envelope_mask(block)
    dist = distance_map(env, vs)
    if labelled:
        env, dist = env[labelled].copy(), dist[labelled].copy()
    context = (_peak_rss() - before) / block.size
    del env, dist
    _reset_peak()
    before = _peak_rss()
    kw = {"labelled": labelled} if labelled else {}
    block_instances(block, origin=(0,) * block.ndim, shape=shape, voxel_size_um=vs, crop=crop,
                    **kw)
    queue.put(((_peak_rss() - before) / n_labelled, context))


def block_peak_bytes(seg, vs, chunk: int, margin, context=None, code: Path = ROOT) -> dict:
    """Peak bytes per voxel of labelling the central chunk of ``seg`` with its margin and context.

    ``context`` (voxels per axis; ``None``: the margin, no separate context).
    """
    wide = margin if context is None else context
    a0 = [s // 2 - chunk // 2 for s in seg.shape]  # the chunk's first voxel
    c0 = [max(0, a - w) for a, w in zip(a0, wide)]
    block = np.ascontiguousarray(seg[tuple(slice(c, min(s, a + chunk + w))
                                           for c, a, s, w in zip(c0, a0, seg.shape, wide))])
    crop = tuple(slice(a - c, a - c + chunk) for a, c in zip(a0, c0))
    labelled = None if context is None else tuple(
        slice(max(0, a - m) - c, min(s, a + chunk + m) - c)
        for a, c, s, m in zip(a0, c0, seg.shape, margin))
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_block_peak,
                    args=(block, crop, labelled, seg.shape, vs, str(code), queue))
    p.start()
    per_voxel, context_per_voxel = queue.get()
    p.join()
    return {"block_shape": list(block.shape),
            "labelled_shape": [s.stop - s.start for s in labelled] if labelled else
            list(block.shape),
            "peak_bytes_per_block_voxel": round(per_voxel, 1),
            "context_peak_bytes_per_context_voxel": round(context_per_voxel, 1)}


def plans_512(cpu_per_voxel: float) -> list[dict]:
    """Labelling plans of a 512^3 volume (2 cores) under budgets, with projected seconds."""
    import crackseg.particle_chunks as pc

    shape, margin, rows = (512,) * 3, (PLAN_MARGIN,) * 3, []
    context = None
    if hasattr(pc, "CONTEXT_PER_RADIUS"):
        context = pc.margin_for_radius(PLAN_RADIUS, sigma=1.0, closing_radius=1,
                                       voxel_size_um=None, ndim=3,
                                       per_radius=pc.CONTEXT_PER_RADIUS)
    for gb in (0.6, 1.0, 1.5, 2.0):
        kw = {"context": context} if context else {}
        plan = pc.plan_for_memory(gb * 1e9, (256,) * 3, margin, shape, 2, **kw)
        work = pc.labelled_voxels(plan["chunk"], margin, shape) / float(np.prod(shape))
        n_chunks = len(pc.chunk_grid(shape, plan["chunk"]))
        rows.append({"budget_gb": gb, "chunk": plan["chunk"][0], "workers": plan["workers"],
                     "labelled_per_volume_voxel": round(work, 3),
                     "projected_seconds_2_free_cores": round(
                         work * np.prod(shape) * cpu_per_voxel / min(plan["workers"],
                                                                       n_chunks), 1)})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="80^3 phantom, chunks of 40")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--code", type=Path, help="import crackseg from this folder")
    ap.add_argument("--tag", help="suffix of the result file (e.g. 'before')")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(args.code.resolve() if args.code else ROOT))
    sys.path.insert(1, str(ROOT))
    importlib.import_module("crackseg")  # first, from --code (the benchmarks import it too)
    import crackseg.particle_chunks as pc
    from benchmarks._common import log, machine_info, write_results
    from benchmarks.particle_chunks import agreement
    from crackseg.labels import NMC4
    from crackseg.particle_chunks import LABEL_BYTES_PER_VOXEL, margin_for_radius, scan_radius
    from crackseg.particles import particle_instances
    from crackseg.synthetic import generate_electrode

    # Worker processes import crackseg from the first folder of the path: --code again
    # (the benchmarks imported above put the working tree first).
    sys.path.insert(0, str(args.code.resolve() if args.code else ROOT))
    started = time.time()
    n, chunk, vs = (80, 40, 0.3) if args.quick else (256, 128, 0.3)
    warnings.simplefilter("ignore")  # margins wider than small chunks: expected here
    log(f"phantom {n}^3 at {vs} µm (crackseg from {args.code or ROOT})")
    seg = generate_electrode((n,) * 3, seed=args.seed, voxel_size_um=vs, imaging=False).labels
    vox = (vs,) * 3
    log("whole volume")
    t = time.perf_counter()
    whole, whole_cpu, steps = timed_steps(lambda: particle_instances(seg, voxel_size_um=vox))
    wall = time.perf_counter() - t
    log("whole volume, flooded at full resolution only (the coarse-to-fine flood's reference)")
    reference = full_resolution_reference(seg, vox)
    coarse_vs_full = None
    if reference is not None:
        from crackseg.particle_blocks import envelope_mask

        env_voxels = int(envelope_mask(seg).sum())
        coarse_vs_full = {**agreement(whole, reference), "envelope_voxels": env_voxels,
                          "share_of_envelope_differ": round(
                              int((whole != reference).sum()) / env_voxels, 6)}
        del reference
    radius, _ = scan_radius(seg, (chunk,) * 3, {"schema": NMC4, "voxel_size_um": vox,
                                                "closing_radius": 1}, None, progress=False)
    margin = margin_for_radius(radius, sigma=1.0, closing_radius=1, voxel_size_um=vox, ndim=3)
    context = None
    if hasattr(pc, "CONTEXT_PER_RADIUS"):  # code with a distance-map context wider than the margin
        context = margin_for_radius(radius, sigma=1.0, closing_radius=1, voxel_size_um=vox,
                                    ndim=3, per_radius=pc.CONTEXT_PER_RADIUS)
    record = {"shape": [n] * 3, "voxel_size_um": vs, "seed": args.seed, "chunk": chunk,
              "margin_vox": list(margin),
              "context_vox": None if context is None else list(context),
              "particles": int(whole.max()),
              "labels_sha256": hashlib.sha256(whole.tobytes()).hexdigest(),
              "whole_volume": {"seconds": round(wall, 2),
                               "cpu_seconds": round(whole_cpu, 2),
                               "cpu_seconds_by_step": steps},
              "coarse_to_fine_vs_full_resolution_flood": coarse_vs_full,
              "chunked": {}}
    for workers in (1, 2):
        log(f"chunked, {workers} worker(s)")
        inst, wall, cpu = run(partial(particle_instances, seg, voxel_size_um=vox,
                                      chunk_size=chunk, workers=workers))
        record["chunked"][f"{workers} worker(s)"] = {
            "seconds": round(wall, 2), "cpu_seconds_this_process": round(cpu, 2),
            **agreement(inst, whole)}
    log("peak memory of one chunk with its margin")
    record["block_memory"] = {
        **block_peak_bytes(seg, vox, chunk, margin, context, args.code or ROOT),
        "label_bytes_per_voxel_budgeted": LABEL_BYTES_PER_VOXEL,
        "context_bytes_per_voxel_budgeted": getattr(pc, "CONTEXT_BYTES_PER_VOXEL", None)}
    record["plans_512"] = plans_512(whole_cpu / seg.size)
    name = "particle_speed" + (f"_{args.tag}" if args.tag else "")
    path = write_results(name, record, quick=args.quick, machine=machine_info(),
                         started=started)
    print(json.dumps(record, indent=2, default=float))
    log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
