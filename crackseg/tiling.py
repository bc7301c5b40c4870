"""Chunk grids and memory budgets for out-of-core inference.

A volume (ZYX, or YX for images) is cut into *core* chunks that tile it
exactly; each chunk is read with a *halo* of context voxels on every side
(clipped at the volume border), processed, and only its core is written.
Results therefore do not depend on which chunks were processed in which run,
which is what makes interrupted runs resumable bit for bit.

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

GIB = 1024**3


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


def _per_axis(value, ndim: int) -> tuple[int, ...]:
    if np.isscalar(value):
        return (int(value),) * ndim
    value = tuple(int(v) for v in value)
    if len(value) != ndim:
        raise ValueError(f"expected {ndim} values, got {value}")
    return value


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


def inference_memory_bytes(chunk, halo, roi, *, n_classes: int, first_channels: int,
                           sw_batch_size: int = 1, uncertainty: bool = False,
                           input_itemsize: int = 2) -> int:
    """Peak host memory of chunked inference, estimated (bytes).

    Counts the chunk's input (raw and float32), the stitched logits and
    weights MONAI keeps for the chunk (float32 per class), probability
    buffers when posterior samples are drawn, and the network activations of
    one batch of windows (about ``8 * first_channels`` bytes per window voxel
    in float32, measured for MONAI's U-Net).  Fixed costs (Python, PyTorch,
    the model) add roughly 0.6 GiB.

    Parameters
    ----------
    chunk, halo, roi : int or sequence of int
        Core chunk size, halo and window size per axis, voxels.
    n_classes : int
        Output channels.
    first_channels : int
        Width of the network's first level.
    """
    ndim = len(roi) if not np.isscalar(roi) else 3
    chunk = _per_axis(chunk, ndim)
    halo = _per_axis(halo, ndim)
    roi = _per_axis(roi, ndim)
    ext = int(np.prod([c + 2 * h for c, h in zip(chunk, halo)]))
    per_voxel = input_itemsize + 4 + 4 * n_classes + 4 + 4 * n_classes  # raw, input, logits, weights, probs
    if uncertainty:
        per_voxel += 4 * n_classes + 8  # running mean, per-sample bit masks, entropy
    window = int(np.prod(roi)) * sw_batch_size * 8 * first_channels
    return int(ext * per_voxel + window + 0.6 * GIB)


def chunk_for_memory(max_memory_bytes: int, halo, roi, *, n_classes: int, first_channels: int,
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
                                      first_channels=first_channels, sw_batch_size=sw_batch_size,
                                      uncertainty=uncertainty)
        if need > max_memory_bytes:
            break
        best = c
        c += step
    if best is None:
        raise ValueError("memory limit too small for one window")
    return best
