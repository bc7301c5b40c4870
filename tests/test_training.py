"""Training path: LightningCLI recipe, export, evaluation, fine-tuning, bad input, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crackseg.cli import main
from crackseg.commands.train import run_lightning_cli
from crackseg.data import synthetic_pairs
from crackseg.evaluation import evaluate_model
from crackseg.export import read_checkpoint
from crackseg.io import write_volume
from crackseg.model_io import WEIGHTS, load_model, read_card
from crackseg.nets import build_network

REPO = Path(__file__).resolve().parents[1]
SEGMENTPY3 = REPO / "training" / "schemas" / "segmentpy3.yaml"
VS = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Two sparse training phantoms and one fully labelled validation phantom, as files."""
    d = tmp_path_factory.mktemp("data")
    vols = synthetic_pairs(3, (32, 32, 32), seed=7, sparse_every=8)
    for i, (img, sparse, full) in enumerate(vols):
        write_volume(d / f"img{i}.tif", img, VS)
        write_volume(d / f"sparse{i}.tif", sparse, VS)
        write_volume(d / f"full{i}.tif", full, VS)
    (d / "manifest.yaml").write_text(
        "train:\n  - {image: img0.tif, labels: sparse0.tif}\n  - {image: img1.tif, labels: sparse1.tif}\n"
        "val:\n  - {image: img2.tif, labels: full2.tif}\n")
    return d, vols


def _fit_args(tmp, data_args, steps=4, extra=()):
    return ["fit", "--seed_everything", "0", "--trainer.max_steps", str(steps),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.log_every_n_steps", "1",
            "--trainer.logger.save_dir", str(tmp / "runs"), "--trainer.logger.name", "tiny",
            "--model.channels", "[4, 8]", "--model.num_res_units", "1", "--model.dropout", "0.1",
            "--data.samples_per_epoch", "4", "--data.val_patches", "2", *data_args, *extra]


@pytest.fixture(scope="module")
def run_dir(pairs, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    d, _ = pairs
    rc = run_lightning_cli(_fit_args(tmp, ["--data.manifest", str(d / "manifest.yaml"),
                                           "--data.patch_size", "[16, 16, 16]"]))
    assert rc == 0
    return tmp / "runs" / "tiny" / "version_0"


def test_fit_writes_logs_curves_and_checkpoint(run_dir):
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    assert (run_dir / "curves.png").stat().st_size > 1000
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("matrix", "particle", "crack", "pore"):
        assert f"val_dice_{name}" in header
    _, info = read_checkpoint(run_dir)
    assert info["normalization"]["method"] == "percentile"
    assert info["normalization"]["reference"]["n_images"] == 2
    assert info["patch_size"] == [16, 16, 16]


def test_export_load_round_trip_same_outputs(run_dir, tmp_path, pairs):
    out = tmp_path / "model"
    assert main(["export", str(run_dir), "-o", str(out), "--reproduce", "crackseg train fit"]) == 0
    net, card = load_model(out)
    state, info = read_checkpoint(run_dir)
    ref = build_network(info["architecture"])
    ref.load_state_dict(state)
    ref.eval()
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))
    assert card["spatial_dims"] == 3 and card["training"]["reproduce"] == "crackseg train fit"
    assert "weights.safetensors" in os.listdir(out) and (out / "README.md").exists()
    # no silent overwrite
    assert main(["export", str(run_dir), "-o", str(out)]) == 2
    metrics = evaluate_model(out, [(img, full) for img, _, full in pairs[1][2:]])
    assert set(metrics["dice"]) == {"matrix", "particle", "crack", "pore"}
    assert all(v is None or 0 <= v <= 1 for v in metrics["dice"].values())
    assert metrics["voxels"] == 32 ** 3


def test_resume_from_checkpoint(run_dir, pairs, tmp_path):
    d, _ = pairs
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    rc = run_lightning_cli(_fit_args(tmp_path, ["--data.manifest", str(d / "manifest.yaml"),
                                                "--data.patch_size", "[16, 16, 16]"], steps=6,
                                     extra=["--ckpt_path", str(ckpt)]))
    assert rc == 0
    step = torch.load(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"]
    assert step == 6


def test_synthetic_recipe_2d_and_export_with_evaluation(tmp_path):
    rc = run_lightning_cli(_fit_args(tmp_path, [
        "--data.synthetic", json.dumps({"n_volumes": 1, "n_val": 1, "shape": [24, 32, 32],
                                        "seed": 0, "sparse_every": 8}),
        "--data.spatial_dims", "2", "--data.patch_size", "[16, 16]"], steps=2))
    assert rc == 0
    run = tmp_path / "runs" / "tiny" / "version_0"
    out = tmp_path / "m2d"
    assert main(["export", str(run), "-o", str(out), "--eval-phantoms", "1",
                 "--eval-shape", "8", "32", "32", "--quiet"]) == 0
    card = read_card(out)
    assert card["spatial_dims"] == 2
    assert card["training"]["data"]["source"] == "synthetic"
    assert card["metrics"]["n_volumes"] == 1 and "seeds 1000" in card["metrics"]["description"]
    assert "synthetic data" in (out / "README.md").read_text()


@pytest.fixture(scope="module")
def parent(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("parent") / "parent"
    assert main(["export", str(run_dir), "-o", str(out)]) == 0
    return out


def test_finetune_with_new_schema(parent, pairs, tmp_path):
    d, vols = pairs
    labels3 = vols[0][1].copy()
    labels3[labels3 == 3] = 2  # three classes: particle/binder/pore stand-ins
    write_volume(tmp_path / "l3.tif", labels3, VS)
    out = tmp_path / "ft"
    rc = main(["finetune", "--model", str(parent), "--image", str(d / "img0.tif"),
               "--labels", str(tmp_path / "l3.tif"), "--schema", str(SEGMENTPY3), "-o", str(out),
               "--max-steps", "2", "--freeze-encoder", "--run-dir", str(tmp_path / "run"),
               "--quiet"])
    assert rc == 0
    net, card = load_model(out)
    pnet, pcard = load_model(parent)
    assert card["schema"]["name"] == "segmentpy3" and card["architecture"]["args"]["out_channels"] == 3
    assert card["parent"]["weights_sha256"] == pcard["weights_sha256"]
    assert card["parent"]["output_layer_reinitialised"] is True
    new, old = dict(net.named_parameters()), dict(pnet.named_parameters())
    # frozen encoder kept exactly; the first down-sampling block is part of it
    assert torch.equal(new["model.0.conv.unit0.conv.weight"], old["model.0.conv.unit0.conv.weight"])
    assert new["model.2.0.conv.bias"].shape == (3,)


def test_transfer_keeps_all_but_output_layer(parent):
    from crackseg.lightning_module import SegmentationModule

    m = SegmentationModule(schema=str(SEGMENTPY3), channels=[4, 8], num_res_units=1, dropout=0.1,
                           init_from=str(parent), reinit_output=True)
    pnet, _ = load_model(parent)
    old = pnet.state_dict()
    for k, v in m.net.state_dict().items():
        if k.startswith("model.2."):
            continue
        assert torch.equal(v, old[k]), k


def _one_line_error(capsys, argv, match):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert match in err and "\n" not in err and "Traceback" not in err


def test_finetune_bad_input_fails_before_training(parent, pairs, tmp_path, capsys):
    d, vols = pairs
    base = ["finetune", "--model", str(parent), "--image", str(d / "img0.tif"), "-o",
            str(tmp_path / "out"), "--max-steps", "1", "--run-dir", str(tmp_path / "run"), "--quiet"]
    write_volume(tmp_path / "short.tif", vols[0][1][:-2], VS)
    _one_line_error(capsys, [*base, "--labels", str(tmp_path / "short.tif")], "shape")
    bad = vols[0][1].copy()
    bad[0, 0, 0] = 9
    write_volume(tmp_path / "bad.tif", bad, VS)
    _one_line_error(capsys, [*base, "--labels", str(tmp_path / "bad.tif")], "not in schema")
    write_volume(tmp_path / "none.tif", np.full_like(bad, 255), VS)
    _one_line_error(capsys, [*base, "--labels", str(tmp_path / "none.tif")], "no annotated voxels")
    _one_line_error(capsys, [*base, "--labels", str(tmp_path / "missing.tif")], "no such file")
    img2d = tmp_path / "slice.tif"
    write_volume(img2d, vols[0][0][5], VS[1:])
    write_volume(tmp_path / "slice_l.tif", vols[0][1][0], VS[1:])
    _one_line_error(capsys, ["finetune", "--model", str(parent), "--image", str(img2d), "--labels",
                             str(tmp_path / "slice_l.tif"), "-o", str(tmp_path / "out"), "--quiet"],
                    "3-D model")
    (parent.parent / "broken").mkdir()
    _one_line_error(capsys, [*base[:2], str(parent.parent / "broken"), *base[3:], "--labels",
                             str(d / "sparse0.tif")], "model_card.json")
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_manifest_with_missing_file_fails_in_train(tmp_path, capsys):
    (tmp_path / "m.yaml").write_text("train:\n  - {image: a.tif, labels: b.tif}\n")
    rc = main(["train", *_fit_args(tmp_path, ["--data.manifest", str(tmp_path / "m.yaml"),
                                              "--data.patch_size", "[16, 16, 16]"])])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "does not exist" in err[-1]


@pytest.mark.slow
def test_ddp_two_processes_on_cpu(pairs, tmp_path):
    d, _ = pairs
    args = _fit_args(tmp_path, ["--data.manifest", str(d / "manifest.yaml"),
                                "--data.patch_size", "[16, 16, 16]"], steps=2,
                     extra=["--trainer.strategy", "ddp", "--trainer.devices", "2"])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "crackseg", "train", *args], env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    ck = torch.load(tmp_path / "runs" / "tiny" / "version_0" / "checkpoints" / "last.ckpt",
                    weights_only=True)
    assert ck["global_step"] == 2
    assert main(["export", str(tmp_path / "runs" / "tiny" / "version_0"), "-o",
                 str(tmp_path / "ddp_model")]) == 0
    assert (tmp_path / "ddp_model" / WEIGHTS).exists()


def test_logit_offsets_shift_outputs_and_never_lower_mean_dice(parent, pairs):
    from crackseg.logit_offsets import apply_logit_offsets, fit_logit_offsets

    net, card = load_model(parent)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        before = net(x)
        apply_logit_offsets(net, [0.0, 0.5, -1.0, 2.0])
        after = net(x)
    diff = (after - before).mean(dim=(0, 2, 3, 4))
    assert torch.allclose(diff, torch.tensor([0.0, 0.5, -1.0, 2.0]), atol=1e-5)
    img, _, full = pairs[1][2]
    cal = fit_logit_offsets((net, card), [(img, full)], grid=[-1.0, 0.0, 1.0], passes=1)
    assert set(cal["offsets"]) == {"matrix", "particle", "crack", "pore"}
    assert cal["offsets"]["matrix"] == 0.0
    mean = [np.nanmean([v if v is not None else np.nan for v in cal[k].values()])
            for k in ("dice_before", "dice_after")]
    assert mean[1] >= mean[0] - 1e-9


def test_randomized_recipe_records_training_domain_and_validation(tmp_path):
    rc = run_lightning_cli(_fit_args(tmp_path, [
        "--data.randomized", json.dumps({"n_volumes": 1, "n_val": 1, "shape": [16, 48, 48],
                                         "seed": 0, "voxel_size_um": [0.4, 0.6]}),
        "--data.spatial_dims", "2", "--data.slice_axes", "[0]", "--data.patch_size", "[32, 32]",
        "--model.norm", "instance", "--model.strides", "[1]", "--model.band_weight", "3.0"],
        steps=2))
    assert rc == 0
    run = tmp_path / "runs" / "tiny" / "version_0"
    bench = tmp_path / "zero_shot_real.json"
    bench.write_text(json.dumps({"benchmark": "zero_shot_real", "command": "python x.py",
                                 "machine": {"cpu": "x"}, "segmentpy": {"A": {
                                     "mean_dice_particle": 0.9, "slices": [{}]}}}))
    out = tmp_path / "mr"
    assert main(["export", str(run), "-o", str(out), "--validation", str(bench), "--quiet",
                 "--crack-solid-contact", "0.5"]) == 0
    card = read_card(out)
    assert card["postprocess"] == {"min_crack_solid_contact": 0.5}
    assert "## After prediction" in (out / "README.md").read_text()
    assert main(["export", str(run), "-o", str(tmp_path / "bad2"), "--crack-solid-contact",
                 "2"]) != 0 and not (tmp_path / "bad2").exists()
    lo, hi = card["training_domain"]["particle_diameter_vox"]
    assert 0 < lo <= hi
    assert card["training"]["data"]["labels"] == "dense (every voxel)"
    assert "machine" not in card["validation"]["zero_shot_real"]
    readme = (out / "README.md").read_text()
    assert "rendered afresh under random imaging" in readme and "group A: particle Dice 0.900" in readme
    assert main(["export", str(run), "-o", str(tmp_path / "bad"), "--validation",
                 str(tmp_path / "missing.json")]) != 0


def test_evaluation_runs_the_predict_path(parent, pairs):
    from crackseg.inference import predict_volume
    from crackseg.metrics import dice_per_class

    _, vols = pairs
    img, _, full = vols[2]
    model = load_model(parent)
    got = evaluate_model(model, [(img, full)])["dice"]
    want = dice_per_class(np.asarray(predict_volume(model, img, progress=False,
                                                    device="cpu").labels), full)
    for k, v in want.items():
        assert got[k] == (round(v, 4) if v == v else None)


@pytest.mark.parametrize("spec, words", [
    ({"surface_noise_vox": 2.0}, "randomized.surface_noise_vox is 2.0"),
    ({"roughness": [0.3, 0.05]}, "randomized.roughness"),
    ({"roughnes": [0.05, 0.3]}, "unknown key roughnes"),
])
def test_malformed_randomized_recipe_is_a_one_line_error(tmp_path, capsys, spec, words):
    rc = main(["train", *_fit_args(tmp_path, ["--data.randomized", json.dumps(spec)], steps=1)])
    err = capsys.readouterr().err.strip()
    assert rc != 0
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_export_updates_a_model_directory_card_keeping_its_weights(run_dir, tmp_path):
    model = tmp_path / "m"
    assert main(["export", str(run_dir), "-o", str(model), "--quiet"]) == 0
    before = read_card(model)
    bench = tmp_path / "model_domain_nmc4-m.json"
    rows = [{"setting": "randomized", "n_volumes": 2, "matrix": 0.9, "particle": 0.9,
             "crack": 0.5, "pore": 0.4, "damage": {"predicted_vs_true": [[0.01, 0.02]] * 2,
                                                    "median_factor": 2.0, "mean_ratio": 0.5}}]
    bench.write_text(json.dumps({"benchmark": "model_domain_nmc4-m", "command": "python md.py",
                                 "machine": {}, "rows": rows}))
    weights = (model / WEIGHTS).read_bytes()
    assert main(["export", str(model), "-o", str(model), "--validation", str(bench)]) != 0
    assert main(["export", str(model), "-o", str(model), "--overwrite", "--validation",
                 str(bench), "--crack-solid-contact", "0.6"]) == 0
    card = read_card(model)
    assert (model / WEIGHTS).read_bytes() == weights
    assert card["weights_sha256"] == before["weights_sha256"]
    assert card["validation"]["model_domain"]["rows"] == rows
    assert card["postprocess"] == {"min_crack_solid_contact": 0.6}
    assert "median factor 2.00" in (model / "README.md").read_text()
    load_model(model)
    assert main(["export", str(model), "-o", str(tmp_path / "x"), "--eval-phantoms", "2"]) != 0
    assert not (tmp_path / "x").exists()
