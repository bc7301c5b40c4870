"""``crackseg suggest-slices``: which slices to annotate next, with a label template.

Examples
--------
::

    crackseg suggest-slices --model models/my-model scan.tif -n 5 -o next/
    crackseg suggest-slices --model nmc4-2d-v2 stack.tif --axis 0 --labels done.tif -o next/
"""

from __future__ import annotations

import sys

from crackseg.commands._options import add_model_option, add_output_options

DESCRIPTION = """\
Rank the slices of a volume or stack of sections along an axis by the model's
uncertainty (test-time augmentation entropy) and spread along the axis, and write the
best N to a folder: a PNG per suggestion, suggestions.csv/json, and labels_template.tif
(the model's prediction on the suggested slices, 255 elsewhere) to correct in napari or
Fiji and pass to `crackseg finetune --labels` as it is.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("suggest-slices", help="suggest slices to annotate next",
                              description=DESCRIPTION)
    p.add_argument("image", help="volume or stack of 2-D sections (Z, Y, X)")
    add_model_option(p, "model directory or shipped name")
    p.add_argument("-n", type=int, default=5, help="number of suggestions (default 5)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--axis", type=int, default=0, help="slicing axis (default 0 = z)")
    p.add_argument("--labels", help="annotations so far (255 = not annotated): their slices "
                                    "are not suggested again and stay in the template")
    p.add_argument("--schema", help="label schema of your annotations (default: the model's)")
    p.add_argument("--samples", type=int, default=4,
                   help="test-time augmentation samples per slice (default 4)")
    p.add_argument("--candidates", type=int, default=None,
                   help="score only this many evenly spaced slices (default all)")
    p.add_argument("--spacing", type=float, default=None,
                   help="spread along the axis, in slices (default: axis length / 2(n + "
                        "annotated)); 0 = uncertainty only")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_output_options(p, overwrite="replace an existing output folder", quiet=None)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    import numpy as np

    from crackseg.errors import InputError
    from crackseg.io import read_volume
    from crackseg.labels import load_schema, validate_labels
    from crackseg.model_io import card_schema, load_model
    from crackseg.suggest import print_table, suggest_slices, write_suggestions

    if args.n < 1:
        raise InputError("-n must be at least 1")
    if Path(args.output).exists() and not args.overwrite:
        raise InputError(f"{args.output}: already exists; pass --overwrite to replace it")
    net, card = load_model(args.model)
    img = read_volume(args.image)
    schema = load_schema(args.schema) if args.schema else card_schema(card)
    labels = None
    if args.labels:
        lab = read_volume(args.labels)
        validate_labels(lab.data, schema, source=lab.source)
        labels = np.asarray(lab.data)
    s = suggest_slices((net, card), np.asarray(img.data), args.n, axis=args.axis, labels=labels,
                       samples=args.samples, max_candidates=args.candidates,
                       spacing=args.spacing, device=args.device)
    out = write_suggestions(args.output, np.asarray(img.data), s, image_path=str(args.image),
                            labels=labels, voxel_size_um=img.voxel_size_um, schema=schema,
                            overwrite=args.overwrite)
    print_table(s, file=sys.stderr)
    print(out)
    return 0
