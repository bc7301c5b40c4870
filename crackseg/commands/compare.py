"""``crackseg compare``: damage of several analysed samples, with effect sizes and tests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "compare the damage of analysed samples (manifest CSV)"
DESCRIPTION = """\
Compare the per-particle damage of analysed volumes listed in a manifest CSV
(columns: path to an analysed folder or its particles.csv, sample, and
metadata such as cycle, soc, c_rate).  Groups are formed by --group-by;
several volumes per group are resampled hierarchically (volumes, then
particles).  Writes OUT/comparison.json, OUT/comparison.csv and
OUT/comparison.png.

example manifest:
  path,sample,cycle
  out/pristine,A0,0
  out/cycled100,B100,100

example:
  crackseg compare manifest.csv -o out/compare --group-by cycle
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help=HELP, description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", metavar="MANIFEST", help="CSV with path, sample and metadata columns")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder")
    p.add_argument("--group-by", default="sample", help="manifest column defining groups (default sample)")
    p.add_argument("--reference", default=None,
                   help="group the others are compared with (default: the first in order)")
    p.add_argument("--quantity", default="crack_fraction", help="particle column (default crack_fraction)")
    p.add_argument("--border", choices=["exclude", "include"], default="exclude",
                   help="border-truncated particles (default exclude)")
    p.add_argument("--confidence", type=float, default=0.95)
    p.add_argument("--n-resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from crackseg._version import __version__
    from crackseg.errors import InputError
    from crackseg.io import atomic_path, write_json
    from crackseg.stats.compare import (
        compare_samples,
        comparison_table,
        load_volumes,
        read_manifest,
    )
    from crackseg.stats.figures import comparison_figure
    from crackseg.stats.summary import json_ready

    out = Path(args.output)
    targets = [out / "comparison.json", out / "comparison.csv", out / "comparison.png"]
    if not args.overwrite:
        for t in targets:
            if t.exists():
                raise InputError(f"{t}: already exists; pass --overwrite to replace it")
    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence {args.confidence} must be between 0 and 1")
    manifest = read_manifest(args.manifest, group_by=args.group_by)
    groups = load_volumes(manifest, group_by=args.group_by, quantity=args.quantity,
                          border=args.border)
    reference = args.reference
    if reference is not None:
        match = [g for g in groups if str(g) == str(reference)]
        if not match:
            raise InputError(f"--reference {reference!r} is not a value of {args.group_by!r} "
                             f"({', '.join(map(str, groups))})")
        reference = match[0]
    if not args.quiet:
        print(f"crackseg compare: {len(manifest)} volumes in {len(groups)} groups by "
              f"{args.group_by!r}", file=sys.stderr)
    result = compare_samples(groups, reference=reference, confidence=args.confidence,
                             n_resamples=args.n_resamples, seed=args.seed)
    result["quantity"] = args.quantity
    result["group_by"] = args.group_by
    result["border"] = args.border
    result["provenance"] = {
        "crackseg_version": __version__, "manifest": str(Path(args.manifest)),
        "volumes": manifest["particles_csv"].tolist(),
        "settings": {"group_by": args.group_by, "quantity": args.quantity, "border": args.border,
                     "confidence": args.confidence, "n_resamples": args.n_resamples,
                     "seed": args.seed, "reference": str(result["reference"])},
    }
    result = json_ready(result)
    table = comparison_table(result)
    fig = comparison_figure(result, groups, quantity=args.quantity, group_by=args.group_by)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(targets[2], overwrite=args.overwrite) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    with atomic_path(targets[1], overwrite=args.overwrite) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    write_json(targets[0], result, overwrite=args.overwrite)
    if not args.quiet:
        for g, c in result["comparisons"].items():
            d = c["difference_of_means"]
            ci = d["ci"] or [float("nan")] * 2
            print(f"crackseg compare: {g} vs {c['reference']}: difference of means "
                  f"{d['estimate']:.4g} [{ci[0]:.4g}, {ci[1]:.4g}], Cliff's delta "
                  f"{c['cliffs_delta']['estimate']:.3f}, Mann-Whitney p "
                  f"{c['mann_whitney']['p_value']:.3g}", file=sys.stderr)
        print(f"crackseg compare: wrote {', '.join(map(str, targets))}", file=sys.stderr)
    return 0
