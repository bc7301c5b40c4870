"""Tests of the particle-size estimate and ``--scale`` resampling in predict."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from crackseg.errors import InputError
from crackseg.inference import predict_volume
from crackseg.model_io import load_model, new_card, save_model
from crackseg.nets import build_network, unet_architecture
from crackseg.scale import particle_diameter_vox, resample, scale_factor
from crackseg.synthetic import generate_electrode


@pytest.mark.parametrize("voxel_um", [0.3, 0.75])
def test_particle_diameter_within_30_percent(voxel_um):
    ph = generate_electrode((24, 128, 128), seed=2, voxel_size_um=voxel_um)
    truth = ph.truth["equivalent_diameter_um"].median() / voxel_um
    est = particle_diameter_vox(ph.image)
    assert abs(est / truth - 1) < 0.3, (est, truth)


def test_particle_diameter_of_featureless_image_is_nan():
    assert np.isnan(particle_diameter_vox(np.zeros((40, 40), np.float32)))


CARD = {"training_domain": {"particle_diameter_vox": [20.0, 45.0]}}


def test_scale_factor_modes():
    assert scale_factor("none", 100.0, CARD) == 1.0
    assert scale_factor("auto", 30.0, CARD) == 1.0                  # inside the range
    f = scale_factor("auto", 90.0, CARD)
    assert f == pytest.approx(np.sqrt(20 * 45) / 90)                # to the middle of the range
    assert scale_factor("auto", 90.0, {}) == 1.0                    # card without a range
    assert scale_factor("auto", float("nan"), CARD) == 1.0
    assert scale_factor(0.5, 10.0, CARD) == 0.5
    assert scale_factor("2", 10.0, CARD) == 2.0
    for bad in ("big", -1.0, 0.0):
        with pytest.raises(InputError):
            scale_factor(bad, 10.0, CARD)


def test_resample_keeps_shape_and_labels():
    lab = np.zeros((30, 31), np.uint8)
    lab[5:25, 5:25] = 1
    small = resample(lab, (10, 11), 0)
    back = resample(small, lab.shape, 0)
    assert back.shape == lab.shape and set(np.unique(back)) <= {0, 1}
    assert np.mean(back == lab) > 0.9


@pytest.fixture(scope="module")
def scaled_model(tmp_path_factory):
    torch.manual_seed(0)
    arch = unet_architecture(2, out_channels=4, channels=(4, 8, 8), strides=(1, 2), dropout=0.0)
    card = new_card("tiny2d", arch, patch_size=(32, 32))
    card["training_domain"] = {"particle_diameter_vox": [8.0, 12.0]}
    return save_model(build_network(arch), card, tmp_path_factory.mktemp("m") / "tiny2d")


def test_predict_resamples_and_maps_back(scaled_model):
    ph = generate_electrode((8, 96, 96), seed=1, voxel_size_um=0.25)
    img = ph.image[4]
    model = load_model(scaled_model)
    auto = predict_volume(model, img, progress=False, device="cpu")
    sc = auto.provenance["settings"]["scale"]
    assert auto.labels.shape == img.shape
    assert sc["factor"] < 0.7 and sc["particle_diameter_vox"] > 20
    assert sc["resampled_shape"][0] < img.shape[0]
    none = predict_volume(model, img, progress=False, device="cpu", scale="none")
    assert none.provenance["settings"]["scale"]["factor"] == 1.0
    fixed = predict_volume(model, img, progress=False, device="cpu", scale=0.5)
    assert fixed.provenance["settings"]["scale"]["resampled_shape"] == [48, 48]
    with pytest.raises(InputError, match="resampl"):
        predict_volume(model, img, progress=False, device="cpu", scale=300.0)


def test_cli_refuses_a_bad_scale(tmp_path, scaled_model):
    import tifffile

    tifffile.imwrite(tmp_path / "a.tif", np.zeros((32, 32), np.uint8))
    r = subprocess.run([sys.executable, "-m", "crackseg", "predict", str(tmp_path / "a.tif"),
                        "-o", str(tmp_path / "out"), "--model", str(scaled_model),
                        "--scale", "huge"], capture_output=True, text=True)
    assert r.returncode != 0
    assert "--scale" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2
