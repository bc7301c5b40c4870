"""``crackseg report``: the HTML report of an analysed folder."""

from __future__ import annotations

import sys

from crackseg.commands._options import add_output_options

DESCRIPTION = """\
Write OUT_DIR/report.html, a self-contained page (figures embedded, no network needed)
with orthogonal slices and the segmentation, particles coloured by damage, the damage
histogram with its CI, damage vs depth, the representativeness of small-sample
protocols, uncertainty (when computed), headline numbers and provenance. Figures are
also saved as PNG in OUT_DIR/figures/. OUT_DIR is a folder written by `crackseg run`, or
by `crackseg predict` followed by `crackseg stats`.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("report", help="HTML report of an analysed folder",
                              description=DESCRIPTION)
    p.add_argument("folder", metavar="OUT_DIR", help="analysed folder (with summary.json)")
    p.add_argument("--image", default=None,
                   help="input image for the slice figures (default: the input recorded in "
                   "summary.json)")
    add_output_options(p, overwrite=None, quiet="print nothing on success")
    p.set_defaults(func=run)


def run(args) -> int:
    from crackseg.report import write_report

    path = write_report(args.folder, image=args.image, overwrite=True)
    if not args.quiet:
        print(f"crackseg report: wrote {path}", file=sys.stderr)
    return 0
