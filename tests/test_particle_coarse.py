"""Tests of the coarse-to-fine watershed (crackseg.particle_coarse)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from crackseg.particle_blocks import _grid_seeds, distance_map, envelope_mask
from crackseg.particle_coarse import coarse_to_fine_labels, full_resolution_labels
from crackseg.particle_flood import bordered, flood
from crackseg.particles import instance_matching
from crackseg.synthetic import generate_electrode


def flood_inputs(seg, origin):
    env = envelope_mask(seg)
    dist = ndi.gaussian_filter(distance_map(env, None), 1.0, output=np.float32)
    dist[~env] = 0
    sub, seeds = _grid_seeds(dist, env, 0.5, origin, 2)
    image = bordered(dist, np.float64)
    np.negative(image, out=image)
    return image, env, sub, seeds


@pytest.mark.parametrize("origin", [(0, 0, 0), (1, 0, 1)])
def test_coarse_to_fine_matches_full_resolution_flood(origin):
    seg = generate_electrode((48, 64, 64), seed=3, voxel_size_um=0.4, imaging=False).labels
    image, env, sub, seeds = flood_inputs(seg, origin)
    assert tuple(s.start for s in sub) == tuple(o % 2 for o in origin)
    expected = full_resolution_labels(image, env, sub, seeds)
    got = coarse_to_fine_labels(image, env, sub, seeds)
    assert ((got > 0) == (expected > 0)).all()
    assert (got != expected).sum() <= 0.002 * env.sum()
    m = instance_matching(got, expected, iou_threshold=0.9)
    assert m["n_pred"] == m["n_true"] > 5 and m["f1"] == 1.0


def test_coarse_to_fine_2d_and_flat_seedless_parts():
    seg = np.zeros((40, 60), np.uint8)
    yy, xx = np.indices(seg.shape)
    seg[(yy - 20) ** 2 + (xx - 18) ** 2 < 12**2] = 1
    seg[(yy - 20) ** 2 + (xx - 40) ** 2 < 11**2] = 1
    seg[2, 50:58] = 1  # one voxel thin: below the grid, reached from no seed
    image, env, sub, seeds = flood_inputs(seg, (0, 0))
    got = coarse_to_fine_labels(image, env, sub, seeds)
    expected = full_resolution_labels(image, env, sub, seeds)
    np.testing.assert_array_equal(got, expected)
    assert len(np.unique(got[got > 0])) == 2 and (got[2, 50:58] == 0).all()


def test_flood_from_frontier_markers_only_is_the_same():
    rng = np.random.default_rng(0)
    height = ndi.gaussian_filter(rng.random((30, 30)), 2)
    mask = height < np.quantile(height, 0.8)
    seeds = np.zeros(height.shape, np.uint32)
    seeds[5:12, 5:12] = 1
    seeds[20:26, 18:26] = 2
    seeds[~mask] = 0
    image, labels, m = bordered(height, np.float64), bordered(seeds, np.uint32), bordered(mask, np.int8)
    expected = flood(image, labels.copy(), m).copy()
    frontier = ndi.binary_dilation((labels == 0) & (m > 0)) & (labels > 0)
    got = flood(image, labels, m, markers=np.flatnonzero(frontier))
    np.testing.assert_array_equal(got, expected)


def test_seedless_block_is_left_unlabelled():
    seg = np.zeros((20, 20), np.uint8)
    seg[5, 3:15] = 1  # thin solid: an envelope without a seed on the grid
    image, env, sub, seeds = flood_inputs(seg, (0, 0))
    seeds[:] = 0
    got = coarse_to_fine_labels(image, env, sub, seeds)
    assert env.any() and got.shape == env.shape and not got.any()
    np.testing.assert_array_equal(got, full_resolution_labels(image, env, sub, seeds))
