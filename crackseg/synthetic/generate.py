"""Labelled electrode phantoms with a known, spatially heterogeneous damage law.

See :mod:`crackseg.synthetic.damage` for the damage law and
:mod:`crackseg.synthetic.imaging` for the imaging model.

Examples
--------
>>> from crackseg.synthetic import generate_electrode
>>> ph = generate_electrode((32, 32, 32), seed=0, imaging=False)
>>> ph.labels.shape, sorted(set(ph.labels.ravel().tolist())) <= [0, 1, 2, 3]
((32, 32, 32), True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crackseg._version import __version__
from crackseg.errors import InputError
from crackseg.synthetic import damage, packing
from crackseg.synthetic import imaging as imaging_model
from crackseg.synthetic.truth import truth_table

_STREAMS = ("packing", "field", "particles", "binder", "imaging")


@dataclass(frozen=True)
class Phantom:
    """A synthetic electrode volume and everything known about it.

    Attributes
    ----------
    image : ndarray, shape (Z, Y, X), or None
        Grey values (``None`` when generated with ``imaging=False``).
    labels : ndarray of uint8, shape (Z, Y, X)
        nmc4 labels: 0 matrix, 1 particle, 2 crack, 3 pore.
    instances : ndarray of uint32, shape (Z, Y, X)
        0 = matrix, ``k`` = particle ``k`` (its whole envelope: solid, its
        own cracks and pores).
    truth : pandas.DataFrame
        One row per particle (see :func:`generate_electrode`).
    params : dict
        Generating parameters and superpopulation values (JSON-serialisable).
    voxel_size_um : tuple of float
        Voxel size (z, y, x) in micrometres.
    """

    image: np.ndarray | None
    labels: np.ndarray
    instances: np.ndarray
    truth: pd.DataFrame
    params: dict
    voxel_size_um: tuple[float, float, float]


def _voxel_size(voxel_size_um) -> tuple[float, float, float]:
    vs = np.broadcast_to(np.asarray(voxel_size_um, dtype=float), (3,))
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel size must be positive, got {voxel_size_um}")
    return tuple(float(v) for v in vs)


def generate_electrode(shape=(128, 128, 128), *, seed: int = 0, voxel_size_um=0.5,
                       dtype: str = "uint16", snr: float = 8.0, blur_sigma: float = 1.2,
                       phase_contrast: float = 0.35, ring_amplitude: float = 0.04,
                       drift: float = 0.1, binder_fraction: float = 0.6,
                       solid_fraction: float = 0.55, diameter_median_um: float = 8.0,
                       diameter_sigma: float = 0.4, diameter_range_um=(3.0, 22.0),
                       correlation_length_um: float = 20.0, damage_logit_mean: float = -3.3,
                       depth_gradient: float = 1.6, hotspot_sd: float = 1.0,
                       particle_sd: float = 0.5, max_crack_fraction: float = 0.3,
                       crack_modes=(0.55, 0.25, 0.20), hollow_probability: float = 0.15,
                       hollow_radius_range=(0.15, 0.35), pore_density_per_um3: float = 0.002,
                       crack_width_vox=(1.0, 3.0),
                       geometry: str = "spheres", matbox_path=None,
                       imaging: bool = True, progress: bool = False) -> Phantom:
    """Generate a labelled electrode phantom.

    Parameters
    ----------
    shape : tuple of 3 int
        Volume shape (Z, Y, X); axis 0 is the electrode thickness (depth).
    seed : int
        Seed of every random step; the same seed gives identical output.
    voxel_size_um : float or tuple of 3 float
        Voxel size (z, y, x) in micrometres.
    dtype : {"uint16", "uint8", "float32"}
        Image type.
    snr, blur_sigma, phase_contrast, ring_amplitude, drift : float
        Imaging model (:func:`crackseg.synthetic.imaging.render_image`).
    binder_fraction : float
        Share of the matrix that is carbon-binder (textured mid-grey).
    solid_fraction : float
        Target volume fraction of particle envelopes.
    diameter_median_um, diameter_sigma, diameter_range_um
        Log-normal particle diameter law (µm).
    correlation_length_um : float
        Correlation length of the latent hot-spot field (µm).
    damage_logit_mean, depth_gradient, hotspot_sd, particle_sd, max_crack_fraction : float
        Damage law (:mod:`crackseg.synthetic.damage`): logit-scale mean,
        change across the full depth, hot-spot field and particle noise
        standard deviations, and the cap on the crack fraction.
    crack_modes : tuple of 3 float
        Probabilities of the ``radial``, ``surface`` and ``through`` growth modes.
    hollow_probability : float
        Probability that a particle has a hollow core.
    hollow_radius_range : (float, float)
        Core radius relative to the particle radius.
    pore_density_per_um3 : float
        Expected number of small internal pores per µm³ of particle.
    crack_width_vox : (float, float)
        Range of crack-sheet widths in voxels (each sheet draws one).
    geometry : {"spheres", "matbox"}
        ``"spheres"``: packed perturbed spheres (above); ``"matbox"``: particle
        shapes and packing from a random crop of the real NMC labels
        (:mod:`crackseg.synthetic.matbox`; ``shape`` at most 251 x 301 x 301),
        the sphere packing arguments then being unused.
    matbox_path : path-like, optional
        The real label file for ``geometry="matbox"``.
    imaging : bool
        Render the grey-value image; ``False`` leaves ``image=None`` (fast).
    progress : bool
        Show a progress bar on stderr.

    Returns
    -------
    Phantom
        ``truth`` has one row per particle: ``label, volume_vox, volume_um3,
        equivalent_diameter_um, centroid_z, centroid_y, centroid_x`` (voxels),
        ``depth_um, crack_fraction, pore_fraction, void_fraction,
        target_crack_fraction, touches_border, fragmented, hollow,
        internal_only_cracks, crack_mode, latent_field, depth_fraction``.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise InputError(f"phantom shape must be 3 sizes of at least 4 voxels, got {shape}")
    vs = _voxel_size(voxel_size_um)
    if dtype not in imaging_model.DTYPES:
        raise InputError(f"image dtype must be one of {', '.join(imaging_model.DTYPES)}, not {dtype!r}")
    modes_p = np.asarray(crack_modes, dtype=float)
    if modes_p.shape != (3,) or np.any(modes_p < 0) or modes_p.sum() <= 0:
        raise InputError(f"crack_modes must be 3 non-negative probabilities, got {crack_modes}")
    modes_p = modes_p / modes_p.sum()

    ss = np.random.SeedSequence(seed)
    rngs = dict(zip(_STREAMS, (np.random.default_rng(s) for s in ss.spawn(len(_STREAMS)))))

    from scipy import ndimage as ndi

    if geometry == "spheres":
        parts = packing.sample_particles(
            shape, vs, rngs["packing"], solid_fraction=solid_fraction,
            diameter_median_um=diameter_median_um, diameter_sigma=diameter_sigma,
            diameter_range_um=diameter_range_um)
        instances = packing.rasterise_particles(shape, vs, parts)
        centre_um, radius_um = parts["centre_um"], parts["radius_um"]
        geometry_info = {
            "geometry": "spheres",
            "solid_fraction_target": solid_fraction,
            "diameter_law": "lognormal, clipped, placed largest first",
            "diameter_median_um": diameter_median_um, "diameter_sigma": diameter_sigma,
            "diameter_range_um": list(diameter_range_um),
        }
    elif geometry == "matbox":
        from crackseg.synthetic.matbox import matbox_instances

        instances, info = matbox_instances(shape, rngs["packing"], path=matbox_path)
        centre_um = info["centre_vox"] * np.asarray(vs)
        radius_um = info["depth_vox"] * float(np.min(vs))
        geometry_info = {"geometry": "matbox", "source": info["source"],
                         "crop_offset": info["offset"],
                         "separation": "distance-transform watershed"}
    else:
        raise InputError(f"geometry must be 'spheres' or 'matbox', not {geometry!r}")
    labels = (instances > 0).astype(np.uint8)

    n = len(radius_um)
    ids = np.arange(1, n + 1)
    counts = np.bincount(instances.ravel(), minlength=n + 1)[1:]
    present = counts > 0
    cent_vox = np.full((n, 3), np.nan)
    if present.any():
        cent_vox[present] = np.array(ndi.center_of_mass(
            np.ones(shape, np.uint8), instances, ids[present])).reshape(-1, 3)
    cent_um = cent_vox * np.asarray(vs)
    depth_fraction = np.clip(cent_um[:, 0] / (shape[0] * vs[0]), 0.0, 1.0)
    field = damage.latent_field(rngs["field"], correlation_length_um)
    latent = np.where(present, field(np.nan_to_num(cent_um)), np.nan)
    law = dict(logit_mean=damage_logit_mean, depth_gradient=depth_gradient,
               hotspot_sd=hotspot_sd, particle_sd=particle_sd,
               max_crack_fraction=max_crack_fraction)

    # one independent stream per particle so its damage does not depend on the others
    particle_seeds = rngs["particles"].integers(0, 2**63 - 1, n)
    target = np.full(n, np.nan)
    mode = np.full(n, "", dtype=object)
    hollow = np.zeros(n, bool)
    objects = ndi.find_objects(instances, max_label=n)
    iterator = range(n)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="particles", unit="particle", leave=False)
    for k in iterator:
        if not present[k]:
            continue
        prng = np.random.default_rng(particle_seeds[k])
        target[k] = float(damage.target_crack_fraction(depth_fraction[k], latent[k],
                                                       prng.standard_normal(), **law))
        mode[k] = damage.CRACK_MODES[prng.choice(3, p=modes_p)]
        hollow[k] = prng.uniform() < hollow_probability
        box = objects[k]
        if geometry == "spheres":
            s_box = packing.normalised_radius(
                parts, k, packing.box_offsets_um(box, centre_um[k], vs))
        else:
            inside = ndi.distance_transform_edt(instances[box] == k + 1, sampling=vs)
            s_box = 1.0 - inside / max(float(inside.max()), 1e-9)
        damage.damage_particle(
            labels[box], instances[box], k + 1, s_box, box, vs,
            centre_um=centre_um[k], radius_um=radius_um[k],
            target=target[k], rng=prng,
            mode=mode[k], hollow_radius=prng.uniform(*hollow_radius_range) if hollow[k] else 0.0,
            pore_density_per_um3=pore_density_per_um3, width_vox=tuple(crack_width_vox))

    truth = truth_table(labels, instances, vs)
    k = truth["label"].to_numpy() - 1
    truth.insert(truth.columns.get_loc("touches_border"), "target_crack_fraction", target[k])
    truth.insert(truth.columns.get_loc("fragmented") + 1, "hollow", hollow[k])
    truth["crack_mode"] = mode[k].astype(str)
    truth["latent_field"] = latent[k]
    truth["depth_fraction"] = depth_fraction[k]

    image = None
    binder_fraction_realised = None
    if imaging:
        binder = imaging_model.binder_mask(instances > 0, rngs["binder"],
                                     binder_fraction=binder_fraction, voxel_size_um=vs)
        binder_fraction_realised = float(binder.sum() / max((instances == 0).sum(), 1))
        image = imaging_model.render_image(labels, binder, rngs["imaging"], dtype=dtype, snr=snr,
                                     blur_sigma=blur_sigma, phase_contrast=phase_contrast,
                                     ring_amplitude=ring_amplitude, drift=drift)

    params = {
        "generator": "crackseg.synthetic.generate_electrode",
        "crackseg_version": __version__,
        "seed": int(seed),
        "shape": list(shape),
        "voxel_size_um": list(vs),
        "axes": "ZYX",
        "depth_axis": 0,
        "dtype": dtype,
        "imaging": bool(imaging),
        "imaging_model": {
            "snr": snr, "blur_sigma_vox": blur_sigma, "phase_contrast": phase_contrast,
            "ring_amplitude": ring_amplitude, "drift": drift, "levels": imaging_model.LEVELS,
            "output_range": list(imaging_model.OUTPUT_RANGE),
            "binder_fraction_of_matrix": binder_fraction,
            "binder_fraction_realised": binder_fraction_realised,
        },
        "packing": {
            **geometry_info,
            "solid_fraction_realised": float((instances > 0).mean()),
            "n_particles": int(present.sum()),
        },
        "damage_model": (
            "t = min(expit(logit_mean + depth_gradient*(d - 0.5) + hotspot_sd*Z(x) "
            "+ particle_sd*eps), max_crack_fraction); d = centroid depth / extent of axis 0 "
            "~ U(0,1); Z = unit-variance latent field, covariance exp(-h^2/(2 l^2)), "
            "l = correlation_length_um, random Fourier features, at the centroid; eps ~ N(0,1) "
            "per particle; crack voxels = stochastic rounding of t * envelope voxels"),
        "damage_law": law,
        "correlation_length_um": correlation_length_um,
        "correlation_kernel": "squared exponential exp(-h^2/(2 l^2))",
        "depth_gradient_logit": depth_gradient,
        "hotspots": {"field": "random Fourier features", "n_features": damage.N_FOURIER,
                     "hotspot_sd_logit": hotspot_sd, "correlation_length_um": correlation_length_um},
        "true_mean_crack_fraction": damage.true_mean_crack_fraction(**law),
        "true_median_crack_fraction": damage.true_crack_fraction_quantile(0.5, **law),
        "true_quantiles_crack_fraction": {
            str(q): damage.true_crack_fraction_quantile(q, **law) for q in (0.1, 0.25, 0.75, 0.9)},
        "true_fraction_above_0.1": float(1.0 - damage.true_crack_fraction_cdf(0.1, **law)),
        "true_mean_crack_fraction_method": "Gauss-Legendre (depth) x Gauss-Hermite (normal) quadrature of the damage law",
        "crack_modes": dict(zip(damage.CRACK_MODES, modes_p.tolist())),
        "hollow_probability": hollow_probability,
        "hollow_radius_range": list(hollow_radius_range),
        "pore_density_per_um3": pore_density_per_um3,
        "crack_width_vox": [float(w) for w in crack_width_vox],
        "labels": {"matrix": 0, "particle": 1, "crack": 2, "pore": 3},
        "realised": {
            "mean_crack_fraction": float(truth["crack_fraction"].mean()) if len(truth) else None,
            "mean_crack_minus_target": float((truth["crack_fraction"] - truth["target_crack_fraction"]).mean()) if len(truth) else None,
        },
    }
    return Phantom(image=image, labels=labels, instances=instances, truth=truth,
                   params=params, voxel_size_um=vs)
