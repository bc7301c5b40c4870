"""``crackseg compare``: damage of several analysed samples, with effect sizes and tests."""

from __future__ import annotations

import argparse
from pathlib import Path

from crackseg.commands._options import add_output_options, messages

HELP = "compare the damage of analysed samples (manifest CSV)"
DESCRIPTION = """\
Compare the per-particle damage of analysed volumes listed in a manifest CSV
(columns: path to an analysed folder or its particles.csv, sample, and
metadata such as cycle, soc, c_rate).  Groups are formed by --group-by;
several volumes per group are resampled hierarchically (volumes, then
particles).  Writes OUT/comparison.json, OUT/comparison.csv,
OUT/comparison.png and OUT/report.html.

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
    add_output_options(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from crackseg.pipeline import write_comparison

    say = messages("compare", args.quiet)
    result = write_comparison(args.manifest, args.output, group_by=args.group_by,
                              reference=args.reference, quantity=args.quantity,
                              border=args.border, confidence=args.confidence,
                              n_resamples=args.n_resamples, seed=args.seed,
                              overwrite=args.overwrite, say=say)
    for g, c in result["comparisons"].items():
        d = c["difference_of_means"]
        ci = d["ci"] or [float("nan")] * 2
        say(f"{g} vs {c['reference']}: difference of means {d['estimate']:.4g} "
            f"[{ci[0]:.4g}, {ci[1]:.4g}], Cliff's delta {c['cliffs_delta']['estimate']:.3f}, "
            f"Mann-Whitney p {c['mann_whitney']['p_value']:.3g}")
    say(f"wrote {Path(args.output) / 'report.html'}")
    return 0
