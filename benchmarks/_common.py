"""Shared parts of the benchmark scripts: machine record, results files, tables, peer methods.

Every result file records the machine (CPU model, cores, GPU if any, torch
version), the exact command, the crackseg version and git commit, and the
time it was written.

Examples
--------
>>> from benchmarks._common import machine_info, markdown_table   # doctest: +SKIP
>>> print(markdown_table([{"method": "rf", "dice": 0.5}], ["method", "dice"]))  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data"
"""Real data shipped beside the repository (``../shared/data``)."""
SHIPPED_MODEL = ROOT / "models" / "nmc4-synthetic-v1"

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- machine and provenance


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_info() -> list[str]:
    """Names of the CUDA devices torch sees (empty without one)."""
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA install only means "no GPU" here
        pass
    return []


def git_commit() -> str | None:
    """Commit of the working tree (with ``+dirty`` when files are modified), if known."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    """Where a benchmark ran: platform, CPU, cores, memory, GPU, library versions, load."""
    import torch

    from crackseg._version import __version__

    try:
        cores_usable = len(os.sched_getaffinity(0))
    except AttributeError:
        cores_usable = os.cpu_count()
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        mem_gb = None
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": cores_usable,
        "memory_gb": mem_gb,
        "gpu": gpu_info() or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "crackseg": __version__,
        "git_commit": git_commit(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
    }


def command_line() -> str:
    """The command that ran this script, as it could be typed again."""
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def results_path(name: str, quick: bool) -> Path:
    """``benchmarks/results/<name>.json`` (``<name>_quick.json`` in quick mode)."""
    return RESULTS / f"{name}{'_quick' if quick else ''}.json"


def write_results(name: str, payload: dict, *, quick: bool, machine: dict, started: float,
                  path=None) -> Path:
    """Write a benchmark's results (atomically) with machine, command and timing.

    ``path`` overrides :func:`results_path`.
    """
    from crackseg.io import json_safe, write_json

    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "quick": bool(quick),
        "command": command_line(),
        "written": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine,
        **payload,
    }
    path = Path(path) if path else results_path(name, quick)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, json_safe(record), overwrite=True)
    return path



# ---------------------------------------------------------------- tables


def fmt(v, digits: int = 3) -> str:
    """A table cell: numbers rounded, missing values as ``-``."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: list[dict], columns: list[str], *, digits: int = 3) -> str:
    """Rows of dicts as a Markdown table with the given columns."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c), digits) for c in columns) + " |")
    return "\n".join(lines)


def log(msg: str, quiet: bool = False) -> None:
    """A progress line on stderr."""
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- data and methods


def training_phantoms(n: int, shape, *, seed: int = 0, sparse_every: int = 12,
                      sparse_axes=(0, 1), **phantom_kwargs) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sparsely annotated phantoms ``(image, sparse labels)``, as the shipped model was trained on.

    Phantom ``i`` has seed ``seed + i`` and annotation offsets drawn from the
    same seed (:func:`crackseg.data.synthetic_pairs`), so with the defaults
    these are the shipped model's own training annotations.
    """
    from crackseg.data import synthetic_pairs

    return [(im, sp) for im, sp, _ in synthetic_pairs(n, shape, seed=seed, sparse_every=sparse_every,
                                                      sparse_axes=sparse_axes, **phantom_kwargs)]


RF_SETTINGS = {"quick": {"max_per_class": 5000, "n_estimators": 16, "sigma_max": 4.0},
               "full": {"max_per_class": 20000, "n_estimators": 100, "sigma_max": 8.0}}
"""Random-forest settings of :func:`fit_peers`: in full runs ilastik's default forest
(100 trees) on features at scales 0.5-8 voxels, at most 20000 annotated voxels per class."""


def fit_peers(pairs, *, schema=None, seed: int = 0, quick: bool = False, phase_order=None,
              quiet: bool = False, memory=None) -> tuple[dict, dict, dict]:
    """Fit the classical pipeline and the random forest on annotated images.

    ``memory`` (a joblib cache, see :func:`benchmarks.baselines.fit_random_forest`)
    keeps the random forest's pixel features of images seen in earlier calls.

    Returns
    -------
    methods : dict of str to callable
        ``{"classical": f, "random forest": g}``; each maps an image to labels.
    info : dict
        Tuned classical settings, forest training record, fitting times (s).
    probabilities : dict of str to callable
        ``{"random forest": h}``: image -> class probabilities (C, ...).
    """
    from benchmarks.baselines import (
        CLASSICAL_GRID,
        classical_segmentation,
        fit_random_forest,
        random_forest_probabilities,
        random_forest_segmentation,
        tune_classical,
    )
    from crackseg.labels import NMC4

    schema = schema or NMC4
    images = [im for im, _ in pairs]
    labels = [lb for _, lb in pairs]
    grid = {"sigma": [1.0], "offset": [-0.15, 0.0], "closing_radius": [1.5],
            "crack_width": [1.0, 1.5]} if quick else CLASSICAL_GRID
    t = time.time()
    tuned = tune_classical(images, labels, schema=schema, grid=grid, phase_order=phase_order,
                           progress=not quiet)
    t_classical = time.time() - t
    rf_kw = RF_SETTINGS["quick" if quick else "full"]
    t = time.time()
    forest = fit_random_forest(images, labels, schema=schema, seed=seed, progress=not quiet,
                               memory=memory, **rf_kw)
    t_rf = time.time() - t
    params = dict(tuned["params"])
    order = tuned["phase_order"] or phase_order

    def classical(image):
        return classical_segmentation(image, schema=schema, phase_order=order, **params)

    def random_forest(image):
        return random_forest_segmentation(image, forest, memory=memory, progress=not quiet)

    info = {"classical": {"params": params, "phase_order": order,
                          "tuning_score_mean_dice": tuned["score"],
                          "grid": {k: list(v) for k, v in grid.items()},
                          "fit_seconds": round(t_classical, 1)},
            "random forest": {**forest.training, **forest.feature_settings,
                              "fit_seconds": round(t_rf, 1)}}
    def rf_probabilities(image):
        return random_forest_probabilities(image, forest, memory=memory, progress=not quiet)

    return ({"classical": classical, "random forest": random_forest}, info,
            {"random forest": rf_probabilities})


def crackseg_method(model, *, quiet: bool = False):
    """An image -> labels function running :func:`crackseg.inference.predict_volume` (defaults)."""
    from crackseg.inference import predict_volume
    from crackseg.model_io import load_model

    loaded = load_model(model) if not isinstance(model, tuple) else model

    def segment(image):
        return np.asarray(predict_volume(loaded, image, progress=False, device="cpu").labels)

    return segment


def require_model(path) -> Path:
    """The model directory to benchmark, or a one-line error saying how to get it."""
    from crackseg.errors import InputError

    p = Path(path)
    if not (p / "model_card.json").exists():
        raise InputError(f"{p}: no model directory here; train and export the shipped model "
                         "(see training/nmc4_synthetic.yaml) or pass --model DIR")
    return p


def crackseg_probabilities(model, image) -> np.ndarray:
    """Softmax class probabilities (C, Z, Y, X) of a model on a volume.

    Tiled as ``crackseg predict`` tiles (:func:`crackseg.evaluation.predict_logits`).
    """
    import torch

    from crackseg.evaluation import predict_logits
    from crackseg.model_io import load_model

    net, card = load_model(model) if not isinstance(model, tuple) else model
    net.eval()
    return torch.softmax(predict_logits(net, card, image).float(), 0).numpy()
