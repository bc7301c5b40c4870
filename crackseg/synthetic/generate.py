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
from typing import NamedTuple

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
                       crack_width_vox=(1.0, 3.0), asphericity: float = 0.15,
                       roughness: float = 0.08, geometry: str = "spheres", matbox_path=None,
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
    asphericity, roughness : float
        Particle shape: ellipsoid axis deviations, lobe amplitude (0.25+: crevices).
    geometry : {"spheres", "matbox"}
        ``"spheres"``: packed perturbed spheres (above); ``"matbox"``: particle
        shapes and packing from a random crop of the real NMC labels
        (:mod:`crackseg.synthetic.matbox`; ``shape`` at most 251 x 301 x 301),
        the sphere packing arguments then being unused.
    matbox_path : path-like, optional
        The real label file for ``geometry="matbox"``.
    imaging, progress : bool
        Render the grey-value image (``False``: ``image=None``, fast); a progress bar.

    Returns
    -------
    Phantom
        ``truth`` has one row per particle: ``label, volume_vox, volume_um3,
        equivalent_diameter_um, centroid_z, centroid_y, centroid_x`` (voxels),
        ``depth_um, crack_fraction, pore_fraction, void_fraction,
        target_crack_fraction, touches_border, fragmented, hollow,
        internal_only_cracks, crack_mode, latent_field, depth_fraction``.
    """
    shape, vs, modes_p = _checked_inputs(shape, voxel_size_um, dtype, crack_modes)
    rngs = _random_streams(seed)
    packing_law = dict(solid_fraction=solid_fraction, diameter_median_um=diameter_median_um,
                       diameter_sigma=diameter_sigma, diameter_range_um=diameter_range_um,
                       asphericity=asphericity, roughness=roughness)
    instances, packed = _packed_instances(shape, vs, rngs["packing"], geometry, matbox_path,
                                          packing_law)
    sites = _particle_sites(instances, packed, vs, rngs["field"], correlation_length_um)
    law = dict(logit_mean=damage_logit_mean, depth_gradient=depth_gradient,
               hotspot_sd=hotspot_sd, particle_sd=particle_sd,
               max_crack_fraction=max_crack_fraction)
    growth = dict(crack_modes=modes_p, hollow_probability=hollow_probability,
                  hollow_radius_range=hollow_radius_range,
                  pore_density_per_um3=pore_density_per_um3, crack_width_vox=crack_width_vox)
    labels, drawn = _damaged_labels(instances, packed, sites, vs, rngs["particles"], law,
                                    growth, progress=progress)
    truth = _truth_with_damage(labels, instances, vs, drawn, sites)
    look = dict(snr=snr, blur_sigma=blur_sigma, phase_contrast=phase_contrast,
                ring_amplitude=ring_amplitude, drift=drift)
    image, binder_realised = _rendered_image(labels, instances, vs, rngs, dtype, binder_fraction,
                                             look) if imaging else (None, None)
    params = _params_record(seed=seed, shape=shape, vs=vs, dtype=dtype, imaging=imaging,
                            look=look, binder=(binder_fraction, binder_realised),
                            packing_info={**packed.info, **_packing_realised(instances, sites)},
                            law=law, correlation_length_um=correlation_length_um,
                            growth=growth, truth=truth)
    return Phantom(image=image, labels=labels, instances=instances, truth=truth,
                   params=params, voxel_size_um=vs)


class _Packing(NamedTuple):
    """Particle shapes of a packing: sphere parameters (``None`` for matbox) and sizes (µm)."""

    parts: dict | None
    centre_um: np.ndarray
    radius_um: np.ndarray
    info: dict


class _Sites(NamedTuple):
    """Where each particle sits: present in the volume, centroid (µm), depth fraction, latent field."""

    present: np.ndarray
    centroid_um: np.ndarray
    depth_fraction: np.ndarray
    latent: np.ndarray


def _voxel_size(voxel_size_um) -> tuple[float, float, float]:
    vs = np.broadcast_to(np.asarray(voxel_size_um, dtype=float), (3,))
    if not np.all(np.isfinite(vs)) or np.any(vs <= 0):
        raise InputError(f"voxel size must be positive, got {voxel_size_um}")
    return tuple(float(v) for v in vs)


def _checked_inputs(shape, voxel_size_um, dtype, crack_modes):
    """Validated ``(shape, voxel size (z, y, x) µm, crack-mode probabilities summing to 1)``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise InputError(f"phantom shape must be 3 sizes of at least 4 voxels, got {shape}")
    vs = _voxel_size(voxel_size_um)
    if dtype not in imaging_model.DTYPES:
        raise InputError(f"image dtype must be one of {', '.join(imaging_model.DTYPES)}, not {dtype!r}")
    modes_p = np.asarray(crack_modes, dtype=float)
    if modes_p.shape != (3,) or np.any(modes_p < 0) or modes_p.sum() <= 0:
        raise InputError(f"crack_modes must be 3 non-negative probabilities, got {crack_modes}")
    return shape, vs, modes_p / modes_p.sum()


def _random_streams(seed: int) -> dict[str, np.random.Generator]:
    """One independent generator per random step (``_STREAMS``), all from ``seed``."""
    ss = np.random.SeedSequence(seed)
    return dict(zip(_STREAMS, (np.random.default_rng(s) for s in ss.spawn(len(_STREAMS)))))


def _packed_instances(shape, vs, rng, geometry, matbox_path, packing_law):
    """Particle instance volume (uint32, shape ``shape``, 0 = matrix) and its :class:`_Packing`."""
    if geometry == "spheres":
        parts = packing.sample_particles(shape, vs, rng, **packing_law)
        instances = packing.rasterise_particles(shape, vs, parts)
        info = {"geometry": "spheres",
                "solid_fraction_target": packing_law["solid_fraction"],
                "diameter_law": "lognormal, clipped, placed largest first",
                "diameter_median_um": packing_law["diameter_median_um"],
                "diameter_sigma": packing_law["diameter_sigma"],
                "diameter_range_um": list(packing_law["diameter_range_um"]),
                "asphericity": packing_law["asphericity"], "roughness": packing_law["roughness"]}
        return instances, _Packing(parts, parts["centre_um"], parts["radius_um"], info)
    if geometry == "matbox":
        from crackseg.synthetic.matbox import matbox_instances

        instances, found = matbox_instances(shape, rng, path=matbox_path)
        info = {"geometry": "matbox", "source": found["source"], "crop_offset": found["offset"],
                "separation": "distance-transform watershed"}
        return instances, _Packing(None, found["centre_vox"] * np.asarray(vs),
                                   found["depth_vox"] * float(np.min(vs)), info)
    raise InputError(f"geometry must be 'spheres' or 'matbox', not {geometry!r}")


def _particle_sites(instances, packed: _Packing, vs, rng, correlation_length_um: float) -> _Sites:
    """Centroids (µm), depth fractions and latent hot-spot field of the packed particles."""
    from scipy import ndimage as ndi

    n = len(packed.radius_um)
    ids = np.arange(1, n + 1)
    present = np.bincount(instances.ravel(), minlength=n + 1)[1:] > 0
    cent_vox = np.full((n, 3), np.nan)
    if present.any():
        cent_vox[present] = np.array(ndi.center_of_mass(
            np.ones(instances.shape, np.uint8), instances, ids[present])).reshape(-1, 3)
    cent_um = cent_vox * np.asarray(vs)
    depth_fraction = np.clip(cent_um[:, 0] / (instances.shape[0] * vs[0]), 0.0, 1.0)
    field = damage.latent_field(rng, correlation_length_um)
    latent = np.where(present, field(np.nan_to_num(cent_um)), np.nan)
    return _Sites(present, cent_um, depth_fraction, latent)


def _normalised_radius_in_box(instances, packed: _Packing, k: int, box, vs) -> np.ndarray:
    """Normalised radius (0 centre, 1 surface) of particle ``k + 1`` over its bounding ``box``."""
    if packed.parts is not None:
        return packing.normalised_radius(
            packed.parts, k, packing.box_offsets_um(box, packed.centre_um[k], vs))
    from scipy import ndimage as ndi

    inside = ndi.distance_transform_edt(instances[box] == k + 1, sampling=vs)
    return 1.0 - inside / max(float(inside.max()), 1e-9)


def _damaged_labels(instances, packed: _Packing, sites: _Sites, vs, rng, law: dict,
                    growth: dict, *, progress: bool = False):
    """nmc4 labels with every particle cracked, and what was drawn for each particle.

    Returns ``(labels, drawn)``: labels uint8 of ``instances.shape``; ``drawn`` holds arrays
    of one entry per particle: ``target`` crack fraction, crack ``mode`` and ``hollow``.
    """
    from scipy import ndimage as ndi

    n = len(packed.radius_um)
    labels = (instances > 0).astype(np.uint8)
    # one independent stream per particle so its damage does not depend on the others
    particle_seeds = rng.integers(0, 2**63 - 1, n)
    target = np.full(n, np.nan)
    mode = np.full(n, "", dtype=object)
    hollow = np.zeros(n, bool)
    objects = ndi.find_objects(instances, max_label=n)
    iterator = range(n)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="particles", unit="particle", leave=False)
    for k in (k for k in iterator if sites.present[k]):
        prng = np.random.default_rng(particle_seeds[k])
        target[k] = float(damage.target_crack_fraction(
            sites.depth_fraction[k], sites.latent[k], prng.standard_normal(), **law))
        mode[k] = damage.CRACK_MODES[prng.choice(3, p=growth["crack_modes"])]
        hollow[k] = prng.uniform() < growth["hollow_probability"]
        box = objects[k]
        s_box = _normalised_radius_in_box(instances, packed, k, box, vs)
        hollow_radius = prng.uniform(*growth["hollow_radius_range"]) if hollow[k] else 0.0
        damage.damage_particle(
            labels[box], instances[box], k + 1, s_box, box, vs,
            centre_um=packed.centre_um[k], radius_um=packed.radius_um[k], target=target[k],
            rng=prng, mode=mode[k], hollow_radius=hollow_radius,
            pore_density_per_um3=growth["pore_density_per_um3"],
            width_vox=tuple(growth["crack_width_vox"]))
    return labels, {"target": target, "mode": mode, "hollow": hollow}


def _truth_with_damage(labels, instances, vs, drawn: dict, sites: _Sites) -> pd.DataFrame:
    """The per-particle truth table with the drawn damage beside the measured one."""
    truth = truth_table(labels, instances, vs)
    k = truth["label"].to_numpy() - 1
    truth.insert(truth.columns.get_loc("touches_border"), "target_crack_fraction",
                 drawn["target"][k])
    truth.insert(truth.columns.get_loc("fragmented") + 1, "hollow", drawn["hollow"][k])
    truth["crack_mode"] = drawn["mode"][k].astype(str)
    truth["latent_field"] = sites.latent[k]
    truth["depth_fraction"] = sites.depth_fraction[k]
    return truth


def _rendered_image(labels, instances, vs, rngs, dtype, binder_fraction, look: dict):
    """The grey-value image and the realised binder share of the matrix."""
    binder = imaging_model.binder_mask(instances > 0, rngs["binder"],
                                       binder_fraction=binder_fraction, voxel_size_um=vs)
    binder_realised = float(binder.sum() / max((instances == 0).sum(), 1))
    image = imaging_model.render_image(labels, binder, rngs["imaging"], dtype=dtype, **look)
    return image, binder_realised


def _packing_realised(instances, sites: _Sites) -> dict:
    return {"solid_fraction_realised": float((instances > 0).mean()),
            "n_particles": int(sites.present.sum())}


def _params_record(*, seed, shape, vs, dtype, imaging, look, binder, packing_info, law,
                   correlation_length_um, growth, truth) -> dict:
    """The JSON-serialisable record of generating parameters and superpopulation values."""
    return {
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
            "snr": look["snr"], "blur_sigma_vox": look["blur_sigma"],
            "phase_contrast": look["phase_contrast"], "ring_amplitude": look["ring_amplitude"],
            "drift": look["drift"], "levels": imaging_model.LEVELS,
            "output_range": list(imaging_model.OUTPUT_RANGE),
            "binder_fraction_of_matrix": binder[0],
            "binder_fraction_realised": binder[1],
        },
        "packing": packing_info,
        "damage_model": (
            "t = min(expit(logit_mean + depth_gradient*(d - 0.5) + hotspot_sd*Z(x) "
            "+ particle_sd*eps), max_crack_fraction); d = centroid depth / extent of axis 0 "
            "~ U(0,1); Z = unit-variance latent field, covariance exp(-h^2/(2 l^2)), "
            "l = correlation_length_um, random Fourier features, at the centroid; eps ~ N(0,1) "
            "per particle; crack voxels = stochastic rounding of t * envelope voxels"),
        "damage_law": law,
        "correlation_length_um": correlation_length_um,
        "correlation_kernel": "squared exponential exp(-h^2/(2 l^2))",
        "depth_gradient_logit": law["depth_gradient"],
        "hotspots": {"field": "random Fourier features", "n_features": damage.N_FOURIER,
                     "hotspot_sd_logit": law["hotspot_sd"],
                     "correlation_length_um": correlation_length_um},
        "true_mean_crack_fraction": damage.true_mean_crack_fraction(**law),
        "true_median_crack_fraction": damage.true_crack_fraction_quantile(0.5, **law),
        "true_quantiles_crack_fraction": {
            str(q): damage.true_crack_fraction_quantile(q, **law) for q in (0.1, 0.25, 0.75, 0.9)},
        "true_fraction_above_0.1": float(1.0 - damage.true_crack_fraction_cdf(0.1, **law)),
        "true_mean_crack_fraction_method": "Gauss-Legendre (depth) x Gauss-Hermite (normal) quadrature of the damage law",
        "crack_modes": dict(zip(damage.CRACK_MODES, growth["crack_modes"].tolist())),
        "hollow_probability": growth["hollow_probability"],
        "hollow_radius_range": list(growth["hollow_radius_range"]),
        "pore_density_per_um3": growth["pore_density_per_um3"],
        "crack_width_vox": [float(w) for w in growth["crack_width_vox"]],
        "labels": {"matrix": 0, "particle": 1, "crack": 2, "pore": 3},
        "realised": _realised_damage(truth),
    }


def _realised_damage(truth: pd.DataFrame) -> dict:
    if not len(truth):
        return {"mean_crack_fraction": None, "mean_crack_minus_target": None}
    return {"mean_crack_fraction": float(truth["crack_fraction"].mean()),
            "mean_crack_minus_target": float(
                (truth["crack_fraction"] - truth["target_crack_fraction"]).mean())}
