"""Comparison of samples: effect sizes, tests, trend, manifest checks, CLI."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crackseg.cli import main
from crackseg.errors import InputError
from crackseg.stats.compare import (
    PERMUTATION_MAX_N,
    Volume,
    cliffs_delta,
    compare_samples,
    load_volumes,
    read_manifest,
)


def brute_cliff(x, y):
    d = np.sign(np.subtract.outer(x, y))
    return d.mean()


def test_cliffs_delta_analytic_and_brute_force():
    assert cliffs_delta([5, 6, 7], [1, 2]) == 1.0
    assert cliffs_delta([1, 2], [5, 6, 7]) == -1.0
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    assert cliffs_delta(x, y) == pytest.approx(brute_cliff(x, y))


def test_compare_two_groups_and_trend():
    rng = np.random.default_rng(1)
    groups = {0: [rng.beta(1, 30, 300)], 100: [rng.beta(2, 20, 300)], 200: [rng.beta(3, 15, 300)]}
    r = compare_samples(groups, n_resamples=500, n_permutations=999, seed=0)
    c = r["comparisons"]["100"]
    lo, hi = c["difference_of_means"]["ci"]
    assert 0 < lo < c["difference_of_means"]["estimate"] < hi
    ref = stats.mannwhitneyu(groups[100][0], groups[0][0], alternative="two-sided")
    assert c["mann_whitney"]["U"] == pytest.approx(ref.statistic)
    assert c["mann_whitney"]["p_value_particles_independent"] == pytest.approx(ref.pvalue)
    # no centroids: particles are the permuted units, and none of 999 relabellings is as extreme
    assert c["mann_whitney"]["p_value"] == c["permutation_test"]["p_value"] == 1 / 1000
    assert c["cliffs_delta"]["estimate"] == pytest.approx(brute_cliff(groups[100][0], groups[0][0]))
    assert r["trend"]["slope_of_means"]["ci"][0] > 0
    allx = np.repeat([0.0, 100.0, 200.0], 300)
    rho = stats.spearmanr(allx, np.concatenate([groups[g][0] for g in (0, 100, 200)]))
    assert r["trend"]["spearman"]["rho"] == pytest.approx(rho.statistic, rel=1e-12)
    assert r["trend"]["spearman"]["p_value"] == 1 / 1000
    assert r["method"].startswith("bootstrap over particles")
    assert "particles" in r["estimand"] and "one spatially clustered population" in r["estimand"]


def test_permutation_p_values_are_uniform_under_exchangeability():
    # iid particles: permuting them is exact, so p-values are uniform
    rng = np.random.default_rng(11)
    p = [compare_samples({"a": [rng.beta(1, 20, 80)], "b": [rng.beta(1, 20, 60)]},
                         n_resamples=20, n_permutations=199, seed=k)["comparisons"]["b"]
         ["permutation_test"]["p_value"] for k in range(60)]
    assert stats.kstest(p, "uniform").pvalue > 0.01


def test_hierarchical_bootstrap_is_wider_with_volume_variation():
    rng = np.random.default_rng(2)
    vols_a = [rng.normal(m, 0.01, 200) for m in (0.02, 0.05, 0.08)]
    vols_b = [rng.normal(m, 0.01, 200) for m in (0.03, 0.06, 0.09)]
    r = compare_samples({"a": vols_a, "b": vols_b}, n_resamples=500, seed=0)
    flat = compare_samples({"a": [np.concatenate(vols_a)], "b": [np.concatenate(vols_b)]},
                           n_resamples=500, seed=0)
    w_h = np.diff(r["comparisons"]["b"]["difference_of_means"]["ci"])[0]
    w_f = np.diff(flat["comparisons"]["b"]["difference_of_means"]["ci"])[0]
    assert w_h > 3 * w_f
    assert r["method"].startswith("hierarchical")
    assert r["groups"]["a"]["n_volumes"] == 3


def _analysed(tmp_path, name, values):
    d = tmp_path / name
    d.mkdir()
    pd.DataFrame({"label": np.arange(1, len(values) + 1), "crack_fraction": values,
                  "touches_border": False}).to_csv(d / "particles.csv", index=False)
    return d


def test_manifest_errors(tmp_path):
    a = _analysed(tmp_path, "a", [0.01, 0.02])
    m = tmp_path / "m.csv"
    m.write_text(f"path,sample,cycle\n{a},A,0\n{tmp_path / 'missing'},B,1\n")
    with pytest.raises(InputError, match="no particles.csv"):
        read_manifest(m)
    b = _analysed(tmp_path, "b", [0.03, 0.04])
    c = _analysed(tmp_path, "c", [0.03, 0.05])
    m.write_text(f"path,sample,cycle\n{a},A,0\n{b},B,1\n{c},B,2\n")
    with pytest.raises(InputError, match="different 'cycle'"):
        read_manifest(m)
    m.write_text(f"path,cycle\n{a},0\n{b},1\n")
    with pytest.raises(InputError, match="'sample' column"):
        read_manifest(m)


def test_compare_cli(tmp_path, capsys):
    rng = np.random.default_rng(3)
    rows = ["path,sample,cycle"]
    for i, (s, cyc, a) in enumerate([("A", 0, 1), ("A", 0, 1), ("B", 50, 3), ("C", 100, 6)]):
        d = _analysed(tmp_path, f"v{i}", rng.beta(a, 40, 150))
        rows.append(f"{d.name},{s},{cyc}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "cmp"
    argv = ["compare", str(tmp_path / "manifest.csv"), "-o", str(out), "--group-by", "cycle",
            "--n-resamples", "300", "--quiet"]
    assert main(argv) == 0
    res = json.loads((out / "comparison.json").read_text())
    assert set(res["comparisons"]) == {"50", "100"}
    assert res["groups"]["0"]["n_volumes"] == 2 and "trend" in res
    assert (out / "comparison.png").stat().st_size > 1000
    assert len(pd.read_csv(out / "comparison.csv")) == 3
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_intervals_equal_direct_hierarchical_resampling():
    # without centroids the units are particles, the widening is 1, and the intervals are
    # those of the resamples the documented procedure draws from one generator
    rng = np.random.default_rng(4)
    groups = {10: [rng.beta(1, 20, 60), rng.beta(1, 15, 45)], 20: [np.round(rng.beta(2, 20, 80), 2)],
              30: [rng.beta(2, 15, 50), rng.beta(3, 15, 70), rng.beta(2, 10, 30)]}
    n_res, seed, reference = 200, 9, 20
    draw = np.random.default_rng(seed)

    def resample(vols):
        if len(vols) == 1:
            return vols[0][draw.integers(0, vols[0].size, vols[0].size)]
        pick = draw.integers(0, len(vols), len(vols))
        return np.concatenate([vols[i][draw.integers(0, vols[i].size, vols[i].size)] for i in pick])

    reps = {g: [resample(groups[g]) for _ in range(n_res)] for g in sorted(groups)}

    def ci(x):
        a = (1 - 0.95) / 2
        return pytest.approx(list(np.quantile(x, [a, 1 - a])), rel=1e-12)

    r = compare_samples(groups, reference=reference, n_resamples=n_res, n_permutations=99,
                        seed=seed)
    for g in groups:
        assert r["groups"][str(g)]["mean"]["ci"] == ci([x.mean() for x in reps[g]])
        assert r["groups"][str(g)]["median"]["ci"] == ci([np.median(x) for x in reps[g]])
        assert r["groups"][str(g)]["mean"]["cross_block_factor"] == 1.0
    for g in (10, 30):
        c = r["comparisons"][str(g)]
        pairs = list(zip(reps[g], reps[reference]))
        assert c["difference_of_means"]["ci"] == ci([a.mean() - b.mean() for a, b in pairs])
        assert c["difference_of_medians"]["ci"] == ci([np.median(a) - np.median(b) for a, b in pairs])
        assert c["cliffs_delta"]["ci"] == ci([cliffs_delta(a, b) for a, b in pairs])


def test_permutation_test_normal_limit_for_many_units():
    rng = np.random.default_rng(9)
    x, y = rng.beta(1, 20, 6000), rng.beta(1, 20, 5000) + 0.0015
    assert x.size + y.size > PERMUTATION_MAX_N
    r = compare_samples({"a": [y], "b": [x]}, n_resamples=50, seed=0)
    t = r["comparisons"]["b"]["permutation_test"]
    assert t["n_resamples"] == 0 and "normal law with the exact spread" in t["method"]
    ref = stats.permutation_test((x, y), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis),
                                 vectorized=True, n_resamples=1999, rng=0, batch=100)
    mc_sd = np.sqrt(ref.pvalue * (1 - ref.pvalue) / 1999)
    assert 0.01 < ref.pvalue < 0.9
    assert t["p_value"] == pytest.approx(ref.pvalue, abs=4 * mc_sd + 0.005)
    # particles as units: the exact permutation variance of the difference of means
    n, n1 = x.size + y.size, x.size
    pooled = np.concatenate([x, y])
    sd = np.sqrt(n * n * pooled.var() / (n1 * (n - n1) * (n - 1)))
    assert t["p_value"] == pytest.approx(2 * stats.norm.sf(abs(x.mean() - y.mean()) / sd))


def _clustered_pair(seed, n=500, side=160.0):
    from crackseg.synthetic.points import damage_points

    vols, truth = damage_points(n, (side,) * 3, seed=seed, n_volumes=2)
    return {"a": [Volume(*vols[0], (side,) * 3)], "b": [Volume(*vols[1], (side,) * 3)]}, truth


def test_two_volumes_of_one_clustered_electrode_rarely_differ():
    # the fast version of benchmarks/calibration.py's false-positive row: two volumes of the
    # same electrode (one damage field, one law) must not be called different
    calls = {"means": 0, "ranks": 0, "independent": 0, "ci": 0}
    n = 30
    for s in range(n):
        groups, _ = _clustered_pair(7000 + s)
        c = compare_samples(groups, n_resamples=300, n_permutations=499, seed=s)["comparisons"]["b"]
        calls["means"] += c["permutation_test"]["p_value"] < 0.05
        calls["ranks"] += c["mann_whitney"]["p_value"] < 0.05
        calls["independent"] += c["mann_whitney"]["p_value_particles_independent"] < 0.05
        lo, hi = c["difference_of_means"]["ci"]
        calls["ci"] += not lo <= 0 <= hi
    # 5 % nominal: 4 or more of 30 would happen by chance with probability 6 %
    assert calls["means"] <= 4 and calls["ranks"] <= 4 and calls["ci"] <= 5
    assert calls["independent"] >= 8  # particles as independent: anticonservative


def test_spatial_blocks_of_each_volume_and_the_estimand():
    groups, truth = _clustered_pair(3)
    r = compare_samples(groups, n_resamples=300, n_permutations=199, seed=0)
    g = r["groups"]["a"]
    assert g["n_blocks"][0] > 8 and g["block_size"][0] > 0 and g["correlation_range"][0] > 0
    assert g["mean"]["cross_block_factor"] > 1
    assert "spatial blocks" in r["method"] and "widened" in r["method"]
    assert "spatial blocks" in r["estimand"] and "only for the population" in r["estimand"]
    assert "spatial blocks" in r["comparisons"]["b"]["permutation_test"]["method"]
    # several volumes per group: volumes, then blocks within them
    more, _ = _clustered_pair(4)
    r2 = compare_samples({"a": groups["a"] + more["a"], "b": groups["b"] + more["b"]},
                         n_resamples=200, n_permutations=199, seed=0)
    assert r2["method"].startswith("hierarchical bootstrap (volumes, then spatial blocks")
    assert "electrode-level claims" in r2["estimand"]


def test_load_volumes_reads_centroids_and_extent(tmp_path):
    rng = np.random.default_rng(5)
    xyz = rng.uniform(5, 95, (40, 3))
    t = pd.DataFrame({"label": np.arange(1, 41), "crack_fraction": rng.beta(1, 20, 40),
                      "touches_border": np.arange(40) < 3})
    for k, a in enumerate("zyx"):
        t[f"centroid_{a}_vox"] = xyz[:, k]
        t[f"centroid_{a}_um"] = xyz[:, k] * 0.5
        t[f"bbox_{a}0"] = np.floor(xyz[:, k] - 4)
        t[f"bbox_{a}1"] = np.ceil(xyz[:, k] + 4)
    t.loc[0, "bbox_z1"] = 100
    d = tmp_path / "v"
    d.mkdir()
    t.to_csv(d / "particles.csv", index=False)
    (tmp_path / "m.csv").write_text(f"path,sample\n{d},A\n{d}/particles.csv,B\n")
    with pytest.raises(InputError, match="listed twice"):
        load_volumes(read_manifest(tmp_path / "m.csv"))
    (tmp_path / "m.csv").write_text(f"path,sample\n{d},A\n{_analysed(tmp_path, 'w', [0.1, 0.2])},B\n")
    vols = load_volumes(read_manifest(tmp_path / "m.csv"))
    a, b = vols["A"][0], vols["B"][0]
    assert len(a) == 37 and a.coords.shape == (37, 3) and b.coords is None
    np.testing.assert_allclose(a.coords, xyz[3:] * 0.5)
    assert a.extent[0] == 100  # voxels, without the voxel size in the CSV's attributes
    assert np.concatenate([a, b]).shape == (39,)  # a Volume reads as its values
