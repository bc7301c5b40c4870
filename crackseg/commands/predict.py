"""``crackseg predict``: segment volumes with a model, then label particles."""

from __future__ import annotations

import sys

from crackseg.commands._options import (
    add_format_option,
    add_min_volume_option,
    add_model_option,
    add_output_options,
)

DESCRIPTION = """\
Segment tomograms (or 2-D sections, or stacks of them section by section, with a 2-D
model) with a crackseg model: sliding-window inference in chunks of bounded memory,
optional posterior samples (TTA or MC dropout), then particle instances. Each input gets
a folder OUT/<name>/ with segmentation.tif (or .zarr for big volumes), particles.tif,
uncertainty.tif and particle_samples.npz (with --uncertainty) and prediction.json
(provenance). Finished inputs are skipped and interrupted ones resume from their last
finished chunk; --overwrite redoes them. A broken input is reported and skipped; the
exit status is non-zero if any input failed. With --workers N (a local Dask cluster) or
--dask ADDRESS, several inputs run one per worker; an input given alone, or one of at
least 512^3 voxels, is cut into chunks that run as tasks on all workers (each reads its
chunk from the input and writes it into the shared .work Zarr stores; results are
identical to a serial run, and an interrupted run resumes from its finished chunks).
With --device auto or cuda, worker i uses GPU i.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("predict", help="segment volumes and label particles",
                              description=DESCRIPTION)
    add_predict_arguments(p)
    p.set_defaults(func=run)


def add_predict_arguments(p) -> None:
    """Arguments shared by ``crackseg predict`` and ``crackseg run``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run on a local Dask cluster of N worker processes (one per GPU on "
                   "multi-GPU nodes): inputs one per worker, and a lone or >= 512^3-voxel "
                   "input as chunks spread over all workers")
    g.add_argument("--dask", default=None, metavar="ADDRESS",
                   help="the same on the Dask scheduler at ADDRESS (tcp://host:8786); every "
                   "worker must see the input and output paths")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="volume files, folders, glob patterns or manifests (.txt/.csv list)")
    add_model_option(p)
    p.add_argument("-o", "--out", required=True, help="output folder (one subfolder per input)")
    p.add_argument("--roi", type=int, nargs="+", metavar="N",
                   help="window size in voxels, one value or one per axis (default with "
                   "--blend valid: the largest up to 256 whose network memory fits --max-memory; "
                   "the model card's with --blend gaussian)")
    p.add_argument("--overlap", type=float, default=None,
                   help="window overlap for --blend gaussian (default: the model card's)")
    p.add_argument("--blend", choices=("valid", "gaussian"), default="valid",
                   help="stitch window centres only (valid, fast) or blend with Gaussian "
                   "weights (default: valid)")
    p.add_argument("--halo", type=int, default=None,
                   help="context voxels around window centres and chunks (default: the network's "
                   "receptive field rounded up to its downsampling grid, which makes tiling "
                   "exact; a smaller halo is faster and less exact, see docs/tiling.md)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default: 1 on CPU, 4 on GPU)")
    p.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32",
                   help="network arithmetic: bf16 is ~2x faster on CPUs with AVX512-BF16/AMX "
                   "and recent GPUs but flips a few per cent of thin-crack voxels; auto = bf16 "
                   "where the hardware has it (default: fp32)")
    p.add_argument("--uncertainty", choices=("none", "tta", "mc"), default="none",
                   help="posterior samples by test-time augmentation or MC dropout; costs "
                   "--samples forward passes (default: none)")
    p.add_argument("--samples", type=int, default=8,
                   help="posterior samples with --uncertainty (default: 8, at most 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of TTA order and MC dropout")
    p.add_argument("--voxel-size", type=float, nargs="+", metavar="UM",
                   help="voxel size in µm (one value, or Z Y X; for a stack of sections Z is "
                   "the section spacing), overriding the file's")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="channel N (from 0) of a multi-channel input: 4-D arrays, RGB or "
                   "multi-channel TIFF; the channel axis is the one the file declares, else the "
                   "shortest")
    p.add_argument("--max-memory", type=float, default=None, metavar="GB",
                   help="memory budget that sets the chunk size, per worker with "
                   "--workers/--dask (default: 3)")
    p.add_argument("--chunk", type=int, default=None, metavar="N",
                   help="core chunk edge in voxels (default: from --max-memory)")
    add_format_option(p, "output image format (default: tif, zarr above ~645^3 voxels)")
    p.add_argument("--nan-policy", choices=("error", "replace"), default="error",
                   help="NaN/Inf voxels are an error, or replaced by the low grey value")
    p.add_argument("--scale", default="auto", metavar="auto|none|F",
                   help="resample the input so its particles match the size the model was "
                        "trained on: auto (estimate the particle size, resample only when "
                        "outside the model's range), none, or a factor F (default: auto)")
    p.add_argument("--no-particles", action="store_true", help="skip particle instances")
    add_min_volume_option(p)
    p.add_argument("--no-resume", action="store_true",
                   help="start interrupted inputs from scratch")
    add_output_options(p, overwrite="redo finished outputs", quiet="no progress bars")


def options_from_args(args) -> dict:
    """Keyword arguments of :func:`crackseg.batch.predict_to_folder` from parsed arguments."""
    vs = args.voxel_size
    from crackseg.errors import CracksegError

    if vs is not None and len(vs) not in (1, 3):
        raise CracksegError("--voxel-size takes one value or three (Z Y X)")
    if args.channel is not None and args.channel < 0:
        raise CracksegError(f"--channel {args.channel}: channels are numbered from 0")
    roi = args.roi
    if roi is not None and len(roi) == 1:
        roi = roi[0]
    particle_options = {}
    if args.min_volume is not None:
        particle_options["min_volume_um3"] = args.min_volume
    return dict(
        overwrite=args.overwrite, resume=not args.no_resume, fmt=args.format,
        particles=not args.no_particles, particle_options=particle_options,
        progress=not args.quiet, voxel_size_um=vs, roi_size=roi, overlap=args.overlap,
        blend=args.blend, halo=args.halo, device=args.device, batch_size=args.batch_size,
        precision=args.precision, uncertainty=args.uncertainty, n_samples=args.samples,
        seed=args.seed, max_memory_gb=args.max_memory, chunk_size=args.chunk,
        nan_policy=args.nan_policy, scale=_scale_arg(args.scale),
        **({"channel": args.channel} if args.channel is not None else {}),
    )


def _scale_arg(value: str):
    """``--scale`` as passed on: "auto", "none" or a float (checked by predict)."""
    from crackseg.scale import scale_factor

    if value in ("auto", "none"):
        return value
    scale_factor(value, float("nan"), {})   # one-line error for a bad value
    return float(value)


def run(args) -> int:
    from crackseg.batch import expand_inputs, run_batch
    from crackseg.errors import CracksegError
    from crackseg.model_io import load_model

    inputs = expand_inputs(args.inputs)
    if not inputs:
        raise CracksegError("no inputs found")
    options = options_from_args(args)
    if getattr(args, "workers", None) or getattr(args, "dask", None):
        from crackseg.scaleout import run_distributed

        results = run_distributed(inputs, args.out, model=args.model, address=args.dask,
                                  n_workers=args.workers, **options)
    else:
        model = load_model(args.model)
        quiet = args.quiet

        def report(r):
            print(f"crackseg predict: {r['error']}", file=sys.stderr)

        results = run_batch(inputs, args.out, model=model, on_error=report, **options)
        if not quiet:
            for r in results:
                if r["status"] == "done":
                    n = r.get("n_particles")
                    what = "segmented" if n is None else f"{n} particles"
                    print(f"{r['input']}: {what} -> {r['folder']} ({r['seconds']:.1f} s)",
                          file=sys.stderr)
    return summarize(results, quiet=args.quiet)


def summarize(results, *, quiet: bool = False) -> int:
    """Print a one-line summary; exit status 1 if any input failed.

    Each failure was printed once, as it happened; the summary only counts them.
    """
    done = sum(r["status"] == "done" for r in results)
    skipped = sum(r["status"] == "skipped" for r in results)
    failed = [r for r in results if r["status"] == "failed"]
    if failed or not quiet:
        print(f"crackseg predict: {done} done, {skipped} already finished (skipped), "
              f"{len(failed)} failed" + (" (errors above)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
