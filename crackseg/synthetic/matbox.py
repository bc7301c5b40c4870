"""Particle geometry taken from a real NMC cathode (NREL MATBOX labels).

The file ``nmc_matbox_labels.tif`` (ZYX, uint8: 0 pore, 1 NMC, 2 carbon-binder;
see ``../shared/data/README.md``) holds the active-material phase segmented
from X-ray CT of a calendered NMC cathode.  A random crop of it is split into
particles by a distance-transform watershed, which gives real particle shapes
and packing for the phantoms (``generate_electrode(geometry="matbox")``).

Examples
--------
>>> from crackseg.synthetic.matbox import default_matbox_path
>>> default_matbox_path().name
'nmc_matbox_labels.tif'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from crackseg.errors import InputError
from crackseg.io import read_volume

NMC_VALUE = 1
"""Label value of the active material in the MATBOX file."""


def default_matbox_path() -> Path:
    """The full file in ``../shared/data`` beside the repository when there, else the
    crop in the repository's ``data/`` (data/README.md)."""
    repo = Path(__file__).resolve().parents[2]
    shared = repo.parent / "shared" / "data" / "nmc_matbox_labels.tif"
    return shared if shared.exists() else repo / "data" / "nmc_matbox_labels.tif"


def matbox_instances(shape, rng: np.random.Generator, *, path=None,
                     min_distance_vox: int = 5, smoothing_vox: float = 1.0,
                     min_size_vox: int = 30) -> tuple[np.ndarray, dict]:
    """Particle instances of a random crop of the real NMC labels.

    Parameters
    ----------
    shape : tuple of 3 int
        Crop shape (Z, Y, X); at most the file's shape.
    rng : numpy.random.Generator
        Chooses the crop position.
    path : path-like, optional
        Label file (default :func:`default_matbox_path`).
    min_distance_vox : int
        Minimum distance between particle centres (watershed seeds), voxels.
    smoothing_vox : float
        Gaussian smoothing of the distance map before seeding, voxels.
    min_size_vox : int
        Particles smaller than this are merged into the matrix.

    Returns
    -------
    instances : ndarray of uint32, shape ``shape``
        0 = matrix, 1..n particles (consecutive).
    info : dict
        ``centre_vox`` (n, 3) deepest point of each particle, ``depth_vox``
        (n,) its distance to the surface, ``source``, ``offset`` of the crop.
    """
    from skimage.feature import peak_local_max
    from skimage.segmentation import relabel_sequential, watershed

    p = Path(path) if path is not None else default_matbox_path()
    if not p.exists():
        raise InputError(f"{p}: real NMC label file not found; pass its path or use geometry='spheres'")
    full = read_volume(p).data
    if full.ndim != 3:
        raise InputError(f"{p}: expected a 3-D label volume")
    shape = tuple(int(s) for s in shape)
    if any(s > f for s, f in zip(shape, full.shape)):
        raise InputError(f"{p}: crop {shape} is larger than the real volume {tuple(full.shape)}; "
                         "ask for a smaller phantom shape")
    off = [int(rng.integers(0, f - s + 1)) for s, f in zip(shape, full.shape)]
    solid = np.asarray(full[tuple(slice(o, o + s) for o, s in zip(off, shape))]) == NMC_VALUE
    dist = ndi.distance_transform_edt(solid)
    smooth = ndi.gaussian_filter(dist, smoothing_vox) if smoothing_vox > 0 else dist
    peaks = peak_local_max(smooth, min_distance=min_distance_vox, labels=solid.astype(np.int32),
                           exclude_border=False)
    markers = np.zeros(shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    inst = watershed(-smooth, markers, mask=solid)
    sizes = np.bincount(inst.ravel())
    small = sizes < min_size_vox
    small[0] = False
    inst[small[inst]] = 0
    inst, _, _ = relabel_sequential(inst)
    inst = inst.astype(np.uint32)
    n = int(inst.max())
    centre = np.zeros((n, 3))
    depth = np.zeros(n)
    if n:
        pos = ndi.maximum_position(dist, inst, np.arange(1, n + 1))
        centre = np.asarray(pos, dtype=float).reshape(-1, 3)
        depth = np.asarray(ndi.maximum(dist, inst, np.arange(1, n + 1)), dtype=float)
    return inst, {"centre_vox": centre, "depth_vox": depth, "source": str(p), "offset": off}
