"""A pool of dense phantom label maps at random scales, for domain-randomised training.

Each member is a phantom electrode (:func:`crackseg.synthetic.generate_electrode`,
no rendering) with its own voxel size, so that particles span a range of
diameters in voxels, and its own damage morphology (hollow cores and central
voids, radial, surface and through cracks of 1 to several voxels, small pores),
plus a carbon-binder mask. Appearance is added per training item by
:mod:`crackseg.synthetic.randomize`.

Examples
--------
>>> from crackseg.synthetic.pool import label_pool
>>> pool = label_pool(1, (16, 32, 32), seed=0, voxel_size_um=(0.5, 0.5))
>>> pool[0]["labels"].shape, pool[0]["binder"].dtype
((16, 32, 32), dtype('bool'))
"""

from __future__ import annotations

import numpy as np

from crackseg.synthetic.generate import generate_electrode
from crackseg.synthetic.imaging import binder_mask


def _damage_settings(rng: np.random.Generator, voxel_um: float) -> dict:
    """Random damage morphology of one pool member (widths in voxels follow the voxel size)."""
    wide = max(2.5, 0.6 / voxel_um)
    return {
        "damage_logit_mean": float(rng.uniform(-3.6, -1.4)),
        "hollow_probability": float(rng.uniform(0.1, 0.5)),
        "hollow_radius_range": (0.08, float(rng.uniform(0.2, 0.4))),
        "crack_width_vox": (1.0, float(wide)),
        "pore_density_per_um3": float(rng.uniform(0.0005, 0.006)),
        "solid_fraction": float(rng.uniform(0.4, 0.7)),
        "diameter_median_um": float(rng.uniform(5.0, 12.0)),
        "correlation_length_um": float(rng.uniform(5.0, 30.0)),
    }


def label_pool(n: int, shape, *, seed: int = 0, voxel_size_um=(0.16, 0.6),
               binder_fraction=(0.2, 0.8), progress: bool = False) -> list[dict]:
    """Phantom label maps with random voxel size and damage morphology.

    Parameters
    ----------
    n : int
        Members; member ``i`` is generated from seed ``seed + i``.
    shape : tuple of 3 int
        Volume shape (Z, Y, X) of each member.
    seed : int
        First seed.
    voxel_size_um : (float, float)
        Log-uniform range of the (isotropic) voxel size in µm; with particle
        diameters of 3-22 µm (median 5-12 µm) this sets their size in voxels.
    binder_fraction : (float, float)
        Range of the carbon-binder share of the matrix.
    progress : bool
        Progress bar on stderr.

    Returns
    -------
    list of dict
        ``labels`` (uint8, nmc4), ``binder`` (bool), ``instances`` (particle
        envelopes, uint16 or uint32), ``voxel_size_um``,
        ``diameter_vox`` (median equivalent diameter of its particles, voxels)
        and ``settings``.
    """
    it = range(int(n))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="label pool", unit="volume")
    out = []
    lo, hi = np.log(voxel_size_um[0]), np.log(voxel_size_um[1])
    for i in it:
        rng = np.random.default_rng([int(seed), i])
        vs = float(np.exp(rng.uniform(lo, hi)))
        kw = _damage_settings(rng, vs)
        ph = generate_electrode(tuple(int(s) for s in shape), seed=int(seed) + i,
                                voxel_size_um=vs, imaging=False, **kw)
        binder = binder_mask(ph.instances > 0, rng,
                             binder_fraction=float(rng.uniform(*binder_fraction)),
                             voxel_size_um=(vs, vs, vs))
        d = ph.truth["equivalent_diameter_um"].to_numpy() / vs if len(ph.truth) else np.array([])
        inst = ph.instances
        inst = inst.astype(np.uint16) if inst.max(initial=0) < 65535 else inst
        out.append({"labels": np.asarray(ph.labels, np.uint8), "binder": binder,
                    "instances": inst,
                    "voxel_size_um": vs,
                    "diameter_vox": float(np.median(d)) if len(d) else float("nan"),
                    "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in kw.items()}})
    return out
