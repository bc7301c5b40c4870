"""One fine-tuning run under a time budget (Lightning), and the callbacks it needs.

- :class:`TimeBudget`: warm-up and a cosine learning rate that follow the
  fraction of the *time* budget used (or of ``max_steps``, whichever is
  further along), stop when the budget is spent, and count the seconds
  spent inside optimiser steps.  Its state travels in checkpoints, so a
  resumed run continues the same schedule with the time that was left.
- :class:`FrozenNormStats`: BatchNorm layers normalise with their stored
  running statistics (eval mode) while their scale and shift still train.
- :class:`InterruptCheckpoint`: writes ``last.ckpt`` when a run is interrupted.
- :func:`train_stage`: build the module from a parent model, train it on
  :class:`crackseg.finetune_data.FinetunePatches`, return it with its timing.

Only the training path imports this module (and Lightning).

Examples
--------
>>> from crackseg.finetune_loop import lr_factor
>>> [round(lr_factor(p), 3) for p in (0.0, 0.05, 0.5, 1.0)]
[0.1, 1.0, 0.546, 0.01]
"""

from __future__ import annotations

import math
import time
import warnings
from datetime import timedelta
from pathlib import Path

import pytorch_lightning as pl
import torch


def lr_factor(progress: float, *, warmup: float = 0.05, floor: float = 0.01) -> float:
    """Learning-rate factor at a fraction ``progress`` of the budget.

    Linear warm-up from 0.1 to 1 over the first ``warmup`` of the budget,
    then a cosine down to ``floor`` at the end of the budget.
    """
    p = min(max(float(progress), 0.0), 1.0)
    if p < warmup:
        return 0.1 + 0.9 * p / warmup
    t = (p - warmup) / max(1e-9, 1.0 - warmup)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


class TimeBudget(pl.Callback):
    """Learning-rate schedule and stop from elapsed training time (and/or steps).

    Parameters
    ----------
    budget_s : float, optional
        Seconds of training (``None``: steps only).
    max_steps : int, optional
        Optimiser steps (``None``: time only).
    warmup : float
        Warm-up fraction of the budget.
    stop_after_steps : int, optional
        Raise :class:`KeyboardInterrupt` after this many steps (simulates an
        interrupted run; for tests).
    """

    def __init__(self, budget_s: float | None = None, *, max_steps: int | None = None,
                 warmup: float = 0.05, stop_after_steps: int | None = None):
        if not budget_s and not max_steps:
            raise ValueError("give a time budget or a step budget")
        self.budget_s, self.max_steps = budget_s, max_steps
        self.warmup, self.stop_after_steps = float(warmup), stop_after_steps
        self.resumed_s, self.step_s, self._origin, self._batch = 0.0, 0.0, None, None

    @property
    def state_key(self) -> str:
        return "TimeBudget"

    def elapsed(self) -> float:
        """Training seconds so far (earlier runs of a resumed fine-tuning included)."""
        return self.resumed_s + (time.perf_counter() - self._origin if self._origin else 0.0)

    def progress(self, step: int) -> float:
        t = self.elapsed() / self.budget_s if self.budget_s else 0.0
        s = step / self.max_steps if self.max_steps else 0.0
        return max(t, s)

    def state_dict(self) -> dict:
        return {"elapsed_s": self.elapsed(), "step_s": self.step_s}

    def load_state_dict(self, state: dict) -> None:
        self.resumed_s = float(state.get("elapsed_s", 0.0))
        self.step_s = float(state.get("step_s", 0.0))

    def on_train_start(self, trainer, pl_module):
        self._origin = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        ds = getattr(trainer.train_dataloader, "dataset", None)
        if hasattr(ds, "set_epoch"):
            ds.set_epoch(trainer.current_epoch)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        f = lr_factor(self.progress(trainer.global_step), warmup=self.warmup)
        for opt in trainer.optimizers:
            for g in opt.param_groups:
                g["lr"] = g.setdefault("base_lr", g["lr"]) * f
        pl_module.log("lr_factor", f, on_step=True, on_epoch=False, batch_size=1)
        self._batch = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.step_s += time.perf_counter() - self._batch
        if self.progress(trainer.global_step) >= 1.0:
            trainer.should_stop = True
        if self.stop_after_steps and trainer.global_step >= self.stop_after_steps:
            raise KeyboardInterrupt


class FrozenNormStats(pl.Callback):
    """Keep BatchNorm layers in eval mode (stored running statistics) during training."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        for m in pl_module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


class InterruptCheckpoint(pl.Callback):
    """Write ``last.ckpt`` into ``dirpath`` when training stops with an exception."""

    def __init__(self, dirpath):
        self.dirpath = Path(dirpath)

    def on_exception(self, trainer, pl_module, exception):
        if trainer.global_step > 0:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(str(self.dirpath / "last.ckpt"))


def quiet_lightning() -> None:
    """Lightning's information lines (devices, tips, checkpoint loading) off."""
    import logging

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def has_batchnorm(net) -> bool:
    """Whether a network has BatchNorm layers."""
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())


def train_stage(parent_dir, items, *, schema, arch: dict, patch_size, class_weights,
                budget_s: float | None, max_steps: int | None = None, lr: float = 2e-3,
                batch_size: int = 8, freeze_encoder: bool = False, frozen_bn: bool = True,
                augment=None, seed: int = 0, name: str = "finetuned", reinit_output: bool = False,
                run_dir=None, ckpt_path=None, accelerator: str = "auto", quiet: bool = True,
                stop_after_steps: int | None = None):
    """Fine-tune a parent model on training items for a time (and/or step) budget.

    Parameters
    ----------
    parent_dir : path-like
        Parent model directory.
    items : list of (image, index)
        Normalised training items (see :func:`crackseg.finetune_data.training_items`).
    schema : LabelSchema
        Label schema of the indices.
    arch : dict
        The parent's architecture arguments.
    patch_size, class_weights, lr, batch_size
        Patch shape, cross-entropy weights, peak learning rate, patches per step.
    budget_s, max_steps
        Training budget (whichever ends first).
    freeze_encoder, frozen_bn : bool
        Train only the decoder; keep BatchNorm running statistics fixed.
    augment : IntensityAugment, optional
        Imaging changes of the patches.
    run_dir : path-like, optional
        Logs (``metrics.csv``) and resumable checkpoints go here (none if ``None``).
    ckpt_path : path-like, optional
        Checkpoint to resume from.

    Returns
    -------
    module : SegmentationModule
    timing : dict
        ``steps``, ``train_seconds`` (in this stage, resumed parts included)
        and ``step_seconds`` (inside optimiser steps).
    """
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger

    from crackseg.finetune_data import FinetunePatches
    from crackseg.lightning_module import SegmentationModule

    for msg in (".*does not have many workers.*", ".*no `val_dataloader`.*", ".*LeafSpec.*",
                ".*smaller than the logging interval.*", ".*dataloader is not resumable.*"):
        warnings.filterwarnings("ignore", message=msg)
    if quiet:
        quiet_lightning()
    pl.seed_everything(seed, workers=True, verbose=False)
    ds = FinetunePatches(items, patch_size, schema.num_classes, length=50 * batch_size,
                         augment=augment, seed=seed)
    dl = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0,
                                     drop_last=True)
    module = SegmentationModule(
        schema=schema.to_dict(), spatial_dims=arch["spatial_dims"], channels=arch["channels"],
        strides=arch["strides"], num_res_units=arch["num_res_units"], dropout=arch["dropout"],
        norm=arch["norm"], class_weights=class_weights, lr=lr, scheduler="constant",
        warmup_steps=0, init_from=str(parent_dir), reinit_output=reinit_output,
        freeze_encoder=freeze_encoder, name=name)
    clock = TimeBudget(budget_s, max_steps=max_steps, stop_after_steps=stop_after_steps)
    callbacks = [clock] + ([FrozenNormStats()] if frozen_bn else [])
    if run_dir is not None:
        ck = Path(run_dir) / "checkpoints"
        callbacks += [ModelCheckpoint(dirpath=str(ck), save_last=True, save_top_k=0,
                                      train_time_interval=timedelta(seconds=60)),
                      InterruptCheckpoint(ck)]
    trainer = pl.Trainer(
        max_steps=int(max_steps) if max_steps else -1, max_epochs=-1, accelerator=accelerator,
        devices=1, callbacks=callbacks, enable_checkpointing=run_dir is not None,
        logger=CSVLogger(str(Path(run_dir).parent), name=Path(run_dir).name)
        if run_dir is not None else False,
        enable_progress_bar=not quiet, enable_model_summary=False, log_every_n_steps=10,
        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=dl, ckpt_path=str(ckpt_path) if ckpt_path else None)
    return module, {"steps": int(trainer.global_step), "train_seconds": round(clock.elapsed(), 2),
                    "step_seconds": round(clock.step_s, 2)}
