"""``crackseg finetune``: adapt a model to a new material, imaging setting or label set."""

from __future__ import annotations

import sys
import time

from crackseg.commands._options import add_model_option

DESCRIPTION = """\
Fine-tune a model directory on a few annotated images (label 255 = not annotated) within a
time budget, and write a new model directory whose card records its parent, the training
time and, with two or more annotated slices or images, cross-validated Dice per class with
its spread. Give images, labels and minutes; every other setting has a measured default.
With --schema the output layer is re-initialised for the new label set. Inputs are checked
before training starts; an interrupted run resumes when the same command is run again.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model on annotated images",
                              description=DESCRIPTION)
    add_model_option(p, help="parent model directory or shipped name (default: the default "
                     "model)")
    p.add_argument("--image", action="append", required=True, help="image (repeat for more)")
    p.add_argument("--labels", action="append", required=True,
                   help="label image for the preceding --image (255 = not annotated); a "
                        "corrected `crackseg suggest-slices` template works as it is")
    p.add_argument("-o", "--output", required=True, help="new model directory")
    p.add_argument("--schema", help="label schema YAML (or built-in name) of the new labels")
    p.add_argument("--minutes", "--max-minutes", dest="minutes", type=float, default=None,
                   help="time budget of the whole fine-tuning, validation included "
                        "(default 10)")
    p.add_argument("--max-steps", type=int, default=None,
                   help="optional step budget of the final model (whichever ends first)")
    p.add_argument("--validation-share", type=float, default=None,
                   help="share of the budget for cross-validation over annotated slices "
                        "(default 0.2; 0 = none)")
    p.add_argument("--folds", type=int, default=5, help="at most this many folds (default 5)")
    p.add_argument("--freeze-encoder", action="store_true", default=None,
                   help="train the decoder only")
    p.add_argument("--bn", choices=("frozen", "train"), default=None,
                   help="BatchNorm statistics of older models: frozen (default) or updated")
    p.add_argument("--no-augment", action="store_true", help="no imaging changes of the patches")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default 2e-3)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="patches per step (default 8 for 2-D, 2 for 3-D models)")
    p.add_argument("--patch-size", type=int, nargs="+", help="patch shape (default: the parent's)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--run-dir", help="folder for the plan, logs and checkpoints "
                                     "(default runs/finetune-NAME)")
    p.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path",
                   help="resume the final training from this checkpoint")
    p.add_argument("--device", default="auto", help="cpu, gpu or auto (default)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def summary(card: dict) -> str:
    """Two lines on what the fine-tuning did and how well it validates."""
    ft = card["training"]["finetune"]
    lines = [f"{ft['steps_done']} steps of the final model; {ft['optimiser_step_seconds']:.0f} "
             f"of {ft['seconds']:.0f} s ({100 * ft['train_fraction']:.0f} %) in optimiser steps"]
    m = card.get("metrics") or {}
    if m.get("n_folds"):
        lines.append(f"{m['n_folds']}-fold validation Dice: " + ", ".join(
            f"{k} {v:.3f} ± {m['dice_sd'][k] or 0:.3f}" for k, v in m["dice"].items()
            if v is not None))
    elif m.get("validation"):
        lines.append(f"validation: {m['validation']}")
    return "\n".join(lines)


def run(args) -> int:
    from crackseg.errors import InputError
    from crackseg.finetune import finetune_model
    from crackseg.model_io import read_card

    t0 = time.time()
    if len(args.image) != len(args.labels):
        raise InputError(f"{len(args.image)} --image but {len(args.labels)} --labels; give one "
                         "--labels per --image")
    try:
        out = finetune_model(
            args.model, args.image, args.labels, args.output, schema=args.schema,
            minutes=args.minutes, max_steps=args.max_steps, lr=args.lr,
            batch_size=args.batch_size, patch_size=args.patch_size,
            freeze_encoder=args.freeze_encoder, frozen_bn=None if args.bn is None
            else args.bn == "frozen", augment=not args.no_augment,
            validation_share=args.validation_share, folds=args.folds, seed=args.seed,
            run_dir=args.run_dir, ckpt_path=args.ckpt_path, overwrite=args.overwrite,
            quiet=args.quiet, accelerator=args.device, started_at=t0)
    except KeyboardInterrupt:
        print("crackseg finetune: run the same command again to resume", file=sys.stderr)
        raise
    if not args.quiet:
        print(summary(read_card(out)), file=sys.stderr)
    print(out)
    return 0
