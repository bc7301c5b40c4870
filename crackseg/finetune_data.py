"""Fine-tuning data: annotated units, folds, class weights, patches and augmentation.

A user annotates a few *units*: whole 2-D images, or slices of a volume
(along any axis; a slice counts as annotated when most of it is).  Fine-tuning
draws patches centred on annotated voxels with every class equally likely as
a centre (rare classes oversampled), flips and rotates them, and changes
their imaging with the intensity side of the domain randomiser
(:mod:`crackseg.synthetic.randomize`: blur, down-sampling, bias field, noise,
gamma).  Validation holds units out in turn (:func:`fold_indices`).

Arrays are ZYX (volumes) or YX (images); index arrays hold channel indices
with ``-1`` for unannotated voxels.

Examples
--------
>>> import numpy as np
>>> from crackseg.finetune_data import FinetunePatches, annotation_units
>>> img = np.random.default_rng(0).normal(size=(40, 40)).astype(np.float32)
>>> idx = (img > 1).astype(np.int16)
>>> annotation_units([(img, idx)])
[(0, None, None)]
>>> ds = FinetunePatches([(img, idx)], (16, 16), n_classes=2, length=4, seed=0)
>>> x, y = ds[0]
>>> tuple(x.shape), tuple(y.shape)
((1, 16, 16), (1, 16, 16))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage as ndi

from crackseg.errors import InputError
from crackseg.losses import IGNORE_INDEX
from crackseg.synthetic.randomize import (
    AppearanceRanges,
    noise_field,
    random_appearance,
    resample_blur,
)

FINETUNE_RANGES = replace(
    AppearanceRanges(), blur_sigma=(0.0, 1.2), snr=(4.0, 40.0), noise_correlation=(0.0, 1.0),
    bias_amplitude=(0.0, 0.2), gamma=(0.7, 1.4), downsample=(1.0, 1.8),
    downsample_probability=0.2)
"""Imaging changes applied to real patches (milder than the randomiser's full ranges:
a real image already carries its own blur and noise)."""

MAX_CENTRES = 200_000
"""Candidate patch centres kept per class and item (a random subset of larger sets)."""

Unit = tuple
"""``(item, axis, slice)``: one annotated unit; ``axis`` and ``slice`` are ``None`` for a whole item."""


# ---------------------------------------------------------------- units and folds


def annotated_slices_along(index: np.ndarray, axis: int, *, min_fraction: float = 0.5) -> np.ndarray:
    """Slices along ``axis`` that are annotated over most of their area.

    A slice counts when its annotated fraction reaches ``min_fraction`` of
    the best-annotated slice's.  Returns an empty array when the annotations
    are not slice-wise (none qualify, or more than half of the slices do,
    as for dense labels).
    """
    other = tuple(a for a in range(index.ndim) if a != axis)
    frac = (index >= 0).mean(axis=other)
    if frac.max() <= 0:
        return np.array([], dtype=int)
    sl = np.flatnonzero(frac >= min_fraction * frac.max())
    return sl if len(sl) <= index.shape[axis] // 2 else np.array([], dtype=int)


def annotation_units(items: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Unit]:
    """The annotated units of training items: 2-D images, or annotated slices of volumes.

    Parameters
    ----------
    items : list of (image, index)
        Raw images and channel indices.

    Returns
    -------
    list of (item, axis, slice)
        One entry per 2-D item or dense volume (axis and slice ``None``) and
        one per annotated slice of a sparsely annotated volume.
    """
    units: list[Unit] = []
    for k, (_, idx) in enumerate(items):
        found = [(k, a, int(s)) for a in range(idx.ndim) if idx.ndim == 3
                 for s in annotated_slices_along(idx, a)]
        units += found or [(k, None, None)]
    return units


def unit_mask(unit: Unit, shape) -> tuple:
    """Index expression selecting a unit's voxels in its item."""
    _, axis, s = unit
    if axis is None:
        return tuple(slice(None) for _ in shape)
    sel = [slice(None)] * len(shape)
    sel[axis] = s
    return tuple(sel)


def make_folds(units: list[Unit], n_folds: int) -> list[list[Unit]]:
    """Split units into ``n_folds`` held-out groups, spread along each volume (round robin)."""
    order = sorted(units, key=lambda u: (u[1] is None, u[1] or 0, u[2] or 0, u[0]))
    k = max(1, min(int(n_folds), len(order)))
    return [order[i::k] for i in range(k)]


def fold_indices(items, held_out: list[Unit]):
    """Training and validation indices of one fold.

    The held-out units are removed from training entirely (a held-out slice's
    crossings with other annotated slices included), and are the only
    annotated voxels of validation.

    Returns
    -------
    train, val : list of (image, index)
        Same images; ``val`` lists only items with held-out voxels.
    """
    train = [(im, idx.copy()) for im, idx in items]
    val: dict[int, np.ndarray] = {}
    for u in held_out:
        k = u[0]
        sel = unit_mask(u, items[k][1].shape)
        v = val.setdefault(k, np.full_like(items[k][1], IGNORE_INDEX))
        v[sel] = items[k][1][sel]
        train[k][1][sel] = IGNORE_INDEX
    train = [(im, idx) for im, idx in train if (idx >= 0).any()]
    return train, [(items[k][0], v) for k, v in sorted(val.items())]


# ---------------------------------------------------------------- class balance


def class_frequencies(indices, n_classes: int) -> np.ndarray:
    """Fraction of annotated voxels per class over index arrays."""
    counts = sum(np.bincount(i[i >= 0].ravel().astype(np.int64), minlength=n_classes)[:n_classes]
                 for i in indices)
    total = max(1, int(np.sum(counts)))
    return np.asarray(counts, dtype=np.float64) / total


def class_weights(freq, *, power: float = 0.5, clip=(0.25, 8.0)) -> list[float]:
    """Cross-entropy weights from annotated class frequencies.

    ``w_c = (1 / (K f_c)) ** power`` for the ``K`` present classes (1 when
    the classes are balanced), clipped; absent classes get 1.

    Examples
    --------
    >>> class_weights([0.81, 0.09, 0.1, 0.0])
    [0.642, 1.925, 1.826, 1.0]
    """
    f = np.asarray(freq, dtype=np.float64)
    present = f > 0
    w = np.ones_like(f)
    w[present] = np.clip((1.0 / (present.sum() * f[present])) ** power, *clip)
    return [round(float(v), 3) for v in w]


# ---------------------------------------------------------------- training items


def training_items(pairs, *, spatial_dims: int, normalization: dict):
    """Normalised (image, index) items a network of ``spatial_dims`` trains on.

    A 2-D network trains on the annotated slices of volumes (along the axes
    that carry annotated slices, else along z), each normalised on its own as
    ``predict`` normalises a section; a 3-D network on whole volumes.
    """
    from crackseg.normalize import normalize_image

    out = []
    for img, idx in pairs:
        if spatial_dims == 3 or img.ndim == 2:
            out.append((normalize_image(img, normalization), idx))
            continue
        axes = [a for a in range(3) if len(annotated_slices_along(idx, a))] or [0]
        for a in axes:
            other = tuple(b for b in range(3) if b != a)
            for s in np.flatnonzero((idx >= 0).any(axis=other)):
                out.append((normalize_image(np.take(img, s, axis=a), normalization),
                            np.take(idx, s, axis=a)))
    return [(im, ix) for im, ix in out if (ix >= 0).any()]


# ---------------------------------------------------------------- augmentation


def _smooth_field(rng, shape, amplitude):
    """1 + a smooth random field (sum of one random quadratic profile per axis), max |.| = amplitude."""
    field = np.zeros(shape, np.float32)
    for a, n in enumerate(shape):
        t = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        prof = rng.uniform(-1, 1) * t + rng.uniform(-1, 1) * (t * t - 0.5)
        field += prof.reshape([-1 if b == a else 1 for b in range(len(shape))])
    return 1.0 + amplitude * field / max(float(np.abs(field).max()), 1e-6)


class IntensityAugment:
    """Imaging changes of a normalised real patch, drawn from :class:`AppearanceRanges`.

    Blur, down- then up-sampling, a smooth multiplicative bias field, white or
    correlated noise (contrast over noise from ``snr``), gamma and a small
    contrast/brightness change, each applied with probability ``p``.

    Examples
    --------
    >>> import numpy as np
    >>> aug = IntensityAugment(p=1.0)
    >>> x = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    >>> aug(x, np.random.default_rng(0)).shape
    (16, 16)
    """

    def __init__(self, ranges: AppearanceRanges = FINETUNE_RANGES, *, p: float = 0.5):
        self.ranges, self.p = ranges, float(p)

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        s = random_appearance(rng, self.ranges, ndim=x.ndim)
        on = rng.uniform(size=6) < self.p
        x = np.asarray(x, dtype=np.float32)
        if on[0]:
            x = ndi.gaussian_filter(x, s["blur_sigma"])
        if s["downsample"] > 1.0:
            x = resample_blur(x, s["downsample"])
        if on[1] and s["bias_amplitude"] > 0:
            x = x * _smooth_field(rng, x.shape, s["bias_amplitude"])
        if on[2]:
            x = x + noise_field(rng, x.shape, s["noise_correlation"]) / s["snr"]
        if on[3]:
            c = np.clip(x, -0.5, 1.5)
            x = np.sign(c) * np.abs(c) ** s["gamma"]
        if on[4]:
            x = x * rng.uniform(0.9, 1.1) + rng.uniform(-0.05, 0.05)
        return x.astype(np.float32)


# ---------------------------------------------------------------- patches


def crop(a: np.ndarray, start, size, *, fill=None) -> np.ndarray:
    """Crop ``size`` voxels from ``start`` (may reach outside); pad by reflection or ``fill``."""
    lo = [max(0, s) for s in start]
    hi = [min(n, s + z) for n, s, z in zip(a.shape, start, size)]
    out = a[tuple(slice(b, e) for b, e in zip(lo, hi))]
    pads = [(b - s, s + z - e) for b, e, s, z in zip(lo, hi, start, size)]
    if not any(p for pair in pads for p in pair):
        return out
    if fill is not None:
        return np.pad(out, pads, mode="constant", constant_values=fill)
    mode = "reflect" if all(n > max(p) for n, p in zip(out.shape, pads)) else "edge"
    return np.pad(out, pads, mode=mode)


class FinetunePatches(torch.utils.data.Dataset):
    """Patches centred near annotated voxels, every class equally likely as a centre.

    Item ``i`` is reproducible from ``(seed, epoch, i)``.  Pure NumPy, so a
    patch costs about a millisecond and the optimiser, not the data, sets
    the pace.

    Parameters
    ----------
    items : list of (image, index)
        Normalised images (float32) and channel indices (``-1`` = not annotated).
    patch_size : sequence of int
        Patch shape, same dimensionality as the items.
    n_classes : int
        Number of classes.
    length : int
        Patches per epoch.
    augment : IntensityAugment, optional
        Imaging changes (``None``: flips and rotations only).
    geometric : bool
        Random flips on every axis and 90-degree rotations in YX (square YX).
    seed : int
        Seed of the sampling.
    """

    def __init__(self, items, patch_size, n_classes: int, *, length: int = 1000,
                 augment: IntensityAugment | None = None, geometric: bool = True, seed: int = 0):
        self.patch = tuple(int(p) for p in patch_size)
        self.n_classes, self.length, self.seed, self.epoch = int(n_classes), int(length), int(seed), 0
        self.augment, self.geometric = augment, bool(geometric)
        self.items, self.centres = [], {c: [] for c in range(self.n_classes)}
        rng = np.random.default_rng(seed)
        for image, index in items:
            if image.ndim != len(self.patch):
                raise InputError(f"patch size {list(self.patch)} does not fit an image of shape "
                                 f"{image.shape}")
            k = len(self.items)
            self.items.append((np.asarray(image, np.float32), np.asarray(index, np.int16)))
            for c in range(self.n_classes):
                flat = np.flatnonzero(index == c)
                if len(flat) > MAX_CENTRES:
                    flat = rng.choice(flat, MAX_CENTRES, replace=False)
                if len(flat):
                    self.centres[c].append((k, flat))
        self.classes = [c for c in range(self.n_classes) if self.centres[c]]
        if not self.classes:
            raise InputError("no annotated voxels in the training data")

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches in the next epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _centre(self, rng):
        c = self.classes[int(rng.integers(len(self.classes)))]
        sizes = np.array([len(f) for _, f in self.centres[c]], dtype=np.float64)
        k, flat = self.centres[c][int(rng.choice(len(sizes), p=sizes / sizes.sum()))]
        return k, np.unravel_index(int(flat[rng.integers(len(flat))]), self.items[k][1].shape)

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k, centre = self._centre(rng)
        image, index = self.items[k]
        start = [int(c) - p // 2 + int(rng.integers(-(p // 4), p // 4 + 1))
                 for c, p in zip(centre, self.patch)]
        x = crop(image, start, self.patch)
        y = crop(index, start, self.patch, fill=IGNORE_INDEX)
        if self.geometric:
            x, y = _flip_rotate(x, y, rng)
        if self.augment is not None:
            x = self.augment(x, rng)
        return (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None],
                torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))[None])


def _flip_rotate(x, y, rng):
    for a in range(x.ndim):
        if rng.uniform() < 0.5:
            x, y = np.flip(x, a), np.flip(y, a)
    if x.shape[-1] == x.shape[-2]:
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(-2, -1)), np.rot90(y, k, axes=(-2, -1))
    return x, y
