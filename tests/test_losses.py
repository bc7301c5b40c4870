"""Masked Dice + cross-entropy: unannotated voxels contribute nothing."""

import pytest
import torch

from crackseg.losses import masked_dice_ce


def _batch(seed=0, shape=(2, 4, 8, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(*shape, generator=g)
    target = torch.randint(0, shape[1], (shape[0], 1, *shape[2:]), generator=g)
    return logits, target


def test_ignored_voxels_get_zero_gradient():
    logits, target = _batch()
    target[:, :, :3] = -1
    logits.requires_grad_(True)
    masked_dice_ce(logits, target, class_weights=[1, 1, 3, 3]).backward()
    assert logits.grad[:, :, :3].abs().max().item() == 0.0
    assert logits.grad[:, :, 3:].abs().max().item() > 0.0


def test_loss_ignores_values_under_ignored_voxels():
    logits, target = _batch()
    target[:, :, :4] = -1
    base = masked_dice_ce(logits, target)
    changed = logits.clone()
    changed[:, :, :4] = torch.randn_like(changed[:, :, :4]) * 10
    assert torch.allclose(base, masked_dice_ce(changed, target))


def test_no_annotated_voxels_gives_zero_loss_and_gradient():
    logits, target = _batch()
    target[:] = -1
    logits.requires_grad_(True)
    loss = masked_dice_ce(logits, target)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.abs().max().item() == 0.0


def test_correct_prediction_has_lower_loss():
    _, target = _batch()
    target[:, :, :2] = -1
    good = torch.nn.functional.one_hot(target.clamp(min=0)[:, 0], 4).movedim(-1, 1).float() * 10
    bad = torch.roll(good, 1, dims=1)
    assert masked_dice_ce(good, target) < masked_dice_ce(bad, target)


def test_class_weight_raises_loss_of_misclassified_rare_class():
    logits, target = _batch()
    w1 = masked_dice_ce(logits, target, class_weights=[1, 1, 1, 1], dice_weight=0)
    w3 = masked_dice_ce(logits, target, class_weights=[1, 1, 1, 5], dice_weight=0)
    assert w1.item() != pytest.approx(w3.item())


def test_band_weight_stresses_matrix_next_to_particles():
    from crackseg.losses import background_band

    target = torch.zeros(1, 1, 9, 9, 9, dtype=torch.long)
    target[0, 0, 3:6, 3:6, 3:6] = 1
    band = background_band(target[:, 0], 1)
    assert int(band.sum()) == 5 ** 3 - 3 ** 3
    logits = torch.zeros(1, 4, 9, 9, 9)
    logits[:, 1] = 5.0 * (target[:, 0] == 1)
    logits[:, 0] = 5.0 * (target[:, 0] == 0)
    logits[:, 2] = 6.0 * band                 # crack called in the band: wrong
    plain = masked_dice_ce(logits, target, dice_weight=0)
    banded = masked_dice_ce(logits, target, dice_weight=0, band_weight=3.0)
    assert banded > plain
    logits[:, 2] = 0.0
    assert masked_dice_ce(logits, target, dice_weight=0, band_weight=3.0) < plain
