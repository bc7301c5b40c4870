"""``crackseg train``: train a segmentation network from a YAML recipe (LightningCLI).

Examples
--------
::

    crackseg train fit -c training/nmc4_synthetic.yaml
    crackseg train fit -c training/nmc4_synthetic.yaml --trainer.max_time 00:00:10:00
    crackseg train fit -c training/nmc4_synthetic.yaml --ckpt_path runs/nmc4-synthetic-v1/version_0/checkpoints/last.ckpt
"""

from __future__ import annotations

import sys
import warnings

DESCRIPTION = (
    "Train a U-Net from sparsely annotated slices with a YAML recipe (LightningCLI: "
    "subcommands fit/validate; -c RECIPE.yaml; --print_config shows every option). "
    "Runs are written to runs/NAME/version_N (metrics.csv, curves.png, checkpoints/); "
    "export one with `crackseg export`."
)



def trainer_defaults() -> dict:
    """Trainer settings a recipe may override: CSV logs under ``runs/``."""
    from jsonargparse import lazy_instance
    from pytorch_lightning.loggers import CSVLogger

    return {"logger": lazy_instance(CSVLogger, save_dir="runs", name="crackseg"),
            "log_every_n_steps": 10}


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a model from a YAML recipe (Lightning)",
                              description=DESCRIPTION, add_help=False)
    p.set_defaults(func=run)


def run(args) -> int:
    return run_lightning_cli(sys.argv[2:] if len(sys.argv) > 2 else ["--help"])


def run_lightning_cli(argv: list[str]) -> int:
    """Run LightningCLI with :class:`SegmentationModule` and :class:`SparseSliceDataModule`.

    Parameters
    ----------
    argv : list of str
        Arguments after ``crackseg train`` (``fit -c recipe.yaml ...``).

    Returns
    -------
    int
        Exit status.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.cli import LightningCLI

    from crackseg.datamodule import SparseSliceDataModule
    from crackseg.lightning_module import SegmentationModule

    class CracksegCLI(LightningCLI):
        def add_arguments_to_parser(self, parser):
            parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
            parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_top_k": 0,
                                 "checkpoint.every_n_train_steps": 100})
            parser.link_arguments("data.schema", "model.schema")
            parser.link_arguments("data.spatial_dims", "model.spatial_dims")

    argv = list(argv) or ["--help"]
    # sys.argv stays as it is: DDP starts its worker processes by re-running it.
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python")
    try:
        CracksegCLI(SegmentationModule, SparseSliceDataModule, args=argv,
                    trainer_defaults=trainer_defaults(),
                    save_config_kwargs={"overwrite": True},
                    parser_kwargs={"prog": "crackseg train", "description": DESCRIPTION})
    except SystemExit as e:
        return int(e.code or 0) if isinstance(e.code, int) else 2
    return 0
