"""Distribution of a per-particle quantity with confidence intervals.

Which particles count (border-truncated ones excluded, Miles-Lantuejoul
weighted, or all) is decided by :func:`population`; the statistics (mean,
median, quantiles, fractions above thresholds, histogram) come from one set
of bootstrap resamples (:func:`crackseg.stats.bootstrap.bootstrap_many`), so
their intervals are mutually consistent.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> d = distribution_statistics(rng.beta(1, 20, 300), method="iid", n_resamples=500)
>>> sorted(d)[:4]
['fraction_above_0.01', 'fraction_above_0.05', 'histogram', 'mean']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crackseg.errors import InputError
from crackseg.stats.bootstrap import bootstrap_many, stat_name

BORDER_POLICIES = ("exclude", "miles", "include")
DEFAULT_THRESHOLDS = (0.01, 0.05)
DEFAULT_QUANTILES = (0.1, 0.25, 0.75, 0.9)


def population(table: pd.DataFrame, border: str = "exclude") -> tuple[np.ndarray, np.ndarray, str]:
    """Which particles enter the statistics, and with what weight.

    Parameters
    ----------
    table : pandas.DataFrame
        Per-particle table (needs ``touches_border``; ``miles`` also needs the
        bounding box columns and ``table.attrs["shape"]`` or the bbox maxima).
    border : {"exclude", "miles", "include"}
        ``exclude``: drop particles truncated by the field of view (the
        default); ``miles``: drop them and weight the rest by the
        Miles-Lantuejoul factor ``1 / prod(L_a - d_a)`` (L volume size, d bbox
        extent per axis), which removes the bias of exclusion against large
        particles; ``include``: keep all, unweighted (truncated particles
        are measured on their visible part).

    Returns
    -------
    mask : numpy.ndarray of bool, shape (n,)
    weights : numpy.ndarray of float, shape (mask.sum(),)
        Mean 1 over the kept particles.
    description : str
    """
    if border not in BORDER_POLICIES:
        raise InputError(f"border policy {border!r} must be one of {', '.join(BORDER_POLICIES)}")
    touches = table["touches_border"].to_numpy(dtype=bool)
    if border == "include":
        mask = np.ones(len(table), bool)
        return mask, np.ones(int(mask.sum())), "all particles, border-truncated ones included unweighted"
    mask = ~touches
    if border == "exclude":
        return mask, np.ones(int(mask.sum())), "border-truncated particles excluded"
    axes = [a for a in "zyx" if f"bbox_{a}0" in table]  # zyx for a volume, yx for a section
    hi_cols, lo_cols = [f"bbox_{a}1" for a in axes], [f"bbox_{a}0" for a in axes]
    shape = np.asarray(table.attrs.get("shape") or table[hi_cols].max().to_numpy(),
                       dtype=np.float64)
    ext = (table[hi_cols].to_numpy(np.float64) - table[lo_cols].to_numpy(np.float64))[mask]
    room = np.prod(np.maximum(shape[None, :] - ext, 1.0), axis=1)
    w = 1.0 / room
    w = w / w.mean() if w.size else w
    return mask, w, ("border-truncated particles excluded; the rest Miles-Lantuejoul weighted "
                     "(1 / prod(L - d)) to undo the exclusion's bias against large particles")


def distribution_statistics(values, *, coords=None, block_size: float | None = None, extent=None,
                            method: str = "block", weights=None, thresholds=DEFAULT_THRESHOLDS,
                            quantiles=DEFAULT_QUANTILES, histogram_edges=None,
                            confidence: float = 0.95, n_resamples: int = 2000,
                            seed: int | None = 0, unit: str = "um", posterior=None,
                            cross_block_range: float | None = None,
                            depth_axis: int | None = 0) -> dict:
    """Mean, median, quantiles, fractions above thresholds and histogram, each with a CI.

    Parameters
    ----------
    values : array_like, shape (n,)
        One value per particle (NaN not allowed).
    coords : array_like, shape (n, 3), optional
        Centroids (z, y, x) for the block bootstrap.
    block_size, extent, method, weights, confidence, n_resamples, seed, unit, posterior
    cross_block_range, depth_axis
        See :func:`crackseg.stats.bootstrap.bootstrap_many`.
    thresholds : sequence of float
        Report the fraction of particles with value above each.
    quantiles : sequence of float
    histogram_edges : array_like, optional
        Bin edges (default: 20 bins from 0 to the largest value).

    Returns
    -------
    dict
        ``mean``, ``median``, ``quantile_<q>``, ``fraction_above_<t>`` (each an
        :class:`~crackseg.stats.bootstrap.Interval` as a dict), ``std``, and
        ``histogram`` (``edges``, ``fraction``, ``ci_low``, ``ci_high``).
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise InputError("no particles to summarise")
    specs = ["mean", "median"] + [("quantile", float(q)) for q in quantiles] + \
        [("fraction_above", float(t)) for t in thresholds]
    if histogram_edges is None:
        top = float(v.max()) if v.max() > 0 else 1.0
        histogram_edges = np.linspace(0.0, top * (1 + 1e-9), 21)
    edges = np.asarray(histogram_edges, dtype=np.float64)
    common = dict(method=method, coords=coords, block_size=block_size, extent=extent,
                  weights=weights, n_resamples=n_resamples, confidence=confidence, seed=seed,
                  unit=unit, cross_block_range=cross_block_range, depth_axis=depth_axis)
    if posterior is None:
        res = bootstrap_many(v, specs + [("histogram", edges)], **common)
        hist, hist_note = res[-1], "particle sampling"
    else:
        res = bootstrap_many(v, specs, posterior=posterior, **common)
        # Per-bin intervals from particle sampling alone: posterior samples move
        # particles between bins, which the scalar statistics above account for.
        hist = bootstrap_many(v, [("histogram", edges)], **common)[0]
        hist_note = "particle sampling only (segmentation uncertainty not included per bin)"
    out = {stat_name(s): r.to_dict() for s, r in zip(specs, res)}
    out["std"] = float(v.std(ddof=1)) if v.size > 1 else None
    out["histogram"] = {
        "edges": edges.tolist(),
        "fraction": [h.estimate for h in hist],
        "ci_low": [h.ci[0] if h.ci else None for h in hist],
        "ci_high": [h.ci[1] if h.ci else None for h in hist],
        "intervals_from": hist_note,
    }
    return out
