"""Bootstrap intervals: agreement with scipy/numpy and analytic cases."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crackseg.errors import InputError
from crackseg.stats.bootstrap import (
    _multiplicity,
    _unit_counts,
    _unit_statistics,
    _weighted,
    bootstrap_ci,
    bootstrap_columns,
    bootstrap_many,
    spatial_blocks,
    weighted_statistic,
)
from crackseg.stats.distribution import distribution_statistics, population


@pytest.fixture
def sample():
    rng = np.random.default_rng(42)
    return rng.beta(0.8, 15, 400), rng.random((400, 3)) * 100


def test_iid_equals_scipy_bca(sample):
    x, _ = sample
    ours = bootstrap_ci(x, "mean", method="iid", n_resamples=999, seed=7)
    ref = stats.bootstrap((x,), np.mean, n_resamples=999, rng=7, method="BCa")
    np.testing.assert_allclose(ours.ci, (ref.confidence_interval.low, ref.confidence_interval.high))
    assert ours.estimate == pytest.approx(x.mean())
    assert ours.method == "iid bootstrap (BCa)"


def test_block_size_zero_equals_iid(sample):
    x, xyz = sample
    iid = bootstrap_ci(x, "median", method="iid", n_resamples=500, seed=3)
    blk = bootstrap_ci(x, "median", method="block", coords=xyz, block_size_um=0, n_resamples=500, seed=3)
    assert blk.ci == iid.ci
    assert blk.n_blocks == x.size


def test_weighted_statistics_equal_numpy(sample):
    x, _ = sample
    assert weighted_statistic(x, "median") == pytest.approx(np.median(x))
    for q in (0.1, 0.25, 0.9):
        assert weighted_statistic(x, ("quantile", q)) == pytest.approx(np.quantile(x, q))
    assert weighted_statistic(x, ("fraction_above", 0.05)) == pytest.approx(np.mean(x > 0.05))
    # integer weights are repetitions
    w = np.random.default_rng(0).integers(1, 4, x.size)
    assert weighted_statistic(x, "median", w) == pytest.approx(np.median(np.repeat(x, w)))
    assert weighted_statistic(x, "mean", w) == pytest.approx(np.repeat(x, w).mean())


def test_block_bootstrap_standard_error_matches_block_means():
    # 64 equal blocks of 10 particles: the bootstrap variance of the mean is
    # var(block means) / n_blocks (population variance), as for an iid sample of block means
    rng = np.random.default_rng(1)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    centres = (grid + 0.5) * 25.0
    coords = np.repeat(centres, 10, axis=0) + rng.uniform(-5, 5, (640, 3))
    block_effect = rng.normal(0, 1, 64)
    x = np.repeat(block_effect, 10) + rng.normal(0, 0.3, 640)
    r = bootstrap_ci(x, "mean", coords=coords, block_size_um=25, extent=(100, 100, 100),
                     n_resamples=4000, seed=0)
    assert r.n_blocks == 64
    means = x.reshape(64, 10).mean(axis=1)
    expected = np.sqrt(means.var() / 64)
    assert r.standard_error == pytest.approx(expected, rel=0.06)
    iid = bootstrap_ci(x, "mean", method="iid", n_resamples=2000, seed=0)
    assert iid.standard_error < 0.5 * r.standard_error


def test_spatial_blocks_grid():
    ids = spatial_blocks([[1, 1, 1], [60, 1, 1], [1, 60, 1], [2, 2, 2]], 50, extent=(100, 100, 100))
    assert ids[0] == ids[3] and len(set(ids.tolist())) == 3


def test_one_particle_and_one_block_give_no_interval():
    r = bootstrap_ci([0.1], "mean", method="iid")
    assert r.ci is None and "one particle" in r.note
    r = bootstrap_ci([0.1, 0.2, 0.3], "mean", coords=np.zeros((3, 3)), block_size_um=10,
                     extent=(10, 10, 10))
    assert r.ci is None and "one spatial block" in r.note


def test_constant_values_give_degenerate_interval():
    r = bootstrap_ci(np.full(50, 0.02), "mean", method="iid", n_resamples=200)
    assert r.ci == (pytest.approx(0.02), pytest.approx(0.02))


def test_posterior_variance_decomposition(sample):
    x, xyz = sample
    rng = np.random.default_rng(0)
    same = np.repeat(x[None], 5, axis=0)
    r = bootstrap_many(x, ["mean"], coords=xyz, block_size=20, extent=(100,) * 3,
                       posterior=same, n_resamples=500, seed=0)[0]
    assert r.extra["uncertainty"]["share_segmentation"] == 0.0
    noisy = x[None] + rng.normal(0, 0.05, (20, 1))  # each sample shifts every particle
    r = bootstrap_many(x, ["mean"], coords=xyz, block_size=20, extent=(100,) * 3,
                       posterior=noisy, n_resamples=500, seed=0)[0]
    u = r.extra["uncertainty"]
    assert u["share_segmentation"] > 0.8
    assert r.ci[1] - r.ci[0] > u["ci_sampling_only"][1] - u["ci_sampling_only"][0]


def test_distribution_statistics_histogram_sums_to_one(sample):
    x, xyz = sample
    d = distribution_statistics(x, coords=xyz, block_size=25, extent=(100,) * 3, n_resamples=300)
    assert sum(d["histogram"]["fraction"]) == pytest.approx(1.0)
    assert d["fraction_above_0.05"]["estimate"] == pytest.approx(np.mean(x > 0.05))
    lo, hi = d["median"]["ci"]
    assert lo <= d["median"]["estimate"] <= hi


def test_miles_lantuejoul_weights():
    t = pd.DataFrame({"touches_border": [False, False, True],
                      "bbox_z0": [1, 1, 0], "bbox_y0": [1, 1, 0], "bbox_x0": [1, 1, 0],
                      "bbox_z1": [3, 6, 2], "bbox_y1": [3, 6, 2], "bbox_x1": [3, 6, 2]})
    t.attrs["shape"] = [10, 10, 10]
    mask, w, desc = population(t, "miles")
    assert mask.tolist() == [True, True, False]
    raw = np.array([1 / 8 ** 3, 1 / 5 ** 3])
    np.testing.assert_allclose(w, raw / raw.mean())
    assert "Miles-Lantuejoul" in desc
    mask, w, _ = population(t, "exclude")
    assert mask.sum() == 2 and (w == 1).all()


def test_cross_block_factor_one_for_independent_values_and_large_for_smooth_field():
    from crackseg.stats.bootstrap import cross_block_factors

    rng = np.random.default_rng(6)
    xyz = rng.random((1500, 3)) * 100
    ext = (100,) * 3
    noise = rng.normal(0, 1, 1500)
    f_iid = cross_block_factors((noise - noise.mean())[None], np.ones(1500), xyz, 25, 10.0,
                                extent=ext)
    assert f_iid[0] == pytest.approx(1.0, abs=0.15)
    smooth = np.sin(xyz[:, 0] / 12) + np.cos(xyz[:, 1] / 12)
    f_smooth = cross_block_factors((smooth - smooth.mean())[None], np.ones(1500), xyz, 25, 30.0,
                                   extent=ext)
    assert f_smooth[0] > 1.3
    # the interval is widened about the estimate by exactly that factor
    plain = bootstrap_ci(smooth, "mean", coords=xyz, block_size_um=25, extent=ext,
                         n_resamples=300, seed=0)
    wide = bootstrap_ci(smooth, "mean", coords=xyz, block_size_um=25, extent=ext,
                        n_resamples=300, seed=0, cross_block_range=30.0)
    f = wide.extra["cross_block_factor"]
    assert f == pytest.approx(f_smooth[0])
    assert wide.ci[1] - wide.ci[0] == pytest.approx(f * (plain.ci[1] - plain.ci[0]))


@pytest.mark.parametrize("radius", [6.0, 14.0, 30.0])
def test_pair_sums_equal_brute_force_over_cells(radius):
    from scipy.spatial import cKDTree

    from crackseg.stats.bootstrap import CELLS_PER_RANGE, _block_grid, _pair_sums

    rng = np.random.default_rng(7)
    xyz = rng.random((800, 3)) * (90, 100, 110)
    a = rng.normal(size=(2, 800))
    nb, edge = _block_grid(xyz, 22.0, (90, 100, 110))
    within, total = _pair_sums(a, xyz, nb, edge, radius)
    # the documented kernel: same block, or cell centres closer than the radius
    q = np.clip(np.ceil(edge * CELLS_PER_RANGE / radius), 1, 8)
    cell = np.floor(xyz / (edge / q))
    block = np.floor(cell / q)
    centre = (cell + 0.5) * (edge / q)
    same = (block[:, None] == block[None]).all(-1)
    near = np.linalg.norm(centre[:, None] - centre[None], axis=-1) < radius
    np.testing.assert_allclose(within, np.einsum("ki,ij,kj->k", a, same, a))
    np.testing.assert_allclose(total, np.einsum("ki,ij,kj->k", a, same | near, a))
    # close to the same sums over particle distances
    pairs = cKDTree(xyz).query_pairs(radius, output_type="ndarray")
    pairs = pairs[~same[pairs[:, 0], pairs[:, 1]]]
    exact = within + 2 * (a[:, pairs[:, 0]] * a[:, pairs[:, 1]]).sum(axis=1)
    assert np.all(np.abs(total - exact) < 0.25 * within)


def test_cross_block_factor_is_exact_above_5000_particles():
    # no subsample: the factor of 20 000 particles is the factor of all of them,
    # the same as the sum over the two halves' cells
    from crackseg.stats.bootstrap import cross_block_factors

    rng = np.random.default_rng(8)
    xyz = rng.random((20000, 3)) * 300
    field = np.sin(xyz[:, 1] / 15) * np.cos(xyz[:, 2] / 20) + rng.normal(0, 0.5, 20000)
    psi = (field - field.mean())[None]
    f = cross_block_factors(psi, np.ones(20000), xyz, 30, 40.0, extent=(300,) * 3)
    f_again = cross_block_factors(psi[:, ::-1], np.ones(20000), xyz[::-1], 30, 40.0,
                                  extent=(300,) * 3)
    assert f[0] == pytest.approx(f_again[0], rel=1e-9)  # order of the particles is irrelevant
    sub = cross_block_factors(psi[:, :5000] - psi[:, :5000].mean(), np.ones(5000), xyz[:5000],
                              30, 40.0, extent=(300,) * 3)
    assert f[0] > sub[0]  # what the former 5000-particle subsample got wrong


@pytest.mark.parametrize("n, n_units", [(7, 3), (300, 40), (2000, 2000), (25000, 25000)])
def test_statistics_from_unit_counts_equal_particle_weights(n, n_units):
    rng = np.random.default_rng(n)
    v = np.sort(np.round(rng.beta(0.8, 10, n), 3))  # sorted, with ties
    b = rng.integers(0, n_units, n)
    b[:n_units] = np.arange(min(n, n_units))
    specs = ["mean", "median", ("quantile", 0.1), ("quantile", 0.9), ("fraction_above", 0.05),
             ("fraction_between", (0.01, 0.05)), ("histogram", np.linspace(0, v.max() + 1e-9, 6))]
    idx = rng.integers(0, n_units, (50, n_units))
    m = _multiplicity(idx, n_units)
    for w in (np.ones(n), rng.uniform(0.5, 2.0, n)):
        f = _unit_statistics(specs, v, w, b, n_units)
        got = f(idx)
        ref = np.concatenate([np.reshape(_weighted(s, v, m[:, b] * w), (-1, 50)) for s in specs])
        if (w == 1).all():  # integer weights: the same numbers
            np.testing.assert_array_equal(got[1:4], ref[1:4])
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-15)
        # the replicate that draws every unit once is the observed sample
        obs = np.concatenate([np.ravel(_weighted(s, v, w[None])) for s in specs])
        np.testing.assert_allclose(f(np.arange(n_units)[None])[:, 0], obs, rtol=1e-12)
        # without quantiles (no per-particle lookup needed)
        linear = _unit_statistics(["mean", specs[4]], v, w, b, n_units)(idx)
        np.testing.assert_allclose(linear, ref[[0, 4]], rtol=1e-12, atol=1e-15)


def test_unit_counts_equal_multiplicities_in_both_layouts():
    rng = np.random.default_rng(1)
    for rows, units in ((30, 50), (45, 100_000)):  # in cache, and counted resample by resample
        idx = rng.integers(0, units, (rows, units)).astype(np.int32)
        np.testing.assert_array_equal(_unit_counts(idx, units), _multiplicity(idx, units).T)


def test_callable_statistic_still_supported(sample):
    x, xyz = sample

    def weighted_rms(v, w):  # a statistic given as a function of sorted values and weights
        return np.sqrt((w @ v**2) / w.sum(axis=-1))

    r = bootstrap_ci(x, weighted_rms, coords=xyz, block_size_um=25, extent=(100, 100, 100),
                     n_resamples=300, seed=0)
    assert r.estimate == pytest.approx(np.sqrt(np.mean(x**2)))
    assert r.ci[0] < r.estimate < r.ci[1]


def test_columns_share_resamples_and_equal_separate_calls(sample):
    x, xyz = sample
    y = np.sqrt(x) + 0.01 * xyz[:, 0]
    kw = dict(coords=xyz, block_size=20.0, extent=(100, 100, 100), n_resamples=400, seed=5,
              cross_block_range=30.0)
    both = bootstrap_columns([x, y], ["mean", "median", ("fraction_above", 0.05)], **kw)
    for col, got in zip((x, y), both):
        alone = bootstrap_many(col, ["mean", "median", ("fraction_above", 0.05)], **kw)
        assert [g.to_dict() for g in got] == [a.to_dict() for a in alone]
    with pytest.raises(InputError, match="equal length"):
        bootstrap_columns([x, y[:-1]], ["mean"], method="iid")
