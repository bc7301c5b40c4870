"""Lightning training of a segmentation network from sparse annotations.

:class:`SegmentationModule` wraps a network built by :mod:`crackseg.nets`,
trains it with the masked Dice + cross-entropy loss of :mod:`crackseg.losses`
and logs validation Dice per class on annotated voxels.  Checkpoints carry a
``"crackseg"`` entry (architecture, schema, normalisation, patch size,
training provenance) from which ``crackseg export`` writes a model directory.

Only the training path imports this module (and Lightning).

Examples
--------
>>> from crackseg.lightning_module import SegmentationModule
>>> m = SegmentationModule(spatial_dims=3, channels=[4, 8], num_res_units=1)
>>> m.architecture["args"]["out_channels"]
4
"""

from __future__ import annotations

import re
from pathlib import Path

import pytorch_lightning as pl
import torch

from crackseg.errors import ModelError
from crackseg.labels import load_schema
from crackseg.losses import masked_dice_ce
from crackseg.metrics import dice_counts, dice_from_counts
from crackseg.nets import build_network, unet_architecture

OUTPUT_LAYER = re.compile(r"^model\.2\.")
"""Parameters of the last (full-resolution, class-producing) block of a MONAI UNet."""

ENCODER = re.compile(r"^model\.((1\.submodule\.)*0\.|(1\.submodule\.)+(conv|residual|adn)\b)")
"""Parameters of the down-sampling path and bottleneck of a MONAI UNet."""


def transfer_weights(net, state: dict, *, reinit_output: bool = False) -> list[str]:
    """Copy pretrained weights into ``net``, optionally leaving its output layer as initialised.

    Parameters
    ----------
    net : torch.nn.Module
        MONAI UNet of the same architecture (class count may differ).
    state : dict
        Pretrained ``state_dict``.
    reinit_output : bool
        Keep ``net``'s fresh output block (new label schema).

    Returns
    -------
    list of str
        Names of the parameters that were *not* copied.
    """
    own = net.state_dict()
    skipped = []
    for k, v in own.items():
        src = state.get(k)
        if (reinit_output and OUTPUT_LAYER.match(k)) or src is None or src.shape != v.shape:
            skipped.append(k)
            continue
        own[k] = src.to(v.dtype)
    net.load_state_dict(own)
    bad = [k for k in skipped if not OUTPUT_LAYER.match(k)]
    if bad:
        raise ModelError(f"pretrained weights do not fit the architecture ({bad[0]} and "
                         f"{len(bad) - 1} more); use the parent model's architecture")
    return skipped


class SegmentationModule(pl.LightningModule):
    """U-Net segmentation trained on annotated voxels only.

    Parameters
    ----------
    schema : str or dict
        Label schema (name, YAML path or dict); sets the number of outputs.
        Linked from the data module by ``crackseg train``.
    spatial_dims : {2, 3}
        2-D (YX) or 3-D (ZYX) network.  Linked from the data module.
    channels, strides, num_res_units, dropout, norm
        Architecture (see :func:`crackseg.nets.unet_architecture`).
    class_weights : list of float, optional
        Cross-entropy weight per class.
    dice_weight, ce_weight : float
        Weights of the loss terms.
    band_weight, band_vox
        Cross-entropy weight for matrix voxels within ``band_vox`` voxels of
        a particle (see :func:`crackseg.losses.masked_dice_ce`); 1.0 is off.
    lr, weight_decay : float
        AdamW settings.
    scheduler : {"cosine", "constant"}
        Learning-rate schedule; cosine decays to 1 % over ``max_steps``.
    warmup_steps : int
        Linear warm-up steps.
    init_from : str, optional
        Model directory whose weights initialise the network (fine-tuning).
    reinit_output : bool
        With ``init_from``: start the output block afresh (new schema).
    freeze_encoder : bool
        Do not train the down-sampling path and bottleneck.
    name : str
        Model name recorded in checkpoints and exported cards.
    """

    def __init__(self, schema: str | dict = "nmc4", spatial_dims: int = 3,
                 channels: list[int] = (16, 32, 64, 128), strides: list[int] | None = None,
                 num_res_units: int = 2, dropout: float = 0.0, norm: str = "batch",
                 class_weights: list[float] | None = None, dice_weight: float = 1.0,
                 ce_weight: float = 1.0, band_weight: float = 1.0, band_vox: int = 3,
                 lr: float = 1e-3, weight_decay: float = 1e-5,
                 scheduler: str = "cosine", warmup_steps: int = 0,
                 init_from: str | None = None, reinit_output: bool = False,
                 freeze_encoder: bool = False, name: str = "crackseg-model"):
        super().__init__()
        self.save_hyperparameters()
        self.schema = load_schema(schema)
        self.architecture = unet_architecture(
            int(spatial_dims), out_channels=self.schema.num_classes, channels=list(channels),
            strides=strides, num_res_units=num_res_units, dropout=dropout, norm=norm)
        self.net = build_network(self.architecture)
        self.parent = None
        if init_from:
            self._init_from(init_from, reinit_output)
        if freeze_encoder:
            for k, p in self.net.named_parameters():
                if ENCODER.match(k):
                    p.requires_grad_(False)
        self._val_counts = None

    def _init_from(self, model_dir: str, reinit_output: bool) -> None:
        from crackseg.model_io import load_model, resolve_model_path

        pnet, card = load_model(model_dir)
        parch, arch = card["architecture"]["args"], self.architecture["args"]
        diff = [k for k in arch if k not in ("out_channels", "dropout") and arch[k] != parch.get(k)]
        if diff:
            raise ModelError(f"{model_dir}: architecture differs in {', '.join(diff)}; "
                             "fine-tuning keeps the parent's architecture")
        same_schema = card["schema"]["classes"] == self.schema.to_dict()["classes"]
        if not same_schema and not reinit_output:
            raise ModelError(f"{model_dir}: its schema {card['schema']['name']!r} differs from "
                             f"{self.schema.name!r}; pass reinit_output (--schema) to re-learn "
                             "the output layer")
        transfer_weights(self.net, pnet.state_dict(), reinit_output=reinit_output)
        self.parent = {"name": card.get("name"), "path": str(resolve_model_path(model_dir)),
                       "weights_sha256": card.get("weights_sha256"),
                       "output_layer_reinitialised": bool(reinit_output)}

    def forward(self, x):
        return self.net(x)

    def _loss(self, logits, y):
        hp = self.hparams
        return masked_dice_ce(logits, y, class_weights=hp.class_weights,
                              dice_weight=hp.dice_weight, ce_weight=hp.ce_weight,
                              band_weight=hp.get("band_weight", 1.0),
                              band_vox=hp.get("band_vox", 3))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=False,
                 batch_size=x.shape[0])
        return loss

    def on_validation_epoch_start(self):
        self._val_counts = torch.zeros(3, self.schema.num_classes, dtype=torch.float64,
                                       device=self.device)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self._loss(logits, y)
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, batch_size=x.shape[0])
        self._val_counts += dice_counts(logits.argmax(1), y, self.schema.num_classes).to(self.device)

    def on_validation_epoch_end(self):
        counts = self._val_counts
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts).sum(0)
        dice = dice_from_counts(counts.cpu())
        present = []
        for name, d in zip(self.schema.names, dice):
            if d == d:
                self.log(f"val_dice_{name}", d, sync_dist=True)
                present.append(d)
        if present:
            self.log("val_dice_mean", sum(present) / len(present), prog_bar=True, sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.scheduler == "constant" and not hp.warmup_steps:
            return opt
        total = self.trainer.max_steps if self.trainer.max_steps and self.trainer.max_steps > 0 \
            else self.trainer.estimated_stepping_batches
        total = max(1, int(total))
        warm = int(hp.warmup_steps)

        def factor(step):
            if step < warm:
                return (step + 1) / warm
            if hp.scheduler == "constant":
                return 1.0
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.01 + 0.99 * 0.5 * (1 + torch.cos(torch.tensor(t * torch.pi)).item())

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_callbacks(self):
        return [CurvePlot(), FinalCheckpoint()]

    def on_train_epoch_start(self):
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)

    def card_info(self) -> dict:
        """What an exported model card needs from this run."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        data = dm.card_info() if dm is not None and hasattr(dm, "card_info") else {}
        hp = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.hparams.items()}
        return {
            "name": self.hparams.name,
            "architecture": self.architecture,
            "schema": self.schema.to_dict(),
            "normalization": data.get("normalization"),
            "patch_size": data.get("patch_size"),
            "training_domain": data.get("training_domain"),
            "parent": self.parent,
            "training": {"module": hp, "data": data.get("provenance", {}),
                         "global_step": int(self.global_step)},
        }

    def on_save_checkpoint(self, checkpoint):
        checkpoint["crackseg"] = self.card_info()

    def on_load_checkpoint(self, checkpoint):
        info = checkpoint.get("crackseg") or {}
        self.parent = info.get("parent", self.parent)


class FinalCheckpoint(pl.Callback):
    """Save ``last.ckpt`` when training ends (time limit, step limit or interruption).

    Periodic checkpoints are written every N steps; this one keeps the steps
    done since the last of them.
    """

    def on_train_end(self, trainer, pl_module):
        cb = trainer.checkpoint_callback
        if cb is None or not cb.dirpath or trainer.sanity_checking:
            return
        trainer.save_checkpoint(str(Path(cb.dirpath) / "last.ckpt"))


class CurvePlot(pl.Callback):
    """Write ``curves.png`` (loss and validation Dice per class) into the run's log folder."""

    def on_validation_end(self, trainer, pl_module):
        self._plot(trainer)

    def on_train_end(self, trainer, pl_module):
        self._plot(trainer)

    @staticmethod
    def _plot(trainer):
        if trainer.sanity_checking or not trainer.is_global_zero or trainer.logger is None:
            return
        log_dir = getattr(trainer.logger, "log_dir", None)
        if not log_dir:
            return
        trainer.logger.save()
        metrics = Path(log_dir) / "metrics.csv"
        if metrics.exists():
            plot_curves(metrics, Path(log_dir) / "curves.png")


def plot_curves(metrics_csv, out_png) -> Path | None:
    """Plot training/validation loss and validation Dice per class from a CSVLogger file.

    Parameters
    ----------
    metrics_csv : path-like
        ``metrics.csv`` written by Lightning's CSVLogger.
    out_png : path-like
        Image to write (atomically).

    Returns
    -------
    Path or None
        The image, or ``None`` when there is nothing to plot yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from crackseg.io import atomic_path

    df = pd.read_csv(metrics_csv)
    if "step" not in df or df.empty:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    for col, style in (("train_loss", "-"), ("val_loss", "o-")):
        if col in df:
            s = df[["step", col]].dropna()
            if col == "train_loss" and len(s) > 20:
                s = s.assign(**{col: s[col].rolling(10, min_periods=1).mean()})
            a1.plot(s["step"], s[col], style, label=col, ms=3)
    a1.set_xlabel("step")
    a1.set_ylabel("loss")
    a1.set_yscale("log")
    a1.legend()
    for col in [c for c in df.columns if c.startswith("val_dice_")]:
        s = df[["step", col]].dropna()
        a2.plot(s["step"], s[col], "o-", label=col[len("val_dice_"):], ms=3)
    a2.set_xlabel("step")
    a2.set_ylabel("validation Dice (annotated voxels)")
    a2.set_ylim(0, 1)
    if a2.lines:
        a2.legend()
    fig.tight_layout()
    with atomic_path(out_png, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return Path(out_png)
