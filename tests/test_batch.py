"""Batches of real-world inputs: read errors, byte orders, model hints, one message each."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from crackseg.batch import run_batch
from crackseg.errors import InputError
from crackseg.inference import predict_volume
from crackseg.io import write_volume
from crackseg.model_io import model_hint, new_card, save_model, shipped_models
from crackseg.nets import build_network, unet_architecture
from crackseg.synthetic import generate_electrode


def _tiny_model(folder, spatial_dims=3, name="tiny"):
    torch.manual_seed(0)
    arch = unet_architecture(spatial_dims, out_channels=4, channels=(4, 8))
    card = new_card(name, arch, patch_size=(32,) * spatial_dims)
    return save_model(build_network(arch), card, folder / name)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _tiny_model(tmp_path_factory.mktemp("models"))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "crackseg", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def _corrupt_strip_tiff(path, shape=(16, 32, 32)):
    """A complete-looking zlib TIFF whose middle page holds garbage (a 'corrupted strip')."""
    ph = generate_electrode(shape, seed=1)
    write_volume(path, ph.image, ph.voxel_size_um, compression="zlib")
    with tifffile.TiffFile(path) as t:
        page = t.pages[shape[0] // 2]
        off, n = page.dataoffsets[0], page.databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[off:off + n] = b"\xff" * n
    path.write_bytes(bytes(raw))
    return path


def test_corrupt_file_in_a_batch_is_one_line_and_the_batch_goes_on(tmp_path, model_dir):
    ok = generate_electrode((16, 32, 32), seed=0)
    write_volume(tmp_path / "ok.tif", ok.image, ok.voxel_size_um)
    _corrupt_strip_tiff(tmp_path / "truncated.tif")
    out = tmp_path / "out"
    r = _cli("predict", tmp_path / "truncated.tif", tmp_path / "ok.tif", "--model", model_dir,
             "-o", out, "--quiet")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "truncated.tif" in ln]
    assert len(errors) == 1, r.stderr  # said once
    assert "cannot read" in errors[0] and "truncated or corrupt" in errors[0]
    assert (out / "ok" / "prediction.json").exists()
    assert not (out / "truncated").exists()  # nothing half-written


def test_run_batch_records_read_failure(tmp_path, model_dir):
    _corrupt_strip_tiff(tmp_path / "bad.tif")
    res = run_batch([str(tmp_path / "bad.tif")], tmp_path / "out", model=model_dir,
                    progress=False)
    assert res[0]["status"] == "failed" and "bad.tif: cannot read" in res[0]["error"]
    assert not (tmp_path / "out" / "bad").exists()


def test_big_endian_float_input_is_predicted(tmp_path, model_dir):
    ph = generate_electrode((16, 32, 32), seed=2)
    p = tmp_path / "be.tif"
    tifffile.imwrite(p, ph.image.astype(">f4"), byteorder=">")
    pred = predict_volume(model_dir, p, progress=False)
    assert pred.labels.shape == (16, 32, 32)


def test_wrong_dimensionality_names_the_shipped_model(tmp_path, model_dir):
    names = shipped_models()
    if 2 not in names.values():
        pytest.skip("no shipped 2-D model")
    two_d = next(n for n, d in names.items() if d == 2)
    with pytest.raises(InputError, match=f"--model {two_d}"):
        predict_volume(model_dir, np.zeros((40, 40), np.float32), progress=False)
    assert model_hint(5) == "use a 5-D model (--model DIR)"


def test_run_error_is_printed_once(tmp_path, model_dir):
    (tmp_path / "junk.tif").write_bytes(b"not a tiff" * 10)
    r = _cli("run", tmp_path / "junk.tif", "--model", model_dir, "-o", tmp_path / "out",
             "--quiet")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert sum("junk.tif" in ln for ln in r.stderr.splitlines()) == 1, r.stderr
    assert not (tmp_path / "out" / "junk").exists()
