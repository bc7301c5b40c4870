"""Whole-volume inference: sliding windows, chunks, resume, posterior samples.

:func:`predict_volume` segments a volume (ZYX) or image (YX) of any size with
a model directory.  The volume is cut into chunks (:mod:`crackseg.tiling`)
read lazily with a halo of context; within a chunk MONAI's
:func:`~monai.inferers.sliding_window_inference` runs the network window by
window and stitches the class scores; only the chunk's core is kept.  Peak
memory is therefore set by the chunk and window sizes, not by the volume.

Two ways of stitching windows (``blend``):

``"valid"`` (default)
    Windows of ``roi_size`` voxels overlap by twice a halo; each voxel takes
    the scores of the window in whose centre it lies (MONAI with a weight
    map that is 1 in the window's centre and 1e-4 in its halo).  No compute is
    spent on down-weighted window borders.
``"gaussian"``
    MONAI's Gaussian blending with the window and overlap of the model card.

With ``out`` set, outputs are written chunk by chunk into Zarr stores in that
folder, and the indices of finished chunks into ``progress.json`` after each
chunk; calling again with the same settings skips finished chunks and gives
bit-identical results.  With a ``dask.distributed`` ``client`` as well, the
chunks of one input file run as tasks on the cluster's workers
(:mod:`crackseg.scaleout`), with the same results.

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
import hashlib
import json
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crackseg._version import __version__
from crackseg.errors import CracksegError, InputError
from crackseg.io import Image, count_nonfinite, read_volume, write_json
from crackseg.labels import LabelSchema
from crackseg.tiling import GIB, chunk_for_memory, chunk_grid, inference_memory_bytes, round_up
from crackseg.uncertainty import (
    UNCERTAINTY_METHODS,
    apply_transform,
    bits_dtype,
    enable_mc_dropout,
    predictive_entropy,
    tta_transforms,
)

BLEND_MODES = ("valid", "gaussian")
PRECISIONS = ("auto", "fp32", "bf16")
DEFAULT_VALID_ROI = 128
"""Window edge (voxels) of ``blend="valid"`` when not given: the CPU sweet spot."""
DEFAULT_MAX_MEMORY_GB = 3.0
SAMPLE_CLASSES = ("crack", "pore")
"""Classes whose per-sample masks are kept for per-particle posteriors."""
PERCENTILE_SAMPLE_VOXELS = 1 << 24
"""Voxels used to estimate per-volume percentiles (strided subsample above this)."""


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


# ---------------------------------------------------------------- settings


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; checks others."""
    import torch

    device = str(device or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CracksegError(f"device {device}: no CUDA GPU is available; use --device cpu")
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise CracksegError(f"device {device}: only {torch.cuda.device_count()} GPU(s) visible")
        return device
    if device != "cpu":
        raise CracksegError(f"device {device!r}: use auto, cpu, cuda or cuda:N")
    return device


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 dot products (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"`` -> ``"bf16"`` where the hardware computes it natively, else ``"fp32"``."""
    if precision not in PRECISIONS:
        raise CracksegError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


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


def _settings_fingerprint(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _input_identity(volume) -> dict:
    if isinstance(volume, (str, os.PathLike)):
        from crackseg.io import split_dataset_path

        p, ds = split_dataset_path(volume)
        try:
            st = p.stat()
            return {"path": str(p.resolve()), "dataset": ds, "size": st.st_size,
                    "mtime": st.st_mtime}
        except OSError:
            return {"path": str(volume)}
    return {"path": None}


def _as_image(volume, voxel_size_um, nan_policy: str, *, channel: int | None = None) -> Image:
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


def _per_axis(v, ndim):
    if v is None:
        return None
    v = [int(x) for x in np.broadcast_to(np.asarray(v), (ndim,))]
    return tuple(v)


def plan_inference(card: dict, shape, *, roi_size=None, overlap=None, blend="valid", halo=None,
                   chunk_size=None, max_memory_gb=None, sw_batch_size=1,
                   uncertainty: str = "none") -> dict:
    """Window, halo, overlap and chunk sizes for a volume of ``shape``.

    Returns a dict with ``roi_size``, ``halo``, ``overlap``, ``chunk_size``,
    ``memory_estimate_gb`` and ``max_memory_gb`` (all per axis where it
    applies, voxels).
    """
    from crackseg.nets import receptive_halo

    ndim = len(shape)
    if blend not in BLEND_MODES:
        raise CracksegError(f"blend {blend!r}: use one of {', '.join(BLEND_MODES)}")
    args = card["architecture"]["args"]
    divisor = int(np.prod(args.get("strides", [2] * (len(args["channels"]) - 1))))
    inf = card.get("inference", {})
    if blend == "gaussian":
        roi = _per_axis(roi_size, ndim) or _per_axis(inf.get("roi_size", card.get("patch_size")), ndim)
        ov = float(inf.get("overlap", 0.25) if overlap is None else overlap)
        h = _per_axis(halo, ndim) or tuple(max(divisor, r // 4) for r in roi)
    else:
        default = DEFAULT_VALID_ROI if ndim == 3 else 512
        roi = _per_axis(roi_size, ndim) or (default,) * ndim
        h = _per_axis(halo, ndim) or tuple(
            min(receptive_halo(card["architecture"]), max(divisor, r // 16)) for r in roi)
        ov = None
    roi = tuple(round_up(r, divisor) for r in roi)
    if any(2 * hh >= r for hh, r in zip(h, roi)):
        raise CracksegError(f"halo {h} leaves no window centre in window {roi}")
    if not 0 <= (ov or 0) < 1:
        raise CracksegError(f"overlap {ov} must be in [0, 1)")
    step = (min(r - 2 * hh for r, hh in zip(roi, h)) if blend == "valid"
            else max(1, int(min(roi) * (1 - ov))))
    max_mem = float(max_memory_gb if max_memory_gb is not None else DEFAULT_MAX_MEMORY_GB)
    kw = dict(n_classes=int(args["out_channels"]), first_channels=int(args["channels"][0]),
              sw_batch_size=sw_batch_size, uncertainty=uncertainty != "none")
    if chunk_size is None:
        largest = 256 if ndim == 3 else 4096
        try:
            c = chunk_for_memory(int(max_mem * GIB), h, roi, step=step, largest=max(largest, step),
                                 ndim=ndim, **kw)
        except ValueError:
            raise CracksegError(
                f"--max-memory {max_mem:g} GB is too small for one {roi} window; raise it "
                "or use a smaller --roi"
            ) from None
        chunk = tuple(min(c, s) for s in shape)
    else:
        chunk = tuple(min(c, s) for c, s in zip(_per_axis(chunk_size, ndim), shape))
    est = inference_memory_bytes(chunk, h, roi, **kw) / GIB
    return {"blend": blend, "roi_size": list(roi), "halo": list(h), "overlap": ov,
            "chunk_size": list(chunk), "divisor": divisor,
            "memory_estimate_gb": round(est, 2), "max_memory_gb": max_mem}


# ---------------------------------------------------------------- core


def _valid_weight_map(roi, halo, eps: float = 1e-4):
    import torch

    w = torch.full(tuple(roi), eps, dtype=torch.float32)
    w[tuple(slice(h, r - h) for r, h in zip(roi, halo))] = 1.0
    return w


def valid_tiling(spatial, roi, halo, divisor: int):
    """Window size, halo and MONAI overlap that tile a block with valid centres exactly.

    Along each axis the block of ``E`` voxels needs ``n = ceil((E - 2h) /
    (W - 2h))`` windows of at most ``W``; the window is shrunk to the
    smallest multiple of ``divisor`` whose centres (``W' - 2h`` voxels) still
    cover the block in ``n`` steps, so no window computes more than the
    halo twice.  A block no larger than one window gets one window (padded
    to a multiple of ``divisor``).

    Returns
    -------
    roi, halo : tuple of int
    overlap : list of float
        For MONAI, chosen so that its scan interval is exactly ``W' - 2h``.

    Examples
    --------
    >>> roi, halo, ov = valid_tiling((192, 192, 50), (128, 128, 128), (8, 8, 8), 8)
    >>> roi, [int(r * (1 - o)) for r, o in zip(roi, ov)]  # windows and MONAI's scan steps
    ((104, 104, 56), [88, 88, 56])
    """
    out_roi, out_halo, out_ov = [], [], []
    for e, w, h in zip(spatial, roi, halo):
        if e <= w:
            out_roi.append(min(w, round_up(e, divisor)))
            out_halo.append(min(h, max(0, (out_roi[-1] - divisor) // 2)))
            out_ov.append(0.0)
            continue
        n = math.ceil((e - 2 * h) / (w - 2 * h))
        wn = min(w, round_up(math.ceil((e - 2 * h) / n) + 2 * h, divisor))
        out_roi.append(wn)
        out_halo.append(h)
        out_ov.append((2 * h - 0.25) / wn)
    return tuple(out_roi), tuple(out_halo), out_ov


def stitched_logits(net, x, plan: dict, *, sw_batch_size: int = 1, sw_device="cpu",
                    out_device="cpu", precision: str = "fp32", progress: bool = False):
    """Class scores of a whole block, by MONAI sliding-window inference.

    Parameters
    ----------
    net : torch.nn.Module
    x : torch.Tensor, shape (1, 1, *spatial)
        Normalised block.
    plan : dict
        From :func:`plan_inference` (``roi_size``, ``halo``, ``overlap``,
        ``blend``, ``divisor``).

    Returns
    -------
    torch.Tensor, shape (1, n_classes, *spatial), float32 on ``out_device``
    """
    import torch
    from monai.inferers import sliding_window_inference

    spatial = tuple(x.shape[2:])
    nd = len(spatial)
    div = plan["divisor"]
    roi = tuple(min(r, round_up(s, div)) for r, s in zip(plan["roi_size"], spatial))
    dev_type = "cuda" if str(sw_device).startswith("cuda") else "cpu"
    use_bf16 = precision == "bf16"
    channels_last = nd == 3 and dev_type == "cpu"

    def predictor(w):
        if channels_last:
            w = w.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=use_bf16):
            y = net(w)
        return y.float().contiguous()

    if plan["blend"] == "valid":
        roi, halo, ov = valid_tiling(spatial, plan["roi_size"], plan["halo"], div)
        weight = _valid_weight_map(roi, halo).to(sw_device)
        kw = dict(overlap=ov, mode="constant", roi_weight_map=weight)
    else:
        kw = dict(overlap=plan["overlap"], mode="gaussian")
    return sliding_window_inference(
        x, roi, sw_batch_size, predictor, sw_device=sw_device, device=out_device,
        progress=progress, **kw,
    )


def _chunk_seed(seed: int, chunk_index: int, sample: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(chunk_index), int(sample)]).generate_state(1)[0])


def block_reader(data):
    """Function ``ext -> ndarray`` that copies a region out of ``data``.

    A memory-mapped file is mapped afresh for each read and unmapped after
    the copy, so pages of a huge input do not accumulate in this process's
    resident memory.
    """
    if isinstance(data, np.memmap) and getattr(data, "filename", None):
        fn, off, shape, dt = data.filename, data.offset, data.shape, data.dtype
        order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"

        def read(ext):
            mm = np.memmap(fn, dtype=dt, mode="r", offset=off, shape=shape, order=order)
            block = np.array(mm[ext])
            del mm
            return block

        return read
    return lambda ext: np.asarray(data[ext])


def normalized_block(read, ext, lo, hi, nan_policy: str, source: str) -> np.ndarray:
    """Region ``ext`` read with ``read`` (:func:`block_reader`), as float32 mapped so lo->0, hi->1.

    NaN/Inf voxels raise :class:`~crackseg.errors.InputError` (``nan_policy
    "error"``) or are set to ``lo`` (``"replace"``).
    """
    block = read(ext).astype(np.float32, copy=False)
    if np.issubdtype(block.dtype, np.floating):
        bad = ~np.isfinite(block)
        if bad.any():
            if nan_policy == "error":
                raise InputError(
                    f"{source}: NaN/Inf voxels; fix the data or pass --nan-policy replace"
                )
            block = np.where(bad, np.float32(lo), block)
    scale = np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(1.0)
    return (block - np.float32(lo)) * scale


def predict_chunk(net, block, chunk, job: dict, *, progress: bool = False) -> dict:
    """Outputs of one chunk's core: labels, and entropy and sample bits with uncertainty.

    The unit of work of :func:`predict_volume`, run in this process or on a
    Dask worker (:func:`crackseg.scaleout.predict_chunk_task`); call it inside
    ``torch.inference_mode()``, with MC dropout enabled on ``net`` for
    ``uncertainty="mc"``.

    Parameters
    ----------
    net : torch.nn.Module
        Network on ``job["device"]``.
    block : ndarray of float32, shape (Z, Y, X) or (Y, X)
        Normalised grey values of ``chunk.ext`` (core plus halo).
    chunk : crackseg.tiling.Chunk
    job : dict
        ``plan`` (:func:`plan_inference`), ``batch_size``, ``device``,
        ``precision``, ``uncertainty``, ``n_samples``, ``seed``,
        ``transforms`` (TTA), ``values_lut`` (class index -> label value)
        and ``sample_classes`` (name -> class index).

    Returns
    -------
    dict of ndarray, each of shape ``chunk.core_shape``
        ``labels`` (uint8); with uncertainty also ``entropy`` (float16, nats)
        and ``<class>_bits`` per class of :data:`SAMPLE_CLASSES`.

    Examples
    --------
    >>> import torch
    >>> from crackseg.model_io import new_card
    >>> from crackseg.nets import build_network, unet_architecture
    >>> from crackseg.tiling import chunk_grid
    >>> arch = unet_architecture(3, out_channels=4, channels=(4, 8))
    >>> plan = plan_inference(new_card("tiny", arch, patch_size=(32, 32, 32)), (24, 24, 24),
    ...                       chunk_size=16)
    >>> job = {"plan": plan, "batch_size": 1, "device": "cpu", "precision": "fp32",
    ...        "uncertainty": "none", "n_samples": 1, "seed": 0, "transforms": None,
    ...        "values_lut": np.arange(4), "sample_classes": {}}
    >>> chunk = chunk_grid((24, 24, 24), 16, plan["halo"])[0]
    >>> block = np.random.default_rng(0).random(chunk.ext_shape, dtype=np.float32)
    >>> with torch.inference_mode():
    ...     out = predict_chunk(build_network(arch).eval(), block, chunk, job)
    >>> out["labels"].shape, out["labels"].dtype
    ((16, 16, 16), dtype('uint8'))
    """
    import torch

    plan, n, uncertainty = job["plan"], int(job["n_samples"]), job["uncertainty"]
    lut = np.asarray(job["values_lut"])
    sw = dict(sw_batch_size=job["batch_size"], sw_device=job["device"], out_device="cpu",
              precision=job["precision"])
    x = torch.from_numpy(block)[None, None]
    if uncertainty == "none":
        logits = stitched_logits(net, x, plan, progress=progress, **sw)[0]
        idx = torch.argmax(logits[(slice(None),) + chunk.crop], dim=0)
        return {"labels": torch.as_tensor(lut.astype(np.int64))[idx].numpy().astype(np.uint8)}
    mean = None
    bits = {c: np.zeros(chunk.core_shape, bits_dtype(n)) for c in SAMPLE_CLASSES}
    for s in range(n):
        if uncertainty == "mc":
            torch.manual_seed(_chunk_seed(job["seed"], chunk.index, s))
            xs, t = x, None
        else:
            t = job["transforms"][s]
            xs = apply_transform(x, t)
        logits = stitched_logits(net, xs, plan, **sw)
        if t is not None:
            logits = apply_transform(logits, t, inverse=True)
        p = torch.softmax(logits[(0, slice(None)) + chunk.crop], dim=0)
        mean = p if mean is None else mean.add_(p)
        idx = torch.argmax(p, dim=0).numpy()
        for name, ci in job["sample_classes"].items():
            bits[name] |= (idx == ci).astype(bits[name].dtype) << np.asarray(s, bits[name].dtype)
    mean = (mean / n).numpy()
    out_d = {"labels": lut[np.argmax(mean, axis=0)],
             "entropy": predictive_entropy(mean).astype(np.float16)}
    for name in SAMPLE_CLASSES:
        out_d[f"{name}_bits"] = bits[name]
    return out_d


def sink_path(workdir, name: str) -> Path:
    """Level-0 Zarr array of output ``name`` (labels, entropy, ...) in ``workdir``."""
    return Path(workdir) / f"{name}.zarr" / "0"


class _Sinks:
    """Output arrays of one prediction: NumPy in memory or Zarr stores on disk."""

    def __init__(self, shape, vs, core_chunk, *, n_samples, uncertainty, workdir, fingerprint,
                 resume, meta):
        self.workdir = Path(workdir) if workdir is not None else None
        self.done: set[int] = set()
        names = {"labels": np.uint8}
        if uncertainty:
            names["entropy"] = np.float16
            for c in SAMPLE_CLASSES:
                names[f"{c}_bits"] = bits_dtype(n_samples)
        self.arrays = {}
        if self.workdir is None:
            self.arrays = {k: np.zeros(shape, dt) for k, dt in names.items()}
            return
        import zarr

        from crackseg.io import create_zarr_volume

        prog = self.workdir / "progress.json"
        state = None
        if resume and prog.exists():
            try:
                state = json.loads(prog.read_text())
            except (json.JSONDecodeError, OSError):
                state = None
        if state is not None and state.get("fingerprint") == fingerprint:
            self.done = set(int(i) for i in state.get("done", []))
            self.arrays = {k: zarr.open_array(str(sink_path(self.workdir, k)), mode="r+")
                           for k in names}
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            for k, dt in names.items():
                self.arrays[k] = create_zarr_volume(self.workdir / f"{k}.zarr", shape, dt, vs,
                                                    chunks=tuple(core_chunk), metadata=meta)
            self.fingerprint = fingerprint
            self._save_progress(fingerprint)
        self.fingerprint = fingerprint

    def _save_progress(self, fingerprint):
        write_json(self.workdir / "progress.json",
                   {"fingerprint": fingerprint, "done": sorted(self.done)})

    def write(self, chunk, outputs: dict):
        for k, v in outputs.items():
            self.arrays[k][chunk.core] = v
        self.mark_done(chunk.index)

    def mark_done(self, index: int):
        """Record chunk ``index`` as finished (its core is written)."""
        self.done.add(index)
        if self.workdir is not None:
            self._save_progress(self.fingerprint)


MAX_RESCALED_VOXELS = 512 ** 3
"""Largest resampled input processed in memory by ``scale``."""


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
        Grey values, shape (Z, Y, X) for a 3-D model or (Y, X) for a 2-D one;
        a path is opened lazily (:func:`crackseg.io.read_volume`).
    voxel_size_um : float or sequence of float, optional
        Overrides the voxel size read from the file (µm, per axis).
    roi_size : int or sequence of int, optional
        Window size (voxels).  Default: 128 for ``blend="valid"``, the model
        card's window for ``"gaussian"``.
    overlap : float, optional
        Window overlap for ``"gaussian"`` (default: the card's).
    blend : {"valid", "gaussian"}
        How windows are stitched (see module docs).
    halo : int or sequence of int, optional
        Context voxels around each window centre and chunk core (default
        ``roi_size // 16``, at least the network's downsampling factor).
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.  On a GPU windows are
        batched there and stitched on the host, so volumes larger than GPU
        memory work.
    batch_size : int, optional
        Windows per forward pass (default 1 on CPU, 4 on GPU).
    precision : {"fp32", "bf16", "auto"}
        Arithmetic of the network.  ``"bf16"`` (bfloat16 autocast) is about
        twice as fast on CPUs with AVX512-BF16/AMX and on recent GPUs, but
        flips a few per cent of the near-tie voxels (mostly thin cracks);
        ``"auto"`` picks it where the hardware has it natively.
    uncertainty : {"none", "tta", "mc"}
        Posterior samples by test-time augmentation or MC dropout
        (``n_samples`` forward passes; see :mod:`crackseg.uncertainty`).
    n_samples : int
        Posterior samples (with ``uncertainty``), at most 64.
    out : path-like, optional
        Folder for chunked Zarr outputs and ``progress.json`` (resumable).
        Without it, outputs are NumPy arrays in memory.
    chunk_size : int or sequence of int, optional
        Core chunk size (voxels); default: the largest that fits
        ``max_memory_gb``.
    max_memory_gb : float, optional
        Memory budget used to choose the chunk size (default 3 GB).
    resume : bool
        Continue from finished chunks in ``out`` when the settings match.
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
        Run the chunks as tasks on this cluster's workers (needs ``volume``
        as a path and ``out``, both visible to every worker).  Each worker
        loads the model once, reads its chunks lazily from ``volume`` and
        writes their cores into the Zarr stores in ``out``; this process
        records finished chunks, so resume works as without a client, and
        the results are bit-identical.  ``device`` is resolved on each worker
        (see :func:`crackseg.scaleout.worker_device`: ``"cuda"`` pins
        worker *i* to ``cuda:i``).
    scale : {"auto", "none"} or float
        Resample the input before the network and map the result back.
        ``"auto"`` estimates the particle diameter in voxels
        (:func:`crackseg.scale.particle_diameter_vox`) and, when it lies
        outside the range the model was trained on (its card's
        ``training_domain``), brings it to the middle of that range; a number
        is the factor itself (2 doubles the voxels per axis).  Resampled
        inputs are processed in memory (at most :data:`MAX_RESCALED_VOXELS`).
    channel : int, optional
        Channel of a multi-channel input file (:func:`crackseg.io.read_volume`).

    Notes
    -----
    A 3-D input given to a 2-D model is a stack of sections along axis 0:
    each section is segmented as it would be alone and the results are
    stacked (:func:`crackseg.sections.predict_sections`;
    ``provenance["sections"]`` records it).

    Returns
    -------
    Prediction

    Raises
    ------
    InputError
        Wrong dimensionality for the model, NaN/Inf voxels, unreadable input.
    """
    import torch

    if channel is not None and client is not None:
        raise CracksegError("--channel with chunks on Dask workers is not supported; save the "
                            "channel as a volume, or run without --workers/--dask")

    if uncertainty not in UNCERTAINTY_METHODS:
        raise CracksegError(f"uncertainty {uncertainty!r}: use one of {', '.join(UNCERTAINTY_METHODS)}")
    n = int(n_samples) if uncertainty != "none" else 1
    if uncertainty != "none":
        if n < 2:
            raise CracksegError("uncertainty needs at least 2 samples")
        bits_dtype(n)
    if client is not None:
        from crackseg.scaleout import cluster_devices, distributable_source

        source = distributable_source(volume, out)
        requested_device = device
        device, precision = cluster_devices(client, device, precision)
        net, card, ident = _model(model, "cpu")
    else:
        device = resolve_device(device)
        precision = resolve_precision(precision, device)
        net, card, ident = _model(model, device)
    from crackseg.model_io import card_schema, model_hint

    schema = card_schema(card)
    img = _as_image(volume, voxel_size_um, nan_policy, channel=channel)
    sd = int(card["spatial_dims"])
    if sd == 2 and img.ndim == 3:
        from crackseg.sections import predict_sections

        if client is not None:  # the sections of a stack run in this process
            device = resolve_device(requested_device)
            precision = resolve_precision(precision, device)
        return predict_sections((net, card), ident, img, dict(
            roi_size=roi_size, overlap=overlap, blend=blend, halo=halo, device=device,
            batch_size=batch_size, precision=precision, uncertainty=uncertainty,
            n_samples=n_samples, progress=progress, seed=seed, nan_policy=nan_policy,
            chunk_size=chunk_size, max_memory_gb=max_memory_gb, scale=scale,
            channel=channel))
    if img.ndim != sd:
        raise InputError(
            f"{img.source}: {img.ndim}-D {'image' if img.ndim == 2 else 'volume'} of shape "
            f"{img.shape}, but model {card.get('name')!r} is {sd}-D; {model_hint(img.ndim)}"
        )
    factor, diameter = input_scale(scale, img, card)
    if factor != 1.0:
        return _predict_rescaled((net, card), ident, img, factor, diameter, dict(
            roi_size=roi_size, overlap=overlap, blend=blend, halo=halo, device=device,
            batch_size=batch_size, precision=precision, uncertainty=uncertainty,
            n_samples=n_samples, progress=progress, seed=seed, nan_policy=nan_policy))
    in_ch = int(card["architecture"]["args"].get("in_channels", 1))
    if in_ch != 1:
        raise InputError(f"model {card.get('name')!r} expects {in_ch} input channels; crackseg "
                         "feeds one grey-value channel")
    if nan_policy == "error" and count_nonfinite(img.data):
        raise InputError(
            f"{img.source}: NaN/Inf voxels; fix the data or pass --nan-policy replace"
        )
    lo, hi = intensity_range(img.data, card["normalization"], source=img.source)
    sw_batch = int(batch_size or (4 if device.startswith("cuda") else 1))
    plan = plan_inference(card, img.shape, roi_size=roi_size, overlap=overlap, blend=blend,
                          halo=halo, chunk_size=chunk_size, max_memory_gb=max_memory_gb,
                          sw_batch_size=sw_batch, uncertainty=uncertainty)
    transforms = None
    if uncertainty == "tta":
        square = plan["roi_size"][-1] == plan["roi_size"][-2]
        transforms = tta_transforms(sd, n, seed=seed, rotate=square)
    settings = {
        "blend": blend, "roi_size": plan["roi_size"], "halo": plan["halo"],
        "overlap": plan["overlap"], "chunk_size": plan["chunk_size"], "device": device,
        "precision": precision, "batch_size": sw_batch, "uncertainty": uncertainty,
        "n_samples": n, "seed": int(seed), "nan_policy": nan_policy,
        "scale": {"requested": scale, "factor": 1.0,
                  "particle_diameter_vox": None if diameter != diameter else round(diameter, 2)},
        "normalization": {**card["normalization"], "range_used": [lo, hi]},
    }
    if channel is not None:
        settings["channel"] = int(channel)
    provenance = {
        "crackseg_version": __version__, "model": ident["name"], "model_sha256": ident["sha256"],
        "input": img.source, "shape": list(img.shape), "dtype": str(img.dtype),
        "voxel_size_um": list(img.voxel_size_um) if img.voxel_size_um else None,
        "settings": settings,
    }
    fingerprint = _settings_fingerprint({"provenance": provenance,
                                         "input": _input_identity(volume)})
    chunks = chunk_grid(img.shape, plan["chunk_size"], plan["halo"])
    sinks = _Sinks(img.shape, img.voxel_size_um, plan["chunk_size"], n_samples=n,
                   uncertainty=uncertainty != "none", workdir=out, fingerprint=fingerprint,
                   resume=resume, meta={"provenance": provenance})
    todo = [c for c in chunks if c.index not in sinks.done]
    if progress and len(chunks) > 1:
        print(f"{img.source}: {len(chunks)} chunks of {plan['chunk_size']}, window "
              f"{plan['roi_size']}, estimated peak memory {plan['memory_estimate_gb']:.1f} GB "
              f"(limit {plan['max_memory_gb']:g} GB)", file=sys.stderr)
    job = {
        "plan": plan, "batch_size": sw_batch, "device": device, "precision": precision,
        "uncertainty": uncertainty, "n_samples": n, "seed": int(seed), "transforms": transforms,
        "values_lut": schema.values_lut(),
        "sample_classes": {name: int(schema.index_lut()[schema.value(name)])
                           for name in SAMPLE_CLASSES if schema.has(name)},
    }
    single = len(chunks) == 1 and progress
    reader = block_reader(img.data)
    read = lambda c: normalized_block(reader, c.ext, lo, hi, nan_policy, img.source)  # noqa: E731
    if uncertainty == "mc":
        enable_mc_dropout(net)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(chunks), initial=len(chunks) - len(todo), unit="chunk",
               desc=Path(img.source).name[:30], disable=not progress or len(chunks) == 1,
               file=sys.stderr, leave=False)
    n_run = 0
    if client is not None:
        from crackseg.scaleout import run_chunks

        task = {"model": ident["path"] or net, "model_sha256": ident["sha256"],
                "source": source, "device": requested_device, "lo": lo, "hi": hi,
                "nan_policy": nan_policy, "workdir": str(Path(out).resolve()), "job": job}
        try:
            n_run = run_chunks(client, todo, task, on_done=lambda c: sinks.mark_done(c.index),
                               bar=bar, stop_after_chunks=stop_after_chunks)
        finally:
            bar.close()
    else:
        with torch.inference_mode(), ThreadPoolExecutor(max_workers=1) as pool:
            nxt = pool.submit(read, todo[0]) if todo else None
            for i, chunk in enumerate(todo):
                block = nxt.result()
                nxt = pool.submit(read, todo[i + 1]) if i + 1 < len(todo) else None
                sinks.write(chunk, predict_chunk(net, block, chunk, job, progress=single))
                bar.update(1)
                n_run += 1
                if stop_after_chunks is not None and n_run >= stop_after_chunks and nxt is not None:
                    nxt.cancel()
                    bar.close()
                    raise KeyboardInterrupt(f"stopped after {n_run} chunks")
    bar.close()
    net.eval()
    a = sinks.arrays
    return Prediction(
        labels=a["labels"], entropy=a.get("entropy"),
        sample_bits={c: a[f"{c}_bits"] for c in SAMPLE_CLASSES} if uncertainty != "none" else None,
        n_samples=n, voxel_size_um=img.voxel_size_um, schema=schema, card=card,
        provenance=provenance, workdir=Path(out) if out is not None else None,
        stats={"chunks": len(chunks), "chunks_run": n_run},
    )
