"""Peak memory of ``crackseg predict``, ``crackseg particles`` and ``crackseg run`` on a 1024^3 volume.

Creates a 1024 x 1024 x 1024 uint16 tomogram on disk (2 GiB TIFF, written
slab by slab; it tiles a 128 x 256 x 256 phantom with mirror images so there
are no seams) and the matching 1 GiB label volume, then runs, each in its
own child process,

1. ``crackseg predict VOLUME --model M -o OUT --max-memory 3`` (out-of-core
   inference, Zarr outputs, particle instances of the prediction), and
2. ``crackseg particles LABELS -o OUT`` on the phantom's true labels (real
   particle geometry throughout the volume),

and records each child's peak resident memory (``getrusage`` of the child,
i.e. its VmHWM) and wall time.  The goal is a peak below 4 GB.

``--stage run`` runs the main job instead, ``crackseg run VOLUME --model M
-o OUT --max-memory G``, and records the peak resident memory of its whole
process tree (sampled every 0.2 s, with the child's own VmHWM beside it) and
the seconds and peak of each stage: ``predict`` (until ``segmentation.*``
appears), ``particles`` (until ``prediction.json``), ``statistics`` (until
``summary.json``) and ``report`` (until ``report.html``).  Goals (issue 14):
1024^3 at most 4 GB, 512^3 at most 2 GB.

Model ``M``: ``--model`` if given, else the shipped model, else a lean
random network (MONAI U-Net channels 8-16-32, one residual unit) whose
labels are meaningless but whose memory behaviour is that of any model (the
window activations scale with the first level's width).

Usage::

    nice -n 10 python benchmarks/memory.py            # 1024^3 (long on a 2-core CPU)
    nice -n 10 python benchmarks/memory.py --quick    # 256^3
    nice -n 10 python benchmarks/memory.py --stage run --size 512 --max-memory 1.5

Writes ``benchmarks/results/memory.json`` (``memory_quick.json``); ``--stage
run`` writes ``memory_run_<size>.json`` (``memory_run_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crackseg.model_io import default_model_dir, new_card, save_model  # noqa: E402
from crackseg.nets import build_network, unet_architecture  # noqa: E402
from crackseg.synthetic import generate_electrode  # noqa: E402

TILE = (128, 256, 256)


def mirrored_tile(tile: np.ndarray, z0: int, z1: int, shape) -> np.ndarray:
    """Slab [z0, z1) of ``shape`` tiled with mirrored copies of ``tile``."""
    def idx(n, size):
        i = np.arange(n) % (2 * size)
        return np.where(i < size, i, 2 * size - 1 - i)

    zi = idx(shape[0], tile.shape[0])[z0:z1]
    yi = idx(shape[1], tile.shape[1])
    xi = idx(shape[2], tile.shape[2])
    return tile[np.ix_(zi, yi, xi)]


def write_tiled_tiff(path: Path, tile: np.ndarray, shape, voxel_size_um: float, slab: int = 32):
    import tifffile

    def pages():
        for z0 in range(0, shape[0], slab):
            block = mirrored_tile(tile, z0, min(shape[0], z0 + slab), shape)
            yield from block

    tmp = path.with_name(path.name + ".part.tif")
    tifffile.imwrite(tmp, pages(), shape=tuple(shape), dtype=tile.dtype, imagej=True,
                     resolution=(1 / voxel_size_um, 1 / voxel_size_um),
                     metadata={"axes": "ZYX", "spacing": voxel_size_um, "unit": "um"})
    os.replace(tmp, path)


def measured(cmd: list[str]) -> dict:
    """Run ``cmd`` in a child that reports the grandchild's peak RSS and time."""
    wrapper = (
        "import resource, subprocess, sys, time, json\n"
        "t = time.perf_counter()\n"
        "r = subprocess.run(sys.argv[1:])\n"
        "print(json.dumps({'rc': r.returncode, 'seconds': time.perf_counter() - t,\n"
        "  'peak_rss_gb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20}))\n"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *cmd], capture_output=True, text=True)
    sys.stderr.write(out.stderr[-3000:])
    return {"command": " ".join(cmd), **json.loads(out.stdout.strip().splitlines()[-1])}


RUN_STAGES = (("predict", "segmentation"), ("particles", "prediction.json"),
              ("statistics", "summary.json"), ("report", "report.html"))
"""Stages of ``crackseg run`` and the output whose appearance ends each."""


def tree_rss(proc) -> int:
    """Resident bytes of a process and all its descendants (0 once it is gone)."""
    import psutil

    total = 0
    try:
        for p in [proc, *proc.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        return 0
    return total


def stage_of(folder: Path) -> int:
    """Index in :data:`RUN_STAGES` of the stage an output folder is in (by the files present)."""
    names = {p.name.split(".")[0] if p.name.startswith("segmentation") else p.name
             for p in folder.iterdir()} if folder.exists() else set()
    return next((i for i, (_, done) in enumerate(RUN_STAGES) if done not in names),
                len(RUN_STAGES) - 1)


def measured_run(cmd: list[str], folder: Path, interval: float = 0.2) -> dict:
    """Run ``cmd`` (``crackseg run``), sampling its process tree's RSS; peak and time per stage."""
    import psutil

    wrapper = ("import resource, subprocess, sys\n"
               "r = subprocess.run(sys.argv[1:])\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)\n"
               "sys.exit(r.returncode)\n")
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", wrapper, *cmd], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(child.pid)
    stages = [{"stage": name, "seconds": 0.0, "peak_rss_gb": 0.0} for name, _ in RUN_STAGES]
    last = t0
    while child.poll() is None:
        time.sleep(interval)
        now, rss, i = time.perf_counter(), tree_rss(proc), stage_of(folder)
        stages[i]["seconds"] += now - last
        stages[i]["peak_rss_gb"] = max(stages[i]["peak_rss_gb"], rss / 1e9)
        last = now
    out, err = child.communicate()
    sys.stderr.write(err[-3000:])
    (folder.parent / "stderr.txt").write_text(err)  # progress bars with their times (--keep)
    lines = out.strip().splitlines()
    for st in stages:
        st["seconds"] = round(st["seconds"], 1)
        st["peak_rss_gb"] = round(st["peak_rss_gb"], 3)
    return {"command": " ".join(cmd), "rc": child.returncode,
            "seconds": round(time.perf_counter() - t0, 1),
            "peak_rss_gb": round(max(s["peak_rss_gb"] for s in stages), 3),
            "peak_rss_gb_largest_process": round(float(lines[-1]) * 2**30 / 1e9, 3)
            if lines else None,
            "per_stage": stages, "rss_sampled_every_s": interval}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="256^3 instead of 1024^3")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--max-memory", type=float, default=3.0)
    ap.add_argument("--workdir", default=None, help="where the volumes go (default /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the volumes and outputs")
    ap.add_argument("--stage", choices=("all", "predict", "particles", "run"), default="all",
                    help="run one stage only (results are merged into the JSON); run: the "
                         "main job, crackseg run, on its own (memory_run_*.json)")
    args = ap.parse_args(argv)
    n = args.size or (256 if args.quick else 1024)
    shape = (n, n, n)
    work = Path(args.workdir or f"/tmp/crackseg-memory-{n}")
    work.mkdir(parents=True, exist_ok=True)
    vol, lab = work / "volume.tif", work / "labels.tif"
    if not (vol.exists() and lab.exists()):
        t = time.perf_counter()
        ph = generate_electrode(TILE, seed=0)
        write_tiled_tiff(vol, ph.image, shape, ph.voxel_size_um[0])
        write_tiled_tiff(lab, ph.labels, shape, ph.voxel_size_um[0])
        print(f"volumes written in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    if args.model:
        model, model_note = args.model, args.model
    elif (default_model_dir() / "model_card.json").exists():
        model, model_note = str(default_model_dir()), f"shipped {default_model_dir().name}"
    else:
        import torch

        torch.manual_seed(0)
        arch = unet_architecture(3, out_channels=4, channels=(8, 16, 32), num_res_units=1)
        model = work / "lean-model"
        if not model.exists():
            save_model(build_network(arch), new_card("lean-random", arch, patch_size=(96,) * 3),
                       model)
        model = str(model)
        model_note = "lean random network, MONAI UNet channels (8, 16, 32), 1 residual unit"
    out = work / ("out" if args.stage == "all" else f"out-{args.stage}")
    shutil.rmtree(out, ignore_errors=True)
    cli = [sys.executable, "-m", "crackseg"]
    if args.stage == "run":
        return run_stage(args, cli, vol, model, model_note, out, shape, argv)
    dest = ROOT / "benchmarks" / "results" / ("memory_quick.json" if args.quick else "memory.json")
    previous = json.loads(dest.read_text()) if dest.exists() and args.stage != "all" else {}
    # Stages of an earlier run merge in only if they completed (they carry an exit status).
    stages = {k: v for k, v in previous.get("stages", {}).items() if "rc" in v}
    if args.stage in ("all", "predict"):
        stages["predict"] = measured(cli + ["predict", str(vol), "--model", model, "-o",
                                            str(out / "pred"), "--max-memory",
                                            str(args.max_memory)])
    if args.stage in ("all", "particles"):
        stages["particles"] = measured(cli + ["particles", str(lab), "-o", str(out / "part")])
    record = {
        "volume": {"shape": list(shape), "dtype": "uint16",
                   "bytes_on_disk": vol.stat().st_size, "path": str(vol)},
        "model": model_note, "max_memory_gb": args.max_memory, "stages": stages,
        "goal_peak_rss_gb": 4.0,
        "passed": all(s["rc"] == 0 and s["peak_rss_gb"] < 4.0 for s in stages.values()),
        "machine": {"cores": os.cpu_count(), "load_average_after": os.getloadavg()},
        "command": "python benchmarks/memory.py " + " ".join(argv or sys.argv[1:]),
    }
    pred_json = out / "pred" / "volume" / "prediction.json"
    if "prediction" in previous:
        record["prediction"] = previous["prediction"]
    if pred_json.exists():
        record["prediction"] = {k: v for k, v in json.loads(pred_json.read_text()).items()
                                if k in ("n_particles", "timing_s", "voxels_per_s", "settings")}
    dest.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(stages, indent=2))
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if record["passed"] else 1


def run_stage(args, cli, vol: Path, model: str, model_note: str, out: Path, shape,
              argv) -> int:
    """``--stage run``: ``crackseg run`` on the volume; writes ``memory_run_*.json``."""
    from benchmarks._common import machine_info

    n = shape[0]
    goal = 4.0 if n > 512 else 2.0
    cmd = cli + ["run", str(vol), "--model", model, "-o", str(out), "--max-memory",
                 str(args.max_memory)]
    result = measured_run(cmd, out / "volume")
    summary = out / "volume" / "summary.json"
    record = {
        "volume": {"shape": list(shape), "dtype": "uint16", "bytes_on_disk": vol.stat().st_size},
        "model": model_note, "max_memory_gb": args.max_memory, "run": result,
        "goal_peak_rss_gb": goal,
        "passed": result["rc"] == 0 and result["peak_rss_gb"] <= goal,
        "n_particles": json.loads(summary.read_text()).get("n_particles")
        if summary.exists() else None,
        "machine": machine_info(),
        "command": "python benchmarks/memory.py " + " ".join(argv or sys.argv[1:]),
    }
    name = "memory_run_quick.json" if args.quick else f"memory_run_{n}.json"
    dest = ROOT / "benchmarks" / "results" / name
    dest.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return 0 if record["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
