"""Cracks that lie between particles rather than inside one.

A crack is a gap *inside* a particle: most of the faces of a crack region
touch solid (particle, or a pore it opens into).  A dark gap in the matrix
beside particles (the neck between two touching particles, an electrolyte
pocket in the binder) can look like a surface crack to a network; it then
inflates the damage of crack-free particles.  A model whose card sets
``postprocess.min_crack_solid_contact`` (e.g. 0.5: a crack region must touch
solid on most of its faces) has every connected crack region below that
share relabelled matrix after prediction.  The rule is idempotent and acts on
each crack region as a whole (26-connected), so it never cuts a crack.

Big outputs held in chunks are cleaned chunk by chunk, each chunk read with a
margin; a crack region that reaches further than the margin beyond a chunk
face can be judged on part of its faces there (the margin is sized from the
particle diameter, and crack regions lie within particles).

Examples
--------
>>> import numpy as np
>>> from crackseg.crack_support import drop_unsupported_cracks
>>> seg = np.zeros((1, 9, 12), np.uint8)
>>> seg[0, 2:7, 1:6] = 1           # a particle
>>> seg[0, 4, 2:5] = 2             # a crack inside it
>>> seg[0, 4, 8:11] = 2            # a dark streak out in the matrix
>>> out, removed = drop_unsupported_cracks(seg, min_solid_contact=0.5)
>>> int((out == 2).sum()), removed
(3, 3)
"""

from __future__ import annotations

import math

import numpy as np

from crackseg.labels import NMC4, LabelSchema

CARD_KEY = "min_crack_solid_contact"
"""Key of the threshold under the model card's ``postprocess``."""


def card_threshold(card: dict) -> float | None:
    """The card's ``postprocess.min_crack_solid_contact``, or None (rule off)."""
    value = (card.get("postprocess") or {}).get(CARD_KEY)
    return None if value is None else float(value)


def crack_regions(labels: np.ndarray, schema: LabelSchema = NMC4):
    """Connected crack regions and the share of their faces that touch solid.

    Parameters
    ----------
    labels : ndarray of uint8, shape (Z, Y, X) or (Y, X)
        Segmentation in the schema's values.
    schema : LabelSchema
        Needs ``crack`` and ``particle``; ``pore`` counts as solid when present.

    Returns
    -------
    regions : ndarray of uint32, same shape
        0 outside cracks, 1..N per 26- (8-) connected crack region.
    solid_share : ndarray of float, shape (N + 1,)
        Per region, faces touching particle or pore over faces touching
        anything but crack (1.0 for a region with no such face; entry 0 unused).
    """
    import cc3d

    crack = labels == schema.value("crack")
    regions = cc3d.connected_components(crack, connectivity=26 if labels.ndim == 3 else 8)
    n = int(regions.max())
    solid_values = [schema.value(c) for c in ("particle", "pore") if schema.has(c)]
    solid = np.zeros(n + 1)
    other = np.zeros(n + 1)
    for ax in range(labels.ndim):
        lo = [slice(None)] * labels.ndim
        hi = [slice(None)] * labels.ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        for a, b in ((tuple(lo), tuple(hi)), (tuple(hi), tuple(lo))):
            face = crack[a] & ~crack[b]
            ids = regions[a][face]
            nb_solid = np.isin(labels[b][face], solid_values)
            solid += np.bincount(ids, weights=nb_solid, minlength=n + 1)
            other += np.bincount(ids, weights=~nb_solid, minlength=n + 1)
    total = solid + other
    share = np.divide(solid, total, out=np.ones(n + 1), where=total > 0)
    return regions, share


def drop_unsupported_cracks(labels: np.ndarray, *, min_solid_contact: float,
                            schema: LabelSchema = NMC4, matrix: str = "matrix"):
    """Relabel crack regions that touch solid on too few faces.

    Parameters
    ----------
    labels : ndarray of uint8, shape (Z, Y, X) or (Y, X)
        Segmentation in the schema's values (not modified).
    min_solid_contact : float
        A crack region is kept when at least this share of its faces touch
        particle or pore (:func:`crack_regions`).
    schema : LabelSchema
        Label schema of ``labels``.
    matrix : str
        Class the dropped regions become.

    Returns
    -------
    labels : ndarray of uint8
        The cleaned segmentation (a copy).
    removed : int
        Voxels relabelled.
    """
    regions, share = crack_regions(labels, schema)
    drop = share < float(min_solid_contact)
    drop[0] = False
    mask = drop[regions]
    out = labels.copy()
    out[mask] = schema.value(matrix)
    return out, int(mask.sum())


def cleaning_margin(diameter_vox: float) -> int:
    """Margin (voxels) of chunked cleaning: one particle diameter, at least 32."""
    if not math.isfinite(diameter_vox):
        return 64
    return max(32, int(math.ceil(diameter_vox)))


def clean_in_chunks(labels, chunk, margin: int, *, min_solid_contact: float,
                    schema: LabelSchema = NMC4) -> int:
    """Apply :func:`drop_unsupported_cracks` to a chunked array in place.

    Parameters
    ----------
    labels : array-like with ``shape``, slicing and slice assignment (NumPy, Zarr)
        Segmentation; each chunk is read with ``margin`` voxels of context
        and its core written back.
    chunk : sequence of int
        Core size per axis (voxels).
    margin : int
        Context per side (voxels), see :func:`cleaning_margin`.

    Returns
    -------
    int
        Voxels relabelled.
    """
    import itertools

    shape = labels.shape
    removed = 0
    starts = [range(0, s, c) for s, c in zip(shape, chunk)]
    for origin in itertools.product(*starts):
        core = tuple(slice(o, min(o + c, s)) for o, c, s in zip(origin, chunk, shape))
        ext = tuple(slice(max(0, c.start - margin), min(s, c.stop + margin))
                    for c, s in zip(core, shape))
        block = np.asarray(labels[ext])
        if not (block == schema.value("crack")).any():
            continue
        cleaned, _ = drop_unsupported_cracks(block, min_solid_contact=min_solid_contact,
                                             schema=schema)
        inner = tuple(slice(c.start - e.start, c.stop - e.start) for c, e in zip(core, ext))
        changed = int((cleaned[inner] != block[inner]).sum())
        if changed:
            labels[core] = cleaned[inner]
            removed += changed
    return removed
