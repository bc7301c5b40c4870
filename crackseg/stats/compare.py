"""Comparison of analysed samples: differences, effect sizes, tests and trends.

A *manifest* (CSV) lists analysed volumes, one per row: ``path`` (a folder
holding ``particles.csv``, or the CSV itself), ``sample``, and metadata
columns such as ``cycle``, ``soc``, ``c_rate``.  Volumes are grouped by one
column (default ``sample``).

Damage is clustered in space, so particles of one volume are not
independent.  Each volume is cut into spatial blocks sized from its own
damage correlation length, as ``crackseg stats`` cuts it
(:func:`volume_blocks`); without centroids in the table, particles are the
units.  Intervals come from a hierarchical bootstrap: volumes with
replacement, then the blocks of each chosen volume with replacement, the
within-volume part widened for covariance across block faces as in
:func:`~crackseg.stats.bootstrap.bootstrap_many`.  A group of several volumes
then speaks for the electrode they sample; a group of one volume only for
the population that volume samples (the output's ``estimand`` says which).

For each group against the reference group: difference of mean and median
crack fraction with percentile CIs, Cliff's delta with CI, and two tests by
permutation of spatial blocks between the groups (:func:`_block_permutation`:
blocks are the exchangeable units; the null distribution is widened for
covariance across block faces): of the difference of means, and of the
difference of mean ranks (the Mann-Whitney statistic; its particle-level
p-value, which treats particles as independent, is given beside it for
reference).  Over an ordered numeric grouping: the slope of group means with
a hierarchical-bootstrap CI and Spearman's rho of particle damage vs the
group value, tested by the same block permutation.

Examples
--------
>>> import numpy as np
>>> cliffs_delta(np.array([3.0, 4.0]), np.array([1.0, 2.0]))
1.0
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from crackseg.errors import InputError
from crackseg.stats.bootstrap import (
    _UNITS_FIRST_MAX,
    _unit_statistics,
    cross_block_sums,
    spatial_blocks,
)
from crackseg.stats.spatial import correlation_length


def cliffs_delta(x, y) -> float:
    """Cliff's delta ``P(X > Y) - P(X < Y)`` of two samples (-1..1).

    Computed from sorted ranks in O((n + m) log(n + m)).

    Examples
    --------
    >>> cliffs_delta([1, 2, 3], [1, 2, 3])
    0.0
    """
    x = np.asarray(x, dtype=np.float64)
    ys = np.sort(np.asarray(y, dtype=np.float64))
    if x.size == 0 or ys.size == 0:
        return float("nan")
    less = np.searchsorted(ys, x, side="left")           # y < x
    greater = ys.size - np.searchsorted(ys, x, side="right")  # y > x
    return float((less.sum() - greater.sum()) / (x.size * ys.size))


def read_manifest(path: str | os.PathLike, *, group_by: str = "sample") -> pd.DataFrame:
    """Read and check a comparison manifest.

    Parameters
    ----------
    path : path-like
        CSV with columns ``path`` and ``sample`` plus metadata; relative paths
        are relative to the manifest's folder.
    group_by : str
        Column that defines the groups.

    Returns
    -------
    pandas.DataFrame
        The manifest with ``particles_csv`` (resolved path) added.

    Raises
    ------
    InputError
        Missing columns or files, duplicate paths, empty group values, or a
        sample whose metadata differ between its rows.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such manifest")
    try:
        # Paths and sample names are text: folders named 001 or 100 are not numbers.
        m = pd.read_csv(p, dtype={"path": str, "sample": str}, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: not a readable CSV ({str(e).splitlines()[0]})") from None
    m.columns = [str(c).strip() for c in m.columns]
    for col in ("path", "sample"):
        if col not in m:
            raise InputError(f"{p}: manifest needs a '{col}' column (has: {', '.join(m.columns)})")
    if group_by not in m:
        raise InputError(f"{p}: no column {group_by!r} to group by (has: {', '.join(m.columns)})")
    if len(m) < 2:
        raise InputError(f"{p}: a comparison needs at least two analysed volumes")
    if m[group_by].isna().any():
        rows = [int(i) + 2 for i in np.flatnonzero(m[group_by].isna())]
        raise InputError(f"{p}: column {group_by!r} is empty in line(s) {rows}")
    resolved = []
    for raw in m["path"].astype(str):
        q = Path(raw)
        q = q if q.is_absolute() else (p.parent / q)
        csv = q / "particles.csv" if q.is_dir() else q
        if not csv.exists():
            raise InputError(f"{p}: {raw}: no particles.csv there; run `crackseg stats` first")
        resolved.append(csv.resolve())
    m["particles_csv"] = [str(r) for r in resolved]
    dup = m["particles_csv"][m["particles_csv"].duplicated()]
    if len(dup):
        raise InputError(f"{p}: {dup.iloc[0]} is listed twice")
    meta = [c for c in m.columns if c not in ("path", "particles_csv")]
    for sample, rows in m.groupby("sample"):
        for c in meta:
            if rows[c].nunique(dropna=False) > 1:
                raise InputError(
                    f"{p}: sample {sample!r} has different {c!r} values "
                    f"({', '.join(map(str, rows[c].unique()))}); fix the manifest"
                )
    if m[group_by].nunique() < 2:
        raise InputError(f"{p}: all volumes have the same {group_by!r}; nothing to compare")
    return m


@dataclass
class Volume:
    """The particles of one analysed volume: values and, for spatial blocks, centroids.

    Behaves as the array of its values (``np.asarray(volume)``,
    ``np.concatenate(volumes)``), so code that needs only the values can take
    it as one.

    Attributes
    ----------
    values : numpy.ndarray, shape (n,)
        One value per particle (e.g. crack fraction).
    coords : numpy.ndarray, shape (n, d), optional
        Centroids (z, y, x), or (y, x) in a section, in µm or voxels; without
        them particles are resampled one by one.
    extent : numpy.ndarray, shape (d,), optional
        Size of the volume in the unit of ``coords`` (default: the largest
        coordinate).
    depth_axis : int or None
        Column of ``coords`` along the electrode thickness.
    """

    values: np.ndarray
    coords: np.ndarray | None = None
    extent: np.ndarray | None = None
    depth_axis: int | None = 0

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.coords is not None:
            self.coords = np.asarray(self.coords, dtype=np.float64)
            if len(self.coords) != self.values.size or not np.isfinite(self.coords).all():
                raise InputError("a volume's coordinates must be finite, one row per particle")

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.values, dtype=dtype)

    def __len__(self) -> int:
        return int(self.values.size)


def load_volumes(manifest: pd.DataFrame, *, group_by: str = "sample", quantity: str = "crack_fraction",
                 border: str = "exclude") -> dict:
    """Per-group lists of :class:`Volume` (values and centroids) from a checked manifest.

    Border-truncated particles are dropped unless ``border == "include"``;
    the volume's extent comes from the particles' bounding boxes.
    """
    from crackseg.stats.table import particle_coords, spatial_axes, volume_extent

    groups: dict = {}
    for _, row in manifest.iterrows():
        t = pd.read_csv(row["particles_csv"])
        if quantity not in t:
            raise InputError(f"{row['particles_csv']}: no column {quantity!r}")
        axes = spatial_axes(t)
        boxes = bool(axes) and all(f"bbox_{a}1" in t for a in axes)
        extent = volume_extent(t)[0] if boxes else None
        if border != "include" and "touches_border" in t:
            t = t[~t["touches_border"].astype(bool)]
        v = t[quantity].to_numpy(dtype=np.float64)
        ok = np.isfinite(v)
        if not ok.any():
            raise InputError(f"{row['particles_csv']}: no particles left to compare")
        coords = particle_coords(t)[0][ok] if axes else None
        if coords is not None and not np.isfinite(coords).all():
            coords = None
        groups.setdefault(row[group_by], []).append(Volume(v[ok], coords, extent))
    return groups


#: Above this many spatial blocks (particles, without centroids) in the
#: groups together, a test's p-value comes from the normal law: with the exact
#: spread over all relabellings for a difference of means, else with the spread
#: of 999 of them, instead of ``n_permutations`` random relabellings.
PERMUTATION_MAX_N = 10000


@dataclass
class _Blocks:
    """Spatial blocks of one volume: the block of each particle and how they were sized."""

    unit: np.ndarray
    n_units: int
    block_size: float | None
    correlation_range: float | None
    extent: np.ndarray | None
    rule: str


def volume_blocks(volume: Volume, *, seed: int = 0) -> _Blocks:
    """Spatial blocks of a volume, sized as ``crackseg stats`` sizes them.

    Blocks of :data:`~crackseg.stats.summary.BLOCK_FACTOR` x the correlation
    length of the volume's own damage variogram
    (:func:`~crackseg.stats.summary.block_size_for`); the fitted model's
    correlation range widens the intervals.  Without centroids, or with
    fewer than 10 particles, every particle is its own block.
    """
    from crackseg.stats.summary import block_size_for  # summary imports this module's neighbours

    n = len(volume)
    if volume.coords is None or n < 10:
        why = "no centroids" if volume.coords is None else "fewer than 10 particles"
        return _Blocks(np.arange(n), n, None, None, None, f"{why}: particles resampled one by one")
    c = volume.coords
    extent = volume.extent if volume.extent is not None else c.max(axis=0) + 1e-9
    length, fit, _ = correlation_length(volume.values, c, seed=seed, depth_axis=volume.depth_axis)
    size, rule = block_size_for(length, extent)
    unit = spatial_blocks(c, size, extent)
    return _Blocks(unit, int(unit.max()) + 1, float(size),
                   fit.get("correlation_range") if length else None, np.asarray(extent), rule)


class _Group:
    """A group's pooled particle values, sorted, and its stream of hierarchical resamples.

    A resample draws volumes with replacement, then the spatial blocks of
    each drawn volume with replacement (particles, without centroids).  It
    is kept as the multiplicity of each block, and its mean and median are
    computed from per-block sums
    (:func:`~crackseg.stats.bootstrap._unit_statistics`, the block bootstrap's
    own evaluator), so that a replicate costs about the number of blocks,
    not of particles.
    """

    def __init__(self, vols: list[Volume], blocks: list[_Blocks]):
        self.vols, self.blocks = vols, blocks
        self.units = [b.n_units for b in blocks]
        self.n_units = int(sum(self.units))
        self.unit_offsets = np.concatenate([[0], np.cumsum(self.units)[:-1]]).astype(np.int64)
        self.values = np.concatenate([v.values for v in vols])
        self.unit = np.concatenate([b.unit + o for b, o in zip(blocks, self.unit_offsets)])
        self.volume = np.repeat(np.arange(len(vols)), [len(v) for v in vols])
        order = np.argsort(self.values, kind="stable")
        self.sorted, self.unit_sorted = self.values[order], self.unit[order]
        self.volume_of_unit = np.repeat(np.arange(len(vols)), self.units)
        self._evaluate = _unit_statistics(["mean", "median"], self.sorted,
                                          np.ones(self.sorted.size), self.unit_sorted,
                                          self.n_units)

    def draw(self, rng) -> tuple[np.ndarray, np.ndarray | None]:
        """Multiplicity of each block in one resample, and in its volume stage alone.

        The second is ``None`` for a group of one volume (the volume stage
        then keeps every block once).
        """
        if len(self.units) == 1:
            return np.bincount(rng.integers(0, self.n_units, self.n_units),
                               minlength=self.n_units), None
        pick = rng.integers(0, len(self.units), len(self.units))
        idx = np.concatenate([self.unit_offsets[i] + rng.integers(0, self.units[i], self.units[i])
                              for i in pick])
        stage = np.bincount(pick, minlength=len(self.units))[self.volume_of_unit]
        return np.bincount(idx, minlength=self.n_units), stage

    def statistics(self, m: np.ndarray) -> np.ndarray:
        """Mean and median (2, r) of the resamples with block multiplicities ``m`` (r, n_units)."""
        if self.n_units <= _UNITS_FIRST_MAX:
            return self._evaluate(np.zeros((len(m), 1), np.int64),
                                  mt=np.ascontiguousarray(m.T, dtype=np.float64))
        return np.concatenate([self._evaluate(np.repeat(np.arange(self.n_units), row)[None])
                               for row in m], axis=1)

    def spread(self, psi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block-bootstrap (*within*) and total variance sums of influence rows ``psi`` (k, n).

        Each volume's influence values are taken about their mean in that
        volume (what resampling its blocks varies); the total adds the pairs
        across block faces closer than the volume's correlation range
        (:func:`~crackseg.stats.bootstrap.cross_block_sums`).  Particles in
        input order.
        """
        psi = np.atleast_2d(psi)
        within, total = np.zeros(len(psi)), np.zeros(len(psi))
        for j, (vol, b) in enumerate(zip(self.vols, self.blocks)):
            p = psi[:, self.volume == j]
            p = p - p.mean(axis=1, keepdims=True)
            if b.correlation_range:
                w, t = cross_block_sums(p, np.ones(p.shape[1]), vol.coords, b.block_size,
                                        b.correlation_range, extent=b.extent,
                                        depth_axis=vol.depth_axis)
            else:
                w = t = np.array([(np.bincount(b.unit, weights=row) ** 2).sum() for row in p])
            within, total = within + w, total + t
        return within, total


def _cliffs_delta_counts(ma: np.ndarray, a_units: np.ndarray, below: np.ndarray,
                         upto: np.ndarray, mb: np.ndarray, b_units: np.ndarray) -> np.ndarray:
    """:func:`cliffs_delta` of pairs of resamples given as block multiplicities (r, n_units).

    ``a_units`` / ``b_units``: the block of each of the groups' sorted
    values; ``below[i]`` / ``upto[i]``: how many of group b's sorted values
    are < / <= group a's ``i``-th sorted value.  One row of either stands
    for all (the observed sample).
    """
    r = max(len(ma), len(mb))
    out = np.empty(r)
    for k in range(r):  # row by row: 10^5 counts stay in cache
        a, b = ma[min(k, len(ma) - 1)][a_units], mb[min(k, len(mb) - 1)][b_units]
        cum = np.concatenate([[0], np.cumsum(b)])
        n_a, n_b = int(a.sum()), int(cum[-1])
        out[k] = (int(a @ (cum[below] + cum[upto])) - n_a * n_b) / (n_a * n_b)
    return out


def _widening(groups: dict, order: list, reference) -> dict:
    """Factors that widen each group's (and comparison's) within-volume resampling.

    Resampling whole blocks misses the covariance across block faces, as in
    :func:`~crackseg.stats.bootstrap.bootstrap_many`; the factor is ``sqrt(total /
    within)`` of the statistic's influence values (at least 1).  Cliff's
    delta combines both groups' sums, each over its size squared.

    Returns
    -------
    dict
        ``(group, "mean")``, ``(group, "median")``, ``(group, "cliff")``
        (against the reference) -> factor, and ``(group, "sums_mean")`` ->
        (within, total) for the tests.
    """
    out = {}
    for g in order:
        grp = groups[g]
        v = grp.values
        med = float(np.median(v))
        w, t = grp.spread(np.stack([v, (v <= med).astype(float)]))
        out[g, "sums_mean"] = (float(w[0]), float(t[0]))
        for k, name in enumerate(("mean", "median")):
            out[g, name] = _widening_factor(w[k], t[k])
    ref = groups[reference]
    for g in order:
        if g == reference:
            continue
        x, y = groups[g].values, ref.values
        ys, xs = np.sort(y), np.sort(x)
        hx = (np.searchsorted(ys, x, "left") - (ys.size - np.searchsorted(ys, x, "right"))) / y.size
        hy = ((xs.size - np.searchsorted(xs, y, "right")) - np.searchsorted(xs, y, "left")) / x.size
        (wx,), (tx,) = groups[g].spread(hx)
        (wy,), (ty,) = ref.spread(hy)
        out[g, "cliff"] = _combined_factor([(wx, tx, x.size), (wy, ty, y.size)])
    return out


def _combined_factor(parts) -> float:
    """``sqrt(sum total / n^2 / sum within / n^2)`` over (within, total, n) parts, at least 1."""
    return _widening_factor(sum(p[0] / p[2] ** 2 for p in parts),
                            sum(p[1] / p[2] ** 2 for p in parts))


def _widening_factor(within: float, total: float) -> float:
    """``sqrt(total / within)``, at least 1 (1 without a within-block sum)."""
    return float(np.sqrt(max(1.0, total / within))) if within > 0 else 1.0


def _block_permutation(statistic, unit_sums: np.ndarray, labels: np.ndarray, *, widen: float,
                       n_permutations: int, rng, linear: bool = False) -> dict:
    """Two-sided p-value of a statistic of group sums against relabellings of spatial blocks.

    Under the null hypothesis every spatial block (the unit the intervals
    resample) is as likely to belong to one group as to another: the
    labels of the blocks are permuted, each group keeping its number of
    blocks.  Blocks are not independent of their neighbours, so the null
    distribution is widened by ``widen`` (the cross-block factor of the
    statistic, as for the intervals): ``p = (1 + #{|widen * T*| >= |T|}) /
    (1 + n)``.  With more than :data:`PERMUTATION_MAX_N` blocks, 999
    relabellings estimate the null's spread and the normal law gives ``p``;
    for a difference of two groups' means (``linear``) the spread is instead
    the exact standard deviation over all relabellings of its linearisation.

    Parameters
    ----------
    statistic : callable
        ``statistic(sums)`` with group sums of shape (r, n_groups, q) -> (r,).
    unit_sums : numpy.ndarray, shape (q, n_units)
        Per-block sums (e.g. of values and of particle counts).
    labels : numpy.ndarray of int, shape (n_units,)
        Group of each block.
    widen : float
    n_permutations : int
    rng : numpy.random.Generator
    linear : bool
        ``statistic`` is group 1's minus group 0's ``sum[0] / sum[1]``.

    Returns
    -------
    dict
        ``statistic`` (observed), ``p_value``, ``n_resamples``, ``widening``, ``method``.
    """
    n_groups = int(labels.max()) + 1
    total = unit_sums.sum(axis=1)

    def group_sums(lab):  # (r, n_units) labels -> (r, n_groups, q); group 0 by difference
        rest = np.stack([(lab == j).astype(np.float64) @ unit_sums.T
                         for j in range(1, n_groups)], axis=1)
        return np.concatenate([(total - rest.sum(axis=1))[:, None], rest], axis=1)

    observed = float(statistic(group_sums(labels[None]))[0])
    n_units = labels.size
    big = n_units > PERMUTATION_MAX_N
    out = {"statistic": observed, "widening": float(widen)}
    if big and linear:
        return {**out, "p_value": _normal_p(observed, widen * _relabelling_sd(unit_sums, labels)),
                "n_resamples": 0,
                "method": (f"normal law with the exact spread over all permutations of spatial "
                           f"blocks between groups (more than {PERMUTATION_MAX_N} blocks), "
                           "widened for covariance across block faces")}
    n_mc = min(n_permutations, 999) if big else n_permutations
    null = np.empty(n_mc)
    batch = max(1, int(4e6 // (n_units * n_groups)))
    for i0 in range(0, n_mc, batch):
        k = min(batch, n_mc - i0)
        null[i0:i0 + k] = statistic(group_sums(rng.permuted(np.tile(labels.astype(np.int8)
                                                                    if n_groups < 128 else labels,
                                                                    (k, 1)), axis=1)))
    if not big:
        hits = int(np.sum(widen * np.abs(null) >= abs(observed) * (1 - 1e-12)))
        return {**out, "p_value": (1 + hits) / (1 + n_mc), "n_resamples": n_mc,
                "method": "permutation of spatial blocks between groups, null widened for "
                          "covariance across block faces"}
    return {**out, "p_value": _normal_p(observed, widen * float(np.std(null, ddof=1))),
            "n_resamples": n_mc,
            "method": (f"normal law with the spread of {n_mc} permutations of spatial blocks "
                       f"between groups (more than {PERMUTATION_MAX_N} blocks), widened for "
                       "covariance across block faces")}


def _normal_p(observed: float, sd: float) -> float:
    """Two-sided p-value of ``observed`` under a centred normal law of spread ``sd``."""
    return min(1.0, 2.0 * float(stats.norm.sf(abs(observed) / sd))) if sd > 0 \
        else float(observed == 0)


def _relabelling_sd(unit_sums: np.ndarray, labels: np.ndarray) -> float:
    """Standard deviation over all relabellings of the linearised difference of two groups' means.

    With ``e_u = S_u - M n_u`` about the pooled mean ``M``, the difference is
    ``(1/N_1 + 1/N_0) sum_{u in group 1} e_u``; drawing group 1's ``k`` of
    ``U`` blocks without replacement gives it the variance ``k (U - k) /
    (U (U - 1)) sum e_u^2``.  With particles as blocks this is the exact
    permutation variance of the difference of means.
    """
    s, n = unit_sums
    e = s - n * (s.sum() / n.sum())
    k, u = int((labels == 1).sum()), labels.size
    n1 = float(n[labels == 1].sum())
    n0 = float(n.sum()) - n1
    return float((1 / n1 + 1 / n0) * np.sqrt(k * (u - k) / (u * (u - 1)) * float(e @ e)))


def _difference_of_means(sums: np.ndarray) -> np.ndarray:
    """Group 1 minus group 0 of ``sum[0] / sum[1]`` (group sums (r, 2, 2)); with rank sums, of mean ranks."""
    return sums[:, 1, 0] / sums[:, 1, 1] - sums[:, 0, 0] / sums[:, 0, 1]


def _stacked_units(groups: list) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of several groups numbered one after the other: each particle's block, each block's group."""
    n_units = [int(sum(grp.units)) for grp in groups]
    offsets = np.concatenate([[0], np.cumsum(n_units)[:-1]])
    units = np.concatenate([grp.unit + o for grp, o in zip(groups, offsets)])
    return units, np.repeat(np.arange(len(groups)), n_units)


def _unit_sums(units: np.ndarray, x: np.ndarray, n_units: int) -> np.ndarray:
    """Per-block sums of ``x`` and per-block particle counts, shape (2, n_units)."""
    return np.stack([np.bincount(units, weights=x, minlength=n_units),
                     np.bincount(units, minlength=n_units).astype(float)])


def _two_group_tests(groups: dict, g, reference, widen: dict, n_permutations: int,
                     rng) -> tuple[dict, dict]:
    """Block-permutation tests of group ``g`` against the reference: difference of means and of mean ranks."""
    grp, ref = groups[g], groups[reference]
    units, labels = _stacked_units([ref, grp])
    values = np.concatenate([ref.values, grp.values])
    ranks = stats.rankdata(values)

    def sums_of(x):
        return _unit_sums(units, x, labels.size)

    wr, tr = widen[reference, "sums_mean"]
    wg, tg = widen[g, "sums_mean"]
    f_mean = _combined_factor([(wr, tr, ref.values.size), (wg, tg, grp.values.size)])
    (wr_r,), (tr_r,) = ref.spread(ranks[:ref.values.size])
    (wg_r,), (tg_r,) = grp.spread(ranks[ref.values.size:])
    f_rank = _combined_factor([(wr_r, tr_r, ref.values.size), (wg_r, tg_r, grp.values.size)])
    perm = _block_permutation(_difference_of_means, sums_of(values), labels, widen=f_mean,
                              n_permutations=n_permutations, rng=rng, linear=True)
    ranked = _block_permutation(_difference_of_means, sums_of(ranks), labels, widen=f_rank,
                                n_permutations=n_permutations, rng=rng, linear=True)
    iid_mw = stats.mannwhitneyu(grp.values, ref.values, alternative="two-sided")
    perm.update(statistic="difference of means", estimate=perm.pop("statistic"))
    ranked.update(statistic="difference of mean ranks (Mann-Whitney U)",
                  estimate=ranked.pop("statistic"), U=float(iid_mw.statistic),
                  p_value_particles_independent=float(iid_mw.pvalue))
    return perm, ranked


def _trend_test(groups: dict, order: list, n_permutations: int, rng) -> dict:
    """Spearman's rho of particle damage vs the group value, tested by permuting spatial blocks.

    The statistic is computed from each group's rank sum and particle count
    (group values tied within a group get their mid-rank), so every
    relabelling of the blocks gives its exact rho.
    """
    values = np.concatenate([groups[g].values for g in order])
    ranks = stats.rankdata(values)
    sizes = [groups[g].values.size for g in order]
    units, labels = _stacked_units([groups[g] for g in order])
    unit_sums = _unit_sums(units, ranks, labels.size)
    n = values.size
    centre = (n + 1) / 2
    var_y = float(ranks @ ranks) - n * centre ** 2

    def spearman(sums):
        counts = sums[:, :, 1]
        mid = np.cumsum(counts, axis=1) - counts + (counts + 1) / 2
        cov = (mid * sums[:, :, 0]).sum(axis=1) - n * centre ** 2
        var_x = (counts * mid ** 2).sum(axis=1) - n * centre ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.sqrt(var_x * var_y)

    spread = [groups[g].spread(ranks[o:o + k]) for g, o, k in
              zip(order, np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)]
    widen = _widening_factor(sum(float(s[0][0]) for s in spread),
                             sum(float(s[1][0]) for s in spread))
    out = _block_permutation(spearman, unit_sums, labels, widen=widen,
                             n_permutations=n_permutations, rng=rng)
    return {"rho": out.pop("statistic"), **out}


def _ci(reps, confidence):
    a = (1 - confidence) / 2
    reps = np.asarray(reps)
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        return None
    q = np.quantile(reps, [a, 1 - a])
    return [float(q[0]), float(q[1])]


#: Replicates evaluated together (memory: this many times the particles of a group).
_CHUNK = 64


def _replicates(pooled: dict, order: list, reference, widen: dict, n_resamples: int,
                rng) -> tuple[dict, dict, dict]:
    """Widened hierarchical-bootstrap replicates of each group's mean and median and of Cliff's delta.

    Each replicate ``s*`` of a statistic is split into its volume stage
    ``s_v`` (the drawn volumes, every block once; the estimate for one
    volume) and the resampling of blocks within them, which alone is
    widened: ``s_v + f (s* - s_v)``.  The resamples of each group come in
    turn from one stream; the reference's part of the stream is replayed
    beside each other group's for Cliff's delta.
    """
    ref = pooled[reference]
    cross = {g: (np.searchsorted(ref.sorted, pooled[g].sorted, side="left"),
                 np.searchsorted(ref.sorted, pooled[g].sorted, side="right"))
             for g in order if g != reference}
    every = {g: np.ones((1, pooled[g].n_units), dtype=np.int64) for g in order}
    est = {g: pooled[g].statistics(every[g])[:, 0] for g in order}

    def delta(g, ma, mb):
        return _cliffs_delta_counts(ma, pooled[g].unit_sorted, *cross[g], mb, ref.unit_sorted)

    est_cliff = {g: delta(g, every[g], every[reference])[0] for g in cross}

    def cliff(g, draws_g, draws_ref):
        (ma, va), (mb, vb) = draws_g, draws_ref
        base = est_cliff[g] if va is None and vb is None else delta(
            g, every[g] if va is None else va, every[reference] if vb is None else vb)
        return base + widen[g, "cliff"] * (delta(g, ma, mb) - base)

    def chunks(grp, gen):
        for r0 in range(0, n_resamples, _CHUNK):
            draws = [grp.draw(gen) for _ in range(min(_CHUNK, n_resamples - r0))]
            stage = None if draws[0][1] is None else np.stack([d[1] for d in draws])
            yield slice(r0, r0 + len(draws)), (np.stack([d[0] for d in draws]), stage)

    reps = {(g, k): np.empty(n_resamples) for g in order for k in ("mean", "median", "cliff")}
    ref_state, pending = None, []
    for g in order:
        state = copy.deepcopy(rng.bit_generator.state)
        if g == reference:
            ref_state = state
        ref_chunks = chunks(ref, _generator(ref_state)) \
            if g != reference and ref_state is not None else None
        for rows, (m, stage) in chunks(pooled[g], rng):
            full = pooled[g].statistics(m)
            base = est[g][:, None] if stage is None else pooled[g].statistics(stage)
            for k, name in enumerate(("mean", "median")):
                reps[g, name][rows] = base[k] + widen[g, name] * (full[k] - base[k])
            if ref_chunks is not None:
                reps[g, "cliff"][rows] = cliff(g, (m, stage), next(ref_chunks)[1])
        if g != reference and ref_chunks is None:
            pending.append((g, state))
    for g, state in pending:  # groups ordered before the reference
        for (rows, draws), (_, draws_ref) in zip(chunks(pooled[g], _generator(state)),
                                                 chunks(ref, _generator(ref_state))):
            reps[g, "cliff"][rows] = cliff(g, draws, draws_ref)
    return ({g: reps[g, "mean"] for g in order}, {g: reps[g, "median"] for g in order},
            {g: reps[g, "cliff"] for g in cross})


def _estimand(hier: bool, spatial: bool) -> str:
    """What the intervals and the tests of a comparison speak for, in words."""
    units = "spatial blocks (sized from each volume's damage correlation length)" if spatial \
        else "particles"
    text = (f"Intervals: {'volumes, then ' if hier else ''}{units} within each volume are "
            "resampled, widened for covariance across block faces; "
            + ("a group of several volumes speaks for the electrode those volumes sample, "
               if hier else "")
            + "a group of one volume speaks only for the population that volume samples: "
              "damage clustered on scales larger than the field of view is not in its interval. "
              f"Tests: the null hypothesis is that the compared groups' {units} are "
              "exchangeable (one spatially clustered population), tested by permuting them "
              "between groups, with the null widened for covariance across block faces.")
    if hier:
        text += (" Variation between volumes beyond the clustering each volume shows is not in "
                 "the tests; for electrode-level claims read the intervals of the differences.")
    return text


def compare_samples(groups: dict, *, reference=None, order=None, confidence: float = 0.95,
                    n_resamples: int = 2000, n_permutations: int = 9999, seed: int = 0) -> dict:
    """Compare the damage of groups of analysed volumes.

    Parameters
    ----------
    groups : dict
        Group value -> list of :class:`Volume` (or 1-D arrays of particle
        values, resampled particle by particle), one per volume.
    reference : optional
        Group the others are compared with (default: the first in ``order``).
    order : sequence, optional
        Group order (default: sorted group values); used for the trend when
        the values are numeric.
    confidence : float
    n_resamples : int
        Hierarchical bootstrap replicates.
    n_permutations : int
        Relabellings of spatial blocks for each test.
    seed : int

    Returns
    -------
    dict
        ``groups`` (per group: volumes, particles, blocks, mean and median
        with CI), ``comparisons`` (per non-reference group: differences,
        Cliff's delta, tests), ``trend`` (numeric groups, at least three),
        ``method``, ``estimand``.
    """
    if len(groups) < 2:
        raise InputError("a comparison needs at least two groups")
    order = list(order) if order is not None else sorted(groups, key=_sort_key)
    reference = order[0] if reference is None else reference
    if reference not in groups:
        raise InputError(f"reference group {reference!r} is not among {order}")
    vols = {g: [v if isinstance(v, Volume) else Volume(v) for v in groups[g]] for g in order}
    pooled = {g: _Group(vols[g], [volume_blocks(v, seed=seed) for v in vols[g]]) for g in order}
    widen = _widening(pooled, order, reference)
    rep_mean, rep_median, rep_cliff = _replicates(pooled, order, reference, widen, n_resamples,
                                                  np.random.default_rng(seed))
    hier = any(len(v) > 1 for v in vols.values())
    spatial = any(b.block_size for grp in pooled.values() for b in grp.blocks)
    method = _method_text(hier, spatial)
    out_groups = {str(g): _group_summary(pooled[g], rep_mean[g], rep_median[g], widen, g,
                                         confidence, method) for g in order}
    test_rng = np.random.default_rng([seed, 1])
    reps = {"mean": rep_mean, "median": rep_median, "cliff": rep_cliff}
    comps = {str(g): _comparison(pooled, g, reference, widen, reps, n_permutations, test_rng,
                                 confidence, method) for g in order if g != reference}
    result = {"reference": str(reference), "order": [str(g) for g in order], "groups": out_groups,
              "comparisons": comps, "method": method, "estimand": _estimand(hier, spatial),
              "confidence": confidence, "n_resamples": n_resamples,
              "n_permutations": n_permutations, "seed": seed}
    if all(_is_number(g) for g in order) and len(order) >= 3:
        result["trend"] = _trend(pooled, order, rep_mean, n_permutations, test_rng, confidence,
                                 method)
    return result


def _method_text(hier: bool, spatial: bool) -> str:
    """How a comparison's intervals were made, in words."""
    units = "spatial blocks" if spatial else "particles"
    return (f"hierarchical bootstrap (volumes, then {units} within volumes; percentile"
            if hier else f"bootstrap over {units} (percentile") \
        + (", widened for covariance across block faces)" if spatial else ")")


def _interval(estimate, reps, confidence: float, method: str, **extra) -> dict:
    """An estimate with the percentile interval of its replicates ``reps``."""
    return {"estimate": float(estimate), "ci": _ci(reps, confidence), "confidence": confidence,
            "method": method, **extra}


def _comparison(pooled: dict, g, reference, widen: dict, reps: dict, n_permutations: int, rng,
                confidence: float, method: str) -> dict:
    """Group ``g`` against the reference: differences of means and medians, Cliff's delta, tests."""
    x, ref_all = pooled[g].values, pooled[reference].values
    means, ranks = _two_group_tests(pooled, g, reference, widen, n_permutations, rng)
    return {
        "reference": str(reference),
        "difference_of_means": _interval(x.mean() - ref_all.mean(),
                                         reps["mean"][g] - reps["mean"][reference],
                                         confidence, method),
        "difference_of_medians": _interval(np.median(x) - np.median(ref_all),
                                           reps["median"][g] - reps["median"][reference],
                                           confidence, method),
        "cliffs_delta": _interval(cliffs_delta(x, ref_all), reps["cliff"][g], confidence, method),
        "mann_whitney": ranks, "permutation_test": means,
    }


def _trend(pooled: dict, order: list, rep_mean: dict, n_permutations: int, rng,
           confidence: float, method: str) -> dict:
    """Slope of the group means over numeric group values, and Spearman's rho with its test."""
    xs = np.array([float(g) for g in order])
    slope_reps = np.polyfit(xs, np.array([rep_mean[g] for g in order]), 1)[0]
    point = np.polyfit(xs, [pooled[g].values.mean() for g in order], 1)[0]
    return {
        "variable": "group value",
        "slope_of_means": _interval(point, slope_reps, confidence,
                                    method + "; least-squares slope of group means"),
        "spearman": _trend_test(pooled, order, n_permutations, rng),
    }


def _group_summary(grp: _Group, rep_mean, rep_median, widen: dict, g, confidence: float,
                   method: str) -> dict:
    """One group's entry of the comparison: size, blocks, mean and median with CIs."""
    several = len(grp.vols) > 1
    return {
        "n_volumes": len(grp.vols), "n_particles": int(grp.values.size),
        "n_blocks": [int(b.n_units) for b in grp.blocks],
        "block_size": [b.block_size for b in grp.blocks],
        "correlation_range": [b.correlation_range for b in grp.blocks],
        "block_size_rule": [b.rule for b in grp.blocks],
        "mean": _interval(grp.values.mean(), rep_mean, confidence, method,
                          cross_block_factor=widen[g, "mean"]),
        "median": _interval(np.median(grp.values), rep_median, confidence, method,
                            cross_block_factor=widen[g, "median"]),
        "speaks_for": ("the electrodes sampled by several volumes" if several
                       else "the one scanned volume"),
    }


def _generator(state: dict) -> np.random.Generator:
    """A generator that continues from a saved bit-generator state."""
    bits = getattr(np.random, state["bit_generator"])()
    bits.state = state
    return np.random.Generator(bits)


def _is_number(v) -> bool:
    try:
        float(v)
        return not isinstance(v, bool)
    except (TypeError, ValueError):
        return False


def _sort_key(v):
    return (0, float(v), "") if _is_number(v) else (1, 0.0, str(v))


def comparison_table(result: dict) -> pd.DataFrame:
    """One row per group: its statistics and its comparison with the reference."""
    rows = []
    for g in result["order"]:
        s = result["groups"][g]
        row = {"group": g, "n_volumes": s["n_volumes"], "n_particles": s["n_particles"],
               **_estimate_columns("mean", s["mean"]), **_estimate_columns("median", s["median"])}
        c = result["comparisons"].get(g)
        if c:
            for key in ("difference_of_means", "difference_of_medians", "cliffs_delta"):
                row.update(_estimate_columns(key, c[key]))
            row["p_mann_whitney"] = c["mann_whitney"]["p_value"]
            row["p_permutation"] = c["permutation_test"]["p_value"]
        rows.append(row)
    return pd.DataFrame(rows)


def _estimate_columns(key: str, entry: dict) -> dict:
    """``key``, ``key_ci_low`` and ``key_ci_high`` of an interval entry (``None`` without a CI)."""
    low, high = entry["ci"] or [None, None]
    return {key: entry["estimate"], f"{key}_ci_low": low, f"{key}_ci_high": high}
