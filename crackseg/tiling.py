"""Windows, chunk grids and memory budgets for out-of-core inference.

:func:`plan_inference` chooses the window (``roi_size``), halo, overlap and
chunk sizes of one prediction; :func:`valid_tiling` fits windows with valid
centres to one block.

A volume (ZYX, or YX for images) is cut into *core* chunks that tile it
exactly; each chunk is read with a *halo* of context voxels on every side
(clipped at the volume border), processed, and only its core is written.
Results therefore do not depend on which chunks were processed in which run,
which is what makes interrupted runs resumable bit for bit.

Exact tiling: by default the halo is the network's receptive field
(:func:`default_halo`), and chunks and windows start on multiples of the
network's downsampling factor, so a network with batch normalisation gives
the scores of one forward pass over the whole volume, up to float rounding
(instance normalisation takes its statistics per window, so there the two
differ; ``benchmarks/tiling_exactness.py`` measures both).

Examples
--------
>>> from crackseg.tiling import chunk_grid
>>> chunks = chunk_grid((100, 60, 60), chunk=64, halo=8)
>>> len(chunks), chunks[0].core, chunks[0].ext
(2, (slice(0, 64, None), slice(0, 60, None), slice(0, 60, None)), (slice(0, 72, None), slice(0, 60, None), slice(0, 60, None)))
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from crackseg.errors import CracksegError

GIB = 1024**3
FIXED_BYTES = int(0.6 * GIB)
"""Memory of Python, PyTorch and the model, counted once in every estimate (bytes)."""


@dataclass(frozen=True)
class Chunk:
    """One chunk of a grid.

    Attributes
    ----------
    index : int
        Position in row-major grid order (stable across runs).
    core : tuple of slice
        Region of the volume this chunk writes.
    ext : tuple of slice
        Region it reads: the core plus the halo, clipped to the volume.
    crop : tuple of slice
        The core's position inside ``ext``.
    """

    index: int
    core: tuple
    ext: tuple
    crop: tuple

    @property
    def core_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.core)

    @property
    def ext_shape(self) -> tuple[int, ...]:
        return tuple(s.stop - s.start for s in self.ext)


def _per_axis(value, ndim: int) -> tuple[int, ...] | None:
    """``value`` as ``ndim`` integers: one value repeated, or one per axis (``None`` stays).

    Examples
    --------
    >>> _per_axis(64, 3), _per_axis([32, 64], 2), _per_axis(None, 3)
    ((64, 64, 64), (32, 64), None)
    """
    if value is None:
        return None
    values = [int(v) for v in np.atleast_1d(np.asarray(value))]
    if len(values) == 1:
        return (values[0],) * ndim
    if len(values) != ndim:
        raise ValueError(f"expected {ndim} values, got {tuple(values)}")
    return tuple(values)


def chunk_grid(shape, chunk, halo=0) -> list[Chunk]:
    """Cut ``shape`` into core chunks of size ``chunk`` with a ``halo``.

    Parameters
    ----------
    shape : sequence of int
        Volume shape (ZYX or YX), voxels.
    chunk : int or sequence of int
        Core chunk size per axis, voxels (the last chunk along an axis may be
        smaller).
    halo : int or sequence of int
        Context read on each side of the core, voxels.

    Returns
    -------
    list of Chunk
        In row-major order.
    """
    ndim = len(shape)
    chunk = _per_axis(chunk, ndim)
    halo = _per_axis(halo, ndim)
    starts = [range(0, s, c) for s, c in zip(shape, chunk)]
    out = []
    for i, origin in enumerate(itertools.product(*starts)):
        core, ext, crop = [], [], []
        for o, c, h, s in zip(origin, chunk, halo, shape):
            stop = min(o + c, s)
            e0, e1 = max(0, o - h), min(s, stop + h)
            core.append(slice(o, stop))
            ext.append(slice(e0, e1))
            crop.append(slice(o - e0, stop - e0))
        out.append(Chunk(i, tuple(core), tuple(ext), tuple(crop)))
    return out


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``."""
    return int(math.ceil(n / multiple) * multiple)


def window_bytes_per_voxel(architecture: dict) -> int:
    """Network activations per window voxel in one forward pass, estimated (bytes, float32).

    ``8 * sum(channels[l] / scale[l] ** ndim)`` over the U-Net's levels, with
    ``scale[l]`` the product of the strides before level ``l``; measured peaks
    of MONAI's U-Net on CPU: 90 bytes for channels 8-64 with strides 2, 2, 2
    and 270-340 for channels 12-96 with strides 1, 2, 2 (estimates 85, 348).

    Examples
    --------
    >>> from crackseg.nets import unet_architecture
    >>> window_bytes_per_voxel(unet_architecture(3, channels=(8, 16, 32, 64)))
    85
    """
    args = architecture["args"]
    nd = int(args.get("spatial_dims", 3))
    strides = [1] + [int(v) for v in (args.get("strides") or [2] * (len(args["channels"]) - 1))]
    total, scale = 0.0, 1
    for c, s in zip(args["channels"], strides):
        scale *= s
        total += int(c) / scale ** nd
    return int(round(8 * total))


def inference_memory_bytes(chunk, halo, roi, *, n_classes: int, window_bytes: int,
                           sw_batch_size: int = 1, uncertainty: bool = False,
                           input_itemsize: int = 2) -> int:
    """Peak host memory of chunked inference, estimated (bytes).

    Counts the chunk's input (raw and float32), the stitched logits and
    weights MONAI keeps for the chunk (float32 per class), probability
    buffers when posterior samples are drawn, and the network activations of
    one batch of windows (:func:`window_bytes_per_voxel`).  Fixed costs
    (Python, PyTorch, the model) add roughly 0.6 GiB.

    Parameters
    ----------
    chunk, halo, roi : int or sequence of int
        Core chunk size, halo and window size per axis, voxels.
    n_classes : int
        Output channels.
    window_bytes : int
        Activations per window voxel (:func:`window_bytes_per_voxel`).
    """
    ndim = len(roi) if not np.isscalar(roi) else 3
    chunk = _per_axis(chunk, ndim)
    halo = _per_axis(halo, ndim)
    roi = _per_axis(roi, ndim)
    ext = int(np.prod([c + 2 * h for c, h in zip(chunk, halo)]))
    window = int(np.prod(roi)) * sw_batch_size * window_bytes
    return int(ext * _chunk_bytes_per_voxel(n_classes, uncertainty, input_itemsize) + window
               + FIXED_BYTES)


def _chunk_bytes_per_voxel(n_classes: int, uncertainty: bool, input_itemsize: int = 2) -> int:
    """Buffers per voxel of a chunk and its halo: raw, input, logits, weights, probabilities."""
    per_voxel = input_itemsize + 4 + 4 * n_classes + 4 + 4 * n_classes
    if uncertainty:
        per_voxel += 4 * n_classes + 8  # running mean, per-sample bit masks, entropy
    return per_voxel


def chunk_for_memory(max_memory_bytes: int, halo, roi, *, n_classes: int, window_bytes: int,
                     sw_batch_size: int = 1, uncertainty: bool = False, step: int = 1,
                     largest: int = 512, ndim: int = 3) -> int:
    """Largest cubic core chunk (a multiple of ``step``) whose estimate fits.

    Raises
    ------
    ValueError
        If even one ``step``-sized chunk does not fit.
    """
    best = None
    c = step
    while c <= largest:
        need = inference_memory_bytes((c,) * ndim, halo, roi, n_classes=n_classes,
                                      window_bytes=window_bytes, sw_batch_size=sw_batch_size,
                                      uncertainty=uncertainty)
        if need > max_memory_bytes:
            break
        best = c
        c += step
    if best is None:
        raise ValueError("memory limit too small for one window")
    return best


BLEND_MODES = ("valid", "gaussian")
DEFAULT_VALID_ROI = {3: 256, 2: 512}
"""Largest window edge (voxels) of ``blend="valid"`` when none is given (3-D, 2-D)."""
DEFAULT_MAX_MEMORY_GB = 3.0
"""Memory budget (GB) that sets the chunk size when none is given."""


def plan_inference(card: dict, shape, *, roi_size=None, overlap=None, blend="valid", halo=None,
                   chunk_size=None, max_memory_gb=None, sw_batch_size=1,
                   uncertainty: str = "none") -> dict:
    """Window, halo, overlap and chunk sizes for a volume of ``shape``.

    Parameters
    ----------
    card : dict
        Model card (architecture, inference defaults, patch size).
    shape : sequence of int
        Volume shape (ZYX or YX), voxels.
    roi_size, halo, chunk_size : int or sequence of int, optional
        Window, context and core chunk sizes (voxels); defaults as for
        :func:`crackseg.inference.predict_volume`.
    overlap : float, optional
        Window overlap with ``blend="gaussian"``.
    blend : {"valid", "gaussian"}
    max_memory_gb : float, optional
        Budget that sets the chunk size when ``chunk_size`` is not given.

    Returns
    -------
    dict
        ``blend``, ``roi_size``, ``halo``, ``overlap``, ``chunk_size``,
        ``divisor`` (:func:`downsampling_factor`), ``halo_rule`` (how the
        halo was chosen), ``receptive_field`` (:func:`crackseg.nets.receptive_halo`),
        ``memory_estimate_gb`` and ``max_memory_gb`` (per axis where it
        applies, voxels).  The chunk size (and with ``blend="valid"`` the halo)
        is rounded up to a multiple of ``divisor``; without ``halo`` the halo is
        :func:`default_halo` and without ``roi_size`` the window is the largest
        that fits the budget (see :func:`_windows`).

    Examples
    --------
    >>> from crackseg.model_io import new_card
    >>> from crackseg.nets import unet_architecture
    >>> card = new_card("tiny", unet_architecture(3, out_channels=4, channels=(4, 8)),
    ...                 patch_size=(32, 32, 32))
    >>> plan = plan_inference(card, (40, 40, 40), roi_size=32, chunk_size=24)
    >>> plan["roi_size"], plan["chunk_size"]
    ([32, 32, 32], [24, 24, 24])
    """
    ndim = len(shape)
    if blend not in BLEND_MODES:
        raise CracksegError(f"blend {blend!r}: use one of {', '.join(BLEND_MODES)}")
    args = card["architecture"]["args"]
    divisor = downsampling_factor(card["architecture"])
    max_mem = float(max_memory_gb if max_memory_gb is not None else DEFAULT_MAX_MEMORY_GB)
    kw = dict(n_classes=int(args["out_channels"]),
              window_bytes=window_bytes_per_voxel(card["architecture"]),
              sw_batch_size=sw_batch_size, uncertainty=uncertainty != "none")
    roi, h, ov = _windows(card, ndim, divisor, roi_size=roi_size, overlap=overlap, blend=blend,
                          halo=halo, window_budget=max(0.0, max_mem * GIB - FIXED_BYTES) / (
                              kw["window_bytes"] * sw_batch_size
                              + _chunk_bytes_per_voxel(kw["n_classes"], kw["uncertainty"])))
    step = (min(r - 2 * hh for r, hh in zip(roi, h)) if blend == "valid"
            else max(1, int(min(roi) * (1 - ov))))
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
        if blend == "valid" and all(s <= r for s, r in zip(shape, roi)):
            # The whole volume fits one window of the budget: one pass, no halo to recompute
            # (the volume's faces need no context; the pass is the whole-volume forward pass).
            chunk = tuple(shape)
    else:
        chunk = tuple(min(round_up(c, divisor), s) for c, s in zip(_per_axis(chunk_size, ndim), shape))
    # Context is read only inside the volume: none along an axis the chunk spans whole.
    h_read = tuple(0 if c >= n else hh for c, n, hh in zip(chunk, shape, h))
    est = inference_memory_bytes(chunk, h_read, roi, **kw) / GIB
    from crackseg.nets import receptive_halo

    rule = "given" if halo is not None else (
        "receptive field on the downsampling grid" if blend == "valid" else "window / 4")
    return {"blend": blend, "roi_size": list(roi), "halo": list(h), "overlap": ov,
            "chunk_size": list(chunk), "divisor": divisor, "halo_rule": rule,
            "receptive_field": receptive_halo(card["architecture"]),
            "memory_estimate_gb": round(est, 2), "max_memory_gb": max_mem}


def _windows(card: dict, ndim: int, divisor: int, *, roi_size, overlap, blend, halo,
             window_budget: float):
    """Window size, halo (voxels per axis) and Gaussian overlap (``None`` for valid centres).

    Without ``roi_size``, a valid-centre window is the largest (up to
    :data:`DEFAULT_VALID_ROI`) with at most ``window_budget`` voxels (so that a
    chunk of one window fits the memory budget), and at least twice the halo
    plus one downsampling step.
    """
    inf = card.get("inference", {})
    if blend == "gaussian":
        roi = _per_axis(roi_size, ndim) or _per_axis(inf.get("roi_size", card.get("patch_size")),
                                                     ndim)
        ov = float(inf.get("overlap", 0.25) if overlap is None else overlap)
        h = _per_axis(halo, ndim) or tuple(max(divisor, r // 4) for r in roi)
    else:
        h = tuple(round_up(v, divisor) for v in (_per_axis(halo, ndim)
                                                 or (default_halo(card["architecture"]),) * ndim))
        edge = min(DEFAULT_VALID_ROI[ndim], int(window_budget ** (1 / ndim)) // divisor * divisor)
        roi = _per_axis(roi_size, ndim) or tuple(max(edge, 2 * v + divisor) for v in h)
        ov = None
    roi = tuple(round_up(r, divisor) for r in roi)
    if any(2 * hh >= r for hh, r in zip(h, roi)):
        raise CracksegError(f"halo {h} leaves no window centre in window {roi}")
    if not 0 <= (ov or 0) < 1:
        raise CracksegError(f"overlap {ov} must be in [0, 1)")
    return roi, h, ov


def downsampling_factor(architecture: dict) -> int:
    """Product of the network's strides: windows and chunks start on multiples of it (voxels)."""
    args = architecture["args"]
    return int(np.prod(args.get("strides") or [2] * (len(args["channels"]) - 1)))


def default_halo(architecture: dict) -> int:
    """Halo of ``blend="valid"`` when none is given: the network's receptive field (voxels).

    :func:`crackseg.nets.receptive_halo` rounded up to a multiple of
    :func:`downsampling_factor`, so that window centres and chunk cores see
    all the context their scores depend on and windows sit on the network's
    downsampling grid: the stitched scores are those of the whole-volume
    forward pass (up to float rounding) for networks with batch
    normalisation.

    Examples
    --------
    >>> from crackseg.nets import unet_architecture
    >>> default_halo(unet_architecture(3, channels=(8, 16, 32, 64), num_res_units=1))
    32
    """
    from crackseg.nets import receptive_halo

    return round_up(receptive_halo(architecture), downsampling_factor(architecture))


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
