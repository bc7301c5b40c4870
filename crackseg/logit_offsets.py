"""Per-class output offsets: a constant added to each class logit, fitted for mean Dice.

Class-weighted training shifts a network towards rare classes (thicker
cracks); adding a constant per class to the output logits undoes such a
prior shift.  ``crackseg export --calibrate-phantoms N`` fits the offsets on
validation phantoms (:func:`fit_logit_offsets`) and folds them into the
output bias (:func:`apply_logit_offsets`), so the released weights carry them.

Examples
--------
>>> from crackseg.logit_offsets import apply_logit_offsets, fit_logit_offsets  # doctest: +SKIP
>>> cal = fit_logit_offsets((net, card), [(image, labels)])  # doctest: +SKIP
>>> apply_logit_offsets(net, cal["offsets"].values())          # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from crackseg.errors import ModelError
from crackseg.model_io import card_schema


def output_bias(net):
    """The bias of the network's last layer (adding to it shifts every output logit).

    Raises
    ------
    ModelError
        If the last parameter is not a convolution bias.

    Examples
    --------
    >>> output_bias(net).shape                               # doctest: +SKIP
    torch.Size([4])
    """
    name, param = list(net.named_parameters())[-1]
    if not name.endswith("conv.bias"):
        raise ModelError(f"cannot find the output bias of this network (last parameter {name})")
    return param


def _shifted_dice(logits, targets, offsets, n_classes: int) -> list[float]:
    """Pooled Dice per class of the argmax of ``logits + offsets`` (one offset per channel)."""
    import torch

    from crackseg.metrics import dice_counts, dice_from_counts

    counts = 0
    for lg, t in zip(logits, targets):
        shift = torch.as_tensor(offsets, dtype=lg.dtype).reshape(-1, *([1] * (lg.dim() - 1)))
        pred = (lg + shift).argmax(0)
        counts = counts + dice_counts(pred[None], t[None], n_classes)
    return dice_from_counts(counts)


def fit_logit_offsets(model, volumes, *, grid=None, passes: int = 2) -> dict:
    """Per-class logit offsets that maximise mean Dice on labelled validation volumes.

    Offsets are found by coordinate search over ``grid`` for every class but
    the first (whose offset stays 0).  Logits come from
    :func:`crackseg.evaluation.predict_logits`, the tiling ``crackseg
    predict`` runs.

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

    Examples
    --------
    >>> fit_logit_offsets((net, card), [(image, labels)])["offsets"]  # doctest: +SKIP
    {'matrix': 0.0, 'particle': 0.25, 'crack': -0.5, 'pore': 0.0}
    """
    import torch

    from crackseg.data import labels_to_index
    from crackseg.evaluation import predict_logits

    net, card = model
    schema = card_schema(card)
    n = schema.num_classes
    grid = np.arange(-2.5, 2.51, 0.25) if grid is None else np.asarray(grid, dtype=float)
    logits, targets = [], []
    for image, labels in volumes:
        logits.append(predict_logits(net, card, image))
        targets.append(torch.from_numpy(labels_to_index(labels, schema).astype(np.int64)))

    off = np.zeros(n)
    before = _shifted_dice(logits, targets, off, n)
    best = float(np.nanmean(before))
    for _ in range(passes):
        for c in range(1, n):
            for g in grid:
                trial = off.copy()
                trial[c] = g
                s = float(np.nanmean(_shifted_dice(logits, targets, trial, n)))
                if s > best + 1e-6:
                    best, off = s, trial
    after = _shifted_dice(logits, targets, off, n)
    return {"offsets": dict(zip(schema.names, [round(float(v), 3) for v in off])),
            "dice_before": dict(zip(schema.names, [round(v, 4) for v in before])),
            "dice_after": dict(zip(schema.names, [round(v, 4) for v in after]))}


def apply_logit_offsets(net, offsets) -> None:
    """Add per-class offsets (channel order) to the output bias, in place.

    Examples
    --------
    >>> apply_logit_offsets(net, [0.0, 0.25, -0.5, 0.0])   # doctest: +SKIP
    """
    import torch

    with torch.no_grad():
        bias = output_bias(net)
        bias += torch.as_tensor(list(offsets), dtype=bias.dtype)
