"""Per-particle voxel sums of a label volume, block by block, merged across blocks.

:func:`particle_sums` reads a semantic segmentation and its particle
instances one block at a time (NumPy arrays, or lazy Zarr/TIFF/HDF5 arrays
from :func:`crackseg.io.read_volume` with ``lazy=True``) and returns, for
every particle label, the sums the per-particle table is made of: voxel
counts per class, sums of voxel coordinates (for centroids), bounding box,
faces to anything else along each axis, and the voxels of the outer shell of
its envelope (and the cracks among them).

Each block is read with a halo wide enough for the measures that look at
neighbours (the shell: a label-aware distance transform thresholded at the
shell thickness; faces: the next voxel along each axis), so the merged sums
equal those of the whole volume at once: counts and integer coordinate sums
exactly.  Memory is bounded by the block (:func:`block_shape`), not the
volume.

Arrays are ZYX (or YX); the anisotropy and the shell thickness are in the
same unit (µm, or voxels when the voxel size is unknown).

Examples
--------
>>> import numpy as np
>>> seg = np.zeros((8, 8, 8), np.uint8); seg[1:7, 1:7, 1:7] = 1; seg[4, 1:7, 1:7] = 2
>>> inst = (seg > 0).astype(np.uint32)
>>> s = particle_sums(seg, inst, thickness=1.0, block=(3, 8, 8))
>>> s["label"].tolist(), s["envelope"].tolist(), s["crack"].tolist()
([1], [216], [36])
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema, validate_labels

BYTES_PER_VOXEL = 40
"""Working memory of one block per voxel (labels, dense labels, distances, masks)."""

DEFAULT_MAX_MEMORY_GB = 1.0
"""Working memory of the per-particle sums when none is given (GB)."""

COUNTS = ("envelope", "solid", "crack", "pore", "shell", "shell_crack")
"""Per-particle voxel counts of :func:`particle_sums` (int64, shape (n,))."""


def dense_labels(instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels renumbered 1..n (0 kept as background), and the original label of each.

    Examples
    --------
    >>> d, ids = dense_labels(np.array([[0, 7], [7, 3]]))
    >>> d.tolist(), ids.tolist()
    ([[0, 2], [2, 1]], [3, 7])
    """
    flat = instances.ravel()
    maxid = int(flat.max()) if flat.size else 0
    if maxid <= max(flat.size, 1 << 24):
        present = np.flatnonzero(np.bincount(flat, minlength=maxid + 1))
        present = present[present > 0]
        lut = np.zeros(maxid + 1, dtype=np.int32 if present.size < 2**31 - 1 else np.int64)
        lut[present] = np.arange(1, present.size + 1)
        return lut[flat].reshape(instances.shape), present
    ids, inv = np.unique(flat, return_inverse=True)
    if ids[0] != 0:
        inv = inv + 1
        ids = np.concatenate([[0], ids])
    return inv.reshape(instances.shape), ids[1:]


def block_shape(shape, *, chunk_size=None, max_memory_gb: float | None = None,
                lazy: bool = False) -> tuple[int, ...]:
    """Edge of the blocks :func:`particle_sums` reads, per axis.

    ``chunk_size`` (one edge, or one per axis) wins; else the whole array
    when it fits ``max_memory_gb`` (default :data:`DEFAULT_MAX_MEMORY_GB`)
    and is not ``lazy``; else slabs of whole planes along axis 0 that fit,
    or cubes when one plane alone does not.

    Examples
    --------
    >>> block_shape((512, 512, 512))
    (95, 512, 512)
    >>> block_shape((64, 64, 64), chunk_size=16)
    (16, 16, 16)
    """
    shape = tuple(int(s) for s in shape)
    if chunk_size is not None:
        edge = np.broadcast_to(np.asarray(chunk_size, dtype=np.int64), (len(shape),))
        if (edge < 1).any():
            raise InputError(f"chunk size {chunk_size} must be positive")
        return tuple(int(min(e, s)) for e, s in zip(edge, shape))
    gb = DEFAULT_MAX_MEMORY_GB if max_memory_gb is None else float(max_memory_gb)
    if not gb > 0:
        raise InputError(f"max memory {max_memory_gb} GB must be positive")
    fit = int(gb * 1e9 / BYTES_PER_VOXEL)
    if math.prod(shape) <= fit and not lazy:
        return shape
    plane = math.prod(shape[1:])
    if len(shape) == 3 and 8 * plane > fit:
        edge = max(8, int(round(fit ** (1 / 3))))
        return tuple(min(edge, s) for s in shape)
    return (max(1, min(shape[0], fit // max(plane, 1))),) + shape[1:]


def shell_halo(thickness: float, anisotropy) -> tuple[int, ...]:
    """Voxels of context per axis for a shell of ``thickness`` (at least 1, for the faces).

    Examples
    --------
    >>> shell_halo(1.0, (0.5, 0.25, 0.25))
    (3, 5, 5)
    """
    return tuple(max(1, int(math.ceil(thickness / a)) + 1) for a in anisotropy)


def blocks(shape, block, halo) -> Iterator[tuple[tuple, tuple]]:
    """(read region, core within the read block) of every block, in C order.

    The read region is the block grown by ``halo`` on each side, clipped to
    the volume; the cores tile the volume.

    Examples
    --------
    >>> [(r[0], c[0]) for r, c in blocks((10,), (4,), (1,))][:2]
    [(slice(0, 5, None), slice(0, 4, None)), (slice(3, 9, None), slice(1, 5, None))]
    """
    starts = [range(0, s, b) for s, b in zip(shape, block)]
    for origin in np.ndindex(*[len(r) for r in starts]):
        read, core = [], []
        for ax, i in enumerate(origin):
            lo = starts[ax][i]
            hi = min(shape[ax], lo + block[ax])
            r0, r1 = max(0, lo - halo[ax]), min(shape[ax], hi + halo[ax])
            read.append(slice(r0, r1))
            core.append(slice(lo - r0, hi - r0))
        yield tuple(read), tuple(core)


def _check_block(s: np.ndarray, inst: np.ndarray, schema: LabelSchema, source: str) -> None:
    """One-line errors for labels outside the schema or bad instance values in a block."""
    validate_labels(s, schema, source=source)
    if not np.issubdtype(inst.dtype, np.integer):
        raise InputError(f"instances have non-integer dtype {inst.dtype}; save them as uint32")
    if inst.size and inst.min() < 0:
        raise InputError("instances hold negative labels; use 0 for background and 1.. for "
                         "particles")


def _face_counts(dense: np.ndarray, core: tuple, n: int) -> list[np.ndarray]:
    """Faces between each label and anything else along each axis, counted once per face pair.

    A pair of neighbours belongs to the block whose core holds its lower
    voxel; the upper one may lie in the halo.
    """
    out = []
    for ax in range(dense.ndim):
        lo_sl = list(core)
        lo_sl[ax] = slice(core[ax].start, min(core[ax].stop, dense.shape[ax] - 1))
        hi_sl = list(lo_sl)
        hi_sl[ax] = slice(lo_sl[ax].start + 1, lo_sl[ax].stop + 1)
        lo, hi = dense[tuple(lo_sl)], dense[tuple(hi_sl)]
        diff = lo != hi
        out.append(np.bincount(lo[diff], minlength=n + 1) + np.bincount(hi[diff], minlength=n + 1))
    return out


def _class_counts(flat: np.ndarray, sf: np.ndarray, n: int, value: dict) -> dict:
    """Voxels of each dense label (``flat``, 0..n) in all, and of the particle, crack and pore classes."""
    k = int(sf.max(initial=0)) + 1
    table = np.bincount(flat.astype(np.int64) * k + sf, minlength=(n + 1) * k).reshape(n + 1, k)
    zeros = np.zeros(n + 1, np.int64)
    sums = {"envelope": table.sum(axis=1)}
    for key, cls in (("solid", "particle"), ("crack", "crack"), ("pore", "pore")):
        v = value[cls]
        sums[key] = table[:, v].copy() if v is not None and v < k else zeros
    return sums


def _coordinate_sums(d: np.ndarray, starts: tuple, n: int) -> np.ndarray:
    """Sum of the voxel indices (offset by ``starts``) of each dense label of ``d``, per axis.

    Summed one plane at a time (a plane's labels counted, times its index),
    so that no full-size array of coordinates is made; exact for integers
    below 2**53.

    Examples
    --------
    >>> _coordinate_sums(np.array([[0, 1], [1, 2]]), (10, 0), 2).tolist()
    [[10.0, 21.0, 11.0], [0.0, 1.0, 1.0]]
    """
    out = np.zeros((d.ndim, n + 1), np.int64)
    for ax in range(d.ndim):
        for i in range(d.shape[ax]):
            out[ax] += (starts[ax] + i) * np.bincount(np.take(d, i, axis=ax).ravel(),
                                                      minlength=n + 1)
    return out.astype(np.float64)


def _block_sums(s: np.ndarray, inst: np.ndarray, core: tuple, origin: tuple, *,
                schema: LabelSchema, thickness: float, anisotropy) -> dict:
    """Per-label sums of one block (read with its halo); rows of labels that touch the core."""
    import edt
    from scipy import ndimage

    dense, ids = dense_labels(inst)
    n, nd = ids.size, inst.ndim
    d, sc = dense[core], s[core]
    flat, sf = d.ravel(), sc.ravel()
    value = {c: (schema.value(c) if schema.has(c) else None) for c in ("particle", "crack", "pore")}

    sums = _class_counts(flat, sf, n, value)
    dist = edt.edt(np.ascontiguousarray(dense, dtype=np.uint32), anisotropy=tuple(anisotropy),
                   black_border=False, parallel=1)[core]
    shell = (dist <= thickness).ravel() & (flat > 0)
    del dist
    in_shell = flat[shell].astype(np.int64) * 2
    if value["crack"] is not None:
        in_shell += sf[shell] == value["crack"]
    both = np.bincount(in_shell, minlength=2 * (n + 1)).reshape(n + 1, 2)
    del in_shell, shell
    sums["shell"] = both.sum(axis=1)
    sums["shell_crack"] = both[:, 1] if value["crack"] is not None else np.zeros(n + 1, np.int64)
    starts = tuple(o + c.start for o, c in zip(origin, core))
    sums["coord_sum"] = _coordinate_sums(d, starts, n)
    sums["faces"] = np.stack(_face_counts(dense, core, n))
    bbox = np.tile(np.array([np.iinfo(np.int64).max] * nd + [-1] * nd, np.int64), (n + 1, 1))
    for i, obj in enumerate(ndimage.find_objects(d, max_label=n)):
        if obj is not None:
            bbox[i + 1] = [st + o.start for st, o in zip(starts, obj)] + \
                          [st + o.stop for st, o in zip(starts, obj)]
    sums["bbox"] = bbox
    keep = (sums["envelope"] > 0) | (sums["faces"].sum(axis=0) > 0)
    keep[0] = False
    rows = {k: (v[..., keep] if k in ("coord_sum", "faces") else v[keep]) for k, v in sums.items()}
    rows["label"] = ids[keep[1:]].astype(np.uint64)
    return rows


def merge_sums(parts: list[dict], nd: int) -> dict:
    """Per-label sums of several blocks merged: counts, coordinates and faces added,
    bounding boxes joined; one row per label, sorted by label."""
    if not parts:
        return {"label": np.zeros(0, np.uint64), **{k: np.zeros(0, np.int64) for k in COUNTS},
                "coord_sum": np.zeros((nd, 0)), "faces": np.zeros((nd, 0), np.int64),
                "bbox": np.zeros((0, 2 * nd), np.int64)}
    if len(parts) == 1:
        return parts[0]
    labels = np.concatenate([p["label"] for p in parts])
    uniq, inv = np.unique(labels, return_inverse=True)
    m = uniq.size
    out = {"label": uniq}
    for k in COUNTS:
        out[k] = np.zeros(m, np.int64)
        np.add.at(out[k], inv, np.concatenate([p[k] for p in parts]))
    for k, dtype in (("coord_sum", np.float64), ("faces", np.int64)):
        vals = np.concatenate([p[k] for p in parts], axis=1)
        out[k] = np.zeros((nd, m), dtype)
        for ax in range(nd):
            np.add.at(out[k][ax], inv, vals[ax])
    boxes = np.concatenate([p["bbox"] for p in parts])
    out["bbox"] = np.concatenate([np.full((m, nd), np.iinfo(np.int64).max, np.int64),
                                  np.full((m, nd), -1, np.int64)], axis=1)
    np.minimum.at(out["bbox"][:, :nd], inv, boxes[:, :nd])
    np.maximum.at(out["bbox"][:, nd:], inv, boxes[:, nd:])
    return out


def _block_task(s: np.ndarray, inst: np.ndarray, core: tuple, origin: tuple, schema: LabelSchema,
                source: str, thickness: float, anisotropy) -> dict:
    """:func:`_block_sums` of one block after its checks (one worker task)."""
    _check_block(s, inst, schema, source)
    return _block_sums(s, inst, core, origin, schema=schema, thickness=thickness,
                       anisotropy=anisotropy)


def particle_sums(seg, instances, *, schema: LabelSchema = NMC4, thickness: float,
                  anisotropy=None, block=None, source: str = "segmentation",
                  progress: bool = False, workers: int = 1) -> dict:
    """Per-particle voxel sums of a segmentation and its instances, block by block.

    Parameters
    ----------
    seg : array-like of int, shape (Z, Y, X) or (Y, X)
        Semantic labels of ``schema``; NumPy or lazy (read block by block).
    instances : array-like of int, same shape
        Particle instances (0 = none), NumPy or lazy.
    schema : LabelSchema
        Classes named ``particle``, ``crack`` and ``pore`` are counted.
    thickness : float
        Shell thickness, in the unit of ``anisotropy``.
    anisotropy : sequence of float, optional
        Voxel edge per axis (default 1).
    block : sequence of int, optional
        Block edge per axis (default: the whole array, see :func:`block_shape`).
    source : str
        Name of ``seg`` in error messages.
    progress : bool
        Progress bar on stderr (with more than one block).
    workers : int
        Processes measuring blocks in parallel (blocks are read here); with
        one block, or ``workers=1``, everything runs in this process.  The
        sums do not depend on it.

    Returns
    -------
    dict
        ``label`` (uint64, sorted, shape (n,)); the counts of :data:`COUNTS`
        (envelope, solid, crack and pore voxels, shell voxels and shell crack
        voxels; int64, (n,)); ``coord_sum`` (float64, (ndim, n): sum of the
        voxel indices along each axis); ``faces`` (int64, (ndim, n): faces
        between the particle and anything else, per axis); ``bbox`` (int64,
        (n, 2 ndim): half-open starts then stops).
    """
    from crackseg.particle_chunks import map_tasks

    shape = tuple(seg.shape)
    nd = len(shape)
    anisotropy = tuple(anisotropy) if anisotropy is not None else (1.0,) * nd
    block = tuple(block) if block is not None else shape
    halo = shell_halo(thickness, anisotropy) if block != shape else (0,) * nd
    grid = list(blocks(shape, block, halo))
    parts: list[dict] = []

    def jobs():
        for i, (read, core) in enumerate(grid):
            yield i, (np.asarray(seg[read]), np.asarray(instances[read]), core,
                      tuple(r.start for r in read), schema, source, thickness, anisotropy)

    def keep(_, rows):
        parts.append(rows)
        if len(parts) >= 64:
            parts[:] = [merge_sums(parts, nd)]

    map_tasks(_block_task, jobs(), keep, workers=workers, total=len(grid), desc="particle table",
              progress=progress and len(grid) > 1)
    return merge_sums(parts, nd)
