"""Particle size in voxels: estimate it from grey values and match it to a model's range.

A network learns features at the scale it was trained on: particles 100 voxels
across look like a texture to a model trained on particles 20-40 voxels across.
The model card records the particle size its training data had (as measured by
:func:`particle_diameter_vox` on rendered training images), and ``predict``
resamples an input whose particles lie outside that range, then maps the result
back to the input grid.

The estimate: smooth, split bright (particle) from dark with Otsu's threshold,
close thin gaps (cracks) and fill enclosed voids smaller than a third of the
particle diameter (found by iterating), and take twice the median inscribed radius at the
maxima of the Euclidean distance map, over a few sections (YX) of the input.
It is a granulometry, not a segmentation: it is meant to be right within
about 30 %, which is what choosing a scale needs.

Examples
--------
>>> import numpy as np
>>> from crackseg.scale import particle_diameter_vox
>>> yy, xx = np.mgrid[:96, :96]
>>> img = (((yy - 30) ** 2 + (xx - 30) ** 2 < 15 ** 2) | ((yy - 65) ** 2 + (xx - 62) ** 2 < 15 ** 2))
>>> 24 < particle_diameter_vox(img.astype(np.float32)) < 36
True
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from crackseg.errors import InputError

SCALE_MODES = ("auto", "none")
MIN_HOLE_AREA = 300.0
"""Enclosed dark regions up to this area (pixels) count as voids inside a particle."""
MIN_RADIUS_VOX = 2.0
"""Distance-map maxima below this radius (voxels) are noise or binder specks."""


def _sections(image, n: int = 5, max_side: int = 1024):
    """Up to ``n`` evenly spaced YX sections (float32), each at most ``max_side`` a side."""
    a = image
    if a.ndim == 2:
        secs = [np.asarray(a)]
    else:
        z = a.shape[0]
        idx = np.unique(np.linspace(z * 0.2, z * 0.8, n).astype(int).clip(0, z - 1))
        secs = [np.asarray(a[int(i)]) for i in idx]
    out = []
    for s in secs:
        s = np.asarray(s, dtype=np.float32)
        y0 = max(0, (s.shape[0] - max_side) // 2)
        x0 = max(0, (s.shape[1] - max_side) // 2)
        out.append(s[y0:y0 + max_side, x0:x0 + max_side])
    return out


def _fill_small_holes(mask: np.ndarray, max_area: float) -> np.ndarray:
    holes, n = ndi.label(~mask)
    if n == 0:
        return mask
    sizes = np.bincount(holes.ravel())
    small = sizes <= max_area
    small[0] = False
    return mask | small[holes]


def _section_radii(sec: np.ndarray, hole_area: float) -> np.ndarray:
    """Inscribed radii at the distance-map maxima of the bright phase of one section."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk
    from skimage.segmentation import clear_border

    finite = np.isfinite(sec)
    if finite.mean() < 0.5:
        return np.array([])
    s = np.where(finite, sec, np.nanmedian(sec[finite]))
    s = ndi.gaussian_filter(s, 1.0)
    try:
        mask = s > threshold_otsu(s)
    except ValueError:
        return np.array([])
    mask = ndi.binary_closing(mask, disk(2), border_value=0)
    mask = _fill_small_holes(mask, hole_area)     # central voids and enclosed cracks
    mask = clear_border(ndi.binary_opening(mask, disk(1)))
    if not mask.any():
        return np.array([])
    dist = ndi.distance_transform_edt(mask)
    peaks = (dist == ndi.maximum_filter(dist, size=5)) & (dist >= MIN_RADIUS_VOX)
    return dist[peaks]


def _diameter(sections, hole_area: float) -> float:
    radii = np.concatenate([_section_radii(s, hole_area) for s in sections] or [np.array([])])
    if radii.size == 0:
        return float("nan")
    # a particle yields one large maximum and a few small ones at its lobes: keep the large
    big = radii[radii >= 0.5 * np.quantile(radii, 0.9)]
    return float(2.0 * np.median(big))


def particle_diameter_vox(image) -> float:
    """Typical particle diameter in voxels (or pixels) from grey values.

    Parameters
    ----------
    image : array_like, shape (Z, Y, X) or (Y, X)
        Grey values, particles brighter than the matrix (lazy arrays are read
        a few sections at a time).

    Returns
    -------
    float
        Twice the median inscribed radius over distance-map maxima, or NaN
        when no particle-like region is found.
    """
    sections = _sections(image)
    d = _diameter(sections, MIN_HOLE_AREA)
    for _ in range(2):   # fill internal voids up to a third of the current diameter across
        if not np.isfinite(d):
            break
        d = _diameter(sections, max(MIN_HOLE_AREA, np.pi * (d / 3.0) ** 2))
    return d


def training_diameter_range(card: dict) -> tuple[float, float] | None:
    """The (low, high) particle diameter in voxels a model was trained on, if its card says."""
    dom = card.get("training_domain") or {}
    r = dom.get("particle_diameter_vox")
    if not r:
        return None
    return float(r[0]), float(r[1])


def scale_factor(scale, diameter_vox: float, card: dict) -> float:
    """Resampling factor for an input (>1 enlarges) under ``--scale``.

    Parameters
    ----------
    scale : {"auto", "none"} or float
        ``"none"``: 1; a number: that factor; ``"auto"``: bring the input's
        particle diameter to the centre (geometric mean) of the model's range
        when it lies outside that range, else 1.
    diameter_vox : float
        Estimated particle diameter of the input (voxels).
    card : dict
        Model card.
    """
    if isinstance(scale, str) and scale not in SCALE_MODES:
        try:
            scale = float(scale)
        except ValueError:
            raise InputError(f"--scale {scale!r}: use auto, none or a positive number") from None
    if scale == "none":
        return 1.0
    if not isinstance(scale, str):
        if not np.isfinite(scale) or scale <= 0:
            raise InputError(f"--scale {scale}: a scale factor must be a positive number")
        return float(scale)
    rng = training_diameter_range(card)
    if rng is None or not np.isfinite(diameter_vox) or diameter_vox <= 0:
        return 1.0
    lo, hi = rng
    if lo <= diameter_vox <= hi:
        return 1.0
    return float(np.sqrt(lo * hi) / diameter_vox)


def resample(a: np.ndarray, shape, order: int) -> np.ndarray:
    """Resample ``a`` to ``shape`` (order 0 for labels, 1 for grey values or probabilities)."""
    factors = [t / s for t, s in zip(shape, a.shape)]
    out = ndi.zoom(a, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):
        pads = [(0, max(0, t - o)) for t, o in zip(shape, out.shape)]
        out = np.pad(out, pads, mode="edge")[tuple(slice(0, t) for t in shape)]
    return out
