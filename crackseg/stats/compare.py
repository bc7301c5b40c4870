"""Comparison of analysed samples: differences, effect sizes, tests and trends.

A *manifest* (CSV) lists analysed volumes, one per row: ``path`` (a folder
holding ``particles.csv``, or the CSV itself), ``sample``, and metadata
columns such as ``cycle``, ``soc``, ``c_rate``.  Volumes are grouped by one
column (default ``sample``); several volumes per group are resampled
hierarchically (volumes with replacement, then particles within each
chosen volume), so intervals speak for the groups' electrodes rather than
for the scanned volumes.  With one volume per group, particles are resampled
and the interval speaks for that volume only (the output says which).

For each group against the reference group: difference of mean and median
crack fraction with percentile CIs, Cliff's delta with CI, the Mann-Whitney
U test (:func:`scipy.stats.mannwhitneyu`) and a permutation test of the
difference of means (:func:`scipy.stats.permutation_test`; with more than
:data:`PERMUTATION_MAX_N` particles in the two groups, the normal law with the
exact mean and variance of the difference over all relabellings, which the
random relabellings only estimate).  Over an ordered
numeric grouping: Spearman's rho (:func:`scipy.stats.spearmanr`) of
particle damage vs the group value and the slope of group means, with a
hierarchical-bootstrap CI.

Examples
--------
>>> import numpy as np
>>> cliffs_delta(np.array([3.0, 4.0]), np.array([1.0, 2.0]))
1.0
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from crackseg.errors import InputError


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


def load_volumes(manifest: pd.DataFrame, *, group_by: str = "sample", quantity: str = "crack_fraction",
                 border: str = "exclude") -> dict:
    """Per-group lists of per-volume value arrays from a checked manifest.

    Border-truncated particles are dropped unless ``border == "include"``.
    """
    groups: dict = {}
    for _, row in manifest.iterrows():
        t = pd.read_csv(row["particles_csv"])
        if quantity not in t:
            raise InputError(f"{row['particles_csv']}: no column {quantity!r}")
        if border != "include" and "touches_border" in t:
            t = t[~t["touches_border"].astype(bool)]
        v = t[quantity].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise InputError(f"{row['particles_csv']}: no particles left to compare")
        groups.setdefault(row[group_by], []).append(v)
    return groups


#: Above this many particles in the two groups together, the permutation test
#: of the difference of means uses the normal law with the exact permutation
#: variance instead of random relabellings (module docs).
PERMUTATION_MAX_N = 10000


def _hier_indices(sizes: list[int], offsets: np.ndarray, rng) -> np.ndarray:
    """One hierarchical resample: volumes with replacement, then particles within each.

    Returned as indices into the group's pooled particles (volumes concatenated
    in order; ``offsets`` are where each starts).
    """
    if len(sizes) == 1:
        return rng.integers(0, sizes[0], sizes[0])
    pick = rng.integers(0, len(sizes), len(sizes))
    return np.concatenate([offsets[i] + rng.integers(0, sizes[i], sizes[i]) for i in pick])


class _Group:
    """A group's pooled particle values, sorted, and its stream of hierarchical resamples.

    Each resample is kept as counts over the sorted values, so that medians
    and Cliff's deltas of resamples need no sorting, and only one resample
    is held at a time (memory grows with the particles, not the resamples).
    """

    def __init__(self, vols: list[np.ndarray]):
        self.sizes = [int(v.size) for v in vols]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.values = np.concatenate(vols)
        self.order = np.argsort(self.values, kind="stable")
        self.rank = np.empty_like(self.order)
        self.rank[self.order] = np.arange(self.order.size)
        self.sorted = self.values[self.order]

    def draw(self, rng, *, mean: bool = True) -> tuple[np.ndarray, float | None]:
        """Counts of one resample over the sorted values, and its mean (as ``np.mean`` of the resample)."""
        idx = _hier_indices(self.sizes, self.offsets, rng)
        counts = np.bincount(self.rank[idx], minlength=self.sorted.size)
        return counts, (float(self.values[idx].mean()) if mean else None)

    def median(self, counts: np.ndarray) -> float:
        """``np.median`` of the resample with these counts."""
        cum = np.cumsum(counts)
        n = int(cum[-1])
        lo, hi = self.sorted[np.searchsorted(cum, [(n - 1) // 2, n // 2], side="right")]
        return float(lo) if n % 2 else float((lo + hi) / 2)


def _cliffs_delta_counts(ca: np.ndarray, below: np.ndarray, upto: np.ndarray,
                         cb: np.ndarray) -> float:
    """:func:`cliffs_delta` of two resamples given as counts over their groups' sorted values.

    ``below[i]`` / ``upto[i]``: how many of group b's sorted values are < / <=
    group a's ``i``-th sorted value.
    """
    cum = np.concatenate([[0], np.cumsum(cb)])
    na, nb = int(ca.sum()), int(cum[-1])
    less = int(ca @ cum[below])
    greater = int(ca @ (nb - cum[upto]))
    return float((less - greater) / (na * nb))


def _permutation_test(x: np.ndarray, y: np.ndarray, n_permutations: int, seed: int) -> dict:
    """Two-sided test of the difference of means against relabellings of the particles."""
    note = "particles treated as exchangeable between groups"
    if x.size + y.size <= PERMUTATION_MAX_N:
        perm = stats.permutation_test(
            (x, y), lambda a, b, axis=-1: a.mean(axis=axis) - b.mean(axis=axis),
            vectorized=True, n_resamples=n_permutations, rng=seed,
            batch=max(1, int(2e7 // (x.size + y.size))))
        return {"p_value": float(perm.pvalue), "n_resamples": n_permutations,
                "statistic": "difference of means", "note": note}
    n1, n2 = x.size, y.size
    n = n1 + n2
    pooled = np.concatenate([x, y])
    sd = np.sqrt(n * n * pooled.var() / (n1 * n2 * (n - 1)))
    d = float(x.mean() - y.mean())
    p = min(1.0, 2.0 * float(stats.norm.sf(abs(d) / sd))) if sd > 0 else (1.0 if d == 0 else 0.0)
    return {"p_value": p, "n_resamples": 0, "statistic": "difference of means",
            "method": ("normal law with the exact variance over all relabellings (more than "
                       f"{PERMUTATION_MAX_N} particles)"), "note": note}


def _ci(reps, confidence):
    a = (1 - confidence) / 2
    reps = np.asarray(reps)
    reps = reps[np.isfinite(reps)]
    if reps.size < 2:
        return None
    q = np.quantile(reps, [a, 1 - a])
    return [float(q[0]), float(q[1])]


def compare_samples(groups: dict, *, reference=None, order=None, confidence: float = 0.95,
                    n_resamples: int = 2000, n_permutations: int = 9999, seed: int = 0) -> dict:
    """Compare the damage of groups of analysed volumes.

    Parameters
    ----------
    groups : dict
        Group value -> list of 1-D arrays, one per volume (particle values).
    reference : optional
        Group the others are compared with (default: the first in ``order``).
    order : sequence, optional
        Group order (default: sorted group values); used for the trend when
        the values are numeric.
    confidence : float
    n_resamples : int
        Hierarchical bootstrap replicates.
    n_permutations : int
        Resamples of the permutation test.
    seed : int

    Returns
    -------
    dict
        ``groups`` (per group: volumes, particles, mean and median with CI),
        ``comparisons`` (per non-reference group: differences, Cliff's delta,
        tests), ``trend`` (numeric groups, at least three), ``method``.
    """
    if len(groups) < 2:
        raise InputError("a comparison needs at least two groups")
    order = list(order) if order is not None else sorted(groups, key=_sort_key)
    reference = order[0] if reference is None else reference
    if reference not in groups:
        raise InputError(f"reference group {reference!r} is not among {order}")
    rng = np.random.default_rng(seed)
    pooled = {g: _Group(groups[g]) for g in order}
    ref = pooled[reference]
    cross = {g: (np.searchsorted(ref.sorted, pooled[g].sorted, side="left"),
                 np.searchsorted(ref.sorted, pooled[g].sorted, side="right"))
             for g in order if g != reference}
    # The resamples of each group in turn, from one stream; the reference's part
    # of the stream is replayed beside each other group's for Cliff's delta.
    rep_mean = {g: np.empty(n_resamples) for g in order}
    rep_median = {g: np.empty(n_resamples) for g in order}
    rep_cliff = {g: np.empty(n_resamples) for g in cross}
    ref_state = None
    pending = []
    for g in order:
        state = copy.deepcopy(rng.bit_generator.state)
        if g == reference:
            ref_state = state
        ref_rng = _generator(ref_state) if g != reference and ref_state is not None else None
        grp = pooled[g]
        for r in range(n_resamples):
            counts, rep_mean[g][r] = grp.draw(rng)
            rep_median[g][r] = grp.median(counts)
            if ref_rng is not None:
                cb, _ = ref.draw(ref_rng, mean=False)
                rep_cliff[g][r] = _cliffs_delta_counts(counts, *cross[g], cb)
        if g != reference and ref_rng is None:
            pending.append((g, state))
    for g, state in pending:  # groups ordered before the reference
        g_rng, ref_rng = _generator(state), _generator(ref_state)
        for r in range(n_resamples):
            ca, _ = pooled[g].draw(g_rng, mean=False)
            cb, _ = ref.draw(ref_rng, mean=False)
            rep_cliff[g][r] = _cliffs_delta_counts(ca, *cross[g], cb)
    hier = any(len(v) > 1 for v in groups.values())
    method = ("hierarchical bootstrap (volumes, then particles within volumes; percentile)"
              if hier else "bootstrap over particles (percentile)")
    out_groups = {}
    for g in order:
        allv = np.concatenate(groups[g])
        out_groups[str(g)] = {
            "n_volumes": len(groups[g]), "n_particles": int(allv.size),
            "mean": {"estimate": float(allv.mean()), "ci": _ci(rep_mean[g], confidence),
                     "confidence": confidence, "method": method},
            "median": {"estimate": float(np.median(allv)),
                       "ci": _ci(rep_median[g], confidence),
                       "confidence": confidence, "method": method},
            "speaks_for": ("the electrodes sampled by several volumes" if len(groups[g]) > 1
                           else "the one scanned volume"),
        }
    comps = {}
    ref_all = np.concatenate(groups[reference])
    for g in order:
        if g == reference:
            continue
        x = np.concatenate(groups[g])
        d_mean = rep_mean[g] - rep_mean[reference]
        d_med = rep_median[g] - rep_median[reference]
        d_cliff = rep_cliff[g]
        mw = stats.mannwhitneyu(x, ref_all, alternative="two-sided")
        comps[str(g)] = {
            "reference": str(reference),
            "difference_of_means": {"estimate": float(x.mean() - ref_all.mean()),
                                    "ci": _ci(d_mean, confidence), "confidence": confidence,
                                    "method": method},
            "difference_of_medians": {"estimate": float(np.median(x) - np.median(ref_all)),
                                      "ci": _ci(d_med, confidence), "confidence": confidence,
                                      "method": method},
            "cliffs_delta": {"estimate": cliffs_delta(x, ref_all), "ci": _ci(d_cliff, confidence),
                             "confidence": confidence, "method": method},
            "mann_whitney": {"U": float(mw.statistic), "p_value": float(mw.pvalue),
                             "note": "particles treated as independent"},
            "permutation_test": _permutation_test(x, ref_all, n_permutations, seed),
        }
    result = {"reference": str(reference), "order": [str(g) for g in order], "groups": out_groups,
              "comparisons": comps, "method": method, "confidence": confidence,
              "n_resamples": n_resamples, "seed": seed}
    numeric = all(_is_number(g) for g in order)
    if numeric and len(order) >= 3:
        xs = np.array([float(g) for g in order])
        means = np.array([rep_mean[g] for g in order])  # (groups, resamples)
        slope_reps = np.polyfit(xs, means, 1)[0]
        point = np.polyfit(xs, [np.concatenate(groups[g]).mean() for g in order], 1)[0]
        allx = np.concatenate([np.full(np.concatenate(groups[g]).size, float(g)) for g in order])
        ally = np.concatenate([np.concatenate(groups[g]) for g in order])
        rho = stats.spearmanr(allx, ally)
        result["trend"] = {
            "variable": "group value", "slope_of_means": {
                "estimate": float(point), "ci": _ci(slope_reps, confidence),
                "confidence": confidence, "method": method + "; least-squares slope of group means"},
            "spearman": {"rho": float(rho.statistic), "p_value": float(rho.pvalue),
                         "note": "particle level; particles treated as independent"},
        }
    return result


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
               "mean": s["mean"]["estimate"],
               "mean_ci_low": (s["mean"]["ci"] or [None, None])[0],
               "mean_ci_high": (s["mean"]["ci"] or [None, None])[1],
               "median": s["median"]["estimate"],
               "median_ci_low": (s["median"]["ci"] or [None, None])[0],
               "median_ci_high": (s["median"]["ci"] or [None, None])[1]}
        c = result["comparisons"].get(g)
        if c:
            for key in ("difference_of_means", "difference_of_medians", "cliffs_delta"):
                row[key] = c[key]["estimate"]
                row[f"{key}_ci_low"] = (c[key]["ci"] or [None, None])[0]
                row[f"{key}_ci_high"] = (c[key]["ci"] or [None, None])[1]
            row["p_mann_whitney"] = c["mann_whitney"]["p_value"]
            row["p_permutation"] = c["permutation_test"]["p_value"]
        rows.append(row)
    return pd.DataFrame(rows)
