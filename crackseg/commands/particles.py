"""``crackseg particles``: label particle instances in a segmentation."""

from __future__ import annotations

import sys

from crackseg.commands._options import (
    add_format_option,
    add_min_volume_option,
    add_output_options,
    add_schema_option,
    add_sections_option,
)

DESCRIPTION = """\
Label every particle of a semantic segmentation (uint8, schema nmc4 unless --schema):
each particle's envelope (solid + enclosed cracks and pores, closed and hole-filled) is
split from touching neighbours by a watershed of its distance map seeded by h-maxima.
Writes OUT/particles.tif (uint32; .zarr for volumes above ~645^3 voxels).
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("particles", help="label particle instances in a segmentation",
                              description=DESCRIPTION)
    p.add_argument("seg", help="segmentation file (TIFF, Zarr, HDF5, NPY)")
    p.add_argument("-o", "--out", required=True, help="output folder")
    add_schema_option(p, "label schema name or YAML (default: nmc4)")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="UM",
                   help="voxel size in µm (one value, or Z Y X), overriding the file's")
    add_min_volume_option(p)
    p.add_argument("--h", type=float, default=None,
                   help="seed height of the distance maxima in voxels; larger merges more "
                   "(default: 0.5)")
    p.add_argument("--chunk", type=int, default=None, metavar="N",
                   help="process in chunks of N^3 voxels (default: whole volume up to 256^3)")
    add_format_option(p, "output format (default: tif, zarr for big volumes)")
    add_sections_option(p)
    add_output_options(p, overwrite="replace an existing output", quiet="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from crackseg.pipeline import segmentation_particles

    r = segmentation_particles(
        args.seg, args.out, schema=args.schema, voxel_size_um=args.voxel_size,
        min_volume_um3=args.min_volume, h=args.h, chunk=args.chunk, fmt=args.format,
        sections=args.sections, overwrite=args.overwrite, progress=not args.quiet)
    if not args.quiet:
        print(f"{r['source']}: {r['n_particles']} particles ({r['n_border']} touching the "
              f"border) -> {r['path']}", file=sys.stderr)
    return 0
