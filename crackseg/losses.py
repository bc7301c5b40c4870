"""Losses for learning from sparsely annotated slices.

Targets are channel indices with ``-1`` (or any negative value) marking
unannotated voxels: those voxels contribute nothing to the loss value or its
gradient.  The loss is MONAI's masked soft Dice (batch-wise, so rare classes
count as much as common ones) plus PyTorch's class-weighted cross entropy
with an ignore index.  The Dice *metric* of validation and evaluation is
:func:`crackseg.metrics.dice_counts`.

Examples
--------
>>> import torch
>>> from crackseg.losses import masked_dice_ce
>>> logits = torch.randn(2, 4, 8, 8, 8, requires_grad=True)
>>> target = torch.randint(0, 4, (2, 1, 8, 8, 8))
>>> target[:, :, :4] = -1                     # first half not annotated
>>> loss = masked_dice_ce(logits, target)
>>> loss.backward()
>>> float(logits.grad[:, :, :4].abs().max())
0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -1
"""Channel index of unannotated voxels in training targets."""


def annotated_mask(target: torch.Tensor) -> torch.Tensor:
    """Float mask (1 = annotated) of an index target of shape (B, 1, *spatial)."""
    return (target >= 0).to(torch.float32)


def masked_dice_ce(logits: torch.Tensor, target: torch.Tensor, *,
                   class_weights=None, dice_weight: float = 1.0, ce_weight: float = 1.0,
                   include_background: bool = True, band_weight: float = 1.0,
                   band_vox: int = 3) -> torch.Tensor:
    """Dice + cross-entropy loss over annotated voxels only.

    Parameters
    ----------
    logits : torch.Tensor, shape (B, C, *spatial)
        Network output before softmax (spatial axes ZYX or YX).
    target : torch.Tensor of int, shape (B, 1, *spatial) or (B, *spatial)
        Channel index per voxel; negative values are not annotated.
    class_weights : sequence of float, optional
        Cross-entropy weight per class (e.g. higher for thin cracks and rare
        pores).
    dice_weight, ce_weight : float
        Weights of the two terms.
    include_background : bool
        Whether channel 0 enters the Dice term.
    band_weight : float
        Cross-entropy weight multiplier for background voxels (channel 0)
        within ``band_vox`` voxels of channel 1 (for nmc4: the matrix that
        surrounds particles, where dark necks look like surface cracks).
        1.0 leaves the loss unchanged.
    band_vox : int
        Width of that band (chessboard distance, voxels).

    Returns
    -------
    torch.Tensor
        Scalar loss.  A batch without annotated voxels gives zero with zero
        gradient.
    """
    from monai.losses import MaskedDiceLoss

    if target.dim() == logits.dim() - 1:
        target = target.unsqueeze(1)
    target = target.long()
    mask = annotated_mask(target)
    loss = logits.sum() * 0.0
    if mask.sum() == 0:
        return loss
    n_classes = logits.shape[1]
    safe = target.clamp(min=0)
    if dice_weight:
        onehot = F.one_hot(safe[:, 0], n_classes).movedim(-1, 1).to(logits.dtype)
        dice = MaskedDiceLoss(include_background=include_background, softmax=True, batch=True,
                              smooth_nr=1e-5, smooth_dr=1e-5)
        loss = loss + dice_weight * dice(logits, onehot, mask=mask)
    if ce_weight:
        w = None
        if class_weights is not None:
            w = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
        ce_target = torch.where(target[:, 0] >= 0, target[:, 0], torch.full_like(target[:, 0], -100))
        if band_weight == 1.0:
            ce = F.cross_entropy(logits, ce_target, weight=w, ignore_index=-100)
        else:
            ce = _banded_cross_entropy(logits, ce_target, w, band_weight, band_vox)
        loss = loss + ce_weight * ce
    return loss


def background_band(target: torch.Tensor, radius: int) -> torch.Tensor:
    """Channel-0 voxels within ``radius`` voxels (chessboard) of channel 1.

    ``target`` has shape (B, *spatial) with channel indices; the result is a
    bool tensor of the same shape.
    """
    pool = F.max_pool3d if target.dim() == 4 else F.max_pool2d
    near = pool((target == 1).unsqueeze(1).float(), 2 * radius + 1, stride=1, padding=radius)
    return (near[:, 0] > 0) & (target == 0)


def _banded_cross_entropy(logits, ce_target, w, band_weight: float, band_vox: int):
    """Class-weighted mean cross entropy with background voxels near channel 1 up-weighted."""
    per_voxel = F.cross_entropy(logits, ce_target, weight=w, ignore_index=-100, reduction="none")
    valid = ce_target >= 0
    base = w[ce_target.clamp(min=0)] if w is not None else torch.ones_like(per_voxel)
    mult = torch.where(background_band(ce_target, band_vox), band_weight, 1.0).to(per_voxel.dtype)
    denom = (base * mult * valid).sum().clamp(min=1e-12)
    return (per_voxel * mult).sum() / denom
