"""Figures of the statistics layer (matplotlib Agg; every function returns a Figure).

* :func:`damage_histogram_figure` - share of particles per crack-fraction bin
  with CIs, the mean and its CI, and the damage thresholds.
* :func:`depth_profile_figure` - mean damage vs depth with CIs.
* :func:`variogram_figure` - empirical semivariogram and the fitted model.
* :func:`representativeness_figure` - spread of small-sample protocols
  against the census CI.
* :func:`comparison_figure` - damage per group with CIs.
* :func:`report_figures` - the list the HTML report embeds.

Examples
--------
>>> import numpy as np
>>> from crackseg.stats.distribution import distribution_statistics
>>> d = distribution_statistics(np.random.default_rng(0).beta(1, 20, 200), method="iid",
...                             n_resamples=200)
>>> fig = damage_histogram_figure({"damage": d, "n_particles": 200})
>>> len(fig.axes)
1
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from crackseg.stats.spatial import model_variogram  # noqa: E402


def _unit(summary: dict) -> str:
    from crackseg.stats.table import unit_label

    return unit_label((summary.get("bootstrap") or {}).get("unit", "um"))


def _ci_text(entry: dict) -> str:
    ci = entry.get("ci")
    s = f"{entry['estimate']:.3g}"
    if ci and ci[0] is not None:
        s += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
    return s


def damage_histogram_figure(summary: dict, *, title: str | None = None):
    """Histogram of particle crack fraction with per-bin CIs, mean CI and thresholds."""
    dmg = summary["damage"]
    h = dmg["histogram"]
    edges = np.asarray(h["edges"])
    frac = np.asarray(h["fraction"], dtype=float)
    lo = np.asarray([np.nan if v is None else v for v in h["ci_low"]], dtype=float)
    hi = np.asarray([np.nan if v is None else v for v in h["ci_high"]], dtype=float)
    fig, ax = plt.subplots(figsize=(9, 4))
    centres = 0.5 * (edges[:-1] + edges[1:])
    ax.bar(centres, frac, width=np.diff(edges) * 0.9, color="#8aa9c9", label="share of particles")
    ok = np.isfinite(lo) & np.isfinite(hi)
    ax.errorbar(centres[ok], frac[ok], yerr=[frac[ok] - lo[ok], hi[ok] - frac[ok]], fmt="none",
                ecolor="#333", capsize=2, lw=0.8, label=f"{dmg['mean'].get('confidence', 0.95):.0%} CI")
    m = dmg["mean"]
    ax.axvline(m["estimate"], color="#c0392b", lw=1.5, label=f"mean {_ci_text(m)}")
    if m.get("ci") and m["ci"][0] is not None:
        ax.axvspan(m["ci"][0], m["ci"][1], color="#c0392b", alpha=0.15)
    for key, entry in dmg.items():
        if key.startswith("fraction_above_") and isinstance(entry, dict):
            t = float(key.rsplit("_", 1)[1])
            ax.axvline(t, color="#555", ls="--", lw=0.8,
                       label=f"share above {t:g}: {_ci_text(entry)}")
    ax.set_xlabel(f"damage ({dmg.get('quantity', 'crack_fraction')}) per particle")
    ax.set_ylabel("share of particles")
    ax.set_title(title or f"Damage distribution ({summary.get('n_particles', '?')} particles; "
                 f"{m.get('method', '')})", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def depth_profile_figure(summary: dict, *, title: str | None = None):
    """Mean damage in slabs through the electrode thickness, with CIs."""
    prof = (summary.get("spatial") or {}).get("depth_profile")
    if not prof or not prof.get("depth_mid"):
        return None
    mid = np.asarray(prof["depth_mid"], float)
    mean = np.asarray(prof["mean"], float)
    lo = np.asarray(prof["ci_low"], float)
    hi = np.asarray(prof["ci_high"], float)
    n = np.asarray(prof.get("n", [np.nan] * mid.size), float)
    fig, ax = plt.subplots(figsize=(6.5, 5))
    has_ci = np.isfinite(lo) & np.isfinite(hi)
    ok = has_ci & np.isfinite(mean)
    ax.errorbar(mean[ok], mid[ok], xerr=[mean[ok] - lo[ok], hi[ok] - mean[ok]], fmt="o-",
                color="#1f4e79", ecolor="#8aa9c9", elinewidth=4, capsize=0,
                label="slab mean with interval")
    bare = np.isfinite(mean) & ~has_ci
    if bare.any():
        # Slabs too thin in particles (or blocks) for an interval are shown, and say so.
        ax.plot(mean[bare], mid[bare], "o", mfc="white", mec="#1f4e79",
                label="slab mean, no interval (too few particles)")
        for x, y, k in zip(mean[bare], mid[bare], n[bare]):
            ax.annotate(f"n={int(k)}" if np.isfinite(k) else "", (x, y), xytext=(5, 0),
                        textcoords="offset points", fontsize=7, va="center")
    m = summary["damage"]["mean"]["estimate"]
    ax.axvline(m, color="#c0392b", ls="--", lw=1, label="mean of all particles")
    ax.invert_yaxis()
    ax.set_ylabel(f"depth ({_unit(summary)})")
    ax.set_xlabel("mean damage (crack_fraction)")
    ax.set_title(title or "Damage through the electrode thickness", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def variogram_figure(summary: dict, *, title: str | None = None):
    """Empirical semivariogram of particle damage with the fitted model."""
    sp = summary.get("spatial") or {}
    vg = (sp.get("variogram") or {})
    bins = vg.get("bins") or {}
    if not bins.get("distance"):
        return None
    d = np.asarray(bins["distance"], float)
    g = np.asarray(bins["semivariance"], float)
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot(d, g, "o", color="#1f4e79", label="empirical")
    if vg.get("converged"):
        h = np.linspace(0, d.max(), 200)
        ax.plot(h, model_variogram(h, vg), color="#c0392b",
                label=f"{vg['model'].replace('_', '-')}, L = {vg['correlation_length']:.3g} "
                      f"{_unit(summary)}")
    ax.set_xlabel(f"distance between particle centroids ({_unit(summary)})")
    ax.set_ylabel("semivariance")
    ax.set_title(title or "Spatial correlation of damage (depth trend removed)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def representativeness_figure(summary: dict, *, title: str | None = None):
    """Range of the estimates of small-sample protocols vs the census CI."""
    rep = summary.get("representativeness")
    if not rep or not rep.get("protocols"):
        return None
    rows = rep["protocols"]
    fig, ax = plt.subplots(figsize=(10, 4.8))
    labels = []
    for i, r in enumerate(rows):
        name = {"random_particles": f"{r['k']} random", "neighbour_cluster": f"{r['k']} neighbours",
                "cross_section": "one section (area)",
                "section_particles": "one section (particles)",
                "surface_view": "surface view"}.get(r["protocol"], r["protocol"])
        labels.append(name)
        colour = {"random_particles": "#1f4e79", "neighbour_cluster": "#d35400",
                  "cross_section": "#27ae60", "section_particles": "#16a085",
                  "surface_view": "#8e44ad"}.get(r["protocol"], "#333")
        ax.plot([i, i], [r["min"], r["max"]], color=colour, lw=1, alpha=0.5)
        ax.plot([i, i], [r["p05"], r["p95"]], color=colour, lw=5, alpha=0.8)
        ax.plot(i, r["mean_estimate"], "o", color="white", mec=colour, ms=4)
    ci = rep.get("census_ci")
    ax.axhline(rep["census_mean"], color="#c0392b", lw=1.2, label="census mean")
    if ci and ci[0] is not None:
        ax.axhspan(ci[0], ci[1], color="#c0392b", alpha=0.15, label="census CI")
    ax.axhline(rep["severe_threshold"], color="#555", ls="--", lw=0.8,
               label=f"'severely damaged' > {rep['severe_threshold']:g}")
    ax.axhline(rep["damaged_threshold"], color="#999", ls=":", lw=0.8,
               label=f"'no damage' < {rep['damaged_threshold']:g}")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("estimated mean damage (crack_fraction)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(bottom=0)
    ax.set_title(title or "What small samples would have said (bar: 5-95 %, line: min-max)",
                 fontsize=9)
    # The legend sits beside the axes, so it never hides a bar.
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def comparison_figure(result: dict, groups: dict | None = None, *, quantity: str = "crack_fraction",
                      group_by: str = "group", title: str | None = None):
    """Particle damage per group (violins) with group means and their CIs."""
    order = result["order"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(order) + 2), 4))
    if groups:
        lookup = {str(k): v for k, v in groups.items()}
        data = [np.concatenate(lookup[g]) for g in order]
        parts = ax.violinplot(data, positions=range(len(order)), showextrema=False, widths=0.8)
        for b in parts["bodies"]:
            b.set_facecolor("#8aa9c9")
            b.set_alpha(0.5)
    for i, g in enumerate(order):
        m = result["groups"][g]["mean"]
        ci = m.get("ci")
        if ci:
            ax.errorbar(i, m["estimate"], yerr=[[m["estimate"] - ci[0]], [ci[1] - m["estimate"]]],
                        fmt="o", color="#c0392b", capsize=4)
        else:
            ax.plot(i, m["estimate"], "o", color="#c0392b")
    ax.set_xticks(range(len(order)))
    ax.set_xticklabels([f"{g}\n(n={result['groups'][g]['n_volumes']} vol.)" for g in order], fontsize=8)
    ax.set_xlabel(group_by)
    ax.set_ylabel(quantity)
    ax.set_title(title or f"{quantity} by {group_by}: mean and {result['confidence']:.0%} CI "
                 f"({result['method']})", fontsize=8)
    fig.tight_layout()
    return fig


def report_figures(summary: dict, table=None) -> list:
    """Statistics figures for the report: ``(name, caption, make)``; ``make()`` may return None."""
    dmg = summary.get("damage", {})
    method = (dmg.get("mean") or {}).get("method", "")
    out = []
    if dmg.get("histogram"):
        out.append(("damage_histogram",
                    f"Share of particles per crack-fraction bin with {method} intervals; red: "
                    "the mean and its interval; dashed: damage thresholds.",
                    lambda: damage_histogram_figure(summary)))
    out.append(("depth_profile", "Mean crack fraction in slabs through the electrode thickness "
                "(shaded: interval).", lambda: depth_profile_figure(summary)))
    out.append(("variogram", "Semivariogram of particle damage around the depth profile; the "
                "fitted correlation length sets the size of the bootstrap blocks.",
                lambda: variogram_figure(summary)))
    out.append(("representativeness",
                "What the usual small-sample protocols would have reported, simulated on this "
                "volume's census: thick bars span 5-95 % of outcomes, thin lines min-max; the red "
                "band is the census interval.", lambda: representativeness_figure(summary)))
    return out
