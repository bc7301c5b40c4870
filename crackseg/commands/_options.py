"""Options that several subcommands take, and their progress messages.

Examples
--------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_output_options(p)
>>> p.parse_args(["--quiet"])
Namespace(overwrite=False, quiet=True)
"""

from __future__ import annotations

import sys


def add_output_options(p, *, overwrite: str | None = "replace existing outputs",
                       quiet: str | None = "no progress messages") -> None:
    """``--overwrite`` and ``--quiet`` with these help texts (``None``: leave the option out)."""
    if overwrite is not None:
        p.add_argument("--overwrite", action="store_true", help=overwrite)
    if quiet is not None:
        p.add_argument("--quiet", action="store_true", help=quiet)


def add_model_option(p, help: str = "model directory or shipped model name (default: the "
                     "default model)") -> None:
    """``--model``: a model directory or shipped name (default: the default model)."""
    p.add_argument("--model", default=None, help=help)


def add_schema_option(p, help: str = "label schema: nmc4 (default) or a YAML file") -> None:
    """``--schema``: a label schema name or YAML file."""
    p.add_argument("--schema", default=None, help=help)


def add_sections_option(p) -> None:
    """``--sections``: the segmentation is a stack of 2-D sections along axis 0."""
    p.add_argument("--sections", action="store_true",
                   help="SEG is a stack of 2-D sections along axis 0: particles are 2-D and "
                   "labelled section by section (default when prediction.json beside SEG "
                   "says so)")


def add_min_volume_option(p, note: str = "") -> None:
    """``--min-volume``: the smallest particle kept (µm³), with an optional note for its help."""
    p.add_argument("--min-volume", type=float, default=None, metavar="UM3",
                   help="drop particles whose solid is smaller than this (µm³; needs a voxel "
                   f"size; default: 27 voxels; crack or pore blobs without solid always go){note}")


def add_annotation_options(p) -> None:
    """``--annotations`` and ``--annotated-slices``: annotated sections that measure segmentation error."""
    p.add_argument("--annotations", metavar="LABELS",
                   help="label image of annotated z-sections (0 matrix, 1 particle, 2 crack, "
                   "3 pore, 255 not annotated): a volume of the segmentation's shape, or the "
                   "sections alone with --annotated-slices; the mean damage is then measured on "
                   "them, with an interval that carries the segmentation error, beside the "
                   "model's own (summary.json: damage.mean.annotation_error)")
    p.add_argument("--annotated-slices", metavar="Z,Z,...", default=None,
                   help="axis-0 indices of the annotated sections, e.g. 10,40,70 (default: the "
                   "slices of --annotations holding any value other than 255)")


def add_format_option(p, help: str) -> None:
    """``--format``: image format of the outputs (auto, tif or zarr)."""
    from crackseg.outputs import FORMATS

    p.add_argument("--format", choices=FORMATS, default="auto", help=help)


def messages(command: str, quiet: bool = False):
    """Function printing ``crackseg <command>: <msg>`` to stderr (nothing when ``quiet``)."""
    def say(msg):
        if not quiet:
            print(f"crackseg {command}: {msg}", file=sys.stderr)

    return say
