"""Seeded watershed of a particle block in little memory.

The flooding is scikit-image's (:func:`skimage.segmentation.watershed` with
6-connected (3-D) or 4-connected (2-D) neighbours, no compactness, no
watershed lines): the same labels, voxel for voxel.  ``watershed`` copies
its inputs before flooding (the image three times as float64), which
doubles the memory a block needs; here the three arrays the flooding works
on, each with a one-voxel border of zeros, are built once
(:func:`bordered`, :func:`flood_arrays`), and the caller can free its own
copies before :func:`flood` runs: about 14 bytes per voxel instead of about 34, so that
larger chunks fit a memory budget.  Where scikit-image's flooding routine
cannot be called this way (another version), ``watershed`` itself runs.

Arrays are ZYX (or YX).

Examples
--------
>>> import numpy as np
>>> height = np.array([[3., 2., 1., 2., 3., 2., 1., 2., 3.]])
>>> seeds = np.array([[0, 0, 1, 0, 0, 0, 2, 0, 0]], np.uint32)
>>> image, labels, mask = flood_arrays(height, seeds, height > 0)
>>> flood(image, labels, mask)[0].tolist()
[1, 1, 1, 1, 1, 2, 2, 2, 2]
"""

from __future__ import annotations

import numpy as np


def bordered(a: np.ndarray, dtype) -> np.ndarray:
    """``a`` as ``dtype`` inside a one-voxel border of zeros (C-contiguous).

    Examples
    --------
    >>> bordered(np.ones((1, 2), bool), np.int8).tolist()
    [[0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]
    """
    out = np.zeros(tuple(s + 2 for s in a.shape), dtype)
    out[(slice(1, -1),) * a.ndim] = a
    return out


def flood_arrays(height: np.ndarray, seeds: np.ndarray, mask: np.ndarray):
    """The arrays :func:`flood` works on: image, labels and mask, each with a zero border.

    Parameters
    ----------
    height : ndarray of float, shape (Z, Y, X) or (Y, X)
        Flooded from low to high (a negated distance map).
    seeds : ndarray of int
        Labelled seed voxels (> 0; zero elsewhere); seeds outside ``mask``
        are dropped.
    mask : ndarray of bool
        Voxels that may be flooded.

    Returns
    -------
    (ndarray of float64, ndarray of uint32, ndarray of int8)
        Shape of ``height`` plus 2 on every axis.
    """
    labels = bordered(seeds, np.uint32)
    inner = (slice(1, -1),) * height.ndim
    labels[inner][~mask] = 0
    return bordered(height, np.float64), labels, bordered(mask, np.int8)


def _kernel_flood(image, labels, mask, markers=None) -> bool:
    """Flood ``labels`` in place with scikit-image's routine; ``False`` when it is not callable so.

    ``markers`` (flat indices into the bordered arrays; default: every
    labelled voxel) are the voxels the flood starts from; labelled voxels
    with no unlabelled neighbour in ``mask`` can be left out without
    changing the result.
    """
    try:
        from skimage.morphology._util import (
            _offsets_to_raveled_neighbors,
            _validate_connectivity,
        )
        from skimage.segmentation import _watershed_cy
    except ImportError:
        return False
    connectivity, offset = _validate_connectivity(image.ndim, 1, None)
    if any(int(o) != 1 for o in offset):
        return False
    neighbours = _offsets_to_raveled_neighbors(image.shape, connectivity, center=offset)
    strides = np.array(image.strides, dtype=np.intp) // image.itemsize
    try:
        starts = np.flatnonzero(labels) if markers is None else np.asarray(markers, np.intp)
        _watershed_cy.watershed_raveled(image.ravel(), starts, neighbours,
                                        mask.ravel(), strides, 0.0, labels.ravel(), False)
    except (TypeError, ValueError):  # another signature or buffer types: nothing was flooded
        return False
    return True


def flood(image: np.ndarray, labels: np.ndarray, mask: np.ndarray, markers=None) -> np.ndarray:
    """Seeded watershed of :func:`flood_arrays`' arrays; the labels without their border.

    ``labels`` is flooded in place: every voxel of ``mask`` that a seed
    reaches takes the label of the seed whose flood reaches it first,
    flooding ``image`` from its lowest values up.

    Returns
    -------
    ndarray of uint32
        A view of ``labels`` without its border.

    ``markers``: as for :func:`_kernel_flood` (the fallback floods from every
    labelled voxel, which gives the same labels).

    Examples
    --------
    >>> import numpy as np
    >>> a = flood_arrays(np.zeros((3, 4)), np.eye(3, 4, dtype=np.uint32), np.ones((3, 4), bool))
    >>> flood(*a).tolist()
    [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]
    """
    inner = (slice(1, -1),) * image.ndim
    if not _kernel_flood(image, labels, mask, markers):
        from skimage.segmentation import watershed

        labels[inner] = watershed(image[inner], labels[inner], mask=mask[inner].astype(bool))
    return labels[inner]
