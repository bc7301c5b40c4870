"""Self-contained HTML report of one analysed volume.

The report reads what ``crackseg run`` (or ``predict`` + ``stats``) wrote into
one output folder (``summary.json``, ``particles.csv`` and, when present,
``segmentation.tif``, ``particles.tif``, ``uncertainty.tif``, the input image)
and writes ``report.html`` with every figure embedded as PNG, plus the PNGs
themselves in ``figures/``.  Viewing it needs no network.

Examples
--------
>>> from crackseg.report import write_report          # doctest: +SKIP
>>> write_report("out/scan1")                          # doctest: +SKIP
PosixPath('out/scan1/report.html')
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import pandas as pd

from crackseg._version import __version__
from crackseg.errors import InputError
from crackseg.figures import (
    figure_png,
    orthoslices_figure,
    particle_damage_figure,
    png_data_uri,
    uncertainty_figure,
)
from crackseg.io import atomic_path, read_volume, write_text
from crackseg.labels import load_schema

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{padding:.25em .8em;border-bottom:1px solid #eee;
text-align:left;vertical-align:top}th{background:#f6f6f6}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.9em;color:#555;margin-top:.3em}.note{color:#555;font-size:.92em}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:.5em .8em}
code{background:#f4f4f4;padding:0 .2em}
"""


RENDER_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; }
  }
  document.body.setAttribute("data-figures-rendered", ok + "/" + imgs.length);
});
</script>"""
"""Marks the page with how many of its figures the browser decoded (``ok/total``)."""


def _fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, (float, np.floating)):
        if not np.isfinite(x):
            return "–"
        return f"{x:.{digits}g}"
    return html.escape(str(x))


def _ci_text(entry: dict | None, digits: int = 3) -> str:
    if not entry:
        return "–"
    est = entry.get("estimate")
    ci = entry.get("ci")
    s = _fmt(est, digits)
    if ci and ci[0] is not None:
        s += f" [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]"
    return s


def _table(rows: list[tuple[str, str]], header: tuple[str, str] | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append(f"<tr><th>{html.escape(header[0])}</th><th>{html.escape(header[1])}</th></tr>")
    for k, v in rows:
        out.append(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure(uri: str, caption: str, alt: str) -> str:
    return (f'<figure><img src="{uri}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def headline_rows(summary: dict) -> list[tuple[str, str]]:
    """Rows of the headline-numbers table from a ``summary.json`` dict."""
    dmg = summary.get("damage", {})
    rows = [("particles analysed", _fmt(summary.get("n_particles")))]
    if summary.get("n_particles_border") is not None:
        rows.append(("border-truncated particles", _fmt(summary.get("n_particles_border"))))
    rows.append(("mean crack_fraction [95% CI]", _ci_text(dmg.get("mean"))))
    rows.append(("median crack_fraction [95% CI]", _ci_text(dmg.get("median"))))
    for key, entry in sorted(dmg.items()):
        if key.startswith("fraction_above") and isinstance(entry, dict):
            rows.append((f"{key.replace('_', ' ')} [95% CI]", _ci_text(entry)))
    method = (dmg.get("mean") or {}).get("method")
    if method:
        rows.append(("interval method", html.escape(str(method))))
    unc = ((dmg.get("mean") or {}).get("extra") or {}).get("uncertainty")
    if unc and unc.get("share_sampling") is not None:
        rows.append(("variance of the mean from particle sampling / segmentation",
                     f"{unc['share_sampling']:.0%} / {unc['share_segmentation']:.0%} "
                     f"({unc['n_posterior_samples']} posterior samples)"))
    spatial = summary.get("spatial") or {}
    cl = spatial.get("correlation_length_um", spatial.get("correlation_length"))
    if cl is not None:
        rows.append(("damage correlation length", f"{_fmt(cl, 3)} µm"))
    return rows


def write_report(out_dir: str | Path, *, image: str | Path | None = None,
                 overwrite: bool = True) -> Path:
    """Write ``report.html`` (and ``figures/*.png``) for one analysed folder.

    Parameters
    ----------
    out_dir : path-like
        Folder with at least ``summary.json`` and ``particles.csv``.
    image : path-like, optional
        Input image for the slice figures (default: ``provenance.input`` of
        the summary, when it still exists).
    overwrite : bool
        Replace an existing report.

    Notes
    -----
    Images are opened lazily and only three planes are read for the slice
    figures, whatever the volume size; the particle map reads the instance
    volume whole.

    Returns
    -------
    pathlib.Path
        Path of ``report.html``.
    """
    out = Path(out_dir)
    sp, tp = out / "summary.json", out / "particles.csv"
    for p in (sp, tp):
        if not p.exists():
            raise InputError(f"{out}: no {p.name}; run `crackseg stats` (or `crackseg run`) first")
    summary = json.loads(sp.read_text())
    table = pd.read_csv(tp)
    prov = summary.get("provenance", {})
    schema = load_schema(prov.get("schema") or summary.get("schema"))
    vs = prov.get("voxel_size_um")
    figs: list[tuple[str, str, bytes]] = []  # (name, caption, png)

    seg_path = out / "segmentation.tif"
    img_path = Path(image) if image else (Path(prov["input"]) if prov.get("input") else None)
    seg = read_volume(seg_path, lazy=True).data if seg_path.exists() else None
    img = None
    if img_path is not None and img_path.exists():
        img = read_volume(img_path, lazy=True, nan_policy="ignore").data
    if img is not None or seg is not None:
        base = img if img is not None else seg
        fig = orthoslices_figure(base, seg, schema=schema, voxel_size_um=vs,
                                 title="Orthogonal slices with segmentation")
        figs.append(("slices", "Central orthogonal slices of the image with the segmentation "
                     "overlaid (cracks red, pores blue, particles faint yellow).", figure_png(fig)))

    inst_path = out / "particles.tif"
    if inst_path.exists() and len(table) and "crack_fraction" in table:
        inst = read_volume(inst_path).data
        if inst.ndim == 3:
            fig = particle_damage_figure(inst, table["label"], table["crack_fraction"],
                                         title="Particles coloured by damage degree")
            figs.append(("particle_damage", "Particle map coloured by each particle's "
                         "crack_fraction: slices at three depths and a projection.", figure_png(fig)))

    figs += _stats_figures(summary, table)

    unc_path = out / "uncertainty.tif"
    if unc_path.exists():
        fig = uncertainty_figure(read_volume(unc_path, lazy=True).data,
                                 title="Segmentation uncertainty")
        figs.append(("uncertainty", "Per-voxel predictive entropy: high values mark voxels "
                     "whose class the model is unsure of.", figure_png(fig)))

    fig_dir = out / "figures"
    fig_dir.mkdir(exist_ok=True)
    for name, _, png in figs:
        with atomic_path(fig_dir / f"{name}.png", overwrite=True) as tmp:
            tmp.write_bytes(png)

    page = render_html(summary, table, figs, title=f"crackseg report: {Path(str(prov.get('input', out.name))).name}")
    return write_text(out / "report.html", page, overwrite=overwrite)


def _stats_figures(summary: dict, table: pd.DataFrame) -> list[tuple[str, str, bytes]]:
    """Histogram, depth profile and representativeness figures from the stats layer."""
    from crackseg.stats import figures as sf

    out = []
    for name, caption, make in sf.report_figures(summary, table):
        fig = make()
        if fig is not None:
            out.append((name, caption, figure_png(fig)))
    return out


def render_html(summary: dict, table: pd.DataFrame, figs, *, title: str) -> str:
    """The report page as one HTML string with embedded figures."""
    prov = summary.get("provenance", {})
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    estimand = summary.get("estimand") or (summary.get("damage", {}).get("mean") or {}).get("estimand")
    if estimand:
        parts.append(f'<p class="warn">{html.escape(str(estimand))}</p>')
    parts.append("<h2>Headline numbers</h2>")
    parts.append(_table(headline_rows(summary), header=("quantity", "value")))
    for note in summary.get("notes", []) or []:
        parts.append(f'<p class="note">{html.escape(str(note))}</p>')
    parts.append("<h2>Figures</h2>")
    for name, caption, png in figs:
        parts.append(_figure(png_data_uri(png), caption, alt=name))
    parts.append("<h2>Provenance</h2>")
    rows = [
        ("crackseg version", _fmt(prov.get("crackseg_version", __version__))),
        ("input", _fmt(prov.get("input"))),
        ("model", _fmt(prov.get("model"))),
        ("model weights sha256", _fmt(prov.get("model_sha256"))),
        ("voxel size (µm, z y x)", _fmt(prov.get("voxel_size_um"))),
        ("settings", f"<code>{html.escape(json.dumps(prov.get('settings', {}), default=str))}</code>"),
        ("particles in table", _fmt(len(table))),
    ]
    parts.append(_table(rows))
    parts.append(RENDER_CHECK)
    parts.append("</body></html>")
    return "\n".join(parts)


def write_comparison_report(path: str | Path, result: dict, rows: pd.DataFrame, png: bytes, *,
                            overwrite: bool = True) -> Path:
    """Self-contained ``report.html`` of a comparison of samples.

    Parameters
    ----------
    path : path-like
        Target HTML file.
    result : dict
        From :func:`crackseg.stats.compare_samples` (with provenance).
    rows : pandas.DataFrame
        From :func:`crackseg.stats.compare.comparison_table`.
    png : bytes
        The comparison figure.
    """
    q = result.get("quantity", "crack_fraction")
    title = f"crackseg comparison: {q} by {result.get('group_by', 'sample')}"
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="note">{html.escape(str(result.get("method", "")))}</p>',
             "<h2>Groups</h2>", rows.to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                             na_rep="–", border=0),
             "<h2>Differences from the reference group</h2>"]
    comp_rows = []
    for g, c in result.get("comparisons", {}).items():
        comp_rows.append((f"{g} vs {c['reference']}: difference of means",
                          _ci_text(c.get("difference_of_means"), 4)))
        comp_rows.append((f"{g} vs {c['reference']}: difference of medians",
                          _ci_text(c.get("difference_of_medians"), 4)))
        comp_rows.append((f"{g} vs {c['reference']}: Cliff's delta",
                          _ci_text(c.get("cliffs_delta"), 3)))
        for test in ("mann_whitney", "permutation_test"):
            if c.get(test):
                comp_rows.append((f"{g} vs {c['reference']}: {test.replace('_', '-')} p",
                                  _fmt(c[test].get("p_value"), 3)))
    parts.append(_table(comp_rows, header=("comparison", "estimate [CI]")))
    trend = result.get("trend")
    if trend:
        parts.append("<h2>Trend</h2>")
        parts.append(f"<pre>{html.escape(json.dumps(trend, indent=2, default=str))}</pre>")
    parts.append(_figure(png_data_uri(png), f"{q} per group with confidence intervals.",
                         alt="comparison"))
    prov = result.get("provenance", {})
    parts.append("<h2>Provenance</h2>")
    parts.append(_table([("crackseg version", _fmt(prov.get("crackseg_version"))),
                         ("manifest", _fmt(prov.get("manifest"))),
                         ("volumes", "<br>".join(html.escape(str(v)) for v in prov.get("volumes", []))),
                         ("settings", f"<code>{html.escape(json.dumps(prov.get('settings', {})))}</code>")]))
    parts.append(RENDER_CHECK)
    parts.append("</body></html>")
    return write_text(path, "\n".join(parts), overwrite=overwrite)
