"""The README of a model directory, written from its model card.

One writer for every model directory (``crackseg export``, ``crackseg
finetune``, :func:`crackseg.model_io.save_model`): what the model takes and
returns, what it was trained on, its held-out Dice (single split or
cross-validated), benchmark results recorded in the card's ``validation``,
output calibration, how to reproduce it, its parent model and known failure
modes.  Sections whose card fields are empty are left out.

Examples
--------
>>> from crackseg.nets import unet_architecture
>>> from crackseg.model_io import new_card
>>> card = new_card("tiny", unet_architecture(3, out_channels=4, channels=(4, 8)))
>>> print(model_readme(card).splitlines()[0])
# tiny
"""

from __future__ import annotations

_DOMAIN_TABLE_CLASSES = ("matrix", "particle", "crack", "pore")
"""Columns of the phantom validation table (classes of the ``nmc4`` schema)."""


def model_readme(card: dict) -> str:
    """README of a model directory: use, data, held-out Dice, reproduction, limits.

    Parameters
    ----------
    card : dict
        Model card (:func:`crackseg.model_io.new_card`, filled in by export or
        fine-tuning).

    Returns
    -------
    str
        Markdown text, ending in a newline.

    Examples
    --------
    >>> from crackseg.model_io import read_card
    >>> text = model_readme(read_card("models/nmc4-v2"))      # doctest: +SKIP
    >>> "## Known failure modes" in text                      # doctest: +SKIP
    True
    """
    tr = card.get("training") or {}
    lines = summary_lines(card) + [""]
    lines += training_data_lines(card)
    lines += accuracy_lines(card)
    lines += validation_lines(card.get("validation") or {})
    lines += calibration_lines(tr.get("calibration"))
    lines += postprocess_lines(card.get("postprocess"))
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


def summary_lines(card: dict) -> list[str]:
    """Title, description, input, classes, architecture, window and parent, one line each."""
    arch = card["architecture"]["args"]
    lines = [
        f"# {card['name']}", "",
        card.get("description") or "A crackseg segmentation model.", "",
        f"- Input: {card['spatial_dims']}-D grey-value "
        f"{'volumes (ZYX)' if card['spatial_dims'] == 3 else 'images (YX)'}, one channel",
        f"- Classes ({card['schema']['name']}): "
        + ", ".join(f"{k}={v}" for k, v in card["schema"]["classes"].items()),
        f"- Architecture: {card['architecture']['name']} channels={arch['channels']} "
        f"res_units={arch['num_res_units']} dropout={arch['dropout']}",
        f"- Window: {card['inference']['roi_size']}, overlap {card['inference']['overlap']}",
    ]
    if card.get("parent"):
        lines.append(f"- Fine-tuned from: {card['parent'].get('name')} "
                     f"(weights {str(card['parent'].get('weights_sha256'))[:12]})")
    return lines


# ---------------------------------------------------------------- training data


def training_data_lines(card: dict) -> list[str]:
    """The "Training data" section: sparse phantoms, randomised phantoms or the user's files."""
    data = (card.get("training") or {}).get("data") or {}
    if data.get("source") == "synthetic":
        return _sparse_phantom_lines(data)
    if data.get("source") == "randomized phantoms":
        return _randomized_lines(card)
    if data:
        return ["## Training data", "", f"Source: {data.get('source')}; annotated voxels "
                f"per class: {data.get('annotated_voxels_per_class')}.", ""]
    return []


def _sparse_phantom_lines(data: dict) -> list[str]:
    syn = data.get("synthetic", {})
    return [
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


def _randomized_lines(card: dict) -> list[str]:
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


# ---------------------------------------------------------------- accuracy


def accuracy_lines(card: dict) -> list[str]:
    """The "Accuracy on held-out data" section from the card's ``metrics``."""
    m = card.get("metrics") or {}
    if m.get("n_folds"):
        return cross_validation_lines(m)
    if m.get("validation"):
        return ["## Accuracy on held-out data", "", f"Not measured ({m['validation']}).", ""]
    if not m.get("dice"):
        return []
    lines = ["## Accuracy on held-out data", "",
             f"Dice per class on {m.get('n_volumes')} held-out volume(s), "
             f"{m.get('evaluated_on', 'all labelled voxels')}"
             + (f" ({m['description']})" if m.get("description") else "") + ":", "",
             "| class | Dice |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" if v is not None else f"| {k} | n/a |"
              for k, v in m["dice"].items()]
    lines.append("")
    if card.get("spatial_dims") == 2:
        lines += ["The 2-D model was applied to every z-slice (YX) of the held-out volumes.", ""]
    return lines


def cross_validation_lines(m: dict) -> list[str]:
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


# ---------------------------------------------------------------- benchmarks


def validation_lines(validation: dict) -> list[str]:
    """Markdown of benchmark results recorded in a card's ``validation``."""
    return (_phantom_domain_lines(validation.get("model_domain"))
            + _zero_shot_lines(validation.get("zero_shot_real")))


def _phantom_domain_lines(dom: dict | None) -> list[str]:
    if not dom:
        return []
    lines = ["## Validation on phantoms (all voxels, dense truth)", "",
             f"`{dom.get('command')}`:", "",
             "| setting | volumes | matrix | particle | crack | pore | mean damage reported / true |",
             "|---|---|---|---|---|---|---|"]
    for r in dom.get("rows", []):
        dmg = r.get("damage") or {}
        ratio = (f"{dmg['mean_ratio']:.2f} (per volume off by a median factor "
                 f"{dmg['median_factor']:.2f})" if dmg.get("mean_ratio") else "n/a")
        lines.append(f"| {r['setting']} | {r['n_volumes']} | " + " | ".join(
            f"{r[k]:.3f}" if r.get(k) is not None else "n/a" for k in _DOMAIN_TABLE_CLASSES)
            + f" | {ratio} |")
    cf = dom.get("crack_free")
    if cf:
        frac = cf["fraction_damaged_above_0.01"]
        lines += ["", f"Crack-free real (MATBOX) geometry: {frac:.3f} of {cf['n_particles']} "
                  "particles reported with damage above 0.01"
                  + (" (**known failure**: the model reads binder texture and dark necks "
                     "beside particles as cracks; check the segmentation before trusting "
                     "damage statistics)." if frac is not None and frac > 0.02 else ".")]
    return lines + [""]


def _zero_shot_lines(real: dict | None) -> list[str]:
    if not real:
        return []
    lines = ["## Zero-shot on real images (no annotation)", "", f"`{real.get('command')}`:", ""]
    if real.get("nmc811"):
        n = real["nmc811"]
        lines.append(f"- NMC811 holotomography slice, {n['n_particles']} reference particles: "
                     f"per-particle void fraction r = {n['pearson_r']:.2f}, mean "
                     f"{n['mean_model']:.4f} vs reference {n['mean_reference']:.4f}.")
    for g, v in (real.get("segmentpy") or {}).items():
        if isinstance(v, dict):
            lines.append(f"- SegmentPy group {g}: particle Dice {v['mean_dice_particle']:.3f} "
                         f"({len(v['slices'])} slices).")
    return lines + [""]


def postprocess_lines(post: dict | None) -> list[str]:
    """The sentence on the crack clean-up prediction applies, if the card sets it."""
    thr = (post or {}).get("min_crack_solid_contact")
    if thr is None:
        return []
    return ["## After prediction", "",
            f"Crack regions that touch particle or pore on less than {thr:g} of their faces "
            "(dark gaps in the matrix beside particles, not cracks inside one) are relabelled "
            "matrix (`crackseg.crack_support`; `prediction.json` records how many voxels).", ""]


def calibration_lines(cal: dict | None) -> list[str]:
    """The sentence on per-class output offsets folded into the output layer, if any."""
    if not cal:
        return []
    return ["Per-class output offsets (logits) fitted on "
            f"{cal.get('fitted_on')} and folded into the output layer: "
            + ", ".join(f"{k} {v:+.2f}" for k, v in cal["offsets"].items())
            + "; validation Dice before/after: "
            + ", ".join(f"{k} {cal['dice_before'][k]:.3f}/{cal['dice_after'][k]:.3f}"
                        for k in cal["offsets"]) + ".", ""]
