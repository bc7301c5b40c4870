"""Training speed of the shipped recipes: optimiser steps/s and patch voxels/s on this machine.

Each recipe (``training/nmc4_synthetic.yaml``, 3-D, and
``training/nmc4_synthetic_2d.yaml``, 2-D) runs through the real command line
in a child process, exactly as a user trains::

    python -m crackseg train fit -c RECIPE --trainer.max_steps W+N --trainer.logger false \\
        --data.synthetic '{... "n_volumes": 1, "n_val": 0}' --data.val_patches 0 \\
        --trainer.callbacks+=benchmarks.training_speed.StepClock ...

with the recipe's network, patch size, batch size, augmentation, loss and
optimiser unchanged.  Only the amount of phantom data is cut (one training
volume of the recipe's shape, no validation volume and no validation
loop), so that generating data does not dominate; that data preparation
(the data module's ``setup``: phantom generation, normalisation) is timed
and reported separately.  :class:`StepClock`, a Lightning callback,
timestamps every training batch; the first W steps (``--warmup``) are
excluded.  Step times include drawing and augmenting the patches
(``num_workers: 0`` as in the recipes); the share spent waiting for data is
reported too.

Usage::

    nice -n 10 python benchmarks/training_speed.py            # 5 warm-up + 30 timed steps
    nice -n 10 python benchmarks/training_speed.py --quick    # 2 warm-up + 5 timed steps

Writes ``benchmarks/results/training_speed.json`` (``training_speed_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECIPES = {"3-D": ROOT / "training" / "nmc4_synthetic.yaml",
           "2-D": ROOT / "training" / "nmc4_synthetic_2d.yaml"}


class StepClock(pl.Callback):
    """Timestamps of data-module setup, training start and every training batch, saved as JSON.

    Parameters
    ----------
    out : str
        JSON file written when training ends: ``created``, ``setup_done``,
        ``train_start``, ``batch_start`` and ``batch_end`` (lists), all in
        seconds of ``time.perf_counter()``, plus the run's settings (device,
        torch threads, batch size, patch size, parameters).

    Examples
    --------
    >>> import pytorch_lightning as pl                                   # doctest: +SKIP
    >>> pl.Trainer(max_steps=10, callbacks=[StepClock("/tmp/steps.json")])  # doctest: +SKIP
    """

    def __init__(self, out: str):
        super().__init__()
        self.out = str(out)
        self.times: dict = {"created": time.perf_counter(), "batch_start": [], "batch_end": []}

    def setup(self, trainer, pl_module, stage):
        # Lightning calls this right after the data module's setup.
        self.times["setup_done"] = time.perf_counter()

    def on_train_start(self, trainer, pl_module):
        self.times["train_start"] = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.times["batch_start"].append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.times["batch_end"].append(time.perf_counter())

    def on_train_end(self, trainer, pl_module):
        import torch

        dm = trainer.datamodule
        record = {
            **self.times,
            "device": str(pl_module.device),
            "precision": str(trainer.precision),
            "torch_threads": torch.get_num_threads(),
            "batch_size": getattr(dm, "batch_size", None),
            "patch_size": list(getattr(dm, "patch_size", []) or []),
            "spatial_dims": getattr(dm, "spatial_dims", None),
            "num_workers": getattr(dm, "num_workers", None),
            "augment": getattr(dm, "augment", None),
            "architecture": getattr(pl_module, "architecture", None),
            "parameters": sum(p.numel() for p in pl_module.parameters()),
        }
        Path(self.out).write_text(json.dumps(record))


def recipe_command(recipe: Path, steps: int, clock: Path, work: Path,
                   accelerator: str | None = None) -> list[str]:
    """The ``crackseg train fit`` command line that times ``steps`` steps of ``recipe``."""
    import yaml

    cfg = yaml.safe_load(recipe.read_text())
    synthetic = {**cfg["data"]["synthetic"], "n_volumes": 1, "n_val": 0}
    clock_cb = {"class_path": "benchmarks.training_speed.StepClock",
                "init_args": {"out": str(clock)}}
    return [sys.executable, "-m", "crackseg", "train", "fit", "-c", str(recipe),
            "--trainer.max_steps", str(steps), "--trainer.max_time", "null",
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.limit_val_batches", "0",
            "--trainer.default_root_dir", str(work),
            "--checkpoint.every_n_train_steps", "0",
            "--data.synthetic", json.dumps(synthetic), "--data.val_patches", "0",
            f"--trainer.callbacks+={json.dumps(clock_cb)}",
            *(["--trainer.accelerator", accelerator] if accelerator else [])]


def speed_from_clock(t: dict, warmup: int) -> dict:
    """Steps/s, patch voxels/s and the data-wait share from :class:`StepClock` timestamps."""
    ends, starts = t["batch_end"], t["batch_start"]
    n = len(ends) - warmup
    if n < 1:
        return {"error": f"only {len(ends)} steps ran; need more than --warmup {warmup}"}
    span = ends[-1] - ends[warmup - 1] if warmup else ends[-1] - t["train_start"]
    step_s = [b - a for a, b in zip(([t["train_start"]] + ends[:-1])[warmup:], ends[warmup:])]
    wait_s = [s - a for a, s in zip(([t["train_start"]] + ends[:-1])[warmup:], starts[warmup:])]
    patch_vox = 1
    for p in t["patch_size"]:
        patch_vox *= int(p)
    steps_per_s = n / span
    return {
        "timed_steps": n, "warmup_steps": warmup, "timed_seconds": span,
        "steps_per_s": steps_per_s,
        "patches_per_s": steps_per_s * t["batch_size"],
        "patch_voxels_per_s": steps_per_s * t["batch_size"] * patch_vox,
        "step_seconds_median": statistics.median(step_s),
        "step_seconds": [round(s, 4) for s in step_s],
        "data_wait_fraction": sum(wait_s) / span,
        "data_prep_seconds": t["setup_done"] - t["created"],
        "first_steps_seconds": (ends[warmup - 1] - t["train_start"]) if warmup else 0.0,
    }


def time_recipe(name: str, recipe: Path, warmup: int, steps: int, work: Path,
                accelerator: str | None = None) -> dict:
    """Run one recipe in a child process; its speed, settings, wall time and peak RSS."""
    from benchmarks.memory import measured

    clock = work / f"clock-{name}.json"
    clock.unlink(missing_ok=True)
    cmd = recipe_command(recipe, warmup + steps, clock, work / name, accelerator)
    load = [round(v, 2) for v in os.getloadavg()]
    child = measured(cmd)
    child["command"] = shlex.join(cmd)
    r = {"recipe": str(recipe.relative_to(ROOT)), "load_average_before": load,
         "child": child}
    if child["rc"] != 0 or not clock.exists():
        r["error"] = f"training exited with status {child['rc']}"
        return r
    t = json.loads(clock.read_text())
    r.update({k: t[k] for k in ("device", "precision", "torch_threads", "batch_size",
                                "patch_size", "spatial_dims", "num_workers", "augment",
                                "parameters", "architecture")})
    r.update(speed_from_clock(t, warmup))
    return r


def main(argv=None) -> int:
    from benchmarks._common import log, machine_info, markdown_table, write_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 warm-up and 5 timed steps per recipe")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 30; quick 5)")
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed first steps (default 5; quick 2)")
    ap.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES),
                    help="which recipes (default both)")
    ap.add_argument("--accelerator", default=None,
                    help="Lightning accelerator (default: the recipe's; e.g. gpu)")
    ap.add_argument("--workdir", default=None,
                    help="folder for checkpoints and timestamps (default /tmp/crackseg-training-speed)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    started = time.time()
    steps = args.steps or (5 if args.quick else 30)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    work = Path(args.workdir or "/tmp/crackseg-training-speed")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    machine = machine_info()
    runs = []
    for name in args.recipes:
        log(f"{name}: {RECIPES[name].name}, {warmup} + {steps} steps")
        runs.append({"name": name, **time_recipe(name, RECIPES[name], warmup, steps, work,
                                                    args.accelerator)})
        if "error" in runs[-1]:
            log(f"{name}: {runs[-1]['error']}")
    payload = {
        "runs": runs,
        "data": "the recipe's phantom settings with one training volume, no validation volume "
                "and no validation loop (data_prep_seconds: the data module's setup)",
        "timing": "steps/s over the timed steps after the warm-up; a step runs from the end of "
                  "the previous one (patch drawing and augmentation included) to the end of its "
                  "optimiser step",
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    dest = write_results("training_speed", payload, quick=args.quick, machine=machine,
                         started=started, path=args.out)
    rows = [{"recipe": r["name"], "device": r.get("device"), "threads": r.get("torch_threads"),
             "batch": r.get("batch_size"), "patch": "x".join(map(str, r.get("patch_size", []))),
             "steps/s": r.get("steps_per_s"), "patch Mvox/s": (r.get("patch_voxels_per_s") or 0)
             / 1e6 or None, "data wait": r.get("data_wait_fraction"),
             "data prep s": r.get("data_prep_seconds"), "peak RSS GB": r["child"]["peak_rss_gb"]}
            for r in runs]
    print(markdown_table(rows, list(rows[0])))
    print(f"-> {dest}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    raise SystemExit(main())
