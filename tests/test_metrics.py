"""Segmentation, thin-structure, instance and calibration metrics against analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crackseg.errors import InputError
from crackseg.labels import NMC4, schema_from_dict
from crackseg.metrics import (
    boundary,
    boundary_f1,
    cldice,
    dice_counts,
    dice_from_counts,
    dice_per_class,
    expected_calibration_error,
    instance_pairs,
    reliability_bins,
)


def line_mask(shape=(15, 15), row=7, cols=(2, 13)):
    m = np.zeros(shape, bool)
    m[row, cols[0]:cols[1]] = True
    return m


# ---------------------------------------------------------------- Dice


def test_dice_identical_and_absent_class():
    truth = np.zeros((8, 8, 8), np.uint8)
    truth[:4] = 1
    truth[5, 5, 2:6] = 2
    d = dice_per_class(truth, truth, NMC4)
    assert d["matrix"] == d["particle"] == d["crack"] == 1.0
    assert math.isnan(d["pore"])  # in neither image


def test_dice_counts_and_ignore():
    truth = np.array([1, 1, 1, 1, 0, 0, 255, 255], np.uint8)
    pred = np.array([1, 1, 1, 0, 0, 0, 1, 1], np.uint8)
    d = dice_per_class(pred, truth, NMC4)
    # particle: |P∩T| = 3, |P| = 3 (the two ignored voxels do not count), |T| = 4
    assert d["particle"] == pytest.approx(2 * 3 / (3 + 4))
    # matrix: |P∩T| = 2, |P| = 3, |T| = 2
    assert d["matrix"] == pytest.approx(2 * 2 / (3 + 2))


def test_dice_disjoint_is_zero_and_custom_schema():
    schema = schema_from_dict({"name": "s3", "classes": {"particle": 0, "binder": 1, "pore": 2}})
    truth = np.zeros((4, 4), np.uint8)
    pred = np.full((4, 4), 2, np.uint8)
    d = dice_per_class(pred, truth, schema)
    assert d["particle"] == 0.0 and d["pore"] == 0.0 and math.isnan(d["binder"])


def test_dice_counts_match_numpy():
    import torch

    rng = np.random.default_rng(1)
    pred = rng.integers(0, 3, (2, 10, 10))
    true = rng.integers(-1, 3, (2, 10, 10))
    d = dice_from_counts(dice_counts(torch.from_numpy(pred), torch.from_numpy(true), 3))
    keep = true >= 0
    for c in range(3):
        p, t = (pred == c) & keep, (true == c) & keep
        assert d[c] == pytest.approx(2 * (p & t).sum() / (p.sum() + t.sum()))


def test_dice_shape_mismatch():
    with pytest.raises(InputError, match="shape"):
        dice_per_class(np.zeros((3, 3), np.uint8), np.zeros((3, 4), np.uint8))


# ---------------------------------------------------------------- clDice, boundary F1


def test_cldice_identical_empty_and_disjoint():
    t = line_mask()
    assert cldice(t, t) == 1.0
    assert cldice(np.zeros_like(t), np.zeros_like(t)) == 1.0
    assert cldice(np.zeros_like(t), t) == 0.0
    assert cldice(np.roll(t, 4, axis=0), t) == 0.0


def test_cldice_broken_crack():
    t = line_mask()  # 11 voxels, its own skeleton
    p = t.copy()
    p[7, 7] = False  # a gap: prediction skeleton (10 voxels) lies in t, covers 10 of 11
    tprec, tsens = 1.0, 10 / 11
    assert cldice(p, t) == pytest.approx(2 * tprec * tsens / (tprec + tsens))


def test_cldice_ignores_thickness_more_than_dice():
    t = line_mask()
    thick = t | np.roll(t, 1, axis=0) | np.roll(t, -1, axis=0)  # 3 voxels wide, same centre
    dice = 2 * t.sum() / (t.sum() + thick.sum())
    assert cldice(thick, t) > dice
    assert cldice(thick, t) > 0.9


def test_cldice_3d_and_valid_mask():
    t = np.zeros((9, 9, 9), bool)
    t[4, 4, 1:8] = True
    assert cldice(t, t) == 1.0
    valid = np.zeros_like(t)
    valid[:, :, :4] = True
    p = t.copy()
    p[4, 4, 6] = False  # the break lies outside the valid region
    assert cldice(p, t, valid=valid) == 1.0


def test_boundary_f1_tolerance():
    t = np.zeros((20, 20), bool)
    t[5:15, 5:15] = True
    assert boundary(t).sum() == 36
    assert boundary_f1(t, t) == 1.0
    assert boundary_f1(np.roll(t, 1, axis=1), t, tolerance=1.0) == 1.0
    assert boundary_f1(np.roll(t, 2, axis=1), t, tolerance=1.0) < 1.0
    far = np.zeros_like(t)
    far[0:2, 0:2] = True
    assert boundary_f1(far, t, tolerance=1.0) == 0.0
    assert boundary_f1(np.zeros_like(t), np.zeros_like(t)) == 1.0
    assert boundary_f1(np.zeros_like(t), t) == 0.0


def test_boundary_f1_voxel_size():
    t = np.zeros((20, 20), bool)
    t[5:15, 5:15] = True
    shifted = np.roll(t, 1, axis=1)
    # one voxel along x is 2 µm: outside a 1 µm tolerance, inside a 2 µm one
    assert boundary_f1(shifted, t, tolerance=1.0, voxel_size=(1.0, 2.0)) < 1.0
    assert boundary_f1(shifted, t, tolerance=2.0, voxel_size=(1.0, 2.0)) == 1.0


# ---------------------------------------------------------------- instances


def test_instance_pairs():
    truth = np.zeros((10, 10), np.int32)
    truth[0:4, 0:4] = 1
    truth[6:10, 6:10] = 2
    pred = np.zeros_like(truth)
    pred[0:4, 0:3] = 7  # IoU 12/16
    pred[6:8, 6:10] = 8  # IoU 8/16: not above 0.5
    pairs = instance_pairs(pred, truth)
    assert pairs.shape == (1, 3)
    assert pairs[0].tolist() == [1.0, 7.0, 0.75]
    assert instance_pairs(pred, truth, iou_threshold=0.4).shape == (2, 3)
    assert instance_pairs(np.zeros_like(truth), truth).shape == (0, 3)


# ---------------------------------------------------------------- calibration


def test_ece_one_hot_correct_is_zero():
    truth = np.array([0, 1, 2, 1])
    probs = np.eye(3)[truth].T  # (C, N)
    assert expected_calibration_error(probs, truth) == 0.0


def test_ece_overconfident():
    # always 100 % sure, right half of the time: ECE = |0.5 - 1.0|
    truth = np.array([0, 1, 0, 1])
    probs = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert expected_calibration_error(probs, truth) == pytest.approx(0.5)


def test_ece_two_bins_weighted():
    # 2 voxels at 0.9 (both right: gap 0.1), 2 at 0.6 (one right: gap 0.1)
    probs = np.array([[0.9, 0.9, 0.6, 0.6], [0.1, 0.1, 0.4, 0.4]])
    truth = np.array([0, 0, 0, 1])
    assert expected_calibration_error(probs, truth, n_bins=10) == pytest.approx(0.1)


def test_ece_calibrated_sample_is_small():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, 200_000)
    right = rng.uniform(size=conf.size) < conf
    truth = np.where(right, 0, 1)
    probs = np.stack([conf, 1 - conf])
    ece = expected_calibration_error(probs, truth)
    overconfident = expected_calibration_error(np.stack([np.ones_like(conf), 0 * conf]), truth)
    assert ece < 0.01 < overconfident


def test_ece_ignore_and_errors():
    probs = np.array([[1.0, 1.0], [0.0, 0.0]])
    assert expected_calibration_error(probs, np.array([0, -1])) == 0.0
    assert math.isnan(expected_calibration_error(probs, np.array([-1, -1])))
    three = np.array([[1.0, 0.5, 0.2], [0.0, 0.5, 0.8]])  # (C=2, N=3)
    with pytest.raises(InputError, match="channel first"):
        expected_calibration_error(three.T, np.array([0, 1, 1]))
    r = reliability_bins(probs, np.array([0, 0]), n_bins=4)
    assert r["count"].tolist() == [0, 0, 0, 2] and r["edges"].size == 5
