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
    cliffs_delta,
    compare_samples,
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
    assert c["mann_whitney"]["p_value"] == pytest.approx(ref.pvalue)
    assert c["permutation_test"]["p_value"] < 0.01
    assert c["cliffs_delta"]["estimate"] == pytest.approx(brute_cliff(groups[100][0], groups[0][0]))
    assert r["trend"]["slope_of_means"]["ci"][0] > 0
    assert r["method"].startswith("bootstrap over particles")


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
    # the resamples the documented procedure draws from one generator, kept as arrays
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
        return list(np.quantile(x, [a, 1 - a]))

    r = compare_samples(groups, reference=reference, n_resamples=n_res, n_permutations=99,
                        seed=seed)
    for g in groups:
        assert r["groups"][str(g)]["mean"]["ci"] == ci([x.mean() for x in reps[g]])
        assert r["groups"][str(g)]["median"]["ci"] == ci([np.median(x) for x in reps[g]])
    for g in (10, 30):
        c = r["comparisons"][str(g)]
        pairs = list(zip(reps[g], reps[reference]))
        assert c["difference_of_means"]["ci"] == ci([a.mean() - b.mean() for a, b in pairs])
        assert c["difference_of_medians"]["ci"] == ci([np.median(a) - np.median(b) for a, b in pairs])
        assert c["cliffs_delta"]["ci"] == ci([cliffs_delta(a, b) for a, b in pairs])


def test_permutation_test_normal_limit_for_large_samples():
    rng = np.random.default_rng(9)
    x, y = rng.beta(1, 20, 6000), rng.beta(1, 20, 5000) + 0.0015
    assert x.size + y.size > PERMUTATION_MAX_N
    r = compare_samples({"a": [y], "b": [x]}, n_resamples=50, seed=0)
    t = r["comparisons"]["b"]["permutation_test"]
    assert t["n_resamples"] == 0 and "normal law" in t["method"]
    ref = stats.permutation_test((x, y), lambda a, b, axis=-1: a.mean(axis) - b.mean(axis),
                                 vectorized=True, n_resamples=1999, rng=0, batch=100)
    mc_sd = np.sqrt(ref.pvalue * (1 - ref.pvalue) / 1999)
    assert 0.01 < ref.pvalue < 0.9
    assert t["p_value"] == pytest.approx(ref.pvalue, abs=4 * mc_sd + 0.005)
