"""The per-particle truth table of a phantom, counted from its label volumes.

Examples
--------
>>> import numpy as np
>>> lab = np.zeros((6, 6, 6), np.uint8); lab[1:5, 1:5, 1:5] = 1; lab[2, 1:5, 1:5] = 2
>>> inst = (lab > 0).astype(np.uint32)
>>> t = truth_table(lab, inst, (0.5, 0.5, 0.5))
>>> float(t.loc[0, "crack_fraction"])
0.25
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

FRAGMENT_MIN_SHARE = 0.05
"""A particle is ``fragmented`` when its solid falls apart into pieces and the
second largest holds at least this share of the solid voxels."""


def _counts(inst, n, where=None):
    v = inst if where is None else inst[where]
    return np.bincount(v.ravel(), minlength=n + 1)[1:].astype(np.int64)


def envelope_boundary(instances: np.ndarray) -> np.ndarray:
    """Voxels with a 6-neighbour of another instance (or matrix); ZYX bool array.

    The faces of the volume do not count as a boundary.
    """
    out = np.zeros(instances.shape, bool)
    for ax in range(instances.ndim):
        a = [slice(None)] * instances.ndim
        b = [slice(None)] * instances.ndim
        a[ax], b[ax] = slice(1, None), slice(None, -1)
        diff = instances[tuple(a)] != instances[tuple(b)]
        out[tuple(a)] |= diff
        out[tuple(b)] |= diff
    return out


def truth_table(labels: np.ndarray, instances: np.ndarray, voxel_size_um) -> pd.DataFrame:
    """Per-particle quantities counted from labels within instances.

    Parameters
    ----------
    labels : ndarray of uint8, shape (Z, Y, X)
        nmc4 labels (0 matrix, 1 particle, 2 crack, 3 pore).
    instances : ndarray of uint32, shape (Z, Y, X)
        Particle envelopes, 0 = matrix, ``k`` = particle ``k``.
    voxel_size_um : tuple of float
        Voxel size (z, y, x) in micrometres.

    Returns
    -------
    pandas.DataFrame
        One row per particle present: ``label, volume_vox, volume_um3,
        equivalent_diameter_um, centroid_z, centroid_y, centroid_x`` (voxels),
        ``depth_um, crack_fraction, pore_fraction, void_fraction,
        touches_border, fragmented, internal_only_cracks``.
    """
    vs = np.asarray(voxel_size_um, dtype=float)
    n = int(instances.max()) if instances.size else 0
    vol = _counts(instances, n)
    crack = _counts(instances, n, labels == 2)
    pore = _counts(instances, n, labels == 3)
    present = np.flatnonzero(vol > 0)
    ids = present + 1
    vol, crack, pore = vol[present], crack[present], pore[present]
    cent = np.array(ndi.center_of_mass(np.ones(instances.shape, np.uint8), instances, ids)).reshape(-1, 3)

    border = np.zeros(n + 1, bool)
    for ax in range(3):
        for sl in (0, -1):
            face = np.take(instances, sl, axis=ax)
            border[np.unique(face)] = True

    crack_at_surface = _counts(instances, n, envelope_boundary(instances) & (labels == 2))[present]

    fragmented = np.zeros(len(ids), bool)
    objects = ndi.find_objects(instances)
    for j, k in enumerate(ids):
        if crack[j] == 0:
            continue
        sl = objects[k - 1]
        solid = (instances[sl] == k) & (labels[sl] == 1)
        comp, nc = ndi.label(solid)
        if nc > 1:
            sizes = np.sort(np.bincount(comp.ravel())[1:])[::-1]
            fragmented[j] = sizes[1] >= FRAGMENT_MIN_SHARE * sizes.sum()

    vox_um3 = float(np.prod(vs))
    vol_um3 = vol * vox_um3
    return pd.DataFrame({
        "label": ids.astype(np.int64),
        "volume_vox": vol,
        "volume_um3": vol_um3,
        "equivalent_diameter_um": np.cbrt(6.0 * vol_um3 / np.pi),
        "centroid_z": cent[:, 0],
        "centroid_y": cent[:, 1],
        "centroid_x": cent[:, 2],
        "depth_um": cent[:, 0] * vs[0],
        "crack_fraction": crack / vol,
        "pore_fraction": pore / vol,
        "void_fraction": (crack + pore) / vol,
        "touches_border": border[ids],
        "fragmented": fragmented,
        "internal_only_cracks": (crack > 0) & (crack_at_surface == 0),
    })
