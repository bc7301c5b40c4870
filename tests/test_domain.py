"""Out-of-distribution flags (crackseg.domain): constructed label maps, phantom truth, predict."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from crackseg.domain import (
    UNKNOWN_LINE,
    contact_mask,
    domain_check,
    flag_lines,
    segmentation_signals,
)

DOMAIN = {"particle_diameter_vox": [15.0, 40.0],
          "class_fraction_of_envelope": {"crack": {"min": 0.0, "max": 0.08, "mean": 0.04},
                                         "pore": {"min": 0.0, "max": 0.02, "mean": 0.01}}}


def _names(d):
    return [f["name"] for f in d["flags"]]


def two_spheres(shape=(40, 40, 64), r=14, gap=24):
    """Two touching spheres (instances 1, 2) along x and their solid label map."""
    zz, yy, xx = np.mgrid[:shape[0], :shape[1], :shape[2]]
    c = np.array(shape) // 2
    x1, x2 = c[2] - gap // 2, c[2] + gap // 2
    inst = np.zeros(shape, np.uint32)
    inst[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - x1) ** 2 < r ** 2] = 1
    inst[((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - x2) ** 2 < r ** 2) & (inst == 0)] = 2
    return (inst > 0).astype(np.uint8), inst, c, (x1, x2)


def test_contact_mask_marks_both_sides_of_a_contact():
    seg, inst, c, _ = two_spheres()
    contact = contact_mask(inst)
    assert contact.any()
    assert set(np.unique(inst[contact])) == {1, 2}
    assert not contact_mask((inst > 0).astype(np.uint32)).any()   # one instance: no contact


def test_cracks_on_necks_flag_and_cracks_inside_do_not():
    seg, inst, c, (x1, x2) = two_spheres()
    neck = seg.copy()
    mid = (x1 + x2) // 2
    neck[c[0] - 4:c[0] + 4, c[1] - 5:c[1] + 5, mid - 2:mid + 2] = 2      # dark neck read as crack
    d = domain_check(neck, inst, training_domain=DOMAIN)
    assert "neck_cracks" in _names(d) and not d["validated"]
    flag = next(f for f in d["flags"] if f["name"] == "neck_cracks")
    assert flag["value"] > 0.7 and flag["limit"] == pytest.approx(0.25)
    assert "neck" in flag["message"]
    inside = seg.copy()
    inside[c[0] - 1:c[0] + 1, c[1] - 6:c[1] + 6, x1 - 8:x1 + 2] = 2    # a crack through one core
    d = domain_check(inside, inst, training_domain=DOMAIN)
    assert d["signals"]["neck_crack_share"] == 0.0
    assert "neck_cracks" not in _names(d)


def test_cracks_in_the_matrix_flag():
    seg, inst, c, (x1, _) = two_spheres()
    seg[c[0] - 1:c[0] + 1, :4, :] = 2        # "cracks" in the matrix, away from particles
    d = domain_check(seg, inst, training_domain=DOMAIN)
    assert "cracks_in_matrix" in _names(d)
    assert d["signals"]["crack_matrix_face_share"] > 0.9


def test_class_fractions_against_the_training_maximum():
    seg, inst, c, (x1, x2) = two_spheres()
    dom = {"particle_diameter_vox": [15.0, 40.0],
           "class_fraction_of_envelope": {"crack": {"max": 0.03}, "pore": {"max": 0.02}}}
    some = seg.copy()
    some[c[0], c[1] - 6:c[1] + 6, x1 - 8:x1 + 2] = 2     # a thin crack: ~0.005 of the envelopes
    d = domain_check(some, inst, training_domain=dom)
    assert d["validated"] and d["status"] == "validated" and d["flags"] == []
    many = seg.copy()
    many[c[0] - 5:c[0] + 5, c[1] - 6:c[1] + 6, x1 - 8:x1 + 6] = 2     # ~0.08
    many[c[0] - 5:c[0] + 5, c[1] - 6:c[1] + 6, x2 - 2:x2 + 8] = 3     # ~0.05
    d = domain_check(many, inst, training_domain=dom)
    assert {"crack_fraction", "pore_fraction"} <= set(_names(d))
    f = next(f for f in d["flags"] if f["name"] == "crack_fraction")
    assert f["value"] > f["limit"] == pytest.approx(0.06)       # twice the training maximum
    assert "over-called" in f["message"]


def test_particle_fraction_near_0_or_1_flags():
    full = np.ones((20, 30, 30), np.uint8)
    d = domain_check(full, full.astype(np.uint32), training_domain=DOMAIN)
    assert "particle_fraction" in _names(d)
    empty = np.zeros((20, 30, 30), np.uint8)
    d = domain_check(empty, empty.astype(np.uint32), training_domain=DOMAIN)
    assert "particle_fraction" in _names(d)


@pytest.mark.parametrize("scale, flagged, noted", [
    ({"factor": 1.0, "particle_diameter_vox": 25.0}, [], False),
    ({"factor": 0.7, "particle_diameter_vox": 38.0}, [], True),        # resampled, near
    ({"factor": 0.13, "particle_diameter_vox": 300.0}, ["resampled_far"], False),
    ({"factor": 1.0, "particle_diameter_vox": 300.0}, ["particle_size"], False),   # --scale none
    ({"factor": 1.0, "particle_diameter_vox": 5.0}, ["particle_size"], False),
])
def test_particle_size_and_resampling(scale, flagged, noted):
    seg, inst, *_ = two_spheres()
    d = domain_check(seg, inst, training_domain=DOMAIN, scale=scale)
    size = [n for n in _names(d) if n in ("resampled_far", "particle_size")]
    assert size == flagged
    assert bool(d["notes"]) == noted
    if flagged == ["resampled_far"]:
        msg = d["flags"][0]["message"]
        assert "~300 voxels" in msg and "15-40" in msg and "0.13" in msg


def test_unknown_training_domain_is_said_not_flagged():
    seg, inst, *_ = two_spheres()
    d = domain_check(seg, inst, training_domain=None,
                     scale={"factor": 1.0, "particle_diameter_vox": 300.0})
    assert d["status"] == "unknown" and not d["validated"] and not d["training_domain_known"]
    assert d["flags"] == [] and "unknown" in d["message"]
    assert flag_lines(d) == [UNKNOWN_LINE]
    json.dumps(d)   # JSON-ready


def test_slabs_give_the_same_signals(monkeypatch):
    import crackseg.domain as dm

    seg, inst, c, (x1, x2) = two_spheres()
    seg[c[0] - 4:c[0] + 4, c[1] - 5:c[1] + 5, (x1 + x2) // 2 - 2:(x1 + x2) // 2 + 2] = 2
    whole = segmentation_signals(seg, inst)
    monkeypatch.setattr(dm, "SLAB_VOXELS", seg.shape[1] * seg.shape[2] * 3)
    assert segmentation_signals(seg, inst) == whole
    # slabs counted in two worker processes
    assert segmentation_signals(seg, inst, workers=2) == whole


@pytest.mark.parametrize("planar", [False, True])
def test_near_mask_equals_a_thresholded_distance_map(planar):
    import edt

    from crackseg.domain import near_mask

    mask = np.random.default_rng(3).random((12, 30, 28)) > 0.995
    core = (slice(3, 9),)
    free = np.ascontiguousarray(~mask, dtype=np.uint8)
    dist = (np.stack([edt.edt(f, black_border=False) for f in free]) if planar
            else edt.edt(free, black_border=False))
    for radius in (1, 2, 3):
        assert (near_mask(mask, core, radius, planar=planar) == (dist[core] <= radius)).all()


def test_stack_of_sections_has_no_contacts_across_sections():
    inst = np.zeros((4, 20, 20), np.uint32)
    inst[:, 5:15, 5:15] = np.arange(1, 5)[:, None, None]   # one profile per section
    assert not contact_mask(inst, planar=True).any()
    assert contact_mask(inst).any()


@pytest.mark.parametrize("seed", [1000, 1001])
def test_quiet_on_phantom_truth(seed):
    """Held-out phantoms of the training domain (their true labels) raise no flag."""
    from crackseg.particles import particle_instances
    from crackseg.scale import particle_diameter_vox
    from crackseg.synthetic import generate_electrode

    ph = generate_electrode((48, 80, 80), seed=seed)
    inst = particle_instances(ph.labels, voxel_size_um=ph.voxel_size_um)
    d = domain_check(ph.labels, inst, training_domain=DOMAIN,
                     scale={"factor": 1.0, "particle_diameter_vox": particle_diameter_vox(ph.image)})
    assert d["flags"] == [], d["flags"]
    assert d["validated"]


# ------------------------------------------------------------------ through predict


@pytest.fixture(scope="module")
def tiny_2d_model(tmp_path_factory):
    """An untrained 2-D net whose card says it was trained on particles ~24 pixels across."""
    import torch

    from crackseg.model_io import new_card, save_model
    from crackseg.nets import build_network, unet_architecture

    torch.manual_seed(0)
    arch = unet_architecture(2, out_channels=4, channels=(4, 8, 8), strides=(1, 2), dropout=0.0)
    card = new_card("tiny2d", arch, patch_size=(32, 32))
    card["training_domain"] = {**DOMAIN, "particle_diameter_vox": [18.0, 32.0]}
    return save_model(build_network(arch), card, tmp_path_factory.mktemp("m") / "tiny2d")


def test_phantom_rescaled_3x_is_flagged(tiny_2d_model):
    from crackseg.inference import predict_volume
    from crackseg.model_io import load_model
    from crackseg.particles import particle_instances
    from crackseg.synthetic import generate_electrode

    model = load_model(tiny_2d_model)
    img = generate_electrode((8, 128, 128), seed=3).image[4].astype(np.float32)
    names = {}
    for zoom in (1, 3):
        im = ndi.zoom(img, zoom, order=1) if zoom > 1 else img
        pred = predict_volume(model, im, progress=False, device="cpu")
        labels = np.asarray(pred.labels)
        d = domain_check(labels, particle_instances(labels), training_domain=model[1]["training_domain"],
                         scale=pred.provenance["settings"]["scale"])
        names[zoom] = [n for n in _names(d) if n in ("resampled_far", "particle_size")]
    assert names[1] == []                      # the untrained net's labels aside, the size fits
    assert names[3] == ["resampled_far"]


def test_run_records_flags_in_summary_report_and_console(tmp_path):
    """`crackseg run` on an input 3x the model's particle size: summary, report, stderr."""
    from crackseg.io import write_volume
    from crackseg.model_io import default_model_dir
    from crackseg.synthetic import generate_electrode

    if not (default_model_dir() / "model_card.json").exists():
        pytest.skip("shipped model not present")
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    card = json.loads((model / "model_card.json").read_text())
    card["training_domain"] = {"particle_diameter_vox": [3.5, 4.5]}   # particles here: ~14
    card.setdefault("validation", {})["model_domain"] = {"command": "python model_domain.py", "rows": [
        {"setting": "randomized", "damage": {"predicted_vs_true": [[0.02, 0.04]] * 4,
                                             "median_factor": 2.0, "mean_ratio": 0.5}}]}
    (model / "model_card.json").write_text(json.dumps(card))
    ph = generate_electrode((32, 64, 64), seed=5)
    write_volume(tmp_path / "scan.tif", ph.image, ph.voxel_size_um)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "crackseg", "run", str(tmp_path / "scan.tif"),
                        "--model", str(model), "-o", str(out), "--quiet", "--n-resamples", "200",
                        "--border", "include"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "scan" / "summary.json").read_text())
    dom = summary["domain"]
    assert dom["validated"] is False and dom["status"] == "not validated"
    flag = next(f for f in dom["flags"] if f["name"] == "resampled_far")
    assert set(flag) == {"name", "value", "limit", "message"} and flag["value"] < 0.5
    assert "MODEL NOT VALIDATED FOR THIS INPUT: " in r.stderr and "resampled by" in r.stderr
    words = summary["damage"]["mean"]["segmentation_error"]
    assert words.startswith("not included")
    assert words.endswith("this model reported 0.5x the true mean damage inside its training "
                          "ranges (per volume off by a median factor 2); this interval does not "
                          "include that error")
    assert dom["model_validation"]["settings"]["randomized"]["n_volumes"] == 4
    page = (out / "scan" / "report.html").read_text()
    box = page.split('id="flags"')[1].split("</div>")[0]
    assert "MODEL NOT VALIDATED FOR THIS INPUT: resampled far" in box
    assert "segmentation error is not included: " in page
    assert "On its validation phantoms this model reported 0.5x" in page


def test_entropy_flags_when_the_model_is_unsure():
    seg, inst, *_ = two_spheres()
    sure = np.full(seg.shape, 0.05, np.float16)
    unsure = np.full(seg.shape, 0.5 * np.log(4), np.float16)
    assert "entropy" not in _names(domain_check(seg, inst, training_domain=DOMAIN, entropy=sure))
    d = domain_check(seg, inst, training_domain=DOMAIN, entropy=unsure)
    assert "entropy" in _names(d)
    assert d["signals"]["mean_normalized_entropy"] == pytest.approx(0.5, abs=0.01)


def test_validation_error_is_stated_only_where_annotations_did_not_measure_it():
    from crackseg.domain import validation_damage
    from crackseg.pipeline import state_validation_error

    rows = [{"setting": "matbox", "damage": {"predicted_vs_true": [[0.05, 0.1]] * 2,
                                             "median_factor": 2.0, "mean_ratio": 0.5}}]
    found = validation_damage({"validation": {"model_domain": {"rows": rows}}})
    assert found["message"].startswith("on its validation phantoms this model reported 0.5x the "
                                       "true mean damage outside its training ranges")
    assert validation_damage({"validation": {"model_domain": {"rows": [{"setting": "x"}]}}}) is None
    plain = {"damage": {"mean": {"segmentation_error": "not included"}},
             "domain": {"model_validation": found}}
    state_validation_error(plain)
    assert plain["damage"]["mean"]["segmentation_error"] == "not included; " + found["message"]
    annotated = {"damage": {"mean": {"segmentation_error": "included: measured",
                                     "annotation_error": {"sufficient": True}}},
                 "domain": {"model_validation": found}}
    state_validation_error(annotated)
    assert annotated["damage"]["mean"]["segmentation_error"] == "included: measured"
