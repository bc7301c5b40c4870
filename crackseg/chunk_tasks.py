"""Chunks of one volume as tasks on a Dask cluster.

With a ``dask.distributed`` client, :func:`crackseg.inference.predict_volume`
hands its chunks to :func:`run_chunks`: each chunk is one task
(:func:`predict_chunk_task`).  The worker loads the model once, reads the
chunk and its halo lazily from the input file, runs the network
(:func:`crackseg.chunk_inference.predict_chunk`) and writes the chunk's core
into the Zarr stores of the output's work folder (chunk-aligned regions, so
concurrent writes never touch the same Zarr chunk).  The calling process
records each finished chunk, so an interrupted run resumes; results are
bit-identical to a serial run.

Devices are resolved on each worker (:func:`crackseg.devices.worker_device`);
:func:`cluster_devices` checks them and picks one precision for all.
Which inputs go to which cluster is decided above, in :mod:`crackseg.scaleout`.

Examples
--------
>>> distributable_source("scan.tif", "out/scan/.work").endswith("scan.tif")
True
"""

from __future__ import annotations

import copy
import os
import threading
import uuid

from crackseg.chunk_inference import block_reader, normalized_block, predict_chunk
from crackseg.chunk_store import sink_path
from crackseg.devices import dask_worker_name, resolve_device, resolve_precision, worker_device
from crackseg.errors import CracksegError
from crackseg.uncertainty import enable_mc_dropout

_NET_CACHE: dict = {}
_READER_CACHE: dict = {}


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
        :func:`crackseg.inference.predict_volume` (:class:`crackseg.chunk_store.ChunkStore`).
    job : dict
        As for :func:`crackseg.chunk_inference.predict_chunk`.

    Returns
    -------
    int
        ``chunk.index``.
    """
    import torch
    import zarr

    dev = resolve_device(worker_device(device, worker_name=dask_worker_name()))
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
