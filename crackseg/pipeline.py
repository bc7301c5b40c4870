"""The main job, one input at a time: predict -> particles -> statistics -> report.

:func:`analyse_input` is what ``crackseg run`` (and ``crackseg demo``) does for
each input; :func:`measure_folder` is the statistics step on a folder written
by :func:`crackseg.batch.predict_to_folder`.

Each step is skipped when its outputs exist (resume) unless ``overwrite``;
every file is written atomically.

Examples
--------
>>> from crackseg.pipeline import analyse_input                    # doctest: +SKIP
>>> analyse_input("scan.tif", "out/scan", model="nmc4-synthetic-v1")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from crackseg.errors import InputError
from crackseg.io import atomic_path, read_volume, write_json

STATS_DEFAULTS = {
    "confidence": 0.95, "n_resamples": 2000, "seed": 0, "method": "block", "block_size": None,
    "border": "exclude", "thresholds": (0.01, 0.05), "depth_axis": 0, "shell_um": None,
}
"""Default settings of the statistics step (see ``crackseg stats --help``)."""


def _find(folder: Path, stem: str) -> Path | None:
    for ext in (".tif", ".zarr"):
        if (folder / f"{stem}{ext}").exists():
            return folder / f"{stem}{ext}"
    return None


def measure_folder(folder: str | Path, *, overwrite: bool = False, say=None, **options) -> dict:
    """Per-particle table and distribution statistics of a predicted folder.

    Reads ``segmentation``, ``particles`` (and ``particle_samples.npz`` when
    present) and ``prediction.json`` from ``folder``; writes
    ``particles.csv`` and ``summary.json``.

    Parameters
    ----------
    folder : path-like
        Folder written by :func:`crackseg.batch.predict_to_folder`.
    overwrite : bool
        Recompute when ``summary.json`` exists.
    say : callable, optional
        Receives progress messages.
    **options
        Statistics settings, see :data:`STATS_DEFAULTS`.

    Returns
    -------
    dict
        The summary (as written to ``summary.json``).
    """
    from crackseg.labels import load_schema
    from crackseg.stats.table import read_particle_samples

    folder = Path(folder)
    say = say or (lambda msg: None)
    summary_path = folder / "summary.json"
    if summary_path.exists() and not overwrite:
        return json.loads(summary_path.read_text())
    pred_path = folder / "prediction.json"
    prediction = json.loads(pred_path.read_text()) if pred_path.exists() else {}
    seg_path, inst_path = _find(folder, "segmentation"), _find(folder, "particles")
    if seg_path is None or inst_path is None:
        raise InputError(f"{folder}: no segmentation and particles; run `crackseg predict` first")
    seg_img = read_volume(seg_path)
    seg = seg_img.data
    inst = np.asarray(read_volume(inst_path).data)
    vs = seg_img.voxel_size_um
    if "voxel_size_um" in prediction:
        # What the prediction knew: an unknown voxel size stays unknown even where an
        # older writer stored 1 µm per voxel in the image metadata.
        pvs = prediction["voxel_size_um"]
        vs = tuple(float(v) for v in pvs) if pvs else None
    if vs is None:
        say(f"voxel size unknown: sizes and distances in {'pixels' if seg.ndim == 2 else 'voxels'}"
            " (give --voxel-size for µm)")
    schema = load_schema(prediction.get("schema"))
    post_path = folder / "particle_samples.npz"
    posterior = read_particle_samples(post_path) if post_path.exists() else None
    prov = {
        "input": prediction.get("input"), "model": prediction.get("model"),
        "model_sha256": prediction.get("model_sha256"), "segmentation": str(seg_path),
        "instances": str(inst_path), "schema": schema.name,
        "posterior_samples": str(post_path) if posterior is not None else None,
        "prediction_settings": prediction.get("settings"),
    }
    from crackseg.sections import is_stack

    if is_stack(prediction):
        prov["sections"] = prediction["sections"]
    domain = prediction.get("domain")
    if domain is None and prediction:  # predicted before the domain checks existed
        domain = folder_domain(folder, prediction, seg, inst, schema)
    _, summary = write_statistics(folder, seg, inst, schema=schema, voxel_size_um=vs,
                                  posterior=posterior, provenance=prov, overwrite=True,
                                  say=say, source=str(seg_path),
                                  sections=is_stack(prediction), domain=domain, **options)
    return summary


def folder_domain(folder, prediction: dict, seg, inst, schema) -> dict:
    """Out-of-distribution flags of a folder whose ``prediction.json`` has none.

    The training domain is read from the model the prediction names, when its
    weights still match (else it is unknown).
    """
    from crackseg.domain import domain_check
    from crackseg.errors import CracksegError
    from crackseg.model_io import resolve_model_path

    card = {}
    try:
        if prediction.get("model"):
            path = resolve_model_path(prediction["model"]) / "model_card.json"
            card = json.loads(path.read_text())
        if card.get("weights_sha256") != prediction.get("model_sha256"):
            card = {}
    except (OSError, ValueError, TypeError, CracksegError):
        card = {}
    unc = _find(Path(folder), "uncertainty")
    return domain_check(seg, inst, schema=schema, training_domain=card.get("training_domain"),
                        scale=(prediction.get("settings") or {}).get("scale"),
                        entropy=read_volume(unc, lazy=True).data if unc else None,
                        planar=bool(prediction.get("sections")))


def write_statistics(out, seg, instances, *, schema, voxel_size_um, posterior=None,
                     provenance: dict | None = None, overwrite: bool = False, say=None,
                     source: str = "segmentation", sections: bool = False,
                     domain: dict | None = None, **options):
    """Measure particles, summarise, and write ``particles.csv`` + ``summary.json``.

    Parameters
    ----------
    out : path-like
        Output folder.
    seg, instances : array_like, shape (Z, Y, X) or (Y, X)
        Semantic labels and particle instances.
    schema : LabelSchema
    voxel_size_um : tuple of float or None
    posterior : tuple, optional
        ``(labels, crack_fraction samples)`` from
        :func:`crackseg.stats.read_particle_samples`.
    provenance : dict, optional
        Recorded in ``summary.json`` (input, model, ...).
    overwrite : bool
        Replace existing outputs.
    sections : bool
        ``seg`` is a stack of 2-D sections along axis 0 (instances labelled
        per section): one row per particle profile with its ``section``
        (:func:`crackseg.stats.table.section_stack_table`).
    domain : dict, optional
        Out-of-distribution flags (:func:`crackseg.domain.domain_check`),
        recorded as ``summary["domain"]``.
    **options
        Statistics settings (:data:`STATS_DEFAULTS`).

    Returns
    -------
    (pandas.DataFrame, dict)
        The particle table and the summary.
    """
    from crackseg.stats.summary import summarize
    from crackseg.stats.table import particle_table, section_stack_table

    out = Path(out)
    say = say or (lambda msg: None)
    opts = {**STATS_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    targets = [out / "particles.csv", out / "summary.json"]
    if not overwrite:
        for t in targets:
            if t.exists():
                raise InputError(f"{t}: already exists; pass --overwrite to replace it")
    if sections and np.ndim(seg) != 3:
        raise InputError(f"{source}: a stack of sections is 3-D (Z, Y, X); got shape "
                         f"{np.shape(seg)}")
    say("measuring particles" + (f" in {np.shape(seg)[0]} sections" if sections else ""))
    measure = section_stack_table if sections else particle_table
    table = measure(seg, instances, schema=schema, voxel_size_um=voxel_size_um,
                    depth_axis=opts["depth_axis"], shell_um=opts["shell_um"],
                    posterior=posterior, source=source)
    say(f"{len(table)} particle{' profile' if sections else ''}s "
        f"({int(table['touches_border'].sum())} touch the border); computing statistics")
    summary = summarize(
        table, confidence=opts["confidence"], n_resamples=opts["n_resamples"], seed=opts["seed"],
        method=opts["method"], block_size=opts["block_size"], border=opts["border"],
        thresholds=sorted(opts["thresholds"]), posterior=posterior, seg=seg,
        instances=instances, schema=schema, provenance=provenance or {})
    summary["provenance"]["voxel_size_um"] = list(voxel_size_um) if voxel_size_um else None
    if domain is not None:
        summary["domain"] = domain
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(targets[0], overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_json(targets[1], summary, overwrite=overwrite)
    return table, summary


def analyse_input(source, folder, *, model, overwrite: bool = False, resume: bool = True,
                  progress: bool = True, stats_options: dict | None = None, report: bool = True,
                  say=None, **predict_options) -> dict:
    """Run the whole pipeline for one input into ``folder``.

    Parameters
    ----------
    source : path-like
        Input volume.
    folder : path-like
        Output folder of this input.
    model : path-like, str or (net, card)
        Model for :func:`crackseg.inference.predict_volume`.
    overwrite, resume : bool
        As for ``crackseg predict``; ``overwrite`` also redoes statistics and
        report.
    progress : bool
        Progress bars and messages on stderr.
    stats_options : dict, optional
        Settings of the statistics step (:data:`STATS_DEFAULTS`).
    report : bool
        Write ``report.html``.
    **predict_options
        Passed to :func:`crackseg.batch.predict_to_folder`.

    Returns
    -------
    dict
        ``{"input", "folder", "status", "summary", "report", "seconds"}``.
    """
    from crackseg.batch import predict_to_folder
    from crackseg.report import write_report

    t0 = time.perf_counter()
    folder = Path(folder)
    say = say or (lambda msg: None)
    say(f"{source}: segmenting")
    r = predict_to_folder(source, folder, model=model, overwrite=overwrite, resume=resume,
                          progress=progress, **predict_options)
    redo = overwrite or r["status"] == "done"
    summary = measure_folder(folder, overwrite=redo, say=lambda m: say(f"{source}: {m}"),
                             **(stats_options or {}))
    page = None
    if report:
        say(f"{source}: writing report")
        page = write_report(folder, image=source, overwrite=True)
    return {"input": str(source), "folder": str(folder), "status": "done",
            "summary": summary, "report": str(page) if page else None,
            "seconds": round(time.perf_counter() - t0, 2)}


def analyse_one_safely(source, folder, **kwargs) -> dict:
    """:func:`analyse_input`, with a user error or unreadable file returned as a failed record.

    See :func:`crackseg.batch.run_safely`.
    """
    from crackseg.batch import run_safely

    return run_safely(analyse_input, source, folder, **kwargs)


def write_comparison(manifest, out, *, group_by: str = "sample", reference=None,
                     quantity: str = "crack_fraction", border: str = "exclude",
                     confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                     overwrite: bool = False, say=None) -> dict:
    """Compare analysed samples listed in a manifest; write results and a report.

    Writes ``comparison.json``, ``comparison.csv``, ``comparison.png`` and
    ``report.html`` into ``out``.

    Parameters
    ----------
    manifest : path-like
        CSV with a ``path`` column (analysed folder or its ``particles.csv``),
        ``sample`` and metadata columns.
    out : path-like
        Output folder.
    group_by : str
        Manifest column that defines the groups.
    reference : optional
        Group the others are compared with (default: the first in order).
    quantity, border, confidence, n_resamples, seed
        See ``crackseg compare --help``.
    overwrite : bool
        Replace existing outputs.

    Returns
    -------
    dict
        The comparison (as in ``comparison.json``).
    """
    from crackseg._version import __version__
    from crackseg.figures import figure_png
    from crackseg.report import write_comparison_report
    from crackseg.stats.compare import (
        compare_samples,
        comparison_table,
        load_volumes,
        read_manifest,
    )
    from crackseg.stats.figures import comparison_figure

    out = Path(out)
    say = say or (lambda msg: None)
    targets = [out / n for n in ("comparison.json", "comparison.csv", "comparison.png",
                                 "report.html")]
    if not overwrite:
        for t in targets:
            if t.exists():
                raise InputError(f"{t}: already exists; pass --overwrite to replace it")
    if not 0 < confidence < 1:
        raise InputError(f"--confidence {confidence} must be between 0 and 1")
    table = read_manifest(manifest, group_by=group_by)
    groups = load_volumes(table, group_by=group_by, quantity=quantity, border=border)
    if reference is not None:
        match = [g for g in groups if str(g) == str(reference)]
        if not match:
            raise InputError(f"--reference {reference!r} is not a value of {group_by!r} "
                             f"({', '.join(map(str, groups))})")
        reference = match[0]
    say(f"{len(table)} volumes in {len(groups)} groups by {group_by!r}")
    result = compare_samples(groups, reference=reference, confidence=confidence,
                             n_resamples=n_resamples, seed=seed)
    result.update(quantity=quantity, group_by=group_by, border=border)
    result["provenance"] = {
        "crackseg_version": __version__, "manifest": str(Path(manifest)),
        "volumes": table["particles_csv"].tolist(),
        "settings": {"group_by": group_by, "quantity": quantity, "border": border,
                     "confidence": confidence, "n_resamples": n_resamples, "seed": seed,
                     "reference": str(result["reference"])},
    }
    from crackseg.sections import describe_samples, sections_against_census

    samples = describe_samples(table, group_by=group_by, quantity=quantity)
    result["samples"] = samples
    result["sections_against_census"] = sections_against_census(samples) \
        if quantity == "crack_fraction" else []
    rows = comparison_table(result)
    kinds = {}
    for smp in samples:
        kinds.setdefault(smp["group"], []).append(smp["kind_text"])
    rows.insert(1, "kind", [", ".join(sorted(set(kinds.get(str(g), ["?"]))))
                            for g in rows["group"]])
    if {smp["kind"] for smp in samples} >= {"volume"} and \
            any(smp["kind"] != "volume" for smp in samples):
        result.setdefault("notes", []).append(
            "Sections and volumes are compared here: a section's damage is crack area / particle "
            "area of each particle's profile in one plane, a volume's is crack volume / particle "
            "volume, so their difference mixes the electrodes' difference with the difference of "
            "the two measures. See 'Sections against a volume's census' for the like-for-like "
            "reference: what one section of the volume reads.")
    png = figure_png(comparison_figure(result, groups, quantity=quantity, group_by=group_by),
                     dpi=120)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(targets[2], overwrite=overwrite) as tmp:
        tmp.write_bytes(png)
    with atomic_path(targets[1], overwrite=overwrite) as tmp:
        rows.to_csv(tmp, index=False, float_format="%.6g")
    write_json(targets[0], result, overwrite=overwrite)
    write_comparison_report(out / "report.html", result, rows, png, overwrite=overwrite)
    return result
