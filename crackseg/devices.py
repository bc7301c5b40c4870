"""Where the network runs and in which arithmetic: devices and precisions.

:func:`resolve_device` turns ``"auto"`` into the device of this process;
:func:`worker_device` picks the GPU of a Dask worker from its name, so that
the workers of a multi-GPU node share the GPUs out;
:func:`resolve_precision` picks bfloat16 where the hardware has it natively.

Examples
--------
>>> from crackseg.devices import worker_device
>>> worker_device("auto", worker_name=3, n_gpus=2)
'cuda:1'
>>> worker_device("cuda", worker_name="tcp-worker-2", n_gpus=4)
'cuda:2'
>>> worker_device("auto", worker_name=3, n_gpus=0)
'cpu'
"""

from __future__ import annotations

from crackseg.errors import CracksegError

PRECISIONS = ("auto", "fp32", "bf16")


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; checks others."""
    import torch

    device = str(device or "auto")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CracksegError(f"device {device}: no CUDA GPU is available; use --device cpu")
        idx = int(device.split(":")[1]) if ":" in device else 0
        if idx >= torch.cuda.device_count():
            raise CracksegError(f"device {device}: only {torch.cuda.device_count()} GPU(s) visible")
        return device
    if device != "cpu":
        raise CracksegError(f"device {device!r}: use auto, cpu, cuda or cuda:N")
    return device


def cpu_supports_bf16() -> bool:
    """Whether this CPU has native bfloat16 dot products (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"`` -> ``"bf16"`` where the hardware computes it natively, else ``"fp32"``."""
    if precision not in PRECISIONS:
        raise CracksegError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        import torch

        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_supports_bf16() else "fp32"


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


def dask_worker_name():
    """Name of the Dask worker running this code (``None`` outside a worker)."""
    try:
        from dask.distributed import get_worker

        return get_worker().name
    except (ImportError, ValueError):
        return None
