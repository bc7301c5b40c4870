"""2-D sections (SEM, FIB, one tomogram slice): table, statistics, report, comparison."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crackseg.model_io import default_model_dir
from crackseg.particles import particle_instances
from crackseg.pipeline import write_comparison
from crackseg.stats import particle_table, summarize
from crackseg.stats.table import TABLE_COLUMNS_2D

DATA = Path(__file__).resolve().parents[1] / "data"
MODEL_2D = default_model_dir().parent / "nmc4-synthetic-2d-v1"


def _discs(shape=(120, 160), seed=0, crack_rows=2):
    """A section of non-touching discs of radius 9, each crossed by a crack of ``crack_rows``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    seg = np.zeros(shape, np.uint8)
    for cy in range(15, shape[0] - 10, 24):
        for cx in range(15, shape[1] - 10, 24):
            seg[(yy - cy) ** 2 + (xx - cx) ** 2 <= 81] = 1
            if rng.random() < 0.5:
                seg[cy:cy + crack_rows, cx - 6:cx + 6] = 2
    return seg


def test_section_table_has_areas_and_circularity():
    seg = _discs()
    seg[:12, :12] = 1  # a particle cut by the corner of the field of view
    inst = particle_instances(seg)
    t = particle_table(seg, inst, voxel_size_um=(0.5, 0.5))
    assert list(t.columns) == TABLE_COLUMNS_2D
    inner = t[~t["touches_border"]]
    assert np.allclose(inner["area_um2"], inner["area_px"] * 0.25)
    assert np.allclose(inner["equivalent_diameter_um"], np.sqrt(4 * inner["area_um2"] / np.pi))
    assert inner["circularity"].between(0.75, 1.1).all()
    # Shape measures of truncated particles cannot be measured: empty, never > 1.
    edge = t[t["touches_border"]]
    assert len(edge) and edge["circularity"].isna().all() and edge["perimeter_um"].isna().all()
    assert (t["crack_fraction"] > 0).any() and (t["crack_fraction"] == 0).any()


def test_truncated_3d_particles_have_no_sphericity():
    zz, yy, xx = np.indices((30, 30, 30))
    seg = ((zz - 15) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2 <= 64).astype(np.uint8)
    seg[:6, :6, :6] = 1
    t = particle_table(seg, particle_instances(seg))
    assert t.loc[t["touches_border"], "sphericity"].isna().all()
    assert t.loc[~t["touches_border"], "sphericity"].between(0.8, 1.1).all()


def test_section_without_voxel_size_stays_in_pixels():
    seg = _discs(seed=1)
    t = particle_table(seg, particle_instances(seg))
    assert t["area_um2"].isna().all() and t["centroid_y_um"].isna().all()
    s = summarize(t, n_resamples=200)
    assert s["section"] is True and s["extent_unit"] == "px"
    assert "pixels" in s["estimand"] and "µm" not in s["estimand"]
    assert any("VOXEL SIZE UNKNOWN" in n for n in s["notes"])
    assert s["damage"]["mean"]["ci"][0] is not None and s["damage"]["mean"]["n_blocks"] > 1
    assert "equivalent_diameter_px" in s["other_quantities"]


def test_compare_accepts_sections_and_numeric_folder_names(tmp_path):
    rows = []
    for name, crack_rows in (("001", 1), ("100", 3), ("101", 3), ("002", 1)):
        seg = _discs(seed=int(name), crack_rows=crack_rows)
        folder = tmp_path / name
        folder.mkdir()
        particle_table(seg, particle_instances(seg)).to_csv(folder / "particles.csv", index=False)
        rows.append({"path": name, "sample": name, "cycle": 0 if crack_rows == 1 else 100})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    result = write_comparison(tmp_path / "manifest.csv", tmp_path / "cmp", group_by="cycle",
                              n_resamples=200)
    assert set(map(str, result["groups"])) == {"0", "100"}
    by_sample = write_comparison(tmp_path / "manifest.csv", tmp_path / "cmp2",
                                 group_by="sample", n_resamples=200)
    assert "001" in map(str, by_sample["groups"])  # a name, not the number 1


@pytest.mark.skipif(not (MODEL_2D / "model_card.json").exists(), reason="2-D model not present")
def test_run_on_a_real_slice_writes_a_report(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "crackseg", "run", DATA / "segmentpy" / "100.tif",
                        "--model", MODEL_2D, "-o", out, "--n-resamples", "200",
                        "--border", "include"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.count("voxel size unknown") == 1  # said once
    folder = out / "100"
    table = pd.read_csv(folder / "particles.csv")
    assert "area_px" in table and "volume_vox" not in table
    assert table["area_um2"].isna().all()  # no invented unit
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["section"] is True and summary["provenance"]["voxel_size_um"] is None
    page = (folder / "report.html").read_text()
    assert "VOXEL SIZE UNKNOWN" in page and "ONE SECTION, NOT A VOLUME" in page
    assert 'id="glossary"' in page and "circularity" in page
    assert (folder / "figures" / "particle_damage.png").exists()


NMC811 = Path(__file__).resolve().parents[2] / "shared" / "data" / "nmc811_holotomo_slice_left.tif"


@pytest.mark.skipif(not NMC811.exists(),
                    reason="GPL NMC811 slice not beside the project (../shared/data); not copied")
@pytest.mark.skipif(not (MODEL_2D / "model_card.json").exists(), reason="2-D model not present")
def test_run_on_the_nmc811_holotomography_slice(tmp_path):
    r = subprocess.run([sys.executable, "-m", "crackseg", "run", NMC811, "--model", MODEL_2D,
                        "-o", tmp_path, "--n-resamples", "200", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    summary = json.loads((tmp_path / NMC811.stem / "summary.json").read_text())
    assert summary["n_particles"] > 10 and summary["extent_unit"] == "px"
