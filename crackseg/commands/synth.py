"""``crackseg synth``: write a labelled synthetic electrode phantom."""

from __future__ import annotations

import argparse
import sys
import time

from crackseg.commands._options import add_output_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="generate a labelled synthetic electrode phantom",
        description="Generate a synthetic electrode tomogram with full and sparse labels, "
        "particle instances, a per-particle truth table and the generating parameters "
        "(image.tif, labels.tif, labels_sparse.tif, instances.tif, truth.csv, params.json).",
    )
    p.add_argument("out", help="output folder (created; must not exist or be empty)")
    p.add_argument("--shape", type=int, nargs=3, default=(128, 128, 128), metavar=("Z", "Y", "X"),
                   help="volume shape in voxels, axis 0 = depth (default: 128 128 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--sparse-every", type=int, default=12, metavar="K",
                   help="annotate every K-th slice in labels_sparse.tif (default: 12)")
    p.add_argument("--sparse-axes", type=int, nargs="+", default=[0, 1], metavar="AXIS",
                   help="axes of the annotated slices (default: 0 1)")
    p.add_argument("--voxel-size", type=float, default=0.5, metavar="UM",
                   help="isotropic voxel size in micrometres (default: 0.5)")
    p.add_argument("--snr", type=float, default=None,
                   help="signal-to-noise ratio of the image (default: the generator's)")
    p.add_argument("--dtype", choices=("uint8", "uint16", "float32"), default="uint16",
                   help="image type (default: uint16)")
    p.add_argument("--correlation-length", type=float, default=None, metavar="UM",
                   help="correlation length of the damage hot spots in µm (default: the generator's)")
    p.add_argument("--geometry", choices=("spheres", "matbox"), default="spheres",
                   help="particle shapes: packed perturbed spheres, or a crop of the real NMC "
                   "labels in ../shared/data (default: spheres)")
    p.add_argument("--no-image", action="store_true",
                   help="skip the imaging model (labels, instances and truth only; fast)")
    add_output_options(p, overwrite="replace an existing output folder",
                       quiet="no progress or summary output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from crackseg.errors import InputError
    from crackseg.synthetic import generate_electrode, write_phantom
    from crackseg.synthetic.output import describe_files

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise InputError(f"{out}: already exists and is not an empty folder; "
                         "pass --overwrite to replace it")
    if args.sparse_every < 1:
        raise InputError(f"--sparse-every must be >= 1, got {args.sparse_every}")
    kwargs = {}
    if args.snr is not None:
        kwargs["snr"] = args.snr
    if args.correlation_length is not None:
        if args.correlation_length <= 0:
            raise InputError("--correlation-length must be positive")
        kwargs["correlation_length_um"] = args.correlation_length
    t0 = time.perf_counter()
    phantom = generate_electrode(tuple(args.shape), seed=args.seed, voxel_size_um=args.voxel_size,
                                 dtype=args.dtype, imaging=not args.no_image,
                                 geometry=args.geometry,
                                 progress=not args.quiet, **kwargs)
    files = write_phantom(phantom, out, sparse_every=args.sparse_every,
                          sparse_axes=tuple(args.sparse_axes), overwrite=args.overwrite)
    if not args.quiet:
        p = phantom.params
        print(f"phantom {tuple(args.shape)} seed {args.seed}: {p['packing']['n_particles']} particles, "
              f"solid fraction {p['packing']['solid_fraction_realised']:.3f}, "
              f"mean crack fraction {p['realised']['mean_crack_fraction']:.4f} "
              f"(superpopulation {p['true_mean_crack_fraction']:.4f}), "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
        print(describe_files(files), file=sys.stderr)
    return 0
