"""Tests of the synthetic electrode phantoms and ``crackseg synth``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage as ndi

from crackseg.cli import main
from crackseg.errors import InputError
from crackseg.io import read_volume
from crackseg.labels import IGNORE, NMC4, validate_labels
from crackseg.synthetic import generate_electrode, sparse_labels, write_phantom
from crackseg.synthetic.damage import latent_field, target_crack_fraction, true_mean_crack_fraction

SHAPE = (48, 48, 48)


@pytest.fixture(scope="module")
def phantom():
    return generate_electrode(SHAPE, seed=3)


def test_same_seed_same_phantom(phantom):
    again = generate_electrode(SHAPE, seed=3)
    np.testing.assert_array_equal(again.image, phantom.image)
    np.testing.assert_array_equal(again.labels, phantom.labels)
    np.testing.assert_array_equal(again.instances, phantom.instances)
    pd.testing.assert_frame_equal(again.truth, phantom.truth)
    other = generate_electrode(SHAPE, seed=4, imaging=False)
    assert not np.array_equal(other.labels, phantom.labels)


def test_labels_in_schema_and_types(phantom):
    validate_labels(phantom.labels, NMC4, source="phantom")
    assert phantom.labels.dtype == np.uint8
    assert phantom.instances.dtype == np.uint32
    assert phantom.image.dtype == np.uint16
    assert phantom.image.shape == SHAPE
    assert set(np.unique(phantom.labels)) == {0, 1, 2, 3}
    json.dumps(phantom.params)


def test_instances_cover_exactly_the_non_matrix_voxels(phantom):
    np.testing.assert_array_equal(phantom.instances > 0, phantom.labels > 0)
    assert set(phantom.truth["label"]) == set(np.unique(phantom.instances)) - {0}


def test_truth_counts_match_labels_within_instances(phantom):
    lab, inst = phantom.labels, phantom.instances
    for row in phantom.truth.itertuples():
        in_k = inst == row.label
        n = in_k.sum()
        assert row.volume_vox == n
        assert row.crack_fraction == (lab[in_k] == 2).sum() / n
        assert row.pore_fraction == (lab[in_k] == 3).sum() / n
        assert row.void_fraction == pytest.approx(row.crack_fraction + row.pore_fraction)
    vox = np.prod(phantom.voxel_size_um)
    np.testing.assert_allclose(phantom.truth["volume_um3"], phantom.truth["volume_vox"] * vox)


def test_realised_crack_fraction_tracks_target(phantom):
    t = phantom.truth
    diff = t["crack_fraction"] - t["target_crack_fraction"]
    # stochastic rounding of target * envelope voxels: within one voxel per particle
    assert np.all(np.abs(diff) <= 1.0 / t["volume_vox"] + 1e-12)


def test_crack_widths_are_small(phantom):
    crack = phantom.labels == 2
    assert crack.any()
    depth = ndi.distance_transform_edt(crack)
    # distance to the nearest non-crack voxel: thin sheets, not blobs
    assert np.mean(depth[crack] <= 2.0) > 0.95


def test_damage_law_quadrature_matches_monte_carlo():
    law = dict(logit_mean=-3.0, depth_gradient=1.5, hotspot_sd=1.0, particle_sd=0.5,
               max_crack_fraction=0.3)
    rng = np.random.default_rng(0)
    n = 200_000
    mc = target_crack_fraction(rng.uniform(0, 1, n), rng.standard_normal(n),
                               rng.standard_normal(n), **law).mean()
    assert true_mean_crack_fraction(**law) == pytest.approx(mc, rel=0.01)


def test_latent_field_has_unit_variance_and_correlation_length():
    rng = np.random.default_rng(1)
    values, near, far = [], [], []
    for _ in range(300):
        f = latent_field(rng, correlation_length_um=10.0)
        v = f(np.array([[0, 0, 0], [0, 0, 5.0], [0, 0, 40.0]]))
        values.append(v[0])
        near.append(v[0] * v[1])
        far.append(v[0] * v[2])
    assert np.var(values) == pytest.approx(1.0, abs=0.25)
    assert np.mean(near) == pytest.approx(np.exp(-0.125), abs=0.2)
    assert abs(np.mean(far)) < 0.2


def test_latent_field_exponential_kernel():
    rng = np.random.default_rng(2)
    pts = np.array([[0, 0, 0], [0, 0, 5.0], [0, 4.0, 3.0], [20.0, 0, 0]])  # distances 5, 5, 20
    v = np.array([latent_field(rng, 10.0, kernel="exponential")(pts) for _ in range(3000)])
    assert np.var(v[:, 0]) == pytest.approx(1.0, abs=0.1)
    # exp(-h / l), isotropic: the same at distance 5 along an axis and diagonally
    assert np.mean(v[:, 0] * v[:, 1]) == pytest.approx(np.exp(-0.5), abs=0.06)
    assert np.mean(v[:, 0] * v[:, 2]) == pytest.approx(np.exp(-0.5), abs=0.06)
    assert np.mean(v[:, 0] * v[:, 3]) == pytest.approx(np.exp(-2.0), abs=0.06)
    # the default kernel draws exactly what it drew before the option existed
    r = np.random.default_rng(5)
    omega, phase = r.normal(0.0, 0.1, (512, 3)), r.uniform(0.0, 2 * np.pi, 512)
    before = np.sqrt(2.0 / 512) * np.cos(pts @ omega.T + phase).sum(axis=1)
    np.testing.assert_array_equal(latent_field(np.random.default_rng(5), 10.0)(pts), before)
    with pytest.raises(ValueError, match="kernel"):
        latent_field(rng, 10.0, kernel="matern")


def test_sparse_labels_pattern():
    lab = np.ones((24, 20, 16), np.uint8)
    s = sparse_labels(lab, every=5, axes=(0, 1), offset=2)
    annotated = s != IGNORE
    z_kept = np.zeros(24, bool)
    z_kept[2::5] = True
    y_kept = np.zeros(20, bool)
    y_kept[2::5] = True
    expected = z_kept[:, None, None] | y_kept[None, :, None]
    np.testing.assert_array_equal(annotated, np.broadcast_to(expected, lab.shape))
    np.testing.assert_array_equal(s[annotated], 1)
    assert np.array_equal(sparse_labels(lab, every=5, seed=7), sparse_labels(lab, every=5, seed=7))


def test_write_phantom_refuses_to_overwrite(phantom, tmp_path):
    files = write_phantom(phantom, tmp_path / "ph", sparse_every=8)
    assert all(p.exists() for p in files.values())
    with pytest.raises(Exception, match="overwrite"):
        write_phantom(phantom, tmp_path / "ph")
    write_phantom(phantom, tmp_path / "ph", overwrite=True)


def test_no_imaging_is_label_only():
    ph = generate_electrode((32, 32, 32), seed=0, imaging=False)
    assert ph.image is None
    assert ph.labels.any()


def test_cli_writes_all_files_with_voxel_size(tmp_path, capsys):
    out = tmp_path / "synth"
    rc = main(["synth", str(out), "--shape", "32", "40", "48", "--seed", "2", "--sparse-every",
               "6", "--voxel-size", "0.4", "--dtype", "uint8", "--quiet"])
    assert rc == 0
    names = {"image.tif", "labels.tif", "labels_sparse.tif", "instances.tif", "truth.csv",
             "params.json"}
    assert names <= {p.name for p in out.iterdir()}
    img = read_volume(out / "image.tif")
    assert img.shape == (32, 40, 48) and img.dtype == np.uint8
    assert img.voxel_size_um == pytest.approx((0.4, 0.4, 0.4))
    inst = read_volume(out / "instances.tif")
    assert inst.dtype == np.uint32 and inst.voxel_size_um == pytest.approx((0.4, 0.4, 0.4))
    sparse = read_volume(out / "labels_sparse.tif").data
    full = read_volume(out / "labels.tif").data
    kept = sparse != IGNORE
    assert 0 < kept.mean() < 1
    np.testing.assert_array_equal(sparse[kept], full[kept])
    params = json.loads((out / "params.json").read_text())
    assert params["seed"] == 2 and 0 < params["true_mean_crack_fraction"] < 1
    truth = pd.read_csv(out / "truth.csv")
    assert len(truth) == params["packing"]["n_particles"]

    before = (out / "labels.tif").read_bytes()
    rc = main(["synth", str(out), "--shape", "32", "32", "32", "--quiet"])
    assert rc == 2
    assert "overwrite" in capsys.readouterr().err
    assert (out / "labels.tif").read_bytes() == before


def test_cli_same_seed_same_files(tmp_path):
    for name in ("a", "b"):
        assert main(["synth", str(tmp_path / name), "--shape", "32", "32", "32", "--seed", "5",
                     "--quiet"]) == 0
    for f in ("image.tif", "labels.tif", "instances.tif", "truth.csv"):
        a = (tmp_path / "a" / f)
        b = (tmp_path / "b" / f)
        if f.endswith(".tif"):
            np.testing.assert_array_equal(read_volume(a).data, read_volume(b).data)
        else:
            assert a.read_text() == b.read_text()


@pytest.mark.slow
def test_damage_depth_gradient_and_unbiased_growth():
    ph = generate_electrode((96, 96, 96), seed=11, imaging=False, depth_gradient=3.0,
                            hotspot_sd=0.5)
    t = ph.truth
    shallow = t[t["depth_fraction"] < 0.5]["crack_fraction"].mean()
    deep = t[t["depth_fraction"] >= 0.5]["crack_fraction"].mean()
    assert deep > shallow
    assert abs((t["crack_fraction"] - t["target_crack_fraction"]).mean()) < 1e-3


MATBOX = Path(__file__).resolve().parents[1] / "data" / "nmc_matbox_labels.tif"


@pytest.mark.skipif(not MATBOX.exists(), reason="real NMC labels not available")
def test_matbox_geometry_uses_real_particles():
    ph = generate_electrode((40, 48, 48), seed=2, geometry="matbox", matbox_path=MATBOX,
                            imaging=False)
    np.testing.assert_array_equal(ph.instances > 0, ph.labels > 0)
    assert ph.params["packing"]["geometry"] == "matbox"
    assert len(ph.truth) > 3
    diff = ph.truth["crack_fraction"] - ph.truth["target_crack_fraction"]
    assert np.all(np.abs(diff) <= 1.0 / ph.truth["volume_vox"] + 1e-12)
    with pytest.raises(InputError, match="larger than"):
        generate_electrode((400, 48, 48), geometry="matbox", matbox_path=MATBOX)


def test_bad_arguments_are_input_errors():
    with pytest.raises(InputError):
        generate_electrode((2, 32, 32))
    with pytest.raises(InputError):
        generate_electrode((16, 16, 16), dtype="int8")
    with pytest.raises(InputError):
        generate_electrode((16, 16, 16), geometry="cubes")
    with pytest.raises(InputError):
        sparse_labels(np.zeros((4, 4, 4), np.uint8), every=0)


def test_damage_law_median_matches_monte_carlo():
    from crackseg.synthetic.damage import true_crack_fraction_quantile

    law = dict(logit_mean=-3.3, depth_gradient=1.6, hotspot_sd=1.0, particle_sd=0.5,
               max_crack_fraction=0.3)
    rng = np.random.default_rng(1)
    n = 200_000
    t = target_crack_fraction(rng.uniform(0, 1, n), rng.standard_normal(n),
                              rng.standard_normal(n), **law)
    for q in (0.25, 0.5, 0.9):
        assert true_crack_fraction_quantile(q, **law) == pytest.approx(np.quantile(t, q), rel=0.02)
