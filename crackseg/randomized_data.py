"""Training patches rendered afresh from dense phantom labels under random imaging.

Examples
--------
>>> from crackseg.synthetic.pool import label_pool
>>> from crackseg.randomized_data import RandomizedPatchDataset
>>> pool = label_pool(1, (16, 48, 48), seed=0, voxel_size_um=(0.5, 0.5))
>>> ds = RandomizedPatchDataset(pool, (32, 32), length=4, seed=0)
>>> x, y = ds[0]
>>> tuple(x.shape), tuple(y.shape), str(y.dtype)
((1, 32, 32), (1, 32, 32), 'torch.int64')
"""

from __future__ import annotations

import numpy as np
import torch

from crackseg.errors import InputError
from crackseg.synthetic.randomize import AppearanceRanges, random_appearance, render

MARGIN = 8
"""Voxels rendered around a patch so that blur and fringes see real context."""


def _focus_points(labels: np.ndarray, rng: np.random.Generator, n: int = 20000) -> np.ndarray:
    """Coordinates of (at most ``n``) crack and pore voxels."""
    pts = np.argwhere(labels >= 2)
    if len(pts) > n:
        pts = pts[rng.choice(len(pts), n, replace=False)]
    return pts


def _box(centre, size, shape, rng):
    """Start of a box of ``size`` around ``centre`` (jittered), inside ``shape`` where possible."""
    start = []
    for c, s, n in zip(centre, size, shape):
        lo = int(c) - s // 2 + int(rng.integers(-s // 4, s // 4 + 1))
        start.append(int(np.clip(lo, 0, max(0, n - s))))
    return start


def _crop(a, start, size, fill):
    sl = tuple(slice(s, s + z) for s, z in zip(start, size))
    out = a[sl]
    pads = [(0, z - n) for z, n in zip(size, out.shape)]
    if any(p[1] for p in pads):
        out = np.pad(out, pads, mode="constant", constant_values=fill)
    return out


class RandomizedPatchDataset(torch.utils.data.Dataset):
    """Dense-label patches whose appearance is drawn anew for every item.

    Item ``i`` is reproducible from ``(seed, epoch, i)``.

    Parameters
    ----------
    pool : list of dict
        From :func:`crackseg.synthetic.pool.label_pool` (3-D label maps, ZYX).
    patch_size : sequence of int
        (Z, Y, X) for a 3-D model, (Y, X) for a 2-D model (slices along
        ``slice_axes`` of the pool volumes).
    ranges : AppearanceRanges, optional
        Random imaging model.
    length : int
        Items per epoch.
    focus_probability : float
        Chance that a patch is centred near a crack or pore voxel.
    slice_axes : sequence of int
        Axes the 2-D slices are cut along.
    seed : int
        Seed of sampling and rendering.
    """

    def __init__(self, pool, patch_size, *, ranges: AppearanceRanges | None = None,
                 length: int = 200, focus_probability: float = 0.5, slice_axes=(0,),
                 seed: int = 0):
        if not pool:
            raise InputError("the label pool is empty")
        self.pool = pool
        self.patch_size = tuple(int(p) for p in patch_size)
        if len(self.patch_size) not in (2, 3):
            raise InputError(f"patch_size must have 2 or 3 axes, not {self.patch_size}")
        self.ranges = ranges or AppearanceRanges()
        self.length, self.seed, self.epoch = int(length), int(seed), 0
        self.focus_probability = float(focus_probability)
        self.slice_axes = tuple(int(a) for a in slice_axes)
        rng = np.random.default_rng(self.seed)
        self.focus = [_focus_points(m["labels"], rng) for m in pool]

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches in the next epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _centre(self, k, rng):
        shape = self.pool[k]["labels"].shape
        pts = self.focus[k]
        if len(pts) and rng.uniform() < self.focus_probability:
            return pts[int(rng.integers(len(pts)))]
        return np.array([int(rng.integers(n)) for n in shape])

    def sample(self, i: int):
        """Labels, binder and rendered image of item ``i`` (numpy, with the margin cropped)."""
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = int(rng.integers(len(self.pool)))
        m = self.pool[k]
        lab, binder, inst = m["labels"], m["binder"], m.get("instances")
        centre = self._centre(k, rng)
        if len(self.patch_size) == 2:
            axis = int(self.slice_axes[int(rng.integers(len(self.slice_axes)))])
            lab, binder = (np.take(a, centre[axis], axis=axis) for a in (lab, binder))
            inst = None if inst is None else np.take(inst, centre[axis], axis=axis)
            centre = np.delete(centre, axis)
        size = [p + 2 * MARGIN for p in self.patch_size]
        start = _box(centre, size, lab.shape, rng)
        lab, binder = _crop(lab, start, size, 0), _crop(binder, start, size, False)
        inst = None if inst is None else _crop(inst, start, size, 0)
        setting = random_appearance(rng, self.ranges, ndim=lab.ndim)
        img = render(lab, binder, setting, rng, instances=inst)
        core = tuple(slice(MARGIN, MARGIN + p) for p in self.patch_size)
        img, lab = img[core], lab[core]
        for a in range(lab.ndim):
            if rng.uniform() < 0.5:
                img, lab = np.flip(img, a), np.flip(lab, a)
        kr = int(rng.integers(4))
        img, lab = np.rot90(img, kr, axes=(-2, -1)), np.rot90(lab, kr, axes=(-2, -1))
        return np.ascontiguousarray(img), np.ascontiguousarray(lab), setting

    def __getitem__(self, i: int):
        img, lab, _ = self.sample(i)
        x = torch.from_numpy(img.astype(np.float32))[None]
        y = torch.from_numpy(lab.astype(np.int64))[None]
        return x, y


def training_domain(pool, ranges: AppearanceRanges | None = None, *, seed: int = 0) -> dict:
    """What a model trained on ``pool`` has seen, for its card's ``training_domain``.

    The particle diameter is measured the way ``predict --scale auto`` measures
    inputs (:func:`crackseg.scale.particle_diameter_vox` on rendered images),
    so that the two can be compared.

    Returns
    -------
    dict
        ``particle_diameter_vox`` ([low, high] over the pool members),
        ``particle_diameter_vox_per_member``, ``class_fraction_of_envelope``
        (crack and pore voxels per particle-envelope voxel: min, max, mean over
        the members), ``voxel_size_um_range`` and ``appearance_ranges``.
    """
    from crackseg.scale import particle_diameter_vox

    ranges = ranges or AppearanceRanges()
    rng = np.random.default_rng(seed)
    mid = {f: (sum(v) / 2 if isinstance(v, tuple) else v) for f, v in vars(ranges).items()}
    setting = random_appearance(rng, AppearanceRanges(**{
        k: ((v, v) if isinstance(getattr(ranges, k), tuple) else v) for k, v in mid.items()}),
        ndim=3)
    est = [particle_diameter_vox(render(m["labels"], m["binder"], setting, rng)) for m in pool]
    est = [float(e) for e in est if np.isfinite(e)]
    vs = [float(m["voxel_size_um"]) for m in pool]
    frac = {}
    for name, v in (("crack", 2), ("pore", 3)):
        per = [float((m["labels"] == v).sum() / max(1, (m["labels"] > 0).sum())) for m in pool]
        frac[name] = {"min": min(per), "max": max(per), "mean": float(np.mean(per))}
    return {"particle_diameter_vox": [min(est), max(est)] if est else None,
            "class_fraction_of_envelope": frac,
            "particle_diameter_vox_per_member": [round(e, 2) for e in est],
            "particle_diameter_method": "crackseg.scale.particle_diameter_vox on rendered "
                                        "training volumes (mid-range imaging)",
            "voxel_size_um_range": [min(vs), max(vs)], "appearance_ranges": ranges.to_dict()}
