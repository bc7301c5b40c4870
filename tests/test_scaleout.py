"""Tests of running inputs on a local Dask cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crackseg.io import read_volume, write_volume
from crackseg.model_io import new_card, save_model
from crackseg.nets import build_network, unet_architecture
from crackseg.scaleout import run_distributed, worker_device
from crackseg.synthetic import generate_electrode

pytest.importorskip("dask.distributed")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("scaleout")
    torch.manual_seed(0)
    arch = unet_architecture(3, out_channels=4, channels=(4, 8))
    model = save_model(build_network(arch), new_card("tiny", arch, patch_size=(32,) * 3),
                       d / "tiny")
    inputs = []
    for s in (0, 1):
        ph = generate_electrode((24, 32, 32), seed=s)
        inputs.append(str(write_volume(d / f"scan{s}.tif", ph.image, ph.voxel_size_um)))
    (d / "broken.tif").write_bytes(b"II*\x00 not a tiff")
    return d, model, inputs


def test_worker_device():
    assert worker_device("cpu", worker_name=1, n_gpus=4) == "cpu"
    assert worker_device("auto", worker_name="tcp-worker-5", n_gpus=4) == "cuda:1"
    assert worker_device("auto", worker_name=0, n_gpus=0) == "cpu"


def test_two_local_workers_match_serial_run(setup):
    from crackseg.batch import run_batch
    from crackseg.model_io import load_model

    d, model, inputs = setup
    res = run_distributed(inputs + [str(d / "broken.tif")], d / "dask", model=model,
                          n_workers=2, processes=False, progress=False)
    assert [r["status"] for r in res] == ["done", "done", "failed"]
    assert "broken.tif" in res[2]["error"]
    serial = run_batch(inputs, d / "serial", model=load_model(model), progress=False)
    assert all(r["status"] == "done" for r in serial)
    for s in (0, 1):
        a = read_volume(d / "dask" / f"scan{s}" / "segmentation.tif").data
        b = read_volume(d / "serial" / f"scan{s}" / "segmentation.tif").data
        np.testing.assert_array_equal(a, b)
    again = run_distributed(inputs, d / "dask", model=model, n_workers=2, processes=False,
                            progress=False)
    assert [r["status"] for r in again] == ["skipped", "skipped"]


@pytest.mark.slow
def test_cli_workers(setup):
    import subprocess
    import sys

    d, model, inputs = setup
    r = subprocess.run([sys.executable, "-m", "crackseg", "predict", *inputs, "--model",
                        str(model), "-o", str(d / "cli"), "--workers", "2", "--quiet"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert all((d / "cli" / f"scan{s}" / "prediction.json").exists() for s in (0, 1))
