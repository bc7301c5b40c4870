"""Bootstrap confidence intervals for particle statistics, iid or in spatial blocks.

Particles of one electrode are not independent: damage is clustered in
space.  The *spatial block bootstrap* cuts the volume into cubes of side
``block_size`` (sized from the measured correlation length), resamples whole
cubes with replacement and recomputes the statistic on the particles they
hold, so that correlation within a cube is kept in every replicate.  With
``block_size`` 0 every particle is its own block, which is the ordinary iid
bootstrap over particles.

Resampling whole blocks keeps the covariance of particles in the same block
but loses that of neighbours on either side of a block face; in 3-D that is
most of it unless blocks span many correlation lengths.  Given the
correlation range, the intervals are widened by the missing share
(:func:`cross_block_factors`), computed from the particles' influence
values over the pairs that straddle block faces.

Both run through :func:`scipy.stats.bootstrap`: the resampled "observations"
are block indices and the statistic turns block multiplicities into particle
weights, so BCa intervals use the delete-one-block jackknife.  Statistics
are weighted (Miles-Lantuejoul edge weights multiply the multiplicities);
with unit weights they equal the NumPy ones (``np.mean``, ``np.quantile``
with linear interpolation).

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = rng.beta(1, 20, 400)
>>> ci = bootstrap_ci(x, "mean", method="iid", n_resamples=999, seed=1)
>>> bool(ci.ci[0] < x.mean() < ci.ci[1])
True
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from crackseg.errors import InputError

#: Above this many resampling units BCa's jackknife costs O(n²); the
#: percentile interval is used instead (and the method says so).
BCA_MAX_UNITS = 4000


@dataclass
class Interval:
    """A point estimate with its confidence interval and how it was made.

    Attributes
    ----------
    estimate : float
        Statistic of the observed particles.
    ci : tuple of float, or None
        Lower and upper bound; ``None`` when no interval can be given (see
        ``note``).
    confidence : float
        Confidence level, e.g. 0.95.
    method : str
        ``"block bootstrap (BCa)"``, ``"iid bootstrap (percentile)"``, ...
    n : int
        Number of particles used.
    n_blocks : int
        Number of resampled units (blocks; particles for iid).
    block_size : float or None
        Block side in ``unit`` (``None`` for iid).
    unit : str
        ``"um"`` or ``"vox"``.
    standard_error : float or None
        Standard deviation of the bootstrap distribution.
    n_resamples : int
    seed : int or None
    note : str
        Why there is no interval, or what else a reader should know.
    extra : dict
        Additional results (e.g. uncertainty contributions).
    """

    estimate: float
    ci: tuple[float, float] | None
    confidence: float
    method: str
    n: int
    n_blocks: int = 0
    block_size: float | None = None
    unit: str = "um"
    standard_error: float | None = None
    n_resamples: int = 0
    seed: int | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready dictionary (NaN -> None)."""
        d = asdict(self)
        d["ci"] = None if self.ci is None else [_finite(self.ci[0]), _finite(self.ci[1])]
        d["estimate"] = _finite(self.estimate)
        d["standard_error"] = _finite(self.standard_error)
        if not d["extra"]:
            d.pop("extra")
        if not d["note"]:
            d.pop("note")
        return d


def _finite(v):
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# ------------------------------------------------------------- statistics

StatSpec = str | tuple | Callable


def _spec_name(spec: StatSpec) -> str:
    if callable(spec):
        return getattr(spec, "__name__", "statistic")
    if isinstance(spec, tuple):
        return f"{spec[0]}_{spec[1]:g}"
    return str(spec)


def _weighted(spec: StatSpec, v: np.ndarray, w: np.ndarray, cache: dict | None = None) -> np.ndarray:
    """Statistic of sorted values ``v`` (n,) under weights ``w`` (..., n).

    Returns shape (...), or (n_bins, ...) for ``("histogram", edges)``.  ``cache``
    keeps the total and cumulative weights shared by several statistics of the
    same ``w``.
    """
    if callable(spec):
        return spec(v, w)
    cache = {} if cache is None else cache
    if "tot" not in cache:
        cache["tot"] = w.sum(axis=-1)
    tot = cache["tot"]
    if isinstance(spec, tuple) and spec[0] == "histogram":
        edges = np.asarray(spec[1], dtype=np.float64)
        b = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, edges.size - 2)
        onehot = np.zeros((v.size, edges.size - 1))
        onehot[np.arange(v.size), b] = 1.0
        return np.moveaxis((w @ onehot) / tot[..., None], -1, 0)
    if spec == "mean":
        return (w @ v) / tot
    if spec == "median":
        return _weighted_quantile(v, w, 0.5, cache)
    kind, p = spec
    if kind == "quantile":
        return _weighted_quantile(v, w, float(p), cache)
    if kind == "fraction_above":
        return (w @ (v > p).astype(np.float64)) / tot
    if kind == "fraction_between":
        lo, hi = p
        return (w @ ((v >= lo) & (v < hi)).astype(np.float64)) / tot
    raise InputError(f"unknown statistic {spec!r}")


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float, cache: dict | None = None) -> np.ndarray:
    """Linear-interpolated quantile of the sample where value ``v[i]`` occurs ``w[i]`` times.

    For unit weights this is ``np.quantile(v, q)``; ``v`` must be sorted.
    """
    cache = {} if cache is None else cache
    if "cw" not in cache:
        cache["cw"] = np.cumsum(w, axis=-1)
    cw = cache["cw"]
    total = cw[..., -1:]
    h = q * (total - 1.0)
    j0 = np.floor(h)
    frac = h - j0
    i0 = np.minimum((cw <= j0 + 1e-9).sum(axis=-1, keepdims=True), v.size - 1)
    i1 = np.minimum((cw <= j0 + 1.0 + 1e-9).sum(axis=-1, keepdims=True), v.size - 1)
    out = v[i0] + frac * (v[i1] - v[i0])
    return out[..., 0]


def weighted_statistic(values, statistic: StatSpec = "mean", weights=None) -> float:
    """A statistic of particle values, optionally weighted.

    Parameters
    ----------
    values : array_like, shape (n,)
    statistic : {"mean", "median"}, ("quantile", q), ("fraction_above", t), or callable
        A callable gets ``(sorted_values, weights)`` with weights of shape
        (..., n) and returns shape (...).
    weights : array_like, shape (n,), optional

    Examples
    --------
    >>> weighted_statistic([3.0, 1.0, 2.0, 10.0], "median")
    2.5
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    return float(_weighted(statistic, v[order], w[order]))


# ------------------------------------------------------------- blocks


def spatial_blocks(coords, block_size: float | None, extent=None) -> np.ndarray:
    """Index of the spatial block holding each particle.

    Parameters
    ----------
    coords : array_like, shape (n, 3)
        Particle centroids (z, y, x), same unit as ``block_size``.
    block_size : float or None
        Side of the cubic blocks; 0 or ``None`` puts every particle in its own
        block.  Each axis of the extent is cut into ``round(extent / size)``
        equal parts (at least one).
    extent : array_like, shape (3,), optional
        Size of the volume along z, y, x (default: the largest coordinate).

    Returns
    -------
    numpy.ndarray of int, shape (n,)
        Compact block indices 0..n_blocks-1.

    Examples
    --------
    >>> spatial_blocks([[1, 1, 1], [9, 1, 1], [2, 2, 2]], 5, extent=(10, 10, 10)).tolist()
    [0, 1, 0]
    """
    c = np.asarray(coords, dtype=np.float64)
    n = c.shape[0]
    if not block_size:
        return np.arange(n)
    ext = np.asarray(extent, dtype=np.float64) if extent is not None else c.max(axis=0) + 1e-9
    nb = np.maximum(1, np.round(ext / float(block_size))).astype(np.int64)
    edge = ext / nb
    idx = np.clip(np.floor(c / edge).astype(np.int64), 0, nb - 1)
    flat = np.ravel_multi_index(tuple(idx.T), tuple(nb))
    return np.unique(flat, return_inverse=True)[1].ravel()


def _multiplicity(idx: np.ndarray, n_units: int) -> np.ndarray:
    """Counts of each unit in every resample: (..., m) indices -> (..., n_units)."""
    lead = idx.shape[:-1]
    flat = idx.reshape(-1, idx.shape[-1]).astype(np.int64)
    rows = flat.shape[0]
    off = (np.arange(rows, dtype=np.int64) * n_units)[:, None]
    counts = np.bincount((flat + off).ravel(), minlength=rows * n_units)
    return counts.reshape(*lead, n_units).astype(np.float64)


# ------------------------------------------------------------- bootstrap


def bootstrap_many(values, statistics: Sequence[StatSpec], *, method: str = "block",
                   coords=None, block_size: float | None = None, extent=None, weights=None,
                   n_resamples: int = 2000, confidence: float = 0.95, seed: int | None = 0,
                   ci_method: str = "auto", unit: str = "um", posterior=None,
                   cross_block_range: float | None = None) -> list[Interval]:
    """Confidence intervals of several statistics from one set of resamples.

    Parameters
    ----------
    values : array_like, shape (n,)
        One value per particle (e.g. crack fraction).
    statistics : sequence of statistic specs
        See :func:`weighted_statistic`.
    method : {"block", "iid"}
        Spatial block bootstrap (needs ``coords`` and ``block_size``) or iid
        over particles.
    coords : array_like, shape (n, 3), optional
        Particle centroids (z, y, x) in ``unit``.
    block_size : float, optional
        Block side in ``unit``; 0 means one particle per block (iid).
    extent : array_like, shape (3,), optional
        Volume size (z, y, x) in ``unit``.
    weights : array_like, shape (n,), optional
        Particle weights (e.g. Miles-Lantuejoul edge correction).
    n_resamples : int
    confidence : float
    seed : int or None
        Seed of the resampling (recorded in the result).
    ci_method : {"auto", "BCa", "percentile"}
        ``auto`` uses BCa up to :data:`BCA_MAX_UNITS` resampling units.
    unit : str
        Unit of ``coords`` and ``block_size`` (``"um"`` or ``"vox"``).
    posterior : array_like, shape (n_samples, n), optional
        Posterior samples of ``values`` from segmentation uncertainty; each
        replicate then also draws one posterior sample (percentile
        interval), and ``extra["uncertainty"]`` splits the variance between
        particle sampling and segmentation.
    cross_block_range : float, optional
        Correlation range (same unit as ``coords``).  Resampling whole blocks
        keeps the covariance of particles within a block but drops that of
        neighbours on either side of a block face, which in 3-D is a large
        share unless blocks are many correlation lengths wide.  With a range
        given, each interval is widened about its estimate by
        ``sqrt((within + across) / within)``, where *within* and *across* sum
        the products of the particles' influence values over pairs in the
        same block and over pairs in different blocks closer than the range
        (:func:`cross_block_factors`; never narrower than the plain block
        bootstrap).

    Returns
    -------
    list of Interval
    """
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    if v.ndim != 1:
        raise InputError(f"values must be one-dimensional, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise InputError("values contain NaN or Inf; drop those particles first")
    if method not in ("block", "iid"):
        raise InputError(f"bootstrap method {method!r} must be 'block' or 'iid'")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if method == "block":
        if coords is None:
            raise InputError("the block bootstrap needs particle coordinates")
        blocks = spatial_blocks(coords, block_size, extent)
    else:
        blocks = np.arange(n)
        block_size = None
    n_units = int(blocks.max()) + 1 if n else 0
    order = np.argsort(v, kind="stable")
    vs, ws, bs = v[order], w[order], blocks[order]
    if ci_method == "auto":
        ci_method = "BCa" if n_units <= BCA_MAX_UNITS else "percentile"
    label = "spatial block bootstrap" if method == "block" and block_size else "iid bootstrap"
    base = dict(confidence=float(confidence), n=int(n), n_blocks=n_units,
                block_size=(float(block_size) if block_size else None), unit=unit,
                n_resamples=int(n_resamples), seed=seed)
    sizes = [int(np.size(_weighted(s, vs[:1], ws[:1][None]))) for s in statistics] if n else \
        [1] * len(statistics)
    if n:
        estimates = np.concatenate([np.ravel(_weighted(s, vs, ws[None])) for s in statistics])
    else:
        estimates = np.full(sum(sizes), np.nan)
    estimates = [float(e) for e in estimates]
    if n == 0:
        return _group([Interval(estimate=float("nan"), ci=None, method=label, note="no particles",
                                **base) for _ in estimates], sizes, statistics)
    if n_units < 2:
        why = ("one particle: an interval needs at least two" if n == 1 else
               "all particles fall in one spatial block (the volume is not larger than the "
               "correlation length), so the volume gives no interval for the population")
        return _group([Interval(estimate=e, ci=None, method=label, note=why, **base)
                       for e in estimates], sizes, statistics)

    def stat(idx, axis=-1):
        m = _multiplicity(np.moveaxis(np.asarray(idx), axis, -1), n_units)
        wr = m[..., bs] * ws
        cache: dict = {}
        return np.concatenate([_weighted(s, vs, wr, cache).reshape(-1, *wr.shape[:-1])
                               for s in statistics], axis=0)

    factors = np.ones(len(estimates))
    suffix = ""
    if cross_block_range and method == "block" and block_size:
        psi = np.concatenate([_influence(s, v, e) for s, e in
                              zip(statistics, _split(estimates, sizes))], axis=0)
        factors = cross_block_factors(psi, w, coords, blocks, cross_block_range, seed=seed)
        suffix = ", widened for covariance across block faces"

    if posterior is not None:
        return _bootstrap_posterior(v, w, blocks, n_units, statistics, np.asarray(posterior, float),
                                    estimates, label + suffix, base, n_resamples, confidence, seed,
                                    stat, factors)

    batch = max(1, int(2e7 // max(n, 1)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((np.arange(n_units),), stat, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method=ci_method, rng=seed, batch=batch)
    lo = np.atleast_1d(res.confidence_interval.low)
    hi = np.atleast_1d(res.confidence_interval.high)
    se = np.atleast_1d(res.standard_error)
    dist = np.atleast_2d(res.bootstrap_distribution)
    out = []
    for i, e in enumerate(estimates):
        note = ""
        if not (np.isfinite(lo[i]) and np.isfinite(hi[i])):
            # BCa degenerates when every replicate is equal (e.g. all values the same)
            q = np.quantile(dist[i], [(1 - confidence) / 2, (1 + confidence) / 2])
            lo_i, hi_i = float(q[0]), float(q[1])
            note = "BCa undefined for this bootstrap distribution; percentile interval given"
        else:
            lo_i, hi_i = float(lo[i]), float(hi[i])
        f = float(factors[i])
        extra = {"cross_block_factor": f, "correlation_range": float(cross_block_range)} \
            if suffix else {}
        out.append(Interval(estimate=e, ci=(e + f * (lo_i - e), e + f * (hi_i - e)),
                            method=f"{label} ({ci_method}{suffix})",
                            standard_error=float(se[i]) * f, note=note, extra=extra, **base))
    return _group(out, sizes, statistics)


def _split(values: list, sizes: list[int]) -> list:
    out, i = [], 0
    for k in sizes:
        out.append(values[i:i + k])
        i += k
    return out


def _influence(spec: StatSpec, v: np.ndarray, est: list[float]) -> np.ndarray:
    """Linearised influence of each particle on a statistic, shape (n_outputs, n).

    Mean: ``v - mean``; quantile ``q``: ``1{v <= Q} - q`` (the density factor
    cancels in :func:`cross_block_factors`); fraction above ``t``:
    ``1{v > t} - p``; histogram bins: ``1{v in bin} - p_bin``.  Unknown
    (callable) statistics get zeros, i.e. no widening.
    """
    if callable(spec):
        return np.zeros((len(est), v.size))
    if spec == "mean":
        return (v - est[0])[None]
    if spec == "median":
        return ((v <= est[0]).astype(float) - 0.5)[None]
    kind, p = spec
    if kind == "quantile":
        return ((v <= est[0]).astype(float) - float(p))[None]
    if kind == "fraction_above":
        return ((v > p).astype(float) - est[0])[None]
    if kind == "fraction_between":
        return (((v >= p[0]) & (v < p[1])).astype(float) - est[0])[None]
    if kind == "histogram":
        edges = np.asarray(p, dtype=np.float64)
        b = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, edges.size - 2)
        onehot = (b[None, :] == np.arange(edges.size - 1)[:, None]).astype(float)
        return onehot - np.asarray(est)[:, None]
    return np.zeros((len(est), v.size))


def cross_block_factors(psi, weights, coords, blocks, correlation_range: float, *,
                        max_points: int = 5000, seed: int | None = 0) -> np.ndarray:
    """How much wider a block-bootstrap interval must be to count cross-block covariance.

    The variance of a (linearised) statistic is ``sum_ij a_i a_j`` over
    correlated pairs, with ``a = weight * influence``.  Resampling whole
    blocks counts the pairs within each block; this adds the pairs in
    different blocks that are closer than ``correlation_range``.

    Parameters
    ----------
    psi : array_like, shape (k, n)
        Influence values of ``k`` statistics.
    weights : array_like, shape (n,)
    coords : array_like, shape (n, 3)
    blocks : array_like of int, shape (n,)
        Block of each particle.
    correlation_range : float
        Distance beyond which particles are taken as uncorrelated.
    max_points : int
        Above this many particles a seeded random subset estimates the ratio.

    Returns
    -------
    numpy.ndarray, shape (k,)
        Factors ``sqrt((within + across) / within)``, at least 1.

    Examples
    --------
    >>> import numpy as np
    >>> xyz = np.array([[0, 0, 9.0], [0, 0, 11.0]])
    >>> cross_block_factors(np.array([[1.0, 1.0]]), np.ones(2), xyz, np.array([0, 1]), 5.0)
    array([1.41421356])
    """
    from scipy.spatial import cKDTree

    psi = np.atleast_2d(np.asarray(psi, dtype=np.float64))
    c = np.asarray(coords, dtype=np.float64)
    b = np.asarray(blocks)
    a = psi * np.asarray(weights, dtype=np.float64)[None]
    if c.shape[0] > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(c.shape[0], max_points, replace=False))
        a, c, b = a[:, keep], c[keep], b[keep]
    nb = int(b.max()) + 1
    within = np.stack([np.bincount(b, weights=row, minlength=nb) for row in a])
    within = (within ** 2).sum(axis=1)
    pairs = cKDTree(c).query_pairs(float(correlation_range), output_type="ndarray")
    if pairs.size:
        pairs = pairs[b[pairs[:, 0]] != b[pairs[:, 1]]]
    across = 2.0 * (a[:, pairs[:, 0]] * a[:, pairs[:, 1]]).sum(axis=1) if pairs.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(within > 0, (within + across) / within, 1.0)
    return np.sqrt(np.maximum(ratio, 1.0))


def _group(intervals: list, sizes: list[int], statistics) -> list:
    """One Interval per scalar statistic; a list of them for a histogram."""
    out, i = [], 0
    for s, k in zip(statistics, sizes):
        hist = isinstance(s, tuple) and s[0] == "histogram"
        out.append(intervals[i:i + k] if hist else intervals[i])
        i += k
    return out


def _bootstrap_posterior(v, w, blocks, n_units, statistics, post, estimates, label, base,
                         n_resamples, confidence, seed, stat, factors):
    """Bootstrap that also draws a posterior segmentation sample for every replicate.

    The particle-sampling part of each replicate is widened by ``factors``
    (cross-block covariance) before the segmentation part is added.
    """
    if post.ndim != 2 or post.shape[1] != v.size:
        raise InputError(f"posterior samples of shape {post.shape} do not match {v.size} particles")
    if any(isinstance(s, tuple) and s[0] == "histogram" for s in statistics):
        raise InputError("histogram intervals with posterior samples are not supported")
    rng = np.random.default_rng(seed)
    n_s = post.shape[0]
    alpha = (1 - confidence) / 2

    def all_stats(values, weights):
        order = np.argsort(values, kind="stable")
        return np.stack([_weighted(st, values[order], weights[..., order]) for st in statistics], -1)

    # segmentation only: the census statistic in each posterior sample
    seg_only = np.stack([all_stats(p, w[None])[0] for p in post])
    # particle sampling only: resample blocks on the given values
    idx = rng.integers(0, n_units, size=(n_resamples, n_units))
    samp_only = np.concatenate([stat(idx[i:i + 200]).T for i in range(0, n_resamples, 200)])
    est = np.asarray(estimates)
    samp_only = est + factors * (samp_only - est)
    # both: each replicate resamples blocks and draws one posterior sample
    draw = rng.integers(0, n_s, size=n_resamples)
    both = np.empty((n_resamples, len(statistics)))
    for s in range(n_s):
        rows = np.flatnonzero(draw == s)
        if rows.size:
            full = all_stats(post[s], w[None])[0]
            rep = all_stats(post[s], _multiplicity(idx[rows], n_units)[:, blocks] * w)
            both[rows] = full + factors * (rep - full)
    out = []
    for i, _ in enumerate(statistics):
        var_seg = float(np.var(seg_only[:, i], ddof=1)) if n_s > 1 else 0.0
        var_samp = float(np.var(samp_only[:, i], ddof=1))
        tot = var_seg + var_samp
        q = np.quantile(both[:, i], [alpha, 1 - alpha])
        extra = {"uncertainty": {
            "n_posterior_samples": int(n_s),
            "variance_sampling": var_samp, "variance_segmentation": var_seg,
            "share_sampling": var_samp / tot if tot > 0 else None,
            "share_segmentation": var_seg / tot if tot > 0 else None,
            "ci_sampling_only": [float(x) for x in np.quantile(samp_only[:, i], [alpha, 1 - alpha])],
            "ci_segmentation_only": [float(x) for x in np.quantile(seg_only[:, i], [alpha, 1 - alpha])],
        }}
        out.append(Interval(estimate=float(np.mean(seg_only[:, i])), ci=(float(q[0]), float(q[1])),
                            method=f"{label}; x posterior segmentation samples (percentile)",
                            standard_error=float(np.std(both[:, i], ddof=1)), extra=extra,
                            note="estimate is the mean over posterior segmentation samples", **base))
    return out


def bootstrap_ci(values, statistic: StatSpec = "mean", *, method: str = "block", coords=None,
                 block_size_um: float | None = None, extent=None, weights=None,
                 n_resamples: int = 2000, confidence: float = 0.95, seed: int | None = 0,
                 ci_method: str = "auto", unit: str = "um", posterior=None,
                 cross_block_range: float | None = None) -> Interval:
    """Confidence interval of one particle statistic.

    Parameters
    ----------
    values : array_like, shape (n,)
        One value per particle.
    statistic : {"mean", "median"}, ("quantile", q), ("fraction_above", t), or callable
    method : {"block", "iid"}
        Spatial block bootstrap (default; needs ``coords``) or iid.
    coords : array_like, shape (n, 3), optional
        Particle centroids (z, y, x) in µm (or voxels with ``unit="vox"``).
    block_size_um : float, optional
        Side of the spatial blocks; 0 gives the iid bootstrap.
    extent, weights, n_resamples, confidence, seed, ci_method, unit, posterior, cross_block_range
        See :func:`bootstrap_many`.

    Returns
    -------
    Interval

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(100) / 100.0
    >>> xyz = np.random.default_rng(0).random((100, 3)) * 50
    >>> r = bootstrap_ci(x, "median", coords=xyz, block_size_um=10, extent=(50, 50, 50), seed=0)
    >>> r.n_blocks, r.method
    (67, 'spatial block bootstrap (BCa)')
    """
    return bootstrap_many(values, [statistic], method=method, coords=coords,
                          block_size=block_size_um, extent=extent, weights=weights,
                          n_resamples=n_resamples, confidence=confidence, seed=seed,
                          ci_method=ci_method, unit=unit, posterior=posterior,
                          cross_block_range=cross_block_range)[0]


def stat_name(spec: StatSpec) -> str:
    """Key under which a statistic is reported, e.g. ``"quantile_0.9"``."""
    return _spec_name(spec)
