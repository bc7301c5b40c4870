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


def heal_particles(labels, instances, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Labels with the cracks and voids of a random share of particles filled in.

    Real electrodes hold many intact particles beside cracked ones; healed
    particles teach a network that dark necks and binder texture beside an
    intact particle are not damage.

    Parameters
    ----------
    labels : ndarray of uint8, shape (Z, Y, X)
        nmc4 labels.
    instances : ndarray of int, shape (Z, Y, X)
        Particle envelopes (0 = matrix).
    fraction : float
        Share of particles (0 to 1) made intact.
    rng : numpy.random.Generator
        Picks the particles.

    Returns
    -------
    ndarray of uint8
        A copy of ``labels`` in which the crack and pore voxels of the chosen
        particles are particle (1).

    Examples
    --------
    >>> lab = np.array([[[1, 2, 3, 0]]], np.uint8); inst = np.array([[[1, 1, 1, 0]]])
    >>> heal_particles(lab, inst, 1.0, np.random.default_rng(0)).tolist()
    [[[1, 1, 1, 0]]]
    """
    ids = np.unique(instances[instances > 0])
    chosen = ids[rng.random(len(ids)) < float(fraction)]
    out = np.array(labels, np.uint8, copy=True)
    out[np.isin(instances, chosen) & (out >= 2)] = 1
    return out


def roughen_surfaces(labels, instances, amplitude_vox: float, rng: np.random.Generator,
                     *, sigma_vox=(0.8, 2.0)):
    """Labels and instances with voxel-scale noise on every particle surface.

    The envelope boundary moves by ``amplitude_vox`` times a smooth unit noise
    field (correlation ``sigma_vox`` voxels, drawn from the range; 95 % of
    moves are within ``2 * amplitude_vox`` voxels): voxels of
    the matrix within reach become particle solid of the nearest particle,
    envelope voxels pushed out become matrix. Real particles segmented from
    scans carry such dimples and bumps; smooth phantom surfaces do not, and a
    network trained on them calls the dark notches of rough surfaces cracks.

    Parameters
    ----------
    labels : ndarray of uint8, shape (Z, Y, X)
        nmc4 labels.
    instances : ndarray of int, shape (Z, Y, X)
        Particle envelopes (0 = matrix).
    amplitude_vox : float
        Noise amplitude in voxels (0: unchanged).
    rng : numpy.random.Generator
        Source of the noise field and its correlation length.
    sigma_vox : (float, float)
        Range of the noise correlation length in voxels.

    Returns
    -------
    (ndarray of uint8, ndarray)
        New labels and instances (same dtypes as given).

    Examples
    --------
    >>> lab = np.zeros((24, 24, 24), np.uint8); lab[6:18, 6:18, 6:18] = 1
    >>> lab2, inst2 = roughen_surfaces(lab, lab.astype(np.uint16), 1.5, np.random.default_rng(0))
    >>> bool((lab2 != lab).any()), bool(((lab2 == 1) == (inst2 == 1)).all())
    (True, True)
    """
    from scipy import ndimage as ndi

    from crackseg.synthetic.randomize import noise_field

    if amplitude_vox <= 0 or not (instances > 0).any():
        return labels, instances
    env = instances > 0
    out_dist, idx = ndi.distance_transform_edt(~env, return_indices=True)
    signed = out_dist - ndi.distance_transform_edt(env)
    sigma = float(rng.uniform(*sigma_vox))
    noise = noise_field(rng, labels.shape, sigma) * float(amplitude_vox)
    new_env = signed < noise
    grown, shrunk = new_env & ~env, env & ~new_env
    lab = np.array(labels, np.uint8, copy=True)
    inst = np.array(instances, copy=True)
    inst[grown] = instances[tuple(i[grown] for i in idx)]
    lab[grown] = 1
    lab[shrunk], inst[shrunk] = 0, 0
    return lab, inst


def label_pool(n: int, shape, *, seed: int = 0, voxel_size_um=(0.16, 0.6),
               binder_fraction=(0.2, 0.8), intact_fraction=(0.0, 0.0),
               intact_volume_probability: float = 0.0,
               asphericity=(0.15, 0.15), roughness=(0.08, 0.08),
               surface_noise_vox=(0.0, 0.0), progress: bool = False) -> list[dict]:
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
    intact_fraction : (float, float)
        Range of the share of particles left without cracks and voids
        (:func:`heal_particles`); (0, 0) damages every particle.
    intact_volume_probability : float
        Chance that a member is wholly crack- and void-free.
    asphericity, roughness : (float, float)
        Uniform ranges of the particle shape of a member
        (:func:`crackseg.synthetic.packing.sample_particles`); a wide
        ``roughness`` range adds lobed particles whose crevices are matrix.
        Drawn from a stream of their own, so the defaults leave every other
        draw of a member unchanged.
    surface_noise_vox : (float, float)
        Uniform range of the amplitude (voxels) of voxel-scale surface noise
        (:func:`roughen_surfaces`): dimples and bumps of 1-3 voxels, as on
        particles segmented from real scans. (0, 0) leaves surfaces smooth;
        drawn from its own stream like the shape.
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
        shape_rng = np.random.default_rng([int(seed), i, 1])
        kw["asphericity"] = float(shape_rng.uniform(*asphericity))
        kw["roughness"] = float(shape_rng.uniform(*roughness))
        ph = generate_electrode(tuple(int(s) for s in shape), seed=int(seed) + i,
                                voxel_size_um=vs, imaging=False, **kw)
        labels, inst = ph.labels, ph.instances
        if surface_noise_vox[1] > 0:
            noise_rng = np.random.default_rng([int(seed), i, 2])
            kw["surface_noise_vox"] = float(noise_rng.uniform(*surface_noise_vox))
            labels, inst = roughen_surfaces(labels, inst, kw["surface_noise_vox"], noise_rng)
        binder = binder_mask(inst > 0, rng,
                             binder_fraction=float(rng.uniform(*binder_fraction)),
                             voxel_size_um=(vs, vs, vs))
        d = ph.truth["equivalent_diameter_um"].to_numpy() / vs if len(ph.truth) else np.array([])
        healed = 1.0 if rng.random() < intact_volume_probability else rng.uniform(*intact_fraction)
        labels = heal_particles(labels, inst, healed, rng) if healed > 0 else labels
        kw["intact_fraction"] = float(healed)
        inst = inst.astype(np.uint16) if inst.max(initial=0) < 65535 else inst
        out.append({"labels": np.asarray(labels, np.uint8), "binder": binder,
                    "instances": inst,
                    "voxel_size_um": vs,
                    "diameter_vox": float(np.median(d)) if len(d) else float("nan"),
                    "settings": {k: (list(v) if isinstance(v, tuple) else v)
                                 for k, v in kw.items()}})
    return out
