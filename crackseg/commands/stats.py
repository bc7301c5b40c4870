"""``crackseg stats``: per-particle table and damage distribution of one segmented volume."""

from __future__ import annotations

import argparse
import sys

from crackseg.commands._options import (
    add_annotation_options,
    add_min_volume_option,
    add_output_options,
    add_schema_option,
    add_sections_option,
    messages,
)

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
    add_schema_option(p)
    add_min_volume_option(p, note="; used when particles are labelled here, not with "
                          "--instances")
    p.add_argument("--depth-axis", type=int, default=0, choices=[0, 1, 2],
                   help="array axis through the electrode thickness (default 0)")
    add_sections_option(p)
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
    add_annotation_options(p)
    add_output_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from crackseg.pipeline import segmentation_statistics
    from crackseg.stats.annotation_error import corrected_line, parse_slices

    say = messages("stats", args.quiet)
    command = ("crackseg stats " + " ".join(sys.argv[2:])
               if len(sys.argv) > 1 and sys.argv[1] == "stats" else None)
    summary, written = segmentation_statistics(
        args.segmentation, args.output, instances=args.instances, schema=args.schema,
        voxel_size_um=args.voxel_size, sections=args.sections, posterior=args.posterior,
        min_volume_um3=args.min_volume, overwrite=args.overwrite, progress=not args.quiet,
        say=say, command=command, confidence=args.confidence, n_resamples=args.n_resamples,
        seed=args.seed, method=args.method, block_size=args.block_size, border=args.border,
        thresholds=tuple(args.thresholds), depth_axis=args.depth_axis, shell_um=args.shell_um,
        annotations=args.annotations, annotated_slices=parse_slices(args.annotated_slices))
    m = summary["damage"]["mean"]
    ci = m.get("ci")
    ci_txt = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci and ci[0] is not None else "(no interval)"
    say(f"mean crack_fraction {m['estimate']:.4g} {ci_txt} ({m['method']}, "
        f"{summary['n_particles']} particles); wrote {', '.join(map(str, written))}")
    if m.get("annotation_error"):
        say(corrected_line(m["annotation_error"]))
    return 0
