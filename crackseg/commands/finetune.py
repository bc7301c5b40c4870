"""``crackseg finetune``: adapt a model to new images, imaging settings or label sets."""

from __future__ import annotations

DESCRIPTION = (
    "Fine-tune a model directory on a few annotated images (label 255 = not annotated) and "
    "write a new model directory whose card records its parent. With --schema the output "
    "layer is re-initialised for the new label set and every other weight is kept. Inputs "
    "are checked before training starts; an interrupted run resumes with --ckpt_path."
)


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="fine-tune a model on annotated images",
                              description=DESCRIPTION)
    p.add_argument("--model", default=None,
                   help="parent model directory or shipped name (default: the default model)")
    p.add_argument("--image", action="append", required=True, help="image (repeat for more)")
    p.add_argument("--labels", action="append", required=True,
                   help="label image for the preceding --image (255 = not annotated)")
    p.add_argument("-o", "--output", required=True, help="new model directory")
    p.add_argument("--schema", help="label schema YAML (or built-in name) of the new labels")
    p.add_argument("--max-steps", type=int, default=300, help="training steps (default 300)")
    p.add_argument("--max-minutes", type=float, default=None, help="time budget in minutes")
    p.add_argument("--freeze-encoder", action="store_true", help="train the decoder only")
    p.add_argument("--lr", type=float, default=2e-4, help="learning rate (default 2e-4)")
    p.add_argument("--batch-size", type=int, default=2, help="patches per step (default 2)")
    p.add_argument("--patch-size", type=int, nargs="+", help="patch shape (default: the parent's)")
    p.add_argument("--val-fraction", type=float, default=0.0,
                   help="fraction of annotated z-slices held out for validation (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--run-dir", help="folder for logs and checkpoints (default runs/finetune-NAME)")
    p.add_argument("--ckpt_path", "--ckpt-path", dest="ckpt_path",
                   help="resume an interrupted fine-tuning from this checkpoint")
    p.add_argument("--device", default="auto", help="cpu, gpu or auto (default)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=run)


def run(args) -> int:
    from crackseg.errors import InputError
    from crackseg.training import finetune_model

    if len(args.image) != len(args.labels):
        raise InputError(f"{len(args.image)} --image but {len(args.labels)} --labels; give one "
                         "--labels per --image")
    if args.max_steps is not None and args.max_steps <= 0 and not args.max_minutes:
        raise InputError("give a positive --max-steps or --max-minutes")
    out = finetune_model(
        args.model, args.image, args.labels, args.output, schema=args.schema,
        max_steps=args.max_steps, max_minutes=args.max_minutes,
        freeze_encoder=args.freeze_encoder, lr=args.lr, batch_size=args.batch_size,
        patch_size=args.patch_size, seed=args.seed, val_fraction=args.val_fraction,
        run_dir=args.run_dir, ckpt_path=args.ckpt_path, overwrite=args.overwrite,
        quiet=args.quiet, accelerator=args.device)
    print(out)
    return 0
