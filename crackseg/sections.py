"""Stacks of 2-D sections: a 2-D model on a 3-D input, section by section.

A 3-D array (Z, Y, X) given to a 2-D model is a *stack of sections* along
axis 0: serial FIB/SEM sections, or the slices of a tomogram analysed in
2-D.  Each section is segmented exactly as it would be alone
(:func:`crackseg.inference.predict_sections`: :func:`~crackseg.inference.predict_volume`
on that section, with its own normalisation, windows and posterior samples),
with one resampling factor for the whole stack; the results are stacked.  Particles are 2-D and
labelled section by section (:func:`section_instances`), with labels unique
across the stack so that ``particles.tif`` holds them all; the particle table
has one row per particle *profile* and a ``section`` column
(:func:`crackseg.stats.table.section_stack_table`).

Along axis 0 the voxel size is the section spacing; without a voxel size the
sections are taken to be one pixel apart (contiguous slices), which is the
cautious choice for the intervals: close sections share particles.

Examples
--------
>>> import numpy as np
>>> seg = np.zeros((2, 20, 20), np.uint8); seg[:, 4:12, 4:12] = 1
>>> inst = section_instances(seg)
>>> [sorted(np.unique(inst[z]).tolist()) for z in range(2)]
[[0, 1], [0, 2]]
"""

from __future__ import annotations

import sys

import numpy as np

from crackseg.errors import InputError

SECTION_AXIS = 0
"""The axis a stack of sections is stacked along."""

MIN_SECTION_SIDE = 8
"""Sections narrower than this (pixels) are refused: the array is more likely a
multi-channel image (Y, X, C) than a stack."""


def stack_record(n_sections: int, voxel_size_um) -> dict:
    """What ``prediction.json`` records about a stack (``provenance["sections"]``)."""
    return {"axis": SECTION_AXIS, "n_sections": int(n_sections),
            "spacing_um": float(voxel_size_um[0]) if voxel_size_um else None,
            "how": "each section segmented on its own by the 2-D model; particles labelled "
                   "per section"}


def section_instances(seg, *, out=None, voxel_size_um=None, progress: bool = False,
                      **options) -> np.ndarray:
    """Particle instances of every section of a stack, labelled per section.

    Parameters
    ----------
    seg : array-like of int, shape (Z, Y, X)
        Semantic labels of a stack of sections (may be lazy).
    out : array-like, optional
        Where to write the labels (uint32, same shape; e.g. a Zarr array).
    voxel_size_um : sequence of float, optional
        (spacing, y, x) in µm; the sections use (y, x).
    **options
        Passed to :func:`crackseg.particles.particle_instances` for each
        section (``schema``, ``min_volume_um3`` (an area in µm² here),
        ``h``, ...; ``chunk_size``, ``scratch`` are ignored).

    Returns
    -------
    numpy.ndarray of uint32 (or ``out``)
        0 = no particle; each section's particles numbered after those of the
        sections before it, so a label belongs to one section.
    """
    from tqdm.auto import tqdm

    from crackseg.particles import particle_instances

    shape = tuple(seg.shape)
    if len(shape) != 3:
        raise InputError(f"a stack of sections is 3-D (Z, Y, X); got shape {shape}")
    for key in ("chunk_size", "scratch", "margin"):
        options.pop(key, None)
    vs2 = None if voxel_size_um is None else tuple(float(v) for v in voxel_size_um)[1:]
    result = out if out is not None else np.zeros(shape, np.uint32)
    offset = 0
    for z in tqdm(range(shape[0]), desc="particles", unit="section",
                  disable=not progress or shape[0] < 2, file=sys.stderr, leave=False):
        lab = particle_instances(np.asarray(seg[z]), voxel_size_um=vs2, **options)
        n = int(lab.max(initial=0))
        if offset + n >= np.iinfo(np.uint32).max:
            raise InputError("more than 2^32 - 1 particles")
        result[z] = np.where(lab > 0, lab + np.uint32(offset), 0).astype(np.uint32)
        offset += n
    return result


def stack_border_labels(instances) -> np.ndarray:
    """Labels of the particles of a stack cut by the edge of their section (not by its
    first or last section: a section's particles are whole in the stacking direction).

    Examples
    --------
    >>> a = np.zeros((2, 5, 5), np.uint32); a[0, 2, 2] = 1; a[1, 0, 2] = 2
    >>> stack_border_labels(a).tolist()
    [2]
    """
    faces = [np.asarray(instances[:, i, :]) for i in (0, -1)] + \
        [np.asarray(instances[:, :, i]) for i in (0, -1)]
    u = np.unique(np.concatenate([f.ravel() for f in faces]))
    return u[u > 0].astype(np.uint32)


def is_stack(prediction: dict | None) -> bool:
    """Whether a ``prediction.json`` record describes a stack of 2-D sections."""
    return bool((prediction or {}).get("sections"))


def stack_beside(segmentation) -> bool:
    """Whether the ``prediction.json`` beside a segmentation file says it is a stack."""
    import json

    from crackseg.io import split_dataset_path

    path = split_dataset_path(segmentation)[0].parent / "prediction.json"
    try:
        return is_stack(json.loads(path.read_text())) if path.is_file() else False
    except (OSError, ValueError):
        return False


def sample_kind(columns) -> str:
    """``"volume"``, ``"section"`` or ``"stack"`` from the columns of a ``particles.csv``."""
    cols = set(columns)
    if "centroid_y_px" in cols:
        return "stack" if {"section", "centroid_z_px"} <= cols else "section"
    return "volume"


def kind_text(kind: str, n_sections: int | None = None) -> str:
    """How a sample's kind is written in a report."""
    if kind == "stack":
        return f"stack of {n_sections} sections" if n_sections else "stack of sections"
    return {"section": "one 2-D section", "volume": "3-D volume"}.get(kind, kind)


def describe_samples(manifest, *, group_by: str, quantity: str = "crack_fraction") -> list[dict]:
    """What each sample of a comparison is (volume, section, stack) and its own numbers.

    Parameters
    ----------
    manifest : pandas.DataFrame
        From :func:`crackseg.stats.compare.read_manifest` (``particles_csv``).
    group_by : str
    quantity : str

    Returns
    -------
    list of dict
        Per manifest row: ``sample``, ``group``, ``kind``, ``kind_text``,
        ``n_sections`` (stacks), ``n_particles`` and ``mean`` of ``quantity``
        over the particles not cut by the edge of the field of view, and from
        ``summary.json`` beside it (when there): ``census_mean``,
        ``census_ci`` and ``one_section`` (the ``section_particles``
        protocol: what one section of it reads).
    """
    import json
    from pathlib import Path

    import pandas as pd

    out = []
    for _, row in manifest.iterrows():
        csv = Path(row["particles_csv"])
        t = pd.read_csv(csv)
        kind = sample_kind(t.columns)
        n_sections = int(t["section"].max()) + 1 if kind == "stack" and len(t) else None
        inner = t[~t["touches_border"].astype(bool)] if "touches_border" in t else t
        v = inner[quantity].to_numpy(dtype=float) if quantity in inner else np.array([])
        v = v[np.isfinite(v)]
        rec = {"sample": str(row["sample"]), "group": str(row[group_by]), "kind": kind,
               "n_sections": n_sections, "n_particles": int(v.size),
               "mean": float(v.mean()) if v.size else None,
               "census_mean": None, "census_ci": None, "one_section": None}
        summary_path = csv.parent / "summary.json"
        if summary_path.exists():
            try:
                summary = json.loads(summary_path.read_text())
            except (OSError, ValueError):
                summary = {}
            n_sections = rec["n_sections"] or (summary.get("stack") or {}).get("n_sections")
            rec["n_sections"] = n_sections
            rep = summary.get("representativeness") or {}
            mean = (summary.get("damage") or {}).get("mean") or {}
            if (summary.get("damage") or {}).get("quantity", "crack_fraction") == quantity:
                rec["census_mean"] = rep.get("census_mean", mean.get("estimate"))
                rec["census_ci"] = rep.get("census_ci", mean.get("ci"))
                row_ = next((r for r in rep.get("protocols", [])
                             if r.get("protocol") == "section_particles"), None)
                if row_:
                    rec["one_section"] = {k: row_.get(k) for k in
                                          ("p05", "p95", "min", "max", "n_draws", "bias")}
        rec["kind_text"] = kind_text(kind, rec["n_sections"])
        out.append(rec)
    return out


def sections_against_census(samples: list[dict]) -> list[dict]:
    """Each section (or stack) sample beside each 3-D volume's census.

    A section measures damage in a plane (crack area / particle area of each
    particle's profile), a volume in 3-D, and the two differ even for the
    same particles.  So the section's mean damage (profiles not cut by its
    edge) is set against the volume's census mean and interval *and* against
    the like-for-like reference: what one section of that volume reads (5-95 %
    of its slices, the ``section_particles`` protocol) and what its sections
    read on average.  A stack averages several sections, so its reference is
    that average; a single section's is the 5-95 % range.

    Returns
    -------
    list of dict
        ``section``, ``section_kind``, ``section_mean``, ``volume``,
        ``census_mean``, ``census_ci``, ``one_section_p05``/``p95``,
        ``sections_average``, ``within_one_section_range`` (single sections)
        and ``text``, a plain sentence.
    """
    out = []
    flat = [s for s in samples if s["kind"] in ("section", "stack") and s["mean"] is not None]
    volumes = [s for s in samples if s["kind"] == "volume" and s["census_mean"] is not None]
    for s in flat:
        for v in volumes:
            ci = v["census_ci"] if v["census_ci"] and v["census_ci"][0] is not None else None
            one = v["one_section"] or {}
            lo, hi = one.get("p05"), one.get("p95")
            avg = None if one.get("bias") is None else v["census_mean"] + one["bias"]
            m = s["mean"]
            inside = None if lo is None or s["kind"] == "stack" else bool(lo <= m <= hi)
            text = (f"{s['sample']} ({s['kind_text']}) reads mean damage {m:.3g} over its "
                    f"particle profiles; the 3-D census of {v['sample']} has mean "
                    f"{v['census_mean']:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")
                    + ".")
            if lo is not None and s["kind"] == "stack":
                text += (f" Like for like, the sections of {v['sample']} read {avg:.3g} on "
                         f"average (one section {lo:.3g} to {hi:.3g}, 5-95 %); a stack averages "
                         f"its sections, so set its mean against {avg:.3g}: it reads "
                         f"{m - avg:+.3g} from it.")
            elif lo is not None:
                text += (f" Like for like, one section of {v['sample']} reads {lo:.3g} to "
                         f"{hi:.3g} (5-95 % of its slices; {avg:.3g} on average), so "
                         + ("this section reads what a section of it would" if inside else
                            "this section reads " + ("less" if m < lo else "more")
                            + " than 95 % of its sections would") + ".")
            else:
                text += (f" {v['sample']}'s summary has no one-section reference (run its "
                         "statistics with its segmentation to get one).")
            out.append({"section": s["sample"], "section_kind": s["kind_text"],
                        "section_mean": m, "section_n_particles": s["n_particles"],
                        "volume": v["sample"], "census_mean": v["census_mean"],
                        "census_ci": ci, "one_section_p05": lo, "one_section_p95": hi,
                        "sections_average": avg, "within_one_section_range": inside,
                        "text": text})
    return out
