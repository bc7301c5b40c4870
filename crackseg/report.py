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
.flags{background:#fdecea;border:2px solid #c0392b;border-radius:4px;padding:.6em 1em;
margin:1em 0;font-size:1em;color:#222}
.flags h2{margin:0 0 .4em 0;border:none;color:#a93226;font-size:1.15em}
.flags ul{margin:0;padding-left:1.2em}.flags li{margin:.3em 0}
.flags b{color:#a93226}.ok{background:#eaf6ec;border:1px solid #2e8b57;padding:.5em 1em}
.interval{font-size:1.02em;background:#f3f7fb;border-left:4px solid #1f4e79;padding:.5em .8em}
dl.glossary{display:grid;grid-template-columns:max-content 1fr;gap:.25em 1em}
dl.glossary dt{font-weight:600}dl.glossary dd{margin:0}
"""


RENDER_CHECK = """<script>
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0, over = 0, bent = 0;
  var width = document.documentElement.clientWidth;
  for (var i = 0; i < imgs.length; i++) {
    var im = imgs[i], r = im.getBoundingClientRect();
    if (im.complete && im.naturalWidth > 0) { ok++; }
    if (r.right > width + 1 || r.left < -1) { over++; }
    if (im.naturalWidth > 0 && r.width > 0 &&
        Math.abs(r.height / r.width - im.naturalHeight / im.naturalWidth) > 0.02) { bent++; }
  }
  var b = document.body, f = document.getElementById("flags");
  b.setAttribute("data-figures-rendered", ok + "/" + imgs.length);
  b.setAttribute("data-figures-overflowing", String(over));
  b.setAttribute("data-figures-distorted", String(bent));
  b.setAttribute("data-page-overflow",
                 document.documentElement.scrollWidth > width + 1 ? "1" : "0");
  if (f) { b.setAttribute("data-flags-top", String(Math.round(f.getBoundingClientRect().top))); }
});
</script>"""
"""Marks the page with what the browser made of it: figures decoded (``ok/total``), figures
wider than the window or distorted, whether the page scrolls sideways, and where the flag
box starts (pixels from the top)."""


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
    conf = f"{(dmg.get('mean') or {}).get('confidence', 0.95):.0%}"
    stack = summary.get("stack")
    rows = []
    if stack:
        spacing = (f"{_fmt(stack.get('spacing'), 3)} {_unit_text(summary)} apart"
                   if stack.get("spacing") is not None else "")
        rows.append(("sections", f"{_fmt(stack.get('n_sections'))} "
                     f"({_fmt(stack.get('n_sections_with_particles'))} with particles"
                     + (f"; {spacing}" if spacing else "") + ")"))
    rows.append(("particle profiles analysed (one per particle and section)" if stack else
                 "particles analysed", _fmt(summary.get("n_particles"))))
    if summary.get("n_particles_border") is not None:
        rows.append(("border-truncated particles (excluded)"
                     if (summary.get("population") or {}).get("border") != "include"
                     else "border-truncated particles (included)",
                     _fmt(summary.get("n_particles_border"))))
    rows.append((f"mean damage [{conf} interval]", _ci_text(dmg.get("mean"))))
    rows.extend(_annotation_rows((dmg.get("mean") or {}).get("annotation_error"), conf))
    rows.append((f"median damage [{conf} interval]", _ci_text(dmg.get("median"))))
    for key, entry in sorted(dmg.items()):
        if key.startswith("fraction_above") and isinstance(entry, dict):
            t = key.rsplit("_", 1)[1]
            rows.append((f"share of particles with damage above {t} [{conf} interval]",
                         _ci_text(entry)))
    method = (dmg.get("mean") or {}).get("method")
    if method:
        rows.append(("interval method", html.escape(str(method))))
    unc = ((dmg.get("mean") or {}).get("extra") or {}).get("uncertainty")
    if unc and unc.get("share_sampling") is not None:
        rows.append(("variance of the mean from particle sampling / segmentation",
                     f"{unc['share_sampling']:.0%} / {unc['share_segmentation']:.0%} "
                     f"({unc['n_posterior_samples']} posterior samples)"))
    spatial = summary.get("spatial") or {}
    cl = next((spatial[k] for k in ("correlation_length_um", "correlation_length_vox",
                                    "correlation_length_px", "correlation_length")
               if spatial.get(k) is not None), None)
    if cl is not None:
        rows.append(("damage correlation length", f"{_fmt(cl, 3)} {_unit_text(summary)}"))
    return rows


def _annotation_rows(entry: dict | None, conf: str) -> list[tuple[str, str]]:
    """Headline rows of the mean measured on annotated sections (none without them)."""
    if not entry:
        return []
    share = entry.get("segmentation_share")
    sections = entry.get("kind") == "sections"
    head = ("mean damage of the annotated particle profiles" if sections else
            "mean damage corrected on the annotated sections")
    counted = "annotated particle profiles" if sections else "particles crossing the sections"
    rows = [(f"{head} ({entry.get('n_sections')} sections) [{conf} interval, segmentation "
             "error included]", _ci_text(entry)),
            (f"annotated / model crack (R) [interval]; {counted}",
             _ci_text({"estimate": entry.get("ratio"), "ci": entry.get("ratio_ci")})
             + f"; {_fmt(entry.get('n_particles'))}")]
    if share is not None and not sections:
        rows.append(("variance of the corrected mean from segmentation error", f"{share:.0%}"))
    if entry.get("note"):
        rows.append(("annotated sections", html.escape(str(entry["note"]))))
    return rows


def _where(summary: dict) -> str:
    """What was analysed, in words: ``volume``, ``section`` or ``stack of N sections``."""
    stack = summary.get("stack")
    if stack:
        return f"stack of {stack.get('n_sections', '?')} sections"
    return "section" if summary.get("section") else "volume"


def _unit_text(summary: dict) -> str:
    """The unit positions and sizes of this summary are in (µm, voxels or pixels)."""
    from crackseg.stats.table import unit_label

    unit = summary.get("extent_unit") or (summary.get("bootstrap") or {}).get("unit") or "um"
    return unit_label(unit)


def _segmentation_error_included(summary: dict) -> bool:
    """Whether the damage intervals propagate posterior samples of the segmentation."""
    mean = (summary.get("damage") or {}).get("mean") or {}
    extra = mean.get("extra") or {}
    return bool((mean.get("annotation_error") or {}).get("sufficient")) or \
        bool(extra.get("uncertainty")) or bool(
        (summary.get("provenance") or {}).get("posterior_samples"))


def interval_sentence(summary: dict) -> str:
    """What the damage interval means, in one plain sentence (and how it is built).

    Examples
    --------
    >>> s = {"damage": {"mean": {"confidence": 0.95, "method": "iid bootstrap"}}}
    >>> interval_sentence(s).split(";")[0]
    '95 % of intervals built this way contain the mean damage of the population of particles this volume samples'
    """
    mean = (summary.get("damage") or {}).get("mean") or {}
    conf = float(mean.get("confidence", 0.95))
    where = _where(summary)
    stated = mean.get("segmentation_error")  # the same words as summary.json
    seg = (f"segmentation error is {stated}" if stated else
           "segmentation error is included (propagated from the posterior samples of the "
           "segmentation)" if _segmentation_error_included(summary) else
           "segmentation error is not included (no posterior samples; run with --uncertainty "
           "tta to include the part of it the model can see)")
    text = (f"{conf * 100:.3g} % of intervals built this way contain the mean damage of the "
            f"population of particles this {where} samples; {seg}.")
    boot = summary.get("bootstrap") or {}
    if boot.get("method") == "block" and boot.get("block_size"):
        rule = str(boot.get("block_size_rule", "")).split(";")[0]
        text += (" Built by resampling spatial blocks of side "
                 f"{_fmt(boot['block_size'], 3)} {_unit_text(summary)} ({rule}) with their particles, so that damage "
                 "clustered in space widens the interval as it should; where neighbouring "
                 "blocks are correlated the interval is widened further.")
        if summary.get("stack"):
            text += (" In a stack the blocks are boxes across sections and within them: "
                     "sections closer than a block share blocks (they cut the same particles), "
                     "sections further apart are resampled separately.")
    elif boot.get("method") == "iid":
        text += (" Built by resampling particles independently: clustering of damage in space "
                 "is not accounted for.")
    if (summary.get("domain") or {}).get("flags"):
        text += (" The model was not validated for this input (see the flags at the top): the "
                 "segmentation may be wrong in ways no interval here carries.")
    return text


def domain_flags(summary: dict) -> list[tuple[str, str]]:
    """Flag-box entries of ``summary["domain"]`` (:mod:`crackseg.domain`), most important first.

    Examples
    --------
    >>> d = {"flags": [{"name": "resampled_far", "value": 0.13, "limit": [0.5, 2],
    ...                 "message": "resampled by 0.13"}], "training_domain_known": True}
    >>> domain_flags({"domain": d})[0][0]
    'MODEL NOT VALIDATED FOR THIS INPUT: resampled far 0.13 (accepted 0.5-2)'
    """
    dom = summary.get("domain")
    if not dom:
        return []
    out = []
    for f in dom.get("flags", []):
        lim = f.get("limit")
        lim_text = (f"accepted {_fmt(lim[0], 3)}-{_fmt(lim[1], 3)}" if isinstance(lim, list)
                    else f"limit {_fmt(lim, 3)}")
        out.append((f"MODEL NOT VALIDATED FOR THIS INPUT: {f['name'].replace('_', ' ')} "
                    f"{_fmt(f.get('value'), 3)} ({lim_text})", f["message"] + "."))
    if not dom.get("training_domain_known"):
        sig = dom.get("signals") or {}
        measured = ", ".join(t for t in (
            f"particles ~{_fmt(sig['particle_diameter_vox'], 3)} voxels across"
            if sig.get("particle_diameter_vox") else "",
            f"crack voxels {_fmt(sig['crack_fraction_of_envelope'], 3)} of the particle envelopes"
            if sig.get("crack_fraction_of_envelope") is not None else "") if t)
        out.append(("MODEL TRAINING DOMAIN UNKNOWN",
                    f"{dom.get('message', '')} Nothing here says the model has seen inputs like "
                    f"this one{' (' + measured + ')' if measured else ''}; only the checks that "
                    "need no training domain were made."))
    for note in dom.get("notes", []) or []:
        out.append(("INPUT RESAMPLED", note + "."))
    return out


def flags(summary: dict) -> list[tuple[str, str]]:
    """Caveats of one analysed volume for the flag box: ``(title with its number, text)``.

    Examples
    --------
    >>> [t for t, _ in flags({"n_particles": 12, "extent_unit": "vox"})][:2]
    ['VOXEL SIZE UNKNOWN', 'FEW PARTICLES: 12']
    """
    out = domain_flags(summary)
    unit = summary.get("extent_unit") or (summary.get("bootstrap") or {}).get("unit")
    if unit in ("vox", "px"):
        out.append(("VOXEL SIZE UNKNOWN",
                    f"Sizes, positions and distances are in {_unit_text(summary)}, not µm; give "
                    "--voxel-size to measure in µm."))
    n = summary.get("n_particles")
    if n is not None and n < 30:
        out.append((f"FEW PARTICLES: {n}",
                    "Intervals from fewer than 30 particles are rough; analyse a larger "
                    "field of view or several."))
    n_all, n_border = summary.get("n_particles_total"), summary.get("n_particles_border")
    if n_all and n_border is not None and n_border / n_all >= 0.3:
        out.append((f"MANY TRUNCATED PARTICLES: {n_border} of {n_all} ({n_border / n_all:.0%})",
                    "Particles cut by the edge of the field of view "
                    + ("are excluded; large particles are cut more often, so the census leans "
                       "to small ones." if (summary.get("population") or {}).get("border")
                       != "include" else "are measured on their visible part only.")))
    boot = summary.get("bootstrap") or {}
    spatial = summary.get("spatial") or {}
    extent = summary.get("extent")
    length = next((spatial[k] for k in ("correlation_length_um", "correlation_length_vox",
                                        "correlation_length_px") if spatial.get(k)), None)
    where = _where(summary)
    if "SMALL VOLUME" in str(boot.get("block_size_rule", "")):
        size = " x ".join(_fmt(e, 3) for e in extent) if extent else "?"
        out.append((f"SMALL {where.upper()}: damage correlation length {_fmt(length, 3)} "
                    f"{_unit_text(summary)} in a {size} {_unit_text(summary)} field of view",
                    f"The {where} spans too few correlation lengths for blocks of two of them; "
                    "smaller blocks were used, so the intervals may be too narrow."))
    rng = boot.get("correlation_range")
    side = min(extent[1:] if summary.get("stack") else extent) if extent else None
    if rng and side and rng > 0.5 * side:
        out.append((f"CLUSTERING AS LARGE AS THE FIELD OF VIEW: correlation range "
                    f"{_fmt(rng, 3)} {_unit_text(summary)} > half the smallest side "
                    f"({_fmt(0.5 * side, 3)})",
                    "Clustering on this scale cannot be measured from inside the field of "
                    "view: the intervals are likely too narrow for the electrode."))
    if not _segmentation_error_included(summary):
        found = ((summary.get("domain") or {}).get("model_validation") or {}).get("message")
        out.append(("SEGMENTATION ERROR NOT IN THE INTERVALS",
                    "The intervals carry particle sampling and spatial clustering only."
                    + (f" {found[0].upper()}{found[1:]}." if found else "")))
    stack = summary.get("stack")
    if stack:
        out.append((f"SECTIONS, NOT A VOLUME: {stack.get('n_sections')} sections, "
                    f"{summary.get('n_particles')} particle profiles",
                    "Damage here is crack area / particle area of each particle's profile in "
                    "its plane: a section cuts each particle at a random height and sees only "
                    "what lies in it. A particle cut by several sections counts once per "
                    "section."))
    elif summary.get("section"):
        out.append(("ONE SECTION, NOT A VOLUME",
                    "Damage here is crack area / particle area in this plane: a section cuts "
                    "each particle at a random height and sees only what lies in it."))
    known = ("VOXEL SIZE UNKNOWN", "not small compared", "correlation range")
    for note in summary.get("notes", []) or []:
        if not any(k in str(note) for k in known):
            out.append(("NOTE", str(note)))
    return out


def glossary(summary: dict) -> list[tuple[str, str]]:
    """One line per quantity of the report: ``(term, definition)``."""
    flat = bool(summary.get("section"))
    where = _where(summary)
    cells = "pixels" if flat else "voxels"
    size = "area" if flat else "volume"
    t = summary.get("thresholds") or {}
    rows = [
        ("damage (crack_fraction)", f"Crack {cells} / envelope {cells} of one particle: the share "
         "of its envelope that is cracked (0 = intact). 'Damage degree' in the literature."),
        ("envelope", f"A particle's solid plus the crack and pore {cells} it encloses (closed "
         "and hole-filled), so that a crack never cuts one particle into two."),
        ("pore_fraction", f"Pore {cells} (equiaxed voids, hollow cores) / envelope {cells}."),
        ("void_fraction", "(Envelope - solid) / envelope: cracks and pores together."),
        ("surface / internal crack_fraction", "Damage in the outer shell of the envelope (what "
         "surface imaging could see) / in the core beneath it."),
        ("equivalent diameter", f"Diameter of the {'disc' if flat else 'sphere'} "
         f"of the particle's {size}."),
        (("circularity" if flat else "sphericity"),
         "1 for a " + ("disc" if flat else "sphere") + ", less for other shapes; "
         "empty for particles cut by the field of view."),
        ("border-truncated particle", "A particle that touches the edge of the field of view: "
         "only part of it is seen."),
        ("share above t", f"Share of particles whose damage exceeds t (t = "
         f"{_fmt(t.get('damaged'))}: 'damaged'; t = {_fmt(t.get('severely_damaged'))}: "
         "'severely damaged')."),
        ("mean / median damage", f"Mean / median of the per-particle damage over the particles "
         f"of this {where} (each particle counts once, whatever its size)."),
        ("interval", "A range that, built this way, contains the true value in the stated share "
         "of repeated samplings (see the sentence under Headline numbers)."),
        ("correlation length", "Distance over which the damage of neighbouring particles stays "
         "alike (fitted to the semivariogram); it sets the bootstrap block size."),
    ]
    if summary.get("stack"):
        rows.append(("particle profile", "A particle as one section shows it: the same particle "
                     "cut by several sections is one profile in each."))
    if _one_section_row(summary):
        rows.append(("one section", "A single 2-D slice of this " + ("stack" if summary.get(
            "stack") else "volume") + ", analysed as crackseg analyses a section: the mean "
            "damage of the particle profiles in it (profiles cut by its edge left out)."))
    return rows


def _one_section_row(summary: dict) -> dict | None:
    rep = summary.get("representativeness") or {}
    return next((r for r in rep.get("protocols", []) if r.get("protocol") == "section_particles"),
                None)


def one_section_text(summary: dict) -> str | None:
    """What one section would say against this volume's (or stack's) full census, in words.

    From the ``section_particles`` and ``cross_section`` protocols of the
    representativeness analysis; ``None`` when there are none (a single
    section, or no segmentation given to the statistics).

    Examples
    --------
    >>> rep = {"census_mean": 0.06, "census_ci": [0.05, 0.08], "severe_threshold": 0.05,
    ...        "protocols": [{"protocol": "section_particles", "p05": 0.02, "p95": 0.11,
    ...                       "min": 0.01, "max": 0.2, "n_draws": 90, "bias": 0.001,
    ...                       "p_wrong_verdict": 0.3, "p_below_damaged": 0.0}]}
    >>> one_section_text({"representativeness": rep}).split(":")[0]
    "What one section would say against this volume's full census"
    """
    row = _one_section_row(summary)
    if row is None:
        return None
    rep = summary.get("representativeness") or {}
    stack = summary.get("stack")
    what = "this stack" if stack else "this volume"
    ci = rep.get("census_ci")
    census = f"{_fmt(rep.get('census_mean'), 3)}" + (
        f" [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]" if ci and ci[0] is not None else "")
    slices = (f"its {_fmt(row.get('n_draws'))} sections" if stack else
              f"its {_fmt(row.get('n_draws'))} slices perpendicular to the depth axis")
    text = (f"What one section would say against {what}'s full census: a single section of "
            f"{what}, analysed as crackseg analyses a section (mean damage of the particle "
            f"profiles in it, those cut by its edge left out), reads {_fmt(row.get('p05'), 3)} "
            f"to {_fmt(row.get('p95'), 3)} (5-95 % of {slices}; "
            f"{_fmt(row.get('min'), 3)} to {_fmt(row.get('max'), 3)} in all), against the "
            f"census mean {census} of all its particles.")
    if row.get("p_wrong_verdict") is not None:
        text += (f" {row['p_wrong_verdict']:.0%} of sections would call the damage "
                 f"'severe' (mean above {_fmt(rep.get('severe_threshold'))}) the other way from "
                 "the census")
        if row.get("p_below_damaged"):
            text += f", and {row['p_below_damaged']:.0%} would read 'no damage'"
        text += "."
    pooled = next((r for r in rep.get("protocols", []) if r.get("protocol") == "cross_section"),
                  None)
    if pooled:
        text += (f" Counted as crack area / particle area over the whole section instead: "
                 f"{_fmt(pooled.get('p05'), 3)} to {_fmt(pooled.get('p95'), 3)}.")
    return text


def settings_rows(settings: dict) -> list[tuple[str, str]]:
    """Readable ``(setting, value)`` rows: numbers rounded, lists joined, names spaced.

    Examples
    --------
    >>> settings_rows({"block_size": 42.666666666666664, "thresholds": [0.01, 0.05]})
    [('block size', '42.67'), ('thresholds', '0.01, 0.05')]
    """
    rows = []
    for key, value in settings.items():
        if isinstance(value, dict):
            rows += [(f"{key.replace('_', ' ')}: {k}", v) for k, v in settings_rows(value)]
            continue
        if isinstance(value, float):
            text = f"{value:.4g}"
        elif isinstance(value, (list, tuple)):
            text = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in value)
        elif value is None:
            text = "–"
        else:
            text = str(value)
        rows.append((key.replace("_", " "), html.escape(text)))
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
        channel = (prov.get("prediction_settings") or {}).get("channel")
        try:
            img = read_volume(img_path, lazy=True, nan_policy="ignore", channel=channel).data
        except InputError:
            img = None  # e.g. not the file segmented any more: show the segmentation alone
        if img is not None and seg is not None and tuple(img.shape) != tuple(seg.shape):
            img = None
    if img is not None or seg is not None:
        base = img if img is not None else seg
        flat = len(base.shape) == 2
        fig = orthoslices_figure(base, seg, schema=schema, voxel_size_um=vs,
                                 title="Section with segmentation" if flat else
                                 "Orthogonal slices with segmentation")
        figs.append(("slices", ("The section" if flat else "Central orthogonal slices of the "
                                "image") + " with the segmentation overlaid (cracks red, pores "
                     "blue, particles faint yellow).", figure_png(fig)))

    inst_path = out / "particles.tif"
    if inst_path.exists() and len(table) and "crack_fraction" in table:
        inst = read_volume(inst_path, lazy=True).data  # the figure reads slabs
        stack = bool(summary.get("stack"))
        fig = particle_damage_figure(inst, table["label"], table["crack_fraction"],
                                     voxel_size_um=vs,
                                     depth_axis=(prov.get("settings") or {}).get("depth_axis", 0)
                                     if inst.ndim == 3 and not stack else 0,
                                     title="Particles coloured by damage")
        where = ("the section" if inst.ndim == 2 else
                 "three of its sections and a projection along x" if stack else
                 "slices at three depths and a projection along x")
        figs.append(("particle_damage", f"Every particle coloured by its damage (crack_fraction): "
                     f"{where}; white: between particles.", figure_png(fig)))

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
    caveats = flags(summary)
    if caveats:
        items = "".join(f"<li><b>{html.escape(t)}</b>. {html.escape(x)}</li>" for t, x in caveats)
        parts.append(f'<div class="flags" id="flags"><h2>Read this first: {len(caveats)} '
                     f'caveat{"s" if len(caveats) > 1 else ""}</h2><ul>{items}</ul></div>')
    else:
        parts.append('<div class="ok" id="flags">No caveats flagged.</div>')
    estimand = summary.get("estimand") or (summary.get("damage", {}).get("mean") or {}).get("estimand")
    if estimand:
        parts.append(f'<p class="warn">{html.escape(str(estimand))}</p>')
    parts.append("<h2>Headline numbers</h2>")
    parts.append(_table(headline_rows(summary), header=("quantity", "value")))
    parts.append(f'<p class="interval" id="interval">{html.escape(interval_sentence(summary))}</p>')
    parts.append('<h2>Glossary</h2><dl class="glossary" id="glossary">')
    parts += [f"<dt>{html.escape(t)}</dt><dd>{html.escape(d)}</dd>" for t, d in glossary(summary)]
    parts.append("</dl>")
    one = one_section_text(summary)
    if one:
        parts.append("<h2>One section against the census</h2>")
        parts.append(f'<p class="interval" id="one-section">{html.escape(one)}</p>')
    parts.append("<h2>Figures</h2>")
    for name, caption, png in figs:
        parts.append(_figure(png_data_uri(png), caption, alt=name))
    parts.append("<h2>Provenance</h2>")
    rows = [
        ("crackseg version", _fmt(prov.get("crackseg_version", __version__))),
        ("input", _fmt(prov.get("input"))),
        ("model", _fmt(prov.get("model"))),
        ("model weights sha256", _fmt(prov.get("model_sha256"))),
        ("voxel size (µm, " + ("section spacing, y x)" if summary.get("stack") else
                               "y x)" if summary.get("section") else "z y x)"),
         html.escape(", ".join(f"{v:.4g}" for v in prov["voxel_size_um"]))
         if prov.get("voxel_size_um") else "unknown: sizes in " + _unit_text(summary)),
        ("particles in table", _fmt(len(table))),
    ]
    parts.append(_table(rows))
    parts.append("<h3>Settings</h3>")
    parts.append(_table(settings_rows(prov.get("settings") or {}), header=("setting", "value")))
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
             f'<p class="note">{html.escape(str(result.get("method", "")))}</p>']
    for note in result.get("notes") or []:
        parts.append(f'<p class="warn">{html.escape(str(note))}</p>')
    parts += ["<h2>Groups</h2>", rows.to_html(index=False, float_format=lambda v: f"{v:.4g}",
                                              na_rep="–", border=0)]
    samples = result.get("samples") or []
    if samples:
        parts.append("<h2>Samples</h2>")
        parts.append(_table([(f"{smp['sample']} ({result.get('group_by', 'group')} "
                              f"{smp['group']})",
                              html.escape(f"{smp['kind_text']}: {smp['n_particles']} "
                                          + ("particle profiles" if smp["kind"] != "volume"
                                             else "particles") + " not cut by the edge, mean "
                                          + _fmt(smp["mean"]))) for smp in samples],
                            header=("sample", "what it is")))
    against = result.get("sections_against_census") or []
    if against:
        parts.append("<h2>Sections against a volume's census</h2>")
        parts.append('<p class="note">A section measures damage in a plane, a volume in 3-D, '
                     "and the two differ even for the same particles. The like-for-like "
                     "reference for a section is what one section of the volume reads (5-95 % of "
                     "its slices perpendicular to the depth axis, each analysed as a section "
                     "is); for a stack of sections, what its sections read on average. The "
                     "volume's census mean and interval are beside them.</p>")
        out_rows = ["<table id=\"sections-vs-census\"><tr><th>section</th><th>its mean</th>"
                    "<th>volume</th><th>census mean [interval]</th>"
                    "<th>one section of the volume reads (5-95 %; average)</th></tr>"]
        for a in against:
            ci = a.get("census_ci")
            census = _fmt(a["census_mean"], 3) + (f" [{_fmt(ci[0], 3)}, {_fmt(ci[1], 3)}]"
                                                  if ci else "")
            rng = (f"{_fmt(a['one_section_p05'], 3)} to {_fmt(a['one_section_p95'], 3)} "
                   f"(average {_fmt(a.get('sections_average'), 3)})"
                   if a.get("one_section_p05") is not None else "–")
            out_rows.append(f"<tr><td>{html.escape(a['section'])} "
                            f"({html.escape(a['section_kind'])})</td>"
                            f"<td>{_fmt(a['section_mean'], 3)}</td>"
                            f"<td>{html.escape(a['volume'])}</td><td>{census}</td>"
                            f"<td>{rng}</td></tr>")
        out_rows.append("</table>")
        parts.append("\n".join(out_rows))
        parts += [f'<p class="interval">{html.escape(a["text"])}</p>' for a in against]
    parts.append("<h2>Differences from the reference group</h2>")
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
