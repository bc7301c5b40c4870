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
values over the pairs that straddle block faces (all particles, summed on
cells of a third of the range, so 10^5 particles cost well under a second).

Both run through :func:`scipy.stats.bootstrap`: the resampled "observations"
are block indices and the statistic turns block multiplicities into particle
weights, so BCa intervals use the delete-one-block jackknife.  Statistics
are weighted (Miles-Lantuejoul edge weights multiply the multiplicities);
with unit weights they equal the NumPy ones (``np.mean``, ``np.quantile``
with linear interpolation).  Each replicate is evaluated from per-block sums
(sparse products), so its cost grows with the number of blocks, not of
particles: 10^5 particles in a few thousand blocks take well under a second
per statistic.

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
from scipy import sparse, stats

from crackseg.errors import InputError

#: Above this many resampling units BCa's jackknife costs O(n²); the
#: percentile interval is used instead (and the method says so).
BCA_MAX_UNITS = 4000

#: :func:`cross_block_factors` sums particle pairs over cells of at most
#: ``1 / CELLS_PER_RANGE`` of the correlation range ...
CELLS_PER_RANGE = 3
#: ... and at most this many cells (coarser cells beyond).
MAX_CELLS = 2_000_000

# Up to this many units, replicates are evaluated together from a units-first
# count table; beyond, one at a time (the table's transposition would cost more).
_UNITS_FIRST_MAX = 200000


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
    if spec == "mean":
        return (w @ v) / tot
    if spec == "median" or spec[0] == "quantile":
        return _weighted_quantile(v, w, 0.5 if spec == "median" else float(spec[1]), cache)
    ind = _indicators(spec, v)
    if spec[0] == "histogram":
        return np.moveaxis((w @ ind) / tot[..., None], -1, 0)
    return (w @ ind[:, 0]) / tot


def _indicators(spec: StatSpec, v: np.ndarray) -> np.ndarray:
    """0/1 columns (n, k) whose weighted means are a fraction or histogram statistic of ``v``.

    One column for ``("fraction_above", t)`` (``v > t``) and
    ``("fraction_between", (lo, hi))`` (``lo <= v < hi``); one per bin for
    ``("histogram", edges)`` (values outside the edges count in the end bins).

    Examples
    --------
    >>> _indicators(("histogram", [0, 1, 2]), np.array([0.5, 1.5, 3.0])).tolist()
    [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    kind, p = spec if isinstance(spec, tuple) else (spec, None)
    if kind == "fraction_above":
        return (v > p).astype(np.float64)[:, None]
    if kind == "fraction_between":
        return ((v >= p[0]) & (v < p[1])).astype(np.float64)[:, None]
    if kind == "histogram":
        edges = np.asarray(p, dtype=np.float64)
        b = np.clip(np.searchsorted(edges, v, side="right") - 1, 0, edges.size - 2)
        return (b[:, None] == np.arange(edges.size - 1)[None, :]).astype(np.float64)
    raise InputError(f"unknown statistic {spec!r}")


def _weighted_quantile(v: np.ndarray, w: np.ndarray, q: float, cache: dict | None = None) -> np.ndarray:
    """Linear-interpolated quantile of the sample where value ``v[i]`` occurs ``w[i]`` times.

    For unit weights this is ``np.quantile(v, q)``; ``v`` must be sorted.
    """
    cache = {} if cache is None else cache
    if "cw" not in cache:
        cache["cw"] = np.cumsum(w, axis=-1)
    cw = cache["cw"]
    return _interpolated_quantile(v, q, cw[..., -1:],
                                  lambda t: (cw <= t).sum(axis=-1, keepdims=True))[..., 0]


def _interpolated_quantile(v: np.ndarray, q: float, total: np.ndarray, rank) -> np.ndarray:
    """Linear-interpolated quantile ``q`` of sorted values ``v`` occurring with total weight ``total``.

    ``rank(t)`` counts the sorted values whose cumulative weight is at most
    ``t`` (same shape as ``total``); the quantile lies between the values
    at ranks ``floor(h)`` and ``floor(h) + 1``, ``h = q (total - 1)``.
    """
    h = q * (total - 1.0)
    j0 = np.floor(h)
    i0 = np.minimum(rank(j0 + 1e-9), v.size - 1)
    i1 = np.minimum(rank(j0 + 1.0 + 1e-9), v.size - 1)
    return v[i0] + (h - j0) * (v[i1] - v[i0])


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
    nb, edge = _block_grid(c, block_size, extent)
    idx = np.clip(np.floor(c / edge).astype(np.int64), 0, nb - 1)
    flat = np.ravel_multi_index(tuple(idx.T), tuple(nb))
    return np.unique(flat, return_inverse=True)[1].ravel()


def _block_grid(c: np.ndarray, block_size: float, extent=None) -> tuple[np.ndarray, np.ndarray]:
    """Blocks per axis and their edge lengths (see :func:`spatial_blocks`)."""
    ext = np.asarray(extent, dtype=np.float64) if extent is not None else c.max(axis=0) + 1e-9
    nb = np.maximum(1, np.round(ext / float(block_size))).astype(np.int64)
    return nb, ext / nb


def _multiplicity(idx: np.ndarray, n_units: int) -> np.ndarray:
    """Counts of each unit in every resample: (..., m) indices -> (..., n_units)."""
    lead = idx.shape[:-1]
    flat = idx.reshape(-1, idx.shape[-1]).astype(np.int64)
    rows = flat.shape[0]
    off = (np.arange(rows, dtype=np.int64) * n_units)[:, None]
    counts = np.bincount((flat + off).ravel(), minlength=rows * n_units)
    return counts.reshape(*lead, n_units).astype(np.float64)


def _unit_statistics(statistics: Sequence[StatSpec], vs: np.ndarray, ws: np.ndarray,
                     bs: np.ndarray, n_units: int) -> Callable | None:
    """Statistics of resampled particles computed from the units' multiplicities.

    A replicate that draws unit ``u`` ``m[u]`` times gives particle ``i`` the
    weight ``m[bs[i]] * ws[i]``.  Means, fractions and histogram bins are
    ratios of weighted sums, which are summed per unit once; weighted
    quantiles are located from per-unit weight sums over runs of about
    ``sqrt(n)`` consecutive sorted particles, then by a cumulative sum inside
    the one run that holds them.  The results are those of
    :func:`_weighted` on the particle weights (bit for bit for integer
    weights; to rounding otherwise), at a cost per replicate that grows with
    the number of units rather than of particles.  Sums run over the units in
    a fixed order (sparse products), so a replicate's statistics do not
    depend on the other replicates evaluated with it.

    Parameters
    ----------
    statistics : sequence of statistic specs
    vs, ws, bs : numpy.ndarray, shape (n,)
        Values sorted ascending, their weights, and their units (0..n_units-1).
    n_units : int

    Returns
    -------
    callable or None
        ``f(idx, mt=None)`` with the drawn unit indices of ``r`` replicates
        (shape (r, draws)), returning (n_outputs, r);
        ``f(np.arange(n_units)[None])`` gives the observed statistics.  ``mt``
        optionally passes ``_unit_counts(idx, n_units)`` when several
        quantities share the resamples.  ``None`` when a statistic is a
        callable (those get particle weights).
    """
    if any(callable(s) for s in statistics):
        return None
    n = vs.size
    rows = np.arange(n)
    features, plan = _linear_features(statistics, vs)
    to_units = sparse.csr_matrix((ws, (bs, rows)), shape=(n_units, n))
    # per-unit sums of every linear feature, with the unit's total weight as the last row
    unit_sums = sparse.csr_matrix((to_units @ np.concatenate(features + [np.ones((n, 1))],
                                                             axis=1)).T)
    dense_sums = unit_sums.toarray() if n_units > _UNITS_FIRST_MAX else None
    quantiles = any(kind == "quantile" for kind, _ in plan)
    run = max(1, math.isqrt(n - 1) + 1)  # ceil(sqrt(n)): fewest operations per located quantile
    to_runs = sparse.csr_matrix((ws, (rows // run, bs)), shape=(-(-n // run), n_units)) \
        if quantiles else None

    def evaluate(idx, mt=None):
        idx = np.asarray(idx)
        lookup, sums, runs = _replicate_sums(idx.reshape(-1, idx.shape[-1]), mt, unit_sums,
                                             dense_sums, to_runs)
        lin = (sums[:-1] / sums[-1]).T
        cum = np.cumsum(runs.T, axis=1) if quantiles else None
        out = []
        for kind, arg in plan:
            if kind == "linear":
                out.append(lin[:, arg].T)
                continue
            out.append(_interpolated_quantile(
                vs, arg, cum[:, -1], lambda t: _count_at_most(lookup, cum, t, bs, ws, run))[None])
        return np.concatenate(out, axis=0)

    return evaluate


def _linear_features(statistics: Sequence[StatSpec], vs: np.ndarray) -> tuple[list, list]:
    """Per-particle columns of the statistics that are weighted means, and how to read each one.

    Returns the feature blocks (each (n, k)) and a plan with one entry per
    statistic: ``("linear", columns)`` into the concatenated features, or
    ``("quantile", q)``.
    """
    features, plan = [], []
    for s in statistics:
        if s == "median" or (isinstance(s, tuple) and s[0] == "quantile"):
            plan.append(("quantile", 0.5 if s == "median" else float(s[1])))
            continue
        cols = vs[:, None] if s == "mean" else _indicators(s, vs)
        start = sum(f.shape[1] for f in features)
        plan.append(("linear", slice(start, start + cols.shape[1])))
        features.append(cols)
    return features, plan


def _replicate_sums(idx: np.ndarray, mt, unit_sums, dense_sums, to_runs):
    """Multiplicity lookup, linear sums and run weights of replicates drawing units ``idx`` (r, m).

    Returns ``lookup(replicate, unit) -> count``, the per-replicate sums of
    the linear features and of the weights (k + 1, r), and the weights of
    the runs of sorted particles (n_runs, r), ``None`` without ``to_runs``.
    Up to :data:`_UNITS_FIRST_MAX` units the counts ``mt`` (n_units, r) are
    used (counted here when not given); beyond, one replicate at a time.
    """
    n_units = unit_sums.shape[1]
    quantiles = to_runs is not None
    if n_units <= _UNITS_FIRST_MAX:
        mt = _unit_counts(idx, n_units) if mt is None else mt
        runs = _sparse_times(to_runs, mt) if quantiles else None
        return (lambda r, u: mt[u, r]), _sparse_times(unit_sums, mt), runs
    # many units: one replicate at a time, without a units-first copy
    m = np.empty((idx.shape[0] if quantiles else 1, n_units))
    sums = np.empty((unit_sums.shape[0], idx.shape[0]))
    runs = np.empty((to_runs.shape[0], idx.shape[0])) if quantiles else None
    for i, drawn in enumerate(idx):
        row = m[i if quantiles else 0]
        row[:] = np.bincount(drawn, minlength=n_units)
        sums[:, i] = dense_sums @ row
        if quantiles:
            runs[:, i] = to_runs @ row
    return (lambda r, u: m[r, u]), sums, runs


def _count_at_most(lookup, cum: np.ndarray, t: np.ndarray, bs: np.ndarray, ws: np.ndarray,
                   run: int) -> np.ndarray:
    """Number of sorted particles whose cumulative weight is <= ``t``, per replicate.

    ``cum`` (r, n_runs) holds the cumulative weights of runs of ``run``
    sorted particles; the count is finished inside the run that crosses ``t``.
    """
    n, n_runs = bs.size, cum.shape[1]
    r = np.arange(cum.shape[0])
    g = (cum <= t[:, None]).sum(axis=1)
    gg = np.minimum(g, n_runs - 1)
    base = np.where(gg > 0, cum[r, np.maximum(gg - 1, 0)], 0.0)
    idx = gg[:, None] * run + np.arange(run)[None, :]
    valid = idx < n
    idx = np.minimum(idx, n - 1)
    part = base[:, None] + np.cumsum(lookup(r[:, None], bs[idx]) * ws[idx] * valid, axis=1)
    inside = ((part <= t[:, None]) & valid).sum(axis=1)
    return np.where(g >= n_runs, n, gg * run + inside)


def _unit_counts(idx: np.ndarray, n_units: int) -> np.ndarray:
    """Counts of each unit in every resample, units first: (r, m) indices -> (n_units, r)."""
    flat = np.asarray(idx).reshape(-1, np.shape(idx)[-1])
    rows = flat.shape[0]
    if rows * n_units <= 4_000_000:
        key = flat.astype(np.int64) * rows
        key += np.arange(rows, dtype=np.int64)[:, None]
        return np.bincount(key.ravel(), minlength=n_units * rows).reshape(n_units, rows) \
            .astype(np.float64)
    # large tables: count a few resamples at a time, in cache, then transpose them
    out = np.empty((n_units, rows))
    step = 16
    buf = np.empty((step, n_units), dtype=np.int64)
    for r0 in range(0, rows, step):
        k = min(step, rows - r0)
        for j in range(k):
            buf[j] = np.bincount(flat[r0 + j], minlength=n_units)
        out[:, r0:r0 + k] = buf[:k].T
    return out


def _sparse_times(mat, mt: np.ndarray) -> np.ndarray:
    """``mat @ mt`` for a sparse ``mat`` and dense ``mt`` (n, r), through one kernel for every r.

    SciPy multiplies a single column with another kernel, whose rounding may
    differ; a single column is therefore doubled.
    """
    if mt.shape[1] == 1:
        return (mat @ np.repeat(mt, 2, axis=1))[:, :1]
    return mat @ mt


# ------------------------------------------------------------- bootstrap


def bootstrap_many(values, statistics: Sequence[StatSpec], *, method: str = "block",
                   coords=None, block_size: float | None = None, extent=None, weights=None,
                   n_resamples: int = 2000, confidence: float = 0.95, seed: int | None = 0,
                   ci_method: str = "auto", unit: str = "um", posterior=None,
                   cross_block_range: float | None = None,
                   depth_axis: int | None = 0) -> list[Interval]:
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
        ``sqrt(total / ((1 - k) within))``, where *within* and *total* sum
        the products of the particles' influence values over pairs in the
        same block and over those plus the pairs in different blocks closer
        than the range, and ``k`` is the share of all pairs those are
        (:func:`cross_block_factors`; never narrower than the plain block
        bootstrap).
    depth_axis : int or None
        Column of ``coords`` along the electrode thickness: the widening is
        measured about a quadratic depth profile (:func:`cross_block_factors`).

    Returns
    -------
    list of Interval
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise InputError(f"values must be one-dimensional, got shape {v.shape}")
    return bootstrap_columns([v], statistics, method=method, coords=coords,
                             block_size=block_size, extent=extent, weights=weights,
                             n_resamples=n_resamples, confidence=confidence, seed=seed,
                             ci_method=ci_method, unit=unit, posterior=posterior,
                             cross_block_range=cross_block_range, depth_axis=depth_axis)[0]


def bootstrap_columns(columns, statistics: Sequence[StatSpec], *, method: str = "block",
                      coords=None, block_size: float | None = None, extent=None, weights=None,
                      n_resamples: int = 2000, confidence: float = 0.95, seed: int | None = 0,
                      ci_method: str = "auto", unit: str = "um", posterior=None,
                      cross_block_range: float | None = None,
                      depth_axis: int | None = 0) -> list[list[Interval]]:
    """:func:`bootstrap_many` for several quantities of the same particles, from one set of resamples.

    The blocks are drawn once and every column's statistics are computed on
    each replicate; each column's intervals are exactly those of its own
    :func:`bootstrap_many` call with the same arguments (same seed, same
    resampled blocks), at the resampling cost of one.

    Parameters
    ----------
    columns : sequence of array_like, each shape (n,)
        Per-particle quantities of the same particles (e.g. pore fraction,
        sphericity).
    statistics, method, coords, block_size, extent, weights, n_resamples, confidence, seed
    ci_method, unit, cross_block_range, depth_axis
        As for :func:`bootstrap_many`.
    posterior : array_like, shape (n_samples, n), optional
        Only with a single column (see :func:`bootstrap_many`).

    Returns
    -------
    list of list of Interval
        One list per column, as :func:`bootstrap_many` returns it.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, y = rng.random(200), rng.random(200)
    >>> both = bootstrap_columns([x, y], ["mean"], method="iid", n_resamples=300, seed=1)
    >>> both[1][0].ci == bootstrap_many(y, ["mean"], method="iid", n_resamples=300, seed=1)[0].ci
    True
    """
    cols = [np.asarray(c, dtype=np.float64) for c in columns]
    if not cols:
        return []
    n = cols[0].size
    _check_columns(cols, method, posterior)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    blocks, block_size = _resampled_units(n, method, coords, block_size, extent)
    n_units = int(blocks.max()) + 1 if n else 0
    if ci_method == "auto":
        ci_method = "BCa" if n_units <= BCA_MAX_UNITS else "percentile"
    label = "spatial block bootstrap" if method == "block" and block_size else "iid bootstrap"
    base = dict(confidence=float(confidence), n=int(n), n_blocks=n_units,
                block_size=(float(block_size) if block_size else None), unit=unit,
                n_resamples=int(n_resamples), seed=seed)
    sizes, evaluators, estimates = _evaluators(cols, statistics, w, blocks, n_units)
    if n_units < 2:
        return _without_intervals(estimates, sizes, statistics, label, base)

    shared = len(cols) > 1 and n_units <= _UNITS_FIRST_MAX

    def stat(idx, axis=-1):
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        mt = _unit_counts(flat, n_units) if shared else None  # counted once for all columns
        return np.concatenate([f(flat, mt).reshape(-1, *idx.shape[:-1]) for f in evaluators],
                              axis=0)

    widen = bool(cross_block_range and method == "block" and block_size)
    suffix = ", widened for covariance across block faces" if widen else ""
    factors = [np.ones(len(est)) for est in estimates] if not widen else _split(
        cross_block_factors(_influences(cols, estimates, statistics, sizes), w, coords,
                            block_size, cross_block_range, extent=extent, depth_axis=depth_axis),
        [len(est) for est in estimates])  # one pass over the cells for every column

    if posterior is not None:
        return [_bootstrap_posterior(cols[0], w, blocks, n_units, statistics,
                                     np.asarray(posterior, float), estimates[0], label + suffix,
                                     base, n_resamples, confidence, seed, stat, factors[0])]

    batch = max(1, int(2e7 // max(n, 1)))
    units = np.arange(n_units, dtype=np.int32)  # resampled unit indices: 4 bytes each
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.bootstrap((units,), stat, vectorized=True, n_resamples=n_resamples,
                              confidence_level=confidence, method=ci_method, rng=seed, batch=batch)
    widening = {"cross_block_range": float(cross_block_range)} if suffix else None
    return _intervals(res, estimates, factors, sizes, statistics, base=base, widening=widening,
                      method=f"{label} ({ci_method}{suffix})")


def _resampled_units(n: int, method: str, coords, block_size, extent) -> tuple[np.ndarray, float | None]:
    """The unit each particle is resampled with (its spatial block, or itself), and the block size."""
    if method != "block":
        return np.arange(n), None
    if coords is None:
        raise InputError("the block bootstrap needs particle coordinates")
    return spatial_blocks(coords, block_size, extent), block_size


def _without_intervals(estimates: list, sizes: list[int], statistics, label: str,
                       base: dict) -> list:
    """Estimates without intervals, and why, for fewer than two resampling units."""
    n = base["n"]
    if n == 0:
        why = "no particles"
    elif n == 1:
        why = "one particle: an interval needs at least two"
    else:
        why = ("all particles fall in one spatial block (the volume is not larger than the "
               "correlation length), so the volume gives no interval for the population")
    return [_group([Interval(estimate=e, ci=None, method=label, note=why, **base) for e in est],
                   sizes, statistics) for est in estimates]


def _intervals(res, estimates: list, factors: list, sizes: list[int], statistics, *, base: dict,
               widening: dict | None, method: str) -> list:
    """Intervals of every column's statistics from a SciPy bootstrap result, widened by ``factors``."""
    confidence = base["confidence"]
    lo = np.atleast_1d(res.confidence_interval.low)
    hi = np.atleast_1d(res.confidence_interval.high)
    se = np.atleast_1d(res.standard_error)
    dist = np.atleast_2d(res.bootstrap_distribution)
    results, i = [], 0
    for est, fac in zip(estimates, factors):
        out = []
        for e, f in zip(est, fac):
            note = ""
            if not (np.isfinite(lo[i]) and np.isfinite(hi[i])):
                # BCa degenerates when every replicate is equal (e.g. all values the same)
                q = np.quantile(dist[i], [(1 - confidence) / 2, (1 + confidence) / 2])
                lo_i, hi_i = float(q[0]), float(q[1])
                note = "BCa undefined for this bootstrap distribution; percentile interval given"
            else:
                lo_i, hi_i = float(lo[i]), float(hi[i])
            f = float(f)
            extra = {"cross_block_factor": f,
                     "correlation_range": widening["cross_block_range"]} if widening else {}
            out.append(Interval(estimate=e, ci=(e + f * (lo_i - e), e + f * (hi_i - e)),
                                method=method, standard_error=float(se[i]) * f, note=note,
                                extra=extra, **base))
            i += 1
        results.append(_group(out, sizes, statistics))
    return results


def _check_columns(cols: list, method: str, posterior) -> None:
    """Raise :class:`InputError` for columns, a method or posterior samples the bootstrap cannot take."""
    n = cols[0].size
    for v in cols:
        if v.ndim != 1 or v.size != n:
            raise InputError(f"columns must be one-dimensional and of equal length, got shape {v.shape}")
        if not np.isfinite(v).all():
            raise InputError("values contain NaN or Inf; drop those particles first")
    if method not in ("block", "iid"):
        raise InputError(f"bootstrap method {method!r} must be 'block' or 'iid'")
    if posterior is not None and len(cols) != 1:
        raise InputError("posterior samples can be propagated for one quantity at a time")


def _evaluators(cols: list, statistics, w: np.ndarray, blocks: np.ndarray,
                n_units: int) -> tuple[list[int], list, list]:
    """Outputs per statistic, and per column the replicate evaluator and the estimates."""
    n = cols[0].size
    if n:
        first = np.argsort(cols[0], kind="stable")[:1]
        sizes = [int(np.size(_weighted(s, cols[0][first], w[first][None]))) for s in statistics]
    else:
        sizes = [1] * len(statistics)
    evaluators = [_replicate_statistics(statistics, v, w, blocks, n_units) for v in cols]
    # the observed sample is the replicate that draws every unit once
    estimates = [[float(e) for e in (f(np.arange(n_units)[None])[:, 0] if n
                                     else np.full(sum(sizes), np.nan))] for f in evaluators]
    return sizes, evaluators, estimates


def _replicate_statistics(statistics, v: np.ndarray, w: np.ndarray, blocks: np.ndarray,
                          n_units: int) -> Callable:
    """Evaluator of the statistics of ``v`` in replicates: drawn units (r, m) -> (n_outputs, r).

    From per-unit sums (:func:`_unit_statistics`) where the statistics allow,
    else from particle weights (:func:`_particle_statistics`).
    """
    order = np.argsort(v, kind="stable")
    vs, ws, bs = v[order], w[order], blocks[order]
    from_units = _unit_statistics(statistics, vs, ws, bs, n_units) if v.size else None
    if from_units is not None:
        return from_units
    return _particle_statistics(statistics, vs, ws, bs, n_units)


def _particle_statistics(statistics, vs, ws, bs, n_units) -> Callable:
    """Statistics from particle weights (any statistic, callables included): idx -> (n_outputs, r)."""

    def evaluate(idx, mt=None):
        wr = _multiplicity(idx, n_units)[..., bs] * ws
        cache: dict = {}
        return np.concatenate([_weighted(s, vs, wr, cache).reshape(-1, *wr.shape[:-1])
                               for s in statistics], axis=0)

    return evaluate


def _split(values: list, sizes: list[int]) -> list:
    out, i = [], 0
    for k in sizes:
        out.append(values[i:i + k])
        i += k
    return out


def _influences(cols: list, estimates: list, statistics, sizes: list[int]) -> np.ndarray:
    """Influence values of every column's statistics, stacked: (outputs, n)."""
    return np.concatenate([_influence(s, v, e) for v, est in zip(cols, estimates)
                           for s, e in zip(statistics, _split(est, sizes))], axis=0)


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
    if kind in ("fraction_above", "fraction_between", "histogram"):
        return np.ascontiguousarray(_indicators(spec, v).T) - np.asarray(est)[:, None]
    return np.zeros((len(est), v.size))


def cross_block_factors(psi, weights, coords, block_size: float, correlation_range: float, *,
                        extent=None, depth_axis: int | None = 0) -> np.ndarray:
    """How much wider a block-bootstrap interval must be to count cross-block covariance.

    The variance of a (linearised) statistic is ``sum_ij a_i a_j`` over
    correlated pairs, with ``a = weight * influence``.  Resampling whole
    blocks counts the pairs within each block (*within*); the total adds
    the pairs in different blocks closer than ``correlation_range``
    (:func:`_pair_sums`: every particle enters, at the resolution of cells
    of at most a third of the range).  Two corrections make the ratio
    follow the covariance rather than the layout:

    * A depth profile (a smooth trend along ``depth_axis``) correlates every
      pair at one depth, however far apart; counted as covariance it would
      grow with the range without limit.  The influence values are
      therefore taken about a quadratic fit in depth, as the variogram is.
      (The block bootstrap itself resamples the raw values, so a depth
      profile still widens it, as before.)
    * Influence values about the sample's own statistic sum to zero over all
      pairs, so sums over the pairs of a kernel ``K`` (same block or closer
      than the range) fall short of the covariance by about the kernel's
      share of all pairs, ``k = sum_K w_i w_j / (sum w)^2``; the total is
      divided by ``1 - k`` (``k`` at most 1/2: a range that large is
      flagged by the summary anyway).

    Parameters
    ----------
    psi : array_like, shape (k, n)
        Influence values of ``k`` statistics.
    weights : array_like, shape (n,)
    coords : array_like, shape (n, d)
    block_size : float
        Block side, as given to :func:`spatial_blocks`.
    correlation_range : float
        Distance beyond which particles are taken as uncorrelated.
    extent : array_like, shape (d,), optional
        As given to :func:`spatial_blocks`.
    depth_axis : int or None
        Column of ``coords`` along which a depth profile is removed; ``None``
        keeps any trend.

    Returns
    -------
    numpy.ndarray, shape (k,)
        Factors ``sqrt(total / ((1 - k) within))``, at least 1.

    Examples
    --------
    >>> import numpy as np
    >>> xyz = np.array([[0, 0, 9.0], [0, 0, 11.0], [0, 50, 9.0], [0, 50, 11.0]])
    >>> cross_block_factors(np.array([[1.0, 1.0, -1.0, -1.0]]), np.ones(4), xyz, 10.0, 5.0,
    ...                     extent=(10, 60, 20), depth_axis=None)
    array([2.])
    """
    within, total = cross_block_sums(psi, weights, coords, block_size, correlation_range,
                                     extent=extent, depth_axis=depth_axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(within > 0, total / within, 1.0)
    return np.sqrt(np.maximum(ratio, 1.0))


def cross_block_sums(psi, weights, coords, block_size: float, correlation_range: float, *,
                     extent=None, depth_axis: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two sums behind :func:`cross_block_factors`: *within*, and the corrected *total*.

    Parameters
    ----------
    psi, weights, coords, block_size, correlation_range, extent, depth_axis
        See :func:`cross_block_factors`.

    Returns
    -------
    within, total : numpy.ndarray, shape (k,)
        ``sum_b (sum_{i in b} a_i)^2`` and ``sum_K a_i a_j / (1 - k)``.  Sums
        of several volumes' values add up (pairs never span two volumes).
    """
    psi = np.atleast_2d(np.asarray(psi, dtype=np.float64))
    c = np.asarray(coords, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if depth_axis is not None and psi.shape[1] > 3 and np.ptp(c[:, depth_axis]) > 0:
        z = c[:, depth_axis]
        q = np.linalg.qr(np.column_stack([np.ones_like(z), z, z * z]))[0]
        psi = np.stack([row - q @ (q.T @ row) for row in psi])  # row by row: as if alone
    nb, edge = _block_grid(c, block_size, extent)
    a = np.vstack([psi * w[None], w[None]])  # last row: the weights, for the kernel's share
    within, total = _pair_sums(a, c, nb, edge, float(correlation_range))
    share = min(float(total[-1]) / float(w.sum()) ** 2, 0.5) if w.sum() > 0 else 0.0
    return within[:-1], total[:-1] / (1.0 - share)


def _pair_sums(a: np.ndarray, c: np.ndarray, nb: np.ndarray, edge: np.ndarray,
               radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``a_i a_j`` over ordered pairs in one block, and over pairs in one block or near.

    Each block is cut into ``q`` cells per axis, of side at most ``radius /
    CELLS_PER_RANGE`` (``q`` at most 8, and coarser cells if there would be
    more than :data:`MAX_CELLS`), and the values are summed per cell; a
    pair of particles is *near* when the centres of their cells are closer
    than ``radius``.  Both sums are exact for that kernel and use every
    particle: the near pairs are a convolution of the cell sums with a ball
    (FFT), from which the near pairs within one block (a quadratic form of
    each block's cells) are taken out.  The cost grows with the number of
    cells, not of particles or pairs.

    Parameters
    ----------
    a : numpy.ndarray, shape (k, n)
    c : numpy.ndarray, shape (n, d)
    nb, edge : numpy.ndarray, shape (d,)
        Blocks per axis and block edges (:func:`_block_grid`).
    radius : float

    Returns
    -------
    within, total : numpy.ndarray, shape (k,)
        ``sum_b (sum_{i in b} a_i)^2`` and that plus the near pairs in
        different blocks.
    """
    q = np.clip(np.ceil(edge * CELLS_PER_RANGE / radius), 1, 8).astype(np.int64)
    while np.prod(nb * q) > MAX_CELLS and q.max() > 1:
        q = np.maximum(1, (q + 1) // 2)
    h = edge / q
    shape = nb * q
    cell = np.clip(np.floor(c / h).astype(np.int64), 0, shape - 1)
    reach = np.minimum(np.floor(radius / h).astype(np.int64), shape - 1)  # no farther than the grid
    offsets = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    near = _BallConvolution(sum((o * hh) ** 2 for o, hh in zip(offsets, h)) < radius ** 2,
                            reach, shape)
    local = np.stack(np.meshgrid(*[np.arange(k) for k in q], indexing="ij"), -1).reshape(-1, len(q))
    local_near = (((local[:, None] - local[None]) * h) ** 2).sum(-1) < radius ** 2  # (Q, Q)
    # cell index in block-major order: (block, cell within the block)
    flat = np.ravel_multi_index(tuple((cell // q).T), tuple(nb)) * int(np.prod(q)) \
        + np.ravel_multi_index(tuple((cell % q).T), tuple(q))
    grid_order = np.ravel_multi_index(tuple(cell.T), tuple(shape))
    within, total = np.empty(len(a)), np.empty(len(a))
    for k, row in enumerate(a):
        cells = np.bincount(flat, weights=row, minlength=int(np.prod(shape))).reshape(-1, q.prod())
        within[k] = float((cells.sum(axis=1) ** 2).sum())
        same = float(np.einsum("bi,bi->", cells @ local_near, cells))
        total[k] = within[k] - same + near(np.bincount(grid_order, weights=row,
                                                        minlength=near.size))
    return within, total


class _BallConvolution:
    """``sum_x A(x) sum_o ball(o) A(x + o)`` of a grid ``A`` (flattened), by FFT."""

    def __init__(self, ball: np.ndarray, reach: np.ndarray, shape: np.ndarray):
        from scipy import fft

        self.fft = fft
        self.shape = tuple(int(s) for s in shape)
        self.size = int(np.prod(self.shape))
        self.padded = tuple(fft.next_fast_len(s + int(r), real=True)
                            for s, r in zip(self.shape, reach))
        kernel = np.zeros(self.padded)
        kernel[tuple(slice(0, 2 * int(r) + 1) for r in reach)] = ball
        kernel = np.roll(kernel, tuple(-int(r) for r in reach), axis=tuple(range(len(reach))))
        self.kernel = fft.rfftn(kernel)

    def __call__(self, flat: np.ndarray) -> float:
        grid = flat.reshape(self.shape)
        conv = self.fft.irfftn(self.fft.rfftn(grid, self.padded) * self.kernel, self.padded)
        return float((grid * conv[tuple(slice(0, s) for s in self.shape)]).sum())


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

    # drawn units (r, draws) -> statistics (k, r) of each posterior sample
    per_sample = [_replicate_statistics(statistics, p, w, blocks, n_units) for p in post]
    # segmentation only: the census statistic in each posterior sample
    seg_only = np.stack([f(np.arange(n_units)[None])[:, 0] for f in per_sample])
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
            full = seg_only[s]
            rep = per_sample[s](idx[rows]).T
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
                 cross_block_range: float | None = None, depth_axis: int | None = 0) -> Interval:
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
    depth_axis
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
                          cross_block_range=cross_block_range, depth_axis=depth_axis)[0]


def stat_name(spec: StatSpec) -> str:
    """Key under which a statistic is reported, e.g. ``"quantile_0.9"``."""
    return _spec_name(spec)
