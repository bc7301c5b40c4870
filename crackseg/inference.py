"""Whole-volume inference: chunks, resume, posterior samples, stacks, resampling.

:func:`predict_volume` segments a volume (ZYX) or image (YX) of any size with
a model directory.  The volume is cut into chunks (:func:`crackseg.tiling.plan_inference`)
read lazily with a halo of context; each chunk goes through the network on
its own (:func:`crackseg.chunk_inference.predict_chunk`: MONAI's
:func:`~monai.inferers.sliding_window_inference` runs window by window and
stitches the class scores) and only the chunk's core is kept.  Peak memory is
therefore set by the chunk and window sizes, not by the volume.

Two ways of stitching windows (``blend``):

``"valid"`` (default)
    Windows of ``roi_size`` voxels overlap by twice a halo; each voxel takes
    the scores of the window in whose centre it lies (MONAI with a weight
    map that is 1 in the window's centre and 1e-4 per axis in its halo).  No
    compute is spent on down-weighted window borders.  The default halo is
    the network's receptive field and windows sit on its downsampling grid,
    so the result is the whole-volume forward pass's
    (:func:`crackseg.tiling.default_halo`).
``"gaussian"``
    MONAI's Gaussian blending with the window and overlap of the model card.

With ``out`` set, outputs are written chunk by chunk into Zarr stores in that
folder, and the indices of finished chunks into ``progress.json`` after each
chunk (:class:`crackseg.chunk_store.ChunkStore`); calling again with the same
settings skips finished chunks and gives bit-identical results.  With a
``dask.distributed`` ``client`` as well, the chunks of one input file run as
tasks on the cluster's workers (:mod:`crackseg.chunk_tasks`), with the same
results.

A 3-D input given to a 2-D model is a stack of sections, segmented section
by section (:func:`predict_sections`); an input whose particles are far from
the size the model was trained on is resampled first (:func:`input_scale`).

Examples
--------
>>> import numpy as np, tempfile, os
>>> from crackseg.nets import unet_architecture, build_network
>>> from crackseg.model_io import new_card, save_model
>>> arch = unet_architecture(3, out_channels=4, channels=(4, 8))
>>> d = save_model(build_network(arch), new_card("tiny", arch, patch_size=(32, 32, 32)),
...                os.path.join(tempfile.mkdtemp(), "tiny"))
>>> vol = np.random.default_rng(0).random((40, 40, 40), dtype=np.float32)
>>> pred = predict_volume(d, vol, progress=False)
>>> pred.labels.shape, pred.labels.dtype
((40, 40, 40), dtype('uint8'))
"""

from __future__ import annotations

import copy
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crackseg._version import __version__
from crackseg.chunk_inference import block_reader, normalized_block, predict_chunk, stitched_logits
from crackseg.chunk_store import ChunkStore, input_identity, settings_fingerprint
from crackseg.devices import cpu_supports_bf16, resolve_device, resolve_precision
from crackseg.errors import CracksegError, InputError
from crackseg.io import Image, count_nonfinite, read_volume
from crackseg.labels import LabelSchema
from crackseg.sections import MIN_SECTION_SIDE, stack_record
from crackseg.tiling import chunk_grid, plan_inference, valid_tiling
from crackseg.uncertainty import (
    SAMPLE_CLASSES,
    enable_mc_dropout,
    posterior_sample_count,
    tta_transforms,
)

__all__ = [
    "Prediction", "predict_volume", "predict_sections", "intensity_range", "strided_sample",
    "input_scale", "plan_inference", "MAX_RESCALED_VOXELS", "SAMPLE_CLASSES",
    # where they live: crackseg.chunk_inference, crackseg.tiling, crackseg.devices
    "predict_chunk", "stitched_logits", "valid_tiling", "resolve_device", "resolve_precision",
    "cpu_supports_bf16",
]

PERCENTILE_SAMPLE_VOXELS = 1 << 24
"""Voxels used to estimate per-volume percentiles (strided subsample above this)."""
MAX_RESCALED_VOXELS = 512 ** 3
"""Largest resampled input processed in memory by ``scale``."""
WINDOW_OPTIONS = ("roi_size", "overlap", "blend", "halo", "device", "batch_size", "precision",
                  "uncertainty", "n_samples", "progress", "seed", "nan_policy")
"""Options of :func:`predict_volume` that a resampled input or a section is predicted with."""


@dataclass
class Prediction:
    """Result of :func:`predict_volume`.

    Attributes
    ----------
    labels : array, shape (Z, Y, X) or (Y, X), uint8
        Stored label values of the model's schema (NumPy, or Zarr when
        written out of core).
    entropy : array of float16 or None
        Per-voxel predictive entropy in nats (with ``uncertainty``).
    sample_bits : dict or None
        ``{"crack": bits, "pore": bits}``: bit ``s`` set where posterior
        sample ``s`` predicted that class (see
        :func:`crackseg.uncertainty.particle_posterior_counts`).
    n_samples : int
        Posterior samples drawn (1 without uncertainty).
    voxel_size_um : tuple of float or None
    schema : LabelSchema
    card : dict
        Model card.
    provenance : dict
        crackseg version, model name and weights SHA-256, input, voxel size
        and all settings.
    workdir : Path or None
        Folder of the chunked Zarr stores (with ``out``).
    """

    labels: object
    entropy: object
    sample_bits: dict | None
    n_samples: int
    voxel_size_um: tuple | None
    schema: LabelSchema
    card: dict
    provenance: dict
    workdir: Path | None = None
    stats: dict = field(default_factory=dict)


def intensity_range(data, normalization: dict, *, source: str = "input") -> tuple[float, float]:
    """Grey values mapped to 0 and 1 by the model card's normalisation.

    ``{"method": "percentile", "mode": "per_volume", "percentiles": [lo, hi]}``
    computes the percentiles of this volume (finite voxels; on a regular
    strided subsample of about 16 M voxels for bigger volumes, reading whole
    slices of lazy arrays); ``"mode": "fixed"`` with ``"range": [lo, hi]``
    (or ``"reference": [lo, hi]``) uses the stored values.

    Parameters
    ----------
    data : array-like, shape (Z, Y, X) or (Y, X)
    normalization : dict
        The card's ``normalization`` entry.

    Returns
    -------
    lo, hi : float
    """
    from crackseg.normalize import fixed_range, percentile_range, resolved

    fixed = fixed_range(normalization)
    if fixed is not None:
        return fixed
    norm = resolved(normalization)
    sample = strided_sample(data)
    if np.issubdtype(sample.dtype, np.floating):
        sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        raise InputError(f"{source}: no finite voxels")
    return percentile_range(sample, norm.get("percentiles", (1.0, 99.0)))


def strided_sample(data, target: int = PERCENTILE_SAMPLE_VOXELS) -> np.ndarray:
    """A regular subsample of about ``target`` voxels (whole array if smaller)."""
    shape = tuple(data.shape)
    n = int(np.prod(shape))
    if n <= target:
        return np.asarray(data[...]).ravel()
    f = (n / target) ** (1.0 / len(shape))
    step = [max(1, int(round(f)))] * len(shape)
    z_step = step[0]
    parts = [np.asarray(data[z])[tuple(slice(None, None, s) for s in step[1:])].ravel()
             for z in range(0, shape[0], z_step)]
    return np.concatenate(parts)


def _model(model, device: str):
    """Network on ``device``, card and identity (name, weights SHA-256, directory) of a model."""
    from crackseg.model_io import load_model, resolve_model_path

    if isinstance(model, tuple) and len(model) == 2:
        net, card = model
        net = copy.deepcopy(net).to(device).eval()
        path = None
    else:
        net, card = load_model(model, device=device)
        path = str(resolve_model_path(model).resolve())
    return net, card, {"name": card.get("name"), "sha256": card.get("weights_sha256"),
                       "path": path}


def _as_image(volume, voxel_size_um, nan_policy: str, *, channel: int | None = None) -> Image:
    """The input as an :class:`~crackseg.io.Image` (lazy for a path), with ``voxel_size_um`` set."""
    if isinstance(volume, Image):
        img = volume
    elif isinstance(volume, (str, os.PathLike)):
        img = read_volume(volume, lazy=True, channel=channel)
    else:
        data = volume if hasattr(volume, "shape") and hasattr(volume, "dtype") else np.asarray(volume)
        from crackseg.io import check_array

        data = check_array(data, "array")
        img = Image(data=data, voxel_size_um=None, source="array", axes="ZYX"[-data.ndim:])
    if voxel_size_um is not None:
        vs = tuple(float(v) for v in np.broadcast_to(np.asarray(voxel_size_um, float), (img.ndim,)))
        if not all(np.isfinite(v) and v > 0 for v in vs):
            raise InputError(f"voxel size {voxel_size_um} must be positive numbers (µm)")
        img = Image(img.data, vs, img.source, img.axes, img.metadata)
    if nan_policy not in ("error", "replace"):
        raise CracksegError(f"nan_policy {nan_policy!r}: use error or replace")
    return img


def input_scale(scale, img: Image, card: dict) -> tuple[float, float]:
    """Resampling factor under ``scale`` and the estimated particle diameter (voxels).

    A factor that would make the input larger than :data:`MAX_RESCALED_VOXELS`
    is refused when asked for explicitly and skipped (with a message) under
    ``"auto"``.
    """
    from crackseg.scale import particle_diameter_vox, scale_factor

    explicit = not (isinstance(scale, str) and scale in ("auto", "none"))
    diameter = float("nan")
    if scale == "auto":
        diameter = particle_diameter_vox(img.data)
    factor = scale_factor(scale, diameter, card)
    if abs(factor - 1.0) < 0.05:
        return 1.0, diameter
    n_out = float(np.prod(img.shape)) * factor ** img.ndim
    if n_out > MAX_RESCALED_VOXELS:
        msg = (f"{img.source}: resampling by {factor:.2f} would give {n_out / 1e6:.0f} Mvoxels, "
               f"more than crackseg resamples in memory; resample the input to particles of "
               f"{training_range_text(card)} voxels yourself")
        if explicit:
            raise InputError(msg + " or drop --scale")
        print(msg + "; predicting at the input's own scale", file=sys.stderr)
        return 1.0, diameter
    return factor, diameter


def training_range_text(card: dict) -> str:
    from crackseg.scale import training_diameter_range

    r = training_diameter_range(card)
    return "the model's range" if r is None else f"{r[0]:.0f}-{r[1]:.0f}"


def _predict_rescaled(model, ident, img: Image, factor: float, diameter: float,
                      kwargs: dict) -> Prediction:
    """Predict on the input resampled by ``factor`` and map the outputs back to its grid."""
    from crackseg.scale import resample

    small_shape = tuple(max(8, int(round(n * factor))) for n in img.shape)
    if kwargs.get("progress"):
        d = "" if diameter != diameter else f"particles ~{diameter:.0f} voxels across; "
        print(f"{img.source}: {d}resampling by {factor:.2f} to {small_shape} for a model "
              f"trained on particles of {training_range_text(model[1])} voxels "
              "(--scale none to skip)", file=sys.stderr)
    data = resample(np.asarray(img.data, dtype=np.float32), small_shape, order=1)
    vs = None if img.voxel_size_um is None else tuple(v / factor for v in img.voxel_size_um)
    pred = predict_volume(model, data, voxel_size_um=vs, scale="none", **kwargs)
    back = lambda a, order: None if a is None else resample(np.asarray(a), img.shape, order)  # noqa: E731
    prov = dict(pred.provenance)
    prov.update(model=ident["name"], model_sha256=ident["sha256"], input=img.source,
                shape=list(img.shape), dtype=str(img.dtype),
                voxel_size_um=list(img.voxel_size_um) if img.voxel_size_um else None)
    prov["settings"] = {**prov["settings"], "scale": {
        "requested": "auto" if diameter == diameter else factor, "factor": round(factor, 4),
        "particle_diameter_vox": None if diameter != diameter else round(diameter, 2),
        "resampled_shape": list(small_shape), "labels_back": "nearest"}}
    bits = None if pred.sample_bits is None else {k: back(v, 0) for k, v in pred.sample_bits.items()}
    ent = back(pred.entropy, 1)
    return Prediction(labels=back(pred.labels, 0),
                      entropy=None if ent is None else ent.astype(np.float16),
                      sample_bits=bits, n_samples=pred.n_samples,
                      voxel_size_um=img.voxel_size_um, schema=pred.schema, card=pred.card,
                      provenance=prov, workdir=None, stats=pred.stats)



def predict_sections(model, ident: dict, img, kwargs: dict) -> Prediction:
    """Segment every section of a 3-D stack with a 2-D model and stack the results.

    Called by :func:`predict_volume` for a 3-D input (Z, Y, X) and a 2-D
    model; ``kwargs`` are its remaining keyword arguments.  Each section is
    segmented as it would be alone (:func:`predict_volume` on it), with one
    resampling factor for the whole stack; sections run one after the other
    in this process and are held in memory (``out``, ``resume`` and a Dask
    ``client`` do not apply to them).  See :mod:`crackseg.sections`.

    Returns
    -------
    Prediction
        Labels (and entropy, posterior bits) of shape (Z, Y, X);
        ``provenance["sections"]`` says it is a stack.
    """
    from tqdm.auto import tqdm

    z, *plane = img.shape
    if min(plane) < MIN_SECTION_SIDE:
        raise InputError(
            f"{img.source}: 3-D array of shape {img.shape} read as a stack of {z} sections of "
            f"{plane[0]} x {plane[1]} pixels; if it is a multi-channel image (Y, X, C), choose "
            "one channel with --channel N")
    kwargs = dict(kwargs)
    scale = kwargs.pop("scale", "auto")
    channel = kwargs.pop("channel", None)
    progress = bool(kwargs.get("progress", True))
    for key in ("out", "resume", "client", "stop_after_chunks", "voxel_size_um"):
        kwargs.pop(key, None)
    factor, diameter, per_section = _stack_scale(img, scale, model[1])
    if progress:
        print(f"{img.source}: a {img.ndim}-D input and a 2-D model: segmenting {z} sections "
              "one by one", file=sys.stderr)
    vs2 = None if img.voxel_size_um is None else tuple(img.voxel_size_um[1:])
    first, arrays, n_chunks = None, {}, 0
    for i in tqdm(range(z), desc="sections", unit="section", disable=not progress or z < 2,
                  file=sys.stderr, leave=False):
        section = Image(np.asarray(img.data[i]), vs2, f"{img.source} (section {i})", "YX")
        p = predict_volume(model, section, scale=per_section, **{**kwargs, "progress": False})
        first = first or p
        outputs = {"labels": p.labels, "entropy": p.entropy, **(p.sample_bits or {})}
        for name, values in outputs.items():
            if values is None:
                continue
            if name not in arrays:
                arrays[name] = np.zeros(img.shape, np.asarray(values).dtype)
            arrays[name][i] = np.asarray(values)
        n_chunks += int(p.stats.get("chunks", 1))
    prov = _stack_provenance(first.provenance, ident, img, scale, factor, per_section, diameter,
                             channel)
    bits = {k: arrays[k] for k in (first.sample_bits or {})} or None
    return Prediction(labels=arrays["labels"], entropy=arrays.get("entropy"), sample_bits=bits,
                      n_samples=first.n_samples, voxel_size_um=img.voxel_size_um,
                      schema=first.schema, card=first.card, provenance=prov, workdir=None,
                      stats={"chunks": n_chunks, "chunks_run": n_chunks, "sections": z})


def _stack_scale(img: Image, scale, card: dict):
    """One resampling factor for a whole stack, from its particle size.

    Returns
    -------
    factor, diameter : float
    per_section : "none" or float
        The ``scale`` each section is predicted with.
    """
    from crackseg.scale import particle_diameter_vox, scale_factor

    diameter = particle_diameter_vox(img.data) if scale == "auto" else float("nan")
    factor = scale_factor(scale, diameter, card)
    per_section = "none" if abs(factor - 1.0) < 0.05 else factor
    if scale == "auto" and per_section != "none" and \
            np.prod(img.shape[1:]) * factor ** 2 > MAX_RESCALED_VOXELS:
        print(f"{img.source}: resampling each section by {factor:.2f} would exceed what "
              "crackseg resamples in memory; predicting at the input's own scale",
              file=sys.stderr)
        per_section = "none"
    return factor, diameter, per_section


def _stack_provenance(first: dict, ident: dict, img: Image, scale, factor, per_section,
                      diameter, channel) -> dict:
    """Provenance of a stack: its first section's, with the stack's input, scale and sections."""
    prov = dict(first)
    settings = dict(prov.get("settings") or {})
    norm = dict(settings.get("normalization") or {})
    if "range_used" in norm:
        norm["range_used"] = "per section (each section normalised on its own)"
    settings["normalization"] = norm
    settings["scale"] = {**(settings.get("scale") or {}), "requested": scale,
                         "factor": round(float(factor) if per_section != "none" else 1.0, 4),
                         "particle_diameter_vox": None if diameter != diameter
                         else round(float(diameter), 2)}
    if channel is not None:
        settings["channel"] = int(channel)
    vs = img.voxel_size_um
    prov.update(model=ident["name"], model_sha256=ident["sha256"], input=img.source,
                shape=list(img.shape), dtype=str(img.dtype),
                voxel_size_um=list(vs) if vs else None, settings=settings,
                sections=stack_record(img.shape[0], vs))
    return prov


def predict_volume(model, volume, *, voxel_size_um=None, roi_size=None, overlap=None,
                   blend: str = "valid", halo=None, device: str = "auto",
                   batch_size: int | None = None, precision: str = "fp32",
                   uncertainty: str = "none", n_samples: int = 8, out=None,
                   chunk_size=None, max_memory_gb: float | None = None, resume: bool = True,
                   progress: bool = True, seed: int = 0, nan_policy: str = "error",
                   stop_after_chunks: int | None = None, client=None,
                   scale="auto", channel: int | None = None) -> Prediction:
    """Segment a volume or image with a model, in chunks of bounded memory.

    Parameters
    ----------
    model : path-like, str or (net, card)
        Model directory, shipped model name, or a loaded network with its card.
    volume : array-like or path-like
        Grey values, shape (Z, Y, X) for a 3-D model or (Y, X) for a 2-D one
        (or a stack of sections, see Notes); a path is opened lazily
        (:func:`crackseg.io.read_volume`).
    voxel_size_um : float or sequence of float, optional
        Overrides the voxel size read from the file (µm, per axis).
    roi_size, overlap, blend, halo, chunk_size, max_memory_gb
        Windows and chunks (voxels), see :func:`crackseg.tiling.plan_inference`
        and the module docs: for ``blend="valid"`` the halo is the network's
        receptive field (:func:`crackseg.tiling.default_halo`) and the window
        the largest up to 256 (512 in 2-D) that fits the memory budget (the
        card's window and overlap for ``"gaussian"``); chunks the largest that
        fit ``max_memory_gb`` (default 3 GB).  A halo given is rounded up to a
        multiple of the network's downsampling factor.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.  On a GPU windows are batched
        there and stitched on the host, so volumes larger than GPU memory work.
    batch_size : int, optional
        Windows per forward pass (default 1 on CPU, 4 on GPU).
    precision : {"fp32", "bf16", "auto"}
        ``"bf16"`` (bfloat16 autocast) is about twice as fast on CPUs with
        AVX512-BF16/AMX and on recent GPUs but flips a few per cent of the
        near-tie voxels (mostly thin cracks); ``"auto"`` picks it where the
        hardware has it natively.
    uncertainty : {"none", "tta", "mc"}
        Posterior samples by test-time augmentation or MC dropout, ``n_samples``
        (at most 64) forward passes (:mod:`crackseg.uncertainty`).
    out : path-like, optional
        Folder for chunked Zarr outputs and ``progress.json``; with ``resume``
        a call with the same settings continues from the finished chunks.
        Without it, outputs are NumPy arrays in memory.
    progress : bool
        Show a progress bar on stderr.
    seed : int
        Seed of the TTA order and MC-dropout masks (per chunk and sample).
    nan_policy : {"error", "replace"}
        NaN/Inf voxels raise, or are set to the low normalisation value.
    stop_after_chunks : int, optional
        Stop (raising :class:`KeyboardInterrupt`) after this many chunks of
        this call; simulates an interrupted run.
    client : dask.distributed.Client, optional
        Run the chunks as tasks on this cluster's workers
        (:mod:`crackseg.chunk_tasks`; needs ``volume`` as a path and ``out``,
        both visible to every worker); resume works as without a client and
        the results are bit-identical.  ``device`` is resolved on each worker
        (:func:`crackseg.devices.worker_device`: ``"cuda"`` pins worker *i* to
        ``cuda:i``).
    scale : {"auto", "none"} or float
        Resample the input before the network and map the result back:
        ``"auto"`` when its particle diameter (voxels) lies outside the range
        the model was trained on (to the middle of that range), or by the
        given factor (2 doubles the voxels per axis); see :func:`input_scale`.
    channel : int, optional
        Channel of a multi-channel input file (:func:`crackseg.io.read_volume`).

    Returns
    -------
    Prediction
        A 3-D input given to a 2-D model is a stack of sections along axis 0,
        each segmented as it would be alone (:func:`predict_sections`;
        ``provenance["sections"]`` records it).

    Raises
    ------
    InputError
        Wrong dimensionality for the model, NaN/Inf voxels, unreadable input.
    """
    opts = dict(roi_size=roi_size, overlap=overlap, blend=blend, halo=halo, device=device,
                batch_size=batch_size, precision=precision, uncertainty=uncertainty,
                n_samples=n_samples, progress=progress, seed=seed, nan_policy=nan_policy,
                out=out, chunk_size=chunk_size, max_memory_gb=max_memory_gb, resume=resume,
                stop_after_chunks=stop_after_chunks, client=client, scale=scale, channel=channel)
    if channel is not None and client is not None:
        raise CracksegError("--channel with chunks on Dask workers is not supported; save the "
                            "channel as a volume, or run without --workers/--dask")
    posterior_sample_count(uncertainty, n_samples)
    net, card, ident, opts = _model_on_devices(model, volume, opts)
    img = _as_image(volume, voxel_size_um, nan_policy, channel=channel)
    if int(card["spatial_dims"]) == 2 and img.ndim == 3:
        return predict_sections((net, card), ident, img, _section_options(opts))
    _check_dimensions(img, card)
    factor, diameter = input_scale(scale, img, card)
    if factor != 1.0:
        return _predict_rescaled((net, card), ident, img, factor, diameter,
                                 {k: opts[k] for k in WINDOW_OPTIONS})
    return _predict_chunked(net, card, ident, img, input_identity(volume), diameter, opts)


def _check_dimensions(img: Image, card: dict) -> None:
    """Raise :class:`~crackseg.errors.InputError` unless the input has the model's dimensions."""
    from crackseg.model_io import model_hint

    sd = int(card["spatial_dims"])
    if img.ndim != sd:
        raise InputError(
            f"{img.source}: {img.ndim}-D {'image' if img.ndim == 2 else 'volume'} of shape "
            f"{img.shape}, but model {card.get('name')!r} is {sd}-D; {model_hint(img.ndim)}"
        )


def _model_on_devices(model, volume, opts: dict):
    """Network, card and identity of ``model``, and ``opts`` with devices resolved.

    Without a client the network is on the resolved ``device``.  With a Dask
    ``client`` it stays on the CPU here; ``opts`` then holds the workers'
    devices and shared precision (:func:`crackseg.chunk_tasks.cluster_devices`),
    the requested device as ``"worker_device"`` and the input path the
    workers read as ``"source"``.
    """
    opts = dict(opts)
    if opts["client"] is None:
        opts["device"] = resolve_device(opts["device"])
        opts["precision"] = resolve_precision(opts["precision"], opts["device"])
        return (*_model(model, opts["device"]), opts)
    from crackseg.chunk_tasks import cluster_devices, distributable_source

    opts["source"] = distributable_source(volume, opts["out"])
    opts["worker_device"] = opts["device"]
    opts["device"], opts["precision"] = cluster_devices(opts["client"], opts["device"],
                                                        opts["precision"])
    return (*_model(model, "cpu"), opts)


def _section_options(opts: dict) -> dict:
    """Options each section of a stack is predicted with, in this process."""
    kw = {k: opts[k] for k in WINDOW_OPTIONS + ("chunk_size", "max_memory_gb", "scale", "channel")}
    if opts["client"] is not None:  # the sections of a stack run in this process
        kw["device"] = resolve_device(opts["worker_device"])
        kw["precision"] = resolve_precision(opts["precision"], kw["device"])
    return kw


def _predict_chunked(net, card: dict, ident: dict, img: Image, identity: dict, diameter: float,
                     opts: dict) -> Prediction:
    """Prediction of an input at its own scale, chunk by chunk (see :func:`predict_volume`)."""
    from crackseg.model_io import card_schema

    in_ch = int(card["architecture"]["args"].get("in_channels", 1))
    if in_ch != 1:
        raise InputError(f"model {card.get('name')!r} expects {in_ch} input channels; crackseg "
                         "feeds one grey-value channel")
    if opts["nan_policy"] == "error" and count_nonfinite(img.data):
        raise InputError(
            f"{img.source}: NaN/Inf voxels; fix the data or pass --nan-policy replace"
        )
    grey = intensity_range(img.data, card["normalization"], source=img.source)
    schema = card_schema(card)
    job = inference_job(card, schema, img.shape, opts)
    provenance = _provenance(img, ident, card, job, opts, diameter, grey)
    chunks = chunk_grid(img.shape, job["plan"]["chunk_size"], job["plan"]["halo"])
    store = ChunkStore(img.shape, img.voxel_size_um, job["plan"]["chunk_size"],
                       n_samples=job["n_samples"], uncertainty=job["uncertainty"] != "none",
                       workdir=opts["out"], resume=opts["resume"], meta={"provenance": provenance},
                       fingerprint=settings_fingerprint({"provenance": provenance,
                                                         "input": identity}))
    todo = [c for c in chunks if c.index not in store.done]
    if opts["progress"] and len(chunks) > 1:
        plan = job["plan"]
        print(f"{img.source}: {len(chunks)} chunks of {plan['chunk_size']}, window "
              f"{plan['roi_size']}, estimated peak memory {plan['memory_estimate_gb']:.1f} GB "
              f"(limit {plan['max_memory_gb']:g} GB)", file=sys.stderr)
    n_run = _run_chunks(net, ident, img, grey, chunks, todo, job, store, opts)
    a = store.arrays
    _drop_unsupported_cracks(a, card, schema, provenance, job, diameter)
    return Prediction(
        labels=a["labels"], entropy=a.get("entropy"),
        sample_bits={c: a[f"{c}_bits"] for c in SAMPLE_CLASSES}
        if job["uncertainty"] != "none" else None,
        n_samples=job["n_samples"], voxel_size_um=img.voxel_size_um, schema=schema, card=card,
        provenance=provenance, workdir=Path(opts["out"]) if opts["out"] is not None else None,
        stats={"chunks": len(chunks), "chunks_run": n_run},
    )


def _drop_unsupported_cracks(arrays: dict, card: dict, schema: LabelSchema, provenance: dict,
                             job: dict, diameter: float) -> None:
    """The card's crack clean-up (:mod:`crackseg.crack_support`), recorded in ``provenance``."""
    from crackseg import crack_support

    thr = crack_support.card_threshold(card)
    if thr is None or not schema.has("crack") or not schema.has("particle"):
        return
    labels = arrays["labels"]
    if isinstance(labels, np.ndarray):
        cleaned, removed = crack_support.drop_unsupported_cracks(
            labels, min_solid_contact=thr, schema=schema)
        labels[...] = cleaned
        margin = None
    else:
        margin = crack_support.cleaning_margin(diameter)
        removed = crack_support.clean_in_chunks(labels, job["plan"]["chunk_size"], margin,
                                                min_solid_contact=thr, schema=schema)
    provenance["settings"]["crack_cleanup"] = {
        "min_crack_solid_contact": thr, "voxels_relabelled_matrix": removed,
        "chunk_margin": margin, "rule": "crackseg.crack_support.drop_unsupported_cracks"}


def inference_job(card: dict, schema: LabelSchema, shape, opts: dict) -> dict:
    """What every chunk of one prediction is computed with (the ``job`` of
    :func:`crackseg.chunk_inference.predict_chunk`).

    Parameters
    ----------
    card : dict
        Model card.
    schema : LabelSchema
        The model's label schema.
    shape : tuple of int
        Input shape (ZYX or YX), voxels.
    opts : dict
        Options of :func:`predict_volume`, with ``device`` and ``precision`` resolved.

    Returns
    -------
    dict
        ``plan`` (:func:`crackseg.tiling.plan_inference`), ``batch_size``,
        ``device``, ``precision``, ``uncertainty``, ``n_samples``, ``seed``,
        ``transforms``, ``values_lut`` and ``sample_classes``.
    """
    uncertainty = opts["uncertainty"]
    n = posterior_sample_count(uncertainty, opts["n_samples"])
    sw_batch = int(opts["batch_size"] or (4 if opts["device"].startswith("cuda") else 1))
    plan = plan_inference(card, shape, roi_size=opts["roi_size"], overlap=opts["overlap"],
                          blend=opts["blend"], halo=opts["halo"], chunk_size=opts["chunk_size"],
                          max_memory_gb=opts["max_memory_gb"], sw_batch_size=sw_batch,
                          uncertainty=uncertainty)
    transforms = None
    if uncertainty == "tta":
        square = plan["roi_size"][-1] == plan["roi_size"][-2]
        transforms = tta_transforms(len(shape), n, seed=opts["seed"], rotate=square)
    return {
        "plan": plan, "batch_size": sw_batch, "device": opts["device"],
        "precision": opts["precision"], "uncertainty": uncertainty, "n_samples": n,
        "seed": int(opts["seed"]), "transforms": transforms, "values_lut": schema.values_lut(),
        "sample_classes": {name: int(schema.index_lut()[schema.value(name)])
                           for name in SAMPLE_CLASSES if schema.has(name)},
    }


def _provenance(img: Image, ident: dict, card: dict, job: dict, opts: dict, diameter: float,
                grey: tuple[float, float]) -> dict:
    """crackseg version, model, input and every setting of one prediction."""
    plan = job["plan"]
    settings = {
        "blend": plan["blend"], "roi_size": plan["roi_size"], "halo": plan["halo"],
        "halo_rule": plan["halo_rule"], "receptive_field": plan["receptive_field"],
        "overlap": plan["overlap"], "chunk_size": plan["chunk_size"], "device": job["device"],
        "precision": job["precision"], "batch_size": job["batch_size"],
        "uncertainty": job["uncertainty"], "n_samples": job["n_samples"], "seed": job["seed"],
        "nan_policy": opts["nan_policy"],
        "scale": {"requested": opts["scale"], "factor": 1.0,
                  "particle_diameter_vox": None if diameter != diameter else round(diameter, 2)},
        "normalization": {**card["normalization"], "range_used": list(grey)},
    }
    if opts["channel"] is not None:
        settings["channel"] = int(opts["channel"])
    return {
        "crackseg_version": __version__, "model": ident["name"], "model_sha256": ident["sha256"],
        "input": img.source, "shape": list(img.shape), "dtype": str(img.dtype),
        "voxel_size_um": list(img.voxel_size_um) if img.voxel_size_um else None,
        "settings": settings,
    }


def _run_chunks(net, ident: dict, img: Image, grey, chunks, todo, job: dict, store: ChunkStore,
                opts: dict) -> int:
    """Predict the chunks ``todo`` into ``store``, here or on the Dask ``client``; chunks run."""
    from tqdm.auto import tqdm

    progress = opts["progress"]
    bar = tqdm(total=len(chunks), initial=len(chunks) - len(todo), unit="chunk",
               desc=Path(img.source).name[:30], disable=not progress or len(chunks) == 1,
               file=sys.stderr, leave=False)
    try:
        if opts["client"] is not None:
            from crackseg.chunk_tasks import run_chunks

            task = {"model": ident["path"] or net, "model_sha256": ident["sha256"],
                    "source": opts["source"], "device": opts["worker_device"],
                    "lo": grey[0], "hi": grey[1], "nan_policy": opts["nan_policy"],
                    "workdir": str(Path(opts["out"]).resolve()), "job": job}
            return run_chunks(opts["client"], todo, task,
                              on_done=lambda c: store.mark_done(c.index), bar=bar,
                              stop_after_chunks=opts["stop_after_chunks"])
        reader = block_reader(img.data)

        def read(c):
            return normalized_block(reader, c.ext, *grey, opts["nan_policy"], img.source)

        if job["uncertainty"] == "mc":
            enable_mc_dropout(net)
        return _run_chunks_here(net, todo, read, job, store, bar=bar,
                                stop_after_chunks=opts["stop_after_chunks"],
                                progress=len(chunks) == 1 and progress)
    finally:
        bar.close()
        net.eval()


def _run_chunks_here(net, todo, read, job: dict, store: ChunkStore, *, bar,
                     stop_after_chunks: int | None, progress: bool) -> int:
    """Predict the chunks ``todo`` in this process, reading the next while one computes."""
    import torch

    n_run = 0
    with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as pool:
        nxt = pool.submit(read, todo[0]) if todo else None
        for i, chunk in enumerate(todo):
            block = nxt.result()
            nxt = pool.submit(read, todo[i + 1]) if i + 1 < len(todo) else None
            store.write(chunk, predict_chunk(net, block, chunk, job, progress=progress))
            bar.update(1)
            n_run += 1
            if stop_after_chunks is not None and n_run >= stop_after_chunks and nxt is not None:
                nxt.cancel()
                raise KeyboardInterrupt(f"stopped after {n_run} chunks")
    return n_run
