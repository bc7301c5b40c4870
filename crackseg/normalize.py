"""Input intensity normalisation, as recorded in a model card.

A model card's ``normalization`` entry says how grey values are mapped before
they enter the network.  The default maps each volume's 1st and 99th
percentile to 0 and 1 (``mode: "per_volume"``), so that models do not depend
on the detector's grey-value range; training also records the mean range it
saw (``reference``) and its spread, which tells whether a new image's raw
range is unusual.

Examples
--------
>>> import numpy as np
>>> from crackseg.normalize import normalize_image, fit_normalization
>>> img = np.linspace(0, 100, 1000, dtype=np.float32).reshape(10, 10, 10)
>>> out = normalize_image(img)
>>> bool(np.isclose(np.percentile(out, 1), 0, atol=1e-6)), bool(np.isclose(np.percentile(out, 99), 1))
(True, True)
>>> round(fit_normalization([img])["reference"]["low"], 2)
1.0
"""

from __future__ import annotations

import numpy as np

from crackseg.errors import InputError

DEFAULT_NORMALIZATION = {"method": "percentile", "mode": "per_volume", "percentiles": [1.0, 99.0]}
"""Normalisation used when a card or recipe does not say otherwise."""

_SAMPLE_VOXELS = 2_000_000


def percentile_range(image, percentiles=(1.0, 99.0), *, max_voxels: int = _SAMPLE_VOXELS,
                     seed: int = 0) -> tuple[float, float]:
    """Low and high grey values at the given percentiles of an image.

    Parameters
    ----------
    image : array_like, shape (Z, Y, X) or (Y, X)
        Grey values (any dtype).
    percentiles : pair of float
        Lower and upper percentile (0..100).
    max_voxels : int
        Images with more voxels are estimated from a seeded random subset.
    seed : int
        Seed of that subset.

    Returns
    -------
    (float, float)
        Grey values at the two percentiles.
    """
    a = np.asarray(image).ravel()
    if a.size == 0:
        raise InputError("cannot normalise an empty image")
    if a.size > max_voxels:
        a = a[np.random.default_rng(seed).integers(0, a.size, max_voxels)]
    lo, hi = np.percentile(a.astype(np.float64), [float(percentiles[0]), float(percentiles[1])])
    return float(lo), float(hi)


def resolved(normalization: dict | None) -> dict:
    """A card's ``normalization`` entry with defaults filled in and its method checked."""
    norm = {**DEFAULT_NORMALIZATION, **(normalization or {})}
    if norm.get("method") != "percentile":
        raise InputError(f"unknown normalisation method {norm.get('method')!r}")
    return norm


def fixed_range(normalization: dict | None) -> tuple[float, float] | None:
    """The stored (low, high) of ``mode: "fixed"``, or ``None`` for per-volume percentiles.

    ``range`` is used, or else ``reference`` ``low``/``high``.
    """
    norm = resolved(normalization)
    if norm.get("mode", "per_volume") != "fixed":
        return None
    ref = norm.get("reference") or {}
    rng = norm.get("range") or ([ref["low"], ref["high"]] if "low" in ref and "high" in ref
                                else None)
    if not rng:
        raise InputError("fixed normalisation needs a 'range': [low, high]")
    return float(rng[0]), float(rng[1])


def normalize_image(image, normalization: dict | None = None) -> np.ndarray:
    """Map grey values to the network's input range (float32).

    Parameters
    ----------
    image : array_like, shape (Z, Y, X) or (Y, X)
        Grey values.
    normalization : dict, optional
        A model card's ``normalization`` entry; default
        :data:`DEFAULT_NORMALIZATION`.  ``mode: "per_volume"`` maps this
        image's percentiles to 0..1; ``mode: "fixed"`` maps the recorded
        ``range`` (low, high) to 0..1.

    Returns
    -------
    numpy.ndarray of float32, same shape
        Normalised image (not clipped).
    """
    a = np.asarray(image, dtype=np.float32)
    fixed = fixed_range(normalization)
    if fixed is not None:
        lo, hi = fixed
    else:
        lo, hi = percentile_range(a, resolved(normalization).get("percentiles", (1.0, 99.0)))
    scale = hi - lo
    if not np.isfinite(scale) or scale <= 0:
        scale = 1.0
    return (a - np.float32(lo)) / np.float32(scale)


def fit_normalization(images, percentiles=(1.0, 99.0), *, mode: str = "per_volume") -> dict:
    """Normalisation record fitted on training images.

    Parameters
    ----------
    images : iterable of array_like
        Training images (raw grey values, ZYX or YX).
    percentiles : pair of float
        Percentiles mapped to 0 and 1.
    mode : {"per_volume", "fixed"}
        Whether inference uses each image's own percentiles or the fitted
        reference values.

    Returns
    -------
    dict
        ``{"method", "mode", "percentiles", "range": [low, high],
        "reference": {"low", "high", "low_std", "high_std", "n_images"}}`` for
        the model card; ``range`` is the mean fitted range, used when ``mode``
        is ``"fixed"``.
    """
    ranges = np.array([percentile_range(im, percentiles) for im in images], dtype=np.float64)
    if ranges.size == 0:
        raise InputError("no training images to fit the normalisation on")
    low, high = round(float(ranges[:, 0].mean()), 6), round(float(ranges[:, 1].mean()), 6)
    return {
        "method": "percentile",
        "mode": mode,
        "percentiles": [float(percentiles[0]), float(percentiles[1])],
        "range": [low, high],
        "reference": {
            "low": low,
            "high": high,
            "low_std": round(float(ranges[:, 0].std()), 6),
            "high_std": round(float(ranges[:, 1].std()), 6),
            "n_images": int(len(ranges)),
        },
    }
