"""Particle labelling of a big volume chunk by chunk, in parallel and resumable.

The volume (ZYX, or YX) is cut into core chunks that tile it.  Three passes:

1. **scan**: each chunk is read with a small margin; its largest particle
   radius is estimated on a coarse grid (:func:`crackseg.particle_blocks.block_radius`)
   and a checksum of its core is taken.  The chunk margin is then sized from
   the largest radius *R* in the volume (:func:`margin_for_radius`), so
   that every particle reaching into a core, its seed, and its neighbours'
   seeds lie within the chunk plus its margin;
2. **label**: each chunk is labelled with that margin
   (:func:`crackseg.particle_blocks.block_instances`), its distance map
   computed with a wider *context* (2 R): a seed up to R outside the core
   then has the distance values, and so the position, of the whole volume's
   (with the margin alone, a particle cut by the block's face could be
   seeded elsewhere and named differently in two chunks); its core is written
   into an on-disk Zarr array of seed ids; each instance is named by the
   global position of its seed, so chunks that share a particle give it the
   same name, whatever the chunk size;
3. **number**: voxel counts of every chunk are summed, instances under the
   volume threshold are dropped, the others numbered 1..N in order of their
   seed's position (Z, then Y, X), and each chunk is rewritten as uint32.

Chunks go to ``workers`` processes (spawn-safe top-level functions); each
holds one chunk with its margin, never a full-size array.  With a ``store``
folder the passes record finished chunks (``counts/``, ``numbered/``) under a
fingerprint of the settings and of the input's contents; a later call with
the same settings and input resumes where the last one stopped.

Store layout::

    store/progress.json     fingerprint, radius, margin, context
    store/ids.zarr          seed ids (uint64), chunked like the cores
    store/counts/<i>.npz    ids and voxel counts of chunk i (chunk i labelled)
    store/numbered/<i>      chunk i written into instances.zarr
    store/instances.zarr    OME-Zarr of the instances (uint32), level 0 at ``/0``

Examples
--------
>>> margin_for_radius(20.0, sigma=1.0, closing_radius=1, voxel_size_um=None, ndim=3)
(38, 38, 38)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np

from crackseg.errors import InputError
from crackseg.io import write_json
from crackseg.particle_blocks import (
    anisotropy,
    block_instances,
    block_radius,
    envelope_values,
    solid_counts,
)
from crackseg.tiling import GIB, chunk_grid

MARGIN_PER_RADIUS = 1.5
"""Chunk margin per voxel of the largest particle radius (plus smoothing and closing)."""
CONTEXT_PER_RADIUS = 2.0
"""Distance-map context per voxel of the largest particle radius *R* (plus smoothing and
closing): the seed of a particle reaching into a chunk lies up to *R* outside it, and its
distance value is the whole volume's when the ball of that radius around it is in the block."""
CONTEXT_BYTES_PER_VOXEL = 12
"""Peak memory (bytes) per voxel of a block's distance-map context (envelope and distance
map, before the labelled part is cut out of it); measured with ``block_memory`` of
``benchmarks/particle_speed.py``."""
SCAN_MARGIN = 32
"""Margin (voxels) of the radius scan; chunks with larger radii are scanned again wider
(particles up to 64 voxels across, most at 0.3-1 µm voxels, need no second pass)."""
LABEL_BYTES_PER_VOXEL = 21
"""Peak memory (bytes) per voxel of a block (chunk plus margins) while it is labelled.

Measured (``benchmarks/particle_speed.py``, ``block_memory``): labelling a
252^3 block of the synthetic electrode (``generate_electrode((256,) * 3,
seed=1, voxel_size_um=0.3)``, core 128^3) in a fresh process raised its peak
resident memory (VmHWM) 17-19 bytes per block voxel above the memory it held
with the block loaded (the float64 image, uint32 labels and int8 mask of the
flood, :mod:`crackseg.particle_flood`, and what the allocator keeps); 2 more
per voxel cover the copies of blocks waiting for a worker.
"""
ANALYSIS_WORKER_BYTES = 160 * 2**20
"""Resident memory of an idle worker process of the statistics and domain checks
(measured 139 MB: the interpreter with NumPy, SciPy, pandas and ``edt``), rounded up."""
WORKER_BYTES = 100 * 2**20
"""Resident memory of an idle labelling worker process (measured 74 MB: the
interpreter with NumPy, SciPy, scikit-image and ``edt`` imported), rounded up."""
CHUNK_STEP = 32
"""Chunk edges chosen to fit a memory budget are multiples of this or cut an axis evenly (voxels);
no smaller than this."""


def margin_for_radius(radius: float, *, sigma: float, closing_radius: int, voxel_size_um,
                      ndim: int, per_radius: float = MARGIN_PER_RADIUS) -> tuple[int, ...]:
    """Chunk margin (voxels per axis) for particles of radius up to ``radius``.

    ``radius`` is in units of the smallest voxel edge; the margin is
    ``per_radius * radius + 4 sigma + closing_radius + 2`` in those units
    (``per_radius``: 1.5 for the labelled margin, :data:`CONTEXT_PER_RADIUS`
    for the distance map's context), converted to voxels of each axis and
    rounded up to an even number.
    """
    m = float(per_radius) * float(radius) + 4 * float(sigma) + int(closing_radius) + 2
    return tuple(2 * math.ceil(m / a / 2) for a in anisotropy(voxel_size_um, ndim))


def labelling_bytes(chunk, margin, shape, workers: int, context=None) -> int:
    """Memory (bytes) of labelling with ``workers`` processes, each on one core chunk and its margin.

    One worker labels in the calling process (no extra interpreter).  A
    wider distance-map ``context`` (voxels per axis; default: the margin)
    costs :data:`CONTEXT_BYTES_PER_VOXEL` per voxel while the distance map
    is computed, and its one-byte labels while the block is flooded.

    Examples
    --------
    >>> labelling_bytes((32, 32, 32), (16, 16, 16), (512, 512, 512), 1) == 64**3 * LABEL_BYTES_PER_VOXEL
    True
    """
    def voxels(m):
        return int(np.prod([min(c + 2 * k, s) for c, k, s in zip(chunk, m, shape)]))

    block = voxels(margin) * LABEL_BYTES_PER_VOXEL
    if context is not None and tuple(context) != tuple(margin):
        wide = voxels(context)
        block = max(block + wide, wide * CONTEXT_BYTES_PER_VOXEL)
    per_worker = block + (WORKER_BYTES if workers > 1 else 0)
    return int(workers) * per_worker


def labelled_voxels(chunk, margin, shape) -> int:
    """Voxels labelled in all (chunks with their margins) of ``shape``: the work of a run.

    Examples
    --------
    >>> labelled_voxels((4,), (1,), (8,))   # blocks [0, 5) and [3, 8)
    10
    """
    total = 1
    for c, m, s in zip(chunk, margin, shape):
        total *= sum(min(z + c + m, s) - max(z - m, 0) for z in range(0, s, c))
    return total


def plan_for_memory(budget_bytes: float, chunk, margin, shape, workers: int,
                    context=None) -> dict:
    """Core chunk (per axis, voxels) and worker count whose labelling fits ``budget_bytes``.

    Tries chunk edges from ``chunk`` down, in multiples of :data:`CHUNK_STEP`
    and the edges that cut an axis into equal parts (512 into 3 x 171: no
    thin last chunk that costs a whole margin), with 1..``workers`` processes (:func:`labelling_bytes`), and keeps the
    pair that fits with the least work per worker (:func:`labelled_voxels`
    over the workers that have chunks; ties: the larger chunk).  When none
    fits, the smallest chunk with one worker.  Labels do not depend on the
    chunk size.  ``context``: the distance map's context (default: the margin).

    Returns
    -------
    dict
        ``chunk`` (tuple), ``workers``, ``bytes`` (estimate) and ``fits``.

    Examples
    --------
    >>> plan = plan_for_memory(2e9, (256,) * 3, (50,) * 3, (512,) * 3, 2)
    >>> plan["chunk"], plan["workers"], plan["fits"]
    ((224, 224, 224), 2, True)
    """
    top = max(chunk)
    even = {-(-s // k) for s in shape for k in range(1, s // CHUNK_STEP + 1)}
    edges = sorted({top, *range(CHUNK_STEP, top, CHUNK_STEP), *(e for e in even if e < top)},
                   reverse=True)
    best, best_work = None, None
    for e in edges:
        c = tuple(min(e, k) for k in chunk)
        n_chunks = int(np.prod([-(-s // k) for k, s in zip(c, shape)]))
        for w in range(1, int(workers) + 1):
            need = labelling_bytes(c, margin, shape, w, context)
            work = labelled_voxels(c, margin, shape) / min(w, n_chunks)
            if need <= budget_bytes and (best_work is None or work < best_work):
                best, best_work = (c, w, need), work
    if best is None:
        c = tuple(min(edges[-1], k) for k in chunk)
        return {"chunk": c, "workers": 1, "fits": False,
                "bytes": labelling_bytes(c, margin, shape, 1, context)}
    return {"chunk": best[0], "workers": best[1], "bytes": best[2], "fits": True}


def workers_for_memory(max_memory_gb: float | None, workers: int, *, per_worker_bytes: float,
                       fixed_bytes: float = 0.0) -> int:
    """Most worker processes (up to ``workers``) that fit ``max_memory_gb`` beside this process.

    ``n`` workers need ``n * per_worker_bytes + fixed_bytes`` of what this
    process leaves of the budget; without a budget, ``workers``.  Returns 1
    (work in this process) when two do not fit.

    Examples
    --------
    >>> workers_for_memory(None, 2, per_worker_bytes=1e9)
    2
    >>> workers_for_memory(0.1, 2, per_worker_bytes=1e9)
    1
    """
    if max_memory_gb is None or workers <= 1:
        return max(1, int(workers))
    release_free_memory()
    left = float(max_memory_gb) * GIB - resident_bytes()
    for n in range(int(workers), 1, -1):
        if n * per_worker_bytes + fixed_bytes <= left:
            return n
    return 1


def release_free_memory() -> None:
    """Hand memory freed in this process back to the system (glibc ``malloc_trim``; else nothing)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def resident_bytes() -> int:
    """Resident memory of this process (bytes; 0 where ``/proc`` is not available)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


# ---------------------------------------------------------------- worker tasks


def scan_task(block, crop, options: dict) -> tuple[float, int]:
    """Largest radius in ``block[crop]`` and a CRC-32 of ``block[crop]`` (one worker task)."""
    r = block_radius(block, options["schema"], voxel_size_um=options["voxel_size_um"],
                     closing_radius=options["closing_radius"], crop=crop)
    return r, zlib.crc32(np.ascontiguousarray(block[crop]).data)


def label_task(block, ids, core, crop, origin, options: dict, labelled=None):
    """Label one chunk, write its core into ``ids``; its instance ids and solid voxel counts.

    ``block`` is the chunk with its context; ``labelled`` the part of it
    (chunk and margin) seeded and flooded; ``crop`` the core in it.
    """
    lab = block_instances(block, origin=origin, crop=crop, labelled=labelled, **options)
    ids[core] = lab
    return solid_counts(lab, block[crop], options["schema"])


def number_task(ids, out, core, kept) -> None:
    """Rewrite one chunk of seed ids as 1..N (position in ``kept``; 0 when dropped)."""
    block = np.asarray(ids[core])
    out[core] = numbered(block, kept)


def numbered(block: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Seed ids -> 1 + their position in sorted ``kept``; 0 for ids not kept.

    Examples
    --------
    >>> numbered(np.array([0, 5, 9, 7], np.uint64), np.array([5, 9], np.uint64)).tolist()
    [0, 1, 2, 0]
    """
    if kept.size == 0:
        return np.zeros(block.shape, np.uint32)
    pos = np.minimum(np.searchsorted(kept, block), kept.size - 1)
    return np.where(kept[pos] == block, pos + 1, 0).astype(np.uint32)


def kept_ids(counts: list, min_vox: float) -> np.ndarray:
    """Sorted ids whose summed (solid) voxel counts reach ``min_vox`` (0 excluded).

    Examples
    --------
    >>> kept_ids([(np.array([0, 3, 8]), np.array([9, 5, 1])), (np.array([8]), np.array([4]))], 5)
    array([3, 8], dtype=uint64)
    """
    if not counts:
        return np.zeros(0, np.uint64)
    ids = np.concatenate([u for u, _ in counts]).astype(np.uint64)
    n = np.concatenate([c for _, c in counts]).astype(np.int64)
    uniq, inv = np.unique(ids, return_inverse=True)
    total = np.bincount(inv.ravel(), weights=n)
    kept = uniq[(uniq > 0) & (total >= min_vox)]
    if kept.size >= np.iinfo(np.uint32).max:
        raise InputError("more than 2^32 - 1 particles")
    return kept


# ---------------------------------------------------------------- running tasks


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _executor(workers: int, n_tasks: int):
    """A spawn process pool for ``workers`` > 1 and several tasks, else ``None`` (in-process)."""
    if workers <= 1 or n_tasks <= 1:
        return None
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=min(workers, n_tasks),
                               mp_context=multiprocessing.get_context("spawn"))


def run_tasks(pool, fn, jobs, on_result, *, total: int, desc: str, progress: bool):
    """Run ``fn(*args)`` for each ``(key, args)`` of ``jobs``; ``on_result(key, result)`` here.

    With a pool, at most two tasks per worker are in flight, so the blocks
    read here for them stay few; results are handled as they finish.
    """
    from concurrent.futures import FIRST_COMPLETED, wait

    from tqdm.auto import tqdm

    with tqdm(total=total, desc=desc, unit="chunk", disable=not progress, file=sys.stderr,
              leave=False) as bar:
        if pool is None:
            for key, args in jobs:
                on_result(key, fn(*args))
                bar.update(1)
            return
        limit = 2 * pool._max_workers
        pending = {}
        jobs = iter(jobs)
        while True:
            for key, args in jobs:
                pending[pool.submit(fn, *args)] = key
                if len(pending) >= limit:
                    break
            if not pending:
                return
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                on_result(pending.pop(fut), fut.result())
                bar.update(1)


def map_tasks(fn, jobs, on_result, *, workers: int, total: int, desc: str,
              progress: bool = False) -> None:
    """:func:`run_tasks` on a pool of ``workers`` processes made and closed here.

    One worker, or one task, runs everything in this process.
    """
    pool = _executor(int(workers), total)
    try:
        run_tasks(pool, fn, jobs, on_result, total=total, desc=desc, progress=progress)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


# ---------------------------------------------------------------- the store


def _progress_state(store: Path) -> dict:
    try:
        return json.loads((store / "progress.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def open_store(store: Path, fingerprint: str, shape, chunk, resume: bool):
    """The seed-id array of ``store``, emptied unless it holds a run with ``fingerprint``."""
    import zarr

    state = _progress_state(store)
    if resume and state.get("fingerprint") == fingerprint and (store / "ids.zarr").exists():
        return zarr.open_array(str(store / "ids.zarr"), mode="r+")
    for name in ("ids.zarr", "counts", "numbered", "instances.zarr", "progress.json"):
        p = store / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    store.mkdir(parents=True, exist_ok=True)
    (store / "counts").mkdir()
    (store / "numbered").mkdir()
    ids = zarr.create_array(store=str(store / "ids.zarr"), shape=tuple(shape), dtype=np.uint64,
                            chunks=tuple(chunk), fill_value=0)
    write_json(store / "progress.json", {"fingerprint": fingerprint})
    return ids


def save_counts(store: Path, index: int, counts) -> None:
    """Record chunk ``index`` as labelled, with its ids and voxel counts (atomic)."""
    tmp = store / "counts" / f".{index}.tmp.npz"
    np.savez(tmp, ids=counts[0], counts=counts[1])
    os.replace(tmp, store / "counts" / f"{index}.npz")


def load_counts(store: Path) -> dict:
    """Chunk index -> (ids, counts) of the labelled chunks recorded in ``store``."""
    out = {}
    for p in (store / "counts").glob("[0-9]*.npz"):
        with np.load(p) as f:
            out[int(p.stem)] = (f["ids"], f["counts"])
    return out


def mark_numbered(store: Path, index: int) -> None:
    """Record chunk ``index`` as written into ``instances.zarr``."""
    (store / "numbered" / str(index)).touch()


def numbered_chunks(store: Path) -> set[int]:
    """Indices of the chunks already written into ``instances.zarr``."""
    return {int(p.name) for p in (store / "numbered").iterdir() if p.name.isdigit()}


# ---------------------------------------------------------------- the passes


def _fingerprint(shape, dtype, chunk, options: dict, min_vox, checksums, margins=()) -> str:
    import hashlib

    schema = options["schema"]
    record = {"shape": list(shape), "dtype": str(dtype), "chunk": list(chunk),
              "schema": [schema.name, envelope_values(schema)],
              "options": {k: v for k, v in options.items() if k != "schema"},
              "min_vox": float(min_vox), "min_vox_counts": "solid",
              "checksums": [int(c) for c in checksums],
              "margins": [list(m) for m in margins]}
    return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()


def scan_radius(seg, chunk, options: dict, pool, *, progress: bool):
    """Largest particle radius of ``seg`` and per-chunk checksums (the scan pass).

    Returns
    -------
    (float, list of int)
        Radius (units of the smallest voxel edge) and one CRC-32 per core chunk.
    """
    ndim = len(seg.shape)
    anis = anisotropy(options["voxel_size_um"], ndim)
    opts = {k: options[k] for k in ("schema", "voxel_size_um", "closing_radius")}

    def jobs(grid):
        for c in grid:
            yield c.index, (np.asarray(seg[c.ext]), c.crop, opts)

    def scan(grid, desc):
        res = {}
        run_tasks(pool, scan_task, jobs(grid), res.__setitem__, total=len(grid), desc=desc,
                  progress=progress)
        return res

    halo = tuple(math.ceil(SCAN_MARGIN / a) for a in anis)
    res = scan(chunk_grid(seg.shape, chunk, halo), "particles: scan")
    # A particle cut by the scan margin reads too wide: scan those chunks again, wider.
    wide = {i: r for i, (r, _) in res.items() if r > SCAN_MARGIN}
    again = [chunk_grid(seg.shape, chunk, tuple(min(math.ceil((r + 4) / a), 2 * c)
                                                for a, c in zip(anis, chunk)))[i]
             for i, r in sorted(wide.items())]
    if again:  # all in one pass, on every worker
        res.update(scan(again, "particles: rescan"))
    radius = max((r for r, _ in res.values()), default=0.0)
    return radius, [res[i][1] for i in sorted(res)]


def chunk_margin(radius: float, chunk, options: dict, ndim: int) -> tuple[int, ...]:
    """Margin for ``radius`` (:func:`margin_for_radius`); warns when it exceeds the chunk."""
    margin = margin_for_radius(radius, sigma=options["sigma"],
                               closing_radius=options["closing_radius"],
                               voxel_size_um=options["voxel_size_um"], ndim=ndim)
    if any(m > c for m, c in zip(margin, chunk)):
        warnings.warn(f"particles up to {2 * radius:.0f} voxels wide need a chunk margin of "
                      f"{max(margin)} voxels, more than the chunk ({max(chunk)}): each chunk "
                      f"reads and labels far more than its own voxels; a chunk size of at "
                      f"least {2 * max(margin)} is faster", stacklevel=3)
    return margin


def label_chunks(seg, ids, grid, options: dict, store: Path, pool, *, progress: bool,
                 context=None) -> dict:
    """Label every chunk not yet recorded in ``store``; chunk index -> (ids, counts).

    ``grid`` holds the chunks with their margins; ``context`` the same chunks
    with the distance map's wider context (default: the margins).
    """
    counts = load_counts(store)
    todo = [(c, w) for c, w in zip(grid, context or grid) if c.index not in counts]

    def jobs():
        for c, w in todo:
            origin = tuple(s.start for s in w.ext)
            labelled = tuple(slice(a.start - b.start, a.stop - b.start)
                             for a, b in zip(c.ext, w.ext))
            crop = tuple(slice(a.start - b.start, a.stop - b.start)
                         for a, b in zip(c.core, w.ext))
            yield c.index, (np.asarray(seg[w.ext]), ids, c.core, crop, origin, options, labelled)

    def record(index, result):
        save_counts(store, index, result)
        counts[index] = result

    desc = (f"particles ({'x'.join(map(str, grid[0].core_shape))} chunks, "
            f"{pool._max_workers if pool is not None else 1} worker(s))")
    run_tasks(pool, label_task, jobs(), record, total=len(todo), desc=desc, progress=progress)
    return counts


def number_chunks(ids, target, grid, kept, store: Path | None, pool, *, progress: bool):
    """Write chunks of ``ids`` into ``target`` numbered 1..N (skips chunks recorded in ``store``)."""
    done = numbered_chunks(store) if store is not None else set()
    todo = [c for c in grid if c.index not in done]
    aligned = isinstance(target, np.ndarray) or all(
        c % t == 0 for c, t in zip(grid[0].core_shape, target.chunks)) or len(grid) == 1
    if isinstance(target, np.ndarray) or not aligned:
        pool = None  # written here: an in-memory array, or Zarr chunks that straddle cores
    jobs = ((c.index, (ids, target, c.core, kept)) for c in todo)

    def record(index, _):
        if store is not None:
            mark_numbered(store, index)

    run_tasks(pool, number_task, jobs, record, total=len(todo), desc="particles: numbering",
              progress=progress)
    return target


def _target(store: Path, keep: bool, out, shape, chunk, voxel_size_um):
    """Where the numbered labels go: ``out``, ``store/instances.zarr`` or a new NumPy array."""
    if out is not None:
        return out, False
    if not keep:
        return np.zeros(shape, np.uint32), False
    import zarr

    from crackseg.io import create_zarr_volume, thin_chunks

    path = store / "instances.zarr"
    if (path / "0").exists():
        return zarr.open_array(str(path / "0"), mode="r+"), True
    # thin along axis 0 for the slab readers after it, aligned with the chunk cores
    return create_zarr_volume(path, shape, np.uint32, voxel_size_um, chunks=thin_chunks(chunk),
                              metadata={"crackseg": "particles"}), True


def fit_memory(max_memory_gb, chunk, margin, shape, workers: int, pool, context=None):
    """Chunk and pool of the labelling pass within ``max_memory_gb`` (None: as given).

    The budget left for labelling is ``max_memory_gb`` less what this process
    holds now; :func:`plan_for_memory` sizes the chunk and the workers in it.
    The scan ``pool`` is replaced when the worker count changes.

    Returns
    -------
    (tuple of int, pool, dict)
        Core chunk, pool (``None``: label here) and the plan recorded.
    """
    n_chunks = len(chunk_grid(shape, chunk))
    if max_memory_gb is None:
        return chunk, pool, {"chunk": list(chunk), "workers": min(workers, n_chunks)}
    release_free_memory()
    left = float(max_memory_gb) * GIB - resident_bytes()
    plan = plan_for_memory(left, chunk, margin, shape, workers, context)
    if not plan["fits"]:
        warnings.warn(f"--max-memory {max_memory_gb:g} GB leaves {max(left, 0) / 1e9:.2f} GB for "
                      f"particle labelling, less than one {plan['chunk'][0]}-voxel chunk with a "
                      f"{max(margin)}-voxel margin needs ({plan['bytes'] / 1e9:.2f} GB); "
                      "labelling it anyway: raise --max-memory to stay within it", stacklevel=3)
    n_chunks = len(chunk_grid(shape, plan["chunk"]))
    used = min(plan["workers"], n_chunks)
    if pool is None or pool._max_workers != used:
        if pool is not None:
            pool.shutdown()
        pool = _executor(used, n_chunks)
    return plan["chunk"], pool, {"chunk": list(plan["chunk"]), "workers": used,
                                 "max_memory_gb": float(max_memory_gb),
                                 "budget_left_gb": round(left / 1e9, 3),
                                 "estimate_gb": round(plan["bytes"] / 1e9, 3)}


def chunked_instances(seg, *, chunk, margin, options: dict, min_vox: float, workers=None,
                      store=None, resume: bool = True, out=None, scratch=None,
                      progress: bool = False, max_memory_gb: float | None = None):
    """Particle instances of ``seg`` computed chunk by chunk (see the module notes).

    Parameters
    ----------
    seg : array-like of int, shape (Z, Y, X) or (Y, X)
        Semantic labels; read one chunk (with its margin) at a time.
    chunk : tuple of int
        Core chunk size per axis (voxels).
    margin : tuple of int or None
        Chunk margin per axis (voxels); ``None`` sizes it, and the wider
        context of the distance map, from the largest particle radius
        (:func:`margin_for_radius`).  A margin given is also the context.
    options : dict
        Keyword arguments of :func:`crackseg.particle_blocks.block_instances`
        (``schema``, ``voxel_size_um``, ``h``, ``sigma``, ``closing_radius``,
        ``shape``).
    min_vox : float
        Instances with fewer voxels are dropped.
    workers : int, optional
        Processes (default: one per core; 1 runs here).
    store : path-like, optional
        Folder of the work files and of ``instances.zarr``; without it a
        temporary folder in ``scratch`` is used and nothing is resumable.
    resume : bool
        Continue the run recorded in ``store`` when its settings and input match.
    out : array-like, optional
        Where to write the labels (uint32).
    scratch : path-like, optional
        Folder of the temporary work files when no ``store`` is given.
    progress : bool
    max_memory_gb : float, optional
        Memory budget (GiB) of this process and its workers: the labelling
        chunk (at most ``chunk``) and the workers are sized to fit what is
        left of it (:func:`fit_memory`); recorded in ``progress.json``.

    Returns
    -------
    ndarray or zarr.Array of uint32
        ``out`` if given, else ``store/instances.zarr`` (level 0) with a
        store, else a NumPy array.
    """
    shape = tuple(seg.shape)
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise InputError(f"workers={workers}: need at least 1")
    n_chunks = len(chunk_grid(shape, chunk))
    with tempfile.TemporaryDirectory(prefix="crackseg-particles-", dir=scratch) as tmp:
        root = Path(store) if store is not None else Path(tmp)
        pool = _executor(workers, n_chunks)
        try:
            radius, sums = scan_radius(seg, chunk, options, pool, progress=progress)
            context = margin
            if margin is None:
                margin = chunk_margin(radius, chunk, options, len(shape))
                context = margin_for_radius(radius, sigma=options["sigma"],
                                            closing_radius=options["closing_radius"],
                                            voxel_size_um=options["voxel_size_um"],
                                            ndim=len(shape), per_radius=CONTEXT_PER_RADIUS)
            fp = _fingerprint(shape, seg.dtype, chunk, options, min_vox, sums, (margin, context))
            chunk, pool, plan = fit_memory(max_memory_gb, chunk, margin, shape, workers, pool,
                                           context)
            ids = open_store(root, fp, shape, chunk, resume and store is not None)
            chunk = tuple(ids.chunks)  # a resumed run keeps its chunks
            write_json(root / "progress.json", {"fingerprint": fp, "radius": radius,
                                                "margin": list(margin), "context": list(context),
                                                **plan, "chunk": list(chunk)})
            grid = chunk_grid(shape, chunk, margin)
            counts = label_chunks(seg, ids, grid, options, root, pool, progress=progress,
                                  context=chunk_grid(shape, chunk, context))
            kept = kept_ids([counts[c.index] for c in grid], min_vox)
            target, own = _target(root, store is not None, out, shape, chunk,
                                  options["voxel_size_um"])
            number_chunks(ids, target, grid, kept, root if own else None, pool,
                          progress=progress)
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    if own:
        import zarr

        return zarr.open_array(str(root / "instances.zarr" / "0"), mode="r")
    return target
