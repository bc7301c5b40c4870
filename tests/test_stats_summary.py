"""summarize(): keys, border policies, posterior propagation, edge cases, figures."""

import matplotlib.figure
import numpy as np
import pytest

from crackseg.errors import InputError
from crackseg.stats import figures as sf
from crackseg.stats.summary import block_size_for, n_blocks_for, summarize
from crackseg.stats.table import particle_table
from crackseg.synthetic import generate_electrode


@pytest.fixture(scope="module")
def table():
    ph = generate_electrode((96, 96, 96), seed=8, imaging=False, voxel_size_um=1.0)
    return particle_table(ph.labels, ph.instances, voxel_size_um=ph.voxel_size_um)


def test_summary_keys_and_policies(table):
    s = summarize(table, n_resamples=300, n_draws=300)
    assert s["n_particles"] == int((~table["touches_border"]).sum())
    assert s["n_particles_total"] == len(table)
    assert s["damage"]["mean"]["ci"][0] <= s["damage"]["mean"]["estimate"] <= s["damage"]["mean"]["ci"][1]
    assert "not an interval for the whole electrode" in s["estimand"]
    assert s["bootstrap"]["block_size"] > 0
    m = summarize(table, border="miles", n_resamples=300, spatial=False, protocols=False)
    assert "Miles-Lantuejoul" in m["population"]["description"]
    inc = summarize(table, border="include", method="iid", n_resamples=300, spatial=False,
                    protocols=False)
    assert inc["n_particles"] == len(table)
    assert inc["damage"]["mean"]["method"].startswith("iid bootstrap")
    for name, _, make in sf.report_figures(s, table):
        fig = make()
        assert fig is None or isinstance(fig, matplotlib.figure.Figure), name


def test_posterior_contributions_reported(table):
    rng = np.random.default_rng(0)
    cf = table["crack_fraction"].to_numpy()
    post = np.clip(cf[None] * rng.lognormal(0, 0.3, (10, 1)), 0, 1)
    s = summarize(table, posterior=post, n_resamples=300, spatial=False, protocols=False)
    u = s["damage"]["mean"]["extra"]["uncertainty"]
    assert u["n_posterior_samples"] == 10
    assert u["share_sampling"] + u["share_segmentation"] == pytest.approx(1.0)
    assert "posterior" in s["damage"]["mean"]["method"]
    # Every interval says in words whether segmentation error is in it (summary.json, report).
    assert s["damage"]["mean"]["segmentation_error"].startswith("included in part: propagated "
                                                                "from 10 posterior samples")
    assert s["damage"]["mean_iid"]["segmentation_error"].startswith("not included")
    plain = summarize(table, n_resamples=300, spatial=False, protocols=False)
    for key in ("mean", "median"):
        assert plain["damage"][key]["segmentation_error"].startswith("not included: ")


def test_one_particle_and_all_border(table):
    one = table[~table["touches_border"]].head(1).copy()
    one.attrs = dict(table.attrs)
    s = summarize(one, n_resamples=200, spatial=False, protocols=False)
    assert s["damage"]["mean"]["ci"] is None
    assert "one particle" in s["damage"]["mean"]["note"]
    border = table[table["touches_border"]].copy()
    border.attrs = dict(table.attrs)
    with pytest.raises(InputError, match="touch the volume border"):
        summarize(border)


def test_block_size_rule():
    assert block_size_for(10.0, (300, 300, 300))[0] == 20.0
    size, rule = block_size_for(40.0, (100, 100, 100))
    assert n_blocks_for(size, (100, 100, 100)) >= 8 and "SMALL VOLUME" in rule


def test_fraction_intervals_stay_within_zero_and_one(table):
    # Damage in one half of the volume only: the median's interval, widened for
    # covariance across block faces, would reach below 0 without clipping.
    t = table.copy()
    rng = np.random.default_rng(0)
    t["crack_fraction"] = np.where(t["centroid_z_vox"] > 48, 0.9, 0.0) * rng.uniform(0.5, 1, len(t))
    s = summarize(t, n_resamples=300, protocols=False)
    cis = {k: e["ci"] for k, e in s["damage"].items() if isinstance(e, dict) and e.get("ci")}
    assert cis and all(0.0 <= lo <= hi <= 1.0 for lo, hi in cis.values())
    clipped = [k for k, e in s["damage"].items() if isinstance(e, dict) and "ci_clipped_to" in e]
    assert clipped and all(cis[k][0] == 0.0 or cis[k][1] == 1.0 for k in clipped)
    for name, q in s["other_quantities"].items():
        if name.endswith("_fraction"):
            assert all(0.0 <= q[k]["ci"][0] <= q[k]["ci"][1] <= 1.0 for k in ("mean", "median"))
