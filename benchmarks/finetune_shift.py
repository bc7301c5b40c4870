"""Fine-tuning for an imaging shift: annotation curve on a shifted phantom, random vs suggested slices.

A phantom is rendered with imaging settings the shipped models never saw
(more noise, more blur, stronger phase-contrast fringes and drift, a gamma
change of contrast).  For 1, 3 and 10 annotated z-slices of it, chosen

- at random (seeded), or
- by ``crackseg suggest-slices`` with the parent model (then annotated with
  the truth, as a user correcting the template would),

``crackseg finetune`` adapts the model within the same time budget (default
10 minutes, validation share included), and a random-forest pixel classifier
(multiscale 2-D features, as in ``segmentpy_2d.py``) is trained on the random
slices.  All are scored on held-out phantoms of the same shifted setting,
per class, over all voxels, with the path ``crackseg predict`` runs.
Results: ``benchmarks/results/finetune_shift[_quick].json``.

Usage::

    python benchmarks/finetune_shift.py --model models/nmc4-2d-v2 --minutes 10
    python benchmarks/finetune_shift.py --quick        # smoke test, ~4 min
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHIFTED = {"snr": 4.0, "blur_sigma": 1.8, "phase_contrast": 0.9, "drift": 0.3,
           "dtype": "float32"}
GAMMA = 0.6
NMC4 = ["matrix", "particle", "crack", "pore"]


def shifted_phantom(shape, seed: int):
    """Phantom with the shifted imaging settings; returns (image, labels)."""
    from crackseg.synthetic import generate_electrode

    ph = generate_electrode(tuple(shape), seed=seed, **SHIFTED)
    img = np.asarray(ph.image, dtype=np.float32)
    lo, hi = np.percentile(img, [0.1, 99.9])
    img = np.clip((img - lo) / (hi - lo), 0, 1) ** GAMMA * 4000.0 + 1000.0
    return img.astype(np.float32), np.asarray(ph.labels, dtype=np.uint8)


def keep_slices(labels: np.ndarray, z) -> np.ndarray:
    """Labels on the given z-slices, 255 elsewhere."""
    out = np.full_like(labels, 255)
    out[list(z)] = labels[list(z)]
    return out


def random_slices(n_z: int, n: int, seed: int) -> list[int]:
    """``n`` distinct z-slices, away from the first and last 2."""
    rng = np.random.default_rng([seed, n])
    return sorted(rng.choice(np.arange(2, n_z - 2), n, replace=False).tolist())


def suggested_slices(model, image_path: Path, n: int, workdir: Path) -> list[int]:
    """z-slices ``crackseg suggest-slices`` picks with the parent model."""
    out = workdir / f"suggest{n}"
    subprocess.run([sys.executable, "-m", "crackseg", "suggest-slices", str(image_path),
                    "--model", str(model), "-n", str(n), "-o", str(out), "--axis", "0"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return sorted(r["index"] for r in json.loads((out / "suggestions.json").read_text())
                  ["suggestions"])


def crackseg_row(args, img, labels, z, test, workdir: Path) -> dict:
    """Fine-tune on the z-slices ``z`` and score on the test phantoms."""
    from benchmarks.segmentpy_2d import finetune_record, run_finetune
    from crackseg.evaluation import evaluate_model

    workdir.mkdir(parents=True)
    card, secs, cmd = run_finetune(args.model, [(img, keep_slices(labels, z))], workdir,
                                   minutes=args.minutes, seed=args.seed, schema=None,
                                   extra=args.finetune_args)
    tuned = evaluate_model(workdir / "model", test)
    return {"slices_z": z, "dice": tuned["dice"], **finetune_record(card, secs, cmd)}


def forest_row(args, img, labels, z, test) -> dict:
    """Random forest on the annotated z-slices (2-D features), slice by slice on the test."""
    from benchmarks.segmentpy_2d import dice_per_class, random_forest

    train = [(img[i], labels[i]) for i in z]
    test_slices = [im for vol, _ in test for im in vol]
    preds, secs = random_forest(train, test_slices, seed=args.seed, **args.forest)
    truth = np.concatenate([lab.ravel() for _, lab in test])
    d = dice_per_class(np.concatenate([p.ravel() for p in preds]), truth, 4)
    return {"slices_z": z, "dice": dict(zip(NMC4, d)), "seconds": round(secs, 1)}


def curve(args, img, labels, test, workdir: Path) -> list[dict]:
    """Rows of the annotation curve (crackseg random / suggested, forest)."""
    from crackseg.io import write_volume

    path = write_volume(workdir / "image.tif", img)
    rows = []
    for n in args.slices:
        zr = random_slices(img.shape[0], n, args.seed)
        zs = suggested_slices(args.model, path, n, workdir)
        for how, z in (("random", zr), ("suggested", zs)):
            r = crackseg_row(args, img, labels, z, test, workdir / f"{how}{n}")
            rows.append({"slices": n, "method": f"crackseg, {how} slices", **r})
            log_row(rows[-1])
        rows.append({"slices": n, "method": "random forest, random slices",
                     **forest_row(args, img, labels, zr, test)})
        log_row(rows[-1])
    return rows


def log_row(r: dict) -> None:
    d = r["dice"]
    print(f"{r['slices']:3d} {r['method']:30} " + " ".join(
        f"{(d[n] if d[n] is not None else float('nan')):7.3f}" for n in NMC4)
        + f" {r['seconds']:6.0f} s", file=sys.stderr, flush=True)


def verdicts(rows: list[dict]) -> dict:
    """The claims: crack Dice >= 0.75 at 10 slices; suggested beats random at 3 and 10."""
    def get(n, how):
        return next((r for r in rows if r["slices"] == n and r["method"] == f"crackseg, {how} slices"),
                    None)

    def mean(r):
        return float(np.nanmean([v if v is not None else np.nan for v in r["dice"].values()]))

    out = {}
    ten = [r for r in (get(10, "random"), get(10, "suggested")) if r]
    if ten:
        out["crack_dice_at_10_slices"] = {r["method"]: r["dice"]["crack"] for r in ten}
        out["crack_dice_ge_0.75_at_10_slices"] = all((r["dice"]["crack"] or 0) >= 0.75
                                                     for r in ten)
    for n in (3, 10):
        a, b = get(n, "random"), get(n, "suggested")
        if a and b:
            out[f"suggested_beats_random_at_{n}"] = {
                "mean_dice": [mean(b), mean(a)], "crack_dice": [b["dice"]["crack"], a["dice"]["crack"]],
                "met": mean(b) > mean(a)}
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    from benchmarks.segmentpy_2d import default_model

    p.add_argument("--model", default=str(default_model()))
    p.add_argument("--minutes", type=float, default=10.0, help="budget of each fine-tuning")
    p.add_argument("--slices", type=int, nargs="+", default=[1, 3, 10])
    p.add_argument("--shape", type=int, nargs=3, default=[96, 96, 96])
    p.add_argument("--seed", type=int, default=2000, help="seed of the annotated phantom")
    p.add_argument("--n-test", type=int, default=2, help="held-out phantoms (next seeds)")
    p.add_argument("--finetune-args", default="", help="extra crackseg finetune arguments")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 32x96x96 phantoms, 1 and 3 slices, 0.4-min budgets")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.forest = {}
    if args.quick:
        args.shape, args.slices, args.minutes, args.n_test = [32, 96, 96], [1, 3], 0.4, 1
        args.forest = {"n_estimators": 20, "pixels_per_image": 5000}
    return args


def main(argv=None) -> int:
    from benchmarks._common import machine_info, write_results
    from crackseg.evaluation import evaluate_model

    started = time.time()
    args = parse_args(argv)
    machine = machine_info()
    img, labels = shifted_phantom(args.shape, args.seed)
    test = [shifted_phantom(args.shape, args.seed + 1 + i) for i in range(args.n_test)]
    base = evaluate_model(args.model, test)
    with tempfile.TemporaryDirectory() as tmp:
        rows = curve(args, img, labels, test, Path(tmp))
    result = {
        "model": args.model, "budget_minutes": args.minutes,
        "shifted_imaging": {**SHIFTED, "gamma": GAMMA},
        "annotated_phantom": {"seed": args.seed, "shape": args.shape, "axis": 0},
        "test_phantoms": {"seeds": [args.seed + 1 + i for i in range(args.n_test)],
                          "shape": args.shape, "voxels": "all"},
        "base_model": {"model": args.model, **base}, "curve": rows, "claims": verdicts(rows),
        "settings": vars(args)}
    path = write_results("finetune_shift", result, quick=args.quick, machine=machine,
                         started=started, path=args.out)
    print(f"{'base model':34} " + " ".join(f"{(base['dice'][n] or float('nan')):7.3f}" for n in NMC4))
    for r in rows:
        log_row(r)
    print(json.dumps(result["claims"], indent=1))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
