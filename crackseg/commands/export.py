"""``crackseg export``: turn a training run or checkpoint into a model directory."""

from __future__ import annotations

from crackseg.commands._options import add_output_options

DESCRIPTION = """\
Write a model directory (weights.safetensors, model_card.json, README.md) from a training
run folder (its newest last.ckpt) or a .ckpt file. Optionally evaluate it on held-out
phantoms and record per-class Dice (all voxels) in the card. Given a model directory instead,
record new benchmark results (--validation) or a crack clean-up threshold in its card and
README, weights unchanged.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a training run to a model directory",
                              description=DESCRIPTION)
    p.add_argument("run", metavar="RUN_DIR_OR_CKPT",
                   help="run folder or checkpoint file; or a model directory, whose card gets "
                        "the --validation records and --crack-solid-contact (weights unchanged)")
    p.add_argument("-o", "--output", required=True, help="model directory to write")
    p.add_argument("--name", help="model name (default: the output folder name)")
    p.add_argument("--description", default="", help="one-line description for the card")
    p.add_argument("--reproduce", help="command that reproduces the model (recorded in the card)")
    p.add_argument("--eval-phantoms", type=int, default=0, metavar="N",
                   help="evaluate on N held-out phantoms (crackseg.synthetic) and record Dice")
    p.add_argument("--eval-seed", type=int, default=1000,
                   help="first seed of the evaluation phantoms (default 1000)")
    p.add_argument("--eval-shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help="evaluation phantom shape (default: the training phantoms')")
    p.add_argument("--calibrate-phantoms", type=int, default=0, metavar="N",
                   help="fit per-class output offsets on the run's N validation phantoms "
                        "(fully labelled; seeds recorded by the recipe) and fold them into the "
                        "output layer")
    p.add_argument("--validation", nargs="+", default=[], metavar="JSON",
                   help="benchmark results to record in the card's validation and README "
                        "(benchmarks/results/model_domain_*.json, zero_shot_real*.json)")
    p.add_argument("--crack-solid-contact", type=float, metavar="F",
                   help="record the crack clean-up threshold in the card: after prediction, crack "
                        "regions touching particle or pore on less than this share of their faces "
                        "become matrix (crackseg.crack_support; e.g. 0.5)")
    add_output_options(p, overwrite="replace an existing directory", quiet="no progress output")
    p.set_defaults(func=run)


def _validation(paths) -> dict:
    """Benchmark results by benchmark name, for the card's ``validation``."""
    import json
    from pathlib import Path

    from crackseg.errors import InputError

    out = {}
    for p in paths:
        try:
            rec = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: cannot read benchmark results ({e})") from None
        name = rec.get("benchmark")
        if not name:
            raise InputError(f"{p}: not a crackseg benchmark results file (no 'benchmark' key)")
        out[str(name).split("_nmc4")[0]] = {k: v for k, v in rec.items() if k != "machine"}
    return out


def run(args) -> int:
    from pathlib import Path

    from crackseg.data import synthetic_pairs
    from crackseg.errors import InputError
    from crackseg.export import export_model, read_checkpoint, update_model_card

    if (Path(args.run) / "model_card.json").is_file():
        given = [f for f, v in (("--name", args.name), ("--description", args.description),
                                ("--reproduce", args.reproduce),
                                ("--eval-phantoms", args.eval_phantoms),
                                ("--calibrate-phantoms", args.calibrate_phantoms)) if v]
        if given:
            raise InputError(f"{args.run} is a model directory: only --validation and "
                             f"--crack-solid-contact update it ({', '.join(given)} need the "
                             "training run)")
        print(update_model_card(args.run, args.output, overwrite=args.overwrite,
                                validation=_validation(args.validation),
                                min_crack_solid_contact=args.crack_solid_contact))
        return 0
    volumes, desc, cal, cal_desc = None, None, None, ""
    _, info = read_checkpoint(args.run)
    data = (info.get("training") or {}).get("data") or {}
    syn = data.get("synthetic") or {}
    if args.calibrate_phantoms:
        if not data.get("val_seeds") or not syn.get("shape"):
            raise InputError("--calibrate-phantoms needs a run trained on synthetic phantoms "
                             "(data.synthetic in its recipe)")
        seeds = data["val_seeds"][: args.calibrate_phantoms]
        cal = [(im, full) for s in seeds for im, _, full in synthetic_pairs(
            1, syn.get("shape"), seed=s, sparse_every=None, **(syn.get("phantom") or {}))]
        cal_desc = f"validation phantoms seeds {seeds}, shape {syn.get('shape')}"
    if args.eval_phantoms:
        shape = args.eval_shape or syn.get("shape") or [96, 96, 96]
        phantom = syn.get("phantom") or {}
        seeds = list(range(args.eval_seed, args.eval_seed + args.eval_phantoms))
        volumes = [(im, full) for im, _, full in synthetic_pairs(
            args.eval_phantoms, shape, seed=args.eval_seed, sparse_every=None, **phantom)]
        desc = f"held-out phantoms seeds {seeds[0]}..{seeds[-1]}, shape {list(shape)}, settings {phantom}"
    out = export_model(args.run, args.output, name=args.name, overwrite=args.overwrite,
                       evaluate_on=volumes, evaluation_note=desc or "", calibrate_on=cal,
                       calibration_note=cal_desc,
                       description=args.description, reproduce=args.reproduce, quiet=args.quiet,
                       validation=_validation(args.validation),
                       min_crack_solid_contact=args.crack_solid_contact)
    print(out)
    return 0
