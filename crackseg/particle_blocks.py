"""Particle labelling of one block: envelope, distance map, seeds, watershed.

The pieces that :func:`crackseg.particles.particle_instances` runs on the
whole volume, or on each chunk of a big one (:mod:`crackseg.particle_chunks`):

- :func:`envelope_mask`: particle + crack + pore voxels, closed and
  hole-filled (a particle's *envelope*, DESIGN.md);
- :func:`block_instances`: watershed of the smoothed distance map seeded by
  its h-maxima; every instance is named by the global linear index (+1) of
  its seed's first voxel, so two blocks that see the same particle give it
  the same name;
- :func:`block_radius`: the largest distance-map value of a block (the
  largest particle radius, in units of the smallest voxel edge), from which
  chunk margins are sized.

Arrays are ZYX (or YX); distances are in units of the smallest voxel edge.

Examples
--------
>>> import numpy as np
>>> seg = np.zeros((20, 20, 20), np.uint8); seg[4:16, 4:16, 4:16] = 1
>>> ids = block_instances(seg, origin=(0, 0, 0), shape=seg.shape)
>>> len(np.unique(ids[ids > 0]))
1
>>> round(block_radius(seg), 1)
6.0
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema

ENVELOPE_CLASSES = ("particle", "crack", "pore")
DEFAULT_H = 0.5
"""Default h-maxima height (distance units of the smallest voxel edge)."""
MARKER_STEP = 2
"""Seeds are found on every second voxel of the volume's grid (global, not per block)."""


def envelope_values(schema: LabelSchema) -> list[int]:
    """Stored label values whose voxels belong to particle envelopes."""
    values = [schema.value(c) for c in ENVELOPE_CLASSES if schema.has(c)]
    if not values:
        raise InputError(f"label schema {schema.name!r} has no particle class")
    return values


def foreground(seg, schema: LabelSchema = NMC4) -> np.ndarray:
    """Boolean mask of the envelope classes (particle, crack, pore) of ``seg``."""
    values = envelope_values(schema)
    seg = np.asarray(seg)
    if seg.dtype == np.uint8:
        lut = np.zeros(256, bool)
        lut[values] = True
        return lut[seg]
    return np.isin(seg, values)


def filled_envelope(fg: np.ndarray, closing_radius: int = 1) -> np.ndarray:
    """Close ``fg`` with a ball of ``closing_radius`` voxels (edge-padded) and fill its holes."""
    if closing_radius > 0:
        r = int(closing_radius)
        st = ndi.generate_binary_structure(fg.ndim, 1)
        padded = np.pad(fg, r, mode="edge")
        fg = ndi.binary_closing(padded, st, iterations=r)[(slice(r, -r),) * fg.ndim]
    return ndi.binary_fill_holes(fg)


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

    Examples
    --------
    >>> seg = np.zeros((9, 9, 9), np.uint8); seg[2:7, 2:7, 2:7] = 1; seg[4, 4, 4] = 0
    >>> bool(envelope_mask(seg)[4, 4, 4])
    True
    """
    return filled_envelope(foreground(seg, schema), closing_radius)


def anisotropy(voxel_size_um, ndim: int) -> tuple[float, ...]:
    """Voxel edges relative to the smallest one (all 1 when the size is unknown)."""
    if voxel_size_um is None:
        return (1.0,) * ndim
    vs = np.asarray(voxel_size_um, float)
    return tuple(float(v) for v in vs / vs.min())


def distance_map(env: np.ndarray, voxel_size_um) -> np.ndarray:
    """Euclidean distance (smallest voxel edges) of each envelope voxel to the background."""
    import edt

    anis = anisotropy(voxel_size_um, env.ndim)
    dist = edt.edt(np.ascontiguousarray(env, dtype=np.uint8), anisotropy=anis,
                   black_border=False, parallel=1)
    # A block without background has infinite distances; cap them at its size.
    cap = np.float32(max(env.shape) * max(anis))
    return np.minimum(dist, cap, out=dist)


def _seed_markers(dist, env, h, origin, marker_step):
    """Seeds: h-maxima of ``dist`` on the volume's every-``marker_step`` grid, one per component."""
    import cc3d
    from skimage.morphology import h_maxima

    conn = 26 if dist.ndim == 3 else 8
    # The subsampling grid is the volume's, not the block's, so that every
    # block sampling a region samples the same voxels.
    sub = tuple(slice((-int(o)) % marker_step, None, marker_step) for o in origin)
    peaks_sub = h_maxima(dist[sub], h).astype(bool)
    seeds = cc3d.connected_components(peaks_sub, connectivity=conn)
    markers = np.zeros(dist.shape, np.uint32)
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
    return markers


def block_instances(seg, schema: LabelSchema = NMC4, *, origin, shape, voxel_size_um=None,
                    h: float = DEFAULT_H, sigma: float = 1.0, closing_radius: int = 1,
                    crop=None, marker_step: int = MARKER_STEP) -> np.ndarray:
    """Watershed instances of one block, named by their seed's global index.

    Parameters
    ----------
    seg : ndarray of int, shape (Z, Y, X) or (Y, X)
        Semantic labels of the block (with its context margin).
    schema : LabelSchema
    origin : sequence of int
        Position of the block's first voxel in the volume.
    shape : sequence of int
        Shape of the whole volume.
    voxel_size_um, h, sigma, closing_radius
        As for :func:`crackseg.particles.particle_instances`.
    crop : tuple of slice, optional
        Part of the block to return (default: all of it).
    marker_step : int
        Seeds are searched on every ``marker_step``-th voxel of the volume.

    Returns
    -------
    ndarray of uint64
        0 = no particle; else 1 + the linear index (in ``shape``) of the
        first voxel of the instance's seed.
    """
    from skimage.segmentation import watershed

    crop = crop or (slice(None),) * seg.ndim
    env = envelope_mask(seg, schema, closing_radius=closing_radius)
    if not env.any():
        return np.zeros(seg[crop].shape, np.uint64)
    dist = distance_map(env, voxel_size_um)
    if sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma, output=np.float32)
    dist[~env] = 0
    markers = _seed_markers(dist, env, h, origin, marker_step)
    if not markers.any():
        return np.zeros(seg[crop].shape, np.uint64)
    ws = watershed(np.negative(dist, out=dist), markers, mask=env)
    del dist, env
    # Global id of each marker: linear index (in the whole volume) of its first voxel.
    nz = np.flatnonzero(markers)
    ids, first = np.unique(markers.ravel()[nz], return_index=True)
    local = np.unravel_index(nz[first], markers.shape)
    glob = np.ravel_multi_index(tuple(i + o for i, o in zip(local, origin)), tuple(shape))
    lut = np.zeros(int(ids.max()) + 1, np.uint64)
    lut[ids] = glob.astype(np.uint64) + 1
    return lut[ws[crop]]


def block_radius(seg, schema: LabelSchema = NMC4, *, voxel_size_um=None,
                 closing_radius: int = 1, crop=None, step: int = 2) -> float:
    """Largest envelope distance-map value in ``crop`` (units of the smallest voxel edge).

    Computed on a ``step``-times coarser grid (a voxel of it is foreground
    when any voxel it covers is), which makes envelopes slightly wider: the
    value is an upper bound of the radius of the largest inscribed ball, to
    within a coarse voxel.  Exact for balls that lie within the block; a
    ball cut by the block's face is measured as if it went on.

    Parameters
    ----------
    seg : ndarray of int, shape (Z, Y, X) or (Y, X)
    schema : LabelSchema
    voxel_size_um : sequence of float, optional
    closing_radius : int
    crop : tuple of slice, optional
        Region of the block whose values count (default: all of it).
    step : int
        Coarsening factor.

    Returns
    -------
    float
    """
    fg = foreground(seg, schema)
    crop = crop or tuple(slice(0, s) for s in fg.shape)
    pad = [(0, (-s) % step) for s in fg.shape]
    fg = np.pad(fg, pad, mode="edge")
    coarse = fg.reshape([x for s in fg.shape for x in (s // step, step)])
    coarse = coarse.any(axis=tuple(range(1, 2 * fg.ndim, 2)))
    env = filled_envelope(coarse, max(1, int(np.ceil(closing_radius / step))))
    if not env.any():
        return 0.0
    vs = None if voxel_size_um is None else tuple(voxel_size_um)
    dist = distance_map(env, vs)
    sub = tuple(slice(c.start // step, -(-c.stop // step)) for c in crop)
    return float(dist[sub].max(initial=0.0)) * step
