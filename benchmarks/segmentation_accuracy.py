"""Segmentation accuracy of crackseg against the methods users run today.

Three parts, all scored on every voxel (or pixel) of data never trained on:

1. **Phantoms** (``phantoms``): held-out phantom electrodes (several seeds)
   under several imaging settings (default; low signal-to-noise; stronger
   blur).  Methods: the classical pipeline (multi-Otsu + morphology, tuned by
   grid search) and a random-forest pixel classifier (ilastik-style: ilastik's
   default 100 trees, 25 multiscale features, at most 20 000 annotated voxels
   per class; ``RF_SETTINGS`` in ``benchmarks/_common.py``), both
   fitted on the *same* sparse slice annotations the shipped model was
   trained on (phantom seeds 0-5, every 12th z- and y-slice), and the shipped
   crackseg model.  Per-class Dice, and for cracks clDice (centre-line Dice)
   and boundary F1 (1-voxel tolerance).
2. **Annotation curve** (``annotation_curve``): a new imaging setting (low SNR
   and more blur); one phantom annotated on 1, 3, 10 or 30 evenly spaced
   z-slices; crackseg fine-tuned from the shipped model vs trained from
   scratch (same network, data pipeline and step budget), the classical
   pipeline and the random forest fitted on the same slices; scored on a
   second phantom of that setting.  The shipped model without fine-tuning is
   the 0-slice reference.  The random forest's features of the two phantoms
   are computed once and reused for every slice count.
3. **Real slices** (``real_slices``): the SegmentPy nano-CT slices in
   ``../shared/data/segmentpy`` (own 3-class schema particle / binder / pore),
   with the train/test split of ``benchmarks/segmentpy_2d.py``: the classical
   pipeline and the random forest fitted on the training slices of each
   group.  crackseg's numbers there (2-D model fine-tuned on those slices)
   are read from ``benchmarks/results/segmentpy_2d.json`` when it exists.

Usage::

    nice -n 10 python benchmarks/segmentation_accuracy.py           # target < 18 min, idle 2-core CPU
    python benchmarks/segmentation_accuracy.py --quick              # < 1 min (CI)

When only the model changed, ``--reuse-peers`` keeps the peer results of the
existing results file and reruns crackseg alone; ``--crackseg-only --out F``
runs crackseg alone into ``F`` and ``--merge PEERS.json F`` combines two runs
made with the same settings.

Writes ``benchmarks/results/segmentation_accuracy.json`` (``..._quick.json``
with ``--quick``) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import (  # noqa: E402
    DATA,
    RESULTS,
    SHIPPED_MODEL,
    crackseg_method,
    crackseg_probabilities,
    fit_peers,
    log,
    machine_info,
    markdown_table,
    require_model,
    training_phantoms,
    write_results,
)

FULL = {
    "train": {"n": 6, "shape": [128, 128, 128], "seed": 0, "sparse_every": 12, "sparse_axes": [0, 1]},
    "eval_shape": [128, 128, 128],
    "eval_seeds": [1000, 1001],
    "settings": {"default": {}, "low_snr": {"snr": 4.0}, "blur": {"blur_sigma": 2.0}},
    "curve": {"setting": {"snr": 4.0, "blur_sigma": 1.8}, "shape": [96, 96, 96],
              "train_seed": 3000, "eval_seed": 3001, "slices": [1, 3, 10, 30],
              "steps": 40, "patch": [48, 48, 48], "batch_size": 2,
              "lr_finetune": 2e-4, "lr_scratch": 1e-3},
    "real": True,
}
QUICK = {
    "train": {"n": 2, "shape": [64, 64, 64], "seed": 0, "sparse_every": 8, "sparse_axes": [0, 1]},
    "eval_shape": [64, 64, 64],
    "eval_seeds": [1000],
    "settings": {"default": {}, "low_snr": {"snr": 4.0}},
    "curve": {"setting": {"snr": 4.0, "blur_sigma": 1.8}, "shape": [48, 48, 48],
              "train_seed": 3000, "eval_seed": 3001, "slices": [1, 3],
              "steps": 4, "patch": [32, 32, 32], "batch_size": 2,
              "lr_finetune": 2e-4, "lr_scratch": 1e-3},
    "real": True,
}
LABELS_FROM_PROBABILITIES = ("random forest",)
"""Methods whose labels are the argmax of their probabilities: where both are
scored, the probabilities are computed once."""
CLASSES = ("matrix", "particle", "crack", "pore")
REAL_CLASSES = ("particle", "binder", "pore")


# ---------------------------------------------------------------- scoring


def record_time(timings: dict, key: str, start: tuple[float, float]) -> None:
    """Wall seconds (``<key>_s``) and this process's CPU seconds, all threads
    (``<key>_cpu_s``), since ``start = (time.time(), time.process_time())``."""
    timings[f"{key}_s"] = round(time.time() - start[0], 1)
    timings[f"{key}_cpu_s"] = round(time.process_time() - start[1], 1)


def score(pred: np.ndarray, truth: np.ndarray, schema) -> dict:
    """Per-class Dice, and crack clDice / boundary F1 when the schema has cracks."""
    from crackseg.metrics import boundary_f1, cldice, dice_per_class

    out = {"dice": dice_per_class(pred, truth, schema)}
    if schema.has("crack"):
        c = schema.value("crack")
        out["crack_cldice"] = cldice(pred == c, truth == c)
        out["crack_boundary_f1"] = boundary_f1(pred == c, truth == c, tolerance=1.0)
    return out


def mean_scores(scores: list[dict]) -> dict:
    """Mean of per-volume scores (NaN-aware)."""
    out = {"dice": {k: float(np.nanmean([s["dice"][k] for s in scores])) for k in scores[0]["dice"]}}
    for k in ("crack_cldice", "crack_boundary_f1", "ece"):
        have = [s[k] for s in scores if k in s]
        if have:
            out[k] = float(np.mean(have))
    return out


def flat_row(name: str, s: dict, **extra) -> dict:
    row = {"method": name, **extra}
    row.update({f"{k} Dice": v for k, v in s["dice"].items()})
    if "crack_cldice" in s:
        row["crack clDice"] = s["crack_cldice"]
        row["crack BF1"] = s["crack_boundary_f1"]
    if "ece" in s:
        row["ECE"] = s["ece"]
    return row


# ---------------------------------------------------------------- part 1: phantoms


def phantom_part(cfg: dict, methods: dict, probabilities: dict, quiet: bool,
                 previous: list | None = None) -> dict:
    from crackseg.labels import NMC4
    from crackseg.metrics import expected_calibration_error
    from crackseg.synthetic import generate_electrode

    per_volume = list(previous or [])
    for setting, kw in cfg["settings"].items():
        for seed in cfg["eval_seeds"]:
            ph = generate_electrode(tuple(cfg["eval_shape"]), seed=seed, **kw)
            for name, fn in methods.items():
                calibrate = setting == "default" and name in probabilities
                t = time.time()
                if calibrate and name in LABELS_FROM_PROBABILITIES:
                    probs = probabilities[name](ph.image)
                    pred = NMC4.values_lut()[probs.argmax(0)]
                else:
                    probs, pred = None, fn(ph.image)
                secs = time.time() - t
                s = score(pred, ph.labels, NMC4)
                if calibrate:
                    idx = NMC4.index_lut()[ph.labels]
                    if probs is None:
                        probs = probabilities[name](ph.image)
                    s["ece"] = expected_calibration_error(probs, idx)
                del probs
                per_volume.append({"setting": setting, "seed": seed, "method": name,
                                   "seconds": round(secs, 2), **s})
                log(f"phantom {setting} seed {seed} {name}: crack Dice "
                    f"{s['dice']['crack']:.3f}, pore Dice {s['dice']['pore']:.3f} ({secs:.0f} s)", quiet)
    return phantom_summary(cfg, per_volume)


def phantom_summary(cfg: dict, per_volume: list) -> dict:
    """Phantom part of the results: per-volume rows and their means per setting and method."""
    names = list(dict.fromkeys(r["method"] for r in per_volume))
    summary = {}
    for setting in cfg["settings"]:
        summary[setting] = {name: mean_scores([r for r in per_volume
                                               if r["setting"] == setting and r["method"] == name])
                            for name in names}
    summary["all"] = {name: mean_scores([r for r in per_volume if r["method"] == name])
                      for name in names}
    return {"settings": cfg["settings"], "eval_seeds": cfg["eval_seeds"],
            "shape": cfg["eval_shape"], "per_volume": per_volume, "summary": summary}


# ---------------------------------------------------------------- part 2: annotation curve


def keep_slices(labels: np.ndarray, n: int, axis: int = 0, ignore: int = 255) -> np.ndarray:
    """Labels on ``n`` evenly spaced slices along ``axis``; ``ignore`` elsewhere."""
    size = labels.shape[axis]
    idx = np.unique(np.round(np.linspace(0, size - 1, n + 2)[1:-1]).astype(int)) if n < size \
        else np.arange(size)
    out = np.full(labels.shape, ignore, np.uint8)
    sl = [slice(None)] * labels.ndim
    sl[axis] = idx
    out[tuple(sl)] = labels[tuple(sl)]
    return out


def random_init_model(parent: Path, out: Path, seed: int) -> Path:
    """A model directory with the parent's architecture, card and freshly initialised weights."""
    import torch

    from crackseg.model_io import new_card, read_card, save_model
    from crackseg.nets import build_network

    card = read_card(parent)
    torch.manual_seed(seed)
    net = build_network(card["architecture"])
    fresh = new_card("random-init", card["architecture"], schema=card["schema"],
                     patch_size=card.get("patch_size"), normalization=card.get("normalization"),
                     description="randomly initialised network (training from scratch)")
    return save_model(net, fresh, out)


def curve_part(cfg: dict, model: Path, quick: bool, seed: int, quiet: bool,
               previous: list | None = None, crackseg_only: bool = False) -> dict:
    from joblib import Memory

    from crackseg.finetune import finetune_model
    from crackseg.io import write_volume
    from crackseg.labels import NMC4
    from crackseg.synthetic import generate_electrode

    c = cfg["curve"]
    train_ph = generate_electrode(tuple(c["shape"]), seed=c["train_seed"], **c["setting"])
    eval_ph = generate_electrode(tuple(c["shape"]), seed=c["eval_seed"], **c["setting"])
    rows = []
    shipped = crackseg_method(model, quiet=quiet)
    s = score(shipped(eval_ph.image), eval_ph.labels, NMC4)
    rows.append({"slices": 0, "method": "crackseg shipped (no fine-tuning)", **s})
    with tempfile.TemporaryDirectory(prefix="crackseg-bench-") as tmp:
        tmp = Path(tmp)
        img_path = write_volume(tmp / "image.tif", train_ph.image, train_ph.voxel_size_um)
        scratch_parent = random_init_model(model, tmp / "random-init", seed)
        # the random forest's features of the two phantoms, computed once for all slice counts
        features = Memory(tmp / "features", verbose=0)
        for n in c["slices"]:
            sparse = keep_slices(train_ph.labels, n)
            lab_path = write_volume(tmp / f"labels_{n}.tif", sparse, train_ph.voxel_size_um,
                                    overwrite=True)
            old = [r for r in previous or [] if r["slices"] == n and not r["method"].startswith("crackseg")]
            rows += old
            peers, info = ({}, {}) if old or crackseg_only else \
                fit_peers([(train_ph.image, sparse)], seed=seed, quick=quick, quiet=True,
                          memory=features)[:2]
            for name, fn in peers.items():
                t = time.time()
                s = score(fn(eval_ph.image), eval_ph.labels, NMC4)
                rows.append({"slices": n, "method": name, "fit_seconds": info[name]["fit_seconds"],
                             "predict_seconds": round(time.time() - t, 1), **s})
            for key, name, parent, lr in (
                    ("finetuned", "crackseg fine-tuned", model, c["lr_finetune"]),
                    ("scratch", "crackseg from scratch", scratch_parent, c["lr_scratch"])):
                t = time.time()
                out = finetune_model(parent, [img_path], [lab_path], tmp / f"model_{n}_{key}",
                                     max_steps=c["steps"], lr=lr, batch_size=c["batch_size"],
                                     patch_size=c["patch"], seed=seed, run_dir=tmp / f"run_{n}_{key}",
                                     quiet=True, accelerator="cpu")
                fit_s = time.time() - t
                s = score(crackseg_method(out, quiet=quiet)(eval_ph.image), eval_ph.labels, NMC4)
                rows.append({"slices": n, "method": name, "fit_seconds": round(fit_s, 1),
                             "steps": c["steps"], "lr": lr, **s})
            log(f"curve {n} slices: " + ", ".join(
                f"{r['method']} crack {r['dice']['crack']:.3f}" for r in rows if r["slices"] == n), quiet)
    return {**c, "rows": rows}


# ---------------------------------------------------------------- part 3: real slices


def real_part(quick: bool, seed: int, quiet: bool) -> dict | None:
    import tifffile

    from benchmarks.segmentpy_2d import GROUPS
    from crackseg.labels import load_schema
    from crackseg.metrics import dice_per_class

    folder = DATA / "segmentpy"
    if not folder.exists():
        log(f"{folder}: not found; real-slice part skipped", quiet)
        return None
    schema = load_schema(Path(__file__).resolve().parents[1] / "training" / "schemas" / "segmentpy3.yaml")

    def read(n):
        return (tifffile.imread(folder / f"{n}.tif").astype(np.float32),
                tifffile.imread(folder / f"{n}_label.tif").astype(np.uint8))

    groups = {}
    for g, split in GROUPS.items():
        train = [read(n) for n in split["train"]]
        test = [read(n) for n in split["test"]]
        truth = np.concatenate([lb.ravel() for _, lb in test])
        peers, info, _ = fit_peers(train, schema=schema, seed=seed, quick=quick, quiet=True)
        res = {"train_slices": split["train"], "test_slices": split["test"]}
        for name, fn in peers.items():
            pred = np.concatenate([fn(im).ravel() for im, _ in test])
            res[name] = {"dice": dice_per_class(pred, truth, schema), "fit": info[name]}
        groups[g] = res
        log(f"real slices group {g}: " + ", ".join(
            f"{k} pore {res[k]['dice']['pore']:.3f}" for k in peers), quiet)
    return {"schema": schema.to_dict(), "groups": groups,
            "crackseg_from_segmentpy_2d": segmentpy_2d_results()}


def segmentpy_2d_results() -> dict | None:
    """crackseg's real-slice results as written by ``benchmarks/segmentpy_2d.py``, if any."""
    other = RESULTS / "segmentpy_2d.json"
    if not other.exists():
        return None
    data = json.loads(other.read_text())
    return {"source": str(other.relative_to(RESULTS.parents[1])),
            "written": time.strftime("%Y-%m-%d %H:%M", time.localtime(other.stat().st_mtime)),
            "model": data.get("model"),
            "groups": {g: {k: v for k, v in r.items() if k != "test_slices"}
                       for g, r in data.get("groups", {}).items()}}


def previous_results(args, cfg: dict) -> dict:
    """The existing results file, checked to have been made with the same settings."""
    from benchmarks._common import RF_SETTINGS, results_path
    from crackseg.errors import InputError

    path = results_path("segmentation_accuracy", args.quick)
    if not path.exists():
        raise InputError(f"{path}: no earlier results to reuse; run without --reuse-peers")
    prev = json.loads(path.read_text())
    same = (prev.get("training_annotations") == cfg["train"] and prev.get("seed") == args.seed
            and prev["phantoms"]["settings"] == cfg["settings"]
            and prev["phantoms"]["eval_seeds"] == cfg["eval_seeds"]
            and all(prev.get("peers", {}).get("random forest", {}).get(k, v) == v
                    for k, v in RF_SETTINGS["quick" if args.quick else "full"].items())
            and (not prev.get("annotation_curve")
                 or {k: v for k, v in prev["annotation_curve"].items() if k != "rows"} == cfg["curve"]))
    if not same:
        raise InputError(f"{path}: made with other settings; run without --reuse-peers")
    return prev


# ---------------------------------------------------------------- tables


def tables(res: dict) -> str:
    out = []
    ph = res["phantoms"]
    cols = ["method"] + [f"{k} Dice" for k in CLASSES] + ["crack clDice", "crack BF1"]
    for setting in list(ph["settings"]) + ["all"]:
        rows = [flat_row(m, s) for m, s in ph["summary"][setting].items()]
        extra = ["ECE"] if setting == "default" else []
        out += [f"\nPhantoms, setting '{setting}' (mean over seeds {ph['eval_seeds']}, "
                f"{'x'.join(map(str, ph['shape']))} voxels, all voxels):",
                markdown_table(rows, cols + extra)]
    if res.get("annotation_curve"):
        rows = [flat_row(r["method"], r, slices=r["slices"]) for r in res["annotation_curve"]["rows"]]
        out += ["\nAnnotation curve (new imaging setting "
                f"{res['annotation_curve']['setting']}, {res['annotation_curve']['steps']} steps):",
                markdown_table(rows, ["slices"] + cols)]
    real = res.get("real_slices")
    if real:
        rows = []
        for g, r in real["groups"].items():
            for m in ("classical", "random forest"):
                rows.append({"group": g, "method": m, **{f"{k} Dice": r[m]["dice"][k] for k in REAL_CLASSES}})
            other = (real.get("crackseg_from_segmentpy_2d") or {}).get("groups", {}).get(g, {})
            for key, label in (("random_forest", "random forest (segmentpy_2d.py)"),
                               ("unet_finetuned", "crackseg 2-D fine-tuned (segmentpy_2d.py)")):
                if key in other:
                    rows.append({"group": g, "method": label,
                                 **{f"{k} Dice": other[key]["dice"].get(k) for k in REAL_CLASSES}})
        out += ["\nReal SegmentPy slices (held-out slices, all pixels):",
                markdown_table(rows, ["group", "method"] + [f"{k} Dice" for k in REAL_CLASSES])]
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small, fast version (< 3 min)")
    p.add_argument("--model", default=str(SHIPPED_MODEL), help="crackseg model directory")
    p.add_argument("--seed", type=int, default=0, help="seed of the peer methods and training")
    p.add_argument("--skip", nargs="*", default=[], choices=["curve", "real"],
                   help="parts to leave out")
    p.add_argument("--reuse-peers", action="store_true",
                   help="take the classical and random-forest results from the existing results "
                        "file (same settings) and only rerun crackseg")
    p.add_argument("--crackseg-only", action="store_true",
                   help="run only crackseg (no peers, no real slices); combine with --merge")
    p.add_argument("--out", default=None, help="results file (default benchmarks/results/...)")
    p.add_argument("--merge", nargs=2, metavar=("PEERS_JSON", "CRACKSEG_JSON"),
                   help="write the results file from the peer rows of one earlier run and the "
                        "crackseg rows of another (same settings); runs nothing")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    args = p.parse_args(argv)
    from crackseg.errors import CracksegError
    from crackseg.model_io import load_model

    if args.merge:
        return merge_results(*args.merge, quick=args.quick)

    try:
        model = require_model(args.model)
    except CracksegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    started = time.time()
    machine = machine_info()
    cfg = QUICK if args.quick else FULL
    t = cfg["train"]
    log(f"training annotations: {t['n']} phantoms {t['shape']}, every {t['sparse_every']}th slice",
        args.quiet)
    try:
        prev = previous_results(args, cfg) if args.reuse_peers else None
    except CracksegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    timings = dict(prev["timings"]) if prev else {}
    if args.crackseg_only:
        peers, peer_info, peer_probs = {}, {}, {}
    elif prev is None:
        t0 = time.time(), time.process_time()
        pairs = training_phantoms(t["n"], t["shape"], seed=t["seed"],
                                  sparse_every=t["sparse_every"], sparse_axes=t["sparse_axes"])
        peers, peer_info, peer_probs = fit_peers(pairs, seed=args.seed, quick=args.quick,
                                                 quiet=args.quiet)
        del pairs
        record_time(timings, "peers_fit", t0)
    else:
        peers, peer_info, peer_probs = {}, prev["peers"], {}
    methods = {**peers, "crackseg": crackseg_method(model, quiet=args.quiet)}
    loaded = load_model(model)
    probabilities = {"crackseg": lambda image: crackseg_probabilities(loaded, image),
                     **peer_probs}
    t0 = time.time(), time.process_time()
    res = {"model": str(model), "seed": args.seed, "training_annotations": t, "peers": peer_info}
    if prev:
        res["peers_reused_from"] = prev["written"]
    res["phantoms"] = phantom_part(
        cfg, methods, probabilities, args.quiet,
        previous=[r for r in prev["phantoms"]["per_volume"] if r["method"] != "crackseg"]
        if prev else None)
    record_time(timings, "phantoms" + ("_crackseg_only" if prev else ""), t0)
    if "curve" not in args.skip:
        t0 = time.time(), time.process_time()
        res["annotation_curve"] = curve_part(
            cfg, model, args.quick, args.seed, args.quiet,
            previous=prev["annotation_curve"]["rows"] if prev and prev.get("annotation_curve") else None,
            crackseg_only=args.crackseg_only)
        record_time(timings, "annotation_curve" + ("_crackseg_only" if prev else ""), t0)
    if "real" not in args.skip and cfg["real"] and not args.crackseg_only:
        t0 = time.time(), time.process_time()
        if prev and prev.get("real_slices"):
            res["real_slices"] = {**prev["real_slices"],
                                  "crackseg_from_segmentpy_2d": segmentpy_2d_results()}
        else:
            res["real_slices"] = real_part(args.quick, args.seed, args.quiet)
            record_time(timings, "real_slices", t0)
    res["timings"] = timings
    text = tables(res)
    path = write_results("segmentation_accuracy", res, quick=args.quick, machine=machine,
                         started=started, path=args.out)
    print(text)
    print(f"\nwritten {path} ({time.time() - started:.0f} s)")
    return 0


def merge_results(peers_json: str, crackseg_json: str, *, quick: bool) -> int:
    """Results file from the peer rows of one run and the crackseg rows of another."""
    a = json.loads(Path(peers_json).read_text())
    b = json.loads(Path(crackseg_json).read_text())
    keys = ("training_annotations", "seed")
    if any(a.get(k) != b.get(k) for k in keys) or a["phantoms"]["settings"] != b["phantoms"]["settings"] \
            or a["phantoms"]["eval_seeds"] != b["phantoms"]["eval_seeds"]:
        print("error: the two results files were made with different settings", file=sys.stderr)
        return 2
    cfg = {"settings": a["phantoms"]["settings"], "eval_seeds": a["phantoms"]["eval_seeds"],
           "eval_shape": a["phantoms"]["shape"]}

    def is_crackseg(r):
        return r["method"].startswith("crackseg")

    res = {k: v for k, v in a.items() if k not in ("benchmark", "quick", "command", "written",
                                                  "wall_seconds", "machine")}
    res["model"] = b["model"]
    rows = [r for r in a["phantoms"]["per_volume"] if not is_crackseg(r)] + \
        [r for r in b["phantoms"]["per_volume"] if is_crackseg(r)]
    res["phantoms"] = phantom_summary(cfg, rows)
    if a.get("annotation_curve") and b.get("annotation_curve"):
        rows = [r for r in a["annotation_curve"]["rows"] if not is_crackseg(r)] + \
            [r for r in b["annotation_curve"]["rows"] if is_crackseg(r)]
        order = ["crackseg shipped (no fine-tuning)", "classical", "random forest",
                 "crackseg fine-tuned", "crackseg from scratch"]
        rows.sort(key=lambda r: (r["slices"], order.index(r["method"]) if r["method"] in order else 9))
        res["annotation_curve"] = {**b["annotation_curve"], "rows": rows}
    if res.get("real_slices"):
        res["real_slices"]["crackseg_from_segmentpy_2d"] = segmentpy_2d_results()
    res["merged_from"] = {
        "peers": {k: a.get(k) for k in ("command", "written", "wall_seconds", "model")},
        "crackseg": {k: b.get(k) for k in ("command", "written", "wall_seconds", "model")}}
    res["timings"] = {"peers_run": a.get("timings"), "crackseg_run": b.get("timings")}
    path = write_results("segmentation_accuracy", res, quick=quick, machine=b["machine"],
                         started=time.time())
    print(tables(res))
    print(f"\nwritten {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
