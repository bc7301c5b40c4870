"""``crackseg run``: tomogram in, damage distribution out (predict -> particles -> stats -> report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from crackseg.commands._options import add_annotation_options, messages

DESCRIPTION = """\
The main job. For each input: segment it with the model (as `crackseg predict`,
on Dask workers with --workers/--dask),
separate the particles, measure every particle and summarise the damage
distribution with confidence intervals (as `crackseg stats`), and write a
self-contained report.html. Each input gets OUT/<name>/. Finished steps are
skipped on a re-run (resume); --overwrite redoes them. A broken input is
reported and skipped; the exit status is non-zero if any input failed.

A 3-D input given to a 2-D model (--model nmc4-synthetic-2d-v1) is a stack
of sections along axis 0: each section is segmented on its own, particles are
2-D and labelled per section, and the statistics and report are those of a
stack of sections (one row per particle profile, with its section).

When an input is a manifest CSV with metadata columns besides `path` (e.g.
sample, cycle, soc, c_rate), the analysed samples are then compared
(as `crackseg compare`, grouped by --group-by) into OUT/comparison/.

examples:
  crackseg run scan.tif -o out
  crackseg run scans/*.tif --model models/nmc4-synthetic-v1 -o out --uncertainty tta
  crackseg run manifest.csv -o out --group-by cycle
"""


def register(subparsers) -> None:
    from crackseg.commands.predict import add_predict_arguments

    p = subparsers.add_parser("run", help="predict, particles, statistics and report in one go",
                              description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_predict_arguments(p)
    s = p.add_argument_group("statistics")
    s.add_argument("--confidence", type=float, default=0.95, help="interval level (default 0.95)")
    s.add_argument("--n-resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    s.add_argument("--method", choices=["block", "iid"], default="block",
                   help="bootstrap: spatial blocks (default) or iid over particles")
    s.add_argument("--border", choices=["exclude", "miles", "include"], default="exclude",
                   help="border-truncated particles (default: exclude)")
    s.add_argument("--thresholds", type=float, nargs="+", default=[0.01, 0.05], metavar="T",
                   help="crack-fraction thresholds, 'damaged' ... 'severely damaged' "
                   "(default 0.01 0.05)")
    s.add_argument("--depth-axis", type=int, default=0, choices=[0, 1, 2],
                   help="array axis through the electrode thickness (default 0; for a stack "
                   "of sections 0 is through the stack)")
    s.add_argument("--group-by", default="sample",
                   help="manifest column that defines the compared groups (default: sample)")
    s.add_argument("--no-report", action="store_true", help="skip report.html")
    add_annotation_options(s)
    p.set_defaults(func=run)


def stats_options_from_args(args) -> dict:
    """Settings of the statistics step from parsed arguments."""
    from crackseg.errors import InputError
    from crackseg.stats.annotation_error import parse_slices

    if not 0 < args.confidence < 1:
        raise InputError(f"--confidence {args.confidence} must be between 0 and 1")
    if args.n_resamples < 100:
        raise InputError(f"--n-resamples {args.n_resamples} is too few; use at least 100")
    return {"confidence": args.confidence, "n_resamples": args.n_resamples, "seed": args.seed,
            "method": args.method, "border": args.border, "thresholds": tuple(args.thresholds),
            "depth_axis": args.depth_axis, "annotations": args.annotations,
            "annotated_slices": parse_slices(args.annotated_slices)}


def _check_annotations(args, inputs, stats_options: dict) -> None:
    """One input, and annotations that fit it (shape, values, slices), before any prediction."""
    from crackseg.errors import CracksegError
    from crackseg.io import read_volume
    from crackseg.labels import load_schema
    from crackseg.model_io import read_card, resolve_model_path
    from crackseg.stats.annotation_error import annotated_sections

    if len(inputs) != 1:
        raise CracksegError(f"--annotations annotate one volume; {len(inputs)} inputs given: "
                            "run each annotated input on its own")
    kw = {"channel": args.channel} if args.channel is not None else {}
    shape = read_volume(inputs[0], lazy=True, **kw).data.shape
    schema = load_schema(read_card(resolve_model_path(args.model)).get("schema"))
    annotated_sections(args.annotations, shape, stats_options["annotated_slices"], schema=schema,
                       source=str(args.annotations))


def run(args) -> int:
    from crackseg.batch import expand_inputs, output_folders
    from crackseg.commands.predict import options_from_args
    from crackseg.errors import CracksegError
    from crackseg.model_io import load_model
    from crackseg.pipeline import analyse_one_safely

    say = messages("run", args.quiet)
    inputs = expand_inputs(args.inputs)
    if not inputs:
        raise CracksegError("no inputs found")
    predict_options = options_from_args(args)
    stats_options = stats_options_from_args(args)
    if args.annotations:
        _check_annotations(args, inputs, stats_options)
    model = load_model(args.model)
    folders = output_folders(inputs, args.out)
    results = []
    if args.workers or args.dask:
        # Segmentation (the expensive step) runs on the Dask workers; the finished
        # folders are then picked up below, where prediction is skipped.
        from crackseg.scaleout import run_distributed

        for r in run_distributed(inputs, args.out, model=args.model, address=args.dask,
                                 n_workers=args.workers, **predict_options):
            if r["status"] == "failed":
                results.append(r)
        inputs = [s for s in inputs if s not in {r["input"] for r in results}]
    for src in inputs:
        r = analyse_one_safely(src, folders[src], model=model, stats_options=stats_options,
                               report=not args.no_report, say=say, **predict_options)
        results.append(r)
        if r["status"] == "failed":
            print(f"crackseg run: {r['error']}", file=sys.stderr)
            continue
        m = r["summary"]["damage"]["mean"]
        ci = m.get("ci") or [None, None]
        ci_txt = f"[{ci[0]:.4g}, {ci[1]:.4g}]" if ci[0] is not None else "(no interval)"
        stack = r["summary"].get("stack")
        what = (f"particle profiles in {stack['n_sections']} sections" if stack else
                "particles")
        say(f"{src}: {r['summary']['n_particles']} {what}, mean crack_fraction "
            f"{m['estimate']:.4g} {ci_txt}; report {r['report'] or '-'}")
        if m.get("annotation_error"):
            from crackseg.stats.annotation_error import corrected_line

            say(f"{src}: {corrected_line(m['annotation_error'])}")
        from crackseg.domain import flag_lines

        for line in flag_lines(r["summary"].get("domain")):  # printed even with --quiet
            print(f"crackseg run: {src}: {line}", file=sys.stderr)
    manifests = [s for s in args.inputs if str(s).lower().endswith(".csv")]
    done = [r for r in results if r["status"] == "done"]
    if manifests and len(done) >= 2:
        try:
            from crackseg.pipeline import compare_manifest

            compare_manifest(manifests[0], folders, Path(args.out), group_by=args.group_by,
                             seed=args.seed, n_resamples=args.n_resamples,
                             border="include" if args.border == "include" else "exclude",
                             say=say)
        except CracksegError as e:
            print(f"crackseg run: comparison failed: {e}", file=sys.stderr)
            results.append({"input": "comparison", "status": "failed",
                            "error": f"comparison failed: {e}"})
    failed = [r for r in results if r["status"] == "failed"]
    if failed or not args.quiet:
        # Each failure was printed once, as it happened.
        print(f"crackseg run: {len(done)} analysed, {len(failed)} failed"
              + (" (errors above)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
