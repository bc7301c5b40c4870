"""Running inference on a Dask cluster (``crackseg predict --workers/--dask``).

Two kinds of work go to the workers of a ``dask.distributed`` cluster:

- **many inputs**: each input is one task
  (:func:`crackseg.batch.predict_to_folder` on a worker), so a batch of scans
  spreads over the workers;
- **one huge volume**: an input given alone, or one of at least
  :data:`CHUNKED_MIN_VOXELS` voxels, is predicted in this process with its
  chunks as tasks on all workers (:mod:`crackseg.chunk_tasks`); this process
  then finishes the folder (particles, provenance) as a serial run does.
  Results are bit-identical to a serial run.

Clusters:

- ``--workers N`` starts a local cluster of N single-threaded worker
  processes; PyTorch in each uses ``cores / N`` threads;
- ``--dask tcp://host:8786`` submits to a running scheduler (started with
  ``dask scheduler`` and ``dask worker tcp://host:8786 --nthreads 1`` on each
  node; all nodes must see the input and output paths).

GPUs: on a node with several GPUs, run one worker per GPU (``--workers`` =
number of GPUs, or ``dask worker --nworkers <GPUs>``); with ``--device auto``
or ``cuda`` the worker numbered *i* uses ``cuda:i mod <GPUs>``, while
``cuda:N`` puts every worker on GPU N (:func:`crackseg.devices.worker_device`).
(``dask-cuda``'s ``LocalCUDACluster`` pins one GPU per worker through
``CUDA_VISIBLE_DEVICES``, which works the same way.)  ``--max-memory`` is
per worker.

Examples
--------
>>> chunked_inputs(["only.tif"])  # a lone input is always split into chunk tasks
['only.tif']
"""

from __future__ import annotations

import os
import sys
import uuid

import numpy as np

from crackseg.batch import output_folders, predict_one_safely
from crackseg.devices import dask_worker_name, worker_device
from crackseg.errors import CracksegError

CHUNKED_MIN_VOXELS = 1 << 27
"""Inputs of at least this many voxels (512^3) are split into chunk tasks.

Below it, one input per task keeps every worker busy with no shared output;
above it, a single input takes minutes per worker and is better spread.  An
input given alone is always split.
"""

_MODEL_CACHE: dict = {}


def _cached_model(model, device: str):
    from crackseg.model_io import load_model, resolve_model_path

    key = (str(resolve_model_path(model).resolve()), device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(model, device=device)
    return _MODEL_CACHE[key]


def predict_task(source, folder, model, options: dict) -> dict:
    """One Dask task: predict ``source`` into ``folder`` on this worker's device."""
    opts = dict(options)
    device = worker_device(opts.pop("device", "auto"), worker_name=dask_worker_name())
    opts["progress"] = False
    try:
        loaded = _cached_model(model, device)
    except CracksegError as e:
        return {"input": str(source), "folder": str(folder), "status": "failed",
                "error": str(e)}
    return predict_one_safely(source, folder, model=loaded, device=device, **opts)


def _set_threads(n: int):
    import torch

    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def chunked_inputs(inputs, min_voxels: int = CHUNKED_MIN_VOXELS) -> list[str]:
    """Inputs to split into chunk tasks: a lone input, or those of >= ``min_voxels`` voxels.

    Unreadable inputs are left to their own task, which reports them.
    """
    from crackseg.io import read_volume

    if len(inputs) == 1:
        return list(inputs)
    out = []
    for src in inputs:
        try:
            shape = read_volume(src, lazy=True).shape
        except (CracksegError, OSError):
            continue
        if int(np.prod(shape)) >= min_voxels:
            out.append(src)
    return out


def run_distributed(inputs, out_root, *, model=None, address: str | None = None,
                    n_workers: int | None = None, progress: bool = True,
                    processes: bool = True, chunked_min_voxels: int = CHUNKED_MIN_VOXELS,
                    **options) -> list[dict]:
    """Predict inputs on a Dask cluster; results in input order.

    A lone input, and every input of at least ``chunked_min_voxels`` voxels,
    is predicted here chunk by chunk with the chunks as tasks on the workers
    (one input after the other, each using the whole cluster); the other
    inputs are one task each.

    Parameters
    ----------
    inputs : list of str
        Input volumes (see :func:`crackseg.batch.expand_inputs`).
    out_root : path-like
        Output folder (one subfolder per input).
    model : path-like or str, optional
        Model directory or name, loaded once per worker.
    address : str, optional
        Scheduler address; without it a local cluster is started.
    n_workers : int, optional
        Workers of the local cluster (default 2).
    processes : bool
        Local workers as processes (default) or threads.
    chunked_min_voxels : int
        Size from which an input is split into chunk tasks.
    **options
        As for :func:`crackseg.batch.predict_to_folder`.

    Returns
    -------
    list of dict
        One record per input (``status`` done, skipped or failed).
    """
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise CracksegError("--workers/--dask need Dask: pip install 'crackseg[dask]'") from None
    from crackseg.model_io import resolve_model_path

    model_path = str(resolve_model_path(model).resolve())
    folders = output_folders(inputs, out_root)
    cluster = None
    if address:
        try:
            client = Client(address, timeout="10s")
        except (OSError, TimeoutError) as e:
            raise CracksegError(f"cannot connect to the Dask scheduler at {address} ({e})") from None
    else:
        n = int(n_workers or 2)
        if n < 1:
            raise CracksegError("--workers must be at least 1")
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                               dashboard_address=None, silence_logs=40)
        client = Client(cluster)
        if processes:
            client.run(_set_threads, max(1, (os.cpu_count() or 1) // n))
    try:
        results = {}
        for src in chunked_inputs(inputs, chunked_min_voxels):
            r = predict_one_safely(src, folders[src], model=model_path, client=client,
                                   progress=progress, **options)
            results[src] = r
            if r["status"] == "failed":
                print(f"crackseg predict: {r['error']}", file=sys.stderr)
        rest = [s for s in inputs if s not in results]
        futures = {client.submit(predict_task, src, str(folders[src]), model_path, options,
                                 key=f"crackseg-predict-{i}-{uuid.uuid4().hex[:8]}",
                                 pure=False): src
                   for i, src in enumerate(rest)}
        from tqdm.auto import tqdm

        with tqdm(total=len(futures), desc="inputs", unit="file", file=sys.stderr,
                  disable=not progress or not futures) as bar:
            for fut in as_completed(futures) if futures else ():
                r = fut.result()
                results[futures[fut]] = r
                if r["status"] == "failed":
                    print(f"crackseg predict: {r['error']}", file=sys.stderr)
                bar.update(1)
        return [results[s] for s in inputs]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
