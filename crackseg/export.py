"""Model directories from training runs: find and read a checkpoint, write its model.

- :func:`export_model`: a training checkpoint (or run folder) -> model directory
  (``crackseg export``), optionally calibrated (:mod:`crackseg.logit_offsets`)
  and evaluated (:mod:`crackseg.evaluation`).
- :func:`find_checkpoint`, :func:`read_checkpoint`: the newest checkpoint of a
  run folder, its weights and crackseg record.
- :func:`card_from_info`: the model card of such a record.
- :func:`update_model_card`: an existing model directory with new validation
  records (``crackseg export MODEL_DIR``), weights unchanged.

Checkpoints are read with ``torch.load(weights_only=True)``: only the user's
own training output is read this way, and only to turn it into safetensors.

Examples
--------
>>> from crackseg.export import export_model                 # doctest: +SKIP
>>> export_model("runs/nmc4-v2", "models/nmc4-v2", overwrite=True)  # doctest: +SKIP
PosixPath('models/nmc4-v2')
"""

from __future__ import annotations

import os
from pathlib import Path

from crackseg.errors import InputError, ModelError
from crackseg.model_io import new_card, save_model


def find_checkpoint(run_or_ckpt: str | os.PathLike) -> Path:
    """The checkpoint a run folder stands for (its newest ``last.ckpt``), or the file given.

    Raises
    ------
    InputError
        If nothing usable is found.

    Examples
    --------
    >>> find_checkpoint("runs/nmc4-v2")                       # doctest: +SKIP
    PosixPath('runs/nmc4-v2/version_0/checkpoints/last.ckpt')
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
        normalisation, patch size, training provenance, parent), with the
        checkpoint's path and global step added.

    Raises
    ------
    ModelError
        If the file cannot be read or is not a crackseg training checkpoint.

    Examples
    --------
    >>> state, info = read_checkpoint("runs/nmc4-v2")          # doctest: +SKIP
    >>> info["architecture"]["name"], info["global_step"]     # doctest: +SKIP
    ('monai.UNet', 40000)
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
    """Model card from a checkpoint's crackseg record (see :func:`read_checkpoint`).

    The record's training provenance becomes the card's ``training`` (with the
    checkpoint path and, if given, the reproducing command); its training
    domain, if any, is kept.

    Examples
    --------
    >>> _, info = read_checkpoint("runs/nmc4-v2")              # doctest: +SKIP
    >>> card_from_info(info, "nmc4-v2")["name"]                # doctest: +SKIP
    'nmc4-v2'
    """
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
                 validation: dict | None = None,
                 min_crack_solid_contact: float | None = None) -> Path:
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
        Labelled volumes for :func:`crackseg.evaluation.evaluate_model`; the
        result goes into the card's ``metrics``.
    evaluation_note : str
        What those volumes are (recorded with the metrics).
    calibrate_on : list, optional
        Fully labelled validation volumes (never the evaluation volumes) on
        which per-class output offsets are fitted
        (:func:`crackseg.logit_offsets.fit_logit_offsets`) and folded into the
        output bias; recorded in ``training.calibration``.
    calibration_note : str
        What the calibration volumes are.
    description, reproduce : str
        Card description and the command that reproduces the model.
    validation : dict, optional
        Benchmark results (by benchmark name) recorded in the card's
        ``validation`` and summarised in its README.
    min_crack_solid_contact : float, optional
        Crack clean-up threshold recorded in the card's ``postprocess``
        (:mod:`crackseg.crack_support`); prediction applies it.

    Returns
    -------
    Path
        The model directory.
    """
    from crackseg.evaluation import evaluate_model
    from crackseg.logit_offsets import apply_logit_offsets, fit_logit_offsets
    from crackseg.nets import build_network

    out = Path(out_dir)
    _check_threshold(min_crack_solid_contact)
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    state, info = read_checkpoint(run_or_ckpt)
    net = build_network(info["architecture"])
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError("checkpoint weights do not fit its architecture "
                         f"({str(e).splitlines()[0]})") from None
    net.eval()
    card = card_from_info(info, name or out.name, description=description, reproduce=reproduce)
    if validation:
        card["validation"] = validation
    if min_crack_solid_contact is not None:
        from crackseg.crack_support import CARD_KEY

        card["postprocess"] = {CARD_KEY: float(min_crack_solid_contact)}
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
    return save_model(net, card, out, overwrite=overwrite)


def update_model_card(model_dir, out_dir, *, overwrite: bool = False,
                      validation: dict | None = None,
                      min_crack_solid_contact: float | None = None) -> Path:
    """A model directory with new validation records (and clean-up threshold), weights unchanged.

    The weights file is copied byte for byte, so ``weights_sha256`` (and
    every output that names the model by it) stays valid; the README is
    written afresh from the updated card.

    Parameters
    ----------
    model_dir : path-like
        Existing model directory.
    out_dir : path-like
        Directory to write (may be ``model_dir`` itself, with ``overwrite``).
    overwrite : bool
        Replace an existing ``out_dir``.
    validation : dict, optional
        Benchmark results by benchmark name; each replaces the card's entry
        of that name, the others are kept.
    min_crack_solid_contact : float, optional
        Crack clean-up threshold (:mod:`crackseg.crack_support`).

    Returns
    -------
    Path

    Examples
    --------
    >>> update_model_card("models/nmc4-v5", "models/nmc4-v5", overwrite=True,  # doctest: +SKIP
    ...                   validation={"model_domain": results})
    PosixPath('models/nmc4-v5')
    """
    import json
    import shutil

    from crackseg.io import atomic_path
    from crackseg.model_io import CARD, README, WEIGHTS, file_sha256, read_card
    from crackseg.model_readme import model_readme

    src, out = Path(model_dir), Path(out_dir)
    card = read_card(src)
    if file_sha256(src / WEIGHTS) != card.get("weights_sha256"):
        raise ModelError(f"{src}: weights do not match the card's weights_sha256; re-export "
                         "the model from its training run")
    if out.exists() and not overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    _check_threshold(min_crack_solid_contact)
    card = {**card, "validation": {**(card.get("validation") or {}), **(validation or {})}}
    if min_crack_solid_contact is not None:
        from crackseg.crack_support import CARD_KEY

        card["postprocess"] = {**(card.get("postprocess") or {}),
                               CARD_KEY: float(min_crack_solid_contact)}
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        shutil.copyfile(src / WEIGHTS, tmp / WEIGHTS)
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
        (tmp / README).write_text(model_readme(card))
    return out


def _check_threshold(value: float | None) -> None:
    """One-line error for a crack clean-up threshold outside [0, 1]."""
    if value is not None and not 0 <= value <= 1:
        raise InputError(f"crack clean-up threshold {value:g} (--crack-solid-contact): give a "
                         "share between 0 and 1, e.g. 0.5")
