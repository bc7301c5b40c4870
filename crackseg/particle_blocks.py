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
from crackseg.extrema import h_maxima
from crackseg.labels import NMC4, LabelSchema
from crackseg.particle_coarse import coarse_to_fine_labels
from crackseg.particle_flood import bordered

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


def solid_counts(labels: np.ndarray, seg: np.ndarray, schema: LabelSchema = NMC4):
    """Instance ids and the number of their solid voxels (the ``particle`` class).

    A particle is solid active material with the voids it encloses, so the
    minimum particle volume applies to its solid: an envelope of crack or pore
    voxels alone (a dark blob in the matrix) holds none and is dropped.  A
    schema without a ``particle`` class counts every envelope voxel.

    Examples
    --------
    >>> lab = np.array([[1, 1, 2, 2, 0]]); seg = np.array([[1, 2, 2, 3, 0]], np.uint8)
    >>> [a.tolist() for a in solid_counts(lab, seg)]
    [[0, 1, 2], [0, 1, 0]]
    """
    if not schema.has("particle"):
        return np.unique(labels, return_counts=True)
    ids = np.unique(labels)
    solid = np.asarray(seg) == schema.value("particle")
    u, n = np.unique(labels[solid], return_counts=True)
    counts = np.zeros(ids.size, np.int64)
    counts[np.searchsorted(ids, u)] = n
    return ids, counts


def foreground(seg, schema: LabelSchema = NMC4) -> np.ndarray:
    """Boolean mask of the envelope classes (particle, crack, pore) of ``seg``."""
    values = envelope_values(schema)
    seg = np.asarray(seg)
    if seg.dtype == np.uint8:
        lut = np.zeros(256, bool)
        lut[values] = True
        return lut[seg]
    return np.isin(seg, values)


def _closed(fg: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing of ``fg`` by ``radius`` steps of the axis neighbours (edge-padded).

    Equal to ``scipy.ndimage.binary_closing`` of the edge-padded mask with the
    axis-neighbour cross and ``radius`` iterations, cropped back.
    """
    r = int(radius)
    out = np.pad(fg, r, mode="edge")
    for grow in (True, False):  # dilation, then erosion (outside the padded mask: empty)
        for _ in range(r):
            src = out.copy()
            for ax in range(out.ndim):
                lo = (slice(None),) * ax + (slice(None, -1),)
                hi = (slice(None),) * ax + (slice(1, None),)
                if grow:
                    out[hi] |= src[lo]
                    out[lo] |= src[hi]
                else:
                    out[hi] &= src[lo]
                    out[lo] &= src[hi]
                    edges = (slice(None),) * ax + ([0, -1],)
                    out[edges] = False
    return out[(slice(r, -r),) * fg.ndim]


def filled_holes(fg: np.ndarray) -> np.ndarray:
    """``fg`` with every background region that does not reach the array's faces filled.

    Background regions are axis-connected (6-connected in 3-D, 4 in 2-D), as
    in ``scipy.ndimage.binary_fill_holes``, whose result this equals.

    Examples
    --------
    >>> ring = np.ones((5, 5), bool); ring[2, 2] = False; ring[0, 2] = False
    >>> filled_holes(ring)[2, 2], filled_holes(ring)[0, 2]
    (np.True_, np.False_)
    """
    import cc3d

    regions = cc3d.connected_components(~fg, connectivity=6 if fg.ndim == 3 else 4)
    outside = [np.unique(regions[(slice(None),) * ax + (i,)])
               for ax in range(fg.ndim) for i in (0, -1)]
    lut = np.ones(int(regions.max()) + 1, bool)
    lut[np.concatenate(outside)] = False
    lut[0] = True
    return lut[regions]


def filled_envelope(fg: np.ndarray, closing_radius: int = 1) -> np.ndarray:
    """Close ``fg`` with a ball of ``closing_radius`` voxels (edge-padded) and fill its holes."""
    if closing_radius > 0:
        fg = _closed(fg, closing_radius)
    return filled_holes(fg)


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


def _grid_seeds(dist, env, h, origin, marker_step):
    """The h-maxima seeds of ``dist`` in ``env``: the grid they lie on and their labels there.

    Seeds are searched on the volume's every-``marker_step`` grid (not the
    block's, so that every block sampling a region samples the same voxels)
    and numbered by their 26- (2-D: 8-) connected groups on that grid.

    Returns
    -------
    (tuple of slice, ndarray of uint32)
        The grid (slices of the block) and the seed labels on it (0: none).
    """
    import cc3d

    sub = tuple(slice((-int(o)) % marker_step, None, marker_step) for o in origin)
    peaks = h_maxima(dist[sub], h).astype(bool)
    seeds = cc3d.connected_components(peaks, connectivity=26 if dist.ndim == 3 else 8)
    seeds = seeds.astype(np.uint32, copy=False)
    seeds[~env[sub]] = 0
    return sub, seeds


def _seed_unflooded(labels, env, next_id: int) -> list:
    """Label the envelope components that hold no seed (small, flat particles); their first voxels.

    A component (26-connected; 2-D: 8) whose voxels are all unlabelled after
    the flood gets one seed at its first voxel (C order) and, as a flood
    from it would, labels the axis-connected part of it that holds that
    voxel, ``next_id``, ``next_id + 1``, ... in order of the components.

    Returns
    -------
    list of int
        Linear index (in the block) of each new seed, in label order.
    """
    import cc3d

    if not (env & (labels == 0)).any():
        return []
    comps = cc3d.connected_components(env, connectivity=26 if env.ndim == 3 else 8)
    seeded = np.zeros(int(comps.max()) + 1, bool)
    seeded[comps[labels > 0]] = True
    seeded[0] = True
    todo = ~seeded[comps]
    del comps
    if not todo.any():
        return []
    parts = cc3d.connected_components(todo, connectivity=6 if env.ndim == 3 else 4)
    comps = cc3d.connected_components(todo, connectivity=26 if env.ndim == 3 else 8)
    nz = np.flatnonzero(todo)
    _, first = np.unique(comps.ravel()[nz], return_index=True)
    starts = nz[first]
    part_label = np.zeros(int(parts.max()) + 1, np.uint32)
    part_label[parts.ravel()[starts]] = np.arange(next_id, next_id + starts.size, dtype=np.uint32)
    labels[todo] = part_label[parts[todo]]
    return starts.tolist()


def block_instances(seg, schema: LabelSchema = NMC4, *, origin, shape, voxel_size_um=None,
                    h: float = DEFAULT_H, sigma: float = 1.0, closing_radius: int = 1,
                    crop=None, labelled=None, marker_step: int = MARKER_STEP) -> np.ndarray:
    """Watershed instances of one block, named by their seed's global index.

    Envelope and distance map are computed on all of ``seg``, seeds and flood
    on its ``labelled`` part: a distance is the whole volume's where the ball
    of that radius lies in ``seg``, so context keeps seeds where the whole
    volume has them.

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
        Part of the block to return (default: all of it), within ``labelled``.
    labelled : tuple of slice, optional
        Part of the block that is seeded and flooded (default: all of it);
        the rest is context of the distance map only.
    marker_step : int
        Seeds are searched on every ``marker_step``-th voxel of the volume.

    Returns
    -------
    ndarray of uint64
        0 = no particle; else 1 + the linear index (in ``shape``) of the
        first voxel of the instance's seed.
    """
    crop = tuple(slice(*c.indices(n)[:2]) for c, n in
                 zip(crop or (slice(None),) * seg.ndim, seg.shape))
    env = envelope_mask(seg, schema, closing_radius=closing_radius)
    if not env.any():
        return np.zeros(seg[crop].shape, np.uint64)
    dist = distance_map(env, voxel_size_um)
    if labelled is not None:  # the context's distances kept, the context dropped
        labelled = tuple(slice(*c.indices(n)[:2]) for c, n in zip(labelled, seg.shape))
        env, dist = env[labelled].copy(), dist[labelled].copy()
        origin = tuple(int(o) + c.start for o, c in zip(origin, labelled))
        crop = tuple(slice(c.start - b.start, c.stop - b.start) for c, b in zip(crop, labelled))
    if sigma > 0:
        dist = ndi.gaussian_filter(dist, sigma, output=np.float32)
    dist[~env] = 0
    sub, seeds = _grid_seeds(dist, env, h, origin, marker_step)
    n_seeds = int(seeds.max())
    # Seed voxels (linear index in the block, C order) and their labels.
    on_grid = np.nonzero(seeds)
    seed_ids = seeds[on_grid]
    seed_at = np.ravel_multi_index(tuple(s.start + s.step * i for s, i in zip(sub, on_grid)),
                                   env.shape)
    # The flood works on bordered copies; each full-size array is freed as soon as
    # its copy exists, so that a block needs few bytes per voxel.
    image = bordered(dist, np.float64)
    del dist
    np.negative(image, out=image)  # flooded from the particle cores outwards
    inner = coarse_to_fine_labels(image, env, sub, seeds)
    del image, seeds
    extra = _seed_unflooded(inner, env, n_seeds + 1)
    del env
    if not seed_at.size and not extra:
        return np.zeros(inner[crop].shape, np.uint64)
    # Global id of each seed: linear index (in the volume) of its first voxel.
    ids, first = np.unique(seed_ids, return_index=True)
    ids = np.concatenate([ids, np.arange(n_seeds + 1, n_seeds + 1 + len(extra))])
    at = np.concatenate([seed_at[first], np.asarray(extra, np.intp)]).astype(np.intp)
    local = np.unravel_index(at, inner.shape)
    glob = np.ravel_multi_index(tuple(i + o for i, o in zip(local, origin)), tuple(shape))
    lut = np.zeros(int(ids.max(initial=0)) + 1, np.uint64)
    lut[ids.astype(np.intp)] = glob.astype(np.uint64) + 1
    return lut[inner[crop]]


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
