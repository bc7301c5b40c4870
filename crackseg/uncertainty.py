"""Posterior samples of a segmentation: test-time augmentation and MC dropout.

``uncertainty="tta"`` runs the network on ``n_samples`` flipped / rotated
copies of the input (rotations by 90 degrees only in the YX plane, which is
the isotropic one; flips along every axis) and maps each output back;
``uncertainty="mc"`` keeps the input and switches on the network's dropout
layers (only those; normalisation layers stay in inference mode), with a
seed per chunk and sample.  Either way inference costs ``n_samples`` forward
passes instead of one (about ``n_samples`` times the time; memory grows by
one probability buffer per chunk, not per sample).

What is kept, per voxel: the mean class probabilities' *predictive entropy*
(nats, float16; 0 = all samples certain, ``log(n_classes)`` = uniform), the
label of the mean probabilities, and for the classes the particle statistics
need (crack, pore) one bit per sample (bit ``s`` of a uint8/16/32/64 mask is
set where sample ``s`` predicted that class).  After particle instances are
known, :func:`particle_posterior_counts` reduces these masks to per-particle
counts per sample, which is what goes to disk (``particle_samples.npz``):
``n_samples x n_particles`` integers instead of ``n_samples`` label volumes.

Examples
--------
>>> import numpy as np
>>> from crackseg.uncertainty import predictive_entropy
>>> p = np.array([[1.0, 0.5], [0.0, 0.5]], dtype=np.float32)  # (classes, voxels)
>>> [round(float(v), 3) for v in predictive_entropy(p)]
[0.0, 0.693]
"""

from __future__ import annotations

import numpy as np

from crackseg.errors import CracksegError

UNCERTAINTY_METHODS = ("none", "tta", "mc")

MAX_SAMPLES = 64
SAMPLE_CLASSES = ("crack", "pore")
"""Classes whose per-sample masks are kept for per-particle posteriors."""


def posterior_sample_count(uncertainty: str, n_samples: int) -> int:
    """Forward passes per voxel: ``n_samples`` with posterior samples, else 1; checks both.

    Examples
    --------
    >>> posterior_sample_count("tta", 8), posterior_sample_count("none", 8)
    (8, 1)
    """
    if uncertainty not in UNCERTAINTY_METHODS:
        raise CracksegError(f"uncertainty {uncertainty!r}: use one of "
                            f"{', '.join(UNCERTAINTY_METHODS)}")
    if uncertainty == "none":
        return 1
    n = int(n_samples)
    if n < 2:
        raise CracksegError("uncertainty needs at least 2 samples")
    bits_dtype(n)
    return n


def bits_dtype(n_samples: int) -> np.dtype:
    """Smallest unsigned integer type with one bit per sample."""
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if n_samples <= np.iinfo(dt).bits:
            return np.dtype(dt)
    raise CracksegError(f"at most {MAX_SAMPLES} posterior samples are supported, not {n_samples}")


def tta_transforms(ndim: int, n_samples: int, *, seed: int = 0, rotate: bool = True) -> list[tuple]:
    """Test-time transforms as ``(k_rot90_yx, flip_axes)`` pairs.

    The identity comes first; the others follow in an order drawn with
    ``seed``.  There are 16 distinct transforms for volumes (4 rotations x
    flip X x flip Z) and 8 for images; more samples repeat them.

    Parameters
    ----------
    ndim : {2, 3}
        Spatial dimensions (ZYX or YX).
    n_samples : int
        Number of transforms to return.
    rotate : bool
        Allow 90-degree rotations in YX (needs square windows in YX).
    """
    ks = range(4) if rotate else range(1)
    flips_x = ((), (ndim - 1,))
    flips_z = ((), (0,)) if ndim == 3 else ((),)
    if not rotate:
        flips_y = ((), (ndim - 2,))
        all_t = [(0, fz + fy + fx) for fz in flips_z for fy in flips_y for fx in flips_x]
    else:
        all_t = [(k, fz + fx) for k in ks for fz in flips_z for fx in flips_x]
    identity, rest = all_t[0], all_t[1:]
    order = np.random.default_rng(seed).permutation(len(rest))
    ordered = [identity] + [rest[i] for i in order]
    return [ordered[i % len(ordered)] for i in range(n_samples)]


def apply_transform(x, transform, *, inverse: bool = False):
    """Apply (or undo) a TTA transform to a torch tensor shaped (N, C, *spatial)."""
    import torch

    k, flips = transform
    nd = x.ndim - 2
    dims_yx = (nd, nd + 1)  # Y and X of (N, C, [Z,] Y, X)
    flip_dims = [2 + a for a in flips]
    if not inverse:
        if flip_dims:
            x = torch.flip(x, flip_dims)
        return torch.rot90(x, k, dims_yx) if k else x
    if k:
        x = torch.rot90(x, -k, dims_yx)
    return torch.flip(x, flip_dims) if flip_dims else x


def enable_mc_dropout(net) -> int:
    """Put only the dropout layers of ``net`` in training mode; return how many.

    Raises
    ------
    CracksegError
        If the network has no dropout layers with p > 0 (MC dropout would give
        identical samples).
    """
    import torch

    n = 0
    for m in net.modules():
        if isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0:
            m.train()
            n += 1
    if n == 0:
        raise CracksegError(
            "the model has no dropout layers; use --uncertainty tta instead of mc"
        )
    return n


def predictive_entropy(mean_probs: np.ndarray) -> np.ndarray:
    """Entropy (nats) of mean class probabilities over axis 0.

    Parameters
    ----------
    mean_probs : ndarray, shape (n_classes, ...)
        Class probabilities averaged over posterior samples.

    Returns
    -------
    ndarray of float32, shape (...)
    """
    p = np.clip(mean_probs, 1e-12, 1.0)
    return np.maximum(-(mean_probs * np.log(p)).sum(axis=0), 0).astype(np.float32)


def particle_posterior_counts(instances, sample_bits: dict, n_samples: int, *,
                              chunk=None) -> dict:
    """Per-particle class-voxel counts of every posterior sample.

    This is the format of ``particle_samples.npz``, the per-particle
    posterior handed to the statistics layer::

        label            (n_particles,) uint32   particle label in particles.tif
        envelope_voxels  (n_particles,) int64    voxels of the particle envelope
        crack_voxels     (n_samples, n_particles) int64  crack voxels in sample s
        pore_voxels      (n_samples, n_particles) int64  pore voxels in sample s
        n_samples        ()  int                 number of samples

    so that sample ``s`` of the crack fraction of particle ``i`` is
    ``crack_voxels[s, i] / envelope_voxels[i]``.  The instance map is the one
    of the final segmentation; samples vary the class of each voxel inside
    it, not the particle outlines.

    Parameters
    ----------
    instances : array-like of int, shape (Z, Y, X) or (Y, X)
        Particle labels, 0 = background (may be a lazy/zarr array).
    sample_bits : dict
        ``{"crack": bits, "pore": bits}``, arrays shaped like ``instances``
        whose bit ``s`` marks the voxels sample ``s`` assigned to that class.
    n_samples : int
        Number of samples (bits used).
    chunk : int, optional
        Process in Z slabs of this many slices (bounded memory for lazy inputs).

    Returns
    -------
    dict
        Arrays as listed above.

    Examples
    --------
    >>> import numpy as np
    >>> inst = np.array([[1, 1, 2, 0]], dtype=np.uint32)
    >>> crack = np.array([[0b01, 0b11, 0, 0b10]], dtype=np.uint8)
    >>> out = particle_posterior_counts(inst, {"crack": crack, "pore": np.zeros_like(crack)}, 2)
    >>> out["crack_voxels"].tolist()
    [[2, 0], [1, 0]]
    """
    shape = tuple(instances.shape)
    step = shape[0] if chunk is None else max(1, int(chunk))
    n_max = 0
    for z in range(0, shape[0], step):
        n_max = max(n_max, int(np.asarray(instances[z:z + step]).max(initial=0)))
    size = n_max + 1
    env = np.zeros(size, np.int64)
    counts = {k: np.zeros((n_samples, size), np.int64) for k in sample_bits}
    for z in range(0, shape[0], step):
        inst = np.asarray(instances[z:z + step]).ravel().astype(np.int64)
        env += np.bincount(inst, minlength=size)
        for name, bits in sample_bits.items():
            b = np.asarray(bits[z:z + step]).ravel()
            for s in range(n_samples):
                w = ((b >> s) & 1).astype(bool)
                counts[name][s] += np.bincount(inst[w], minlength=size)
    present = np.flatnonzero(env[1:]) + 1
    out = {"label": present.astype(np.uint32), "envelope_voxels": env[present],
           "n_samples": np.int64(n_samples)}
    for name, c in counts.items():
        out[f"{name}_voxels"] = c[:, present]
    return out
