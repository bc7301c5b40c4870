"""Export, evaluation and fine-tuning of trained models.

- :func:`export_model`: a training checkpoint (or run folder) -> model directory.
- :func:`evaluate_model`: per-class Dice of a model on labelled volumes (all voxels).
- ``finetune_model``: adapt a model directory to new images/labels; it lives in
  :mod:`crackseg.finetune` and is importable from here too.

Checkpoints are read with ``torch.load(weights_only=True)``: only the user's
own training output is read this way, and only to turn it into safetensors.

Examples
--------
>>> from crackseg.training import evaluate_model           # doctest: +SKIP
>>> evaluate_model("models/nmc4-synthetic-v1", [(image, labels)])["dice"]  # doctest: +SKIP
{'matrix': 0.98, 'particle': 0.97, 'crack': 0.84, 'pore': 0.77}
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from crackseg.errors import InputError, ModelError
from crackseg.model_io import card_schema, load_model, new_card, save_model

# ---------------------------------------------------------------- checkpoints


def find_checkpoint(run_or_ckpt: str | os.PathLike) -> Path:
    """The checkpoint a run folder stands for (its newest ``last.ckpt``), or the file given.

    Raises
    ------
    InputError
        If nothing usable is found.
    """
    p = Path(run_or_ckpt)
    if p.is_file():
        return p
    if not p.is_dir():
        raise InputError(f"{p}: no such run folder or checkpoint")
    cands = sorted(p.rglob("last*.ckpt"), key=lambda q: q.stat().st_mtime) or \
        sorted(p.rglob("*.ckpt"), key=lambda q: q.stat().st_mtime)
    if not cands:
        raise InputError(f"{p}: no checkpoint (*.ckpt) in this run folder")
    return cands[-1]


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Network weights and crackseg record of a training checkpoint.

    Returns
    -------
    state : dict of str to torch.Tensor
        Weights of the network (``net.`` prefix removed).
    info : dict
        The checkpoint's ``"crackseg"`` entry (architecture, schema,
        normalisation, patch size, training provenance, parent).
    """
    import pickle

    import torch

    ckpt = find_checkpoint(path)
    try:
        ck = torch.load(ckpt, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise ModelError(f"{ckpt}: cannot read checkpoint ({str(e).splitlines()[0]})") from None
    if not isinstance(ck, dict) or "crackseg" not in ck or "state_dict" not in ck:
        raise ModelError(f"{ckpt}: not a crackseg training checkpoint")
    state = {k[len("net."):]: v for k, v in ck["state_dict"].items() if k.startswith("net.")}
    info = dict(ck["crackseg"])
    info["checkpoint"] = str(ckpt.resolve())
    info["global_step"] = int(ck.get("global_step", 0))
    return state, info


def card_from_info(info: dict, name: str, *, metrics: dict | None = None,
                   description: str = "", reproduce: str | None = None) -> dict:
    """Model card from a checkpoint's crackseg record."""
    training = dict(info.get("training") or {})
    if "checkpoint" in info:
        training["checkpoint"] = info["checkpoint"]
    if reproduce:
        training["reproduce"] = reproduce
    card = new_card(name, info["architecture"], schema=info["schema"],
                    patch_size=info.get("patch_size"), normalization=info.get("normalization"),
                    training=training, metrics=metrics or {}, parent=info.get("parent"),
                    description=description)
    if info.get("training_domain"):
        card["training_domain"] = info["training_domain"]
    return card


def export_model(run_or_ckpt, out_dir, *, name: str | None = None, overwrite: bool = False,
                 evaluate_on=None, evaluation_note: str = "", calibrate_on=None,
                 calibration_note: str = "", description: str = "",
                 reproduce: str | None = None, quiet: bool = True,
                 validation: dict | None = None) -> Path:
    """Write a model directory from a training run or checkpoint.

    Parameters
    ----------
    run_or_ckpt : path-like
        Run folder (its newest ``last.ckpt`` is used) or ``.ckpt`` file.
    out_dir : path-like
        Model directory to write (atomically).
    name : str, optional
        Model name (default: the directory name).
    overwrite : bool
        Replace an existing directory.
    evaluate_on : list, optional
        Labelled volumes for :func:`evaluate_model`; the result goes into
        the card's ``metrics``.
    evaluation_note : str
        What those volumes are (recorded with the metrics).
    calibrate_on : list, optional
        Fully labelled validation volumes (never the evaluation volumes) on
        which per-class output offsets are fitted (:func:`fit_logit_offsets`)
        and folded into the output bias; recorded in ``training.calibration``.
    calibration_note : str
        What the calibration volumes are.
    description, reproduce : str
        Card description and the command that reproduces the model.
    validation : dict, optional
        Benchmark results (by benchmark name) recorded in the card's
        ``validation`` and summarised in its README.

    Returns
    -------
    Path
        The model directory.
    """
    from crackseg.nets import build_network

    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    state, info = read_checkpoint(run_or_ckpt)
    net = build_network(info["architecture"])
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"checkpoint weights do not fit its architecture ({str(e).splitlines()[0]})") from None
    net.eval()
    card = card_from_info(info, name or out.name, description=description, reproduce=reproduce)
    if validation:
        card["validation"] = validation
    if calibrate_on is not None:
        cal = fit_logit_offsets((net, card), calibrate_on)
        apply_logit_offsets(net, cal["offsets"].values())
        card["training"]["calibration"] = {**cal, "fitted_on": calibration_note,
                                           "method": "per-class output logit offsets, "
                                                     "coordinate search for mean Dice"}
    if evaluate_on is not None:
        card["metrics"] = evaluate_model((net, card), evaluate_on, quiet=quiet)
        if evaluation_note:
            card["metrics"]["description"] = evaluation_note
    return save_model(net, card, out, readme=model_readme(card), overwrite=overwrite)


# ---------------------------------------------------------------- evaluation


def predict_logits(net, card: dict, image, *, sw_batch_size: int = 1):
    """Class logits of one image, tiled as :func:`crackseg.inference.predict_volume` tiles.

    The window, halo and stitching are the defaults of ``crackseg predict``
    (:func:`crackseg.inference.plan_inference`, valid centres), so logits
    used for calibration come from the path users run.

    Parameters
    ----------
    net : torch.nn.Module
        Network in eval mode.
    card : dict
        Its model card (normalisation, spatial dims).
    image : array_like, shape (Z, Y, X) or (Y, X)
        Raw grey values.  A 2-D model segments a volume slice by slice (YX).

    Returns
    -------
    torch.Tensor, float32, shape (C, *image.shape)
    """
    import torch

    from crackseg.inference import plan_inference, stitched_logits
    from crackseg.normalize import normalize_image

    x = normalize_image(image, card.get("normalization"))
    sd = int(card["spatial_dims"])
    if sd == 3 and x.ndim != 3:
        raise InputError(f"a 3-D model needs a volume (Z, Y, X), got shape {x.shape}")
    plan = plan_inference(card, x.shape[-sd:], sw_batch_size=sw_batch_size)
    t = torch.from_numpy(x)
    t = t[None] if x.ndim == sd else t
    with torch.inference_mode():
        parts = [stitched_logits(net, t[i][None, None], plan, sw_batch_size=sw_batch_size)[0]
                 for i in range(t.shape[0])]
    return parts[0] if x.ndim == sd else torch.stack(parts, 1)


def predict_labels(net, card: dict, image, *, sw_batch_size: int = 2) -> np.ndarray:
    """Channel index per voxel of one image (see :func:`predict_logits`).

    Returns
    -------
    numpy.ndarray of uint8, same shape as ``image``
        Channel indices (not stored label values).
    """
    import torch

    logits = predict_logits(net, card, image, sw_batch_size=sw_batch_size)
    return logits.argmax(0).to(torch.uint8).numpy()


def _predicted_labels(model, image) -> np.ndarray:
    """Stored labels from ``predict_volume`` (a 2-D model segments a volume slice by slice)."""
    from crackseg.inference import predict_volume

    image = np.asarray(image)
    if int(model[1]["spatial_dims"]) == 2 and image.ndim == 3:
        return np.stack([_predicted_labels(model, im) for im in image])
    return np.asarray(predict_volume(model, image, progress=False, device="cpu").labels)


def evaluate_model(model, volumes, *, quiet: bool = True) -> dict:
    """Per-class Dice of a model on labelled volumes, over all labelled voxels.

    Predictions come from :func:`crackseg.inference.predict_volume` with its
    defaults, the path ``crackseg predict`` runs.

    Parameters
    ----------
    model : path-like, or (net, card)
        Model directory (or shipped name), or a loaded network with its card.
    volumes : iterable
        ``(image, labels)`` pairs, or objects with ``image`` and ``labels``
        attributes (e.g. :class:`crackseg.synthetic.Phantom`).  Labels hold
        stored values of the model's schema; the ignore value is skipped.

    Returns
    -------
    dict
        ``{"dice": {class: value}, "n_volumes": n, "voxels": n,
        "evaluated_on": "all labelled voxels"}``.
    """
    import torch
    from tqdm import tqdm

    from crackseg.data import labels_to_index
    from crackseg.losses import dice_counts, dice_from_counts

    net, card = model if isinstance(model, tuple) else load_model(model)
    net.eval()
    schema = card_schema(card)
    counts = torch.zeros(3, schema.num_classes, dtype=torch.float64)
    n, voxels = 0, 0
    for v in tqdm(list(volumes), desc="evaluate", disable=quiet, file=None):
        image, labels = (v.image, v.labels) if hasattr(v, "image") else v
        pred = labels_to_index(_predicted_labels((net, card), image), schema)
        idx = labels_to_index(labels, schema)
        counts += dice_counts(torch.from_numpy(pred.astype(np.int64))[None],
                              torch.from_numpy(idx.astype(np.int64))[None], schema.num_classes)
        n += 1
        voxels += int((idx >= 0).sum())
    dice = dice_from_counts(counts)
    return {"dice": {k: (round(d, 4) if d == d else None) for k, d in zip(schema.names, dice)},
            "n_volumes": n, "voxels": voxels, "evaluated_on": "all labelled voxels"}


def output_bias(net):
    """The bias of the network's last layer (adding to it shifts every output logit).

    Raises
    ------
    ModelError
        If the last parameter is not a convolution bias.
    """
    name, param = list(net.named_parameters())[-1]
    if not name.endswith("conv.bias"):
        raise ModelError(f"cannot find the output bias of this network (last parameter {name})")
    return param


def fit_logit_offsets(model, volumes, *, grid=None, passes: int = 2) -> dict:
    """Per-class logit offsets that maximise mean Dice on labelled validation volumes.

    Class-weighted training shifts the network towards rare classes (thicker
    cracks); adding a constant per class to the output logits undoes such a
    prior shift.  Offsets are found by coordinate search over ``grid`` for
    every class but the first (whose offset stays 0).

    Parameters
    ----------
    model : (net, card)
        Network and card.
    volumes : list of (image, labels)
        Fully labelled validation volumes (not the test volumes).
    grid : sequence of float, optional
        Offsets tried (default -2.5 .. 2.5 in steps of 0.25).
    passes : int
        Rounds of coordinate search.

    Returns
    -------
    dict
        ``{"offsets": {class: value}, "dice_before": {...}, "dice_after": {...}}``.
    """
    import torch

    from crackseg.data import labels_to_index
    from crackseg.losses import dice_counts, dice_from_counts

    net, card = model
    schema = card_schema(card)
    grid = np.arange(-2.5, 2.51, 0.25) if grid is None else np.asarray(grid, dtype=float)
    logits, targets = [], []
    for image, labels in volumes:
        logits.append(predict_logits(net, card, image))
        targets.append(torch.from_numpy(labels_to_index(labels, schema).astype(np.int64)))

    def dice(off):
        counts = 0
        for lg, t in zip(logits, targets):
            shift = torch.as_tensor(off, dtype=lg.dtype).reshape(-1, *([1] * (lg.dim() - 1)))
            pred = (lg + shift).argmax(0)
            counts = counts + dice_counts(pred[None], t[None], schema.num_classes)
        return dice_from_counts(counts)

    def score(d):
        return float(np.nanmean(d))

    off = np.zeros(schema.num_classes)
    before = dice(off)
    best = score(before)
    for _ in range(passes):
        for c in range(1, schema.num_classes):
            for g in grid:
                trial = off.copy()
                trial[c] = g
                s = score(dice(trial))
                if s > best + 1e-6:
                    best, off = s, trial
    after = dice(off)
    return {"offsets": dict(zip(schema.names, [round(float(v), 3) for v in off])),
            "dice_before": dict(zip(schema.names, [round(v, 4) for v in before])),
            "dice_after": dict(zip(schema.names, [round(v, 4) for v in after]))}


def apply_logit_offsets(net, offsets) -> None:
    """Add per-class offsets (channel order) to the output bias, in place."""
    import torch

    with torch.no_grad():
        bias = output_bias(net)
        bias += torch.as_tensor(list(offsets), dtype=bias.dtype)


# ---------------------------------------------------------------- README


def _randomized_text(card: dict) -> list[str]:
    data = card["training"]["data"]
    spec = data.get("randomized") or {}
    dom = card.get("training_domain") or {}
    d = dom.get("particle_diameter_vox")
    return [
        "## Training data", "",
        f"Trained **only on synthetic data**, densely labelled: {spec.get('n_volumes')} phantom "
        f"label maps of {spec.get('shape')} voxels (seeds {data.get('train_seeds')}) at voxel "
        f"sizes {spec.get('voxel_size_um')} µm, so that particles span "
        + (f"{d[0]:.0f}-{d[1]:.0f} voxels across (as `--scale auto` measures them)" if d else
           "a range of sizes")
        + "; hollow cores, central voids, radial/surface/through cracks 1 to several voxels "
        "wide and small pores. Every training patch is rendered afresh under random imaging "
        "(class grey levels and textures, binder brighter or darker than the electrolyte, "
        "anisotropic blur, phase-contrast fringes, rings, bias field, gamma, down-/up-sampling, "
        "white and correlated noise; ranges in the card's `training_domain.appearance_ranges`), "
        f"so the network learns shape rather than one imaging model. Validation patches come "
        f"from label maps of seeds {data.get('val_seeds')}.", "",
        "`crackseg predict` measures the particle size of an input and resamples it into this "
        "range when it lies outside (`--scale auto`, the default). Real scans still differ from "
        "any phantom: check the segmentation on a few slices and fine-tune with `crackseg "
        "finetune` on a handful of annotated slices before trusting damage statistics.", ""]


def _validation_text(validation: dict) -> list[str]:
    """Markdown of benchmark results recorded in a card's ``validation``."""
    lines = []
    dom = validation.get("model_domain")
    if dom:
        lines += ["## Validation on phantoms (all voxels, dense truth)", "",
                  f"`{dom.get('command')}`:", "",
                  "| setting | volumes | matrix | particle | crack | pore |", "|---|---|---|---|---|---|"]
        for r in dom.get("rows", []):
            lines.append(f"| {r['setting']} | {r['n_volumes']} | " + " | ".join(
                f"{r[k]:.3f}" if r.get(k) is not None else "n/a"
                for k in ("matrix", "particle", "crack", "pore")) + " |")
        cf = dom.get("crack_free")
        if cf:
            frac = cf["fraction_damaged_above_0.01"]
            lines += ["", f"Crack-free real (MATBOX) geometry: {frac:.3f} of {cf['n_particles']} "
                      "particles reported with damage above 0.01"
                      + (" (**known failure**: the model reads binder texture and dark necks "
                         "beside particles as cracks; check the segmentation before trusting "
                         "damage statistics)." if frac is not None and frac > 0.02 else ".")]
        lines.append("")
    real = validation.get("zero_shot_real")
    if real:
        lines += ["## Zero-shot on real images (no annotation)", "", f"`{real.get('command')}`:", ""]
        if real.get("nmc811"):
            n = real["nmc811"]
            lines.append(f"- NMC811 holotomography slice, {n['n_particles']} reference particles: "
                         f"per-particle void fraction r = {n['pearson_r']:.2f}, mean "
                         f"{n['mean_model']:.4f} vs reference {n['mean_reference']:.4f}.")
        for g, v in (real.get("segmentpy") or {}).items():
            if isinstance(v, dict):
                lines.append(f"- SegmentPy group {g}: particle Dice {v['mean_dice_particle']:.3f} "
                             f"({len(v['slices'])} slices).")
        lines.append("")
    return lines


def model_readme(card: dict) -> str:
    """README of a model directory: use, data, held-out Dice, reproduction, limits."""
    from crackseg.model_io import model_readme as short_readme

    text = short_readme({**card, "metrics": {}, "training": {}})
    tr = card.get("training") or {}
    data = tr.get("data") or {}
    lines = [text.rstrip(), ""]
    if data.get("source") == "synthetic":
        syn = data.get("synthetic", {})
        lines += [
            "## Training data", "",
            f"Trained **only on synthetic data**: {syn.get('n_volumes')} phantom electrodes of "
            f"{syn.get('shape')} voxels from `crackseg synth` (seeds {data.get('train_seeds')}), "
            f"annotated only on every {syn.get('sparse_every')}th slice along axes "
            f"{syn.get('sparse_axes')}; validation on phantom seeds {data.get('val_seeds')}.", "",
            "What this means for real tomograms: the phantoms imitate NMC secondary particles, "
            "radial cracks, hollow cores, carbon-binder texture, noise, blur, phase-contrast "
            "fringes and drift, but real data differ (beamline, reconstruction artefacts, "
            "contrast between phases, crack morphology). Expect lower accuracy on real scans, "
            "especially for thin cracks; check the segmentation on a few slices and fine-tune "
            "with `crackseg finetune` on a handful of annotated slices of your own data before "
            "trusting damage statistics.", "",
        ]
    elif data.get("source") == "randomized phantoms":
        lines += _randomized_text(card)
    elif data:
        lines += ["## Training data", "", f"Source: {data.get('source')}; annotated voxels "
                  f"per class: {data.get('annotated_voxels_per_class')}.", ""]
    m = card.get("metrics") or {}
    if m.get("n_folds"):
        lines += validation_readme(m)
    elif m.get("validation"):
        lines += ["## Accuracy on held-out data", "", f"Not measured ({m['validation']}).", ""]
    elif m.get("dice"):
        lines += ["## Accuracy on held-out data", "",
                  f"Dice per class on {m.get('n_volumes')} held-out volume(s), "
                  f"{m.get('evaluated_on', 'all labelled voxels')}"
                  + (f" ({m['description']})" if m.get("description") else "") + ":", "",
                  "| class | Dice |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" if v is not None else f"| {k} | n/a |"
                  for k, v in m["dice"].items()]
        lines.append("")
        if card.get("spatial_dims") == 2:
            lines += ["The 2-D model was applied to every z-slice (YX) of the held-out volumes.", ""]
    lines += _validation_text(card.get("validation") or {})
    cal = tr.get("calibration")
    if cal:
        lines += ["Per-class output offsets (logits) fitted on "
                  f"{cal.get('fitted_on')} and folded into the output layer: "
                  + ", ".join(f"{k} {v:+.2f}" for k, v in cal["offsets"].items())
                  + "; validation Dice before/after: "
                  + ", ".join(f"{k} {cal['dice_before'][k]:.3f}/{cal['dice_after'][k]:.3f}"
                              for k in cal["offsets"]) + ".", ""]
    if tr.get("reproduce"):
        lines += ["## Reproduce", "", "```", tr["reproduce"], "```", ""]
    if card.get("parent"):
        p = card["parent"]
        lines += ["## Parent model", "", f"Fine-tuned from `{p.get('name')}` (weights sha256 "
                  f"`{p.get('weights_sha256')}`); output layer re-initialised: "
                  f"{p.get('output_layer_reinitialised')}.", ""]
    lines += ["## Known failure modes", "",
              "- Cracks thinner than one voxel and cracks parallel to the annotated slices are "
              "the hardest cases.",
              "- Grey-value ranges far from the training data (see `normalization.reference` in "
              "the card) reduce accuracy; percentile normalisation only removes a linear change.",
              ""]
    return "\n".join(lines)


def validation_readme(m: dict) -> list[str]:
    """README lines of a cross-validated (fine-tuned) model: Dice per class with its spread."""
    def f(v):
        return "n/a" if v is None else f"{v:.3f}"

    lines = ["## Accuracy on held-out data", "", m.get("description", "") + ".", "",
             "Dice per class on the annotated voxels of the held-out units: mean over folds, "
             "standard deviation, range and pooled over all folds.", "",
             "| class | mean Dice | sd | range | pooled |", "|---|---|---|---|---|"]
    for k, v in m["dice"].items():
        lo, hi = m["dice_range"][k]
        lines.append(f"| {k} | {f(v)} | {f(m['dice_sd'][k])} | {f(lo)}-{f(hi)} | "
                     f"{f(m['dice_pooled'][k])} |")
    return lines + [""]


# ---------------------------------------------------------------- fine-tuning


def __getattr__(name):
    """``finetune_model`` lives in :mod:`crackseg.finetune` (imported on first use)."""
    if name == "finetune_model":
        from crackseg.finetune import finetune_model

        return finetune_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
