"""Tests of running inputs, and the chunks of one volume, on a local Dask cluster."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crackseg.devices import worker_device
from crackseg.errors import CracksegError
from crackseg.inference import predict_volume
from crackseg.io import read_volume, write_volume
from crackseg.model_io import new_card, save_model
from crackseg.nets import build_network, unet_architecture
from crackseg.scaleout import chunked_inputs, run_distributed
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


@pytest.fixture(scope="module")
def client():
    """A local cluster of 2 single-threaded worker processes."""
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=40)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def big_scan(setup):
    d = setup[0]
    ph = generate_electrode((48, 48, 48), seed=4)
    return write_volume(d / "big.tif", ph.image, ph.voxel_size_um)


def test_worker_device():
    assert worker_device("cpu", worker_name=1, n_gpus=4) == "cpu"
    assert worker_device("auto", worker_name="tcp-worker-5", n_gpus=4) == "cuda:1"
    assert worker_device("auto", worker_name=0, n_gpus=0) == "cpu"
    assert worker_device("cuda", worker_name=1, n_gpus=2) == "cuda:1"
    assert worker_device("cuda", worker_name=3, n_gpus=2) == "cuda:1"
    assert worker_device("cuda:0", worker_name=1, n_gpus=2) == "cuda:0"
    assert worker_device("cuda", worker_name=1, n_gpus=0) == "cuda"


def _arrays(pred):
    out = {"labels": pred.labels, "entropy": pred.entropy,
           **{f"{k}_bits": v for k, v in (pred.sample_bits or {}).items()}}
    return {k: np.asarray(v[...]) for k, v in out.items() if v is not None}


def test_chunks_on_two_workers_match_serial_and_resume(setup, big_scan, client, tmp_path):
    from crackseg import chunk_tasks

    _, model, _ = setup
    kw = dict(chunk_size=24, uncertainty="tta", n_samples=2, progress=False)
    serial = predict_volume(model, big_scan, out=tmp_path / "serial", **kw)
    assert serial.stats["chunks"] == 8
    with pytest.raises(KeyboardInterrupt):
        predict_volume(model, big_scan, out=tmp_path / "dask", client=client,
                       stop_after_chunks=3, **kw)
    state = json.loads((tmp_path / "dask" / "progress.json").read_text())
    assert len(state["done"]) == 3
    dist = predict_volume(model, big_scan, out=tmp_path / "dask", client=client, **kw)
    assert dist.stats == {"chunks": 8, "chunks_run": 5}
    a, b = _arrays(serial), _arrays(dist)
    assert set(a) == {"labels", "entropy", "crack_bits", "pore_bits"} == set(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert len(np.unique(a["labels"])) > 1
    assert dist.provenance == serial.provenance
    fp = [json.loads((tmp_path / w / "progress.json").read_text())["fingerprint"]
          for w in ("serial", "dask")]
    assert fp[0] == fp[1]
    nets = client.run(lambda: len(chunk_tasks._NET_CACHE))
    assert sorted(nets.values()) == [1, 1]


def test_lone_input_is_split_into_chunks_like_serial_run(setup, big_scan, client):
    from crackseg.batch import predict_to_folder

    d, model, inputs = setup
    assert chunked_inputs([str(big_scan)]) == [str(big_scan)]
    assert chunked_inputs(inputs + [str(big_scan)], min_voxels=48**3) == [str(big_scan)]
    assert chunked_inputs(inputs + [str(d / "broken.tif")], min_voxels=1) == inputs
    res = run_distributed([str(big_scan)], d / "lone", model=model,
                          address=client.scheduler.address, progress=False, chunk_size=24)
    assert [r["status"] for r in res] == ["done"]
    ref = predict_to_folder(big_scan, d / "lone_serial" / "big", model=model, progress=False,
                            chunk_size=24)
    assert ref["status"] == "done" and ref["n_particles"] == res[0]["n_particles"]
    for name in ("segmentation.tif", "particles.tif"):
        a = read_volume(d / "lone" / "big" / name).data
        b = read_volume(d / "lone_serial" / "big" / name).data
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert not (d / "lone" / "big" / ".work").exists()


def test_chunks_on_workers_need_a_path_and_an_output(setup, client, tmp_path):
    _, model, _ = setup
    vol = np.zeros((16, 16, 16), np.float32)
    with pytest.raises(CracksegError, match="file path"):
        predict_volume(model, vol, out=tmp_path / "w", client=client, progress=False)
    p = write_volume(tmp_path / "v.tif", vol + 1)
    with pytest.raises(CracksegError, match="output folder"):
        predict_volume(model, p, client=client, progress=False)


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
