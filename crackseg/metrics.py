"""Accuracy measures of segmentations, thin structures, instances and probabilities.

- :func:`dice_per_class`: Dice of each class of a label image, over annotated voxels.
- :func:`dice_counts`, :func:`dice_from_counts`: the same Dice from per-class
  counts that add up over images, batches and processes (validation, evaluation).
- :func:`cldice`: centre-line Dice of a thin structure (Shit et al., CVPR 2021),
  skeletons from :func:`skimage.morphology.skeletonize`.
- :func:`boundary_f1`: F1 of the boundary voxels of a mask within a distance tolerance.
- :func:`instance_pairs`: matched instance pairs (IoU above a threshold).
- :func:`expected_calibration_error`: gap between confidence and accuracy of
  per-voxel class probabilities.

All arrays are label images of one shape: 2-D (YX) or 3-D (ZYX), distances in
voxels.

Examples
--------
>>> import numpy as np
>>> from crackseg.labels import NMC4
>>> from crackseg.metrics import dice_per_class
>>> truth = np.zeros((4, 4, 4), np.uint8); truth[:2] = 1
>>> pred = truth.copy(); pred[0, 0, 0] = 0
>>> {k: round(v, 3) for k, v in dice_per_class(pred, truth, NMC4).items() if v == v}
{'matrix': 0.985, 'particle': 0.984}
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema


def _same_shape(a, b, what: str = "prediction and truth") -> None:
    if np.shape(a) != np.shape(b):
        raise InputError(f"{what} differ in shape: {np.shape(a)} vs {np.shape(b)}")


def dice_counts(pred, target, n_classes: int):
    """Per-class intersection and sizes over annotated voxels, for summing over batches.

    The counts of several images (or batches, or processes) add up, and
    :func:`dice_from_counts` turns their sum into a pooled Dice.

    Parameters
    ----------
    pred : torch.Tensor of int, shape (B, *spatial)
        Predicted channel index.
    target : torch.Tensor of int, shape (B, *spatial) or (B, 1, *spatial)
        True channel index, negative = not annotated (skipped).
    n_classes : int
        Number of classes.

    Returns
    -------
    torch.Tensor, float64, shape (3, n_classes), on the device of ``pred``
        Rows: intersection, predicted count, true count (annotated voxels).

    Examples
    --------
    >>> import torch
    >>> pred = torch.tensor([[0, 1, 1, 2]]); true = torch.tensor([[0, 1, -1, 1]])
    >>> dice_counts(pred, true, 3).int().tolist()
    [[1, 1, 0], [1, 1, 1], [1, 2, 0]]
    """
    import torch

    if target.dim() == pred.dim() + 1:
        target = target[:, 0]
    keep = target >= 0
    p, t = pred[keep].long(), target[keep].long()
    inter = torch.bincount(t[p == t], minlength=n_classes)[:n_classes]
    npred = torch.bincount(p, minlength=n_classes)[:n_classes]
    ntrue = torch.bincount(t, minlength=n_classes)[:n_classes]
    return torch.stack([inter, npred, ntrue]).to(torch.float64)


def dice_from_counts(counts) -> list[float]:
    """Dice per class, ``2 |P ∩ T| / (|P| + |T|)``, from :func:`dice_counts` (or their sum).

    Parameters
    ----------
    counts : array_like, shape (3, n_classes)
        Rows: intersection, predicted count, true count (a CPU tensor or an array).

    Returns
    -------
    list of float
        One value per class; NaN where a class is in neither prediction nor truth.

    Examples
    --------
    >>> dice_from_counts([[1, 1, 0], [1, 1, 0], [1, 2, 0]])   # class 2 in neither
    [1.0, 0.6666666666666666, nan]
    """
    inter, npred, ntrue = np.asarray(counts, dtype=np.float64)
    denom = npred + ntrue
    d = np.where(denom > 0, 2 * inter / np.maximum(denom, 1), np.nan)
    return [float(v) for v in d]


def dice_per_class(pred, truth, schema: LabelSchema = NMC4, *, ignore: int | None = None) -> dict:
    """Dice coefficient of every class of a schema, over the annotated voxels.

    Parameters
    ----------
    pred, truth : ndarray of int, same shape (ZYX or YX)
        Stored label values of ``schema``.  Voxels where ``truth`` holds the
        ignore value are left out.
    schema : LabelSchema
        Classes to score (names and stored values).
    ignore : int, optional
        Value of unannotated voxels (default: ``schema.ignore``, 255).

    Returns
    -------
    dict of str to float
        ``2 |P ∩ T| / (|P| + |T|)`` per class name; NaN where the class is in
        neither image.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[0, 1], [1, 255]], np.uint8); p = np.array([[0, 1], [0, 1]], np.uint8)
    >>> d = dice_per_class(p, t)
    >>> round(d["matrix"], 3), round(d["particle"], 3)
    (0.667, 0.667)
    """
    import torch

    _same_shape(pred, truth)
    pred = np.asarray(pred).ravel().astype(np.int64)
    truth = np.asarray(truth).ravel().astype(np.int64)
    ign = schema.ignore if ignore is None else int(ignore)
    truth[truth == ign] = -1
    values = list(schema.classes.values())
    size = int(max(pred.max(initial=0), truth.max(initial=0), *values)) + 1
    dice = dice_from_counts(dice_counts(torch.from_numpy(pred), torch.from_numpy(truth), size))
    return {name: dice[v] for name, v in schema.classes.items()}


def skeleton(mask) -> np.ndarray:
    """Topological skeleton of a binary mask (2-D or 3-D, :func:`skimage.morphology.skeletonize`).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((5, 9), bool); m[1:4, 1:8] = True
    >>> bool(skeleton(m).sum() < m.sum() / 2)
    True
    """
    from skimage.morphology import skeletonize

    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return m.copy()
    return skeletonize(m).astype(bool)


def cldice(pred_mask, truth_mask, *, valid=None) -> float:
    """Centre-line Dice of a thin structure (cracks, vessels).

    Topology precision ``Tprec = |S(P) ∩ T| / |S(P)|`` (how much of the
    predicted skeleton lies in the true mask) and topology sensitivity
    ``Tsens = |S(T) ∩ P| / |S(T)|`` (how much of the true skeleton the
    prediction covers); ``clDice = 2 Tprec Tsens / (Tprec + Tsens)``
    (Shit et al., "clDice", CVPR 2021).  Unlike Dice it is not dominated by
    the thick parts of a structure and rewards getting thin cracks connected.

    Parameters
    ----------
    pred_mask, truth_mask : ndarray of bool, same shape (ZYX or YX)
    valid : ndarray of bool, optional
        Voxels that count (e.g. annotated ones); skeletons are taken of the
        whole masks, then restricted to ``valid``.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((9, 9), bool); t[4, 1:8] = True
    >>> cldice(t, t)
    1.0
    >>> p = t.copy(); p[4, 4] = False   # the crack broken in two
    >>> round(cldice(p, t), 3)
    0.923
    """
    _same_shape(pred_mask, truth_mask)
    p = np.asarray(pred_mask, dtype=bool)
    t = np.asarray(truth_mask, dtype=bool)
    sp, st = skeleton(p), skeleton(t)
    if valid is not None:
        _same_shape(valid, p, "valid mask and masks")
        v = np.asarray(valid, dtype=bool)
        sp, st, p, t = sp & v, st & v, p & v, t & v
    if not sp.any() and not st.any():
        return 1.0 if not p.any() and not t.any() else 0.0
    if not sp.any() or not st.any():
        return 0.0
    tprec = float((sp & t).sum() / sp.sum())
    tsens = float((st & p).sum() / st.sum())
    return 0.0 if tprec + tsens == 0 else 2.0 * tprec * tsens / (tprec + tsens)


def boundary(mask) -> np.ndarray:
    """Boundary voxels of a mask: inside it, with a face neighbour outside it.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
    >>> int(boundary(m).sum())
    8
    """
    m = np.asarray(mask, dtype=bool)
    return m & ~ndi.binary_erosion(m, ndi.generate_binary_structure(m.ndim, 1), border_value=1)


def boundary_f1(pred_mask, truth_mask, *, tolerance: float = 1.0, voxel_size=None) -> float:
    """F1 of boundary voxels matched within a distance tolerance.

    A predicted boundary voxel is correct when a true boundary voxel lies
    within ``tolerance`` (precision); a true one is found when a predicted one
    lies within it (recall).  For structures one or two voxels thick (cracks)
    the boundary is nearly the whole structure, so this scores location with
    a little slack instead of exact overlap.

    Parameters
    ----------
    pred_mask, truth_mask : ndarray of bool, same shape (ZYX or YX)
    tolerance : float
        Distance (voxels, or the units of ``voxel_size``).
    voxel_size : sequence of float, optional
        Edge length per axis (e.g. µm) for anisotropic voxels.

    Returns
    -------
    float
        In [0, 1]; 1.0 when both masks are empty.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.zeros((9, 9), bool); t[2:7, 2:7] = True
    >>> boundary_f1(t, t)
    1.0
    >>> boundary_f1(np.roll(t, 1, axis=0), t, tolerance=1.0)
    1.0
    """
    _same_shape(pred_mask, truth_mask)
    bp, bt = boundary(pred_mask), boundary(truth_mask)
    if not bp.any() and not bt.any():
        return 1.0
    if not bp.any() or not bt.any():
        return 0.0
    dt_true = ndi.distance_transform_edt(~bt, sampling=voxel_size)
    dt_pred = ndi.distance_transform_edt(~bp, sampling=voxel_size)
    precision = float((dt_true[bp] <= tolerance).mean())
    recall = float((dt_pred[bt] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def instance_pairs(pred, truth, *, iou_threshold: float = 0.5) -> np.ndarray:
    """Pairs of predicted and true instances that overlap with IoU above a threshold.

    With ``iou_threshold >= 0.5`` each instance has at most one partner.

    Parameters
    ----------
    pred, truth : ndarray of int, same shape (ZYX or YX)
        Instance labels, 0 = background.
    iou_threshold : float
        Pairs with IoU strictly above this are kept.

    Returns
    -------
    ndarray, shape (n, 3), float64
        Columns: true label, predicted label, IoU; sorted by true label.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[1, 1, 0, 2, 2]]); p = np.array([[5, 5, 5, 0, 7]])
    >>> instance_pairs(p, t).tolist()
    [[1.0, 5.0, 0.6666666666666666]]
    """
    _same_shape(pred, truth)
    p = np.asarray(pred).ravel().astype(np.int64)
    t = np.asarray(truth).ravel().astype(np.int64)
    both = (p > 0) & (t > 0)
    if not both.any():
        return np.zeros((0, 3))
    (ti, pi), inter = np.unique(np.stack([t[both], p[both]]), axis=1, return_counts=True)
    t_size, p_size = np.bincount(t), np.bincount(p)
    iou = inter / (t_size[ti] + p_size[pi] - inter)
    keep = iou > iou_threshold
    out = np.stack([ti[keep], pi[keep], iou[keep]], axis=1).astype(np.float64)
    return out[np.argsort(out[:, 0], kind="stable")]


def reliability_bins(probs, truth, *, n_bins: int = 15, ignore: int = -1) -> dict:
    """Confidence/accuracy per confidence bin of per-voxel class probabilities.

    Parameters
    ----------
    probs : ndarray of float, shape (C, ...) (channel first, e.g. (C, Z, Y, X))
        Class probabilities per voxel (summing to 1 over ``C``).
    truth : ndarray of int, shape (...)
        True channel index per voxel; voxels equal to ``ignore`` (or outside
        ``0..C-1``) are left out.
    n_bins : int
        Equal-width bins of the confidence (the top probability) on [0, 1].
    ignore : int
        Channel index of unlabelled voxels.

    Returns
    -------
    dict
        ``edges`` (n_bins + 1), and per bin ``count``, ``confidence`` (mean
        top probability) and ``accuracy`` (fraction whose top class is
        right); NaN in empty bins.
    """
    probs = np.asarray(probs)
    truth = np.asarray(truth)
    if probs.shape[1:] != truth.shape:
        raise InputError(f"probabilities of shape {probs.shape} do not fit truth of shape "
                         f"{truth.shape}; give probabilities channel first, (C, ...)")
    if n_bins < 1:
        raise InputError(f"need at least one bin, got {n_bins}")
    c = probs.shape[0]
    flat = probs.reshape(c, -1)
    t = truth.ravel().astype(np.int64)
    keep = (t != ignore) & (t >= 0) & (t < c)
    flat, t = flat[:, keep], t[keep]
    conf = flat.max(0).astype(np.float64)
    correct = (flat.argmax(0) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    b = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, int(n_bins) - 1)
    count = np.bincount(b, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(b, conf, minlength=n_bins) / count
        acc = np.bincount(b, correct, minlength=n_bins) / count
    return {"edges": edges, "count": count, "confidence": mean_conf, "accuracy": acc}


def expected_calibration_error(probs, truth, *, n_bins: int = 15, ignore: int = -1) -> float:
    """Expected calibration error of per-voxel class probabilities.

    ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|`` over equal-width
    bins of the top-class probability (Guo et al., 2017).  0 for perfectly
    calibrated probabilities.

    Parameters
    ----------
    probs : ndarray of float, shape (C, ...) (channel first, e.g. (C, Z, Y, X))
        Class probabilities per voxel.
    truth : ndarray of int, shape (...)
        True channel index per voxel (``ignore`` = not labelled).
    n_bins : int
        Number of confidence bins.
    ignore : int
        Channel index of unlabelled voxels.

    Returns
    -------
    float
        In [0, 1]; NaN when no voxel is labelled.

    Examples
    --------
    >>> import numpy as np
    >>> p = np.array([[0.8, 0.8, 0.8, 0.8, 0.8], [0.2, 0.2, 0.2, 0.2, 0.2]])
    >>> round(expected_calibration_error(p, np.array([0, 0, 0, 0, 1])), 6)  # 80 % right at 0.8
    0.0
    >>> round(expected_calibration_error(p, np.array([0, 1, 1, 1, 1])), 6)  # 20 % right at 0.8
    0.6
    """
    r = reliability_bins(probs, truth, n_bins=n_bins, ignore=ignore)
    n = r["count"].sum()
    if n == 0:
        return float("nan")
    used = r["count"] > 0
    gap = np.abs(r["accuracy"][used] - r["confidence"][used])
    return float(np.sum(r["count"][used] / n * gap))
