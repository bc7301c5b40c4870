"""Spatial statistics against analytic cases and brute-force references."""

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform

from crackseg.errors import InputError
from crackseg.stats.spatial import (
    MORAN_PERMUTATION_MAX_N,
    correlation_length,
    covariance_range,
    depth_profile,
    fit_variogram,
    hot_spots,
    knn_weights,
    morans_i,
    variogram,
)


def test_morans_i_random_values_near_expectation():
    rng = np.random.default_rng(0)
    xyz = rng.random((400, 3)) * 100
    vals = [morans_i(rng.random(400), xyz, n_permutations=99, seed=s)["I"] for s in range(20)]
    # E[I] = -1/(n-1) under no autocorrelation; sd of I is about 1/sqrt(n k)
    assert np.mean(vals) == pytest.approx(-1 / 399, abs=0.01)


def test_morans_i_matches_dense_formula_and_detects_clustering():
    rng = np.random.default_rng(1)
    xyz = rng.random((150, 3)) * 100
    x = np.sin(xyz[:, 0] / 15) + rng.normal(0, 0.2, 150)
    w = knn_weights(xyz, 6).toarray()
    w = w / w.sum(axis=1, keepdims=True)
    z = x - x.mean()
    ref = len(x) / w.sum() * (z @ w @ z) / (z @ z)
    r = morans_i(x, xyz, k=6, n_permutations=199, seed=0)
    assert r["I"] == pytest.approx(ref)
    assert r["I"] > 0.5 and r["p_value"] <= 0.01


def test_variogram_matches_brute_force():
    rng = np.random.default_rng(2)
    xyz = rng.random((200, 3)) * 50
    x = rng.random(200)
    vg = variogram(x, xyz, n_bins=5, max_distance=25.0)
    d = pdist(xyz)
    sq = 0.5 * pdist(x[:, None], "sqeuclidean")
    for _, row in vg.iterrows():
        m = (d >= row["bin_lo"]) & (d < row["bin_hi"])
        assert row["n_pairs"] == m.sum()
        assert row["semivariance"] == pytest.approx(sq[m].mean())


def test_fitted_correlation_length_of_exponential_field():
    rng = np.random.default_rng(3)
    xyz = rng.random((700, 3)) * 100
    length = 10.0
    cov = np.exp(-squareform(pdist(xyz)) / length) + 1e-9 * np.eye(700)
    x = np.linalg.cholesky(cov) @ rng.normal(size=700) + rng.normal(0, 0.3, 700)
    est, fit, _ = correlation_length(x, xyz, depth_axis=None, max_distance=40)
    assert fit["converged"]
    assert 0.5 * length < est < 2 * length
    assert fit["nugget"] == pytest.approx(0.09, abs=0.08)


def _gaussian_field(xyz, cov, rng, nugget_sd):
    return np.linalg.cholesky(cov + 1e-9 * np.eye(len(xyz))) @ rng.normal(size=len(xyz)) \
        + rng.normal(0, nugget_sd, len(xyz))


def test_variogram_model_chosen_and_range_holds_95_percent_of_the_covariance():
    rng = np.random.default_rng(4)
    xyz = rng.random((900, 3)) * 100
    d = squareform(pdist(xyz))
    chosen = {}
    for model, cov in (("exponential", np.exp(-d / 8.0)),
                       ("squared_exponential", np.exp(-0.5 * (d / 8.0) ** 2))):
        picks = []
        for _ in range(3):
            x = _gaussian_field(xyz, cov, rng, 0.2)
            est, fit, _ = correlation_length(x, xyz, depth_axis=None, max_distance=40)
            picks.append(fit["model"])
            assert set(fit["candidates"]) == {"exponential", "squared_exponential"}
            assert fit["correlation_range"] == pytest.approx(
                covariance_range(fit["model"], est))
        chosen[model] = picks
    assert chosen["exponential"].count("exponential") >= 2
    assert chosen["squared_exponential"].count("squared_exponential") >= 2
    # the range holds 95 % of the covariance integral, in 3-D and in a plane
    h = np.linspace(0, 200, 200001)
    for model, c in (("exponential", np.exp(-h / 5.0)),
                     ("squared_exponential", np.exp(-0.5 * (h / 5.0) ** 2))):
        for dim in (3, 2):
            mass = np.cumsum(c * h ** (dim - 1))
            r = covariance_range(model, 5.0, dim=dim)
            assert mass[np.searchsorted(h, r)] / mass[-1] == pytest.approx(0.95, abs=1e-3)
    with pytest.raises(InputError, match="unknown variogram model"):
        covariance_range("spherical", 1.0)


def test_fit_variogram_too_few_bins():
    import pandas as pd

    assert fit_variogram(pd.DataFrame(columns=["distance"]))["correlation_length"] is None


def test_depth_profile_follows_gradient():
    rng = np.random.default_rng(4)
    xyz = rng.random((600, 3)) * 100
    x = 0.01 + 0.001 * xyz[:, 0] + rng.normal(0, 0.005, 600)
    prof = depth_profile(x, xyz[:, 0], coords=xyz, n_bins=4, block_size=25, extent=(100,) * 3,
                         n_resamples=300)
    assert (np.diff(prof["mean"]) > 0).all()
    assert (prof["ci_low"] <= prof["mean"]).all() and (prof["mean"] <= prof["ci_high"]).all()
    assert prof["n"].sum() == 600


def test_hot_spots_find_planted_cluster_only():
    rng = np.random.default_rng(5)
    xyz = rng.random((800, 3)) * 100
    x = rng.normal(0, 1, 800)
    per, clusters = hot_spots(x, xyz, distance=12)
    assert len(clusters) == 0
    hot = np.linalg.norm(xyz - 35, axis=1) < 25
    x[hot] += 3
    per, clusters = hot_spots(x, xyz, distance=12)
    assert len(clusters) >= 1
    members = per["hot_spot"].to_numpy() == clusters[0]["id"]
    assert hot[members].mean() > 0.8
    np.testing.assert_allclose(clusters[0]["centroid"], [35, 35, 35], atol=8)


def test_morans_i_normal_test_agrees_with_permutations():
    rng = np.random.default_rng(5)
    xyz = rng.random((600, 3)) * 100
    x = np.sin(xyz[:, 0] / 20) + rng.lognormal(0, 0.5, 600)
    perm = morans_i(x, xyz, n_permutations=3999, seed=0)
    norm = morans_i(x, xyz, test="normal")
    assert perm["test"] == "permutation" and 600 <= MORAN_PERMUTATION_MAX_N
    assert norm["I"] == pytest.approx(perm["I"])
    assert norm["n_permutations"] == 0
    # the permutation z estimates the exact randomisation z: Monte Carlo error of
    # the null's sd with 3999 relabellings is about 1 / sqrt(2 * 3999) = 1.1 %
    assert norm["z"] == pytest.approx(perm["z"], rel=0.05)
    assert norm["z"] > 5 and norm["p_value"] < 1e-6
    with pytest.raises(InputError, match="'auto', 'permutation' or 'normal'"):
        morans_i(x, xyz, test="exact")
