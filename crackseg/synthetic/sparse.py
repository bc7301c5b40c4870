"""Sparse slice annotations, as a user would draw them.

Examples
--------
>>> import numpy as np
>>> from crackseg.synthetic.sparse import sparse_labels
>>> s = sparse_labels(np.ones((6, 4, 4), np.uint8), every=3, axes=(0,), offset=0)
>>> [int(s[z].max()) for z in range(6)]
[1, 255, 255, 1, 255, 255]
"""

from __future__ import annotations

import numpy as np

from crackseg.errors import InputError
from crackseg.labels import IGNORE


def sparse_labels(labels: np.ndarray, every: int = 12, axes=(0, 1), offset=None,
                  seed: int = 0) -> np.ndarray:
    """Keep every ``every``-th slice along each of ``axes``; the rest becomes 255.

    Parameters
    ----------
    labels : ndarray, shape (Z, Y, X) or (Y, X)
        Full labels.
    every : int
        Annotate one slice in ``every`` along each listed axis.
    axes : sequence of int
        Axes along which slices are annotated (a voxel is annotated when it
        lies in an annotated slice of any of them).
    offset : int or sequence of int, optional
        Index of the first annotated slice per axis; ``None`` draws it from
        ``seed`` (uniform in ``[0, every)``).
    seed : int
        Seed of the offsets when ``offset`` is ``None``.

    Returns
    -------
    ndarray of uint8, same shape
        Labels on annotated slices, :data:`crackseg.labels.IGNORE` elsewhere.
    """
    labels = np.asarray(labels)
    every = int(every)
    if every < 1:
        raise InputError(f"sparse annotation spacing must be >= 1, got {every}")
    axes = tuple(int(a) for a in axes)
    for a in axes:
        if not -labels.ndim <= a < labels.ndim:
            raise InputError(f"axis {a} does not exist in a {labels.ndim}-D label volume")
    if offset is None:
        offsets = np.random.default_rng(seed).integers(0, every, len(axes))
    else:
        offsets = np.broadcast_to(np.asarray(offset, dtype=int), (len(axes),))
    keep = np.zeros(labels.shape, bool)
    for a, off in zip(axes, offsets):
        idx = [slice(None)] * labels.ndim
        idx[a] = slice(int(off) % every, None, every)
        keep[tuple(idx)] = True
    return np.where(keep, labels, IGNORE).astype(np.uint8)
