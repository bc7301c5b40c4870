"""Which slices to annotate next: model uncertainty, spread along the axis.

:func:`slice_uncertainty` runs the model the way ``crackseg predict`` does,
with test-time augmentation (flips and 90-degree rotations), and scores each
slice along ``axis`` by its mean predictive entropy (0 = every sample agrees,
1 = uniform over the classes).  :func:`choose_slices` picks slices greedily:
the most uncertain first, then each next one by uncertainty times a factor
that grows with its distance to the slices already chosen or annotated, so
that suggestions spread along the axis.  :func:`write_suggestions` writes a
label template (the model's prediction on the suggested slices, 255
elsewhere, plus any annotations given) that ``crackseg finetune`` takes as it
is once corrected, a PNG per suggestion and a table.

Arrays are ZYX (a volume, or a stack of 2-D sections along axis 0); a slice
along ``axis`` is ``np.take(volume, index, axis)``.

Examples
--------
>>> import numpy as np
>>> from crackseg.suggest import choose_slices
>>> score = np.array([0.1, 0.9, 0.85, 0.2, 0.5, 0.1])
>>> choose_slices(score, 2, spacing=2.0).tolist()      # 2 is next to 1: 4 instead
[1, 4]
"""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import numpy as np

from crackseg.errors import InputError

TEMPLATE = "labels_template.tif"


def candidates(n: int, max_candidates: int | None) -> np.ndarray:
    """Evenly spaced slice indices (all when ``max_candidates`` is ``None`` or larger)."""
    if not max_candidates or max_candidates >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, int(max_candidates)).round().astype(int))


def slice_uncertainty(model, volume, *, axis: int = 0, samples: int = 4,
                      max_candidates: int | None = None, device: str = "auto",
                      seed: int = 0) -> dict:
    """Mean predictive entropy per slice along ``axis`` and the predicted labels.

    Parameters
    ----------
    model : (net, card)
        Loaded model (2-D models see each slice on its own; 3-D models the
        whole volume).
    volume : numpy.ndarray, shape (Z, Y, X)
        Grey values.
    axis : int
        Slicing axis.
    samples : int
        Test-time augmentation samples (at least 2).
    max_candidates : int, optional
        Score only this many evenly spaced slices (2-D models: less work).

    Returns
    -------
    dict
        ``index`` (scored slices), ``score`` (mean entropy / log(classes)),
        ``labels`` (stored labels of those slices, moved to axis 0,
        shape (n, ...)).
    """
    from crackseg.inference import predict_volume

    net, card = model
    n_classes = len(card["schema"]["classes"])
    moved = np.moveaxis(np.asarray(volume), axis, 0)
    idx = candidates(moved.shape[0], max_candidates)
    if int(card["spatial_dims"]) == 2:
        data = np.ascontiguousarray(moved[idx])
    else:
        data = np.asarray(volume)
    pred = predict_volume((net, card), data, uncertainty="tta", n_samples=int(samples),
                          progress=False, device=device, seed=seed)
    ent = np.asarray(pred.entropy, dtype=np.float32)
    lab = np.asarray(pred.labels)
    if int(card["spatial_dims"]) == 3:
        ent, lab = np.moveaxis(ent, axis, 0)[idx], np.moveaxis(lab, axis, 0)[idx]
    score = ent.reshape(len(idx), -1).mean(1) / np.log(n_classes)
    return {"index": idx, "score": score, "labels": lab}


def choose_slices(score, n: int, *, positions=None, annotated=(), spacing: float | None = None,
                  length: int | None = None) -> np.ndarray:
    """Greedy choice by uncertainty and spread along the axis.

    Parameters
    ----------
    score : array_like
        Uncertainty of each candidate slice.
    n : int
        Slices to choose.
    positions : array_like, optional
        Positions of the candidates along the axis (default 0, 1, ...).
    annotated : sequence of int
        Positions already annotated (never chosen; chosen slices keep away
        from them as from each other).
    spacing : float, optional
        Distance at which the spread factor reaches 63 % (default: the axis
        length over twice the number of annotated and chosen slices); 0
        turns the spread off.

    Returns
    -------
    numpy.ndarray of int
        Positions of the chosen slices, in order of choice.
    """
    score = np.asarray(score, dtype=np.float64)
    pos = np.arange(len(score)) if positions is None else np.asarray(positions)
    length = length or (int(pos.max()) + 1 if len(pos) else 1)
    taken = [int(a) for a in annotated]
    if spacing is None:
        spacing = length / (2.0 * max(1, n + len(taken)))
    free = ~np.isin(pos, taken)
    chosen: list[int] = []
    for _ in range(min(int(n), int(free.sum()))):
        gain = np.where(free, score, -np.inf)
        if (chosen or taken) and spacing > 0:
            d = np.min(np.abs(pos[:, None] - np.array(chosen + taken)[None, :]), axis=1)
            gain = np.where(free, score * (1.0 - np.exp(-(d / spacing) ** 2)) + 1e-9 * score,
                            -np.inf)
        k = int(np.argmax(gain))
        chosen.append(int(pos[k]))
        free[k] = False
    return np.array(chosen, dtype=int)


def annotated_positions(labels, axis: int, ignore: int = 255) -> list[int]:
    """Slices along ``axis`` that already hold annotations."""
    lab = np.asarray(labels)
    other = tuple(a for a in range(lab.ndim) if a != axis)
    return [int(i) for i in np.flatnonzero((lab != ignore).any(axis=other))]


def suggest_slices(model, volume, n: int = 5, *, axis: int = 0, labels=None,
                   samples: int = 4, max_candidates: int | None = None,
                   spacing: float | None = None, device: str = "auto", seed: int = 0) -> dict:
    """Rank slices for annotation (see module docs).

    Parameters
    ----------
    model : path-like or (net, card)
        Model directory or loaded model.
    volume : numpy.ndarray, shape (Z, Y, X)
        Volume or stack of sections.
    n : int
        Number of suggestions.
    axis : int
        Slicing axis (0 = z).
    labels : numpy.ndarray, optional
        Existing annotations (255 = not annotated): their slices are not
        suggested again, and the template keeps them.

    Returns
    -------
    dict
        ``slices`` (chosen positions), ``scores`` (their uncertainty),
        ``predicted`` (stored labels of each chosen slice), ``ranked``
        (every scored slice, most uncertain first), ``card``.
    """
    from crackseg.model_io import load_model

    net, card = model if isinstance(model, tuple) else load_model(model)
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise InputError(f"suggest-slices needs a volume or a stack of sections (Z, Y, X), got "
                         f"shape {volume.shape}")
    if not -3 <= axis < 3:
        raise InputError(f"--axis {axis}: a volume has axes 0, 1, 2")
    axis %= 3
    if labels is not None and np.shape(labels) != volume.shape:
        raise InputError(f"labels of shape {np.shape(labels)} do not match the image "
                         f"{volume.shape}")
    ignore = int(card["schema"].get("ignore", 255))
    done = annotated_positions(labels, axis, ignore) if labels is not None else []
    u = slice_uncertainty((net, card), volume, axis=axis, samples=samples,
                          max_candidates=max_candidates, device=device, seed=seed)
    chosen = choose_slices(u["score"], n, positions=u["index"], annotated=done,
                           spacing=spacing, length=volume.shape[axis])
    where = {int(p): k for k, p in enumerate(u["index"])}
    order = np.argsort(-u["score"])
    return {"slices": chosen, "axis": axis, "scores": [float(u["score"][where[c]]) for c in chosen],
            "predicted": [u["labels"][where[c]] for c in chosen], "annotated": done,
            "ranked": [(int(u["index"][k]), float(u["score"][k])) for k in order], "card": card,
            "samples": int(samples)}


# ---------------------------------------------------------------- outputs


def template(shape, s: dict, labels=None, *, ignore: int = 255, fill: bool = True) -> np.ndarray:
    """Label template: given annotations, the prediction on suggested slices, ``ignore`` elsewhere."""
    out = np.full(shape, ignore, np.uint8) if labels is None else np.asarray(labels, np.uint8).copy()
    for pos, pred in zip(s["slices"], s["predicted"]):
        sel = [slice(None)] * len(shape)
        sel[s["axis"]] = int(pos)
        out[tuple(sel)] = pred if fill else ignore
    return out


def suggestion_png(image2d, pred2d, schema, title: str) -> bytes:
    """PNG: the slice, and the model's prediction over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    colours = ["blue", "red", "yellow", "green", "purple", "orange", "cyan", "brown"]
    lut = np.zeros(256, int)
    lut[list(schema.values)] = np.arange(schema.num_classes)
    idx = lut[np.asarray(pred2d, np.uint8)]
    shown = [k for k, n in enumerate(schema.names) if n != "matrix"]   # matrix left clear
    idx = np.ma.masked_where(~np.isin(idx, shown), idx)
    fig, ax = plt.subplots(1, 2, figsize=(9, 4.6))
    lo, hi = np.percentile(image2d, [1, 99])
    for a in ax:
        a.imshow(image2d, cmap="gray", vmin=lo, vmax=hi)
        a.set_axis_off()
    cols = [colours[k % len(colours)] for k in range(schema.num_classes)]
    ax[1].imshow(idx, cmap=ListedColormap(cols), alpha=0.45, vmin=-0.5,
                 vmax=schema.num_classes - 0.5, interpolation="nearest")
    ax[0].set_title(title, fontsize=9)
    ax[1].set_title("model prediction (to correct): " + ", ".join(
        f"{schema.names[k]} {cols[k]}" for k in shown), fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_suggestions(out_dir, volume, s: dict, *, image_path: str = "", labels=None,
                      voxel_size_um=None, schema=None, overwrite: bool = False) -> Path:
    """Write the suggestion folder atomically: template, PNGs, CSV/JSON table, README.

    With a ``schema`` other than the model's, the template holds only the
    given annotations (the model's labels would be of another schema).
    """
    from crackseg.io import atomic_path, json_safe, write_volume
    from crackseg.model_io import card_schema

    mschema = card_schema(s["card"])
    same = schema is None or schema.to_dict()["classes"] == mschema.to_dict()["classes"]
    tmpl = template(volume.shape, s, labels, ignore=mschema.ignore, fill=same)
    rows = []
    with atomic_path(out_dir, overwrite=overwrite) as tmp:
        tmp.mkdir()
        write_volume(tmp / TEMPLATE, tmpl, voxel_size_um)
        for r, (pos, sc, pred) in enumerate(zip(s["slices"], s["scores"], s["predicted"]), 1):
            name = f"suggestion_{r:02d}_axis{s['axis']}_{int(pos):05d}.png"
            img2d = np.take(volume, int(pos), axis=s["axis"]).astype(np.float32)
            (tmp / name).write_bytes(suggestion_png(
                img2d, pred, mschema, f"#{r}: slice {int(pos)} along axis {s['axis']}, "
                f"uncertainty {sc:.3f}"))
            frac = {n: round(float(np.mean(pred == v)), 4) for n, v in
                    zip(mschema.names, mschema.values)}
            rows.append({"rank": r, "axis": s["axis"], "index": int(pos),
                         "uncertainty": round(sc, 5), "png": name, **frac})
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["rank"])
        w.writeheader()
        w.writerows(rows)
        (tmp / "suggestions.csv").write_text(buf.getvalue())
        meta = {"image": image_path, "model": s["card"].get("name"),
                "model_sha256": s["card"].get("weights_sha256"), "axis": s["axis"],
                "tta_samples": s["samples"], "already_annotated": s["annotated"],
                "template": TEMPLATE, "template_has_predictions": same,
                "suggestions": rows, "ranked_by_uncertainty": s["ranked"]}
        (tmp / "suggestions.json").write_text(json.dumps(json_safe(meta), indent=2))
        (tmp / "README.txt").write_text(readme_text(image_path, s, same))
    return Path(out_dir)


def readme_text(image_path: str, s: dict, has_predictions: bool) -> str:
    """How to correct the template and fine-tune on it."""
    pos = ", ".join(str(int(p)) for p in s["slices"])
    what = ("holds the model's prediction on the suggested slices" if has_predictions else
            "is empty on the suggested slices (the model's classes differ from your schema)")
    return (f"Suggested slices along axis {s['axis']} of {image_path or 'the image'}: {pos}\n"
            f"(most uncertain first, spread along the axis; see suggestions.csv and the PNGs).\n\n"
            f"{TEMPLATE} has the shape of the image; it {what};\n"
            "every other voxel is 255 (not annotated), except annotations you gave.\n\n"
            "Correct the suggested slices:\n"
            "- napari: open the image, then the template as a Labels layer, paint, and\n"
            "  save the layer as a TIFF;\n"
            "- Fiji: open both, correct the template with the pencil on the suggested\n"
            "  slices (values as in the schema), save as TIFF.\n\n"
            "Then fine-tune on the corrected file as it is:\n"
            f"  crackseg finetune --model MODEL --image {image_path or 'IMAGE'} "
            f"--labels {TEMPLATE} --minutes 10 -o models/my-model\n")


def print_table(s: dict, file=sys.stdout) -> None:
    """The suggestions, one line each."""
    for r, (pos, sc) in enumerate(zip(s["slices"], s["scores"]), 1):
        print(f"{r:3d}  axis {s['axis']}  slice {int(pos):6d}  uncertainty {sc:.3f}", file=file)
