"""Domain-randomised appearance: grey images of label maps under random imaging.

A network trained on one rendering of phantoms learns that rendering. Here every
training item is rendered afresh from exact labels with random class grey levels
and textures (carbon-binder brighter or darker than the electrolyte), anisotropic
blur, phase-contrast fringes, ring artefacts, a smooth bias field, gamma,
down- then up-sampling, and white or correlated noise (the SynthSeg idea, Billot
et al., Medical Image Analysis 2023), so that what the network learns is shape.

Voids inside particles (cracks, pores) take the grey level of the electrolyte
around the particles, as in a real scan: telling a crack from the matrix is left
to shape and context, which is what the network must learn.

Arrays are ZYX (volumes) or YX (images), in voxel units; rings lie in the last
two axes around a random centre.

Examples
--------
>>> import numpy as np
>>> from crackseg.synthetic.randomize import AppearanceRanges, random_appearance, render
>>> lab = np.zeros((24, 24), np.uint8); lab[4:20, 4:20] = 1; lab[11:13, 6:18] = 2
>>> rng = np.random.default_rng(0)
>>> img = render(lab, np.zeros(lab.shape, bool), random_appearance(rng, AppearanceRanges()), rng)
>>> img.dtype, img.shape
(dtype('float32'), (24, 24))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from crackseg.errors import InputError


@dataclass(frozen=True)
class AppearanceRanges:
    """Ranges of the random imaging model (uniform draws unless stated).

    Grey levels are before normalisation (electrolyte ~0, particle ~1); blur,
    texture and noise correlation lengths are in voxels.
    """

    particle_level: tuple = (0.55, 1.0)
    particle_level_spread: tuple = (0.0, 0.45)
    """Per-particle dimming: particle ``k`` keeps ``1 - spread * u_k`` of the contrast,
    ``u_k ~ U(0, 1)`` (dim particles: partial volume, other density or composition)."""
    electrolyte_level: tuple = (0.0, 0.3)
    binder_level: tuple = (0.0, 0.85)
    """Binder grey level as a fraction between electrolyte (0) and particle (1)."""
    void_offset: tuple = (-0.05, 0.08)
    """Crack/pore grey level minus electrolyte level, relative to the contrast."""
    particle_texture: tuple = (0.0, 0.2)
    binder_texture: tuple = (0.0, 0.5)
    texture_sigma: tuple = (0.5, 3.0)
    blur_sigma: tuple = (0.3, 2.0)
    """Per-axis Gaussian point-spread standard deviation (voxels)."""
    phase_contrast: tuple = (0.0, 1.2)
    """Edge-fringe strength (times the Laplacian of Gaussian, voxel² units)."""
    snr: tuple = (2.5, 25.0)
    """Contrast over noise standard deviation (log-uniform)."""
    noise_correlation: tuple = (0.0, 1.5)
    ring_amplitude: tuple = (0.0, 0.08)
    bias_amplitude: tuple = (0.0, 0.3)
    gamma: tuple = (0.7, 1.5)
    downsample: tuple = (1.0, 2.5)
    downsample_probability: float = 0.3
    invert_probability: float = 0.0
    """Chance of dark particles on a bright background (off by default)."""

    def to_dict(self) -> dict:
        """JSON-ready ranges (for a model card)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict | None) -> AppearanceRanges:
        """Ranges from a dict such as a recipe's ``appearance:`` (unknown keys are refused)."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise InputError(f"unknown appearance setting(s) {', '.join(bad)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def _uniform(rng, lo_hi) -> float:
    lo, hi = lo_hi
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def random_appearance(rng: np.random.Generator, ranges: AppearanceRanges, ndim: int = 2) -> dict:
    """Draw one imaging setting from ``ranges``.

    Returns
    -------
    dict
        Scalar settings plus per-axis ``blur_sigma`` (``ndim`` values).
    """
    r = ranges
    lo_snr, hi_snr = np.log(r.snr[0]), np.log(r.snr[1])
    return {
        "particle": _uniform(rng, r.particle_level),
        "particle_spread": _uniform(rng, r.particle_level_spread),
        "electrolyte": _uniform(rng, r.electrolyte_level),
        "binder": _uniform(rng, r.binder_level),
        "void_offset": _uniform(rng, r.void_offset),
        "particle_texture": _uniform(rng, r.particle_texture),
        "binder_texture": _uniform(rng, r.binder_texture),
        "texture_sigma": _uniform(rng, r.texture_sigma),
        "blur_sigma": [_uniform(rng, r.blur_sigma) for _ in range(ndim)],
        "phase_contrast": _uniform(rng, r.phase_contrast),
        "snr": float(np.exp(rng.uniform(lo_snr, hi_snr))),
        "noise_correlation": _uniform(rng, r.noise_correlation),
        "ring_amplitude": _uniform(rng, r.ring_amplitude),
        "bias_amplitude": _uniform(rng, r.bias_amplitude),
        "gamma": _uniform(rng, r.gamma),
        "downsample": (_uniform(rng, r.downsample)
                       if rng.uniform() < r.downsample_probability else 1.0),
        "invert": bool(rng.uniform() < r.invert_probability),
    }


def noise_field(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Unit-variance Gaussian noise, smoothed with ``sigma`` voxels (0: white), float32."""
    g = rng.standard_normal(shape, dtype=np.float32)
    if sigma > 0:
        g = ndi.gaussian_filter(g, sigma)
    return g / max(float(g.std()), 1e-12)


def _particle_levels(instances, solid, s, rng):
    """Grey level of every solid voxel: the particle level, dimmed per particle."""
    contrast = s["particle"] - s["electrolyte"]
    spread = s.get("particle_spread", 0.0)
    if instances is None or spread <= 0:
        return np.float32(s["particle"])
    ids = instances[solid]
    dim = 1.0 - spread * rng.uniform(0, 1, int(ids.max(initial=0)) + 1).astype(np.float32)
    return s["electrolyte"] + contrast * dim[ids]


def _phase_map(labels, binder, s, rng, instances=None):
    """Grey levels of the phases before the point-spread function."""
    contrast = s["particle"] - s["electrolyte"]
    phase = np.full(labels.shape, s["electrolyte"], np.float32)
    solid = labels == 1
    phase[solid] = _particle_levels(instances, solid, s, rng)
    if s["particle_texture"] > 0:
        phase[solid] += contrast * s["particle_texture"] * noise_field(
            rng, labels.shape, s["texture_sigma"])[solid]
    b = s["electrolyte"] + s["binder"] * contrast
    if binder.any():
        phase[binder] = b + contrast * s["binder_texture"] * noise_field(rng, labels.shape, 0.7)[binder]
    phase[labels >= 2] = s["electrolyte"] + s["void_offset"] * contrast
    return phase, contrast


def _rings(rng, shape, amplitude):
    y, x = shape[-2:]
    yy, xx = np.mgrid[0:y, 0:x].astype(np.float32)
    cy, cx = rng.uniform(-0.5, 1.5) * y, rng.uniform(-0.5, 1.5) * x
    r = np.hypot(yy - cy, xx - cx)
    rings = np.zeros((y, x), np.float32)
    for rad in rng.uniform(r.min(), r.max(), 12):
        rings += rng.normal(0, amplitude) * np.exp(-0.5 * ((r - rad) / rng.uniform(0.6, 1.5)) ** 2)
    return rings


def _bias(rng, shape, amplitude):
    coarse = rng.standard_normal(tuple(3 for _ in shape)).astype(np.float32)
    field = ndi.zoom(coarse, [n / 3 for n in shape], order=3, mode="nearest")
    field = field[tuple(slice(0, n) for n in shape)]
    return 1.0 + amplitude * field / max(float(np.abs(field).max()), 1e-6)


def resample_blur(img: np.ndarray, factor: float) -> np.ndarray:
    """Down-sample by ``factor`` (> 1) and back to the same shape: the blur of a coarser scan."""
    if factor <= 1.0:
        return img
    from crackseg.scale import resample

    return resample(ndi.zoom(img, 1.0 / factor, order=1), img.shape, 1).astype(img.dtype)


def render(labels: np.ndarray, binder: np.ndarray, setting: dict,
           rng: np.random.Generator, instances: np.ndarray | None = None) -> np.ndarray:
    """Grey image of a label map under one imaging setting, normalised to 1-99 % -> 0-1.

    Parameters
    ----------
    labels : ndarray of uint8, shape (Z, Y, X) or (Y, X)
        nmc4 labels (0 matrix, 1 particle, 2 crack, 3 pore; 255 treated as matrix).
    binder : ndarray of bool, same shape
        Carbon-binder voxels (part of the matrix).
    setting : dict
        From :func:`random_appearance`.
    rng : numpy.random.Generator
        Source of the textures and noise.
    instances : ndarray of int, same shape, optional
        Particle instances (0 = none); with them each particle is dimmed by
        its own random amount (``particle_spread``).

    Returns
    -------
    ndarray of float32, same shape
        Normalised as :func:`crackseg.normalize.normalize_image` does at inference.
    """
    from crackseg.normalize import normalize_image

    s = setting
    phase, contrast = _phase_map(labels, binder, s, rng, instances)
    sig = list(s["blur_sigma"])[-labels.ndim:]
    img = ndi.gaussian_filter(phase, sig)
    if s["phase_contrast"] > 0:
        img -= s["phase_contrast"] * contrast * ndi.gaussian_laplace(phase / max(contrast, 1e-6),
                                                                     max(min(sig), 0.5))
    img = resample_blur(img, s["downsample"])
    if s["ring_amplitude"] > 0:
        img += (s["ring_amplitude"] * contrast * _rings(rng, labels.shape, 1.0))[
            (None,) * (labels.ndim - 2)]
    if s["bias_amplitude"] > 0:
        img *= _bias(rng, labels.shape, s["bias_amplitude"])
    img += (contrast / s["snr"]) * noise_field(rng, labels.shape, s["noise_correlation"])
    img = normalize_image(img)
    img = np.clip(img, -0.5, 1.5)
    img = np.sign(img) * np.abs(img) ** s["gamma"]
    if s["invert"]:
        img = 1.0 - img
    return normalize_image(img).astype(np.float32)
