"""Particle instances from a semantic segmentation.

Each particle's *envelope* is its solid plus the crack and pore voxels it
encloses (DESIGN.md): the union of the particle, crack and pore classes,
closed with a small ball and hole-filled, so that a crack never cuts one
particle into two.  Touching envelopes are split by a watershed of the
smoothed Euclidean distance transform (``edt``), seeded by its h-maxima (one
marker per particle core whose distance peak rises ``h`` above the saddle to
its neighbour).  Instances smaller than a volume threshold (µm³ when the
voxel size is known, else voxels) are dropped.

Big volumes are processed in chunks with a margin of context.  Every
instance is identified by the global position of its marker, which does not
depend on the chunk, so labels are consistent across chunk borders; a final
pass numbers them 1..N in order of their marker's position (Z, then Y, X).

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

import sys
import tempfile

import numpy as np
from scipy import ndimage as ndi

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema
from crackseg.tiling import chunk_grid

ENVELOPE_CLASSES = ("particle", "crack", "pore")
DEFAULT_H = 0.5
"""Default h-maxima height (distance units of the smallest voxel edge)."""
DEFAULT_MIN_VOLUME_VOX = 27
"""Specks smaller than this are dropped when no physical threshold is given."""


def envelope_mask(seg, schema: LabelSchema = NMC4, *, closing_radius: int = 1) -> np.ndarray:
    """Particle envelopes: particle+crack+pore voxels, closed and hole-filled.

    Parameters
    ----------
    seg : ndarray of int, shape (Z, Y, X) or (Y, X)
        Semantic labels (stored values of ``schema``).
    schema : LabelSchema
        Its classes ``particle``, ``crack``, ``pore`` (those present) form
        the envelope.
    closing_radius : int
        Radius (voxels) of the closing that bridges thin gaps; 0 for none.

    Returns
    -------
    ndarray of bool
    """
    values = [schema.value(c) for c in ENVELOPE_CLASSES if schema.has(c)]
    if not values:
        raise InputError(f"label schema {schema.name!r} has no particle class")
    seg = np.asarray(seg)
    lut = np.zeros(256, bool)
    lut[values] = True
    fg = lut[seg] if seg.dtype == np.uint8 else np.isin(seg, values)
    if closing_radius > 0:
        r = int(closing_radius)
        st = ndi.generate_binary_structure(seg.ndim, 1)
        padded = np.pad(fg, r, mode="edge")
        fg = ndi.binary_closing(padded, st, iterations=r)[(slice(r, -r),) * seg.ndim]
    return ndi.binary_fill_holes(fg)


def _distance(env: np.ndarray, voxel_size_um) -> np.ndarray:
    import edt

    if voxel_size_um is not None:
        vs = np.asarray(voxel_size_um, float)
        anis = tuple(vs / vs.min())
    else:
        anis = (1.0,) * env.ndim
    dist = edt.edt(np.ascontiguousarray(env, dtype=np.uint8), anisotropy=anis,
                   black_border=False, parallel=1)
    # A block without background has infinite distances; cap them at its size.
    cap = np.float32(max(env.shape) * max(anis))
    return np.minimum(dist, cap, out=dist)


def _block_instances(seg, schema, *, voxel_size_um, h, sigma, closing_radius, origin, shape,
                     marker_step=2):
    """Watershed instances of one block, labelled by their marker's global index (uint64)."""
    import cc3d
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    env = envelope_mask(seg, schema, closing_radius=closing_radius)
    if not env.any():
        return np.zeros(seg.shape, np.uint64)
    dist = _distance(env, voxel_size_um)
    if sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma)
    dist[~env] = 0
    conn = 26 if seg.ndim == 3 else 8
    # Seeds from a 2x subsampled distance map: particles are far larger than
    # two voxels and the morphological reconstruction is 2^ndim times cheaper.
    sub = (slice(None, None, marker_step),) * seg.ndim
    peaks_sub = h_maxima(dist[sub], h).astype(bool)
    seeds = cc3d.connected_components(peaks_sub, connectivity=conn)
    markers = np.zeros(seg.shape, np.uint32)
    markers[sub] = seeds
    markers[~env] = 0
    # Envelope components without a seed (small, flat particles) get one each.
    comps = cc3d.connected_components(env, connectivity=conn)
    seeded = np.zeros(int(comps.max()) + 1, bool)
    seeded[comps[markers > 0]] = True
    next_id = int(seeds.max()) + 1
    unseeded = np.flatnonzero(~seeded[1:]) + 1
    if unseeded.size:
        boxes = ndi.find_objects(comps)
        for c in unseeded:
            box = boxes[c - 1]
            first = np.argwhere(comps[box] == c)[0]
            markers[tuple(int(f) + b.start for f, b in zip(first, box))] = next_id
            next_id += 1
    if not markers.any():
        return np.zeros(seg.shape, np.uint64)
    ws = watershed(-dist, markers, mask=env)
    # Global id of each marker: linear index (in the whole volume) of its first voxel.
    nz = np.flatnonzero(markers)
    ids, first = np.unique(markers.ravel()[nz], return_index=True)
    local = np.unravel_index(nz[first], markers.shape)
    glob = np.ravel_multi_index(tuple(i + o for i, o in zip(local, origin)), shape)
    lut = np.zeros(int(ids.max()) + 1, np.uint64)
    lut[ids] = glob.astype(np.uint64) + 1
    return lut[ws]


def particle_instances(seg, *, schema: LabelSchema = NMC4, voxel_size_um=None,
                       min_volume_um3: float | None = None, min_volume_vox: int | None = None,
                       h: float = DEFAULT_H, sigma: float = 1.0, closing_radius: int = 1,
                       chunk_size: int | None = None, margin: int = 48, out=None,
                       scratch=None, progress: bool = False) -> np.ndarray:
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
    min_volume_um3 : float, optional
        Drop instances smaller than this (µm³; needs the voxel size).
    min_volume_vox : int, optional
        Drop instances smaller than this many voxels (default 27 when no
        physical threshold is given).
    h : float
        Height of the distance maxima that seed particles (in units of the
        smallest voxel edge): larger merges more, smaller splits more.
    sigma : float
        Gaussian smoothing of the distance map (voxels) before seeding.
    closing_radius : int
        Closing radius (voxels) of the envelope.
    chunk_size : int, optional
        Process in chunks of this many voxels per axis (bounded memory);
        ``None`` processes the whole array at once.
    margin : int
        Context voxels around each chunk.  It must exceed the largest
        particle radius: an envelope wider than the chunk plus margin gets one
        label per chunk.
    scratch : path-like, optional
        Folder for the temporary chunk labels (default: the system's).
    out : zarr.Array, optional
        Where to write the labels (uint32, same shape); returned instead of a
        NumPy array.
    progress : bool
        Progress bar on stderr.

    Returns
    -------
    ndarray of uint32 (or ``out``)
        0 = no particle; 1..N numbered in order of their seed's position.

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
    if min_volume_um3 is not None:
        if voxel_size_um is None:
            raise InputError("a minimum volume in µm³ needs the voxel size (--voxel-size Z Y X)")
        min_vox = float(min_volume_um3) / float(np.prod(voxel_size_um))
    else:
        min_vox = DEFAULT_MIN_VOLUME_VOX if min_volume_vox is None else int(min_volume_vox)
    kw = dict(schema=schema, voxel_size_um=voxel_size_um, h=float(h), sigma=float(sigma),
              closing_radius=int(closing_radius), shape=shape)
    if chunk_size is None or all(s <= chunk_size for s in shape):
        ids = _block_instances(np.asarray(seg[...]), origin=(0,) * len(shape), **kw)
        return _number_instances([ids], [tuple(slice(0, s) for s in shape)], min_vox, shape,
                                 out=out)
    import zarr
    from tqdm.auto import tqdm

    chunks = chunk_grid(shape, chunk_size, margin)
    with tempfile.TemporaryDirectory(prefix="crackseg-particles-", dir=scratch) as d:
        tmp = zarr.create_array(store=d, shape=shape, dtype=np.uint64,
                                chunks=(int(chunk_size),) * len(shape), fill_value=0)
        for c in tqdm(chunks, desc="particles", unit="chunk", disable=not progress,
                      file=sys.stderr, leave=False):
            block = np.asarray(seg[c.ext])
            origin = tuple(s.start for s in c.ext)
            ids = _block_instances(block, origin=origin, **kw)
            tmp[c.core] = ids[c.crop]
            del block, ids
        return _number_instances(tmp, [c.core for c in chunks], min_vox, shape, out=out)


def _number_instances(ids, regions, min_vox, shape, *, out=None):
    """Map marker ids to 1..N (uint32), dropping instances below ``min_vox`` voxels."""
    single = isinstance(ids, list)
    get = (lambda i, r: ids[0]) if single else (lambda i, r: np.asarray(ids[r]))
    uniq, counts = np.zeros(0, np.uint64), np.zeros(0, np.int64)
    for i, r in enumerate(regions):
        u, c = np.unique(get(i, r), return_counts=True)
        allu = np.concatenate([uniq, u])
        allc = np.concatenate([counts, c])
        uniq, inv = np.unique(allu, return_inverse=True)
        counts = np.bincount(inv, weights=allc).astype(np.int64)
    keep = (uniq > 0) & (counts >= min_vox)
    kept = uniq[keep]
    if kept.size >= np.iinfo(np.uint32).max:
        raise InputError("more than 2^32 - 1 particles")
    result = out if out is not None else np.zeros(shape, np.uint32)
    for i, r in enumerate(regions):
        block = get(i, r)
        pos = np.searchsorted(kept, block)
        pos = np.minimum(pos, max(kept.size - 1, 0))
        found = kept.size > 0
        lab = np.where(found & (kept[pos] == block) if found else np.zeros(block.shape, bool),
                       pos + 1, 0).astype(np.uint32)
        result[r] = lab
    return result


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
