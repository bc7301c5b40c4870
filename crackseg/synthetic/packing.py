"""Packings of irregular, polydisperse, touching secondary particles.

Particles are perturbed spheres: a random ellipsoid with a few smooth bumps
and dents.  Centres are placed by random sequential addition, largest first,
allowing a limited overlap so neighbours touch; where two shapes overlap the
voxel goes to the particle it lies deeper inside (smaller normalised radius),
which gives flat contact facets as between real calendered particles.

Coordinates are ZYX in micrometres unless stated otherwise.

Examples
--------
>>> import numpy as np
>>> from crackseg.synthetic.packing import sample_particles, rasterise_particles
>>> rng = np.random.default_rng(0)
>>> parts = sample_particles((32, 32, 32), (0.5, 0.5, 0.5), rng, solid_fraction=0.5)
>>> inst = rasterise_particles((32, 32, 32), (0.5, 0.5, 0.5), parts)
>>> inst.dtype, inst.shape
(dtype('uint32'), (32, 32, 32))
"""

from __future__ import annotations

import numpy as np

N_BUMPS = 6
"""Number of smooth bumps/dents on each particle's radial profile."""


def _random_rotations(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` uniformly random 3x3 rotation matrices (QR of Gaussian matrices)."""
    q, r = np.linalg.qr(rng.standard_normal((n, 3, 3)))
    q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    return q


def _unit_vectors(rng: np.random.Generator, shape) -> np.ndarray:
    v = rng.standard_normal((*shape, 3))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _inside_fraction(centre: np.ndarray, radius: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Rough fraction of each sphere's volume inside ``[0, box]`` (product of 1-D overlaps)."""
    lo = np.clip(centre - radius[:, None], 0, box)
    hi = np.clip(centre + radius[:, None], 0, box)
    return np.prod((hi - lo) / (2 * radius[:, None]), axis=1)


def sample_particles(shape, voxel_size_um, rng: np.random.Generator, *,
                     solid_fraction: float = 0.55, diameter_median_um: float = 11.0,
                     diameter_sigma: float = 0.35, diameter_range_um=(3.0, 22.0),
                     max_overlap: float = 0.25, asphericity: float = 0.15,
                     roughness: float = 0.08, tries: int = 40) -> dict:
    """Place particles (centres, radii, shapes) in a box.

    Parameters
    ----------
    shape : tuple of int
        Volume shape (Z, Y, X) in voxels.
    voxel_size_um : tuple of float
        Voxel size (z, y, x) in micrometres.
    rng : numpy.random.Generator
        Source of randomness (the caller seeds it).
    solid_fraction : float
        Target fraction of the box covered by particle envelopes.
    diameter_median_um, diameter_sigma : float
        Log-normal diameter law: median (µm) and sigma of ``log(diameter)``.
    diameter_range_um : (float, float)
        Diameters are clipped to this range (µm).
    max_overlap : float
        Two particles may interpenetrate by at most ``2 * max_overlap`` times
        the smaller radius (touching, flattened contacts).
    asphericity : float
        Half-width of the uniform law of the ellipsoid axis deviations.
    roughness : float
        Standard deviation of the relative bump amplitudes.
    tries : int
        Placement attempts per particle before it is skipped.

    Returns
    -------
    dict
        ``centre_um`` (n, 3) ZYX, ``radius_um`` (n,), ``rotation`` (n, 3, 3),
        ``axes`` (n, 3) relative ellipsoid semi-axes, ``bump_dir`` (n, K, 3),
        ``bump_amp`` (n, K), ``bump_kappa`` (n, K); particle k gets instance
        id ``k + 1``.
    """
    vs = np.asarray(voxel_size_um, dtype=float)
    box = np.asarray(shape, dtype=float) * vs
    target = solid_fraction * float(np.prod(box))
    dmin, dmax = diameter_range_um
    mean_vol = np.pi / 6 * diameter_median_um ** 3 * np.exp(4.5 * diameter_sigma ** 2)
    n_pool = int(np.clip(4 * target / mean_vol, 50, 200_000))
    diam = np.exp(rng.normal(np.log(diameter_median_um), diameter_sigma, n_pool))
    diam = np.sort(np.clip(diam, dmin, dmax))[::-1]
    radii = diam / 2

    centres = np.empty((0, 3))
    placed_r = np.empty(0)
    filled = 0.0
    for r in radii:
        if filled >= target:
            break
        cand = rng.uniform(-0.5 * r, box[None, :] + 0.5 * r, size=(tries, 3))
        if len(centres):
            d = np.linalg.norm(cand[:, None, :] - centres[None, :, :], axis=-1)
            need = r + placed_r[None, :] - 2 * max_overlap * np.minimum(r, placed_r)[None, :]
            ok = np.all(d >= need, axis=1)
            if not ok.any():
                continue
            c = cand[np.argmax(ok)]
        else:
            c = cand[0]
        centres = np.vstack([centres, c])
        placed_r = np.append(placed_r, r)
        filled += float(4 / 3 * np.pi * r ** 3 * _inside_fraction(c[None], np.array([r]), box)[0])

    n = len(placed_r)
    dev = rng.uniform(-asphericity, asphericity, (n, 3))
    axes = (1 + dev) / np.cbrt(np.prod(1 + dev, axis=1, keepdims=True))
    return {
        "centre_um": centres,
        "radius_um": placed_r,
        "rotation": _random_rotations(rng, n),
        "axes": axes,
        "bump_dir": _unit_vectors(rng, (n, N_BUMPS)),
        "bump_amp": rng.normal(0, roughness, (n, N_BUMPS)),
        "bump_kappa": rng.uniform(2.0, 8.0, (n, N_BUMPS)),
    }


def normalised_radius(parts: dict, k: int, rel_um: np.ndarray) -> np.ndarray:
    """Distance from particle ``k``'s centre relative to its surface radius.

    Parameters
    ----------
    parts : dict
        Output of :func:`sample_particles`.
    k : int
        Particle index (instance id - 1).
    rel_um : ndarray, shape (..., 3)
        ZYX offsets from the particle centre in micrometres.

    Returns
    -------
    ndarray, shape (...)
        ``|x - c| / rho(direction)``: < 1 inside the particle, 1 on its surface.
    """
    dist = np.linalg.norm(rel_um, axis=-1)
    u = rel_um / np.maximum(dist, 1e-9)[..., None]
    body = u @ parts["rotation"][k]
    ell = 1.0 / np.sqrt(np.sum((body / parts["axes"][k]) ** 2, axis=-1))
    cos = u @ parts["bump_dir"][k].T
    bumps = np.exp(parts["bump_kappa"][k] * (cos - 1.0)) @ parts["bump_amp"][k]
    rho = parts["radius_um"][k] * ell * np.maximum(1.0 + bumps, 0.5)
    return dist / rho


def particle_box(parts: dict, k: int, shape, voxel_size_um, margin: float = 1.5):
    """Voxel slices of the part of the volume particle ``k`` can reach (or None)."""
    vs = np.asarray(voxel_size_um, dtype=float)
    c = parts["centre_um"][k] / vs
    r = margin * parts["radius_um"][k] / vs
    lo = np.maximum(np.floor(c - r).astype(int), 0)
    hi = np.minimum(np.ceil(c + r).astype(int) + 1, np.asarray(shape))
    if np.any(hi <= lo):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def box_offsets_um(box, centre_um, voxel_size_um) -> np.ndarray:
    """ZYX offsets (µm) of the voxel centres of ``box`` from ``centre_um``; shape (z, y, x, 3)."""
    vs = np.asarray(voxel_size_um, dtype=float)
    grids = [np.arange(s.start, s.stop) * v - c for s, v, c in zip(box, vs, centre_um)]
    return np.stack(np.meshgrid(*grids, indexing="ij"), axis=-1)


def rasterise_particles(shape, voxel_size_um, parts: dict) -> np.ndarray:
    """Instance image of the particle envelopes.

    Parameters
    ----------
    shape : tuple of int
        Volume shape (Z, Y, X).
    voxel_size_um : tuple of float
        Voxel size (z, y, x) in micrometres.
    parts : dict
        Output of :func:`sample_particles`.

    Returns
    -------
    ndarray of uint32, shape (Z, Y, X)
        0 outside particles, ``k + 1`` inside particle ``k``; overlaps go to
        the particle with the smaller normalised radius.
    """
    inst = np.zeros(shape, np.uint32)
    best = np.ones(shape, np.float32)
    for k in range(len(parts["radius_um"])):
        box = particle_box(parts, k, shape, voxel_size_um)
        if box is None:
            continue
        s = normalised_radius(parts, k, box_offsets_um(box, parts["centre_um"][k], voxel_size_um))
        win = s < best[box]
        best[box][win] = s[win]
        inst[box][win] = k + 1
    return inst
