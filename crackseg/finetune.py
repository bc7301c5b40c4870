"""Fine-tune a model directory on a few annotated slices within a time budget.

A user gives images, labels (255 = not annotated) and minutes.  Everything
else has a default chosen by measurement (``benchmarks/segmentpy_2d.py``,
``benchmarks/finetune_shift.py``):

- the budget is *time*: warm-up and a cosine learning rate follow the
  fraction of the time used, and training stops when it is spent (a step
  budget is optional, not a cap);
- Dice + cross entropy, with cross-entropy weights from the annotated class
  frequencies; patches centred on every class equally often; flips,
  rotations and the domain randomiser's imaging changes on the real patches;
- BatchNorm layers of older models normalise with their stored statistics
  (batches of 2-8 patches give poor batch statistics);
- with two or more annotated units (2-D images, or annotated slices of a
  volume), a share of the budget (default 20 %) cross-validates: units are
  held out in turn, a model is trained on the rest for a short budget and
  scored on the held-out unit; per-class Dice with its spread goes into the
  new model's card and README;
- the run folder holds a plan, finished folds and checkpoints: the same
  command, run again after an interruption, resumes.

Examples
--------
>>> from crackseg.finetune import finetune_model           # doctest: +SKIP
>>> finetune_model("nmc4-synthetic-2d-v1", ["1.tif", "200.tif"],
...                ["1_label.tif", "200_label.tif"], "models/cathode3",
...                schema="cathode3.yaml", minutes=10)      # doctest: +SKIP
PosixPath('models/cathode3')
"""

from __future__ import annotations

import json
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from crackseg.errors import CracksegError, InputError, ModelError
from crackseg.io import json_safe, write_json

DEFAULT_MINUTES = 10.0
"""Time budget when neither minutes nor steps are given."""
VALIDATION_SHARE = 0.2
"""Share of a time budget spent on cross-validation folds."""
MAX_FOLDS = 5
RESERVE_S = 3.0
"""Seconds kept at the end of the budget for writing the model (at most 5 % of it)."""


# ---------------------------------------------------------------- inputs


def read_inputs(model, images, labels, *, schema=None) -> dict:
    """Parent model and checked training pairs; every user error is raised here.

    Returns
    -------
    dict
        ``parent_dir``, ``pcard``, ``schema`` (LabelSchema), ``reinit``
        (new schema: output layer re-initialised), ``arch`` (parent's
        architecture arguments), ``sd`` (spatial dims), ``pairs`` (raw
        image, channel index), ``images``, ``labels`` (paths as text).
    """
    from crackseg.data import load_pair
    from crackseg.labels import load_schema
    from crackseg.model_io import card_schema, read_card, resolve_model_path

    images, labels = [str(p) for p in images], [str(p) for p in labels]
    if not images or len(images) != len(labels):
        raise InputError("give one --labels file per --image")
    for p in images + labels:
        if not Path(p).exists():
            raise InputError(f"{p}: no such file")
    parent_dir = resolve_model_path(model)
    pcard = read_card(parent_dir)
    arch = (pcard.get("architecture") or {}).get("args") or {}
    if pcard["architecture"].get("name") != "monai.UNet" or "channels" not in arch:
        raise ModelError(f"{parent_dir}: fine-tuning needs a monai.UNet model")
    new_schema = load_schema(schema) if schema is not None else card_schema(pcard)
    reinit = new_schema.to_dict()["classes"] != pcard["schema"]["classes"]
    sd = int(pcard["spatial_dims"])
    pairs = [load_pair(i, lb, new_schema, spatial_dims=3 if sd == 3 else None)
             for i, lb in zip(images, labels)]
    for (img, _), src in zip(pairs, images):
        if not np.isfinite(img).all():
            raise InputError(f"{src}: image holds NaN or infinite values")
    return {"parent_dir": parent_dir, "pcard": pcard, "schema": new_schema, "reinit": reinit,
            "arch": {"dropout": 0.0, "norm": "batch", "strides": None, "num_res_units": 0, **arch},
            "sd": sd, "pairs": pairs, "images": images, "labels": labels}


def default_settings(inp: dict, *, patch_size=None, batch_size=None, lr=None,
                     freeze_encoder=None, frozen_bn=None) -> dict:
    """Settings not given by the user, from the parent model and measurement."""
    sd, pcard = inp["sd"], inp["pcard"]
    patch = [int(p) for p in (patch_size or pcard.get("patch_size") or [128] * sd)]
    if len(patch) != sd:
        raise InputError(f"patch size {patch} does not have {sd} axes")
    if frozen_bn is None:
        frozen_bn = "batch" in str(inp["arch"].get("norm")).lower()
    return {"patch_size": patch, "batch_size": int(batch_size or (8 if sd == 2 else 2)),
            "lr": float(lr or 2e-3), "freeze_encoder": bool(freeze_encoder),
            "frozen_bn": bool(frozen_bn)}


# ---------------------------------------------------------------- run folder


def _input_identity(paths) -> list:
    return [[str(Path(p).resolve()), Path(p).stat().st_size, int(Path(p).stat().st_mtime)]
            for p in paths]


def open_run(run_dir: Path, plan: dict, *, overwrite: bool) -> dict:
    """Start or resume the run folder; returns its state (finished folds, final budget).

    A folder with the same plan (inputs, parent, settings) is resumed; a
    finished one, or any with ``overwrite``, is started afresh; a different
    unfinished plan is an error.
    """
    pfile = run_dir / "plan.json"
    if pfile.exists():
        old = json.loads(pfile.read_text())
        same = old.get("plan") == json_safe(plan)
        if same and not old.get("finished"):
            state = json.loads((run_dir / "state.json").read_text()) \
                if (run_dir / "state.json").exists() else {}
            return {"folds": {}, **state, "resumed": True}
        if not same and not old.get("finished") and not overwrite:
            raise InputError(f"{run_dir}: holds an unfinished fine-tuning with other inputs or "
                             "settings; pass --overwrite to start again, or another --run-dir")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(pfile, {"plan": json_safe(plan), "finished": False})
    return {"folds": {}, "resumed": False}


def save_state(run_dir: Path, state: dict) -> None:
    write_json(run_dir / "state.json", {k: v for k, v in state.items() if k != "resumed"})


def finish_run(run_dir: Path) -> None:
    doc = json.loads((run_dir / "plan.json").read_text())
    write_json(run_dir / "plan.json", {**doc, "finished": True})


# ---------------------------------------------------------------- the whole fine-tuning


def finetune_model(model, images, labels, out_dir, *, schema=None, minutes: float | None = None,
                   max_minutes: float | None = None, max_steps: int | None = None,
                   lr: float | None = None, batch_size: int | None = None, patch_size=None,
                   freeze_encoder: bool | None = None, frozen_bn: bool | None = None,
                   augment: bool = True, validation_share: float | None = None,
                   folds: int = MAX_FOLDS, seed: int = 0, run_dir=None, ckpt_path=None,
                   overwrite: bool = False, quiet: bool = False, accelerator: str = "auto",
                   stop_after_steps: int | None = None, started_at: float | None = None) -> Path:
    """Fine-tune a model directory on annotated images and write a new model directory.

    Parameters
    ----------
    model : path-like
        Parent model directory (or shipped name).
    images, labels : list of path-like
        Image/label pairs (ZYX volumes or stacks, or YX images for a 2-D
        model); unannotated voxels hold the schema's ignore value (255).
    out_dir : path-like
        New model directory (written atomically).
    schema : str, dict or path, optional
        New label schema; the output layer is re-initialised.
    minutes : float, optional
        Time budget of the whole fine-tuning, validation included (default
        10 unless only ``max_steps`` is given).  ``max_minutes`` is an alias.
    max_steps : int, optional
        Step budget of the final model (whichever budget ends first).
    lr, batch_size, patch_size : optional
        Peak learning rate (default 2e-3), patches per step (8 for 2-D, 2
        for 3-D), patch shape (the parent's).
    freeze_encoder : bool, optional
        Train only the decoder (default no).
    frozen_bn : bool, optional
        BatchNorm layers keep their running statistics (default yes).
    augment : bool
        Imaging changes of the patches (flips and rotations always).
    validation_share : float, optional
        Share of the budget for cross-validation folds (default 0.2 with a
        time budget, 0 with a step budget only).
    folds : int
        At most this many folds.
    seed : int
        Seed of sampling and augmentation.
    run_dir : path-like, optional
        Plan, fold results, logs and checkpoints (default
        ``runs/finetune-<name>``); running the same command again resumes.
    ckpt_path : path-like, optional
        Resume the final training from this checkpoint.
    stop_after_steps : int, optional
        Interrupt the final training after this many steps (for tests).
    started_at : float, optional
        ``time.time()`` at which the budget started (default: now).

    Returns
    -------
    Path
        The new model directory.

    Raises
    ------
    InputError, ModelError
        Before training: existing output, missing files, shape mismatch,
        values outside the schema, no annotated voxels, incompatible model.
    """
    from crackseg.normalize import fit_normalization

    t0 = started_at or time.time()
    minutes = minutes if minutes is not None else max_minutes
    if minutes is not None and minutes <= 0 or max_steps is not None and max_steps <= 0:
        raise InputError("the budget (--minutes, --max-steps) must be positive")
    budget_s = 60.0 * minutes if minutes else (None if max_steps else 60.0 * DEFAULT_MINUTES)
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    inp = read_inputs(model, images, labels, schema=schema)
    st = default_settings(inp, patch_size=patch_size, batch_size=batch_size, lr=lr,
                          freeze_encoder=freeze_encoder, frozen_bn=frozen_bn)
    share = validation_share if validation_share is not None else (VALIDATION_SHARE if budget_s else 0.0)
    st.update(augment=bool(augment), seed=int(seed), minutes=minutes, max_steps=max_steps,
              validation_share=float(share), max_folds=int(folds))
    norm = fit_normalization([im for im, _ in inp["pairs"]])
    run = Path(run_dir) if run_dir else Path("runs") / f"finetune-{out.name}"
    plan = {"parent": inp["pcard"].get("weights_sha256"), "schema": inp["schema"].to_dict(),
            "images": _input_identity(inp["images"]), "labels": _input_identity(inp["labels"]),
            "settings": st}
    state = open_run(run, plan, overwrite=overwrite)
    ctx = {"inp": inp, "st": st, "norm": norm, "run": run, "state": state, "t0": t0,
           "budget_s": budget_s, "accelerator": accelerator, "quiet": quiet, "name": out.name}
    validation = cross_validate(ctx)
    module, timing = final_stage(ctx, ckpt_path=ckpt_path, stop_after_steps=stop_after_steps)
    card, readme = finetuned_card(ctx, module, timing, validation)
    from crackseg.model_io import save_model

    net = module.net.cpu().eval()
    save_model(net, card, out, readme=readme, overwrite=overwrite)
    finish_run(run)
    return out


def _budget_items(ctx, pairs):
    from crackseg.finetune_data import class_frequencies, class_weights, training_items

    items = training_items(pairs, spatial_dims=ctx["inp"]["sd"], normalization=ctx["norm"])
    if not items:
        raise InputError("no annotated voxels left to train on")
    freq = class_frequencies([ix for _, ix in items], ctx["inp"]["schema"].num_classes)
    return items, class_weights(freq), freq


def _stage(ctx, items, weights, *, budget_s, max_steps, seed, run_dir=None, ckpt_path=None,
           stop_after_steps=None):
    from crackseg.finetune_data import IntensityAugment
    from crackseg.finetune_loop import train_stage

    inp, st = ctx["inp"], ctx["st"]
    old = signal.getsignal(signal.SIGINT)
    try:
        return train_stage(
            inp["parent_dir"], items, schema=inp["schema"], arch=inp["arch"],
            patch_size=st["patch_size"], class_weights=weights, budget_s=budget_s,
            max_steps=max_steps, lr=st["lr"], batch_size=st["batch_size"],
            freeze_encoder=st["freeze_encoder"], frozen_bn=st["frozen_bn"],
            augment=IntensityAugment() if st["augment"] else None, seed=seed, name=ctx["name"],
            reinit_output=inp["reinit"], run_dir=run_dir, ckpt_path=ckpt_path,
            accelerator=ctx["accelerator"], quiet=ctx["quiet"], stop_after_steps=stop_after_steps)
    except SystemExit:   # Lightning turns Ctrl-C into SystemExit after saving what it can
        raise KeyboardInterrupt from None
    finally:
        signal.signal(signal.SIGINT, old)


# ---------------------------------------------------------------- validation


def cross_validate(ctx) -> dict | None:
    """k-fold validation over annotated units within the validation share of the budget.

    Finished folds are kept in the run folder's ``state.json`` and skipped
    on resume.  Returns the summary for the card (``None`` without folds).
    """
    from crackseg.finetune_data import annotation_units, fold_indices, make_folds

    st, inp, state = ctx["st"], ctx["inp"], ctx["state"]
    units = annotation_units(inp["pairs"])
    k = min(st["max_folds"], len(units))
    if st["validation_share"] <= 0 or k < 2:
        return {"n_units": len(units), "n_folds": 0} if units else None
    groups = make_folds(units, k)
    budget = ctx["budget_s"] * st["validation_share"] / k if ctx["budget_s"] else None
    steps = max(1, int(st["max_steps"] * st["validation_share"] / k)) if st["max_steps"] else None
    for i, held in enumerate(groups):
        if str(i) in state["folds"]:
            continue
        train, _ = fold_indices(inp["pairs"], held)
        items, weights, _ = _budget_items(ctx, train)
        module, timing = _stage(ctx, items, weights, budget_s=budget, max_steps=steps,
                                seed=st["seed"] + 1 + i)
        counts = fold_counts(module.net.cpu().eval(), ctx, held)
        state["folds"][str(i)] = {"held_out": [list(u) for u in held], "counts": counts.tolist(),
                                  **timing}
        save_state(ctx["run"], state)
    return summarise_folds([state["folds"][str(i)] for i in range(k)], inp["schema"],
                           n_units=len(units))


def fold_counts(net, ctx, held) -> np.ndarray:
    """Dice counts (intersection, predicted, true per class) on the held-out units.

    Predictions come from :func:`crackseg.evaluation.predict_logits`, the
    tiling ``crackseg predict`` uses; a 3-D model sees a slab around a
    held-out slice, normalised with the whole volume's range.
    """
    import torch

    from crackseg.evaluation import predict_logits
    from crackseg.finetune_data import unit_mask
    from crackseg.metrics import dice_counts
    from crackseg.normalize import percentile_range

    inp = ctx["inp"]
    card = {**inp["pcard"], "normalization": ctx["norm"], "patch_size": ctx["st"]["patch_size"]}
    counts = np.zeros((3, inp["schema"].num_classes))
    for u in held:
        img, idx = inp["pairs"][u[0]]
        if inp["sd"] == 3 and u[1] is not None:
            lo, hi = percentile_range(img, ctx["norm"]["percentiles"])
            h = ctx["st"]["patch_size"][u[1]] // 2
            a, b = max(0, u[2] - h), min(img.shape[u[1]], u[2] + h + 1)
            slab = np.take(img, np.arange(a, b), axis=u[1])
            c3 = {**card, "normalization": {**ctx["norm"], "mode": "fixed", "range": [lo, hi]}}
            pred = np.take(predict_logits(net, c3, slab).argmax(0).numpy(), u[2] - a, axis=u[1])
            true = np.take(idx, u[2], axis=u[1])
        else:
            sel = unit_mask(u, idx.shape)
            pred = predict_logits(net, card, img[sel]).argmax(0).numpy()
            true = idx[sel]
        counts += dice_counts(torch.from_numpy(pred[None].astype(np.int64)),
                              torch.from_numpy(true[None].astype(np.int64)),
                              inp["schema"].num_classes).numpy()
    return counts


def summarise_folds(folds: list[dict], schema, *, n_units: int) -> dict:
    """Per-class Dice over folds: mean, standard deviation, range, pooled."""
    from crackseg.metrics import dice_from_counts

    per = np.array([dice_from_counts(f["counts"]) for f in folds], dtype=float)
    pooled = dice_from_counts(np.sum([f["counts"] for f in folds], axis=0))

    def r(v):
        return None if v != v else round(float(v), 4)

    with warnings.catch_warnings():   # classes absent from every fold give NaN, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, sd = np.nanmean(per, 0), np.nanstd(per, 0, ddof=1)
        lo, hi = np.nanmin(per, 0), np.nanmax(per, 0)
    names = schema.names
    return {"dice": {n: r(v) for n, v in zip(names, mean)},
            "dice_sd": {n: r(v) for n, v in zip(names, sd)},
            "dice_range": {n: [r(a), r(b)] for n, a, b in zip(names, lo, hi)},
            "dice_pooled": {n: r(v) for n, v in zip(names, pooled)},
            "n_folds": len(folds), "n_units": n_units,
            "folds": [{"held_out": f["held_out"], "steps": f["steps"],
                       "train_seconds": f["train_seconds"],
                       "dice": {n: r(v) for n, v in zip(names, d)}} for f, d in zip(folds, per)],
            "evaluated_on": "annotated voxels of held-out slices (k-fold over annotated slices)"}


# ---------------------------------------------------------------- final model


def final_stage(ctx, *, ckpt_path=None, stop_after_steps=None):
    """Train the final model on every annotated unit with the rest of the budget."""
    st, state, run = ctx["st"], ctx["state"], ctx["run"]
    items, weights, freq = _budget_items(ctx, ctx["inp"]["pairs"])
    if "final_budget_s" not in state:
        b = ctx["budget_s"]
        left = ctx["t0"] + b - time.time() - min(RESERVE_S, 0.05 * b) if b else None
        if left is not None and state.get("resumed"):   # folds of an earlier run took their share
            left = min(left, b * (1.0 - st["validation_share"]))
        state["final_budget_s"] = None if left is None else max(0.25 * b, left)
        save_state(run, state)
    last = run / "final" / "checkpoints" / "last.ckpt"
    ckpt = ckpt_path or (last if last.exists() else None)
    if ckpt is not None and not ctx["quiet"]:
        print(f"resuming from {ckpt}", file=sys.stderr)
    module, timing = _stage(ctx, items, weights, budget_s=state["final_budget_s"],
                            max_steps=st["max_steps"], seed=st["seed"], run_dir=run / "final",
                            ckpt_path=ckpt, stop_after_steps=stop_after_steps)
    timing.update(class_weights=weights, class_frequencies=[round(float(f), 5) for f in freq],
                  n_items=len(items), resumed_from=str(ckpt) if ckpt else None)
    return module, timing


def finetuned_card(ctx, module, timing: dict, validation: dict | None) -> tuple[dict, str]:
    """Model card and README of the fine-tuned model (parent, settings, timing, validation)."""
    from crackseg.export import card_from_info
    from crackseg.model_readme import model_readme

    inp, st, state = ctx["inp"], ctx["st"], ctx["state"]
    wall = time.time() - ctx["t0"]
    fold_steps = sum(f.get("step_seconds", 0.0) for f in state["folds"].values())
    step_s = timing["step_seconds"] + fold_steps
    info = module.card_info()
    info.update(normalization=ctx["norm"], patch_size=st["patch_size"],
                training_domain=finetuned_domain(inp["pcard"], inp["pairs"]))
    info["training"]["data"] = {
        "source": "files", "schema": inp["schema"].name,
        "train_files": [list(p) for p in zip(inp["images"], inp["labels"])],
        "annotated_voxels_per_class": dict(zip(inp["schema"].names, map(int, sum(
            np.bincount(ix[ix >= 0].ravel(), minlength=inp["schema"].num_classes)
            for _, ix in inp["pairs"]))))}
    info["training"]["finetune"] = {
        **st, "images": inp["images"], "labels": inp["labels"], "steps_done": timing["steps"],
        "seconds": round(wall, 1), "final": timing, "optimiser_step_seconds": round(step_s, 1),
        "train_fraction": round(step_s / max(wall, 1e-9), 3), "run_dir": str(ctx["run"]),
        "budget_seconds": ctx["budget_s"], "resumed": bool(state.get("resumed"))}
    desc = (f"{inp['pcard'].get('name')} fine-tuned on {len(inp['images'])} annotated "
            f"image(s) in {wall / 60:.1f} min.")
    card = card_from_info(info, ctx["name"], description=desc)
    card["metrics"] = validation_metrics(validation, timing) if validation else {}
    return card, model_readme(card)


def validation_metrics(v: dict, timing: dict) -> dict:
    """The card's ``metrics`` from the fold summary (or why there are none)."""
    if not v.get("n_folds"):
        return {"validation": f"none: {v.get('n_units', 0)} annotated unit(s); annotate two or "
                              "more slices (or give the share of the budget) for a "
                              "cross-validated estimate"}
    secs = [f["train_seconds"] for f in v["folds"]]
    return {**v, "description": (
        f"{v['n_folds']}-fold cross-validation over {v['n_units']} annotated slices/images; "
        f"each fold model trained {np.mean(secs):.0f} s on the other units (the final model "
        f"{timing['train_seconds']:.0f} s on all), so these values are conservative")}


def finetuned_domain(pcard: dict, pairs) -> dict | None:
    """The parent's training domain widened by the particle size of the fine-tuning images."""
    from crackseg.scale import particle_diameter_vox

    dom = dict(pcard.get("training_domain") or {})
    d = []
    for img, _ in pairs:
        try:
            d.append(float(particle_diameter_vox(img)))
        except (CracksegError, ValueError):
            continue
    d = [v for v in d if np.isfinite(v)]
    if not d:
        return dom or None
    r = dom.get("particle_diameter_vox") or [min(d), max(d)]
    dom["particle_diameter_vox"] = [round(min(r[0], min(d)), 2), round(max(r[1], max(d)), 2)]
    dom["finetune_particle_diameter_vox"] = [round(v, 2) for v in d]
    return dom
