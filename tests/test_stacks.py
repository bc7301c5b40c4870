"""Stacks of 2-D sections, --channel, and one section against a 3-D census."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from crackseg.inference import predict_volume
from crackseg.io import read_volume, write_volume
from crackseg.labels import NMC4
from crackseg.model_io import default_model_dir, new_card, save_model
from crackseg.nets import build_network, unet_architecture
from crackseg.particles import particle_instances
from crackseg.pipeline import write_comparison, write_statistics
from crackseg.report import one_section_text, write_report
from crackseg.sections import section_instances
from crackseg.stats import particle_table, section_particle_means, section_stack_table
from crackseg.stats.table import TABLE_COLUMNS_STACK
from crackseg.synthetic import generate_electrode

MODEL_2D = default_model_dir().parent / "nmc4-synthetic-2d-v1"


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "crackseg", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def _tiny(tmp_path, spatial_dims, name):
    torch.manual_seed(0)
    arch = unet_architecture(spatial_dims, out_channels=4, channels=(4, 8))
    card = new_card(name, arch, patch_size=(32,) * spatial_dims)
    return save_model(build_network(arch), card, tmp_path / name)


@pytest.fixture(scope="module")
def phantom():
    """Exact labels of a small clustered-damage electrode (no imaging: fast)."""
    return generate_electrode((48, 96, 96), seed=1, imaging=False)


# ------------------------------------------------------------------ inference


def test_2d_model_segments_a_stack_section_by_section(tmp_path):
    m2 = _tiny(tmp_path, 2, "tiny2d")
    stack = np.random.default_rng(0).random((3, 40, 48)).astype(np.float32)
    pred = predict_volume(m2, stack, progress=False, uncertainty="tta", n_samples=2)
    assert pred.labels.shape == stack.shape and pred.entropy.shape == stack.shape
    assert pred.provenance["sections"]["n_sections"] == 3
    assert pred.provenance["shape"] == [3, 40, 48]
    for z in range(3):  # each section exactly as if it were given alone
        alone = predict_volume(m2, stack[z], progress=False, uncertainty="tta", n_samples=2)
        np.testing.assert_array_equal(pred.labels[z], alone.labels)
        for k in pred.sample_bits:
            np.testing.assert_array_equal(pred.sample_bits[k][z], alone.sample_bits[k])
    # A 2-D image is still refused by a 3-D model, with the hint.
    m3 = _tiny(tmp_path, 3, "tiny3d")
    with pytest.raises(Exception, match="2-D image .* is 3-D"):
        predict_volume(m3, stack[0], progress=False)


def test_a_multichannel_image_is_not_taken_for_a_stack(tmp_path):
    m2 = _tiny(tmp_path, 2, "tiny2d")
    with pytest.raises(Exception, match="--channel N"):
        predict_volume(m2, np.zeros((40, 48, 3), np.float32), progress=False)


# ------------------------------------------------------------------ table and statistics


def test_stack_table_is_the_section_tables_stacked(phantom):
    seg = phantom.labels[::8]
    inst = section_instances(seg, voxel_size_um=(4.0, 0.5, 0.5))
    per = [set(np.unique(inst[z])) - {0} for z in range(len(seg))]
    assert all(not (a & b) for i, a in enumerate(per) for b in per[i + 1:])  # per section
    t = section_stack_table(seg, inst, voxel_size_um=(4.0, 0.5, 0.5))
    assert list(t.columns) == TABLE_COLUMNS_STACK
    z = 2
    alone = particle_table(seg[z], inst[z], voxel_size_um=(0.5, 0.5))
    rows = t[t["section"] == z].reset_index(drop=True)
    np.testing.assert_allclose(rows["crack_fraction"], alone["crack_fraction"])
    np.testing.assert_array_equal(rows["touches_border"], alone["touches_border"])
    assert (rows["centroid_z_um"] == z * 4.0).all() and (rows["depth_um"] == z * 4.0).all()
    assert t.attrs["shape"] == list(seg.shape) and t.attrs["n_sections"] == len(seg)


def test_stack_statistics_resample_blocks_across_and_within_sections(tmp_path, phantom):
    seg = phantom.labels[::8]
    inst = section_instances(seg)
    table, s = write_statistics(tmp_path, seg, inst, schema=NMC4, voxel_size_um=(4.0, 0.5, 0.5),
                                sections=True, n_resamples=200)
    assert s["section"] is True and s["stack"]["n_sections"] == len(seg)
    assert s["stack"]["spacing"] == 4.0 and sum(s["stack"]["n_particles_per_section"]) == \
        s["n_particles"]
    assert "stack of 6 sections" in s["estimand"]
    assert s["extent"] == [24.0, 48.0, 48.0] and s["extent_unit"] == "um"
    mean = s["damage"]["mean"]
    assert mean["ci"][0] <= mean["estimate"] <= mean["ci"][1]
    assert mean["n_blocks"] > 1
    # "One section" of a stack is one of its own sections.
    row = next(r for r in s["representativeness"]["protocols"]
               if r["protocol"] == "section_particles")
    kept = [m for m in s["stack"]["mean_per_section"] if m is not None]
    assert row["n_draws"] == len(kept)
    assert row["min"] == pytest.approx(min(kept)) and row["max"] == pytest.approx(max(kept))
    csv = pd.read_csv(tmp_path / "particles.csv")
    assert "section" in csv and len(csv) == len(table)


def test_stack_without_voxel_size_says_sections_are_one_pixel_apart(phantom):
    seg = phantom.labels[::8]
    t = section_stack_table(seg)
    from crackseg.stats import summarize

    s = summarize(t, n_resamples=200, protocols=False)
    assert s["extent_unit"] == "px" and s["stack"]["spacing"] == 1.0
    assert any("one pixel apart" in n for n in s["notes"])


def test_section_particle_means_are_what_a_section_run_reports(phantom):
    z = 20
    means = section_particle_means(phantom.labels, phantom.instances)
    t = particle_table(phantom.labels[z], phantom.instances[z])
    kept = t[~t["touches_border"] & (t["area_px"] >= 27)]
    assert means[z] == pytest.approx(kept["crack_fraction"].mean())


# ------------------------------------------------------------------ reports and comparison


@pytest.fixture(scope="module")
def analysed(tmp_path_factory, phantom):
    """A volume, one section and a stack of the same electrode, through the statistics."""
    root = tmp_path_factory.mktemp("analysed")
    vs = phantom.voxel_size_um
    write_statistics(root / "vol", phantom.labels, phantom.instances, schema=NMC4,
                     voxel_size_um=vs, n_resamples=200)
    sec = phantom.labels[24]
    write_statistics(root / "sec", sec, particle_instances(sec, voxel_size_um=vs[1:]),
                     schema=NMC4, voxel_size_um=vs[1:], n_resamples=200)
    stk = phantom.labels[::8]
    write_statistics(root / "stk", stk, section_instances(stk), schema=NMC4,
                     voxel_size_um=(4.0, 0.5, 0.5), n_resamples=200, sections=True)
    return root


def test_volume_report_says_what_one_section_would_say(analysed):
    summary = json.loads((analysed / "vol" / "summary.json").read_text())
    rep = summary["representativeness"]
    row = next(r for r in rep["protocols"] if r["protocol"] == "section_particles")
    text = one_section_text(summary)
    assert text.startswith("What one section would say against this volume's full census")
    assert f"{row['p05']:.3g} to {row['p95']:.3g}" in text
    assert f"census mean {rep['census_mean']:.3g} [{rep['census_ci'][0]:.3g}" in text
    page = write_report(analysed / "vol").read_text()
    assert 'id="one-section"' in page and "One section against the census" in page
    stack_page = write_report(analysed / "stk").read_text()
    assert "SECTIONS, NOT A VOLUME: 6 sections" in stack_page
    assert "against this stack&#x27;s full census" in stack_page
    assert "section spacing, y x" in stack_page


def test_compare_puts_a_section_beside_a_volume_census(analysed, tmp_path):
    pd.DataFrame([{"path": str(analysed / "vol"), "sample": "V"},
                  {"path": str(analysed / "sec"), "sample": "S"},
                  {"path": str(analysed / "stk"), "sample": "K"}]).to_csv(
        tmp_path / "m.csv", index=False)
    r = write_comparison(tmp_path / "m.csv", tmp_path / "cmp", n_resamples=200)
    kinds = {s["sample"]: s["kind"] for s in r["samples"]}
    assert kinds == {"V": "volume", "S": "section", "K": "stack"}
    vol = json.loads((analysed / "vol" / "summary.json").read_text())["representativeness"]
    row = next(x for x in vol["protocols"] if x["protocol"] == "section_particles")
    pairs = {a["section"]: a for a in r["sections_against_census"]}
    assert set(pairs) == {"S", "K"} and all(a["volume"] == "V" for a in pairs.values())
    s = pairs["S"]
    assert s["census_mean"] == pytest.approx(vol["census_mean"])
    assert (s["one_section_p05"], s["one_section_p95"]) == (row["p05"], row["p95"])
    assert s["within_one_section_range"] == (row["p05"] <= s["section_mean"] <= row["p95"])
    assert "one 2-D section" in s["text"] and "3-D census of V" in s["text"]
    assert "on average" in pairs["K"]["text"] and pairs["K"]["within_one_section_range"] is None
    rows = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert dict(zip(rows["group"], rows["kind"])) == {
        "K": "stack of 6 sections", "S": "one 2-D section", "V": "3-D volume"}
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "Sections against a volume&#x27;s census" in page and 'id="sections-vs-census"' in page
    assert any("Sections and volumes are compared" in n for n in r["notes"])


# ------------------------------------------------------------------ command line


def test_predict_channel_option(tmp_path):
    m3 = _tiny(tmp_path, 3, "tiny3d")
    ph = generate_electrode((16, 32, 32), seed=2)
    multi = np.stack([np.zeros_like(ph.image), ph.image])  # (C, Z, Y, X)
    np.save(tmp_path / "multi.npy", multi)
    r = _cli("predict", tmp_path / "multi.npy", "--model", m3, "-o", tmp_path / "out",
             "--quiet", "--no-particles")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "--channel N" in r.stderr and "2 channels" in r.stderr
    r = _cli("predict", tmp_path / "multi.npy", "--model", m3, "-o", tmp_path / "out",
             "--quiet", "--no-particles", "--channel", "1")
    assert r.returncode == 0, r.stderr
    rec = json.loads((tmp_path / "out" / "multi" / "prediction.json").read_text())
    assert rec["settings"]["channel"] == 1 and rec["shape"] == [16, 32, 32]


@pytest.mark.skipif(not (MODEL_2D / "model_card.json").exists(), reason="2-D model not present")
def test_run_on_a_stack_of_sections(tmp_path):
    ph = generate_electrode((24, 96, 96), seed=4)
    src = tmp_path / "stack.tif"
    write_volume(src, ph.image[::8], (4.0, 0.5, 0.5))
    r = _cli("run", src, "--model", MODEL_2D, "-o", tmp_path / "out", "--n-resamples", "200")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "segmenting 3 sections one by one" in r.stderr
    folder = tmp_path / "out" / "stack"
    rec = json.loads((folder / "prediction.json").read_text())
    assert rec["sections"]["n_sections"] == 3 and rec["sections"]["spacing_um"] == 4.0
    inst = read_volume(folder / "particles.tif").data
    labels = [set(np.unique(inst[z])) - {0} for z in range(3)]
    assert not (labels[0] & labels[1]) and not (labels[1] & labels[2])
    table = pd.read_csv(folder / "particles.csv")
    assert list(table.columns[:3]) == ["section", "label", "area_px"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["stack"]["n_sections"] == 3 and summary["provenance"]["sections"]
    page = (folder / "report.html").read_text()
    assert "SECTIONS, NOT A VOLUME" in page and "particle profiles analysed" in page


def test_particles_and_stats_commands_on_a_stack(tmp_path, phantom):
    seg = phantom.labels[::8]
    write_volume(tmp_path / "seg.tif", seg, (4.0, 0.5, 0.5))
    r = _cli("particles", tmp_path / "seg.tif", "--sections", "-o", tmp_path, "--quiet")
    assert r.returncode == 0, r.stderr
    inst = read_volume(tmp_path / "particles.tif").data
    np.testing.assert_array_equal(inst, section_instances(seg, voxel_size_um=(4.0, 0.5, 0.5)))
    r = _cli("stats", tmp_path / "seg.tif", "--sections", "--instances", tmp_path / "particles.tif",
             "-o", tmp_path, "--n-resamples", "200", "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["stack"]["n_sections"] == 6 and "section" in pd.read_csv(tmp_path / "particles.csv")
