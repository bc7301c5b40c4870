"""Image files of an output folder: TIFF or OME-Zarr, labels and particle instances.

Volumes above :data:`TIFF_MAX_VOXELS` are written as OME-Zarr under
``format="auto"`` (:func:`output_format`); every file is written atomically
(a temporary name, then a rename), so an interrupted run never leaves a file
that looks complete.

Examples
--------
>>> output_format("auto", (64, 64, 64)), output_format("auto", (1024, 1024, 1024))
('tif', 'zarr')
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crackseg.errors import CracksegError
from crackseg.io import atomic_path, create_zarr_volume, slab_chunks, thin_chunks, write_volume

TIFF_MAX_VOXELS = 1 << 28
"""Largest volume written as TIFF by ``format="auto"`` (about 645^3); larger -> Zarr."""
FORMATS = ("auto", "tif", "zarr")


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else a :class:`~crackseg.errors.CracksegError`."""
    if fmt not in FORMATS:
        raise CracksegError(f"format {fmt!r}: use auto, tif or zarr")
    return fmt


def output_format(fmt: str, shape) -> str:
    """``"tif"`` or ``"zarr"``: ``fmt`` itself, or under ``"auto"`` by the number of voxels."""
    if check_format(fmt) != "auto":
        return fmt
    return "tif" if int(np.prod(shape)) <= TIFF_MAX_VOXELS else "zarr"


def write_image(path, arr, vs, fmt: str, *, overwrite: bool, meta: dict) -> Path:
    """Write a (possibly Zarr) label or entropy array as TIFF or OME-Zarr, atomically.

    Parameters
    ----------
    path : path-like
        ``.tif`` file or ``.zarr`` folder.
    arr : array-like, shape (Z, Y, X) or (Y, X)
        Copied in slabs of its Zarr chunks (or 64 slices) when written as Zarr,
        into chunks as wide but at most 32 planes thick (:func:`crackseg.io.thin_chunks`).
    vs : tuple of float or None
        Voxel size (µm).
    fmt : {"tif", "zarr"}
    """
    path = Path(path)
    if fmt == "tif":
        return write_volume(path, np.asarray(arr[...]), vs, overwrite=overwrite, metadata=meta)
    src = getattr(arr, "chunks", None)
    # thin along axis 0 for the slab readers after it; the source's chunks are copied whole
    chunks = thin_chunks(src) if src is not None else None
    with atomic_path(path, overwrite=overwrite) as tmp:
        dst = create_zarr_volume(tmp, arr.shape, arr.dtype, vs, chunks=chunks, metadata=meta)
        step = (src or (64,))[0]
        for z in range(0, arr.shape[0], step):
            dst[z:z + step] = np.asarray(arr[z:z + step])
    return path


def write_instances(path, seg, label, fmt: str, *, voxel_size_um, overwrite: bool, meta: dict,
                    **options):
    """Particle instances of ``seg`` by ``label``, written to ``path`` as TIFF or OME-Zarr.

    Parameters
    ----------
    path : path-like
        ``particles.tif`` or ``particles.zarr``.
    seg : array-like of int, shape (Z, Y, X) or (Y, X)
        Semantic labels (NumPy for TIFF output; may be lazy for Zarr output,
        which is labelled chunk by chunk straight into the store).
    label : callable
        :func:`crackseg.particles.particle_instances` or
        :func:`crackseg.sections.section_instances`.
    fmt : {"tif", "zarr"}
    voxel_size_um : tuple of float or None
    overwrite : bool
    meta : dict
        Image metadata.
    **options
        Passed to ``label``.

    Returns
    -------
    numpy.ndarray or zarr.Array of uint32
        The instances (the Zarr store opened read-only).
    """
    path = Path(path)
    if fmt == "tif":
        inst = label(seg, voxel_size_um=voxel_size_um, **options)
        write_volume(path, inst, voxel_size_um, overwrite=overwrite, metadata=meta)
        return inst
    shape = tuple(seg.shape)
    with atomic_path(path, overwrite=overwrite) as tmp:
        arr = create_zarr_volume(tmp, shape, np.uint32, voxel_size_um,
                                 chunks=slab_chunks(shape), metadata=meta)
        label(seg, voxel_size_um=voxel_size_um, out=arr, **options)
    import zarr

    return zarr.open_array(str(path / "0"), mode="r")


def write_tiff_slabs(path, arr, vs, *, overwrite: bool, meta: dict, slab: int = 64) -> Path:
    """Write a lazy (Zarr) non-ImageJ array, such as uint32 instances, as TIFF a slab at a time.

    The file is the one :func:`crackseg.io.write_volume` writes from the
    whole array (same pages, compression and metadata), without holding it.

    Parameters
    ----------
    path : path-like
        ``.tif`` file.
    arr : array-like, shape (Z, Y, X), dtype other than uint8, uint16 and float32
    vs : tuple of float or None
        Voxel size (µm).
    slab : int
        Slices read at a time.
    """
    import tifffile

    dtype = np.dtype(arr.dtype)
    if dtype in (np.uint8, np.uint16, np.float32) or len(arr.shape) != 3:
        raise CracksegError(f"{path}: slab-wise TIFF writing is for 3-D volumes of other dtypes "
                            f"than {dtype}")

    def pages():
        for z in range(0, arr.shape[0], slab):
            yield from np.asarray(arr[z:z + slab])

    vs = tuple(float(v) for v in vs) if vs else None
    md = {"axes": "ZYX", "voxel_size_um": list(vs) if vs else None, **(meta or {})}
    with atomic_path(path, overwrite=overwrite) as tmp:
        tifffile.imwrite(tmp, pages(), shape=tuple(arr.shape), dtype=dtype,
                         resolution=(1.0 / vs[-1], 1.0 / vs[-2]) if vs else None, metadata=md,
                         compression="zlib")
    return Path(path)


def max_label(instances, slab: int = 64) -> int:
    """Largest label of an instance array (read in slabs of ``slab`` slices along axis 0).

    Examples
    --------
    >>> max_label(np.array([[0, 3], [7, 1]]))
    7
    """
    return max((int(np.asarray(instances[z:z + slab]).max(initial=0))
                for z in range(0, instances.shape[0], slab)), default=0)
