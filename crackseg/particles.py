"""Particle instances from a semantic segmentation.

Each particle's *envelope* is its solid plus the crack and pore voxels it
encloses (DESIGN.md): the union of the particle, crack and pore classes,
closed with a small ball and hole-filled, so that a crack never cuts one
particle into two.  Touching envelopes are split by a watershed of the
smoothed Euclidean distance transform (``edt``), seeded by its h-maxima (one
marker per particle core whose distance peak rises ``h`` above the saddle to
its neighbour).  Instances whose solid (``particle`` class) is smaller than
a volume threshold (µm³ when the voxel size is known, else voxels) are
dropped: an envelope of crack or pore voxels alone is not a particle.

Big volumes are processed in chunks (:mod:`crackseg.particle_chunks`), in
parallel processes, with a margin sized from the largest particle radius *R*
(1.5 R) and a wider context of the distance map (2 R); with a ``store``
folder an interrupted run resumes.  Every instance is identified by the
global position of its seed, which does not depend on the chunk, so labels
are consistent across chunk faces and equal those of the whole volume for
particles whose seed lies within *R* of each of their voxels (rounded
particles; a particle much longer than wide can be seeded differently at a
chunk face); a final pass numbers them 1..N in order of their seed's
position (Z, then Y, X).  The per-block steps live in
:mod:`crackseg.particle_blocks`; the watershed is flooded on the seeds'
grid (every second voxel) and refined at full resolution where the coarse
flood leaves a voxel in doubt (:mod:`crackseg.particle_coarse`: on a 256³
phantom the flood 3.6× and the whole labelling 1.6× faster, the
full-resolution flood's labels on all but ~0.02 % of envelope voxels), with scikit-image's flooding routine on buffers built once
(:mod:`crackseg.particle_flood`).

Examples
--------
>>> import numpy as np
>>> from crackseg.particles import particle_instances
>>> zz, yy, xx = np.mgrid[:40, :40, :70]
>>> seg = np.zeros((40, 40, 70), np.uint8)
>>> seg[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2 < 15 ** 2] = 1
>>> seg[(zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 47) ** 2 < 14 ** 2] = 1
>>> seg[20, 10:30, 18:22] = 2   # a crack inside the first particle
>>> inst = particle_instances(seg)
>>> int(inst.max())
2
"""

from __future__ import annotations

import numpy as np

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema
from crackseg.particle_blocks import (  # noqa: F401  (re-exported)
    DEFAULT_H,
    ENVELOPE_CLASSES,
    block_instances,
    envelope_mask,
    solid_counts,
)
from crackseg.particle_chunks import chunked_instances, kept_ids, numbered

DEFAULT_MIN_VOLUME_VOX = 27
"""Specks smaller than this are dropped when no physical threshold is given."""


def _min_voxels(voxel_size_um, min_volume_um3, min_volume_vox) -> float:
    """Volume threshold in voxels (from µm³ when given)."""
    if min_volume_um3 is not None:
        if voxel_size_um is None:
            raise InputError("a minimum volume in µm³ needs the voxel size (--voxel-size Z Y X)")
        return float(min_volume_um3) / float(np.prod(voxel_size_um))
    return DEFAULT_MIN_VOLUME_VOX if min_volume_vox is None else int(min_volume_vox)


def particle_instances(seg, *, schema: LabelSchema = NMC4, voxel_size_um=None,
                       min_volume_um3: float | None = None, min_volume_vox: int | None = None,
                       h: float = DEFAULT_H, sigma: float = 1.0, closing_radius: int = 1,
                       chunk_size: int | None = None, margin: int | None = None, out=None,
                       scratch=None, workers: int | None = None, store=None,
                       resume: bool = True, progress: bool = False,
                       max_memory_gb: float | None = None):
    """Label every particle: envelope fill, then watershed split of touching ones.

    Parameters
    ----------
    seg : array-like of int, shape (Z, Y, X) or (Y, X)
        Semantic segmentation (stored values of ``schema``); may be a lazy
        (Zarr, memory-mapped) array when ``chunk_size`` is set.
    schema : LabelSchema
        Label schema (``particle``, ``crack``, ``pore`` matched by name).
    voxel_size_um : sequence of float, optional
        Voxel size (µm per axis); makes distances isotropic and lets
        ``min_volume_um3`` apply.
    min_volume_um3, min_volume_vox : float, int, optional
        Drop instances whose solid (``particle`` class) is smaller than this,
        in µm³ (needs the voxel size) or voxels (default 27): crack or pore alone is no particle.
    h : float
        Height of the distance maxima that seed particles (in units of the
        smallest voxel edge): larger merges more, smaller splits more.
    sigma : float
        Gaussian smoothing of the distance map (voxels) before seeding.
    closing_radius : int
        Closing radius (voxels) of the envelope.
    chunk_size : int, optional
        Process in chunks of this many voxels per axis (memory bounded by
        one chunk and its margin per worker); ``None`` processes the whole
        array at once (or, with a ``store``, as one chunk).
    margin : int, optional
        Context voxels around each chunk.  Default: sized from the largest
        particle radius *R* found in a first pass (1.5 R plus smoothing
        labelled, 2 R for the distance map), which makes the chunked labels
        those of the whole volume.  A margin given is also the distance
        map's context.
    out : array-like, optional
        Where to write the labels (uint32, same shape; a ``zarr.Array``
        chunked like ``chunk_size`` or finer is written by the workers);
        returned instead of a NumPy array.
    scratch : path-like, optional
        Folder for the temporary chunk labels when no ``store`` is given
        (default: the system's).
    workers : int, optional
        Processes labelling chunks in parallel (default: one per core).
    store : path-like, optional
        Folder for the work files of a chunked run and for
        ``instances.zarr`` (OME-Zarr, uint32, level 0 at ``instances.zarr/0``),
        which is returned (read-only) when ``out`` is not given.
    resume : bool
        With a ``store``: keep the chunks a previous run with the same
        settings and input finished (default).
    progress : bool
        Progress bar on stderr.
    max_memory_gb : float, optional
        Memory budget (GiB) of a chunked run, workers included: chunk (up to
        ``chunk_size``) and workers fit what this process leaves of it.

    Returns
    -------
    ndarray or zarr.Array of uint32
        0 = no particle; 1..N numbered in order of their seed's position
        (Z, then Y, X).  ``out`` when given; the store's
        ``instances.zarr`` with a ``store``; else a NumPy array.

    Examples
    --------
    >>> import numpy as np
    >>> seg = np.zeros((20, 20, 20), np.uint8); seg[5:15, 5:15, 5:15] = 1
    >>> int(particle_instances(seg).max())
    1
    """
    shape = tuple(seg.shape)
    if len(shape) not in (2, 3):
        raise InputError(f"segmentation of shape {shape}: need a 2-D image or 3-D volume")
    dt = np.dtype(seg.dtype)
    if not (np.issubdtype(dt, np.integer) or dt == np.dtype(bool)):
        raise InputError(f"segmentation has dtype {dt}; a label image holds integers")
    min_vox = _min_voxels(voxel_size_um, min_volume_um3, min_volume_vox)
    options = dict(schema=schema, voxel_size_um=None if voxel_size_um is None
                   else tuple(float(v) for v in voxel_size_um), h=float(h), sigma=float(sigma),
                   closing_radius=int(closing_radius), shape=shape)
    whole = chunk_size is None or all(s <= chunk_size for s in shape)
    if whole and store is None:
        block = np.asarray(seg[...])
        ids = block_instances(block, origin=(0,) * len(shape), **options)
        lab = numbered(ids, kept_ids([solid_counts(ids, block, schema)], min_vox))
        if out is None:
            return lab
        out[...] = lab
        return out
    chunk = shape if chunk_size is None else tuple(min(int(chunk_size), s) for s in shape)
    return chunked_instances(
        seg, chunk=chunk, margin=None if margin is None else (int(margin),) * len(shape),
        options=options, min_vox=min_vox, workers=workers, store=store, resume=resume,
        out=out, scratch=scratch, progress=progress, max_memory_gb=max_memory_gb)


def border_labels(instances) -> np.ndarray:
    """Labels of instances that touch a face of the volume (truncated by the field of view).

    Parameters
    ----------
    instances : array-like of int, shape (Z, Y, X) or (Y, X)

    Returns
    -------
    ndarray of uint32, sorted

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((5, 5), np.uint32); a[0, 1] = 3; a[2, 2] = 4
    >>> border_labels(a).tolist()
    [3]
    """
    nd = len(instances.shape)
    faces = []
    for ax in range(nd):
        for idx in (0, instances.shape[ax] - 1):
            sl = [slice(None)] * nd
            sl[ax] = idx
            faces.append(np.unique(np.asarray(instances[tuple(sl)])))
    u = np.unique(np.concatenate(faces))
    return u[u > 0].astype(np.uint32)


def instance_matching(pred, truth, *, iou_threshold: float = 0.5) -> dict:
    """Match predicted to true instances by IoU; F1, split and merge rates.

    A true instance is *split* when no prediction matches it at
    ``iou_threshold`` and two or more predicted instances lie at least half
    inside it; a predicted instance is a *merge* when it covers at least half
    of each of two or more true instances.

    Parameters
    ----------
    pred, truth : ndarray of int, same shape
        Instance labels, 0 = background.

    Returns
    -------
    dict
        ``n_true``, ``n_pred``, ``tp``, ``precision``, ``recall``, ``f1``,
        ``split_rate`` (fraction of true instances split), ``merge_rate``
        (fraction of predicted instances that merge several true ones),
        ``mean_matched_iou``.
    """
    pred = np.asarray(pred).ravel().astype(np.int64)
    truth = np.asarray(truth).ravel().astype(np.int64)
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
    t_size = np.bincount(truth)
    p_size = np.bincount(pred)
    t_ids = np.flatnonzero(t_size[1:]) + 1
    p_ids = np.flatnonzero(p_size[1:]) + 1
    ti, pi = pairs
    union = t_size[ti] + p_size[pi] - inter
    iou = inter / union
    match = iou > iou_threshold  # at most one partner each when IoU > 0.5
    tp = int(match.sum())
    precision = tp / max(1, p_ids.size)
    recall = tp / max(1, t_ids.size)
    f1 = 2 * precision * recall / max(1e-12, precision + recall)
    frac_of_pred = inter / p_size[pi]
    frac_of_true = inter / t_size[ti]
    matched_t = set(ti[match].tolist())
    split_t = {t for t in np.unique(ti[frac_of_pred >= 0.5]).tolist()
               if t not in matched_t and np.sum((ti == t) & (frac_of_pred >= 0.5)) >= 2}
    merged_p = {p for p in np.unique(pi).tolist()
                if np.sum((pi == p) & (frac_of_true >= 0.5)) >= 2}
    return {
        "n_true": int(t_ids.size), "n_pred": int(p_ids.size), "tp": tp,
        "precision": precision, "recall": recall, "f1": f1,
        "split_rate": len(split_t) / max(1, t_ids.size),
        "merge_rate": len(merged_p) / max(1, p_ids.size),
        "mean_matched_iou": float(iou[match].mean()) if tp else 0.0,
    }
