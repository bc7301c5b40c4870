"""The damage law of the phantoms and the cracks and pores that realise it.

Damage law
----------
Each particle ``i`` gets a target crack fraction

.. math::

    t_i = \\min\\{\\operatorname{expit}(\\beta_0 + \\beta_1 (d_i - 1/2)
          + \\sigma_Z Z(x_i) + \\sigma_\\varepsilon \\varepsilon_i),\\ t_{max}\\}

with ``d_i`` the depth of its centroid as a fraction of the volume's extent
along axis 0 (uniform over particles), ``Z`` a stationary zero-mean,
unit-variance latent random field with squared-exponential correlation
``exp(-h^2 / (2 l^2))`` (``l`` = correlation length; its positive regions are
the damage hot spots), evaluated at the particle centroid, and ``eps_i``
independent standard normal particle noise.  The superpopulation mean of the
per-particle crack fraction is therefore a two-dimensional integral over
``d ~ U(0, 1)`` and the normal marginal of ``beta_Z Z + sigma_eps eps``,
computed by Gauss-Legendre x Gauss-Hermite quadrature in
:func:`true_mean_crack_fraction`.

The field is built from random Fourier features (``M`` cosines with Gaussian
frequencies), whose covariance is exactly the squared-exponential kernel and
whose marginal is normal up to ``O(1/M)``; :func:`latent_field` can also draw
an exponential kernel (multivariate Cauchy frequencies) for tests of the
statistics under rougher damage.

Cracks
------
Cracks are thin wavy sheets through (or near) the particle centre, radiating
outwards, with branches that leave a sheet at an angle.  Every candidate
crack voxel has a growth time; a particle's cracks are the ``n`` candidate
voxels with the smallest times, where ``n`` is the target fraction times the
envelope size rounded stochastically, so the realised crack fraction equals
the target without bias.  Growth modes: ``radial`` (from the centre outwards:
small damage stays internal), ``surface`` (from the surface inwards) and
``through`` (one sheet after another across the whole particle: fragments).

Coordinates are ZYX in micrometres.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

CRACK_MODES = ("radial", "surface", "through")
N_FOURIER = 512
"""Number of random Fourier features of the latent damage field."""


# ---------------------------------------------------------------- the law


def latent_field(rng: np.random.Generator, correlation_length_um: float,
                 n_features: int = N_FOURIER, *, kernel: str = "squared_exponential"):
    """A unit-variance random field ``Z(x)``, x in µm (ZYX).

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.
    correlation_length_um : float
        ``l`` of the covariance: ``exp(-h^2 / (2 l^2))`` (squared exponential,
        a smooth field) or ``exp(-h / l)`` (exponential, a rough one).
    n_features : int
        Number of random Fourier features.
    kernel : {"squared_exponential", "exponential"}
        Covariance of the field.  Its random Fourier features draw their
        frequencies from the kernel's spectral density: normal for the
        squared exponential, multivariate Cauchy (a normal vector divided by
        the absolute value of an independent standard normal) for the
        exponential.

    Returns
    -------
    callable
        ``field(points_um)`` with points of shape (n, 3) -> values (n,).

    Examples
    --------
    >>> import numpy as np
    >>> f = latent_field(np.random.default_rng(0), 20.0)
    >>> f(np.zeros((2, 3))).shape
    (2,)
    """
    if kernel not in ("squared_exponential", "exponential"):
        raise ValueError(f"kernel must be 'squared_exponential' or 'exponential', not {kernel!r}")
    omega = rng.normal(0.0, 1.0 / correlation_length_um, (n_features, 3))
    phase = rng.uniform(0.0, 2 * np.pi, n_features)
    if kernel == "exponential":
        omega /= np.abs(rng.standard_normal((n_features, 1)))
    scale = np.sqrt(2.0 / n_features)

    def field(points_um):
        pts = np.atleast_2d(np.asarray(points_um, dtype=float))
        return scale * np.cos(pts @ omega.T + phase).sum(axis=1)

    return field


def target_crack_fraction(depth_fraction, latent, noise, *, logit_mean: float,
                          depth_gradient: float, hotspot_sd: float, particle_sd: float,
                          max_crack_fraction: float) -> np.ndarray:
    """Per-particle target crack fraction of the damage law (module docs).

    Parameters
    ----------
    depth_fraction : array_like
        Centroid depth / volume extent along axis 0, in [0, 1].
    latent, noise : array_like
        Latent field value and particle noise (both standard normal marginals).

    Examples
    --------
    >>> float(target_crack_fraction(0.5, 0.0, 0.0, logit_mean=0.0, depth_gradient=1.0,
    ...       hotspot_sd=1.0, particle_sd=0.5, max_crack_fraction=0.3))
    0.3
    """
    eta = (logit_mean + depth_gradient * (np.asarray(depth_fraction) - 0.5)
           + hotspot_sd * np.asarray(latent) + particle_sd * np.asarray(noise))
    return np.minimum(expit(eta), max_crack_fraction)


def true_mean_crack_fraction(*, logit_mean: float, depth_gradient: float, hotspot_sd: float,
                             particle_sd: float, max_crack_fraction: float,
                             n_depth: int = 64, n_normal: int = 96) -> float:
    """Superpopulation mean of the per-particle crack fraction.

    Quadrature of :func:`target_crack_fraction` over depth ``~ U(0, 1)`` and the
    normal law of ``hotspot_sd * Z + particle_sd * eps``.

    Examples
    --------
    >>> round(true_mean_crack_fraction(logit_mean=0.0, depth_gradient=0.0, hotspot_sd=0.0,
    ...       particle_sd=0.0, max_crack_fraction=1.0), 6)
    0.5
    """
    xd, wd = np.polynomial.legendre.leggauss(n_depth)
    depth = 0.5 * (xd + 1.0)
    wd = 0.5 * wd
    xh, wh = np.polynomial.hermite_e.hermegauss(n_normal)
    wh = wh / np.sqrt(2 * np.pi)
    sd = float(np.hypot(hotspot_sd, particle_sd))
    t = target_crack_fraction(depth[:, None], xh[None, :] * (sd if sd > 0 else 0.0), 0.0,
                              logit_mean=logit_mean, depth_gradient=depth_gradient,
                              hotspot_sd=1.0, particle_sd=0.0,
                              max_crack_fraction=max_crack_fraction)
    return float(wd @ t @ wh)


def expected_crack_fraction(depth_fraction, *, logit_mean: float, depth_gradient: float,
                            hotspot_sd: float, particle_sd: float, max_crack_fraction: float,
                            n_normal: int = 96) -> np.ndarray:
    """Law's mean crack fraction of a particle at a given depth (field and noise averaged).

    Averaging it over the depths of any set of particles (e.g. those not
    touching the border) gives that set's superpopulation mean.

    Examples
    --------
    >>> law = dict(logit_mean=-3.3, depth_gradient=1.6, hotspot_sd=1.0, particle_sd=0.5,
    ...            max_crack_fraction=0.3)
    >>> bool(expected_crack_fraction(0.9, **law) > expected_crack_fraction(0.1, **law))
    True
    """
    xh, wh = np.polynomial.hermite_e.hermegauss(n_normal)
    wh = wh / np.sqrt(2 * np.pi)
    sd = float(np.hypot(hotspot_sd, particle_sd))
    d = np.asarray(depth_fraction, dtype=float)
    t = target_crack_fraction(d[..., None], xh * sd, 0.0, logit_mean=logit_mean,
                              depth_gradient=depth_gradient, hotspot_sd=1.0, particle_sd=0.0,
                              max_crack_fraction=max_crack_fraction)
    return t @ wh


def true_crack_fraction_cdf(x, *, logit_mean: float, depth_gradient: float, hotspot_sd: float,
                            particle_sd: float, max_crack_fraction: float,
                            n_depth: int = 64) -> np.ndarray:
    """Superpopulation probability that a particle's crack fraction is <= ``x``.

    Examples
    --------
    >>> float(true_crack_fraction_cdf(0.5, logit_mean=0.0, depth_gradient=0.0, hotspot_sd=1.0,
    ...       particle_sd=0.0, max_crack_fraction=1.0))
    0.5
    """
    from scipy.special import logit
    from scipy.stats import norm

    x = np.asarray(x, dtype=float)
    xd, wd = np.polynomial.legendre.leggauss(n_depth)
    depth = 0.5 * (xd + 1.0)
    wd = 0.5 * wd
    sd = float(np.hypot(hotspot_sd, particle_sd))
    with np.errstate(divide="ignore"):
        lx = logit(np.clip(x, 0.0, 1.0))[..., None]
    mu = logit_mean + depth_gradient * (depth - 0.5)
    if sd > 0:
        cdf = norm.cdf((lx - mu) / sd) @ wd
    else:
        cdf = (lx >= mu).astype(float) @ wd
    return np.where(x >= max_crack_fraction, 1.0, cdf)


def true_crack_fraction_quantile(q: float, **law) -> float:
    """Superpopulation ``q``-quantile of the per-particle crack fraction (see the CDF).

    Examples
    --------
    >>> round(true_crack_fraction_quantile(0.5, logit_mean=0.0, depth_gradient=0.0,
    ...       hotspot_sd=1.0, particle_sd=0.0, max_crack_fraction=1.0), 6)
    0.5
    """
    from scipy.optimize import brentq

    cap = float(law["max_crack_fraction"])
    lo = 1e-12
    if float(true_crack_fraction_cdf(cap - 1e-12, **law)) < q:
        return cap
    return float(brentq(lambda x: float(true_crack_fraction_cdf(x, **law)) - q, lo, cap - 1e-12,
                        xtol=1e-10))


# ---------------------------------------------------------------- geometry


def _sheet(rng, radius_um, min_vox_um, width_vox):
    """Random wavy sheet through the particle centre: normal, in-plane axes, waviness."""
    n = rng.standard_normal(3)
    n /= np.linalg.norm(n)
    a = np.cross(n, rng.standard_normal(3))
    a /= np.linalg.norm(a)
    b = np.cross(n, a)
    return {
        "normal": n, "a": a, "b": b,
        "offset": rng.normal(0, 0.08 * radius_um),
        "wave_amp": rng.uniform(0.3, 1.2) * min_vox_um * np.array([1.0, 1.0]),
        "wave_k": 2 * np.pi / (rng.uniform(0.5, 1.2, 2) * radius_um),
        "wave_phase": rng.uniform(0, 2 * np.pi, 2),
        "half_width": 0.5 * rng.uniform(*width_vox) * min_vox_um,
        "speed": rng.uniform(0.6, 1.4),
        "delay": rng.uniform(0.0, 0.3) * radius_um,
        "sweep": a,
    }


def _sheet_distance(p, sh, origin=None):
    q = p if origin is None else p - origin
    wave = (sh["wave_amp"][0] * np.sin(sh["wave_k"][0] * (q @ sh["a"]) + sh["wave_phase"][0])
            + sh["wave_amp"][1] * np.sin(sh["wave_k"][1] * (q @ sh["b"]) + sh["wave_phase"][1]))
    return np.abs(q @ sh["normal"] - (sh["offset"] if origin is None else 0.0) + wave)


def _crack_times(rng, p, s, radius_um, mode, n_sheets, min_vox_um, width_vox, batch):
    """Growth time (µm) of every candidate voxel for one batch of sheets (inf = never)."""
    t = np.full(len(p), np.inf)
    dist = np.linalg.norm(p, axis=1)
    for j in range(n_sheets):
        sh = _sheet(rng, radius_um, min_vox_um, width_vox)
        on = _sheet_distance(p, sh) < sh["half_width"]
        if mode == "radial":
            tj = dist / sh["speed"] + sh["delay"]
        elif mode == "surface":
            tj = np.clip(1.0 - s, 0, None) * radius_um / sh["speed"] + sh["delay"]
        else:  # through: sheets cut across the particle one after another
            tj = (batch * n_sheets + j) * 10 * radius_um + (p @ sh["sweep"] + 1.5 * radius_um)
        t = np.where(on, np.minimum(t, tj), t)
        # branches leave the sheet at an angle from a point on it
        on_idx = np.flatnonzero(on)
        for _ in range(rng.integers(0, 3)):
            if len(on_idx) == 0:
                break
            i0 = on_idx[rng.integers(len(on_idx))]
            origin = p[i0]
            if mode != "through" and dist[i0] < 0.2 * radius_um:
                continue
            br = _sheet(rng, radius_um, min_vox_um, width_vox)
            tilt = rng.uniform(0.5, 1.0)
            br["normal"] = sh["normal"] * np.cos(tilt) + br["normal"] * np.sin(tilt)
            br["normal"] /= np.linalg.norm(br["normal"])
            ahead = origin / max(np.linalg.norm(origin), 1e-9)
            if mode == "surface":
                ahead = -ahead
            q = p - origin
            on_b = (_sheet_distance(p, br, origin) < br["half_width"]) & (q @ ahead > 0)
            tb = tj[i0] + np.linalg.norm(q, axis=1) / br["speed"]
            t = np.where(on_b, np.minimum(t, tb), t)
    return t


def damage_particle(labels_box, inst_box, label: int, s_box, box, voxel_size_um, *,
                    centre_um, radius_um: float,
                    target: float, rng: np.random.Generator, mode: str = "radial",
                    hollow_radius: float = 0.0, pore_density_per_um3: float = 0.0,
                    pore_radius_um=(0.4, 1.2), width_vox=(1.0, 3.0)) -> dict:
    """Carve pores and cracks into one particle, in place.

    Parameters
    ----------
    labels_box : ndarray of uint8, shape (z, y, x)
        View of the label volume over ``box``; voxels of particle ``k`` must
        be 1 (particle) on entry; pores (3) and cracks (2) are written.
    inst_box : ndarray of uint32, shape (z, y, x)
        View of the instance volume over ``box``.
    label : int
        Instance id of the particle.
    s_box : ndarray of float, shape (z, y, x)
        Normalised radius over ``box``: 0 at the particle centre, 1 on its
        surface (e.g. :func:`crackseg.synthetic.packing.normalised_radius`).
    box : tuple of slice
        Where the views lie in the volume.
    voxel_size_um : tuple of float
        Voxel size (z, y, x) in micrometres.
    centre_um : array_like of 3 float
        Particle centre (ZYX, µm, volume coordinates): cracks radiate from it.
    radius_um : float
        Typical particle radius (µm).
    target : float
        Target crack fraction (crack voxels / envelope voxels).
    rng : numpy.random.Generator
        This particle's source of randomness.
    mode : {"radial", "surface", "through"}
        Crack growth mode (module docs).
    hollow_radius : float
        Radius of a central void relative to the particle radius (0 = none).
    pore_density_per_um3 : float
        Expected number of small equiaxed pores per µm³ of particle.

    Returns
    -------
    dict
        ``n_crack`` (realised), ``n_target`` (wanted), ``n_pore`` voxel counts.
    """
    vs = np.asarray(voxel_size_um, dtype=float)
    mask = inst_box == label
    idx = np.nonzero(mask)
    n_env = len(idx[0])
    if n_env == 0:
        return {"n_crack": 0, "n_target": 0, "n_pore": 0}
    centre = np.asarray(centre_um, dtype=float)
    radius = float(radius_um)
    offs = np.stack([(idx[a] + box[a].start) * vs[a] - centre[a] for a in range(3)], axis=1)
    s = np.asarray(s_box)[idx]
    pore = np.zeros(n_env, bool)
    if hollow_radius > 0:
        pore |= s < hollow_radius
    n_pores = rng.poisson(pore_density_per_um3 * 4 / 3 * np.pi * radius ** 3)
    for _ in range(n_pores):
        u = rng.standard_normal(3)
        c = u / np.linalg.norm(u) * radius * rng.uniform(0.0, 0.7)
        pore |= np.linalg.norm(offs - c, axis=1) < rng.uniform(*pore_radius_um)
    n_target = int(np.floor(target * n_env + rng.uniform()))
    solid = np.flatnonzero(~pore)
    n_target = min(n_target, len(solid))
    crack = np.zeros(n_env, bool)
    if n_target > 0:
        p, ss = offs[solid], s[solid]
        times = np.full(len(solid), np.inf)
        min_vox = float(vs.min())
        for batch in range(12):
            n_sheets = int(rng.integers(2, 5))
            times = np.minimum(times, _crack_times(rng, p, ss, radius, mode, n_sheets,
                                                   min_vox, width_vox, batch))
            if np.isfinite(times).sum() >= n_target:
                break
        n_avail = int(np.isfinite(times).sum())
        n_take = min(n_target, n_avail)
        if n_take > 0:
            times = times + rng.uniform(0, 0.05 * min_vox, len(times))
            chosen = np.argpartition(times, n_take - 1)[:n_take]
            crack[solid[chosen]] = True
    lab = labels_box[idx]
    lab[pore] = 3
    lab[crack] = 2
    labels_box[idx] = lab
    return {"n_crack": int(crack.sum()), "n_target": n_target, "n_pore": int(pore.sum())}
