"""Representativeness of small-sample protocols against the census."""

import numpy as np
import pytest

from crackseg.stats.representativeness import particles_needed, representativeness
from crackseg.stats.slices import (
    section_crack_fractions,
    section_measures,
    section_particle_means,
)
from crackseg.stats.summary import summarize
from crackseg.stats.table import particle_table
from crackseg.synthetic import generate_electrode


def test_random_protocol_is_unbiased_and_spread_shrinks():
    rng = np.random.default_rng(0)
    cf = rng.beta(0.5, 10, 2000)
    xyz = rng.random((2000, 3)) * 200
    r = representativeness(cf, xyz, ks=(1, 10, 100), n_draws=3000, seed=1)
    rnd = r[r["protocol"] == "random_particles"].set_index("k")
    assert abs(rnd.loc[100, "bias"]) < 3 * cf.std() / np.sqrt(100) / np.sqrt(3000) * 10
    # spread of a mean of k without replacement: sd / sqrt(k) * sqrt((N-k)/(N-1))
    for k in (1, 10, 100):
        expected = cf.std() / np.sqrt(k) * np.sqrt((2000 - k) / 1999)
        assert rnd.loc[k, "std"] == pytest.approx(expected, rel=0.1)


def test_section_fractions_and_particles_needed():
    seg = np.ones((3, 2, 2), np.uint8)
    seg[0] = 2
    seg[1, 0, 0] = 2
    inst = np.ones((3, 2, 2), np.uint32)
    inst[2] = 0
    fr = section_crack_fractions(seg, inst)
    assert fr[0] == 1.0 and fr[1] == 0.25 and np.isnan(fr[2])
    need = particles_needed(np.array([0.0, 0.1, 0.2]), relative_precision=0.1, design_effect=4.0)
    # cv = 1, z = 1.96: (1.96 / 0.1)^2 = 384.1 -> 385, times 4
    assert need["n_independent"] == 385 and need["n_clustered"] == 1537


@pytest.mark.slow
def test_small_samples_span_no_damage_to_severe_while_census_ci_is_narrow():
    ph = generate_electrode((128, 128, 128), seed=11, imaging=False, voxel_size_um=1.0)
    t = particle_table(ph.labels, ph.instances, voxel_size_um=ph.voxel_size_um)
    s = summarize(t, border="include", seg=ph.labels, instances=ph.instances, n_resamples=500,
                  n_draws=1000, spatial=False)
    rep = s["representativeness"]
    rows = {(r["protocol"], r["k"]): r for r in rep["protocols"]}
    one = rows[("random_particles", 1)]
    cluster = rows[("neighbour_cluster", 5)]
    for r in (one, cluster):
        assert r["min"] < rep["damaged_threshold"]     # reads "no damage"
        assert r["max"] > rep["severe_threshold"]      # reads "severe damage"
        assert r["p_wrong_verdict"] > 0.1
    lo, hi = rep["census_ci"]
    assert hi - lo < 0.5 * (one["p95"] - one["p05"])
    assert ("cross_section", 1) in rows


def _slice_by_slice(seg, inst, axis, min_area):
    """Crack fraction and mean profile damage of each slice, straight from the definitions."""
    fr, means = [], []
    for i in range(seg.shape[axis]):
        s, lab = np.take(seg, i, axis=axis), np.take(inst, i, axis=axis)
        inside = lab > 0
        fr.append((s[inside] == 2).sum() / inside.sum() if inside.any() else np.nan)
        edge = set(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]).tolist())
        kept = [(s[lab == k] == 2).mean() for k in np.unique(lab[inside])
                if k not in edge and (lab == k).sum() >= max(min_area, 1)]
        means.append(np.mean(kept) if kept else np.nan)
    return np.array(fr), np.array(means)


@pytest.mark.parametrize("axis", [0, 1])
def test_section_measures_in_one_read_follow_the_definitions(axis):
    ph = generate_electrode((40, 48, 48), seed=4, imaging=False)
    from crackseg.particles import DEFAULT_MIN_VOLUME_VOX, particle_instances

    inst = particle_instances(ph.labels)
    fr, means = section_measures(ph.labels, inst, axis=axis)
    want_fr, want_means = _slice_by_slice(ph.labels, inst, axis, DEFAULT_MIN_VOLUME_VOX)
    np.testing.assert_allclose(fr, want_fr, rtol=1e-12)
    np.testing.assert_allclose(means, want_means, rtol=1e-12)
    assert np.isfinite(means).sum() > 10 and np.nanmax(fr) > 0
    np.testing.assert_array_equal(fr, section_crack_fractions(ph.labels, inst, axis=axis))
    np.testing.assert_array_equal(means, section_particle_means(ph.labels, inst, axis=axis))
