"""The main job, one input at a time: predict -> particles -> statistics -> report.

:func:`analyse_input` is what ``crackseg run`` (and ``crackseg demo``) does for
each input; :func:`measure_folder` is the statistics step on a folder written
by :func:`crackseg.batch.predict_to_folder`.  The steps on their own, as the
commands run them: :func:`segmentation_particles` (``crackseg particles``),
:func:`segmentation_statistics` (``crackseg stats``), :func:`write_comparison`
(``crackseg compare``) and :func:`compare_manifest` (``crackseg run`` on a
manifest with metadata).

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
from functools import partial
from pathlib import Path

import numpy as np

from crackseg.errors import InputError
from crackseg.io import atomic_path, read_volume, write_json

STATS_DEFAULTS = {
    "confidence": 0.95, "n_resamples": 2000, "seed": 0, "method": "block", "block_size": None,
    "border": "exclude", "thresholds": (0.01, 0.05), "depth_axis": 0, "shell_um": None,
    "max_memory_gb": None,
}
"""Default settings of the statistics step (see ``crackseg stats --help``); ``max_memory_gb``
(``crackseg run --max-memory``) decides how many processes measure the particle table
(:func:`crackseg.particle_chunks.workers_for_memory`; without it, one per core)."""


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
        summary = json.loads(summary_path.read_text())
        if not options.get("annotations") or "annotation_error" in summary["damage"]["mean"]:
            return summary
        raise InputError(f"{summary_path}: exists and was computed without annotations; pass "
                         "--overwrite to recompute it with them")
    pred_path = folder / "prediction.json"
    prediction = json.loads(pred_path.read_text()) if pred_path.exists() else {}
    seg_path, inst_path = _find(folder, "segmentation"), _find(folder, "particles")
    if seg_path is None or inst_path is None:
        raise InputError(f"{folder}: no segmentation and particles; run `crackseg predict` first")
    seg_img = read_volume(seg_path, lazy=True)  # read block by block from here on
    seg = seg_img.data
    inst = read_volume(inst_path, lazy=True).data
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
    from crackseg.domain import domain_check, validation_damage
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
    domain = domain_check(seg, inst, schema=schema, training_domain=card.get("training_domain"),
                          scale=(prediction.get("settings") or {}).get("scale"),
                          entropy=read_volume(unc, lazy=True).data if unc else None,
                          planar=bool(prediction.get("sections")))
    domain["model_validation"] = validation_damage(card)
    return domain


def write_statistics(out, seg, instances, *, schema, voxel_size_um, posterior=None,
                     provenance: dict | None = None, overwrite: bool = False, say=None,
                     source: str = "segmentation", sections: bool = False,
                     domain: dict | None = None, **options):
    """Measure particles, summarise, and write ``particles.csv`` + ``summary.json``.

    Parameters
    ----------
    out : path-like
        Output folder.
    seg, instances, schema, voxel_size_um, posterior, provenance, say, source, sections, domain
        As for :func:`particle_statistics`.
    overwrite : bool
        Replace existing outputs.
    **options
        Statistics settings (:data:`STATS_DEFAULTS`).

    Returns
    -------
    (pandas.DataFrame, dict)
        The particle table and the summary.
    """
    out = Path(out)
    if not overwrite:
        _refuse_existing(out, ["particles.csv", "summary.json"])
    table, summary = particle_statistics(
        seg, instances, schema=schema, voxel_size_um=voxel_size_um, posterior=posterior,
        provenance=provenance, say=say, source=source, sections=sections, domain=domain,
        **options)
    write_table_and_summary(out, table, summary, overwrite=overwrite)
    return table, summary


def _refuse_existing(out: Path, names) -> None:
    for name in names:
        if (out / name).exists():
            raise InputError(f"{out / name}: already exists; pass --overwrite to replace it")


def particle_statistics(seg, instances, *, schema, voxel_size_um, posterior=None,
                        provenance: dict | None = None, say=None, source: str = "segmentation",
                        sections: bool = False, domain: dict | None = None, **options):
    """Per-particle table and distribution statistics (nothing written).

    Parameters
    ----------
    seg, instances : array_like, shape (Z, Y, X) or (Y, X)
        Semantic labels and particle instances.
    schema : LabelSchema
    voxel_size_um : tuple of float or None
    posterior : tuple, optional
        ``(labels, crack_fraction samples)`` from
        :func:`crackseg.stats.read_particle_samples`.
    provenance : dict, optional
        Recorded in the summary (input, model, ...).
    say : callable, optional
        Receives progress messages.
    source : str
        Name of ``seg`` in messages.
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
        The particle table and the summary (as ``summary.json`` holds it).
    """
    from crackseg.particle_chunks import ANALYSIS_WORKER_BYTES, default_workers, workers_for_memory
    from crackseg.stats.summary import summarize
    from crackseg.stats.table import particle_table, section_stack_table
    from crackseg.stats.table_blocks import DEFAULT_MAX_MEMORY_GB as TABLE_MEMORY_GB

    say = say or (lambda msg: None)
    opts = {**STATS_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    if sections and np.ndim(seg) != 3:
        raise InputError(f"{source}: a stack of sections is 3-D (Z, Y, X); got shape "
                         f"{np.shape(seg)}")
    annotated = _annotated_sections(seg, opts, schema)
    say("measuring particles" + (f" in {np.shape(seg)[0]} sections" if sections else ""))
    # a volume is measured block by block on the cores the memory budget allows: n workers
    # need their interpreters, the table's working memory (split between them) and the
    # blocks read here for them (a quarter more); the table does not depend on n
    workers = workers_for_memory(opts.get("max_memory_gb"), default_workers(),
                                 per_worker_bytes=ANALYSIS_WORKER_BYTES,
                                 fixed_bytes=1.25e9 * TABLE_MEMORY_GB)
    measure = section_stack_table if sections else partial(particle_table, workers=workers)
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
    if annotated is not None:
        from crackseg.stats.annotation_error import apply_annotation_error, corrected_line

        say(f"segmentation error on {len(annotated[0])} annotated sections")
        entry = apply_annotation_error(summary, seg, instances, annotated[1], annotated[0],
                                       schema=schema, seed=opts["seed"],
                                       n_resamples=opts["n_resamples"],
                                       source=str(opts["annotations"]))
        summary["provenance"]["annotations"] = {"path": str(opts["annotations"]),
                                                "slices": annotated[0]}
        say(corrected_line(entry))
    if domain is not None:
        summary["domain"] = domain
        state_validation_error(summary)
    return table, summary


def state_validation_error(summary: dict) -> None:
    """Add the model's validation damage error to the mean's ``segmentation_error`` words.

    Only where annotated sections did not measure the error on this volume:
    then the interval leaves the model's error out, and the words say how
    large it was on the model's validation phantoms
    (:func:`crackseg.domain.validation_damage`).
    """
    mean = (summary.get("damage") or {}).get("mean")
    found = ((summary.get("domain") or {}).get("model_validation") or {}).get("message")
    if not mean or not found or (mean.get("annotation_error") or {}).get("sufficient"):
        return
    stated = mean.get("segmentation_error")
    mean["segmentation_error"] = f"{stated}; {found}" if stated else found


def _annotated_sections(seg, opts: dict, schema):
    """``(slices, labels)`` of ``opts["annotations"]`` checked against ``seg``, or ``None``."""
    if opts.get("annotations") is None:
        return None
    from crackseg.stats.annotation_error import annotated_sections

    return annotated_sections(opts["annotations"], np.shape(seg), opts.get("annotated_slices"),
                              schema=schema, source=str(opts["annotations"]))


def write_table_and_summary(out, table, summary: dict, *, overwrite: bool = False) -> None:
    """Write ``particles.csv``, then ``summary.json`` (the mark of a finished folder), atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "particles.csv", overwrite=overwrite) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_json(out / "summary.json", summary, overwrite=overwrite)


def check_statistics_settings(confidence: float, n_resamples: int) -> None:
    """Raise :class:`~crackseg.errors.InputError` for an interval level or resample count
    that cannot give an interval."""
    if not 0 < confidence < 1:
        raise InputError(f"--confidence {confidence} must be between 0 and 1")
    if n_resamples < 100:
        raise InputError(f"--n-resamples {n_resamples} is too few; use at least 100")


def segmentation_statistics(segmentation, out, *, instances=None, schema=None,
                            voxel_size_um=None, sections: bool = False, posterior=None,
                            min_volume_um3: float | None = None, overwrite: bool = False,
                            progress: bool = True, say=None, command: str | None = None,
                            **options) -> tuple[dict, list[Path]]:
    """Particle table and statistics of one segmentation file (``crackseg stats``).

    Writes ``particles.csv`` and ``summary.json`` into ``out``, and, when the
    instances are computed here, ``particles.tif`` before them:
    ``summary.json`` is written last, so its presence means ``out`` is complete.

    Parameters
    ----------
    segmentation : path-like
        Semantic label volume (Z, Y, X).
    out : path-like
        Output folder.
    instances : path-like, optional
        Particle instance volume; default: labelled here (envelope fill and
        watershed, or section by section for a stack).
    schema : str or path, optional
        Label schema (default ``nmc4``).
    voxel_size_um : sequence of float, optional
        (z, y, x) in µm, overriding the file's.
    sections : bool
        ``segmentation`` is a stack of 2-D sections (also when the
        ``prediction.json`` beside it says so).
    posterior : path-like, optional
        ``particle_samples.npz`` (default: the one beside ``segmentation``, if any).
    min_volume_um3 : float, optional
        Smallest particle kept when labelling instances here (µm³; µm² for
        sections; needs a voxel size).
    overwrite : bool
        Replace existing outputs.
    progress : bool
        Progress bars on stderr.
    say : callable, optional
        Receives progress messages.
    command : str, optional
        The command line, recorded in the provenance.
    **options
        Statistics settings (:data:`STATS_DEFAULTS`).

    Returns
    -------
    summary : dict
        As written to ``summary.json``.
    written : list of Path
        The files written.
    """
    from crackseg.io import describe_voxel_size, write_volume
    from crackseg.labels import load_schema
    from crackseg.sections import stack_beside
    from crackseg.stats.table import read_particle_samples

    say = say or (lambda msg: None)
    out = Path(out)
    names = ["particles.csv", "summary.json"] + ([] if instances else ["particles.tif"])
    if not overwrite:
        _refuse_existing(out, names)
    check_statistics_settings(options.get("confidence", 0.95), options.get("n_resamples", 2000))
    schema = load_schema(schema)
    img = read_volume(segmentation, lazy=True)
    if img.data.ndim != 3:
        raise InputError(f"{img.source}: need a 3-D (Z, Y, X) segmentation, got shape "
                         f"{img.data.shape}")
    sections = sections or stack_beside(segmentation)
    if sections:
        say(f"a stack of {img.data.shape[0]} sections: particles measured section by section")
    vs = tuple(voxel_size_um) if voxel_size_um else img.voxel_size_um
    say("voxel size unknown: working in voxel units (give --voxel-size Z Y X for µm)"
        if vs is None else f"voxel size {describe_voxel_size(vs)}")
    inst, inst_source = _instances_of(img, instances, schema=schema, voxel_size_um=vs,
                                      sections=sections, min_volume_um3=min_volume_um3,
                                      progress=progress, say=say)
    post_path = Path(posterior) if posterior else Path(img.source).parent / "particle_samples.npz"
    post = read_particle_samples(post_path) if posterior or post_path.exists() else None
    if post is not None:
        say(f"posterior samples: {post[1].shape[0]} from {post_path}")
    prov = {"input": str(Path(segmentation)), **segmentation_provenance(segmentation),
            "segmentation": str(Path(segmentation)),
            "instances": inst_source or str(out / "particles.tif"), "schema": schema.name,
            "posterior_samples": str(post_path) if post is not None else None,
            "command": command}
    table, summary = particle_statistics(img.data, inst, schema=schema, voxel_size_um=vs,
                                         posterior=post, provenance=prov, say=say,
                                         source=img.source, sections=sections, **options)
    if not instances:
        write_volume(out / "particles.tif", np.asarray(inst, dtype=np.uint32), vs,
                     overwrite=overwrite, metadata={"provenance": {"segmentation": img.source}})
    write_table_and_summary(out, table, summary, overwrite=overwrite)
    return summary, [out / n for n in names]


def _instances_of(img, instances, *, schema, voxel_size_um, sections: bool, min_volume_um3,
                  progress: bool, say):
    """Particle instances of a segmentation: read (checked against it) or labelled here.

    Returns
    -------
    (array, str or None)
        The instances and the file they were read from (``None``: labelled here).
    """
    seg = img.data
    if instances:
        iimg = read_volume(instances, lazy=True)
        if iimg.data.shape != seg.shape:
            raise InputError(f"{iimg.source}: instance shape {iimg.data.shape} differs from "
                             f"segmentation {img.source} shape {seg.shape}")
        return iimg.data, iimg.source
    from crackseg.labels import validate_labels
    from crackseg.particles import particle_instances
    from crackseg.sections import section_instances

    seg = np.asarray(seg[...])
    validate_labels(seg, schema, source=img.source)
    say("separating particles (envelope fill + watershed)")
    label = section_instances if sections else particle_instances
    kw = {} if min_volume_um3 is None else {"min_volume_um3": min_volume_um3}
    return label(seg, schema=schema, voxel_size_um=voxel_size_um, progress=progress, **kw), None


def segmentation_particles(segmentation, out, *, schema=None, voxel_size_um=None,
                           min_volume_um3: float | None = None, h: float | None = None,
                           chunk: int | None = None, fmt: str = "auto", sections: bool = False,
                           overwrite: bool = False, progress: bool = True):
    """Label the particles of a segmentation file into ``out`` (``crackseg particles``).

    Parameters
    ----------
    segmentation : path-like
        Semantic label volume (Z, Y, X) or image (Y, X), read lazily.
    out : path-like
        Output folder: ``particles.tif``, or ``particles.zarr`` (``fmt``).
    schema : str or path, optional
        Label schema (default ``nmc4``).
    voxel_size_um : sequence of float, optional
        One value or one per axis (µm), overriding the file's.
    min_volume_um3, h : float, optional
        As for :func:`crackseg.particles.particle_instances`.
    chunk : int, optional
        Chunk edge (voxels); default: the whole volume up to 256^3.
    fmt : {"auto", "tif", "zarr"}
    sections : bool
        A stack of 2-D sections, labelled section by section (also when the
        ``prediction.json`` beside ``segmentation`` says so).
    overwrite, progress : bool

    Returns
    -------
    dict
        ``source`` (the segmentation read), ``path`` (the file written),
        ``n_particles`` and ``n_border`` (those touching the border).
    """
    from crackseg.errors import CracksegError
    from crackseg.labels import load_schema, validate_labels
    from crackseg.outputs import max_label, output_format, write_instances
    from crackseg.particles import DEFAULT_H, border_labels, particle_instances
    from crackseg.sections import section_instances, stack_beside, stack_border_labels

    schema = load_schema(schema)
    img = read_volume(segmentation, lazy=True)
    sections = sections or stack_beside(segmentation)
    if sections and img.ndim != 3:
        raise CracksegError(f"{img.source}: a stack of sections is 3-D (Z, Y, X); got shape "
                            f"{img.shape}")
    vs = img.voxel_size_um
    if voxel_size_um:
        if len(voxel_size_um) not in (1, img.ndim):
            raise CracksegError(f"--voxel-size takes one value or {img.ndim}")
        vs = tuple(float(v) for v in np.broadcast_to(voxel_size_um, (img.ndim,)))
    n_vox = int(np.prod(img.shape))
    fmt = output_format(fmt, img.shape)
    path = Path(out) / f"particles.{'tif' if fmt == 'tif' else 'zarr'}"
    if path.exists() and not overwrite:
        raise CracksegError(f"{path}: already exists; pass --overwrite to replace it")
    chunk = chunk or (256 if n_vox > 256**3 else None)
    Path(out).mkdir(parents=True, exist_ok=True)
    data = img.data if chunk else np.asarray(img.data[...])
    if chunk is None:
        validate_labels(data, schema, source=img.source)
    inst = write_instances(
        path, data, section_instances if sections else particle_instances, fmt,
        voxel_size_um=vs, overwrite=overwrite,
        meta={"crackseg": "particles", "source": img.source}, schema=schema,
        min_volume_um3=min_volume_um3, h=DEFAULT_H if h is None else h, chunk_size=chunk,
        progress=progress, scratch=Path(out))
    border = stack_border_labels if sections else border_labels
    return {"source": img.source, "path": path, "n_particles": max_label(inst),
            "n_border": int(border(inst).size)}


def segmentation_provenance(path) -> dict:
    """Model name, weights sha256 and input recorded in a segmentation file, if any."""
    from crackseg.io import format_of, split_dataset_path

    p, _ = split_dataset_path(path)
    meta = {}
    try:
        fmt = format_of(p)
        if fmt in ("tiff", "ome-tiff"):
            import tifffile

            with tifffile.TiffFile(p) as tif:
                info = (tif.imagej_metadata or {}).get("Info")
                if info:
                    meta = json.loads(info)
                elif tif.shaped_metadata:
                    meta = dict(tif.shaped_metadata[0])
        elif fmt == "zarr":
            import zarr

            node = zarr.open(str(p), mode="r")
            meta = dict(node.attrs).get("crackseg", {})
    except (OSError, ValueError, TypeError, KeyError):
        meta = {}
    prov = meta.get("provenance", meta) if isinstance(meta, dict) else {}
    return {k: prov.get(k) for k in ("model", "model_sha256", "input") if prov.get(k) is not None}


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
    from crackseg.tiling import DEFAULT_MAX_MEMORY_GB

    t0 = time.perf_counter()
    folder = Path(folder)
    say = say or (lambda msg: None)
    say(f"{source}: segmenting")
    r = predict_to_folder(source, folder, model=model, overwrite=overwrite, resume=resume,
                          progress=progress, **predict_options)
    redo = overwrite or r["status"] == "done"
    summary = measure_folder(folder, overwrite=redo, say=lambda m: say(f"{source}: {m}"),
                             max_memory_gb=predict_options.get("max_memory_gb")
                             or DEFAULT_MAX_MEMORY_GB,
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


def compare_manifest(manifest, folders: dict, out: Path, *, group_by: str, seed: int,
                     n_resamples: int, border: str, say) -> Path | None:
    """Compare the analysed inputs of a metadata manifest into ``out/comparison`` (``crackseg run``).

    Parameters
    ----------
    manifest : path-like
        The input manifest (CSV with ``path`` and metadata columns).
    folders : dict
        Input -> its analysed folder (:func:`crackseg.batch.output_folders`).
    out : Path
        Output folder of the run.
    group_by, seed, n_resamples, border
        As for :func:`write_comparison`.
    say : callable
        Receives progress messages.

    Returns
    -------
    Path or None
        ``out/comparison``, or ``None`` when fewer than two samples were analysed
        or the manifest has no ``group_by`` column.
    """
    import pandas as pd

    from crackseg.batch import expand_inputs

    m = pd.read_csv(manifest, dtype={"path": str, "sample": str}, skipinitialspace=True)
    cols = [c for c in m.columns if c.strip().lower() != "path"]
    if not cols or group_by not in m.columns:
        say(f"{manifest}: no {group_by!r} column; skipping the comparison")
        return None
    paths = expand_inputs([manifest])
    rows = []
    for src, (_, row) in zip(paths, m.iterrows()):
        folder = folders.get(src)
        if folder is None or not (Path(folder) / "particles.csv").exists():
            continue
        rows.append({"path": str(Path(folder).resolve()), **{c: row[c] for c in cols}})
    if len(rows) < 2:
        return None
    target = out / "comparison"
    target.mkdir(parents=True, exist_ok=True)
    comp_manifest = target / "manifest.csv"
    pd.DataFrame(rows).to_csv(comp_manifest, index=False)
    say(f"comparing {len(rows)} samples by {group_by!r}")
    write_comparison(comp_manifest, target, group_by=group_by, seed=seed, border=border,
                     n_resamples=n_resamples, overwrite=True, say=say)
    return target
