"""Accuracy of a model on labelled volumes, through the tiling ``crackseg predict`` runs.

- :func:`evaluate_model`: per-class Dice of a model on labelled volumes (all voxels).
- :func:`predict_logits`, :func:`predict_labels`: class logits (and their argmax)
  of one image, tiled as :func:`crackseg.inference.predict_volume` tiles; for
  calibration (:mod:`crackseg.logit_offsets`), fine-tuning folds and
  probability benchmarks.

Windows come from :func:`crackseg.inference.plan_inference` and are stitched
by :func:`crackseg.inference.stitched_logits`; Dice is
:func:`crackseg.metrics.dice_counts` summed over volumes.

Examples
--------
>>> from crackseg.evaluation import evaluate_model          # doctest: +SKIP
>>> evaluate_model("models/nmc4-synthetic-v1", [(image, labels)])["dice"]  # doctest: +SKIP
{'matrix': 0.98, 'particle': 0.97, 'crack': 0.84, 'pore': 0.77}
"""

from __future__ import annotations

import numpy as np

from crackseg.errors import InputError
from crackseg.model_io import card_schema, load_model


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
        Raw grey values.  A 2-D model segments a volume slice by slice (YX),
        normalised with the whole volume's range.
    sw_batch_size : int
        Windows per forward pass.

    Returns
    -------
    torch.Tensor, float32, shape (C, *image.shape)

    Examples
    --------
    >>> logits = predict_logits(net, card, volume)           # doctest: +SKIP
    >>> logits.shape                                         # doctest: +SKIP
    torch.Size([4, 64, 64, 64])
    """
    import torch

    from crackseg.chunk_inference import stitched_logits
    from crackseg.normalize import normalize_image
    from crackseg.tiling import plan_inference

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
    """Channel index per voxel of one image (the argmax of :func:`predict_logits`).

    Returns
    -------
    numpy.ndarray of uint8, same shape as ``image``
        Channel indices (not stored label values).

    Examples
    --------
    >>> predict_labels(net, card, slice_yx).shape             # doctest: +SKIP
    (512, 512)
    """
    logits = predict_logits(net, card, image, sw_batch_size=sw_batch_size)
    return np.argmax(logits.numpy(), axis=0).astype(np.uint8)


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
    defaults, the path ``crackseg predict`` runs.  Counts are pooled over the
    volumes before Dice is taken.

    Parameters
    ----------
    model : path-like, or (net, card)
        Model directory (or shipped name), or a loaded network with its card.
    volumes : iterable
        ``(image, labels)`` pairs, or objects with ``image`` and ``labels``
        attributes (e.g. :class:`crackseg.synthetic.Phantom`).  Labels hold
        stored values of the model's schema; the ignore value is skipped.
    quiet : bool
        No progress bar.

    Returns
    -------
    dict
        ``{"dice": {class: value}, "n_volumes": n, "voxels": n,
        "evaluated_on": "all labelled voxels"}``.

    Examples
    --------
    >>> evaluate_model("models/nmc4-v2", [(image, labels)])["n_volumes"]  # doctest: +SKIP
    1
    """
    import torch
    from tqdm import tqdm

    from crackseg.data import labels_to_index
    from crackseg.metrics import dice_counts, dice_from_counts

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
