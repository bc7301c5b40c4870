"""``crackseg stats`` end to end: outputs, keys of summary.json, bad input."""

import json

import numpy as np
import pandas as pd
import pytest

from crackseg.cli import main
from crackseg.io import write_volume
from crackseg.synthetic import generate_electrode


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats")
    ph = generate_electrode((96, 96, 96), seed=5, imaging=False, voxel_size_um=1.0)
    write_volume(d / "seg.tif", ph.labels, ph.voxel_size_um)
    write_volume(d / "inst.tif", ph.instances, ph.voxel_size_um)
    return d, ph


def test_stats_writes_table_and_summary(volumes, capsys):
    d, ph = volumes
    out = d / "out"
    argv = ["stats", str(d / "seg.tif"), "--instances", str(d / "inst.tif"), "-o", str(out),
            "--n-resamples", "300", "--seed", "3", "--thresholds", "0.02", "0.08", "--quiet"]
    assert main(argv) == 0
    t = pd.read_csv(out / "particles.csv")
    truth = ph.truth.set_index("label").loc[t["label"]]
    np.testing.assert_allclose(t["crack_fraction"], truth["crack_fraction"], rtol=1e-5)
    def strict(token):
        raise ValueError(f"summary.json holds {token}, which is not JSON")

    s = json.loads((out / "summary.json").read_text(), parse_constant=strict)
    assert s["n_particles"] == int((~t["touches_border"]).sum())
    for key in ("mean", "median"):
        e = s["damage"][key]
        assert set(e) >= {"estimate", "ci", "confidence", "method"}
        assert e["confidence"] == 0.95 and "block bootstrap" in e["method"]
    assert "fraction_above_0.08" in s["damage"]
    p = s["provenance"]
    assert set(p) >= {"crackseg_version", "model", "model_sha256", "input", "voxel_size_um", "settings"}
    assert p["voxel_size_um"] == [1.0, 1.0, 1.0] and p["settings"]["seed"] == 3
    assert s["population"]["border"] == "exclude"
    assert "spatial" in s and "representativeness" in s
    # no silent overwrite
    assert main(argv) == 2
    assert "already exists" in capsys.readouterr().err


def test_stats_bad_inputs_write_nothing(volumes, tmp_path, capsys):
    d, _ = volumes
    empty = np.zeros((16, 16, 16), np.uint8)
    write_volume(tmp_path / "empty.tif", empty, (1, 1, 1))
    out = tmp_path / "o1"
    assert main(["stats", str(tmp_path / "empty.tif"), "--instances", str(tmp_path / "empty.tif"),
                 "-o", str(out), "--quiet"]) == 2
    assert "no particles" in capsys.readouterr().err
    assert not (out / "summary.json").exists() and not (out / "particles.csv").exists()
    write_volume(tmp_path / "small.tif", np.zeros((8, 8, 8), np.uint32), (1, 1, 1))
    assert main(["stats", str(d / "seg.tif"), "--instances", str(tmp_path / "small.tif"),
                 "-o", str(tmp_path / "o2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "differs" in err and len(err.strip().splitlines()) == 1
    bad = np.full((8, 8, 8), 9, np.uint8)
    write_volume(tmp_path / "bad.tif", bad, (1, 1, 1))
    assert main(["stats", str(tmp_path / "bad.tif"), "--instances", str(tmp_path / "small.tif"),
                 "-o", str(tmp_path / "o3"), "--quiet"]) == 2
    assert "not in schema" in capsys.readouterr().err


def test_stats_writes_summary_last_when_it_labels_the_particles(volumes, tmp_path, monkeypatch):
    """summary.json marks a finished folder, so it comes after particles.tif and the table."""
    import os

    d, _ = volumes
    renamed = []
    replace = os.replace

    def recording_replace(src, dst):
        renamed.append(os.path.basename(os.fspath(dst)))
        return replace(src, dst)

    monkeypatch.setattr(os, "replace", recording_replace)
    out = tmp_path / "out"
    assert main(["stats", str(d / "seg.tif"), "-o", str(out), "--n-resamples", "200",
                 "--quiet"]) == 0
    written = [n for n in renamed if n in ("particles.tif", "particles.csv", "summary.json")]
    assert written == ["particles.tif", "particles.csv", "summary.json"]


def test_stats_honours_min_volume_when_it_labels_the_particles(volumes, tmp_path):
    from crackseg.io import read_volume

    d, ph = volumes
    sizes = np.bincount(ph.instances.ravel())[1:]
    min_volume = float(np.median(sizes[sizes > 0]))  # µm³ at 1 µm voxels
    counts = {}
    for name, extra in (("all", []), ("big", ["--min-volume", str(min_volume)])):
        out = tmp_path / name
        assert main(["stats", str(d / "seg.tif"), "-o", str(out), "--n-resamples", "200",
                     "--quiet", *extra]) == 0
        inst = np.asarray(read_volume(out / "particles.tif").data)
        labels, voxels = np.unique(inst[inst > 0], return_counts=True)
        counts[name] = (len(pd.read_csv(out / "particles.csv")), len(labels), voxels.min())
    assert counts["big"][0] < counts["all"][0] and counts["big"][1] < counts["all"][1]
    assert counts["big"][2] >= min_volume


def test_stats_with_annotated_sections(volumes, tmp_path, capsys):
    """--annotations: the corrected mean, R and the segmentation share in summary.json."""
    d, ph = volumes
    ann = np.full(ph.labels.shape, 255, np.uint8)
    ann[[20, 48, 76]] = ph.labels[[20, 48, 76]]
    write_volume(tmp_path / "ann.tif", ann, ph.voxel_size_um)
    out = tmp_path / "out"
    base = ["stats", str(d / "seg.tif"), "--instances", str(d / "inst.tif"), "--n-resamples",
            "200", "--quiet"]
    assert main(base + ["-o", str(out), "--annotations", str(tmp_path / "ann.tif")]) == 0
    mean = json.loads((out / "summary.json").read_text())["damage"]["mean"]
    e = mean["annotation_error"]
    assert e["sections"] == [20, 48, 76] and e["ratio"] == 1.0 and e["sufficient"]
    assert e["kind"] == "sections" and e["uncorrected"]["estimate"] == mean["estimate"]
    assert 0 <= e["segmentation_share"] <= 1 and e["ci"][0] <= e["estimate"] <= e["ci"][1]
    assert mean["segmentation_error"].startswith("included in annotation_error")
    write_volume(tmp_path / "two.tif", ann[[20, 48]], ph.voxel_size_um)
    assert main(base + ["-o", str(tmp_path / "o2"), "--annotations", str(tmp_path / "two.tif"),
                        "--annotated-slices", "20,48,76"]) == 2
    err = capsys.readouterr().err
    assert "--annotated-slices" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o2" / "summary.json").exists()
