"""Tests of whole-volume inference, chunking, resume and uncertainty."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crackseg.errors import CracksegError, InputError
from crackseg.inference import plan_inference, predict_volume, strided_sample
from crackseg.model_io import new_card, save_model
from crackseg.nets import build_network, unet_architecture
from crackseg.synthetic import generate_electrode
from crackseg.uncertainty import (
    apply_transform,
    particle_posterior_counts,
    tta_transforms,
)


def tiny_model(tmp_path, *, spatial_dims=3, dropout=0.1, name="tiny", seed=0):
    torch.manual_seed(seed)
    arch = unet_architecture(spatial_dims, out_channels=4, channels=(4, 8), dropout=dropout)
    net = build_network(arch)
    card = new_card(name, arch, patch_size=(32,) * spatial_dims)
    return save_model(net, card, tmp_path / name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def phantom():
    return generate_electrode((32, 40, 40), seed=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny network fitted for a few dozen steps on a phantom (seconds)."""
    torch.manual_seed(0)
    ph = generate_electrode((24, 40, 40), seed=11)
    img = ph.image.astype(np.float32)
    lo, hi = np.percentile(img, [1, 99])
    x = torch.from_numpy(((img - lo) / (hi - lo)).astype(np.float32))[None, None]
    y = torch.from_numpy(ph.labels.astype(np.int64))[None]
    arch = unet_architecture(3, out_channels=4, channels=(8, 16), num_res_units=1, dropout=0.1)
    net = build_network(arch)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    card = new_card("fitted", arch, patch_size=(32, 32, 32))
    return save_model(net, card, tmp_path_factory.mktemp("fitted") / "fitted")


def test_labels_shape_dtype_and_provenance(model_dir, phantom):
    pred = predict_volume(model_dir, phantom.image, voxel_size_um=0.5, progress=False)
    assert pred.labels.shape == phantom.image.shape
    assert pred.labels.dtype == np.uint8
    assert set(np.unique(pred.labels)) <= {0, 1, 2, 3}
    prov = pred.provenance
    assert prov["model"] == "tiny" and len(prov["model_sha256"]) == 64
    assert prov["voxel_size_um"] == [0.5, 0.5, 0.5]
    assert prov["settings"]["roi_size"] and prov["crackseg_version"]


def test_reads_path_lazily_with_voxel_size(model_dir, phantom, tmp_path):
    from crackseg.io import write_volume

    p = write_volume(tmp_path / "v.tif", phantom.image, (0.5, 0.25, 0.25))
    a = predict_volume(model_dir, p, progress=False)
    b = predict_volume(model_dir, phantom.image, progress=False)
    assert a.voxel_size_um == (0.5, 0.25, 0.25)
    np.testing.assert_array_equal(a.labels, b.labels)
    # uncompressed TIFF: memory-mapped, read chunk by chunk
    m = write_volume(tmp_path / "m.tif", phantom.image, compression=None)
    c = predict_volume(model_dir, m, chunk_size=(16, 24, 24), progress=False)
    d = predict_volume(model_dir, phantom.image, chunk_size=(16, 24, 24), progress=False)
    np.testing.assert_array_equal(c.labels, d.labels)


def test_gaussian_blend_is_monai_sliding_window(model_dir, phantom):
    """blend="gaussian" in one chunk is exactly MONAI's sliding_window_inference."""
    from monai.inferers import sliding_window_inference

    from crackseg.inference import intensity_range
    from crackseg.model_io import load_model

    net, card = load_model(model_dir)
    vol = phantom.image
    lo, hi = intensity_range(vol, card["normalization"])
    x = torch.from_numpy((vol.astype(np.float32) - np.float32(lo)) * np.float32(1 / (hi - lo)))
    with torch.no_grad():
        ref = sliding_window_inference(x[None, None], (32, 32, 32), 1, net, overlap=0.25,
                                       mode="gaussian")
    ref = torch.argmax(ref[0], 0).numpy()
    pred = predict_volume((net, card), vol, blend="gaussian", precision="fp32", progress=False)
    assert (pred.labels == ref).mean() > 0.999


def test_chunked_matches_whole_and_is_deterministic(model_dir, phantom, tmp_path):
    whole = predict_volume(model_dir, phantom.image, precision="fp32", progress=False)
    kw = dict(chunk_size=(16, 24, 24), roi_size=32, halo=8, precision="fp32", progress=False)
    mem = predict_volume(model_dir, phantom.image, **kw)
    disk = predict_volume(model_dir, phantom.image, out=tmp_path / "w", **kw)
    assert disk.stats["chunks"] == 8
    np.testing.assert_array_equal(mem.labels, disk.labels[...])
    assert (mem.labels == whole.labels).mean() > 0.99


@pytest.mark.parametrize("uncertainty", ["none", "tta", pytest.param("mc", marks=pytest.mark.slow)])
def test_interrupted_run_resumes_bit_identical(model_dir, phantom, tmp_path, uncertainty):
    kw = dict(chunk_size=(16, 24, 24), roi_size=32, halo=8, uncertainty=uncertainty,
              n_samples=3, progress=False, seed=5)
    full = predict_volume(model_dir, phantom.image, out=tmp_path / "full", **kw)
    with pytest.raises(KeyboardInterrupt):
        predict_volume(model_dir, phantom.image, out=tmp_path / "cut", stop_after_chunks=3, **kw)
    resumed = predict_volume(model_dir, phantom.image, out=tmp_path / "cut", **kw)
    assert full.stats["chunks"] == 8
    assert resumed.stats["chunks_run"] == full.stats["chunks"] - 3
    np.testing.assert_array_equal(full.labels[...], resumed.labels[...])
    if uncertainty != "none":
        np.testing.assert_array_equal(full.entropy[...], resumed.entropy[...])
        for k in full.sample_bits:
            np.testing.assert_array_equal(full.sample_bits[k][...], resumed.sample_bits[k][...])


def test_changed_settings_do_not_resume(model_dir, phantom, tmp_path):
    kw = dict(chunk_size=(16, 24, 24), roi_size=32, halo=8, progress=False)
    with pytest.raises(KeyboardInterrupt):
        predict_volume(model_dir, phantom.image, out=tmp_path / "w", stop_after_chunks=2, **kw)
    again = predict_volume(model_dir, phantom.image, out=tmp_path / "w", seed=1,
                           uncertainty="tta", n_samples=2, **kw)
    assert again.stats["chunks_run"] == again.stats["chunks"]


def test_wrong_dimensionality_is_one_line_error(model_dir, tmp_path):
    with pytest.raises(InputError, match="2-D image .* model 'tiny' is 3-D"):
        predict_volume(model_dir, np.zeros((40, 40), np.float32), progress=False)
    # A 3-D input to a 2-D model is a stack of sections (tests/test_stacks.py).


def test_2d_model_on_2d_image(tmp_path):
    m2 = tiny_model(tmp_path, spatial_dims=2, name="tiny2d")
    img = np.random.default_rng(0).random((70, 90)).astype(np.float32)
    pred = predict_volume(m2, img, progress=False, uncertainty="tta", n_samples=3)
    assert pred.labels.shape == (70, 90) and pred.entropy.shape == (70, 90)


def test_nonfinite_voxels(model_dir, phantom):
    vol = phantom.image.astype(np.float32)
    vol[3, 4, 5] = np.nan
    vol[10, 10, 10] = np.inf
    with pytest.raises(InputError, match="NaN/Inf"):
        predict_volume(model_dir, vol, progress=False)
    pred = predict_volume(model_dir, vol, nan_policy="replace", progress=False)
    assert pred.labels.shape == vol.shape


def test_bad_options(model_dir, phantom):
    with pytest.raises(CracksegError, match="uncertainty"):
        predict_volume(model_dir, phantom.image, uncertainty="bayes", progress=False)
    with pytest.raises(CracksegError, match="device"):
        predict_volume(model_dir, phantom.image, device="tpu", progress=False)
    with pytest.raises(CracksegError, match="halo"):
        predict_volume(model_dir, phantom.image, roi_size=32, halo=16, progress=False)


def test_mc_dropout_needs_dropout(tmp_path, phantom):
    m = tiny_model(tmp_path, dropout=0.0, name="nodrop")
    with pytest.raises(CracksegError, match="no dropout"):
        predict_volume(m, phantom.image, uncertainty="mc", n_samples=2, progress=False)


def test_tta_transforms_invert():
    x = torch.arange(2 * 4 * 6 * 6, dtype=torch.float32).reshape(1, 2, 4, 6, 6)
    ts = tta_transforms(3, 16, seed=1)
    assert ts[0] == (0, ()) and len(set(ts)) == 16
    for t in ts:
        np.testing.assert_array_equal(apply_transform(apply_transform(x, t), t, inverse=True), x)


def test_tta_samples_differ_and_counts_are_consistent(trained, phantom):
    pred = predict_volume(trained, phantom.image, uncertainty="tta", n_samples=4, progress=False)
    crack = pred.sample_bits["crack"]
    per_sample = [int(((crack >> s) & 1).sum()) for s in range(4)]
    assert len(set(per_sample)) > 1  # the augmentations change the prediction somewhere
    inst = phantom.instances
    counts = particle_posterior_counts(inst, pred.sample_bits, 4, chunk=7)
    assert counts["crack_voxels"].shape == (4, counts["label"].size)
    inside = inst > 0
    for s in range(4):
        assert counts["crack_voxels"][s].sum() == int((((crack >> s) & 1) > 0)[inside].sum())
    np.testing.assert_array_equal(counts["envelope_voxels"],
                                  np.bincount(inst.ravel())[counts["label"]])


@pytest.mark.parametrize("method", ["tta", "mc"])
def test_uncertainty_higher_at_borders_and_on_noise(trained, method):
    clean = generate_electrode((24, 40, 40), seed=4, snr=8.0)
    noisy = generate_electrode((24, 40, 40), seed=4, snr=2.0)  # same labels, more noise
    np.testing.assert_array_equal(clean.labels, noisy.labels)
    pred = predict_volume(trained, clean.image, uncertainty=method, n_samples=6, progress=False)
    ent = pred.entropy.astype(np.float32)
    lab = clean.labels
    border = np.zeros(lab.shape, bool)
    for ax in range(3):
        d = np.diff(lab, axis=ax) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[ax] = slice(0, -1)
        hi[ax] = slice(1, None)
        border[tuple(lo)] |= d
        border[tuple(hi)] |= d
    assert ent[border].mean() > 1.5 * ent[~border].mean()
    pred_noisy = predict_volume(trained, noisy.image, uncertainty=method, n_samples=6,
                                progress=False)
    assert pred_noisy.entropy.astype(np.float32).mean() > 1.1 * ent.mean()


def test_memory_plan_follows_budget(model_dir):
    from crackseg.model_io import read_card

    card = read_card(model_dir)
    big = plan_inference(card, (1024, 1024, 1024), max_memory_gb=3)
    small = plan_inference(card, (1024, 1024, 1024), max_memory_gb=1)
    assert small["chunk_size"][0] < big["chunk_size"][0]
    assert big["memory_estimate_gb"] <= 3 and small["memory_estimate_gb"] <= 1
    with pytest.raises(CracksegError, match="too small"):
        plan_inference(card, (1024, 1024, 1024), max_memory_gb=0.1)
    # A volume that fits one window of the budget is one chunk: no halo computed twice.
    edge = big["roi_size"][0]
    one = plan_inference(card, (edge, edge - 8, edge // 2), max_memory_gb=3)
    assert one["chunk_size"] == [edge, edge - 8, edge // 2] and one["memory_estimate_gb"] <= 3
    assert plan_inference(card, (edge + 8,) * 3, max_memory_gb=3)["chunk_size"][0] < edge + 8


def test_strided_sample_is_bounded():
    a = np.arange(200 * 300 * 300, dtype=np.uint32).reshape(200, 300, 300)
    s = strided_sample(a, target=1 << 16)
    assert s.size < 4 * (1 << 16)
    assert s.min() == 0


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "crackseg", *map(str, args)],
                          capture_output=True, text=True)


def test_predict_cli_batch_with_broken_inputs(model_dir, tmp_path):
    from crackseg.io import read_volume, write_volume

    vols = []
    for s in (0, 1):
        ph = generate_electrode((24, 32, 32), seed=s)
        vols.append(write_volume(tmp_path / f"scan{s}.tif", ph.image, ph.voxel_size_um))
    (tmp_path / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    write_volume(tmp_path / "flat.tif", np.zeros((30, 30), np.uint16))  # 2-D for a 3-D model
    nan = np.ones((16, 16, 16), np.float32)
    nan[2, 2, 2] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    out = tmp_path / "out"
    r = _cli("predict", tmp_path / "scan*.tif", tmp_path / "broken.tif", tmp_path / "flat.tif",
             tmp_path / "nan.npy", tmp_path / "missing.tif", "--model", model_dir, "-o", out,
             "--uncertainty", "tta", "--samples", "2", "--quiet")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert "2 done" in r.stderr and "4 failed" in r.stderr
    for name in ("broken", "flat", "nan", "missing"):
        assert not (out / name).exists()  # nothing half-written
    for s in (0, 1):
        d = out / f"scan{s}"
        seg = read_volume(d / "segmentation.tif")
        assert seg.data.dtype == np.uint8 and seg.voxel_size_um == (0.5, 0.5, 0.5)
        assert read_volume(d / "particles.tif").data.dtype == np.uint32
        assert read_volume(d / "uncertainty.tif").data.dtype == np.float16
        npz = np.load(d / "particle_samples.npz")
        assert npz["crack_voxels"].shape[0] == 2
        assert not (d / ".work").exists()
        import json

        prov = json.loads((d / "prediction.json").read_text())
        assert prov["model"] == "tiny" and prov["settings"]["uncertainty"] == "tta"
    before = (out / "scan0" / "prediction.json").stat().st_mtime_ns
    r = _cli("predict", vols[0], "--model", model_dir, "-o", out, "--quiet")
    assert r.returncode == 0 and (out / "scan0" / "prediction.json").stat().st_mtime_ns == before
    r = _cli("predict", vols[0], "--model", model_dir, "-o", out, "--quiet", "--overwrite",
             "--no-particles")
    assert r.returncode == 0 and (out / "scan0" / "prediction.json").stat().st_mtime_ns != before


def test_predict_cli_model_mismatch(tmp_path, model_dir):
    from crackseg.io import write_volume

    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "model_card.json").write_text("{not json")
    write_volume(tmp_path / "v.tif", np.zeros((16, 16, 16), np.uint16))
    r = _cli("predict", tmp_path / "v.tif", "--model", bad, "-o", tmp_path / "o")
    assert r.returncode == 2 and "not valid JSON" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_killed_cli_run_resumes_identical(model_dir, tmp_path):
    """SIGKILL a real `crackseg predict` mid-volume, run it again: same bytes as uninterrupted."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from crackseg.io import read_volume, write_volume

    ph = generate_electrode((32, 48, 48), seed=9)
    src = write_volume(tmp_path / "scan.tif", ph.image, ph.voxel_size_um)
    args = [sys.executable, "-m", "crackseg", "predict", str(src), "--model", str(model_dir),
            "--chunk", "16", "--roi", "32", "--halo", "8", "--uncertainty", "tta",
            "--samples", "2", "--no-particles", "--quiet", "-o"]
    assert subprocess.run(args + [str(tmp_path / "ref")]).returncode == 0
    proc = subprocess.Popen(args + [str(tmp_path / "cut")])
    prog = tmp_path / "cut" / "scan" / ".work" / "progress.json"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        try:
            if len(json.loads(prog.read_text())["done"]) >= 3:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    if proc.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "cut" / "scan" / "prediction.json").exists()
    done_before = len(json.loads(prog.read_text())["done"])
    assert 0 < done_before < 18
    assert subprocess.run(args + [str(tmp_path / "cut")]).returncode == 0
    for name in ("segmentation.tif", "uncertainty.tif"):
        a = read_volume(tmp_path / "ref" / "scan" / name).data
        b = read_volume(tmp_path / "cut" / "scan" / name).data
        np.testing.assert_array_equal(a, b)


def _gradient_reach(arch: dict, n: int = 288) -> int:
    """Context (voxels per side) an output depends on, from the gradient of a 1-D copy of ``arch``."""
    args = {**arch["args"], "spatial_dims": 1, "out_channels": 1, "dropout": 0.0,
            "channels": [2] * len(arch["args"]["channels"])}
    torch.manual_seed(0)
    net = build_network({**arch, "args": args}).eval().double()
    x = torch.randn(1, 1, n, dtype=torch.double, requires_grad=True)
    y = net(x)
    reach = 0
    for c in range(n // 2 - 8, n // 2 + 8):
        (g,) = torch.autograd.grad(y[0, 0, c], x, retain_graph=True)
        nz = g[0, 0].nonzero().ravel()
        reach = max(reach, c - int(nz.min()), int(nz.max()) - c)
    return reach


@pytest.mark.parametrize("kw", [dict(channels=(4, 8)), dict(channels=(4, 8, 16), num_res_units=0),
                                dict(channels=(4, 8, 16, 32), strides=(1, 2, 2), num_res_units=1),
                                dict(channels=(4, 8, 16), strides=(2, 3), num_res_units=3)])
def test_receptive_halo_is_the_gradient_support(kw):
    from crackseg.nets import receptive_halo

    arch = unet_architecture(3, **kw)
    assert receptive_halo(arch) == _gradient_reach(arch)


def test_default_halo_is_the_receptive_field_on_the_grid():
    from crackseg.nets import receptive_halo
    from crackseg.tiling import default_halo, downsampling_factor

    arch = unet_architecture(3, channels=(8, 16, 32, 64), num_res_units=1)   # nmc4-synthetic-v1
    assert (receptive_halo(arch), downsampling_factor(arch), default_halo(arch)) == (29, 8, 32)
    arch = unet_architecture(3, channels=(12, 24, 48, 96), strides=(1, 2, 2), num_res_units=1)
    assert (receptive_halo(arch), downsampling_factor(arch), default_halo(arch)) == (16, 4, 16)
    card = new_card("m", arch, patch_size=(48, 48, 48))
    plan = plan_inference(card, (300, 300, 300))
    assert plan["halo"] == [16, 16, 16]
    assert all(r % 4 == 0 and c % 4 == 0 for r, c in zip(plan["roi_size"], plan["chunk_size"]))
    given = plan_inference(card, (300, 300, 300), halo=10, chunk_size=50, roi_size=64)
    assert given["halo"] == [12] * 3 and given["chunk_size"] == [52] * 3   # onto the grid


def test_default_tiling_equals_the_whole_volume_pass():
    """Several chunks and windows, default halo: the labels of one forward pass on the whole volume.

    (With instance normalisation the statistics are each window's, so the two
    differ; ``benchmarks/tiling_exactness.py`` measures by how much.)
    """
    from crackseg.inference import intensity_range
    from crackseg.tiling import default_halo

    torch.manual_seed(1)
    arch = unet_architecture(3, out_channels=4, channels=(4, 8, 16), num_res_units=1)
    net = build_network(arch).eval()
    card = new_card("exact", arch, patch_size=(32, 32, 32))
    vol = generate_electrode((44, 50, 60), seed=5).image      # y not a multiple of the grid (4)
    lo, hi = intensity_range(vol, card["normalization"])
    x = torch.from_numpy((vol.astype(np.float32) - np.float32(lo)) * np.float32(1 / (hi - lo)))
    with torch.no_grad():   # the whole volume, zero-padded at its far end onto the grid
        y = net(torch.nn.functional.pad(x, (0, 0, 0, 2))[None, None])[0, :, :, :50]
    whole = torch.argmax(y, 0).numpy()
    h = default_halo(arch)
    pred = predict_volume((net, card), vol, roi_size=2 * h + 8, chunk_size=16, progress=False,
                          scale="none")
    assert pred.provenance["settings"]["halo"] == [h] * 3
    assert (pred.labels == whole).mean() > 0.9999   # equal up to float rounding
    for c in np.unique(whole):
        a, b = pred.labels == c, whole == c
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.999


def test_card_crack_cleanup_applies_in_memory_and_in_chunks(trained, phantom, tmp_path):
    from crackseg.crack_support import drop_unsupported_cracks
    from crackseg.model_io import load_model

    net, card = load_model(trained)
    img = phantom.image.astype(np.float32)
    raw = np.asarray(predict_volume((net, card), img, progress=False, device="cpu").labels)
    assert (raw == 2).any()
    strict = {**card, "postprocess": {"min_crack_solid_contact": 1.0}}
    expected, removed = drop_unsupported_cracks(raw, min_solid_contact=1.0)
    assert removed > 0
    mem = predict_volume((net, strict), img, progress=False, device="cpu")
    assert (np.asarray(mem.labels) == expected).all()
    rec = mem.provenance["settings"]["crack_cleanup"]
    assert rec["voxels_relabelled_matrix"] == removed and rec["min_crack_solid_contact"] == 1.0
    chunked = predict_volume((net, strict), img, progress=False, device="cpu",
                             chunk_size=(16, 24, 24), out=tmp_path / "work")
    assert (np.asarray(chunked.labels) == expected).all()
    assert chunked.provenance["settings"]["crack_cleanup"]["chunk_margin"] >= 32
    assert "crack_cleanup" not in predict_volume((net, card), img, progress=False,
                                                 device="cpu").provenance["settings"]
