"""``summary.json`` of one analysed volume: the damage distribution with honest CIs.

:func:`summarize` takes the per-particle table and returns a JSON-ready dict
with at least the keys of DESIGN.md (``n_particles``, ``damage.mean``,
``damage.median`` each with ``estimate``, ``ci``, ``confidence``,
``method``; ``provenance``), plus quantiles, fractions above thresholds,
the histogram, other per-particle quantities, spatial heterogeneity
(correlation length, Moran's I, depth profile, hot spots), the
representativeness of small-sample protocols, and the estimand in words.

Block size rule: the spatial blocks of the default bootstrap are cubes of
side ``block_factor`` x the correlation length fitted to the variogram of
particle damage (default factor :data:`BLOCK_FACTOR`).

Examples
--------
>>> from crackseg.synthetic import generate_electrode          # doctest: +SKIP
>>> ph = generate_electrode((96, 96, 96), seed=0, imaging=False)  # doctest: +SKIP
>>> t = particle_table(ph.labels, ph.instances, voxel_size_um=ph.voxel_size_um)  # doctest: +SKIP
>>> summarize(t)["damage"]["mean"]["method"]                  # doctest: +SKIP
'spatial block bootstrap (BCa)'
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from crackseg._version import __version__
from crackseg.errors import InputError
from crackseg.io import json_safe
from crackseg.stats.bootstrap import bootstrap_ci, bootstrap_columns, stat_name
from crackseg.stats.distribution import (
    DEFAULT_QUANTILES,
    DEFAULT_THRESHOLDS,
    distribution_statistics,
    population,
)
from crackseg.stats.representativeness import particles_needed, representativeness
from crackseg.stats.spatial import correlation_length, depth_profile, hot_spots, morans_i
from crackseg.stats.table import (
    align_posterior,
    depth_values,
    is_section_table,
    is_stack_table,
    particle_coords,
    unit_label,
    volume_extent,
)

#: Block side = BLOCK_FACTOR x fitted correlation length.  The correlation range
#: that widens the intervals is the fitted model's radius holding 95 % of its
#: covariance mass (:func:`crackseg.stats.spatial.covariance_range`).
BLOCK_FACTOR = 2.0

#: Fewest blocks the block bootstrap is run with.
MIN_BLOCKS = 8

OTHER_QUANTITIES = ("pore_fraction", "void_fraction", "surface_crack_fraction",
                    "internal_crack_fraction", "equivalent_diameter_um", "equivalent_diameter_vox",
                    "equivalent_diameter_px", "sphericity", "circularity")
"""Columns summarised besides the damage, where the table has them (a diameter in voxels or
pixels only when the voxel size is unknown)."""


def segmentation_error_statement(n_samples: int | None) -> str:
    """Whether an interval carries segmentation error, in plain words (``summary.json``, report).

    Examples
    --------
    >>> segmentation_error_statement(None).split(":")[0]
    'not included'
    """
    if n_samples:
        return (f"included in part: propagated from {n_samples} posterior samples of the "
                "segmentation, which do not see a systematic over- or under-calling of cracks, "
                "so this part is a lower bound")
    return ("not included: no posterior samples of the segmentation and no annotated slices to "
            "measure it; run with --uncertainty tta to include the part of it the model can see")


def n_blocks_for(size: float, extent) -> int:
    """Number of blocks of side ``size`` the grid of :func:`~crackseg.stats.bootstrap.spatial_blocks` makes."""
    ext = np.asarray(extent, dtype=np.float64)
    return int(np.prod(np.maximum(1, np.round(ext / size))))


def block_size_for(length: float | None, extent, *, factor: float = BLOCK_FACTOR,
                   min_blocks: int = MIN_BLOCKS) -> tuple[float, str]:
    """Side of the bootstrap blocks from a correlation length.

    Parameters
    ----------
    length : float or None
        Fitted correlation length (same unit as ``extent``); ``None`` when no
        fit was possible.
    extent : array_like, shape (3,)
        Volume size (z, y, x).
    factor : float
        Blocks span this many correlation lengths.
    min_blocks : int
        If fewer blocks than this would fit, the blocks are shrunk until
        they do (and the rule says so: the volume then spans too few
        correlation lengths for the interval to capture all clustering).

    Returns
    -------
    size : float
    rule : str
        How it was chosen, for the output.

    Examples
    --------
    >>> block_size_for(10.0, (200, 200, 200))
    (20.0, '2 x correlation length 10')
    """
    ext = np.asarray(extent, dtype=np.float64)
    if length is None or not np.isfinite(length) or length <= 0:
        size, rule = float(ext.max()) / 3, "no correlation length could be fitted"
    else:
        size, rule = float(factor * length), f"{factor:g} x correlation length {length:.3g}"
    if n_blocks_for(size, ext) < min_blocks:
        options = sorted({float(e) / k for e in ext for k in range(1, 64)}, reverse=True)
        size = next((o for o in options if n_blocks_for(o, ext) >= min_blocks), options[-1])
        rule += (f"; shrunk to {size:.3g} so that {min_blocks} blocks fit (SMALL VOLUME: it spans "
                 "too few correlation lengths, the interval may be too narrow)")
    return size, rule


def summarize(table: pd.DataFrame, *, quantity: str = "crack_fraction", confidence: float = 0.95,
              n_resamples: int = 2000, seed: int = 0, method: str = "block",
              block_size: float | None = None, block_factor: float = BLOCK_FACTOR,
              border: str = "exclude", thresholds=DEFAULT_THRESHOLDS,
              quantiles=DEFAULT_QUANTILES, posterior=None, seg=None, instances=None,
              schema=None, spatial: bool = True, protocols: bool = True,
              n_draws: int = 2000, relative_precision: float = 0.1,
              provenance: dict | None = None) -> dict:
    """Distribution statistics of one volume's particles, with CIs and provenance.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`crackseg.stats.particle_table` (or ``particles.csv``).
    quantity : str
        Column summarised as ``damage`` (default ``crack_fraction``).
    confidence : float
        Level of every interval.
    n_resamples : int
        Bootstrap resamples.
    seed : int
        Seed of every random step (recorded).
    method : {"block", "iid"}
        Spatial block bootstrap (default) or iid over particles.
    block_size : float, optional
        Block side (µm, or voxels without voxel size); default
        ``block_factor`` x the fitted correlation length.
    border : {"exclude", "miles", "include"}
        Treatment of border-truncated particles (:func:`~crackseg.stats.distribution.population`).
    thresholds : sequence of float
        Damage thresholds: the first is "damaged", the last "severely damaged".
    quantiles : sequence of float
    posterior : array_like (n_samples, n_particles) or (labels, array), optional
        Posterior samples of the crack fraction (segmentation uncertainty).
    seg, instances : array_like (Z, Y, X), optional
        For the cross-section protocol of the representativeness analysis.
    schema : LabelSchema, optional
    spatial, protocols : bool
        Include the spatial analysis / the representativeness analysis.
    n_draws : int
        Simulated repetitions per representativeness protocol.
    relative_precision : float
        Target of :func:`~crackseg.stats.representativeness.particles_needed`.
    provenance : dict, optional
        Merged into ``provenance`` (input, model, model_sha256, ...).

    Returns
    -------
    dict
        JSON-ready summary (see module docs).

    Raises
    ------
    InputError
        No particles, or none left after the border policy.
    """
    from crackseg.labels import NMC4

    schema = schema or NMC4
    p = _analysed_particles(table, quantity, border, posterior)
    if is_section_table(table) and seg is not None and np.ndim(seg) != 3:
        seg = instances = None  # the cross-section protocol needs a volume (or a stack)
    depth_axis = table.attrs.get("depth_axis", 0)
    fit = _damage_correlation(p, seed, depth_axis)
    block_size, rule = _block_size_and_rule(method, block_size, fit[0], p.extent, block_factor)
    boot = dict(block_size=block_size, extent=p.extent, method=method, confidence=confidence,
                n_resamples=n_resamples, seed=seed, unit=p.unit, depth_axis=depth_axis,
                cross_block_range=fit[1].get("correlation_range")
                if (method == "block" and fit[0]) else None)
    damage, iid_mean = _damage_statistics(p, quantity, thresholds, quantiles, boot)
    summary = {
        **_description(table, p, border), "damage": damage,
        "other_quantities": _other_quantities(p, quantity, boot),
        "bootstrap": _bootstrap_settings(boot, rule, fit[1]),
        "thresholds": {"damaged": float(min(thresholds)) if len(thresholds) else None,
                       "severely_damaged": float(max(thresholds)) if len(thresholds) else None},
        "notes": _notes(table, p, rule, fit[0], block_factor, boot["cross_block_range"]),
    }
    if spatial:
        summary["spatial"] = _spatial(p, fit, boot)
    if protocols and quantity == "crack_fraction":
        # In a stack, "one section" is one of its own sections (axis 0).
        summary["representativeness"] = _protocols(
            p, thresholds, seg, instances, schema, 0 if is_stack_table(table) else depth_axis,
            n_draws, seed, relative_precision, damage, iid_mean, confidence)
    summary["provenance"] = _provenance(table, dict(
        quantity=quantity, confidence=confidence, n_resamples=n_resamples, seed=seed,
        method=method, block_size=block_size, block_factor=block_factor, border=border,
        thresholds=thresholds, quantiles=quantiles), provenance)
    return json_safe(summary)


class _Particles(NamedTuple):
    """The particles a summary speaks for: the population's rows and their finite values."""

    used: pd.DataFrame
    """Rows of the population (:func:`population`)."""
    mask: np.ndarray
    """Which rows of the table are in the population, (n_table,) bool."""
    finite: np.ndarray
    """Which population rows have a finite value, (n_used,) bool."""
    values: np.ndarray
    """The finite values, (n,)."""
    coords: np.ndarray
    """Their centroids, (n, d), in ``unit``."""
    used_coords: np.ndarray
    """Centroids of every population row, (n_used, d)."""
    weights: np.ndarray | None
    """Miles-Lantuejoul weights of the finite values, (n,); ``None`` unweighted."""
    used_weights: np.ndarray | None
    """The same for every population row, (n_used,)."""
    posterior: np.ndarray | None
    """Posterior samples of the finite values, (n_samples, n)."""
    unit: str
    extent: np.ndarray
    description: str
    """The population in words."""


def _analysed_particles(table: pd.DataFrame, quantity: str, border: str, posterior) -> _Particles:
    """The population of ``table`` under ``border`` and its finite ``quantity`` values.

    Raises :class:`InputError` for an empty table, a missing column, or no
    particle left after the border policy.
    """
    n_total = len(table)
    if n_total == 0:
        raise InputError("no particles in the table; nothing to summarise")
    if quantity not in table:
        raise InputError(f"the particle table has no column {quantity!r}")
    mask, weights, description = population(table, border)
    if mask.sum() == 0:
        raise InputError(
            f"all {n_total} particles touch the volume border; use --border include to keep "
            "truncated particles, or analyse a larger volume"
        )
    used = table.loc[mask]
    values = used[quantity].to_numpy(dtype=np.float64)
    finite = np.isfinite(values)
    coords, unit = particle_coords(table)
    used_weights = weights if border == "miles" else None
    post = None
    if posterior is not None:
        post = align_posterior(posterior, table["label"].to_numpy())[:, mask][:, finite]
    return _Particles(used, mask, finite, values[finite], coords[mask][finite], coords[mask],
                      None if used_weights is None else used_weights[finite], used_weights, post,
                      unit, volume_extent(table)[0], description)


def _description(table: pd.DataFrame, p: _Particles, border: str) -> dict:
    """The head of the summary: particle counts, population, estimand, extent."""
    return {
        "n_particles": int(p.mask.sum()),
        "n_particles_total": int(len(table)),
        "n_particles_border": int(table["touches_border"].astype(bool).sum()),
        "population": {"border": border, "description": p.description},
        "estimand": (
            f"Intervals speak for the particles of the population this {_field_name(table)} "
            f"samples ({' x '.join(f'{e:.4g}' for e in p.extent)} {unit_label(p.unit)}; "
            f"{p.description}). Damage clustered on scales larger than the field of view cannot "
            f"be seen from inside it: this is not an interval for the whole electrode. For "
            f"electrode-level claims analyse several volumes and resample volumes then spatial "
            f"blocks (crackseg compare)."),
        "section": bool(is_section_table(table)),
        **({"stack": _stack_summary(table, p)} if is_stack_table(table) else {}),
        "extent": [float(e) for e in p.extent],
        "extent_unit": p.unit,
    }


def _field_name(table: pd.DataFrame) -> str:
    """What the table measured, in words: ``"volume"``, ``"section"`` or ``"stack of N sections"``."""
    if is_stack_table(table):
        return f"stack of {_n_sections(table)} sections"
    return "section" if is_section_table(table) else "volume"


def _damage_correlation(p: _Particles, seed: int, depth_axis: int) -> tuple:
    """``(length, fit, variogram)`` of :func:`correlation_length`; no length below 10 particles."""
    if p.values.size < 10:
        return None, {"note": "too few particles"}, pd.DataFrame()
    return correlation_length(p.values, p.coords, seed=seed, depth_axis=depth_axis)


def _block_size_and_rule(method: str, block_size, length, extent,
                         block_factor: float) -> tuple[float | None, str]:
    """Side of the bootstrap blocks and how it was chosen (``None`` for the iid bootstrap)."""
    if method != "block":
        return None, "iid bootstrap: no blocks"
    if block_size is not None:
        return block_size, "given by the user"
    return block_size_for(length, extent, factor=block_factor)


def _notes(table: pd.DataFrame, p: _Particles, rule: str, length, block_factor: float,
           cross_range) -> list[str]:
    """Warnings of the summary: unknown voxel size, small volume, long correlation range."""
    notes = []
    unit_text, where, stack = unit_label(p.unit), _field_name(table), is_stack_table(table)
    if p.unit != "um":
        notes.append(f"VOXEL SIZE UNKNOWN: sizes, positions and distances are in {unit_text}, not "
                     "µm; give the voxel size (--voxel-size) to measure in µm."
                     + (" The sections are taken to be one pixel apart (contiguous slices); "
                        "give --voxel-size SPACING Y X for sections further apart." if stack
                        else ""))
    if "SMALL VOLUME" in rule:
        notes.append(
            f"The damage correlation length ({'?' if length is None else f'{length:.3g}'} "
            f"{unit_text}) is not small compared with the {where}: blocks of {block_factor:g} "
            f"correlation lengths do not fit {MIN_BLOCKS} times, so smaller blocks were used and "
            "the intervals may be too narrow; analyse a larger volume or several volumes."
        )
    # A stack is as thin as its sections are few; its field of view is that of a section.
    side = float(np.min(p.extent[1:] if stack else p.extent))
    if cross_range is not None and cross_range > 0.5 * side:
        notes.append(
            f"The damage correlation range ({cross_range:.3g} {unit_text}) exceeds half the "
            f"{where}: clustering on the scale of the field of view cannot be measured from inside "
            "it, so the intervals are likely too narrow for the electrode."
        )
    if p.mask.sum() == 1:
        notes.append("Only one particle: no interval can be given.")
    return notes


def _damage_statistics(p: _Particles, quantity: str, thresholds, quantiles, boot: dict):
    """``summary["damage"]``, and the iid-bootstrap interval of the mean (an Interval)."""
    damage = distribution_statistics(p.values, coords=p.coords, weights=p.weights,
                                     thresholds=thresholds, quantiles=quantiles,
                                     posterior=p.posterior, **boot)
    iid_mean = bootstrap_ci(p.values, "mean", method="iid", weights=p.weights,
                            confidence=boot["confidence"], n_resamples=boot["n_resamples"],
                            seed=boot["seed"])
    damage["mean_iid"] = iid_mean.to_dict()
    if quantity.endswith("_fraction"):
        clip_to_support(damage, 0.0, 1.0)
    seg_error = segmentation_error_statement(None if p.posterior is None
                                             else p.posterior.shape[0])
    for key, entry in damage.items():
        if isinstance(entry, dict) and "ci" in entry:
            entry["segmentation_error"] = (seg_error if key != "mean_iid" else
                                           segmentation_error_statement(None))
    damage["quantity"] = quantity
    damage["n"] = int(p.values.size)
    return damage, iid_mean


def clip_to_support(entries: dict, lo: float, hi: float) -> None:
    """Clip every interval in ``entries`` to the values the quantity can take, in place.

    Intervals widened about their estimate (for covariance across block faces)
    can reach past a fraction's 0 or 1; a clipped interval says so with
    ``ci_clipped_to``.

    Examples
    --------
    >>> d = {"median": {"estimate": 0.02, "ci": [-0.004, 0.07]}}
    >>> clip_to_support(d, 0.0, 1.0); d["median"]["ci"], d["median"]["ci_clipped_to"]
    ([0.0, 0.07], [0.0, 1.0])
    """
    for entry in entries.values():
        if not isinstance(entry, dict):
            continue
        ci = entry.get("ci")
        if ci is not None and ci[0] is not None and (ci[0] < lo or ci[1] > hi):
            entry["ci"] = [max(float(ci[0]), lo), min(float(ci[1]), hi)]
            entry["ci_clipped_to"] = [lo, hi]
        for key in ("ci_low", "ci_high"):
            if entry.get(key) is not None:
                entry[key] = np.clip(np.asarray(entry[key], float), lo, hi).tolist()


def _other_quantities(p: _Particles, quantity: str, boot: dict) -> dict:
    """Mean and median with CIs of the :data:`OTHER_QUANTITIES` the table has.

    Quantities measured on the same particles share one set of resampled blocks.
    """
    names = [q for q in OTHER_QUANTITIES if q in p.used and q != quantity
             and not (q.startswith("equivalent_diameter_") and q != "equivalent_diameter_um"
                      and p.unit == "um")]
    columns = {q: p.used[q].to_numpy(dtype=np.float64) for q in names}
    same_particles: dict = {}
    for q in names:
        ok = np.isfinite(columns[q])
        if ok.any():
            same_particles.setdefault(ok.tobytes(), (ok, []))[1].append(q)
    others = {}
    for ok, qs in same_particles.values():
        w = None if p.used_weights is None else p.used_weights[ok]
        res = bootstrap_columns([columns[q][ok] for q in qs], ["mean", "median"],
                                coords=p.used_coords[ok], weights=w, **boot)
        for q, r in zip(qs, res):
            others[q] = {"mean": r[0].to_dict(), "median": r[1].to_dict(), "n": int(ok.sum())}
            if q.endswith("_fraction"):
                clip_to_support(others[q], 0.0, 1.0)
    return {q: others[q] for q in names if q in others}


def _bootstrap_settings(boot: dict, rule: str, vfit: dict) -> dict:
    """``summary["bootstrap"]``: method, block size and the rules that chose it."""
    cross_range = boot["cross_block_range"]
    return {"method": boot["method"], "block_size": boot["block_size"],
            "block_size_unit": boot["unit"], "block_size_rule": rule,
            "correlation_range": cross_range,
            "correlation_range_rule": (
                f"radius holding {vfit.get('range_mass', 0.95):.0%} of the fitted "
                f"{str(vfit.get('model', '')).replace('_', '-')} covariance: pairs of "
                "particles in different blocks closer than this widen the intervals")
            if cross_range else None, "n_resamples": int(boot["n_resamples"]),
            "seed": boot["seed"], "confidence": boot["confidence"], "unit": boot["unit"]}


def _provenance(table: pd.DataFrame, settings: dict, provenance: dict | None) -> dict:
    """``summary["provenance"]``: version, voxel size and every setting, with ``provenance`` merged."""
    return {
        "crackseg_version": __version__, "model": None, "model_sha256": None, "input": None,
        "voxel_size_um": table.attrs.get("voxel_size_um"),
        "settings": {**settings, "thresholds": list(settings["thresholds"]),
                     "quantiles": list(settings["quantiles"]),
                     "depth_axis": table.attrs.get("depth_axis", 0),
                     "shell_thickness": table.attrs.get("shell_thickness"),
                     "shell_unit": table.attrs.get("shell_unit")},
        **(provenance or {}),
    }


def _n_sections(table: pd.DataFrame) -> int:
    shape = table.attrs.get("shape")
    return int(shape[0]) if shape else int(table["section"].max()) + 1


def _stack_summary(table: pd.DataFrame, p: _Particles) -> dict:
    """The sections of a stack: how many, their spacing, and each one's particles and mean."""
    n = _n_sections(table)
    sec = table.loc[p.mask, "section"].to_numpy()[p.finite]
    counts = np.bincount(sec, minlength=n)
    sums = np.bincount(sec, weights=p.values, minlength=n)
    vs = table.attrs.get("voxel_size_um")
    return {
        "n_sections": n, "n_sections_with_particles": int((counts > 0).sum()),
        "spacing": float(vs[0]) if (vs and p.unit == "um") else 1.0,
        "spacing_unit": p.unit,
        "n_particles_per_section": counts.tolist(),
        "mean_per_section": [float(s_ / c) if c else None for s_, c in zip(sums, counts)],
        "note": ("one row per particle profile: a particle cut by several sections counts once "
                 "per section, and its damage is measured in each plane"),
    }


def _spatial(p: _Particles, fit: tuple, boot: dict) -> dict:
    """``summary["spatial"]``: correlation length, variogram, Moran's I, depth profile, hot spots."""
    length, vfit, vg = fit
    values, coords, unit = p.values, p.coords, p.unit
    key = "correlation_length_um" if unit == "um" else "correlation_length_vox"
    out = {key: length, "unit": unit,
           "variogram": {**vfit, "bins": vg.to_dict(orient="list") if len(vg) else {}}}
    if values.size >= 3:
        out["morans_i"] = morans_i(values, coords, seed=boot["seed"])
    prof = depth_profile(values, depth_values(p.used, unit)[p.finite], coords=coords,
                         n_bins=min(8, max(1, values.size // 10)), weights=p.weights,
                         **{**boot, "n_resamples": min(boot["n_resamples"], 1000)})
    out["depth_profile"] = prof.to_dict(orient="list")
    if values.size >= 3:
        from scipy.spatial import cKDTree

        nn = float(np.median(cKDTree(coords).query(coords, k=2)[0][:, 1]))
        dist = max(float(length), 1.5 * nn) if length else 2.0 * nn
        per, clusters = hot_spots(values, coords, distance=float(dist))
        out["hot_spots"] = {"method": "Getis-Ord Gi*, distance band = correlation length (at "
                            "least 1.5 x the median nearest-neighbour distance), "
                            "Benjamini-Hochberg FDR 0.05", "distance": float(dist),
                            "n_clusters": len(clusters),
                            "n_particles_in_hot_spots": int((per["hot_spot"] > 0).sum()),
                            "clusters": clusters}
    return out


def _protocols(p: _Particles, thresholds, seg, instances, schema, depth_axis, n_draws, seed,
               relative_precision, damage, iid_mean, confidence) -> dict:
    """``summary["representativeness"]``: small-sample protocols and the particles needed."""
    severe = float(max(thresholds)) if len(thresholds) else 0.05
    damaged = float(min(thresholds)) if len(thresholds) else 0.01
    rep = representativeness(
        p.values, p.coords, n_draws=n_draws, seed=seed, severe_threshold=severe,
        damaged_threshold=damaged, seg=seg, instances=instances, schema=schema,
        depth_axis=depth_axis,
        surface_crack_fraction=p.used["surface_crack_fraction"].to_numpy()[p.finite]
        if "surface_crack_fraction" in p.used else None,
        depth=depth_values(p.used, p.unit)[p.finite])
    se_block = damage["mean"].get("standard_error")
    se_iid = iid_mean.standard_error
    deff = (se_block / se_iid) ** 2 if se_block and se_iid else float("nan")
    return {
        "severe_threshold": severe, "damaged_threshold": damaged,
        "census_mean": float(p.values.mean()), "census_ci": damage["mean"].get("ci"),
        "protocols": rep.to_dict(orient="records"),
        "particles_needed": particles_needed(p.values, relative_precision=relative_precision,
                                             confidence=confidence, design_effect=deff),
    }


def stat_key(spec) -> str:
    """Key of a statistic in ``summary["damage"]`` (e.g. ``fraction_above_0.05``)."""
    return stat_name(spec)
