"""What each 2-D slice of a volume says about damage, read a slab of slices at a time.

The cross-section protocols of :mod:`crackseg.stats.representativeness`
need, for every slice along an axis, its crack area / envelope area
(:func:`section_crack_fractions`) and the mean damage of the particle
profiles it cuts (:func:`section_particle_means`).  Both read the volume a
slab of slices at a time (:data:`SLAB_VOXELS` voxels), so lazy arrays
(Zarr, memory-mapped or compressed TIFF, HDF5) are never loaded whole.

Arrays are ZYX.

Examples
--------
>>> import numpy as np
>>> seg = np.ones((2, 2, 2), np.uint8); seg[0, 0, 0] = 2
>>> section_crack_fractions(seg, np.ones((2, 2, 2), np.uint32)).tolist()
[0.25, 0.0]
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from crackseg.labels import NMC4, LabelSchema

SLAB_VOXELS = 1 << 24
"""Voxels read at a time (about 16 M: 64 MB of uint32 instances)."""


def slabs_along(seg, instances, axis: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(segmentation, instances) of consecutive slabs of slices along ``axis``, as NumPy arrays.

    Examples
    --------
    >>> a = np.zeros((4, 3, 3), np.uint8)
    >>> [s.shape for s, _ in slabs_along(a, a, 1)]
    [(4, 3, 3)]
    """
    shape = tuple(seg.shape)
    plane = max(1, int(np.prod(shape)) // max(1, shape[axis]))
    step = max(1, SLAB_VOXELS // plane)
    for i0 in range(0, shape[axis], step):
        idx = [slice(None)] * len(shape)
        idx[axis] = slice(i0, min(shape[axis], i0 + step))
        yield np.asarray(seg[tuple(idx)]), np.asarray(instances[tuple(idx)])


def section_crack_fractions(seg, instances, *, schema: LabelSchema = NMC4, axis: int = 0) -> np.ndarray:
    """Crack area / particle-envelope area of every slice along ``axis``.

    Parameters
    ----------
    seg : array_like of uint8, shape (Z, Y, X)
        Semantic labels (NumPy or lazy).
    instances : array_like of int, shape (Z, Y, X)
        Particle instances (envelopes); 0 = none.
    axis : int
        Axis the slices are perpendicular to.

    Returns
    -------
    numpy.ndarray of float, shape (seg.shape[axis],)
        NaN for slices without particles.

    Examples
    --------
    >>> seg = np.ones((2, 2, 2), np.uint8); seg[0, 0, 0] = 2
    >>> section_crack_fractions(seg, np.ones((2, 2, 2), np.uint32)).tolist()
    [0.25, 0.0]
    """
    return section_measures(seg, instances, schema=schema, axis=axis, means=False)[0]


def section_particle_means(seg, instances, *, schema: LabelSchema = NMC4, axis: int = 0,
                           exclude_border: bool = True, min_area: int | None = None) -> np.ndarray:
    """Mean damage of the particles of every slice along ``axis``, as one section reports it.

    In each slice, a particle's profile is its instance cut by the slice; its
    damage is crack area / envelope area of that profile.  Profiles smaller
    than ``min_area`` pixels (what :func:`crackseg.particles.particle_instances`
    drops in a section) and, with ``exclude_border``, profiles touching the
    slice's edge (the default ``--border exclude`` of a section run) are left
    out; the slice's value is the mean over the rest.

    Parameters
    ----------
    seg : array_like of uint8, shape (Z, Y, X)
        Semantic labels (NumPy or lazy).
    instances : array_like of int, shape (Z, Y, X)
        Particle instances (envelopes), 3-D or labelled per section.
    axis : int
        Axis the slices are perpendicular to.
    exclude_border : bool
    min_area : int, optional
        Default :data:`crackseg.particles.DEFAULT_MIN_VOLUME_VOX`.

    Returns
    -------
    numpy.ndarray of float, shape (seg.shape[axis],)
        NaN for slices without a kept profile.

    Examples
    --------
    >>> seg = np.zeros((2, 12, 12), np.uint8); seg[:, 2:8, 2:8] = 1; seg[:, 2:8, 9:12] = 1
    >>> seg[0, 4, 2:8] = 2
    >>> inst = np.zeros(seg.shape, np.uint32); inst[:, 2:8, 2:8] = 1; inst[:, 2:8, 9:12] = 2
    >>> section_particle_means(seg, inst).round(4).tolist()   # particle 2 touches the edge
    [0.1667, 0.0]
    """
    return section_measures(seg, instances, schema=schema, axis=axis,
                            exclude_border=exclude_border, min_area=min_area, fractions=False)[1]


def section_measures(seg, instances, *, schema: LabelSchema = NMC4, axis: int = 0,
                     exclude_border: bool = True, min_area: int | None = None,
                     fractions: bool = True, means: bool = True):
    """:func:`section_crack_fractions` and :func:`section_particle_means` in one read of the volume.

    Returns
    -------
    (numpy.ndarray or None, numpy.ndarray or None)
        Crack fraction and mean particle damage of every slice along
        ``axis`` (``None`` for the one not asked for).

    Examples
    --------
    >>> seg = np.ones((2, 2, 2), np.uint8); seg[0, 0, 0] = 2
    >>> fr, _ = section_measures(seg, np.ones((2, 2, 2), np.uint32), means=False)
    >>> fr.tolist()
    [0.25, 0.0]
    """
    from crackseg.particles import DEFAULT_MIN_VOLUME_VOX

    min_area = DEFAULT_MIN_VOLUME_VOX if min_area is None else int(min_area)
    crack_value = schema.value("crack") if schema.has("crack") else None
    other = tuple(a for a in range(3) if a != axis)
    env, crack, out = [], [], []
    for s, inst in slabs_along(seg, instances, axis):
        if fractions:
            inside = inst > 0
            env.append(inside.sum(axis=other))
            crack.append(((s == crack_value) & inside).sum(axis=other) if crack_value is not None
                         else np.zeros(s.shape[axis], np.int64))
            del inside
        if means:
            for i in range(s.shape[axis]):
                out.append(_slice_mean(np.take(s, i, axis=axis), np.take(inst, i, axis=axis),
                                       crack_value, min_area, exclude_border))
    fr = None
    if fractions:
        env, crack = np.concatenate(env), np.concatenate(crack)
        with np.errstate(divide="ignore", invalid="ignore"):
            fr = np.where(env > 0, crack / env, np.nan)
    return fr, (np.asarray(out, dtype=np.float64) if means else None)


def _slice_mean(sec: np.ndarray, lab: np.ndarray, crack_value, min_area: int,
                exclude_border: bool) -> float:
    """Mean crack area / envelope area of the kept profiles of one slice (NaN without one)."""
    env = np.bincount(lab.ravel())
    keep = env >= max(min_area, 1)
    keep[0] = False
    if exclude_border:
        edge = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])
        keep[edge] = False
    if not keep.any():
        return float("nan")
    if crack_value is None:
        return 0.0
    crack = np.bincount(lab[sec == crack_value], minlength=env.size)
    return float(np.mean(crack[keep] / env[keep]))
