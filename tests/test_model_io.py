"""Model directories: round trip, verification, refusal of tampered or pickled weights."""

import json
import pickle

import numpy as np
import pytest
import torch

import crackseg
from crackseg.cli import main
from crackseg.errors import ModelError
from crackseg.model_io import CARD, WEIGHTS, load_model, new_card, read_card, save_model
from crackseg.nets import build_network, unet_architecture


@pytest.fixture()
def tiny_model(tmp_path):
    torch.manual_seed(0)
    arch = unet_architecture(3, out_channels=4, channels=(4, 8), num_res_units=1, dropout=0.1)
    net = build_network(arch).eval()
    card = new_card("tiny", arch, patch_size=(16, 16, 16))
    return net, save_model(net, card, tmp_path / "tiny")


def test_round_trip_gives_identical_outputs(tiny_model):
    net, path = tiny_model
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 16, 16, 16)).astype(np.float32))
    net2, card = crackseg.load_model(path)
    with torch.no_grad():
        assert torch.equal(net(x), net2(x))
    assert card["spatial_dims"] == 3 and card["schema"]["name"] == "nmc4"
    assert len(card["weights_sha256"]) == 64


def test_saving_the_same_weights_twice_gives_the_same_digest(tiny_model, tmp_path):
    net, path = tiny_model
    card = read_card(path)
    digests = {read_card(save_model(net, card, tmp_path / f"again{i}"))["weights_sha256"]
               for i in range(4)}
    assert digests == {card["weights_sha256"]}


def test_tampered_weights_are_refused(tiny_model):
    _, path = tiny_model
    raw = bytearray((path / WEIGHTS).read_bytes())
    raw[-1] ^= 0xFF
    (path / WEIGHTS).write_bytes(bytes(raw))
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(path)


def test_pickled_weights_are_refused(tiny_model, tmp_path):
    net, path = tiny_model
    # a pickle disguised as safetensors, with the card's hash updated to match it
    torch.save(net.state_dict(), path / WEIGHTS)
    card = json.loads((path / CARD).read_text())
    from crackseg.model_io import file_sha256

    card["weights_sha256"] = file_sha256(path / WEIGHTS)
    (path / CARD).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="safetensors"):
        load_model(path)
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(pickle.dumps({"state_dict": {}}))
    with pytest.raises(ModelError, match="pickled"):
        load_model(ckpt)


def test_unknown_format_version_is_refused(tiny_model):
    _, path = tiny_model
    card = json.loads((path / CARD).read_text())
    card["format_version"] = 99
    (path / CARD).write_text(json.dumps(card))
    with pytest.raises(ModelError, match="format version"):
        read_card(path)


def test_info_prints_card(tiny_model, capsys):
    _, path = tiny_model
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "nmc4" in out and "3-D" in out and "channels=[4, 8]" in out
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "tiny"


def test_info_on_tampered_model_is_one_line_error(tiny_model, capsys):
    _, path = tiny_model
    (path / WEIGHTS).write_bytes(b"not weights")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "SHA-256" in err and "\n" not in err


def test_model_readme_quotes_the_validation_damage_ratio():
    from crackseg.model_readme import validation_lines

    rows = [{"setting": "randomized", "n_volumes": 4, "matrix": 0.97, "particle": 0.96,
             "crack": 0.82, "pore": 0.64,
             "damage": {"predicted_vs_true": [[0.02, 0.03]] * 4, "median_factor": 1.63,
                        "mean_ratio": 0.695}},
            {"setting": "matbox", "n_volumes": 4, "matrix": 0.88, "particle": 0.88,
             "crack": 0.49, "pore": 0.42}]
    text = "\n".join(validation_lines({"model_domain": {"command": "x", "rows": rows}}))
    assert "| randomized | 4 | 0.970 | 0.960 | 0.820 | 0.640 | 0.69 (per volume off by a median " \
           "factor 1.63) |" in text
    assert "| matbox | 4 | 0.880 | 0.880 | 0.490 | 0.420 | n/a |" in text
