"""Watershed of a particle block flooded on the seeds' grid, then refined at full resolution.

The seeded watershed of the smoothed distance map (:mod:`crackseg.particle_flood`)
costs most of particle labelling.  Its seeds lie on every ``step``-th voxel
(:data:`crackseg.particle_blocks.MARKER_STEP`), so the flood runs first on
that coarse grid (``step**ndim`` times fewer voxels), and the full-resolution
flood only decides the voxels the coarse one leaves in doubt:

1. the coarse grid is flooded from the seeds;
2. a coarse point is *settled* when every coarse neighbour (26-, 2-D:
   8-connected) in the envelope carries its label, i.e. it lies at least one
   coarse step away from any boundary between two instances;
3. a full-resolution envelope voxel takes a label when every coarse point
   of the grid cell it lies in is either outside the envelope or settled with
   that one label;
4. the remaining envelope voxels (a band about two coarse steps wide around
   each boundary between touching particles, and envelope parts thinner than
   the grid) are flooded at full resolution from their labelled neighbours,
   on the same distance map.

Inside particles the result is the full-resolution watershed's; the two can
differ only where the coarse flood placed a boundary between two instances
differently by more than a coarse step (on the 256³ phantom of
``benchmarks/particle_speed.py``, 0.02 % of envelope voxels; instance F1 0.993
at IoU 0.9 against the full-resolution flood, no particle split or merged).

Arrays are ZYX (or YX).

Examples
--------
>>> import numpy as np
>>> env = np.zeros((12, 30), bool); env[1:11, 1:29] = True
>>> dist = np.zeros(env.shape, np.float32)
>>> dist[env] = 1; dist[3:9, 4:12] = 3; dist[3:9, 18:26] = 3
>>> sub = (slice(0, None, 2), slice(0, None, 2))
>>> seeds = np.zeros((6, 15), np.uint32); seeds[3, 4] = 1; seeds[3, 11] = 2
>>> labels = coarse_to_fine_labels(-bordered(dist, np.float64), env, sub, seeds)
>>> int(labels[6, 5]), int(labels[6, 22]), bool((labels[env] > 0).all())
(1, 2, True)
"""

from __future__ import annotations

from itertools import product

import numpy as np
from scipy import ndimage as ndi

from crackseg.particle_flood import bordered, flood

_UNSET = np.iinfo(np.uint32).max
_DOUBT = _UNSET - 1


def _settled(coarse: np.ndarray) -> np.ndarray:
    """Coarse labels where all labelled neighbours agree; :data:`_DOUBT` where they do not, 0 outside."""
    footprint = np.ones((3,) * coarse.ndim, bool)
    high = ndi.maximum_filter(coarse, footprint=footprint, mode="nearest")
    low = ndi.minimum_filter(np.where(coarse > 0, coarse, _UNSET), footprint=footprint,
                             mode="nearest")
    return np.where(coarse == 0, 0, np.where(low == high, coarse, _DOUBT)).astype(np.uint32)


def _cell_labels(settled: np.ndarray, sub, full: np.ndarray) -> None:
    """Write into ``full`` the label of each voxel whose grid cell holds one settled label."""
    step = [s.step for s in sub]
    padded = np.pad(settled, [(0, 1)] * settled.ndim, mode="edge")
    low_src = np.where(padded > 0, padded, _UNSET).astype(np.uint32)
    for phase in product(*[range(k) for k in step]):
        out = full[tuple(slice(s.start + q, None, k) for s, q, k in zip(sub, phase, step))]
        if out.size == 0:
            continue
        high = low = None
        for corner in product(*[(0, 1) if q else (0,) for q in phase]):
            cell = tuple(slice(c, c + n) for c, n in zip(corner, out.shape))
            high = padded[cell].copy() if high is None else np.maximum(high, padded[cell], out=high)
            low = low_src[cell].copy() if low is None else np.minimum(low, low_src[cell], out=low)
        out[...] = np.where((high == low) & (high < _DOUBT), high, 0)


def coarse_to_fine_labels(image: np.ndarray, env: np.ndarray, sub, seeds: np.ndarray) -> np.ndarray:
    """Seeded watershed of ``image`` in ``env``, flooded on the seeds' grid and refined (module notes).

    Parameters
    ----------
    image : ndarray of float64, shape of ``env`` plus 2 on every axis
        Height flooded from low to high (the negated smoothed distance map)
        inside a one-voxel border (:func:`crackseg.particle_flood.bordered`),
        so that a caller can free its distance map first.
    env : ndarray of bool, shape (Z, Y, X) or (Y, X)
        Voxels that may be labelled.
    sub : tuple of slice
        The seeds' grid in ``env`` (start 0 <= start < step on each axis).
    seeds : ndarray of uint32
        Seed labels on that grid (``env[sub].shape``; 0: none).

    Returns
    -------
    ndarray of uint32
        Labels (shape of ``env``, a view into a bordered array); 0 outside
        ``env`` and where no seed's flood reaches.
    """
    inner = (slice(1, -1),) * env.ndim
    if not seeds.any():  # nothing to flood from (a block of matrix, or only thin solid)
        return np.zeros(env.shape, np.uint32)
    coarse = bordered(seeds, np.uint32)
    flood(bordered(image[inner][sub], np.float64), coarse, bordered(env[sub], np.int8))
    labels = np.zeros(image.shape, np.uint32)
    _cell_labels(_settled(coarse[inner]), sub, labels[inner])
    del coarse
    labels[inner][~env] = 0
    mask = bordered(env, np.int8)
    doubt = (labels == 0) & (mask > 0)
    if doubt.any():
        # Flood only from the labelled voxels beside a voxel in doubt.
        starts = np.flatnonzero(ndi.binary_dilation(doubt) & (labels > 0))
        del doubt
        if starts.size:
            flood(image, labels, mask, markers=starts)
    return labels[inner]


def full_resolution_labels(image: np.ndarray, env: np.ndarray, sub, seeds: np.ndarray) -> np.ndarray:
    """The same watershed flooded at full resolution only: the reference of :func:`coarse_to_fine_labels`.

    Same parameters and result; slower (every envelope voxel passes through
    the flood's queue).  Used to measure how far the coarse-to-fine labels
    are from it.

    Examples
    --------
    >>> env = np.ones((6, 10), bool)
    >>> seeds = np.zeros((3, 5), np.uint32); seeds[1, 0] = 1; seeds[1, 4] = 2
    >>> height = -bordered(np.ones(env.shape), np.float64)
    >>> labels = full_resolution_labels(height, env, (slice(0, None, 2),) * 2, seeds)
    >>> int(labels[0, 0]), int(labels[0, 9])
    (1, 2)
    """
    labels = np.zeros(image.shape, np.uint32)
    labels[(slice(1, -1),) * env.ndim][sub] = seeds
    labels[(slice(1, -1),) * env.ndim][~env] = 0
    return flood(image, labels, bordered(env, np.int8))
