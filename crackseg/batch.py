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

Volumes above :data:`TIFF_MAX_VOXELS` are written as OME-Zarr (``format
"auto"``).  Every file is written atomically; ``prediction.json`` is written
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
from crackseg.io import (
    HDF5_SUFFIXES,
    TIFF_SUFFIXES,
    atomic_path,
    create_zarr_volume,
    split_dataset_path,
    write_json,
    write_volume,
)

VOLUME_SUFFIXES = TIFF_SUFFIXES + HDF5_SUFFIXES + (".zarr", ".npy")
TIFF_MAX_VOXELS = 1 << 28
"""Largest volume written as TIFF by ``format="auto"`` (about 645^3); larger -> Zarr."""
WORKDIR = ".work"
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


def _write_labels(path: Path, arr, vs, fmt: str, *, overwrite: bool, meta: dict):
    """Write a (possibly Zarr) label/entropy array as TIFF or OME-Zarr, atomically."""
    if fmt == "tif":
        return write_volume(path, np.asarray(arr[...]), vs, overwrite=overwrite, metadata=meta)
    with atomic_path(path, overwrite=overwrite) as tmp:
        dst = create_zarr_volume(tmp, arr.shape, arr.dtype, vs,
                                 chunks=getattr(arr, "chunks", None), metadata=meta)
        step = (getattr(arr, "chunks", None) or (64,))[0]
        for z in range(0, arr.shape[0], step):
            dst[z:z + step] = np.asarray(arr[z:z + step])
    return path


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
    from crackseg.inference import predict_volume
    from crackseg.particles import particle_instances
    from crackseg.uncertainty import particle_posterior_counts

    folder = Path(folder)
    if is_done(folder) and not overwrite:
        return {"input": str(source), "folder": str(folder), "status": "skipped"}
    if fmt not in ("auto", "tif", "zarr"):
        raise CracksegError(f"format {fmt!r}: use auto, tif or zarr")
    work = folder / WORKDIR
    if overwrite or not resume:
        if (folder / DONE_FILE).exists():
            (folder / DONE_FILE).unlink()
        shutil.rmtree(work, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pred = predict_volume(model, source, out=work, resume=resume, progress=progress,
                          **predict_options)
    t_pred = time.perf_counter() - t0
    shape = tuple(pred.labels.shape)
    n_vox = int(np.prod(shape))
    use = fmt if fmt != "auto" else ("tif" if n_vox <= TIFF_MAX_VOXELS else "zarr")
    ext = ".tif" if use == "tif" else ".zarr"
    vs = pred.voxel_size_um
    prov = pred.provenance
    outputs = {}
    seg_path = folder / f"segmentation{ext}"
    _write_labels(seg_path, pred.labels, vs, use, overwrite=True,
                  meta={"crackseg": "segmentation", "schema": pred.schema.to_dict()})
    outputs["segmentation"] = seg_path.name
    if pred.entropy is not None:
        unc_path = folder / f"uncertainty{ext}"
        _write_labels(unc_path, pred.entropy, vs, use, overwrite=True,
                      meta={"crackseg": "predictive entropy (nats)"})
        outputs["uncertainty"] = unc_path.name
    n_particles = None
    t_part = 0.0
    if particles:
        t1 = time.perf_counter()
        opts = dict(particle_options or {})
        big = n_vox > (1 << 24)
        opts.setdefault("chunk_size", 256 if big else None)
        part_path = folder / f"particles{ext}"
        if prov.get("sections"):
            # A stack of 2-D sections: particles are 2-D, labelled section by section.
            from crackseg.sections import section_instances as label_particles
        else:
            label_particles = particle_instances
        if use == "tif":
            inst = label_particles(np.asarray(pred.labels[...]) if not big else pred.labels,
                                   schema=pred.schema, voxel_size_um=vs, progress=progress,
                                   scratch=folder, **opts)
            write_volume(part_path, inst, vs, overwrite=True, metadata={"crackseg": "particles"})
        else:
            with atomic_path(part_path, overwrite=True) as tmp:
                arr = create_zarr_volume(tmp, shape, np.uint32, vs,
                                         chunks=tuple(min(256, s) for s in shape),
                                         metadata={"crackseg": "particles"})
                label_particles(pred.labels, schema=pred.schema, voxel_size_um=vs,
                                out=arr, scratch=folder, progress=progress, **opts)
            import zarr

            inst = zarr.open_array(str(part_path / "0"), mode="r")
        from crackseg.particles import border_labels

        n_particles = int(np.asarray(inst[...]).max()) if use == "tif" else None
        if n_particles is None:
            n_particles = max((int(np.asarray(inst[z:z + 64]).max(initial=0))
                               for z in range(0, shape[0], 64)), default=0)
        if prov.get("sections"):
            from crackseg.sections import stack_border_labels as border_labels
        n_border = int(border_labels(inst).size)
        outputs["particles"] = part_path.name
        if pred.sample_bits is not None:
            slab = max(1, (1 << 22) // int(np.prod(shape[1:])))
            counts = particle_posterior_counts(inst, pred.sample_bits, pred.n_samples,
                                               chunk=slab)
            npz = folder / "particle_samples.npz"
            with atomic_path(npz, overwrite=True) as tmp:
                with open(tmp, "wb") as f:
                    np.savez_compressed(f, **counts, uncertainty=prov["settings"]["uncertainty"])
            outputs["particle_samples"] = npz.name
        t_part = time.perf_counter() - t1
    record = {
        **prov, "crackseg_version": __version__, "outputs": outputs,
        "n_particles": n_particles, "n_border_particles": n_border if particles else None,
        "particle_settings": {k: v for k, v in (particle_options or {}).items()},
        "timing_s": {"predict": round(t_pred, 2), "particles": round(t_part, 2)},
        "voxels_per_s": round(n_vox / t_pred, 1) if pred.stats.get("chunks_run") else None,
    }
    if particles:  # is the input like the model's training data? (crackseg.domain)
        from crackseg.domain import domain_check

        record["domain"] = domain_check(
            pred.labels, inst, schema=pred.schema,
            training_domain=pred.card.get("training_domain"), scale=prov["settings"].get("scale"),
            entropy=pred.entropy, planar=bool(prov.get("sections")))
    write_json(folder / DONE_FILE, record)
    shutil.rmtree(work, ignore_errors=True)
    return {"input": str(source), "folder": str(folder), "status": "done",
            "n_particles": n_particles, "seconds": round(time.perf_counter() - t0, 2)}


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
