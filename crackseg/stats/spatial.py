"""Spatial heterogeneity of particle damage: depth profile, autocorrelation, hot spots.

Particles are points at their centroids (z, y, x), in µm when the voxel size
is known (else voxels); values are one number per particle (usually
``crack_fraction``).

* :func:`depth_profile` - mean damage in slabs through the electrode
  thickness, each with a bootstrap CI.
* :func:`morans_i` - global Moran's I on a k-nearest-neighbour graph, with a
  permutation p-value (:func:`scipy.stats.permutation_test`), or, above
  :data:`MORAN_PERMUTATION_MAX_N` particles, a normal p-value from the exact
  randomisation moments.
* :func:`variogram` and :func:`fit_variogram` - empirical semivariogram of
  damage between particle pairs; an exponential
  ``nugget + sill * (1 - exp(-h / L))`` and a squared-exponential model
  ``nugget + sill * (1 - exp(-h^2 / (2 L^2)))`` are fitted with
  :func:`scipy.optimize.curve_fit` and the better kept; ``L`` is the
  correlation length, and the correlation range (:func:`covariance_range`)
  the radius holding 95 % of the model's covariance mass.
* :func:`hot_spots` - Getis-Ord Gi* z-scores on a distance band, FDR-controlled,
  grouped into connected clusters.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> xyz = rng.random((300, 3)) * 100
>>> r = morans_i(rng.random(300), xyz, n_permutations=199, seed=0)
>>> abs(r["I"] - r["expected"]) < 0.1
True
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import optimize, sparse, stats
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from crackseg.errors import InputError
from crackseg.stats.bootstrap import bootstrap_ci

#: Above this many particles :func:`morans_i` tests against the normal law with
#: the exact randomisation moments instead of random relabellings.
MORAN_PERMUTATION_MAX_N = 20000


def knn_weights(coords, k: int = 8) -> sparse.csr_matrix:
    """Binary k-nearest-neighbour weights (n, n), self excluded.

    Parameters
    ----------
    coords : array_like, shape (n, 3)
        Particle centroids (z, y, x).
    k : int
        Neighbours per particle (at most n - 1).
    """
    c = np.asarray(coords, dtype=np.float64)
    n = c.shape[0]
    k = int(min(k, n - 1))
    _, idx = cKDTree(c).query(c, k=k + 1)
    rows = np.repeat(np.arange(n), k)
    cols = idx[:, 1:].ravel()
    return sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))


def distance_weights(coords, distance: float, *, include_self: bool = False) -> sparse.csr_matrix:
    """Binary weights (n, n) linking particles closer than ``distance``."""
    c = np.asarray(coords, dtype=np.float64)
    n = c.shape[0]
    pairs = cKDTree(c).query_pairs(float(distance), output_type="ndarray")
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    if include_self:
        rows = np.concatenate([rows, np.arange(n)])
        cols = np.concatenate([cols, np.arange(n)])
    return sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))


def morans_i(values, coords, *, k: int = 8, n_permutations: int = 999, seed: int | None = 0,
             weights: sparse.spmatrix | None = None, test: str = "auto") -> dict:
    """Global Moran's I of particle values on a neighbour graph.

    Parameters
    ----------
    values : array_like, shape (n,)
    coords : array_like, shape (n, 3)
        Centroids (z, y, x).
    k : int
        Neighbours per particle of the (binary, row-standardised) kNN graph.
    n_permutations : int
        Random relabellings for the p-value.
    seed : int or None
    weights : sparse matrix (n, n), optional
        Spatial weights to use instead of the kNN graph.
    test : {"auto", "permutation", "normal"}
        How ``z`` and ``p_value`` are found: from ``n_permutations`` random
        relabellings (:func:`scipy.stats.permutation_test`), or from the
        normal law with the exact mean and variance of ``I`` over all
        relabellings (Cliff and Ord's randomisation moments, which the
        permutation distribution estimates).  ``auto`` permutes up to
        :data:`MORAN_PERMUTATION_MAX_N` particles; beyond, the permutation
        distribution is normal to well within its own Monte Carlo error and
        relabelling 10^5 particles a thousand times would dominate the run time.

    Returns
    -------
    dict
        ``I``, ``expected`` (= -1/(n-1) without autocorrelation), ``z``
        (relative to the null distribution), ``p_value`` (one-sided,
        positive autocorrelation), ``n``, ``k``, ``n_permutations`` (0 for
        the normal test), ``seed``, ``test``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> xyz = rng.random((500, 3)) * 100
    >>> r = morans_i(xyz[:, 0] + rng.normal(0, 20, 500), xyz, test="normal")
    >>> r["test"], r["z"] > 3
    ('normal, randomisation moments', True)
    """
    if test not in ("auto", "permutation", "normal"):
        raise InputError(f"Moran's I test {test!r} must be 'auto', 'permutation' or 'normal'")
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n < 3:
        return {"I": None, "expected": None, "p_value": None, "n": int(n),
                "note": "Moran's I needs at least three particles"}
    w = knn_weights(coords, k) if weights is None else sparse.csr_matrix(weights)
    rs = np.asarray(w.sum(axis=1)).ravel()
    w = sparse.diags(1.0 / np.where(rs > 0, rs, 1.0)) @ w
    s0 = float(w.sum())
    if test == "normal" or (test == "auto" and n > MORAN_PERMUTATION_MAX_N):
        if np.ptp(x) == 0:
            return {"I": None, "expected": -1.0 / (n - 1), "p_value": None, "n": int(n),
                    "note": "all values equal: Moran's I undefined"}
        return _morans_i_normal(x, w, s0, k=int(min(k, n - 1)), seed=seed)

    def moran(v, axis=-1):
        v = np.moveaxis(np.asarray(v, dtype=np.float64), axis, -1)
        z = v - v.mean(axis=-1, keepdims=True)
        z2 = z.reshape(-1, n)
        num = np.einsum("ij,ij->i", z2, (w @ z2.T).T)
        den = np.einsum("ij,ij->i", z2, z2)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (n / s0) * num / den
        return out.reshape(z.shape[:-1])

    if np.ptp(x) == 0:
        return {"I": None, "expected": -1.0 / (n - 1), "p_value": None, "n": int(n),
                "note": "all values equal: Moran's I undefined"}
    res = stats.permutation_test((x,), moran, permutation_type="pairings", vectorized=True,
                                 n_resamples=n_permutations, alternative="greater", rng=seed,
                                 batch=max(1, int(2e7 // n)))
    null = np.asarray(res.null_distribution)
    sd = float(null.std(ddof=1))
    return {"I": float(res.statistic), "expected": -1.0 / (n - 1),
            "z": float((res.statistic - null.mean()) / sd) if sd > 0 else None,
            "p_value": float(res.pvalue), "n": int(n), "k": int(min(k, n - 1)),
            "n_permutations": int(n_permutations), "seed": seed, "weights": "kNN, row-standardised",
            "test": "permutation"}


def _morans_i_normal(x: np.ndarray, w: sparse.csr_matrix, s0: float, *, k: int,
                     seed: int | None) -> dict:
    """Moran's I with ``z`` and ``p_value`` from the randomisation mean and variance.

    ``Var(I) = [n((n^2 - 3n + 3) S1 - n S2 + 3 S0^2) - b2((n^2 - n) S1 - 2n S2
    + 6 S0^2)] / ((n - 1)(n - 2)(n - 3) S0^2) - E(I)^2`` with
    ``S1 = sum (w_ij + w_ji)^2 / 2``, ``S2 = sum_i (w_i. + w_.i)^2`` and the
    kurtosis ``b2 = n sum z^4 / (sum z^2)^2`` (Cliff and Ord, 1981): the exact
    moments over all relabellings of the values.
    """
    n = x.size
    z = x - x.mean()
    m2 = float(z @ z)
    stat = float((n / s0) * (z @ (w @ z)) / m2)
    s1 = 0.5 * float((w + w.T).power(2).sum())
    s2 = float(((np.asarray(w.sum(axis=1)).ravel() + np.asarray(w.sum(axis=0)).ravel()) ** 2).sum())
    b2 = n * float((z ** 4).sum()) / m2 ** 2
    expected = -1.0 / (n - 1)
    var = ((n * ((n * n - 3 * n + 3) * s1 - n * s2 + 3 * s0 ** 2)
            - b2 * ((n * n - n) * s1 - 2 * n * s2 + 6 * s0 ** 2))
           / ((n - 1) * (n - 2) * (n - 3) * s0 ** 2) - expected ** 2)
    zscore = float((stat - expected) / np.sqrt(var)) if var > 0 else None
    return {"I": stat, "expected": expected, "z": zscore,
            "p_value": float(stats.norm.sf(zscore)) if zscore is not None else None,
            "n": int(n), "k": k, "n_permutations": 0, "seed": seed,
            "weights": "kNN, row-standardised", "test": "normal, randomisation moments"}


def variogram(values, coords, *, n_bins: int = 15, max_distance: float | None = None,
              max_points: int = 4000, seed: int | None = 0) -> pd.DataFrame:
    """Empirical semivariogram of particle values.

    ``gamma(h) = 0.5 * mean((v_i - v_j)^2)`` over particle pairs whose
    centroid distance falls in each bin.

    Parameters
    ----------
    values : array_like, shape (n,)
    coords : array_like, shape (n, 3)
        Centroids (z, y, x) in µm (or voxels).
    n_bins : int
        Equal-width distance bins from 0 to ``max_distance``.
    max_distance : float, optional
        Largest pair distance (default: half the largest extent of the
        particle cloud).
    max_points : int
        Above this many particles a seeded random subset is used (pairs grow
        as n²).
    seed : int or None

    Returns
    -------
    pandas.DataFrame
        Columns ``distance`` (mean pair distance in the bin), ``bin_lo``,
        ``bin_hi``, ``semivariance``, ``n_pairs``; empty bins dropped.
    """
    x = np.asarray(values, dtype=np.float64)
    c = np.asarray(coords, dtype=np.float64)
    if x.size > max_points:
        keep = np.random.default_rng(seed).choice(x.size, max_points, replace=False)
        x, c = x[keep], c[keep]
    if max_distance is None:
        max_distance = 0.5 * float(np.ptp(c, axis=0).max()) if x.size > 1 else 0.0
    cols = ["distance", "bin_lo", "bin_hi", "semivariance", "n_pairs"]
    if x.size < 2 or max_distance <= 0:
        return pd.DataFrame(columns=cols)
    pairs = cKDTree(c).query_pairs(float(max_distance), output_type="ndarray")
    if pairs.size == 0:
        return pd.DataFrame(columns=cols)
    d = np.linalg.norm(c[pairs[:, 0]] - c[pairs[:, 1]], axis=1)
    sq = 0.5 * (x[pairs[:, 0]] - x[pairs[:, 1]]) ** 2
    edges = np.linspace(0.0, max_distance, n_bins + 1)
    b = np.clip(np.digitize(d, edges) - 1, 0, n_bins - 1)
    cnt = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        gam = np.bincount(b, weights=sq, minlength=n_bins) / cnt
        dm = np.bincount(b, weights=d, minlength=n_bins) / cnt
    df = pd.DataFrame({"distance": dm, "bin_lo": edges[:-1], "bin_hi": edges[1:],
                       "semivariance": gam, "n_pairs": cnt})
    return df[df["n_pairs"] > 0].reset_index(drop=True)


def exponential_variogram(h, nugget, sill, length):
    """Exponential model ``nugget + sill * (1 - exp(-h / length))``."""
    return nugget + sill * (1.0 - np.exp(-np.asarray(h) / length))


def squared_exponential_variogram(h, nugget, sill, length):
    """Squared-exponential (Gaussian) model ``nugget + sill * (1 - exp(-h^2 / (2 length^2)))``."""
    return nugget + sill * (1.0 - np.exp(-0.5 * (np.asarray(h) / length) ** 2))


#: Variogram models :func:`fit_variogram` chooses from, by name.
VARIOGRAM_MODELS = {"exponential": exponential_variogram,
                    "squared_exponential": squared_exponential_variogram}

#: Share of the covariance mass the correlation range holds (:func:`covariance_range`).
RANGE_MASS = 0.95


def covariance_range(model: str, length: float, mass: float = RANGE_MASS, dim: int = 3) -> float:
    """Radius of the ball that holds ``mass`` of a covariance's integral in ``dim`` dimensions.

    The variance of a mean over a volume sums the covariance over all pairs
    of points, i.e. integrates ``C(h) 4 pi h^2`` over the distance ``h`` (in
    a plane section ``C(h) 2 pi h``).  The radius holding a share ``mass``
    of that integral is a gamma quantile (shape ``dim``) of ``length`` for
    the exponential covariance ``exp(-h / L)`` and a chi quantile (``dim``
    degrees of freedom) of ``length`` for the squared exponential
    ``exp(-h^2 / (2 l^2))``.  In 3-D three lengths hold 58 % of an
    exponential's mass but 97 % of a squared exponential's, so a fixed
    multiple of the length cannot serve both.

    Parameters
    ----------
    model : {"exponential", "squared_exponential"}
    length : float
        The model's length (``L`` or ``l``).
    mass : float
        Share of the covariance integral inside the radius (0..1).
    dim : int
        Dimension of the particle positions (3 for volumes, 2 for sections).

    Returns
    -------
    float

    Examples
    --------
    >>> round(covariance_range("exponential", 1.0), 2), round(covariance_range("squared_exponential", 1.0), 2)
    (6.3, 2.8)
    """
    if model == "exponential":
        return float(length * stats.gamma.ppf(mass, dim))
    if model == "squared_exponential":
        return float(length * np.sqrt(stats.chi2.ppf(mass, dim)))
    raise InputError(f"unknown variogram model {model!r}")


def model_variogram(h, fit: dict) -> np.ndarray:
    """Semivariance of a fitted model (a :func:`fit_variogram` result) at distances ``h``."""
    return VARIOGRAM_MODELS[fit["model"]](h, fit["nugget"], fit["sill"], fit["correlation_length"])


def fit_variogram(vg: pd.DataFrame, *, min_length: float | None = None,
                  models=tuple(VARIOGRAM_MODELS), mass: float = RANGE_MASS,
                  dim: int = 3) -> dict:
    """Fit variogram models to an empirical variogram and keep the one that fits best.

    Each model (three parameters each) is fitted by weighted least squares
    (weights: pairs per bin); the one with the smaller weighted residual sum
    of squares is kept.

    Parameters
    ----------
    vg : pandas.DataFrame
        Output of :func:`variogram`.
    min_length : float, optional
        Lower bound of the fitted length (default: the first bin's upper
        edge / 10).
    models : sequence of str
        Names in :data:`VARIOGRAM_MODELS`.
    mass : float
        Share of the covariance mass the ``correlation_range`` holds.
    dim : int
        Dimension of the particle positions.

    Returns
    -------
    dict
        ``model`` (the chosen one), ``nugget``, ``sill`` (partial sill),
        ``correlation_length`` (the model's length: ``L`` of ``exp(-h / L)``
        or ``l`` of ``exp(-h^2 / (2 l^2))``), ``practical_range`` (where the
        correlation falls to 5 %), ``correlation_range`` (radius holding
        ``mass`` of the covariance, :func:`covariance_range`),
        ``range_mass``, ``spatial_fraction`` (sill / (nugget + sill): how
        much of the between-particle variance is spatially structured),
        ``converged``, ``candidates`` (each model's parameters and weighted
        residual sum of squares).
    """
    if len(vg) < 3:
        return {"model": models[0], "converged": False, "correlation_length": None,
                "note": "too few distance bins to fit a variogram"}
    fits = {m: _fit_model(vg, m, min_length) for m in models}
    ok = {m: f for m, f in fits.items() if f["converged"]}
    if not ok:
        return {"model": models[0], "converged": False, "correlation_length": None,
                "note": "; ".join(f"{m}: {f['note']}" for m, f in fits.items())}
    best = min(ok, key=lambda m: ok[m]["wrss"])
    f = ok[best]
    practical = {"exponential": np.log(20.0), "squared_exponential": np.sqrt(2 * np.log(20.0))}
    tot = f["nugget"] + f["sill"]
    return {"model": best, "converged": True, "nugget": f["nugget"], "sill": f["sill"],
            "correlation_length": f["length"],
            "practical_range": float(practical[best] * f["length"]),
            "correlation_range": covariance_range(best, f["length"], mass, dim),
            "range_mass": float(mass), "spatial_fraction": f["sill"] / tot if tot > 0 else 0.0,
            "at_upper_bound": f["at_upper_bound"], "candidates": fits}


def _fit_model(vg: pd.DataFrame, model: str, min_length: float | None) -> dict:
    """Weighted least-squares fit of one variogram model: parameters and residual sum of squares."""
    h = vg["distance"].to_numpy(float)
    g = vg["semivariance"].to_numpy(float)
    npairs = vg["n_pairs"].to_numpy(float)
    hmax = float(vg["bin_hi"].max())
    lo = float(min_length) if min_length is not None else float(vg["bin_hi"].iloc[0]) / 10
    top = float(np.nanmax(g)) if np.isfinite(g).any() else 1.0
    p0 = [max(g[0] * 0.5, 0.0), max(top - g[0] * 0.5, 1e-12), max(hmax / 4, lo * 1.01)]
    fn = VARIOGRAM_MODELS[model]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            popt, _ = optimize.curve_fit(
                fn, h, g, p0=p0, sigma=1.0 / np.sqrt(npairs),
                bounds=([0.0, 0.0, lo], [np.inf, np.inf, 10 * hmax]), maxfev=20000)
    except (RuntimeError, ValueError) as e:
        return {"converged": False, "note": f"variogram fit failed ({e})"}
    nug, sill, length = (float(v) for v in popt)
    return {"converged": True, "nugget": nug, "sill": sill, "length": length,
            "wrss": float(np.sum(npairs * (g - fn(h, nug, sill, length)) ** 2)),
            "at_upper_bound": bool(length >= 10 * hmax * 0.999)}


def correlation_length(values, coords, *, n_bins: int = 15, max_distance: float | None = None,
                       seed: int | None = 0, depth_axis: int | None = 0,
                       ) -> tuple[float | None, dict, pd.DataFrame]:
    """Correlation length and range of particle values from a fitted variogram model.

    The exponential and the squared-exponential models are fitted and the
    better one kept (:func:`fit_variogram`); its ``correlation_range`` holds
    95 % of the covariance mass in the dimension of ``coords``.  A smooth trend through the electrode thickness (damage graded with depth)
    would make the variogram rise without a sill; it is removed first by a
    quadratic fit of the values against the depth coordinate, so the length
    describes the clustering around the depth profile.

    Parameters
    ----------
    values : array_like, shape (n,)
    coords : array_like, shape (n, 3) or (n, 2)
        Centroids (z, y, x), or (y, x) in a section.
    n_bins, max_distance, seed
        See :func:`variogram`.
    depth_axis : int or None
        Coordinate column of the depth; ``None`` keeps any trend.

    Returns
    -------
    length : float or None
        The chosen model's length (``L`` of ``exp(-h / L)`` or ``l`` of
        ``exp(-h^2 / (2 l^2))``) in the unit of ``coords``; ``None`` if the
        fit fails.
    fit : dict
        See :func:`fit_variogram`.
    vg : pandas.DataFrame
        The empirical variogram.
    """
    v = np.asarray(values, dtype=np.float64)
    c = np.asarray(coords, dtype=np.float64)
    detrended = False
    if depth_axis is not None and v.size >= 10 and np.ptp(c[:, depth_axis]) > 0:
        coef = np.polyfit(c[:, depth_axis], v, 2)
        v = v - np.polyval(coef, c[:, depth_axis])
        detrended = True
    vg = variogram(v, c, n_bins=n_bins, max_distance=max_distance, seed=seed)
    fit = fit_variogram(vg, dim=c.shape[1] if c.ndim == 2 else 3)
    fit["depth_detrended"] = detrended
    return fit.get("correlation_length"), fit, vg


def depth_profile(values, depth, *, coords=None, n_bins: int = 8, bin_width: float | None = None,
                  method: str = "block", block_size: float | None = None, extent=None,
                  weights=None, confidence: float = 0.95, n_resamples: int = 1000,
                  seed: int | None = 0, unit: str = "um",
                  cross_block_range: float | None = None,
                  depth_axis: int | None = 0) -> pd.DataFrame:
    """Mean damage in slabs through the electrode thickness, with CIs.

    Parameters
    ----------
    values : array_like, shape (n,)
    depth : array_like, shape (n,)
        Particle depth (distance of the centroid from the first slice).
    coords, method, block_size, extent, weights, cross_block_range, depth_axis
        Passed to :func:`crackseg.stats.bootstrap.bootstrap_ci` within each slab.
    n_bins : int
        Number of equal-width slabs (ignored when ``bin_width`` is given).
    bin_width : float, optional
        Slab thickness in the unit of ``depth``.

    Returns
    -------
    pandas.DataFrame
        ``depth_lo``, ``depth_hi``, ``depth_mid``, ``n``, ``mean``,
        ``ci_low``, ``ci_high``, ``method``.
    """
    v = np.asarray(values, dtype=np.float64)
    d = np.asarray(depth, dtype=np.float64)
    top = float(extent[0]) if extent is not None else float(d.max()) + 1e-9
    if bin_width:
        edges = np.arange(0.0, top + bin_width, bin_width)
    else:
        edges = np.linspace(0.0, top, n_bins + 1)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        m = (d >= lo) & ((d < hi) if i < len(edges) - 2 else (d <= hi))
        nm = int(m.sum())
        row = {"depth_lo": lo, "depth_hi": hi, "depth_mid": 0.5 * (lo + hi), "n": nm,
               "mean": np.nan, "ci_low": np.nan, "ci_high": np.nan, "method": ""}
        if nm:
            ci = bootstrap_ci(v[m], "mean", method=method if coords is not None else "iid",
                              coords=None if coords is None else np.asarray(coords)[m],
                              block_size_um=block_size, extent=extent,
                              weights=None if weights is None else np.asarray(weights)[m],
                              confidence=confidence, n_resamples=n_resamples, seed=seed,
                              unit=unit, cross_block_range=cross_block_range,
                              depth_axis=depth_axis)
            row.update(mean=ci.estimate, method=ci.method)
            if ci.ci is not None:
                row.update(ci_low=ci.ci[0], ci_high=ci.ci[1])
        rows.append(row)
    return pd.DataFrame(rows)


def hot_spots(values, coords, *, distance: float, alpha: float = 0.05,
              min_size: int = 3) -> tuple[pd.DataFrame, list[dict]]:
    """Clusters of particles with significantly high damage (Getis-Ord Gi*).

    Parameters
    ----------
    values, coords : array_like, shapes (n,) and (n, 3)
        Particle values and centroids (z, y, x).
    distance : float
        Neighbourhood radius (e.g. the correlation length), same unit.
    alpha : float
        False discovery rate (Benjamini-Hochberg) over all particles.
    min_size : int
        Smallest number of particles that counts as a cluster.

    Returns
    -------
    per_particle : pandas.DataFrame
        ``gi_z``, ``p_value``, ``q_value``, ``hot`` (bool), ``hot_spot``
        (cluster id 1.., 0 for none), one row per particle in input order.
    clusters : list of dict
        ``id``, ``n_particles``, ``mean_value``, ``centroid`` (z, y, x).
    """
    x = np.asarray(values, dtype=np.float64)
    c = np.asarray(coords, dtype=np.float64)
    n = x.size
    if n < 3:
        raise InputError("hot-spot analysis needs at least three particles")
    w = distance_weights(c, distance, include_self=True)
    wsum = np.asarray(w.sum(axis=1)).ravel()
    w2 = np.asarray(w.multiply(w).sum(axis=1)).ravel()
    xbar = x.mean()
    s = np.sqrt(max((x ** 2).mean() - xbar ** 2, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        den = s * np.sqrt((n * w2 - wsum ** 2) / (n - 1))
        z = (w @ x - xbar * wsum) / den
    z = np.where(np.isfinite(z), z, 0.0)
    p = stats.norm.sf(z)
    q = stats.false_discovery_control(p, method="bh")
    hot = q < alpha
    cluster = np.zeros(n, dtype=np.int64)
    clusters = []
    if hot.any():
        hi = np.flatnonzero(hot)
        sub = distance_weights(c[hi], distance)
        _, lab = connected_components(sub, directed=False)
        sizes = np.bincount(lab)
        big = [i for i in np.argsort(-sizes) if sizes[i] >= min_size]
        for cid, comp in enumerate(big, start=1):
            members = hi[lab == comp]
            cluster[members] = cid
            clusters.append({"id": cid, "n_particles": int(members.size),
                             "mean_value": float(x[members].mean()),
                             "centroid": [float(v) for v in c[members].mean(axis=0)]})
    per = pd.DataFrame({"gi_z": z, "p_value": p, "q_value": q, "hot": hot, "hot_spot": cluster})
    return per, clusters
