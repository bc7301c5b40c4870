"""Segmentation error measured on annotated sections: the ratio, the corrected mean, bad input."""

import numpy as np
import pytest

from crackseg.errors import InputError
from crackseg.stats.annotation_error import (
    annotated_sections,
    apply_annotation_error,
    corrected_mean,
    error_model,
    parse_slices,
    profile_model,
    section_pairs,
    section_profiles,
)
from crackseg.stats.distribution import population
from crackseg.stats.summary import summarize
from crackseg.stats.table import particle_table
from crackseg.synthetic import generate_electrode

SLICES = [10, 32, 54]


@pytest.fixture(scope="module")
def biased():
    """A phantom, and a "model" that calls half its crack voxels particle (R = 2)."""
    ph = generate_electrode((64, 64, 64), seed=3, imaging=False, voxel_size_um=1.0)
    model = ph.labels.copy()
    drop = (model == 2) & (np.random.default_rng(0).random(model.shape) < 0.5)
    model[drop] = 1
    table = particle_table(model, ph.instances, voxel_size_um=ph.voxel_size_um)
    summary = summarize(table, n_resamples=500, seed=1, spatial=False, protocols=False)
    truth = particle_table(ph.labels, ph.instances, voxel_size_um=ph.voxel_size_um)
    census = float(truth.loc[population(truth)[0], "crack_fraction"].mean())
    return ph, model, summary, census


class _Recorded:
    """An array-like that records which axis-0 slices were read."""

    def __init__(self, arr):
        self.arr, self.shape, self.dtype, self.read = arr, arr.shape, arr.dtype, []

    def __getitem__(self, key):
        self.read.append(key)
        return self.arr[key]


def test_annotated_profiles_give_the_mean_and_the_profile_ratio_the_bias(biased):
    ph, model, summary, census = biased
    seg, inst = _Recorded(model), _Recorded(ph.instances)
    s = {"damage": {"mean": dict(summary["damage"]["mean"])}}
    entry = apply_annotation_error(s, seg, inst, ph.labels[SLICES], SLICES, seed=0,
                                   n_resamples=500)
    assert seg.read == SLICES and inst.read == []  # the model's own 3-D particles are not needed
    assert entry["kind"] == "sections" and entry["sufficient"] and entry["n_particles"] >= 10
    unc = s["damage"]["mean"]
    assert entry["ci"][0] <= census <= entry["ci"][1]
    assert abs(entry["estimate"] - census) < abs(unc["estimate"] - census)
    assert entry["segmentation_share"] == pytest.approx(1.0)
    assert unc["segmentation_error"].startswith("included in annotation_error: the mean damage")
    # the model's profiles carry half the annotated crack: R = A / B near 2, and R x mean covers
    prof = apply_annotation_error(s, model, ph.instances, ph.labels[SLICES], SLICES, seed=0,
                                  n_resamples=500, kind="profiles")
    assert prof["ratio_ci"][0] <= 2.0 <= prof["ratio_ci"][1] and abs(prof["ratio"] - 2) < 0.3
    assert prof["ci"][0] <= census <= prof["ci"][1] and 0 < prof["segmentation_share"] < 1


def test_profiles_skip_border_and_unannotated_pixels():
    seg = np.zeros((3, 40, 40), np.uint8)
    for y0, x0 in ((4, 4), (4, 24), (24, 4), (24, 24)):
        seg[:, y0:y0 + 12, x0:x0 + 12] = 1
    seg[:, 0:6, 36:40] = 1  # cut by the section's edge
    seg[1, 9, 4:16] = 2
    ann = seg[[1]].copy()
    ann[0, 10, 4:16] = 2
    ann[0, 30:, 30:] = 255  # one particle partly not annotated
    p = section_profiles(seg, [1], ann)
    assert (p.groupby("source").size() == 3).all() and (p["section"] == 1).all()
    assert sorted(p["crack_px"]) == [0, 0, 0, 0, 12, 24]
    m = profile_model(p, n_resamples=100, min_particles=1)
    assert m.ratio == pytest.approx(2.0) and m.line[0] == pytest.approx(24 / 144 / 3)


def test_pixel_ratio_recovers_the_bias_and_the_corrected_interval_covers(biased):
    ph, model, summary, census = biased
    seg, inst = _Recorded(model), _Recorded(ph.instances)
    entry = apply_annotation_error(summary, seg, inst, ph.labels[SLICES], SLICES, seed=0,
                                   n_resamples=500, kind="ratio")
    assert seg.read == SLICES and inst.read == SLICES  # only the annotated sections are read
    assert entry["sufficient"] and entry["n_sections"] == 3 and entry["n_particles"] >= 10
    lo, hi = entry["ratio_ci"]
    assert lo <= 2.0 <= hi and abs(entry["ratio"] - 2.0) < 0.3
    unc = summary["damage"]["mean"]
    assert entry["uncorrected"]["estimate"] == unc["estimate"]
    assert entry["ci"][0] <= census <= entry["ci"][1]
    assert abs(entry["estimate"] - census) < abs(unc["estimate"] - census)
    assert 0 < entry["segmentation_share"] < 1
    assert unc["segmentation_error"].startswith("included in annotation_error")


def test_the_same_seed_gives_the_same_interval(biased):
    ph, model, summary, _ = biased
    pairs = section_pairs(model, ph.instances, SLICES, ph.labels[SLICES])
    a = corrected_mean(summary["damage"]["mean"], error_model(pairs, seed=4, n_resamples=300),
                       seed=4)
    b = corrected_mean(summary["damage"]["mean"], error_model(pairs, seed=4, n_resamples=300),
                       seed=4)
    assert a["ci"] == b["ci"] and a["segmentation_share"] == b["segmentation_share"]


def test_pairs_use_the_envelope_and_skip_unannotated_pixels():
    seg = np.zeros((3, 12, 12), np.uint8)
    seg[:, 2:10, 2:10] = 1
    seg[1, 5, 2:10] = 2
    inst = (seg > 0).astype(np.uint32)
    ann = seg[[1]].copy()
    ann[0, 6, 2:10] = 2
    ann[0, :, :4] = 255  # left part not annotated
    p = section_pairs(seg, inst, [1], ann)
    assert p[["envelope_px", "model_crack_px", "annotated_crack_px"]].values.tolist() == \
        [[48, 6, 12]]
    assert p["annotated_crack_fraction"].iloc[0] == pytest.approx(0.25)


def test_too_few_particles_widens_instead_of_correcting(biased):
    ph, model, summary, _ = biased
    s = {"damage": {"mean": dict(summary["damage"]["mean"])}}
    ann = np.full((1, 64, 64), 255, np.uint8)
    ann[0, 20:40, 20:40] = ph.labels[32, 20:40, 20:40]
    entry = apply_annotation_error(s, model, ph.instances, ann, [32], n_resamples=200)
    unc = s["damage"]["mean"]
    assert not entry["sufficient"] and "particle profiles in the annotated" in entry["note"]
    assert entry["estimate"] == unc["estimate"]
    assert entry["ci"][0] <= unc["ci"][0] and entry["ci"][1] >= unc["ci"][1]
    assert unc["segmentation_error"].startswith("not measurable")
    # no annotated crack pixel at all: stated as such
    no_crack = np.where(ph.labels[[32]] == 2, 1, ph.labels[[32]]).astype(np.uint8)
    entry = apply_annotation_error(s, model, ph.instances, no_crack, [32], n_resamples=200)
    assert not entry["sufficient"] and "no crack pixel" in entry["note"]


def test_sections_found_in_a_label_volume():
    lab = np.full((20, 8, 8), 255, np.uint8)
    lab[3, :2] = 1
    lab[15] = 0
    slices, sections = annotated_sections(lab, (20, 8, 8))
    assert slices == [3, 15] and sections.shape == (2, 8, 8)
    assert annotated_sections(lab[[3, 15]], (20, 8, 8), [3, 15])[0] == [3, 15]
    assert annotated_sections(lab[3], (20, 8, 8), [3])[1].shape == (1, 8, 8)


@pytest.mark.parametrize("labels, slices, words", [
    (np.zeros((20, 9, 8), np.uint8), None, "does not fit"),
    (np.zeros((2, 8, 8), np.uint8), None, "--annotated-slices"),
    (np.zeros((2, 8, 8), np.uint8), [1], "--annotated-slices"),
    (np.zeros((2, 8, 8), np.uint8), [1, 20], "outside the volume"),
    (np.zeros((2, 8, 8), np.uint8), [4, 4], "repeat"),
    (np.full((2, 8, 8), 7, np.uint8), [1, 2], "not in schema"),
    (np.full((2, 8, 8), 255, np.uint8), [1, 2], "no annotated pixel"),
    (np.full((20, 8, 8), 255, np.uint8), None, "no annotated pixel"),
])
def test_bad_annotations_are_one_line_errors(labels, slices, words):
    with pytest.raises(InputError, match=words) as e:
        annotated_sections(labels, (20, 8, 8), slices)
    assert "\n" not in str(e.value)


def test_slice_list_parsing():
    assert parse_slices(None) is None and parse_slices("3") == [3]
    with pytest.raises(InputError, match="separated by commas"):
        parse_slices("10;40")
