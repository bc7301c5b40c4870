"""The main job: crackseg run (predict -> particles -> stats -> report) and the demo."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crackseg.errors import InputError
from crackseg.io import write_volume
from crackseg.model_io import default_model_dir
from crackseg.pipeline import analyse_input
from crackseg.synthetic import generate_electrode

pytestmark = pytest.mark.skipif(not (default_model_dir() / "model_card.json").exists(),
                                reason="shipped model not present")


@pytest.fixture(scope="module")
def tiny_model():
    """The shipped default model: small and trained, so particles are meaningful."""
    return default_model_dir()


@pytest.fixture(scope="module")
def phantom_file(tmp_path_factory):
    ph = generate_electrode((48, 64, 64), seed=5)
    p = tmp_path_factory.mktemp("in") / "scan.tif"
    write_volume(p, ph.image, ph.voxel_size_um)
    return p


def _cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "crackseg", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def test_analyse_input_writes_every_output(tmp_path, tiny_model, phantom_file):
    r = analyse_input(phantom_file, tmp_path / "scan", model=tiny_model, progress=False,
                      stats_options={"n_resamples": 200, "border": "include"})
    folder = Path(r["folder"])
    for name in ("segmentation.tif", "particles.tif", "particles.csv", "summary.json",
                 "report.html", "prediction.json"):
        assert (folder / name).exists(), name
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["provenance"]["input"] == str(phantom_file)
    assert summary["provenance"]["model"] == "nmc4-synthetic-v1"
    assert len(summary["provenance"]["model_sha256"]) == 64
    assert summary["provenance"]["voxel_size_um"] == pytest.approx([0.5, 0.5, 0.5])
    table = pd.read_csv(folder / "particles.csv")
    assert summary["n_particles"] <= len(table)


def test_run_cli_continues_past_broken_input(tmp_path, tiny_model, phantom_file):
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff" * 20)
    out = tmp_path / "out"
    r = _cli("run", phantom_file, broken, "--model", tiny_model, "-o", out, "--quiet",
             "--n-resamples", 200, "--border", "include")
    assert r.returncode == 1
    assert "broken.tif" in r.stderr and "Traceback" not in r.stderr
    assert (out / "scan" / "report.html").exists()
    assert not (out / "broken" / "summary.json").exists()
    # A re-run skips the finished input and keeps its results.
    before = (out / "scan" / "summary.json").read_text()
    r2 = _cli("run", phantom_file, "--model", tiny_model, "-o", out, "--quiet",
              "--n-resamples", 200, "--border", "include")
    assert r2.returncode == 0, r2.stderr
    assert (out / "scan" / "summary.json").read_text() == before


def test_run_with_manifest_compares_samples(tmp_path, tiny_model):
    rows = []
    for i, (cycle, logit) in enumerate([(0, -4.5), (0, -4.5), (100, -2.5), (100, -2.5)]):
        ph = generate_electrode((48, 64, 64), seed=20 + i, damage_logit_mean=logit)
        write_volume(tmp_path / f"v{i}.tif", ph.image, ph.voxel_size_um)
        rows.append({"path": f"v{i}.tif", "sample": f"s{i}", "cycle": cycle})
    pd.DataFrame(rows).to_csv(tmp_path / "manifest.csv", index=False)
    out = tmp_path / "out"
    r = _cli("run", tmp_path / "manifest.csv", "--model", tiny_model, "-o", out, "--quiet",
             "--group-by", "cycle", "--n-resamples", 200, "--border", "include")
    assert r.returncode == 0, r.stderr
    comp = json.loads((out / "comparison" / "comparison.json").read_text())
    assert set(map(str, comp["groups"])) == {"0", "100"}
    assert (out / "comparison" / "report.html").exists()


@pytest.mark.slow
def test_demo_runs_with_shipped_model(tmp_path):
    out = tmp_path / "demo"
    r = _cli("demo", "-o", out, "--shape", 64, 64, 64, "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "report:" in r.stdout and "mean damage" in r.stdout
    assert (out / "analysis" / "report.html").exists()
    assert len(list((out / "analysis" / "figures").glob("*.png"))) >= 4
    again = _cli("demo", "-o", out, "--shape", 64, 64, 64, "--quiet")
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_report_renders_in_headless_chromium(tmp_path, tiny_model, phantom_file):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (CI installs it)")
    r = analyse_input(phantom_file, tmp_path / "scan", model=tiny_model, progress=False,
                      stats_options={"n_resamples": 200, "border": "include"})
    page = Path(r["report"]).resolve()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([chromium, *flags, "--enable-logging=stderr", "--dump-dom",
                          "--window-size=1280,2400", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    n_img = page.read_text().count("<img ")
    assert n_img >= 4
    assert f'data-figures-rendered="{n_img}/{n_img}"' in dom.stdout
    assert "Uncaught" not in dom.stderr
    # No figure overflows the window or is stretched; the page does not scroll sideways.
    assert 'data-figures-overflowing="0"' in dom.stdout
    assert 'data-figures-distorted="0"' in dom.stdout
    assert 'data-page-overflow="0"' in dom.stdout
    # The caveats are a visible box near the top; every quantity has a glossary line.
    top = int(dom.stdout.split('data-flags-top="')[1].split('"')[0])
    assert 0 <= top < 300
    assert 'class="flags"' in dom.stdout and "SEGMENTATION ERROR NOT IN THE INTERVALS" in dom.stdout
    glossary = dom.stdout.split('id="glossary"')[1].split("</dl>")[0]
    for term in ("damage (crack_fraction)", "envelope", "sphericity", "interval"):
        assert f"<dt>{term}</dt>" in glossary
    assert "95 % of intervals built this way contain the mean damage" in dom.stdout
    artefacts = os.environ.get("CRACKSEG_ARTEFACTS")
    shot = Path(artefacts) / "report_screenshot.png" if artefacts else tmp_path / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2400",
                    page.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page


def test_unknown_voxel_size_stays_unknown_end_to_end(tmp_path, tiny_model):
    import tifffile

    from crackseg.io import read_volume
    from crackseg.pipeline import measure_folder
    from crackseg.report import write_report

    ph = generate_electrode((48, 64, 64), seed=5)
    src = tmp_path / "novs.tif"
    write_volume(src, ph.image)  # no voxel size
    r = analyse_input(src, tmp_path / "novs", model=tiny_model, progress=False,
                      stats_options={"n_resamples": 200, "border": "include"})
    folder = Path(r["folder"])
    with tifffile.TiffFile(folder / "segmentation.tif") as t:
        assert (t.imagej_metadata or {}).get("unit") is None  # never written as µm
    assert read_volume(folder / "segmentation.tif").voxel_size_um is None
    table = pd.read_csv(folder / "particles.csv")
    assert table["volume_um3"].isna().all() and table["equivalent_diameter_um"].isna().all()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["provenance"]["voxel_size_um"] is None
    assert "voxels" in summary["estimand"] and "µm" not in summary["estimand"]
    page = (folder / "report.html").read_text()
    assert "VOXEL SIZE UNKNOWN" in page
    import re

    length = re.search(r"damage correlation length</td><td>([^<]*)</td>", page)
    assert length is None or length.group(1).endswith(" voxels")
    # A segmentation written by an older version (1 µm per voxel in its metadata) does not
    # turn into micrometres: the prediction record says the voxel size is unknown.
    write_volume(folder / "segmentation.tif", read_volume(folder / "segmentation.tif").data,
                 (1.0, 1.0, 1.0), overwrite=True)
    again = measure_folder(folder, overwrite=True, n_resamples=200, border="include")
    assert again["provenance"]["voxel_size_um"] is None and again["extent_unit"] == "vox"
    write_report(folder)
    # Annotations given later do not replace the summary without --overwrite.
    before = (folder / "summary.json").read_bytes()
    with pytest.raises(InputError, match="--overwrite"):
        measure_folder(folder, annotations=str(tmp_path / "labels.tif"), n_resamples=200)
    assert (folder / "summary.json").read_bytes() == before


@pytest.mark.slow
def test_out_of_core_run_writes_the_same_outputs(tmp_path, tiny_model, phantom_file, monkeypatch):
    """Particles through a work store and statistics block by block: identical outputs."""
    import crackseg.batch
    import crackseg.stats.table_blocks

    opts = {"n_resamples": 200, "border": "include"}
    analyse_input(phantom_file, tmp_path / "a", model=tiny_model, progress=False,
                  stats_options=opts)
    monkeypatch.setattr(crackseg.batch, "CHUNKED_PARTICLES_VOXELS", 0)
    monkeypatch.setattr(crackseg.stats.table_blocks, "DEFAULT_MAX_MEMORY_GB", 2e-5)
    analyse_input(phantom_file, tmp_path / "b", model=tiny_model, progress=False,
                  stats_options=opts)
    a, b = tmp_path / "a", tmp_path / "b"
    assert not (b / ".work").exists()
    for name in ("particles.tif", "particles.csv", "segmentation.tif"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name

    def text(folder, name):
        return (folder / name).read_text().replace(str(folder), "FOLDER")

    assert text(a, "summary.json") == text(b, "summary.json")
    assert text(a, "report.html") == text(b, "report.html")
