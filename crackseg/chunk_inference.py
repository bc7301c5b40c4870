"""One chunk of a volume through the network: read, normalise, stitch windows, label.

:func:`predict_chunk` is the unit of work of whole-volume inference
(:func:`crackseg.inference.predict_volume`), run in the calling process or as
a Dask task (:mod:`crackseg.chunk_tasks`): it reads nothing and writes
nothing, it turns the normalised grey values of a chunk and its halo
(:func:`normalized_block`) into the outputs of the chunk's core.  Within
the chunk, :func:`stitched_logits` is the one sliding-window loop of
crackseg (MONAI's :func:`~monai.inferers.sliding_window_inference`, with
valid-centre tiling or Gaussian blending).

Examples
--------
>>> import numpy as np
>>> read = block_reader(np.arange(8, dtype=np.uint8).reshape(2, 4))
>>> normalized_block(read, (slice(0, 1), slice(0, 4)), 0.0, 4.0, "error", "array")
array([[0.  , 0.25, 0.5 , 0.75]], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from crackseg.errors import InputError
from crackseg.tiling import round_up, valid_tiling
from crackseg.uncertainty import SAMPLE_CLASSES, apply_transform, bits_dtype, predictive_entropy


def _valid_weight_map(roi, halo, eps: float = 1e-4):
    """Window weights: the product over axes of 1 in the centre and ``eps`` in the halo.

    A voxel in the halo of one window along an axis, and in the halo of
    another along two axes, takes the first window's scores: only a window
    whose centre holds the voxel along more axes outweighs another.
    """
    import torch

    w = torch.ones(tuple(roi), dtype=torch.float32)
    for axis, (r, h) in enumerate(zip(roi, halo)):
        line = torch.full((r,), eps, dtype=torch.float32)
        line[h:r - h] = 1.0
        w *= line.view([r if a == axis else 1 for a in range(len(roi))])
    return w


def stitched_logits(net, x, plan: dict, *, sw_batch_size: int = 1, sw_device="cpu",
                    out_device="cpu", precision: str = "fp32", progress: bool = False):
    """Class scores of a whole block, by MONAI sliding-window inference.

    Parameters
    ----------
    net : torch.nn.Module
    x : torch.Tensor, shape (1, 1, *spatial)
        Normalised block.
    plan : dict
        From :func:`crackseg.tiling.plan_inference` (``roi_size``, ``halo``, ``overlap``,
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

    if plan["blend"] == "gaussian":
        return sliding_window_inference(
            x, roi, sw_batch_size, predictor, sw_device=sw_device, device=out_device,
            progress=progress, overlap=plan["overlap"], mode="gaussian")
    # valid centres: windows on the network's downsampling grid (block padded at its far end)
    grid = tuple(round_up(s, div) for s in spatial)
    if grid != spatial:
        pad = [p for s, g in zip(reversed(spatial), reversed(grid)) for p in (0, g - s)]
        x = torch.nn.functional.pad(x, pad)
    roi, halo, ov = valid_tiling(grid, plan["roi_size"], plan["halo"], div)
    y = sliding_window_inference(
        x, roi, sw_batch_size, predictor, sw_device=sw_device, device=out_device,
        progress=progress, overlap=ov, mode="constant",
        roi_weight_map=_valid_weight_map(roi, halo).to(sw_device))
    return y[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]


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

    The unit of work of :func:`crackseg.inference.predict_volume`, run in this
    process or on a Dask worker (:func:`crackseg.chunk_tasks.predict_chunk_task`); call it inside
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
        ``plan`` (:func:`crackseg.tiling.plan_inference`), ``batch_size``, ``device``,
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
    >>> from crackseg.tiling import chunk_grid, plan_inference
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
        # NumPy's argmax over the class axis is ~5x faster than torch's on this layout
        idx = np.argmax(logits[(slice(None),) + chunk.crop].numpy(), axis=0)
        return {"labels": lut.astype(np.uint8)[idx]}
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
        idx = np.argmax(p.numpy(), axis=0)
        for name, ci in job["sample_classes"].items():
            bits[name] |= (idx == ci).astype(bits[name].dtype) << np.asarray(s, bits[name].dtype)
    mean = (mean / n).numpy()
    out_d = {"labels": lut[np.argmax(mean, axis=0)],
             "entropy": predictive_entropy(mean).astype(np.float16)}
    for name in SAMPLE_CLASSES:
        out_d[f"{name}_bits"] = bits[name]
    return out_d
