"""``crackseg stats``: per-particle table and damage distribution of one segmented volume."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "per-particle damage table and distribution statistics with CIs"
DESCRIPTION = """\
Measure every particle of a segmented volume (crack, pore and void
fractions, surface vs internal damage, size, shape, depth, border contact)
and summarise the damage distribution with confidence intervals: spatial
block bootstrap by default (blocks sized from the measured correlation
length), border-truncated particles excluded by default.  Writes
OUT/particles.csv and OUT/summary.json (and OUT/particles.tif when the
instances are computed here).

example:
  crackseg stats out/scan1/segmentation.tif --instances out/scan1/particles.tif -o out/scan1
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("stats", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("segmentation", metavar="SEG", help="semantic label volume (TIFF/Zarr/HDF5/NPY)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--instances", metavar="INST",
                   help="particle instance volume (default: computed from SEG)")
    p.add_argument("--voxel-size", type=float, nargs=3, metavar=("Z", "Y", "X"),
                   help="voxel size in µm (overrides the file's)")
    p.add_argument("--schema", default=None, help="label schema: nmc4 (default) or a YAML file")
    p.add_argument("--depth-axis", type=int, default=0, choices=[0, 1, 2],
                   help="array axis through the electrode thickness (default 0)")
    p.add_argument("--sections", action="store_true",
                   help="SEG is a stack of 2-D sections along axis 0 (particles 2-D, labelled "
                   "per section; default when prediction.json beside SEG says so)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    p.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of every random step (default 0)")
    p.add_argument("--method", choices=["block", "iid"], default="block",
                   help="bootstrap: spatial blocks (default) or iid over particles")
    p.add_argument("--block-size", type=float, default=None, metavar="UM",
                   help="block side in µm (default: 2 x the fitted correlation length)")
    p.add_argument("--border", choices=["exclude", "miles", "include"], default="exclude",
                   help="border-truncated particles: exclude (default), Miles-Lantuejoul "
                   "weighting, or include")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.05], metavar="T",
                   help="crack-fraction thresholds ('damaged', ..., 'severely damaged'); "
                   "default 0.01 0.05")
    p.add_argument("--shell-um", type=float, default=None,
                   help="outer shell thickness counted as particle surface (default 2 voxels)")
    p.add_argument("--posterior", metavar="NPZ",
                   help="particle_samples.npz with posterior samples (default: the one in "
                   "SEG's folder, when present)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress messages")
    p.set_defaults(func=run)


def segmentation_provenance(path) -> dict:
    """Model name, weights sha256 and input recorded in a segmentation file, if any."""
    import json

    from crackseg.io import format_of, split_dataset_path

    p, _ = split_dataset_path(path)
    meta = {}
    try:
        fmt = format_of(p)
        if fmt in ("tiff", "ome-tiff"):
            import tifffile

            with tifffile.TiffFile(p) as tif:
                info = (tif.imagej_metadata or {}).get("Info")
                if info:
                    meta = json.loads(info)
                elif tif.shaped_metadata:
                    meta = dict(tif.shaped_metadata[0])
        elif fmt == "zarr":
            import zarr

            node = zarr.open(str(p), mode="r")
            meta = dict(node.attrs).get("crackseg", {})
    except (OSError, ValueError, TypeError, KeyError):
        meta = {}
    prov = meta.get("provenance", meta) if isinstance(meta, dict) else {}
    return {k: prov.get(k) for k in ("model", "model_sha256", "input") if prov.get(k) is not None}


def run(args) -> int:
    import numpy as np

    from crackseg.errors import InputError
    from crackseg.io import describe_voxel_size, read_volume, write_volume
    from crackseg.labels import load_schema
    from crackseg.pipeline import write_statistics
    from crackseg.stats.table import read_particle_samples

    def say(msg):
        if not args.quiet:
            print(f"crackseg stats: {msg}", file=sys.stderr)

    out = Path(args.output)
    targets = [out / "particles.csv", out / "summary.json"]
    if not args.instances:
        targets.append(out / "particles.tif")
    if not args.overwrite:
        for t in targets:
            if t.exists():
                raise InputError(f"{t}: already exists; pass --overwrite to replace it")
    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence {args.confidence} must be between 0 and 1")
    if args.n_resamples < 100:
        raise InputError(f"--n-resamples {args.n_resamples} is too few; use at least 100")
    from crackseg.sections import stack_beside

    schema = load_schema(args.schema)
    img = read_volume(args.segmentation)
    seg = img.data
    if seg.ndim != 3:
        raise InputError(f"{img.source}: need a 3-D (Z, Y, X) segmentation, got shape {seg.shape}")
    sections = args.sections or stack_beside(args.segmentation)
    if sections:
        say(f"a stack of {seg.shape[0]} sections: particles measured section by section")
    vs = tuple(args.voxel_size) if args.voxel_size else img.voxel_size_um
    if vs is None:
        say("voxel size unknown: working in voxel units (give --voxel-size Z Y X for µm)")
    else:
        say(f"voxel size {describe_voxel_size(vs)}")
    inst = None
    inst_source = None
    if args.instances:
        iimg = read_volume(args.instances)
        inst = iimg.data
        inst_source = iimg.source
        if inst.shape != seg.shape:
            raise InputError(f"{iimg.source}: instance shape {inst.shape} differs from segmentation "
                             f"{img.source} shape {seg.shape}")
    else:
        from crackseg.labels import validate_labels
        from crackseg.particles import particle_instances
        from crackseg.sections import section_instances

        validate_labels(seg, schema, source=img.source)
        say("separating particles (envelope fill + watershed)")
        label = section_instances if sections else particle_instances
        inst = label(seg, schema=schema, voxel_size_um=vs, progress=not args.quiet)
    posterior = None
    post_path = Path(args.posterior) if args.posterior else \
        Path(img.source).parent / "particle_samples.npz"
    if args.posterior or post_path.exists():
        posterior = read_particle_samples(post_path)
        say(f"posterior samples: {posterior[1].shape[0]} from {post_path}")
    prov = {"input": str(Path(args.segmentation)), **segmentation_provenance(args.segmentation),
            "segmentation": str(Path(args.segmentation)), "instances": inst_source or
            str(out / "particles.tif"), "schema": schema.name,
            "posterior_samples": str(post_path) if posterior is not None else None,
            "command": "crackseg stats " + " ".join(sys.argv[2:])
            if len(sys.argv) > 1 and sys.argv[1] == "stats" else None}
    _, summary = write_statistics(
        out, seg, inst, schema=schema, voxel_size_um=vs, posterior=posterior, provenance=prov,
        overwrite=args.overwrite, say=say, source=img.source, sections=sections,
        confidence=args.confidence,
        n_resamples=args.n_resamples, seed=args.seed, method=args.method,
        block_size=args.block_size, border=args.border, thresholds=tuple(args.thresholds),
        depth_axis=args.depth_axis, shell_um=args.shell_um)
    if not args.instances:
        write_volume(out / "particles.tif", np.asarray(inst, dtype=np.uint32), vs,
                     overwrite=args.overwrite, metadata={"provenance": {"segmentation": img.source}})
    m = summary["damage"]["mean"]
    ci = m.get("ci")
    ci_txt = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci and ci[0] is not None else "(no interval)"
    say(f"mean crack_fraction {m['estimate']:.4g} {ci_txt} ({m['method']}, "
        f"{summary['n_particles']} particles); wrote {', '.join(map(str, targets))}")
    return 0
