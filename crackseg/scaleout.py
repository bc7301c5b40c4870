"""Running inference on a Dask cluster (``crackseg predict --workers/--dask``).

Two kinds of work go to the workers of a ``dask.distributed`` cluster:

- **many inputs**: each input is one task
  (:func:`crackseg.batch.predict_to_folder` on a worker), so a batch of scans
  spreads over the workers;
- **one huge volume**: an input given alone, or one of at least
  :data:`CHUNKED_MIN_VOXELS` voxels, is cut into chunks
  (:mod:`crackseg.tiling`) and each chunk is one task
  (:func:`predict_chunk_task`).  The worker loads the model once, reads the
  chunk and its halo lazily from the input file, runs the network and
  writes the chunk's core into the Zarr stores of the output's work folder
  (chunk-aligned regions, so concurrent writes never touch the same Zarr
  chunk).  The calling process records each finished chunk, so an
  interrupted run resumes, and then finishes the folder (particles,
  provenance) as a serial run does.  Results are bit-identical to a serial
  run.

Clusters:

- ``--workers N`` starts a local cluster of N single-threaded worker
  processes; PyTorch in each uses ``cores / N`` threads;
- ``--dask tcp://host:8786`` submits to a running scheduler (started with
  ``dask scheduler`` and ``dask worker tcp://host:8786 --nthreads 1`` on each
  node; all nodes must see the input and output paths).

GPUs: on a node with several GPUs, run one worker per GPU (``--workers`` =
number of GPUs, or ``dask worker --nworkers <GPUs>``); with ``--device auto``
or ``cuda`` the worker numbered *i* uses ``cuda:i mod <GPUs>``, while
``cuda:N`` puts every worker on GPU N.  (``dask-cuda``'s
``LocalCUDACluster`` pins one GPU per worker through
``CUDA_VISIBLE_DEVICES``, which works the same way.)  ``--max-memory`` is
per worker.

Examples
--------
>>> from crackseg.scaleout import worker_device
>>> worker_device("auto", worker_name=3, n_gpus=2)
'cuda:1'
>>> worker_device("cuda", worker_name="tcp-worker-2", n_gpus=4)
'cuda:2'
>>> worker_device("auto", worker_name=3, n_gpus=0)
'cpu'
"""

from __future__ import annotations

import copy
import os
import sys
import threading
import uuid

import numpy as np

from crackseg.errors import CracksegError

CHUNKED_MIN_VOXELS = 1 << 27
"""Inputs of at least this many voxels (512^3) are split into chunk tasks.

Below it, one input per task keeps every worker busy with no shared output;
above it, a single input takes minutes per worker and is better spread.  An
input given alone is always split.
"""

_MODEL_CACHE: dict = {}
_NET_CACHE: dict = {}
_READER_CACHE: dict = {}


def worker_device(device: str, *, worker_name=None, n_gpus: int | None = None) -> str:
    """Device of a worker: ``cuda:(index mod n_gpus)`` for ``"auto"``/``"cuda"`` with GPUs.

    The index is the worker's name, or the number after its last ``-``
    (``dask worker --nworkers``).  ``"cpu"`` and ``"cuda:N"`` are kept;
    ``"auto"`` without GPUs gives ``"cpu"``.
    """
    if device not in ("auto", "cuda"):
        return device
    if n_gpus is None:
        import torch

        n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n_gpus == 0:
        return "cpu" if device == "auto" else device
    try:
        idx = int(str(worker_name).rsplit("-", 1)[-1])
    except (TypeError, ValueError):
        idx = 0
    return f"cuda:{idx % n_gpus}"


def _worker_name():
    try:
        from dask.distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):
        return None


def _cached_model(model, device: str):
    from crackseg.model_io import load_model, resolve_model_path

    key = (str(resolve_model_path(model).resolve()), device)
    if key not in _MODEL_CACHE:
        _MODEL_CACHE[key] = load_model(model, device=device)
    return _MODEL_CACHE[key]


def predict_task(source, folder, model, options: dict) -> dict:
    """One Dask task: predict ``source`` into ``folder`` on this worker's device."""
    from crackseg.batch import predict_one_safely

    opts = dict(options)
    device = worker_device(opts.pop("device", "auto"), worker_name=_worker_name())
    opts["progress"] = False
    try:
        loaded = _cached_model(model, device)
    except CracksegError as e:
        return {"input": str(source), "folder": str(folder), "status": "failed",
                "error": str(e)}
    return predict_one_safely(source, folder, model=loaded, device=device, **opts)


# ------------------------------------------------------- chunks of one volume


def distributable_source(volume, out) -> str:
    """Absolute path of an input whose chunks workers can read; checks ``out``.

    Raises
    ------
    CracksegError
        If ``volume`` is an in-memory array or ``out`` is not given.
    """
    from crackseg.io import split_dataset_path

    if not isinstance(volume, (str, os.PathLike)):
        raise CracksegError("predicting on Dask workers needs the input as a file path, "
                            "not an array in memory")
    if out is None:
        raise CracksegError("predicting on Dask workers needs an output folder (out=) that "
                            "every worker can write")
    p, ds = split_dataset_path(volume)
    return str(p.resolve()) + (f":{ds}" if ds else "")


def _worker_settings(device: str, precision: str, dask_worker=None) -> tuple[str, str]:
    from crackseg.inference import resolve_device, resolve_precision

    name = dask_worker.name if dask_worker is not None else None
    dev = resolve_device(worker_device(device, worker_name=name))
    return dev, resolve_precision(precision, dev)


def cluster_devices(client, device: str, precision: str) -> tuple[str, str]:
    """Devices the workers will use and one precision they all share.

    Parameters
    ----------
    client : dask.distributed.Client
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, resolved on each worker
        (:func:`worker_device`).
    precision : {"fp32", "bf16", "auto"}
        ``"auto"`` becomes ``"bf16"`` only if every worker computes it
        natively, so that all chunks use the same arithmetic.

    Returns
    -------
    devices : str
        ``"cpu"``, or the distinct worker devices joined by commas.
    precision : str
    """
    try:
        client.wait_for_workers(1, timeout=60)
    except TimeoutError:
        raise CracksegError("the Dask cluster has no workers; start them with "
                            "`dask worker <scheduler address> --nthreads 1`") from None
    info = client.run(_worker_settings, device, precision)
    devices = sorted({d for d, _ in info.values()})
    precisions = {p for _, p in info.values()}
    return ",".join(devices), precisions.pop() if len(precisions) == 1 else "fp32"


def _worker_net(model, model_sha256, device: str):
    """The network of a chunk task on ``device``: loaded once per worker thread."""
    if not isinstance(model, str):
        return copy.deepcopy(model).to(device).eval()
    from crackseg.model_io import load_model

    key = (model, model_sha256, device, threading.get_ident())
    if key not in _NET_CACHE:
        _NET_CACHE[key] = load_model(model, device=device)[0]
    return _NET_CACHE[key]


def _worker_reader(source: str):
    """Block reader of ``source``, kept while the file is unchanged."""
    from crackseg.inference import block_reader
    from crackseg.io import read_volume, split_dataset_path

    st = split_dataset_path(source)[0].stat()
    key = (source, st.st_size, st.st_mtime_ns)
    if key not in _READER_CACHE:
        _READER_CACHE.clear()
        _READER_CACHE[key] = block_reader(read_volume(source, lazy=True).data)
    return _READER_CACHE[key]


def predict_chunk_task(chunk, *, model, model_sha256, source: str, device: str, lo: float,
                       hi: float, nan_policy: str, workdir: str, job: dict) -> int:
    """One Dask task: predict ``chunk`` of ``source`` and write its core into ``workdir``.

    Parameters
    ----------
    chunk : crackseg.tiling.Chunk
    model : str or torch.nn.Module
        Model directory (loaded once per worker) or a network.
    source : str
        Input volume path, read lazily (``chunk.ext``, ZYX voxels).
    device : str
        Requested device, resolved for this worker (:func:`worker_device`).
    lo, hi : float
        Grey values mapped to 0 and 1.
    workdir : str
        Folder of the Zarr stores created by
        :func:`crackseg.inference.predict_volume`.
    job : dict
        As for :func:`crackseg.inference.predict_chunk`.

    Returns
    -------
    int
        ``chunk.index``.
    """
    import torch
    import zarr

    from crackseg.inference import normalized_block, predict_chunk, resolve_device, sink_path
    from crackseg.uncertainty import enable_mc_dropout

    dev = resolve_device(worker_device(device, worker_name=_worker_name()))
    net = _worker_net(model, model_sha256, dev)
    block = normalized_block(_worker_reader(source), chunk.ext, lo, hi, nan_policy, source)
    try:
        if job["uncertainty"] == "mc":
            enable_mc_dropout(net)
        with torch.inference_mode():
            outputs = predict_chunk(net, block, chunk, {**job, "device": dev})
    finally:
        net.eval()
    for name, values in outputs.items():
        zarr.open_array(str(sink_path(workdir, name)), mode="r+")[chunk.core] = values
    return chunk.index


def run_chunks(client, chunks, task: dict, *, on_done, bar=None,
               stop_after_chunks: int | None = None) -> int:
    """Run :func:`predict_chunk_task` for every chunk on the cluster.

    Parameters
    ----------
    client : dask.distributed.Client
    chunks : list of crackseg.tiling.Chunk
    task : dict
        Keyword arguments of :func:`predict_chunk_task`; a network object as
        ``model`` is sent to every worker once.
    on_done : callable
        Called with each chunk when its task has finished, in completion order.
    bar : tqdm, optional
        Advanced by one per finished chunk.
    stop_after_chunks : int, optional
        Cancel the remaining tasks and raise :class:`KeyboardInterrupt`
        after this many chunks (simulates an interrupted run).

    Returns
    -------
    int
        Chunks run.
    """
    from dask.distributed import KilledWorker, as_completed

    if not chunks:
        return 0
    if not isinstance(task["model"], str):
        [net] = client.scatter([task["model"]], broadcast=True, hash=False)
        task = {**task, "model": net}
    token = uuid.uuid4().hex[:8]
    futures = {client.submit(predict_chunk_task, c, **task, key=f"crackseg-chunk-{token}-{c.index}",
                             pure=False): c for c in chunks}
    n_run = 0
    try:
        for fut in as_completed(futures):
            chunk = futures[fut]
            try:
                fut.result()
            except KilledWorker:
                raise CracksegError(
                    f"{task['source']}: a Dask worker died on chunk {chunk.index} (out of memory? "
                    "lower --max-memory or --chunk); run again to resume") from None
            on_done(chunk)
            n_run += 1
            if bar is not None:
                bar.update(1)
            if stop_after_chunks is not None and stop_after_chunks <= n_run < len(chunks):
                raise KeyboardInterrupt(f"stopped after {n_run} chunks")
    finally:
        client.cancel([f for f in futures if not f.done()])
    return n_run


# ------------------------------------------------------------------ batches


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
    from crackseg.batch import output_folders, predict_one_safely
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
