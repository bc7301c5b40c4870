"""Crack clean-up: crack regions out in the matrix become matrix, cracks inside particles stay."""

from __future__ import annotations

import numpy as np
import pytest

from crackseg.crack_support import (
    card_threshold,
    clean_in_chunks,
    crack_regions,
    drop_unsupported_cracks,
)
from crackseg.labels import NMC4


def _scene():
    """Two particles with an inner crack, a crack opening into a pore, a dark gap in the matrix."""
    seg = np.zeros((20, 40, 60), np.uint8)
    zz, yy, xx = np.mgrid[:20, :40, :60]
    seg[(zz - 10) ** 2 + (yy - 20) ** 2 + (xx - 15) ** 2 < 9 ** 2] = 1
    seg[(zz - 10) ** 2 + (yy - 20) ** 2 + (xx - 42) ** 2 < 9 ** 2] = 1
    seg[9:12, 14:26, 14:17] = 2                 # crack inside particle 1
    seg[9:12, 18:22, 40:44] = 3                 # a pore in particle 2 ...
    seg[10, 20, 37:40] = 2                      # ... and a crack that runs into it
    seg[2:5, 2:6, 25:32] = 2                    # a dark gap out in the matrix
    return seg


def test_inner_cracks_stay_and_matrix_gaps_go():
    seg = _scene()
    out, removed = drop_unsupported_cracks(seg, min_solid_contact=0.5)
    assert removed == int((seg[2:5, 2:6, 25:32] == 2).sum())
    assert (out[2:5, 2:6, 25:32] == 0).all()
    assert (out[9:12, 14:26, 14:17] == 2).all() and (out[10, 20, 37:40] == 2).all()
    assert (out[seg != 2] == seg[seg != 2]).all()


def test_solid_share_counts_pore_as_solid_and_is_idempotent():
    seg = _scene()
    regions, share = crack_regions(seg, NMC4)
    assert share[regions[10, 20, 38]] == pytest.approx(1.0)
    assert share[regions[3, 3, 28]] == pytest.approx(0.0)
    once, _ = drop_unsupported_cracks(seg, min_solid_contact=0.5)
    twice, removed = drop_unsupported_cracks(once, min_solid_contact=0.5)
    assert removed == 0 and (twice == once).all()


def test_surface_crack_mostly_in_matrix_goes_at_high_threshold_only():
    seg = _scene()
    seg[10, 11, 12:18] = 2                      # touches particle 1's surface from outside
    regions, share = crack_regions(seg, NMC4)
    s = share[regions[10, 11, 15]]
    assert 0 < s < 1
    kept, _ = drop_unsupported_cracks(seg, min_solid_contact=s - 1e-6)
    gone, _ = drop_unsupported_cracks(seg, min_solid_contact=s + 1e-6)
    assert kept[10, 11, 15] == 2 and gone[10, 11, 15] == 0


def test_chunked_cleaning_equals_whole_volume():
    seg = _scene()
    whole, removed = drop_unsupported_cracks(seg, min_solid_contact=0.5)
    chunked = seg.copy()
    assert clean_in_chunks(chunked, (8, 16, 16), 32, min_solid_contact=0.5) == removed
    assert (chunked == whole).all()


def test_card_threshold():
    assert card_threshold({}) is None
    assert card_threshold({"postprocess": {"min_crack_solid_contact": 0.5}}) == 0.5
