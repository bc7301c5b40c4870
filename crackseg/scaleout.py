"""Running many inputs on a Dask cluster (``crackseg predict --workers/--dask``).

Each input is one task (:func:`crackseg.batch.predict_to_folder`), so a
batch of scans spreads over the workers of a ``dask.distributed`` cluster:

- ``--workers N`` starts a local cluster of N single-threaded worker
  processes; PyTorch in each uses ``cores / N`` threads;
- ``--dask tcp://host:8786`` submits to a running scheduler (started with
  ``dask scheduler`` and ``dask worker tcp://host:8786 --nthreads 1`` on each
  node; all nodes must see the input and output paths).

GPUs: on a node with several GPUs, run one worker per GPU (``--workers`` =
number of GPUs, or ``dask worker --nworkers <GPUs>``); with ``--device auto``
the worker numbered *i* uses ``cuda:i mod <GPUs>``.  (``dask-cuda``'s
``LocalCUDACluster`` pins one GPU per worker through ``CUDA_VISIBLE_DEVICES``,
which works the same way.)

Every task writes its own output folder atomically and resumes from its
chunks, so a batch interrupted anywhere can simply be submitted again.

Examples
--------
>>> from crackseg.scaleout import worker_device
>>> worker_device("auto", worker_name=3, n_gpus=2)
'cuda:1'
>>> worker_device("auto", worker_name=3, n_gpus=0)
'cpu'
"""

from __future__ import annotations

import os
import sys

from crackseg.errors import CracksegError

_MODEL_CACHE: dict = {}


def worker_device(device: str, *, worker_name=None, n_gpus: int | None = None) -> str:
    """Device of a worker: ``cuda:(index mod n_gpus)`` for ``"auto"`` with GPUs."""
    if device != "auto":
        return device
    if n_gpus is None:
        import torch

        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus == 0:
        return "cpu"
    try:
        idx = int(str(worker_name).rsplit("-", 1)[-1])
    except (TypeError, ValueError):
        idx = 0
    return f"cuda:{idx % n_gpus}"


def _cached_model(model, device: str):
    from crackseg.model_io import load_model, resolve_model_path

    key = (str(resolve_model_path(model).resolve()), device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(model, device=device)
    return _MODEL_CACHE[key]


def predict_task(source, folder, model, options: dict) -> dict:
    """One Dask task: predict ``source`` into ``folder`` on this worker's device."""
    from crackseg.batch import predict_one_safely

    try:
        from dask.distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):
        name = None
    opts = dict(options)
    device = worker_device(opts.pop("device", "auto"), worker_name=name)
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


def run_distributed(inputs, out_root, *, model=None, address: str | None = None,
                    n_workers: int | None = None, progress: bool = True,
                    processes: bool = True, **options) -> list[dict]:
    """Predict every input as one task on a Dask cluster; results in input order.

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
    from crackseg.batch import output_folders
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
        futures = {client.submit(predict_task, src, str(folders[src]), model_path, options,
                                 key=f"crackseg-predict-{i}", pure=False): src
                   for i, src in enumerate(inputs)}
        results = {}
        from tqdm.auto import tqdm

        with tqdm(total=len(futures), desc="inputs", unit="file", file=sys.stderr,
                  disable=not progress) as bar:
            for fut in as_completed(futures):
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
