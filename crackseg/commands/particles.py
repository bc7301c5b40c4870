"""``crackseg particles``: label particle instances in a segmentation."""

from __future__ import annotations

import sys

DESCRIPTION = (
    "Label every particle of a semantic segmentation (uint8, schema nmc4 unless --schema): "
    "each particle's envelope (solid + enclosed cracks and pores, closed and hole-filled) is "
    "split from touching neighbours by a watershed of its distance map seeded by h-maxima. "
    "Writes OUT/particles.tif (uint32; .zarr for volumes above ~645^3 voxels)."
)


def register(subparsers) -> None:
    p = subparsers.add_parser("particles", help="label particle instances in a segmentation",
                              description=DESCRIPTION)
    p.add_argument("seg", help="segmentation file (TIFF, Zarr, HDF5, NPY)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--schema", default=None, help="label schema name or YAML (default: nmc4)")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="UM",
                   help="voxel size in µm (one value, or Z Y X), overriding the file's")
    p.add_argument("--min-volume", type=float, default=None, metavar="UM3",
                   help="drop particles smaller than this (µm³; needs a voxel size; "
                   "default: 27 voxels)")
    p.add_argument("--h", type=float, default=None,
                   help="seed height of the distance maxima in voxels; larger merges more "
                   "(default: 0.5)")
    p.add_argument("--chunk", type=int, default=None, metavar="N",
                   help="process in chunks of N^3 voxels (default: whole volume up to 256^3)")
    p.add_argument("--format", choices=("auto", "tif", "zarr"), default="auto",
                   help="output format (default: tif, zarr for big volumes)")
    p.add_argument("--sections", action="store_true",
                   help="SEG is a stack of 2-D sections along axis 0: label particles section "
                   "by section (default when prediction.json beside SEG says so)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from crackseg.batch import TIFF_MAX_VOXELS
    from crackseg.errors import CracksegError
    from crackseg.io import atomic_path, create_zarr_volume, read_volume, write_volume
    from crackseg.labels import load_schema
    from crackseg.particles import DEFAULT_H, border_labels, particle_instances
    from crackseg.sections import section_instances, stack_beside, stack_border_labels

    schema = load_schema(args.schema)
    img = read_volume(args.seg, lazy=True)
    sections = args.sections or stack_beside(args.seg)
    if sections and img.ndim != 3:
        raise CracksegError(f"{img.source}: a stack of sections is 3-D (Z, Y, X); got shape "
                            f"{img.shape}")
    label = section_instances if sections else particle_instances
    border = stack_border_labels if sections else border_labels
    vs = img.voxel_size_um
    if args.voxel_size:
        if len(args.voxel_size) not in (1, img.ndim):
            raise CracksegError(f"--voxel-size takes one value or {img.ndim}")
        vs = tuple(float(v) for v in np.broadcast_to(args.voxel_size, (img.ndim,)))
    n_vox = int(np.prod(img.shape))
    fmt = args.format if args.format != "auto" else ("tif" if n_vox <= TIFF_MAX_VOXELS else "zarr")
    out = Path(args.out) / f"particles.{'tif' if fmt == 'tif' else 'zarr'}"
    if out.exists() and not args.overwrite:
        raise CracksegError(f"{out}: already exists; pass --overwrite to replace it")
    chunk = args.chunk or (256 if n_vox > 256**3 else None)
    kw = dict(schema=schema, voxel_size_um=vs, min_volume_um3=args.min_volume,
              h=DEFAULT_H if args.h is None else args.h, chunk_size=chunk,
              progress=not args.quiet, scratch=Path(args.out))
    Path(args.out).mkdir(parents=True, exist_ok=True)
    data = img.data if chunk else np.asarray(img.data[...])
    from crackseg.labels import validate_labels

    if chunk is None:
        validate_labels(data, schema, source=img.source)
    if fmt == "tif":
        inst = label(data, **kw)
        write_volume(out, inst, vs, overwrite=args.overwrite,
                     metadata={"crackseg": "particles", "source": img.source})
    else:
        with atomic_path(out, overwrite=args.overwrite) as tmp:
            arr = create_zarr_volume(tmp, img.shape, np.uint32, vs,
                                     chunks=tuple(min(256, s) for s in img.shape),
                                     metadata={"crackseg": "particles", "source": img.source})
            label(data, out=arr, **kw)
        import zarr

        inst = zarr.open_array(str(out / "0"), mode="r")
    n = max((int(np.asarray(inst[z:z + 64]).max(initial=0)) for z in range(0, img.shape[0], 64)),
            default=0)
    if not args.quiet:
        print(f"{img.source}: {n} particles ({border(inst).size} touching the border) "
              f"-> {out}", file=sys.stderr)
    return 0
