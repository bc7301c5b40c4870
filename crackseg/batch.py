"""Batches of inputs: expand paths, predict each into its own folder, resume.

:func:`predict_to_folder` is the unit of work of ``crackseg predict`` (and of
each Dask task in :mod:`crackseg.scaleout`): one input volume in, one folder
out::

    OUT/<input stem>/
        segmentation.tif | .zarr   uint8 labels, voxel size in the metadata
        particles.tif | .zarr      uint32 particle instances
        uncertainty.tif | .zarr    float16 predictive entropy (with uncertainty)
        particle_samples.npz       per-particle posterior counts (with uncertainty)
        prediction.json            provenance, settings, outputs (written last)

Volumes above :data:`crackseg.outputs.TIFF_MAX_VOXELS` are written as
OME-Zarr (``format "auto"``).  Every file is written atomically; ``prediction.json`` is written
last, so its presence means the folder is complete and a re-run skips it.
While a volume is being processed its chunk results live in
``OUT/<stem>/.work/``; an interrupted run resumes from there.

Examples
--------
>>> from crackseg.batch import input_stem
>>> input_stem("scans/cell_01.ome.tif"), input_stem("b/vol.zarr"), input_stem("s.h5:/exchange/data")
('cell_01', 'vol', 's')
"""

from __future__ import annotations

import csv
import glob
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from crackseg._version import __version__
from crackseg.errors import CracksegError
from crackseg.inference import predict_volume
from crackseg.io import HDF5_SUFFIXES, TIFF_SUFFIXES, atomic_path, split_dataset_path, write_json
from crackseg.outputs import (
    check_format,
    max_label,
    output_format,
    write_image,
    write_instances,
    write_tiff_slabs,
)
from crackseg.particles import border_labels, particle_instances
from crackseg.sections import section_instances, stack_border_labels
from crackseg.tiling import DEFAULT_MAX_MEMORY_GB
from crackseg.uncertainty import particle_posterior_counts

VOLUME_SUFFIXES = TIFF_SUFFIXES + HDF5_SUFFIXES + (".zarr", ".npy")
WORKDIR = ".work"
CHUNKED_PARTICLES_VOXELS = 1 << 24
"""Volumes above this many voxels have their particles labelled chunk by chunk into a store."""
DONE_FILE = "prediction.json"


def input_stem(path) -> str:
    """Output folder name of an input: its file name without format suffixes."""
    p, _ = split_dataset_path(path)
    name = p.name.rstrip("/") or p.resolve().name
    low = name.lower()
    for suf in (".ome.tiff", ".ome.tif") + VOLUME_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def _is_slice_folder(p: Path) -> bool:
    tifs = [f for f in p.iterdir() if f.suffix.lower() in TIFF_SUFFIXES]
    others = [f for f in p.iterdir() if f.suffix.lower() in VOLUME_SUFFIXES
              and f.suffix.lower() not in TIFF_SUFFIXES]
    if len(tifs) < 2 or others:
        return False
    import tifffile

    try:
        with tifffile.TiffFile(tifs[0]) as t:
            return len(t.series[0].shape) == 2
    except Exception:  # noqa: BLE001 - an unreadable file is reported when it is read
        return False


def _read_manifest(p: Path) -> list[str]:
    base = p.parent
    out = []
    if p.suffix.lower() == ".csv":
        with open(p, newline="") as f:
            rows = list(csv.reader(f))
        if not rows:
            return []
        header = [c.strip().lower() for c in rows[0]]
        col = header.index("path") if "path" in header else 0
        start = 1 if ("path" in header or not Path(base / rows[0][0]).exists()) else 0
        out = [r[col].strip() for r in rows[start:] if r and r[col].strip()]
    else:
        out = [ln.strip() for ln in p.read_text().splitlines()
               if ln.strip() and not ln.strip().startswith("#")]
    return [s if Path(s).is_absolute() else str(base / s) for s in out]


def expand_inputs(specs) -> list[str]:
    """Input volumes named by files, folders, globs and manifests.

    - a volume file (``.tif``, ``.zarr``, ``.h5[:/dataset]``, ``.npy``, ...);
    - a folder: a Zarr store or a folder of 2-D TIFF slices is one volume;
      any other folder contributes the volumes it holds;
    - a glob pattern (``"scans/*.tif"``);
    - a manifest: ``.txt`` (one path per line, ``#`` comments) or ``.csv``
      (a ``path`` column, else the first), relative to the manifest's folder.

    Missing paths are kept, so they are reported as broken inputs.

    Returns
    -------
    list of str
        In the order given, without duplicates.
    """
    out: list[str] = []
    for spec in specs:
        s = os.fspath(spec)
        p, _ = split_dataset_path(s)
        if any(ch in s for ch in "*?["):
            matches = sorted(glob.glob(s))
            if not matches:
                out.append(s)
            out += expand_inputs(matches) if matches else []
        elif p.suffix.lower() in (".txt", ".csv") and p.is_file():
            out += expand_inputs(_read_manifest(p))
        elif p.is_dir() and not p.name.lower().endswith(".zarr") \
                and not (p / "zarr.json").exists() and not (p / ".zarray").exists() \
                and not _is_slice_folder(p):
            out += [str(f) for f in sorted(p.iterdir())
                    if not f.name.startswith(".") and f.name.lower().endswith(VOLUME_SUFFIXES)]
        else:
            out.append(s)
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


def output_folders(inputs, out_root) -> dict[str, Path]:
    """Output folder of each input; two inputs with the same name are an error."""
    folders: dict[str, Path] = {}
    by_stem: dict[str, str] = {}
    for s in inputs:
        stem = input_stem(s)
        if stem in by_stem:
            raise CracksegError(
                f"inputs {by_stem[stem]} and {s} would both write to {Path(out_root) / stem}; "
                "rename one or run them with different -o"
            )
        by_stem[stem] = s
        folders[s] = Path(out_root) / stem
    return folders


def is_done(folder) -> bool:
    """Whether a previous run finished this output folder."""
    return (Path(folder) / DONE_FILE).is_file()


def predict_to_folder(source, folder, *, model, overwrite: bool = False, resume: bool = True,
                      fmt: str = "auto", particles: bool = True, particle_options=None,
                      progress: bool = True, **predict_options) -> dict:
    """Segment one input into ``folder`` (see module docs); skip it if done.

    Parameters
    ----------
    source : path-like
        Input volume or image.
    folder : path-like
        Output folder of this input.
    model : path-like, str or (net, card)
        As for :func:`crackseg.inference.predict_volume`.
    overwrite : bool
        Redo a finished folder.
    resume : bool
        Continue from finished chunks of an interrupted run.
    fmt : {"auto", "tif", "zarr"}
        Image format of the outputs.
    particles : bool
        Also label particle instances.
    particle_options : dict, optional
        Keyword arguments of :func:`crackseg.particles.particle_instances`.
    progress : bool
        Progress bars on stderr.
    **predict_options
        Passed to :func:`crackseg.inference.predict_volume`.

    Returns
    -------
    dict
        ``{"input", "folder", "status": "done" | "skipped", ...}`` with
        timings and counts.
    """
    folder = Path(folder)
    if is_done(folder) and not overwrite:
        return {"input": str(source), "folder": str(folder), "status": "skipped"}
    check_format(fmt)
    work = folder / WORKDIR
    if overwrite or not resume:
        if (folder / DONE_FILE).exists():
            (folder / DONE_FILE).unlink()
        shutil.rmtree(work, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pred = predict_volume(model, source, out=work, resume=resume, progress=progress,
                          **predict_options)
    timing = {"predict": time.perf_counter() - t0, "particles": 0.0}
    use = output_format(fmt, pred.labels.shape)
    outputs = write_prediction_images(folder, pred, use)
    found = None
    if particles:
        t1 = time.perf_counter()
        found = write_particle_outputs(folder, pred, use, particle_options, progress=progress,
                                       max_memory_gb=predict_options.get("max_memory_gb"))
        outputs.update(found["outputs"])
        timing["particles"] = time.perf_counter() - t1
    write_json(folder / DONE_FILE, prediction_record(
        pred, outputs, found, particle_options, timing,
        max_memory_gb=predict_options.get("max_memory_gb") or DEFAULT_MAX_MEMORY_GB))
    shutil.rmtree(work, ignore_errors=True)
    return {"input": str(source), "folder": str(folder), "status": "done",
            "n_particles": found["n_particles"] if found else None,
            "seconds": round(time.perf_counter() - t0, 2)}


def write_prediction_images(folder: Path, pred, fmt: str) -> dict:
    """Write ``segmentation`` (and ``uncertainty``) of a prediction; output name -> file name."""
    ext = ".tif" if fmt == "tif" else ".zarr"
    vs = pred.voxel_size_um
    seg_path = folder / f"segmentation{ext}"
    write_image(seg_path, pred.labels, vs, fmt, overwrite=True,
                meta={"crackseg": "segmentation", "schema": pred.schema.to_dict()})
    outputs = {"segmentation": seg_path.name}
    if pred.entropy is not None:
        unc_path = folder / f"uncertainty{ext}"
        write_image(unc_path, pred.entropy, vs, fmt, overwrite=True,
                    meta={"crackseg": "predictive entropy (nats)"})
        outputs["uncertainty"] = unc_path.name
    return outputs


def write_particle_outputs(folder: Path, pred, fmt: str, particle_options=None, *,
                           progress: bool = True, max_memory_gb: float | None = None) -> dict:
    """Label the particles of a prediction and write ``particles`` (and ``particle_samples.npz``).

    A stack of 2-D sections (``provenance["sections"]``) is labelled section
    by section (:func:`crackseg.sections.section_instances`).  A big volume
    is labelled in chunks sized, with the workers, to fit ``max_memory_gb``
    (GiB, this process included; default that of prediction).

    Returns
    -------
    dict
        ``instances`` (array), ``n_particles``, ``n_border``, ``outputs``
        (output name -> file name) and, for a chunked run, ``plan`` (chunk,
        workers and memory budget of the labelling).
    """
    shape = tuple(pred.labels.shape)
    big = int(np.prod(shape)) > CHUNKED_PARTICLES_VOXELS
    opts = dict(particle_options or {})
    opts.setdefault("chunk_size", 256 if big else None)
    stack = bool(pred.provenance.get("sections"))
    label = section_instances if stack else particle_instances
    seg = np.asarray(pred.labels[...]) if fmt == "tif" and not big else pred.labels
    part_path = folder / f"particles{'.tif' if fmt == 'tif' else '.zarr'}"
    meta = {"crackseg": "particles"}
    if big and not stack:
        # Chunks labelled in parallel into a resumable store in the work folder (removed
        # with it once the folder is complete); statistics read the result block by block.
        opts.setdefault("store", folder / WORKDIR / "particles")
        opts.setdefault("max_memory_gb", DEFAULT_MAX_MEMORY_GB if max_memory_gb is None
                        else max_memory_gb)
    if fmt == "tif" and big:
        # Labelled into a work store, then copied to TIFF a slab at a time: the instances
        # are never held whole.
        inst = (label(seg, voxel_size_um=pred.voxel_size_um, schema=pred.schema,
                      progress=progress, scratch=folder, **opts) if not stack else
                write_instances(folder / WORKDIR / "particles.zarr", seg, label, "zarr",
                                voxel_size_um=pred.voxel_size_um, overwrite=True, meta=meta,
                                schema=pred.schema, progress=progress, scratch=folder, **opts))
        write_tiff_slabs(part_path, inst, pred.voxel_size_um, overwrite=True, meta=meta)
    else:
        inst = write_instances(part_path, seg, label, fmt, voxel_size_um=pred.voxel_size_um,
                               overwrite=True, meta=meta, schema=pred.schema,
                               progress=progress, scratch=folder, **opts)
    border = stack_border_labels if stack else border_labels
    found = {"instances": inst, "n_particles": max_label(inst), "n_border": int(border(inst).size),
             "outputs": {"particles": part_path.name}}
    if opts.get("store") is not None:
        found["plan"] = labelling_plan(Path(opts["store"]))
    if pred.sample_bits is not None:
        slab = max(1, (1 << 22) // int(np.prod(shape[1:])))
        counts = particle_posterior_counts(inst, pred.sample_bits, pred.n_samples, chunk=slab)
        npz = folder / "particle_samples.npz"
        with atomic_path(npz, overwrite=True) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **counts,
                                    uncertainty=pred.provenance["settings"]["uncertainty"])
        found["outputs"]["particle_samples"] = npz.name
    return found


def labelling_plan(store: Path) -> dict | None:
    """Chunk, workers, margin and memory budget a chunked particle run recorded in ``store``."""
    import json

    try:
        prog = json.loads((store / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    return {k: prog[k] for k in ("chunk", "workers", "margin", "radius", "max_memory_gb",
                                 "budget_left_gb", "estimate_gb") if k in prog}


def prediction_record(pred, outputs: dict, found: dict | None, particle_options,
                      timing: dict, *, max_memory_gb: float | None = None) -> dict:
    """What ``prediction.json`` holds: provenance, outputs, particle counts, timings, domain.

    ``found`` is what :func:`write_particle_outputs` returned (``None``
    without particles); the out-of-distribution flags
    (:func:`crackseg.domain.domain_check`) need the particles, and run on
    the cores ``max_memory_gb`` allows.
    """
    prov = pred.provenance
    n_vox = int(np.prod(pred.labels.shape))
    record = {
        **prov, "crackseg_version": __version__, "outputs": outputs,
        "n_particles": found["n_particles"] if found else None,
        "n_border_particles": found["n_border"] if found else None,
        "particle_settings": {k: v for k, v in (particle_options or {}).items()},
        "particle_plan": found.get("plan") if found else None,
        "timing_s": {k: round(v, 2) for k, v in timing.items()},
        "voxels_per_s": round(n_vox / timing["predict"], 1)
        if pred.stats.get("chunks_run") else None,
    }
    if found:  # is the input like the model's training data?
        from crackseg.domain import SLAB_WORKER_BYTES, domain_check, validation_damage
        from crackseg.particle_chunks import default_workers, workers_for_memory

        t = time.perf_counter()
        record["domain"] = domain_check(
            pred.labels, found["instances"], schema=pred.schema,
            training_domain=pred.card.get("training_domain"), scale=prov["settings"].get("scale"),
            entropy=pred.entropy, planar=bool(prov.get("sections")),
            workers=workers_for_memory(max_memory_gb, default_workers(),
                                       per_worker_bytes=SLAB_WORKER_BYTES))
        record["timing_s"]["domain_checks"] = round(time.perf_counter() - t, 2)
        record["domain"]["model_validation"] = validation_damage(pred.card)
    return record


def run_batch(inputs, out_root, *, model, on_error=None, progress: bool = True,
              **options) -> list[dict]:
    """Run :func:`predict_to_folder` on every input in turn, collecting failures.

    A :class:`~crackseg.errors.CracksegError` (or unreadable file) of one
    input is recorded as ``{"status": "failed", "error": ...}`` and the batch
    goes on.
    """
    from tqdm.auto import tqdm

    folders = output_folders(inputs, out_root)
    results = []
    for src in tqdm(inputs, desc="inputs", unit="file", disable=not progress or len(inputs) < 2,
                    file=sys.stderr):
        results.append(predict_one_safely(src, folders[src], model=model, progress=progress,
                                          **options))
        if on_error and results[-1]["status"] == "failed":
            on_error(results[-1])
    return results


def run_safely(fn, src, folder, **kwargs) -> dict:
    """``fn(src, folder, **kwargs)``, with a user error or unreadable file returned as a failed record.

    What the failed input left behind is removed unless it holds finished
    chunks that a re-run resumes from, so no folder looks complete.

    Returns
    -------
    dict
        ``fn``'s record, or ``{"input", "folder", "status": "failed", "error"}``
        with a one-line error.
    """
    folder = Path(folder)
    existed = folder.exists()
    try:
        return fn(src, folder, **kwargs)
    except (CracksegError, OSError) as e:
        _remove_unstarted(folder, existed)
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if not isinstance(e, CracksegError):
            msg = f"{src}: {msg}"
        return {"input": str(src), "folder": str(folder), "status": "failed", "error": msg}


def predict_one_safely(src, folder, **kwargs) -> dict:
    """:func:`predict_to_folder`, with user errors returned as a failed record (:func:`run_safely`)."""
    return run_safely(predict_to_folder, src, folder, **kwargs)


def _remove_unstarted(folder: Path, existed: bool) -> None:
    """Remove what a failed input left behind unless it holds finished chunks."""
    import json

    work = folder / WORKDIR
    prog = work / "progress.json"
    try:
        started = prog.exists() and json.loads(prog.read_text()).get("done")
    except (OSError, ValueError):
        started = False
    if work.exists() and not started:
        shutil.rmtree(work, ignore_errors=True)
    if not existed and folder.exists() and not any(folder.iterdir()):
        folder.rmdir()
