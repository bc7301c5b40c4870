"""Tests of the domain-randomised training data: appearance ranges, label pool, patches."""

from __future__ import annotations

import numpy as np
import pytest

from crackseg.errors import InputError
from crackseg.randomized_data import RandomizedPatchDataset, training_domain
from crackseg.synthetic.pool import label_pool
from crackseg.synthetic.randomize import AppearanceRanges, random_appearance, render


@pytest.fixture(scope="module")
def pool():
    return label_pool(2, (24, 64, 64), seed=0, voxel_size_um=(0.3, 0.6))


def test_ranges_round_trip_and_refuse_unknown_keys():
    r = AppearanceRanges.from_dict({"snr": [3, 5], "gamma": [1.0, 1.0]})
    assert r.snr == (3, 5)
    assert AppearanceRanges.from_dict(r.to_dict()) == r
    with pytest.raises(InputError, match="unknown appearance setting"):
        AppearanceRanges.from_dict({"contrast": 2})


def test_random_appearance_stays_in_its_ranges():
    r = AppearanceRanges()
    rng = np.random.default_rng(0)
    draws = [random_appearance(rng, r, ndim=3) for _ in range(300)]
    for key, field in [("particle", "particle_level"), ("electrolyte", "electrolyte_level"),
                       ("binder", "binder_level"), ("phase_contrast", "phase_contrast"),
                       ("snr", "snr"), ("gamma", "gamma")]:
        lo, hi = getattr(r, field)
        vals = np.array([d[key] for d in draws])
        assert vals.min() >= lo and vals.max() <= hi, key
        assert vals.max() - vals.min() > 0.5 * (hi - lo), f"{key} does not explore its range"
    sig = np.array([d["blur_sigma"] for d in draws])
    assert sig.shape == (300, 3) and sig.min() >= r.blur_sigma[0] and sig.max() <= r.blur_sigma[1]
    down = np.array([d["downsample"] for d in draws])
    assert 0.15 < np.mean(down > 1) < 0.45          # downsample_probability 0.3
    assert not any(d["invert"] for d in draws)       # off by default


def test_render_is_normalised_and_voids_look_like_electrolyte(pool):
    lab, binder = pool[0]["labels"][12], pool[0]["binder"][12]
    rng = np.random.default_rng(1)
    s = random_appearance(rng, AppearanceRanges(snr=(50, 50), ring_amplitude=(0, 0),
                                                bias_amplitude=(0, 0), binder_level=(0.5, 0.5)))
    img = render(lab, binder, s, np.random.default_rng(2))
    assert img.dtype == np.float32 and img.shape == lab.shape
    assert np.percentile(img, 1) == pytest.approx(0, abs=1e-3)
    assert np.percentile(img, 99) == pytest.approx(1, abs=1e-3)
    solid = img[lab == 1].mean()
    assert solid > img[(lab == 0) & ~binder].mean() + 0.3
    if (lab >= 2).sum() > 20:
        assert img[lab >= 2].mean() < solid
    again = render(lab, binder, s, np.random.default_rng(2))
    np.testing.assert_array_equal(img, again)


def test_pool_particle_size_follows_voxel_size():
    fine = label_pool(1, (24, 64, 64), seed=5, voxel_size_um=(0.25, 0.25))[0]
    coarse = label_pool(1, (24, 64, 64), seed=5, voxel_size_um=(0.75, 0.75))[0]
    assert fine["diameter_vox"] > 1.5 * coarse["diameter_vox"]   # truncated by the box
    assert set(np.unique(fine["labels"])) <= {0, 1, 2, 3}
    assert not (fine["binder"] & (fine["labels"] > 0)).any()


@pytest.mark.parametrize("patch", [(32, 32), (16, 24, 24)])
def test_patches_are_dense_reproducible_and_focus_on_damage(pool, patch):
    ds = RandomizedPatchDataset(pool, patch, length=12, seed=3, focus_probability=1.0)
    x, y = ds[4]
    assert tuple(x.shape) == (1, *patch) and tuple(y.shape) == (1, *patch)
    assert int(y.min()) >= 0 and int(y.max()) <= 3        # every voxel labelled
    x2, y2 = ds[4]
    assert np.array_equal(x.numpy(), x2.numpy()) and np.array_equal(y.numpy(), y2.numpy())
    ds.set_epoch(1)
    assert not np.array_equal(ds[4][0].numpy(), x.numpy())
    damaged = np.mean([(ds[i][1] >= 2).any().item() for i in range(12)])
    uniform = RandomizedPatchDataset(pool, patch, length=12, seed=3, focus_probability=0.0)
    assert damaged >= np.mean([(uniform[i][1] >= 2).any().item() for i in range(12)])
    assert damaged > 0.7


def test_training_domain_records_particle_size(pool):
    dom = training_domain(pool)
    lo, hi = dom["particle_diameter_vox"]
    assert 3 < lo <= hi < 200
    assert dom["voxel_size_um_range"][0] >= 0.3 and dom["appearance_ranges"]["snr"]


def test_pool_particle_shape_ranges_are_drawn_and_leave_other_draws_unchanged():
    base = label_pool(1, (24, 48, 48), seed=9, voxel_size_um=(0.4, 0.4))[0]
    same = label_pool(1, (24, 48, 48), seed=9, voxel_size_um=(0.4, 0.4),
                      asphericity=(0.15, 0.15), roughness=(0.08, 0.08))[0]
    lobed = label_pool(1, (24, 48, 48), seed=9, voxel_size_um=(0.4, 0.4),
                       asphericity=(0.3, 0.35), roughness=(0.25, 0.3))[0]
    assert np.array_equal(base["labels"], same["labels"])
    assert 0.3 <= lobed["settings"]["asphericity"] <= 0.35
    assert 0.25 <= lobed["settings"]["roughness"] <= 0.3
    # the damage law and binder of the member are drawn as before; only the shapes change
    assert lobed["settings"]["damage_logit_mean"] == base["settings"]["damage_logit_mean"]
    assert not np.array_equal(lobed["instances"] > 0, base["instances"] > 0)


def test_roughen_surfaces_moves_only_a_band_at_the_surface():
    from scipy import ndimage as ndi

    from crackseg.synthetic.pool import roughen_surfaces

    lab = np.zeros((32, 48, 48), np.uint8)
    inst = np.zeros(lab.shape, np.uint16)
    lab[6:26, 6:22, 6:42], inst[6:26, 6:22, 6:42] = 1, 1
    lab[6:26, 26:42, 6:42], inst[6:26, 26:42, 6:42] = 1, 2
    lab[16, 10:18, 10:38] = 2  # a crack well inside particle 1
    out, out_inst = roughen_surfaces(lab, inst, 1.5, np.random.default_rng(0))
    changed = out != lab
    assert changed.any()
    # changes stay in a band a few amplitudes wide at the original surface; the inner crack is kept
    dist = ndi.distance_transform_edt(inst == 0) + ndi.distance_transform_edt(inst > 0)
    assert np.quantile(dist[changed], 0.95) <= 2 * 1.5 + 1
    assert dist[changed].max() <= 6 * 1.5
    assert (out[16, 10:18, 10:38] == 2).all()
    # labels and instances agree: solid voxels belong to a particle, matrix to none
    assert np.array_equal(out_inst > 0, out > 0)
    # grown voxels take the nearest particle's instance
    assert set(np.unique(out_inst[(inst == 0) & (out_inst > 0)])) <= {1, 2}
    same, same_inst = roughen_surfaces(lab, inst, 0.0, np.random.default_rng(0))
    assert same is lab and same_inst is inst


def test_pool_surface_noise_is_drawn_from_its_own_stream():
    base = label_pool(1, (24, 48, 48), seed=9, voxel_size_um=(0.4, 0.4))[0]
    rough = label_pool(1, (24, 48, 48), seed=9, voxel_size_um=(0.4, 0.4),
                       surface_noise_vox=(1.0, 2.0))[0]
    assert "surface_noise_vox" not in base["settings"]
    assert 1.0 <= rough["settings"]["surface_noise_vox"] <= 2.0
    assert rough["settings"]["damage_logit_mean"] == base["settings"]["damage_logit_mean"]
    assert not np.array_equal(rough["instances"] > 0, base["instances"] > 0)
    assert np.array_equal(rough["instances"] > 0, rough["labels"] > 0)
