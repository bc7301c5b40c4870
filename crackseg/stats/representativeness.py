"""How wrong the usual small-sample protocols would have been, judged against the census.

Given the damage of every particle of a volume (the census), the protocols
researchers actually run are simulated many times and each result is
compared with the census:

``random_particles``
    the mean crack fraction of ``k`` particles picked at random
    (``k = 1`` is "one particle");
``neighbour_cluster``
    the mean of a random particle and its ``k - 1`` nearest neighbours (one
    field of view, or a handful of adjacent particles);
``cross_section``
    crack area / particle-envelope area in one 2-D slice at a random depth
    (what a single FIB/SEM section shows);
``section_particles``
    the mean damage of the particles of one such slice, each particle's
    damage being crack area / envelope area of its profile in the slice and
    profiles cut by the slice's edge left out: what ``crackseg run`` on one
    section reports as its mean damage (:func:`section_particle_means`);
``surface_view``
    the mean crack fraction in the outer shell of the particles at the top
    of the electrode (what top-view surface imaging sees).

For each: bias (mean estimate - census), spread (standard deviation, 5-95 %
range, min and max), and the probability of a wrong verdict ("severely
damaged" = mean crack fraction above a threshold, decided differently from
the census).  :func:`particles_needed` turns the census variance and the
block-bootstrap design effect into the number of particles needed for a
chosen precision of the mean.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> cf = rng.beta(0.5, 10, 500)
>>> xyz = rng.random((500, 3)) * 100
>>> r = representativeness(cf, xyz, ks=(1, 10), n_draws=200, seed=0)
>>> r["protocol"].tolist()
['random_particles', 'random_particles', 'neighbour_cluster', 'neighbour_cluster']
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import cKDTree

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema
from crackseg.stats.slices import section_measures

DEFAULT_KS = (1, 5, 10, 20, 50, 100, 200, 500)


def _summarise(protocol: str, k, estimates: np.ndarray, census: float, threshold: float,
               damaged: float, note: str = "") -> dict:
    e = np.asarray(estimates, dtype=np.float64)
    e = e[np.isfinite(e)]
    verdict = census > threshold
    return {
        "protocol": protocol, "k": k, "n_draws": int(e.size), "census": census,
        "mean_estimate": float(e.mean()), "bias": float(e.mean() - census),
        "std": float(e.std(ddof=1)) if e.size > 1 else 0.0,
        "p05": float(np.quantile(e, 0.05)), "p95": float(np.quantile(e, 0.95)),
        "min": float(e.min()), "max": float(e.max()),
        "p_wrong_verdict": float(np.mean((e > threshold) != verdict)),
        "p_below_damaged": float(np.mean(e < damaged)),
        "p_above_severe": float(np.mean(e > threshold)),
        "note": note,
    }


def representativeness(crack_fraction, coords, *, ks=DEFAULT_KS, n_draws: int = 2000,
                       seed: int | None = 0, census: float | None = None,
                       severe_threshold: float = 0.05, damaged_threshold: float = 0.01,
                       seg=None, instances=None, schema: LabelSchema = NMC4,
                       depth_axis: int = 0, surface_crack_fraction=None, depth=None,
                       surface_depth: float | None = None) -> pd.DataFrame:
    """Error of small-sample protocols against the census of all particles.

    Parameters
    ----------
    crack_fraction : array_like, shape (n,)
        Damage of every analysed particle (the census).
    coords : array_like, shape (n, 3)
        Particle centroids (z, y, x) for the neighbour-cluster protocol.
    ks : sequence of int
        Sample sizes; those larger than ``n`` are skipped.
    n_draws : int
        Simulated repetitions of each random protocol.
    seed : int or None
    census : float, optional
        Reference value (default: the mean of ``crack_fraction``).
    severe_threshold : float
        Verdict "severely damaged" when a protocol's estimate exceeds it.
    damaged_threshold : float
        Estimates below it read as "no damage" (``p_below_damaged``).
    seg, instances : array_like, shape (Z, Y, X), optional
        Segmentation and particle instances for the ``cross_section``
        protocol (every slice along ``depth_axis`` is one equally likely
        section, so its distribution is exact, not simulated).
    surface_crack_fraction, depth : array_like, shape (n,), optional
        For the ``surface_view`` protocol: each particle's shell crack
        fraction and depth.
    surface_depth : float, optional
        Particles with depth below it form the visible top layer (default:
        the median particle diameter, estimated as twice the median nearest
        neighbour distance).

    Returns
    -------
    pandas.DataFrame
        One row per protocol and ``k``: ``protocol, k, n_draws, census,
        mean_estimate, bias, std, p05, p95, min, max, p_wrong_verdict,
        p_below_damaged, p_above_severe, note``.
    """
    cf = np.asarray(crack_fraction, dtype=np.float64)
    n = cf.size
    if n == 0:
        raise InputError("no particles: representativeness needs a census")
    c = np.asarray(coords, dtype=np.float64)
    ref = float(cf.mean()) if census is None else float(census)
    rng = np.random.default_rng(seed)
    rows = []
    ks = [int(k) for k in ks if 1 <= int(k) <= n]
    for k in ks:
        picks = np.array([rng.choice(n, k, replace=False) for _ in range(n_draws)]).reshape(-1, k)
        est = cf[picks].mean(axis=1)
        rows.append(_summarise("random_particles", k, est, ref, severe_threshold, damaged_threshold))
    tree = cKDTree(c)
    for k in ks:
        seeds = rng.integers(0, n, n_draws)
        if k == 1:
            est = cf[seeds]
        else:
            _, idx = tree.query(c[seeds], k=k)
            est = cf[idx].mean(axis=1)
        rows.append(_summarise("neighbour_cluster", k, est, ref, severe_threshold, damaged_threshold))
    if seg is not None and instances is not None and schema.has("crack"):
        fr, means = section_measures(seg, instances, schema=schema, axis=depth_axis)
        if np.isfinite(fr).any():
            rows.append(_summarise("cross_section", 1, fr, ref, severe_threshold, damaged_threshold,
                                   note="crack area / envelope area in one slice; every slice "
                                   "along the depth axis counted once"))
        if np.isfinite(means).any():
            rows.append(_summarise(
                "section_particles", 1, means, ref, severe_threshold, damaged_threshold,
                note="mean damage of the particle profiles in one slice (profiles cut by its "
                "edge left out), as a run on that one section reports it; every slice along the "
                "depth axis counted once"))
    if surface_crack_fraction is not None and depth is not None:
        scf = np.asarray(surface_crack_fraction, dtype=np.float64)
        d = np.asarray(depth, dtype=np.float64)
        if surface_depth is None:
            nn = tree.query(c, k=2)[0][:, 1] if n > 1 else np.array([np.inf])
            surface_depth = float(np.median(nn))
        top = (d <= surface_depth) & np.isfinite(scf)
        if top.any():
            row = _summarise("surface_view", int(top.sum()), np.array([scf[top].mean()]), ref,
                             severe_threshold, damaged_threshold,
                             note=f"shell crack fraction of the {int(top.sum())} particles with "
                             f"depth <= {surface_depth:.3g}")
            rows.append(row)
    return pd.DataFrame(rows)


def particles_needed(crack_fraction, *, relative_precision: float = 0.1, confidence: float = 0.95,
                     design_effect: float = 1.0) -> dict:
    """Particles needed to know the mean crack fraction to a relative precision.

    ``n = (z * sd / (r * mean))^2`` for particles drawn independently across
    the electrode; measured particles that come as spatial clusters (one
    volume, one region) carry less information each, so ``n`` grows by the
    design effect ``deff = Var_block(mean) / Var_iid(mean)``.

    Parameters
    ----------
    crack_fraction : array_like, shape (n,)
    relative_precision : float
        Half-width of the interval relative to the mean (0.1 = ±10 %).
    confidence : float
    design_effect : float
        From the block and iid bootstrap standard errors of the mean.

    Returns
    -------
    dict
        ``n_independent``, ``n_clustered``, ``design_effect``,
        ``relative_precision``, ``confidence``, ``coefficient_of_variation``.

    Examples
    --------
    >>> particles_needed([0.0, 0.2], relative_precision=0.1)["n_independent"]
    769
    """
    cf = np.asarray(crack_fraction, dtype=np.float64)
    m = float(cf.mean())
    sd = float(cf.std(ddof=1)) if cf.size > 1 else float("nan")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    cv = sd / m if m > 0 else float("inf")
    n_iid = (z * cv / relative_precision) ** 2 if np.isfinite(cv) else float("inf")
    deff = max(float(design_effect), 1.0) if np.isfinite(design_effect) else float("nan")
    return {
        "relative_precision": relative_precision, "confidence": confidence,
        "coefficient_of_variation": cv,
        "n_independent": int(np.ceil(n_iid)) if np.isfinite(n_iid) else None,
        "design_effect": float(design_effect),
        "n_clustered": int(np.ceil(n_iid * deff)) if np.isfinite(n_iid * deff) else None,
    }
