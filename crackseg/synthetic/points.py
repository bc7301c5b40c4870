"""Particle damage as a point pattern: the phantoms' damage law without voxels.

The statistics layer sees particles only as centroids with a damage value.
To test it on 10^4-10^5 particles per volume, or under another damage
covariance than the phantoms', :func:`damage_points` draws that directly:
centroids uniform in the volume and each particle's crack fraction from the
law of :mod:`crackseg.synthetic.damage` (latent field at the centroid, depth
gradient, particle noise), with the law's defaults those of
:func:`~crackseg.synthetic.generate_electrode`.  Several volumes can be cut
from one electrode (one latent field), side by side along x with a gap.

Examples
--------
>>> vols, truth = damage_points(300, (100.0, 100.0, 100.0), seed=0)
>>> vols[0][0].shape, vols[0][1].shape, round(truth, 3)
((300,), (300, 3), 0.06)
"""

from __future__ import annotations

import inspect

import numpy as np

from crackseg.synthetic.damage import latent_field, target_crack_fraction, true_mean_crack_fraction

_LAW = ("damage_logit_mean", "depth_gradient", "hotspot_sd", "particle_sd", "max_crack_fraction")


def damage_law(**overrides) -> dict:
    """The phantoms' damage law (``generate_electrode`` defaults), as keyword arguments of the law's functions.

    Examples
    --------
    >>> damage_law(depth_gradient=0.0)["depth_gradient"]
    0.0
    """
    from crackseg.synthetic.generate import generate_electrode

    defaults = {k: p.default for k, p in inspect.signature(generate_electrode).parameters.items()}
    law = {("logit_mean" if k == "damage_logit_mean" else k): defaults[k] for k in _LAW}
    law.update(overrides)
    return law


def damage_points(n: int, extent, *, seed: int, kernel: str = "squared_exponential",
                  correlation_length_um: float = 20.0, n_volumes: int = 1,
                  gap_um: float | None = None, **law) -> tuple[list, float]:
    """Volumes of particle centroids with damage drawn from one clustered electrode.

    Parameters
    ----------
    n : int
        Particles per volume.
    extent : sequence of 3 float
        Volume size (z, y, x) in µm; z is the depth.
    seed : int
    kernel : {"squared_exponential", "exponential"}
        Covariance of the latent damage field (:func:`~crackseg.synthetic.damage.latent_field`).
    correlation_length_um : float
    n_volumes : int
        Volumes cut from the same electrode, side by side along x.
    gap_um : float, optional
        Distance between neighbouring volumes (default: one volume width).
    **law
        Overrides of :func:`damage_law` (e.g. ``depth_gradient=0``).

    Returns
    -------
    volumes : list of (values, coords)
        Crack fractions (n,) and centroids (n, 3) in µm, relative to each
        volume's corner.
    truth : float
        Superpopulation mean crack fraction of the law.
    """
    ext = np.asarray(extent, dtype=np.float64)
    gap = float(ext[2] if gap_um is None else gap_um)
    params = damage_law(**law)
    rng = np.random.default_rng(seed)
    field = latent_field(rng, correlation_length_um, kernel=kernel)
    out = []
    for k in range(int(n_volumes)):
        xyz = rng.uniform(0.0, 1.0, (n, 3)) * ext
        shift = np.array([0.0, 0.0, k * (ext[2] + gap)])
        values = target_crack_fraction(xyz[:, 0] / ext[0], field(xyz + shift),
                                       rng.standard_normal(n), **params)
        out.append((values, xyz))
    return out, true_mean_crack_fraction(**params)
