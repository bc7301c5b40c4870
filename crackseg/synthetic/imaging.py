"""Imaging model: from a phase map to a tomogram-like grey-value volume.

Steps (all on ZYX arrays in voxel units):

1. phase levels: particle bright with a fine grain texture, carbon-binder
   mid-grey and strongly textured, electrolyte (matrix pores, cracks, pores)
   dark;
2. point-spread function: Gaussian blur;
3. phase-contrast edge fringes: minus ``k`` times the Laplacian of Gaussian of
   the phase map (bright/dark halo pairs at edges);
4. ring artefacts: concentric circles in every YX plane around the rotation
   axis (along axis 0), constant along it;
5. slow intensity drift along axis 0 and a smooth in-plane shading;
6. noise at a chosen signal-to-noise ratio (particle-electrolyte contrast /
   noise standard deviation), slightly correlated as in reconstructions;
7. conversion to uint8/uint16 (fixed linear map) or float32.

Examples
--------
>>> import numpy as np
>>> from crackseg.synthetic.imaging import render_image
>>> lab = np.zeros((8, 16, 16), np.uint8); lab[:, 4:12, 4:12] = 1
>>> img = render_image(lab, np.zeros_like(lab, bool), np.random.default_rng(0), dtype="uint8")
>>> img.dtype, img.shape
(dtype('uint8'), (8, 16, 16))
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

LEVELS = {"particle": 1.0, "binder": 0.5, "electrolyte": 0.12}
"""Mean grey level of each phase before blur (arbitrary units)."""
OUTPUT_RANGE = (-0.3, 1.5)
"""Grey levels mapped to the full range of integer output types."""
DTYPES = ("uint8", "uint16", "float32")


def _texture(rng, shape, sigma):
    """Unit-variance smooth Gaussian noise with correlation length ``sigma`` voxels."""
    g = ndi.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), sigma)
    sd = float(g.std())
    return g / sd if sd > 0 else g


def binder_mask(particles: np.ndarray, rng: np.random.Generator, *,
                binder_fraction: float = 0.6, binder_reach_vox: float = 6.0,
                voxel_size_um=(1.0, 1.0, 1.0)) -> np.ndarray:
    """Carbon-binder domain: a textured fraction of the matrix, clinging to particles.

    Parameters
    ----------
    particles : ndarray of bool, shape (Z, Y, X)
        Particle envelopes.
    rng : numpy.random.Generator
        Source of randomness.
    binder_fraction : float
        Fraction of the matrix voxels that are binder.
    binder_reach_vox : float
        How strongly binder prefers the vicinity of particles (voxels).

    Returns
    -------
    ndarray of bool, shape (Z, Y, X)
    """
    import edt

    matrix = ~particles
    if not matrix.any() or binder_fraction <= 0:
        return np.zeros_like(particles)
    dist = edt.edt(matrix, anisotropy=tuple(float(v) for v in voxel_size_um), parallel=1)
    dist = dist / float(np.min(voxel_size_um))
    score = _texture(rng, particles.shape, 2.0) - dist / binder_reach_vox
    thr = np.quantile(score[matrix], 1.0 - binder_fraction)
    return matrix & (score > thr)


def render_image(labels: np.ndarray, binder: np.ndarray, rng: np.random.Generator, *,
                 dtype: str = "uint16", snr: float = 8.0, blur_sigma: float = 1.2,
                 phase_contrast: float = 0.35, ring_amplitude: float = 0.04,
                 drift: float = 0.1, particle_texture: float = 0.08,
                 binder_texture: float = 0.3, noise_correlation: float = 1.0) -> np.ndarray:
    """Grey-value tomogram of a labelled phantom.

    Parameters
    ----------
    labels : ndarray of uint8, shape (Z, Y, X)
        nmc4 labels (0 matrix, 1 particle, 2 crack, 3 pore).
    binder : ndarray of bool, shape (Z, Y, X)
        Carbon-binder voxels (part of the matrix).
    rng : numpy.random.Generator
        Source of randomness.
    dtype : {"uint8", "uint16", "float32"}
        Output type; integer types map :data:`OUTPUT_RANGE` to their full range.
    snr : float
        Particle-electrolyte contrast over the noise standard deviation.
    blur_sigma : float
        Standard deviation of the Gaussian point-spread function (voxels).
    phase_contrast : float
        Strength of the edge fringes (times the Laplacian of Gaussian, in voxel² units).
    ring_amplitude : float
        Standard deviation of the ring amplitudes, relative to the contrast.
    drift : float
        Relative intensity change from the first to the last slice.
    particle_texture, binder_texture : float
        Relative grey-level texture amplitude of particles and binder.
    noise_correlation : float
        Gaussian correlation length of the noise (voxels; 0 = white).

    Returns
    -------
    ndarray, shape (Z, Y, X), of ``dtype``
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
    shape = labels.shape
    lo, hi = LEVELS["electrolyte"], LEVELS["particle"]
    contrast = hi - lo
    phase = np.full(shape, lo, np.float32)
    solid = labels == 1
    grain = 0.6 * _texture(rng, shape, 1.0) + 0.8 * _texture(rng, shape, 3.0)
    phase[solid] = hi * (1.0 + particle_texture * grain[solid])
    phase[binder] = LEVELS["binder"] * (1.0 + binder_texture * _texture(rng, shape, 0.7)[binder])

    img = ndi.gaussian_filter(phase, blur_sigma) if blur_sigma > 0 else phase.copy()
    if phase_contrast:
        img -= phase_contrast * ndi.gaussian_laplace(phase, max(blur_sigma, 0.5))

    z, y, x = shape
    yy, xx = np.mgrid[0:y, 0:x].astype(np.float32)
    cy = (y - 1) / 2 + rng.normal(0, 0.05 * y)
    cx = (x - 1) / 2 + rng.normal(0, 0.05 * x)
    r = np.hypot(yy - cy, xx - cx)
    rings = np.zeros((y, x), np.float32)
    if ring_amplitude:
        rmax = float(r.max())
        for rad in rng.uniform(0, rmax, 14):
            amp = rng.normal(0, ring_amplitude * contrast)
            rings += amp * np.exp(-0.5 * ((r - rad) / rng.uniform(0.6, 1.2)) ** 2)
    shading = 1.0 + 0.5 * drift * ((yy - cy) / max(y, 1) * rng.normal() + (xx - cx) / max(x, 1) * rng.normal())
    zdrift = 1.0 + drift * (np.arange(z, dtype=np.float32) / max(z - 1, 1) - 0.5)
    img = img * shading[None] * zdrift[:, None, None] + rings[None]

    if snr and snr > 0:
        noise = rng.standard_normal(shape, dtype=np.float32)
        if noise_correlation > 0:
            noise = ndi.gaussian_filter(noise, noise_correlation)
            noise /= max(float(noise.std()), 1e-12)
        img += (contrast / snr) * noise

    if dtype == "float32":
        return img.astype(np.float32)
    info = np.iinfo(dtype)
    a, b = OUTPUT_RANGE
    scaled = (img - a) / (b - a) * info.max
    return np.clip(np.rint(scaled), 0, info.max).astype(dtype)
