"""Inference time and peak memory vs volume size: ``crackseg predict`` and ``crackseg particles``.

For each volume edge N (default 128, 256, 512; ``--quick``: 64, 128) a
N x N x N uint16 tomogram is written to a work folder (mirrored tiles of one
phantom, as in ``memory.py``, so there are no seams), then two stages run,
each in its own child process through the real command line, exactly as a
user runs them:

1. ``python -m crackseg predict VOLUME --model MODEL -o OUT --no-particles --quiet``
2. ``python -m crackseg particles SEGMENTATION -o OUT --quiet`` on the
   segmentation that stage 1 wrote.

Recorded per stage: wall time of the child (interpreter start, imports and
model loading included), voxels/s from it, the in-process time that
``predict`` writes to its ``prediction.json`` (reading, inference, writing),
the child's peak resident memory (``getrusage(RUSAGE_CHILDREN)``, see
``memory.py``), the exit status, the load average before the stage and the
exact command.  One extra child measures the fixed cost of a process
(interpreter, torch import, model loading) for reading the small sizes.

The 1024^3 point of ``benchmarks/results/memory.json`` is added to the table
(marked "from memory.py") when that run passed and recorded its timings;
its predict stage also labelled particles and its particles stage ran on the
phantom's true labels.

Model: ``--model`` or the shipped default model.

Usage::

    nice -n 10 python benchmarks/scaling.py            # 128^3, 256^3, 512^3
    nice -n 10 python benchmarks/scaling.py --quick    # 64^3, 128^3
    nice -n 10 python benchmarks/scaling.py --sizes 128 384

Writes ``benchmarks/results/scaling.json`` (``scaling_quick.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import (  # noqa: E402
    RESULTS,
    SHIPPED_MODEL,
    log,
    machine_info,
    markdown_table,
    require_model,
    write_results,
)
from benchmarks.memory import TILE, measured, write_tiled_tiff  # noqa: E402
from crackseg.errors import CracksegError  # noqa: E402

QUICK_TILE = (64, 128, 128)


def tiled_volume(work: Path, n: int, tile_shape, seed: int = 0, cache: dict | None = None) -> Path:
    """An n^3 uint16 phantom tomogram (mirrored tiles) in ``work``; reused when present.

    ``cache`` holds the generated tile between calls (key ``"tile"``).
    """
    from crackseg.synthetic import generate_electrode

    path = work / f"volume-{n}-tile{'x'.join(map(str, tile_shape))}-seed{seed}.tif"
    if path.exists():
        return path
    cache = {} if cache is None else cache
    if "tile" not in cache:
        t = time.perf_counter()
        cache["tile"] = generate_electrode(tuple(tile_shape), seed=seed)
        log(f"phantom tile {tuple(tile_shape)} generated in {time.perf_counter() - t:.0f} s")
    ph = cache["tile"]
    write_tiled_tiff(path, ph.image, (n, n, n), ph.voxel_size_um[0])
    return path


def staged(cmd: list[str], n_voxels: int) -> dict:
    """:func:`memory.measured` of one stage, with voxels/s and the load average before it."""
    load = [round(v, 2) for v in os.getloadavg()]
    r = measured(cmd)
    r["load_average_before"] = load
    r["voxels_per_s"] = n_voxels / r["seconds"] if r["rc"] == 0 else None
    return r


def process_overhead(model: str) -> dict:
    """Time and peak RSS of a child that only starts, imports crackseg/torch and loads the model."""
    code = ("import sys; from crackseg.inference import predict_volume; "
            "from crackseg.model_io import load_model; load_model(sys.argv[1])")
    return measured([sys.executable, "-c", code, model])


def size_point(vol: Path, n: int, model: str, work: Path, max_memory: float | None) -> dict:
    """Run both stages on one volume; their records and the prediction's own timing."""
    n_vox = n**3
    out = work / f"out-{n}"
    shutil.rmtree(out, ignore_errors=True)
    cli = [sys.executable, "-m", "crackseg"]
    cmd = cli + ["predict", str(vol), "--model", model, "-o", str(out / "pred"),
                 "--no-particles", "--quiet"]
    if max_memory is not None:
        cmd += ["--max-memory", str(max_memory)]
    log(f"{n}^3: predict")
    pred = staged(cmd, n_vox)
    point = {"size": n, "voxels": n_vox, "source": "scaling.py", "predict": pred}
    found = sorted((out / "pred").glob("*/prediction.json"))
    if pred["rc"] == 0 and found:
        info = json.loads(found[0].read_text())
        t_in = info.get("timing_s", {}).get("predict")
        pred["in_process_s"] = t_in
        pred["voxels_per_s_in_process"] = n_vox / t_in if t_in else None
        pred["settings"] = info.get("settings")
        seg = [p for p in found[0].parent.glob("segmentation.*")]
        if seg:
            log(f"{n}^3: particles")
            point["particles"] = staged(cli + ["particles", str(seg[0]), "-o",
                                               str(out / "particles"), "--quiet"], n_vox)
    return point


def memory_py_point(path: Path) -> dict | None:
    """The 1024^3 point of ``memory.json`` when that run passed and recorded timings."""
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    timing = (rec.get("prediction") or {}).get("timing_s")
    stages = rec.get("stages", {})
    if not rec.get("passed") or not timing or "predict" not in stages:
        return None
    n = int(rec["volume"]["shape"][0])
    n_vox = 1
    for s in rec["volume"]["shape"]:
        n_vox *= int(s)
    pred = dict(stages["predict"])
    pred["in_process_s"] = timing.get("predict")
    pred["voxels_per_s_in_process"] = n_vox / timing["predict"] if timing.get("predict") else None
    pred["voxels_per_s"] = n_vox / pred["seconds"] if pred.get("seconds") else None
    pred["note"] = "predict with particle labelling (wall time and peak RSS cover both)"
    point = {"size": n, "voxels": n_vox, "source": "from memory.py", "model": rec.get("model"),
             "predict": pred}
    if "particles" in stages:
        part = dict(stages["particles"])
        part["voxels_per_s"] = n_vox / part["seconds"] if part.get("seconds") else None
        part["note"] = "on the phantom's true labels"
        point["particles"] = part
    return point


def table_rows(points: list[dict]) -> list[dict]:
    rows = []
    for p in points:
        for stage in ("predict", "particles"):
            r = p.get(stage)
            if r is None:
                continue
            rows.append({
                "size": f"{p['size']}^3", "stage": stage, "rc": r.get("rc"),
                "wall s": r.get("seconds"),
                "Mvox/s (wall)": (r.get("voxels_per_s") or 0) / 1e6 or None,
                "Mvox/s (in process)": (r.get("voxels_per_s_in_process") or 0) / 1e6 or None,
                "peak RSS GB": r.get("peak_rss_gb"), "source": p["source"],
            })
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64^3 and 128^3 only")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, metavar="N",
                    help="volume edges (default 128 256 512; --quick 64 128)")
    ap.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    ap.add_argument("--max-memory", type=float, default=None, metavar="GB",
                    help="passed to crackseg predict (default: its own)")
    ap.add_argument("--workdir", default=None,
                    help="folder for volumes and outputs (default /tmp/crackseg-scaling)")
    ap.add_argument("--keep", action="store_true", help="keep the outputs (volumes are kept)")
    ap.add_argument("--out", default=None, help="results file (default benchmarks/results/...)")
    args = ap.parse_args(argv)
    started = time.time()
    sizes = args.sizes or ([64, 128] if args.quick else [128, 256, 512])
    tile = QUICK_TILE if args.quick else TILE
    try:
        model = str(require_model(args.model or SHIPPED_MODEL))
    except CracksegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    work = Path(args.workdir or "/tmp/crackseg-scaling")
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()

    overhead = process_overhead(model)
    log(f"process start + imports + model load: {overhead['seconds']:.1f} s, "
        f"{overhead['peak_rss_gb']:.2f} GB")
    cache: dict = {}
    points = []
    for n in sizes:
        vol = tiled_volume(work, n, tile, cache=cache)
        points.append(size_point(vol, n, model, work, args.max_memory))
        if not args.keep:
            shutil.rmtree(work / f"out-{n}", ignore_errors=True)
    extra = memory_py_point(RESULTS / "memory.json")
    if extra is not None and extra["size"] not in sizes:
        points.append(extra)
    payload = {
        "model": model, "tile": list(tile), "phantom_seed": 0, "workdir": str(work),
        "process_overhead": overhead,
        "points": points,
        "memory_py_point": "merged" if extra is not None else
        "not merged: benchmarks/results/memory.json has no passed run with timings",
        "note": "each stage is one child process running the crackseg command line; wall time "
                "includes interpreter start, imports and model loading (see process_overhead)",
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    dest = write_results("scaling", payload, quick=args.quick, machine=machine, started=started,
                         path=args.out)
    print(markdown_table(table_rows(points), ["size", "stage", "rc", "wall s", "Mvox/s (wall)",
                                              "Mvox/s (in process)", "peak RSS GB", "source"]))
    print(f"-> {dest}")
    failed = [p["size"] for p in points for s in ("predict", "particles")
              if s in p and p[s].get("rc") not in (0, None)]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
