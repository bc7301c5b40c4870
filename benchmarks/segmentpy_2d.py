"""A new material with a few annotated slices: crackseg fine-tuned vs a random forest (SegmentPy).

Real 2-D nano-CT cathode slices with their own 3-class labels
(``training/schemas/segmentpy3.yaml``: 0 particle, 1 carbon-binder, 2 pore).
Two parts, each per group of slices (A: 1, 100, 200, 300, 400; B: 1501..1504):

1. **split** (the claim): the fixed split below; the 2-D model is fine-tuned
   with ``crackseg finetune`` on the training slices for ``--minutes`` (its
   defaults: time-based schedule, cross-validation share included), beside a
   random-forest pixel classifier on multiscale filter features (the ilastik
   approach: ``skimage.feature.multiscale_basic_features`` +
   ``sklearn.ensemble.RandomForestClassifier``) trained on the same slices.
   Per-class Dice on all pixels of the test slices; the fine-tuned model's own
   cross-validated Dice (from its card) is recorded beside the test Dice.
2. **curve** (``--curve``): 1 and 3 annotated slices per group, chosen at
   random or by ``crackseg suggest-slices`` (with the parent model), each
   fine-tuned under the same budget; the forest on the random slices; Dice on
   the group's other slices.

Results: ``benchmarks/results/segmentpy_2d[_quick].json``.

Usage::

    python benchmarks/segmentpy_2d.py --model models/nmc4-2d-v2 --minutes 10 --curve
    python benchmarks/segmentpy_2d.py --quick          # smoke test, ~3 min
    python benchmarks/segmentpy_2d.py --groups B --minutes 1 --label bn-train \\
        --finetune-args "--bn train" --out /tmp/ablation.json      # an ablation
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DATA = REPO.parent / "shared" / "data" / "segmentpy"
SCHEMA = REPO / "training" / "schemas" / "segmentpy3.yaml"
NAMES = ["particle", "binder", "pore"]
GROUPS = {
    "A": {"train": [1, 200], "test": [100, 300, 400]},
    "B": {"train": [1501, 1503], "test": [1502, 1504]},
}


def default_model() -> Path:
    """The 2-D model the benchmark fine-tunes: v2 when exported, else v1."""
    v2 = REPO / "models" / "nmc4-2d-v2"
    return v2 if v2.exists() else REPO / "models" / "nmc4-synthetic-2d-v1"


def read_slice(n: int):
    """Image (float32, YX) and labels (uint8) of one slice."""
    import tifffile

    return (tifffile.imread(DATA / f"{n}.tif").astype(np.float32),
            tifffile.imread(DATA / f"{n}_label.tif").astype(np.uint8))


def dice_per_class(pred: np.ndarray, true: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each class (channel index) over all pixels (NaN if absent from both)."""
    import torch

    from crackseg.metrics import dice_counts, dice_from_counts

    counts = dice_counts(torch.from_numpy(np.asarray(pred, np.int64)),
                         torch.from_numpy(np.asarray(true, np.int64)), n_classes)
    return dice_from_counts(counts)


def scores(preds, truths, names=NAMES) -> dict:
    """Per-class Dice over all pixels of the test images, and its mean."""
    d = dice_per_class(np.concatenate([q.ravel() for q in preds]),
                       np.concatenate([t.ravel() for t in truths]), len(names))
    return {"dice": dict(zip(names, d)), "mean_dice": float(np.nanmean(d))}


# ---------------------------------------------------------------- the random forest


def forest_features(img):
    """Multiscale intensity/edge/texture features of a percentile-normalised 2-D image."""
    from skimage.feature import multiscale_basic_features

    from crackseg.normalize import normalize_image

    return multiscale_basic_features(normalize_image(img), intensity=True, edges=True,
                                     texture=True, sigma_min=0.5, sigma_max=16)


def fit_forest(train, rng, *, seed: int, pixels_per_image: int = 30000,
               n_estimators: int = 100, ignore: int = 255):
    """Pixel forest (ilastik-style) on ``pixels_per_image`` random annotated pixels of each
    (image, labels) pair, drawn with ``rng``."""
    from sklearn.ensemble import RandomForestClassifier

    xs, ys = [], []
    for img, lab in train:
        f = forest_features(img)
        f = f.reshape(-1, f.shape[-1])
        keep = np.flatnonzero(lab.ravel() != ignore)
        sel = rng.choice(keep, size=min(pixels_per_image, len(keep)), replace=False)
        xs.append(f[sel])
        ys.append(lab.ravel()[sel])
    rf = RandomForestClassifier(n_estimators=n_estimators, n_jobs=1, random_state=seed,
                                min_samples_leaf=2)
    return rf.fit(np.concatenate(xs), np.concatenate(ys))


def random_forest(train, test_images, *, seed: int, pixels_per_image: int = 30000,
                  n_estimators: int = 100, ignore: int = 255) -> tuple[list[np.ndarray], float]:
    """Pixel classifier (ilastik-style) on 2-D training images; predicts 2-D test images."""
    t0 = time.time()
    rf = fit_forest(train, np.random.default_rng(seed), seed=seed,
                    pixels_per_image=pixels_per_image, n_estimators=n_estimators, ignore=ignore)
    preds = []
    for img in test_images:
        f = forest_features(img)
        preds.append(rf.predict(f.reshape(-1, f.shape[-1])).reshape(img.shape).astype(np.uint8))
    return preds, time.time() - t0


# ---------------------------------------------------------------- crackseg


def run_finetune(model, pairs, workdir: Path, *, minutes: float, seed: int, schema=SCHEMA,
                 extra: str = "") -> tuple[dict, float, str]:
    """``crackseg finetune`` in a child process on (image, labels) arrays; returns its card.

    Images are written as they are (2-D, or a volume with its label volume).
    """
    from crackseg.io import write_volume

    args = [sys.executable, "-m", "crackseg", "finetune", "--model", str(model),
            "-o", str(workdir / "model"), "--minutes", str(minutes), "--seed", str(seed),
            "--quiet", "--run-dir", str(workdir / "run"), *shlex.split(extra)]
    if schema is not None:
        args += ["--schema", str(schema)]
    for i, (img, lab) in enumerate(pairs):
        write_volume(workdir / f"img{i}.tif", img, overwrite=True)
        write_volume(workdir / f"lab{i}.tif", lab, overwrite=True)
        args += ["--image", str(workdir / f"img{i}.tif"), "--labels", str(workdir / f"lab{i}.tif")]
    t0 = time.time()
    subprocess.run(args, check=True)
    card = json.loads((workdir / "model" / "model_card.json").read_text())
    return card, time.time() - t0, " ".join(shlex.quote(a) for a in args)


def finetune_record(card: dict, seconds: float, command: str) -> dict:
    """What the results keep of a fine-tuning: steps, time split, validation estimate."""
    ft = card["training"]["finetune"]
    m = card.get("metrics") or {}
    return {"seconds": round(seconds, 1), "steps": ft["steps_done"],
            "optimiser_step_seconds": ft["optimiser_step_seconds"],
            "train_fraction": ft["train_fraction"], "frozen_bn": ft["frozen_bn"],
            "freeze_encoder": ft["freeze_encoder"], "lr": ft["lr"],
            "cross_validated_dice": m.get("dice"), "cross_validated_dice_sd": m.get("dice_sd"),
            "command": command}


def finetuned_predictions(model, pairs, test_images, workdir: Path, *, minutes, seed,
                          extra="") -> tuple[list[np.ndarray], dict]:
    """Fine-tune on ``pairs`` and predict the test images (stored label values)."""
    from crackseg.evaluation import predict_labels
    from crackseg.model_io import load_model

    card, secs, cmd = run_finetune(model, pairs, workdir, minutes=minutes, seed=seed, extra=extra)
    net, card = load_model(workdir / "model")
    lut = np.asarray(list(card["schema"]["classes"].values()), dtype=np.uint8)
    preds = [lut[predict_labels(net, card, img, sw_batch_size=4)] for img in test_images]
    return preds, finetune_record(card, secs, cmd)


def suggested(model, images, n: int, workdir: Path) -> list[int]:
    """Positions in the group's stack that ``crackseg suggest-slices`` picks (parent model)."""
    from crackseg.io import write_volume

    write_volume(workdir / "stack.tif", np.stack(images), overwrite=True)
    subprocess.run([sys.executable, "-m", "crackseg", "suggest-slices", str(workdir / "stack.tif"),
                    "--model", str(model), "-n", str(n), "-o", str(workdir / "suggest"),
                    "--overwrite"], check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    meta = json.loads((workdir / "suggest" / "suggestions.json").read_text())
    return [r["index"] for r in meta["suggestions"]]


# ---------------------------------------------------------------- parts


def split_part(args, g: str, workdir: Path) -> dict:
    """The fixed split of a group: fine-tuned crackseg vs the forest on the same slices."""
    split = GROUPS[g]
    train = [read_slice(n) for n in split["train"]]
    test = [read_slice(n) for n in split["test"]]
    truths = [lab for _, lab in test]
    un_pred, info = finetuned_predictions(args.model, train, [im for im, _ in test], workdir,
                                          minutes=args.minutes, seed=args.seed,
                                          extra=args.finetune_args)
    un = {**scores(un_pred, truths), **info}
    out = {"train_slices": split["train"], "test_slices": split["test"], "unet_finetuned": un}
    if not args.skip_forest:
        rf_pred, rf_s = random_forest(train, [im for im, _ in test], seed=args.seed,
                                      **args.forest)
        rf = out["random_forest"] = {**scores(rf_pred, truths), "seconds": round(rf_s, 1)}
        out["crackseg_beats_forest_on_every_class"] = all(un["dice"][n] > rf["dice"][n]
                                                          for n in NAMES)
    return out


def curve_part(args, g: str, workdir: Path) -> list[dict]:
    """Annotation curve of a group: random vs suggested slices vs the forest."""
    names = sorted(GROUPS[g]["train"] + GROUPS[g]["test"])
    data = [read_slice(n) for n in names]
    rows = []
    for n in args.curve_slices:
        if n >= len(names):
            continue
        rng = np.random.default_rng([args.seed, n])
        picks = {"random": sorted(rng.choice(len(names), n, replace=False).tolist()),
                 "suggested": sorted(suggested(args.model, [im for im, _ in data], n, workdir))}
        for how, pos in picks.items():
            test = [data[i] for i in range(len(names)) if i not in pos]
            wd = workdir / f"{how}{n}"
            wd.mkdir()
            preds, info = finetuned_predictions(
                args.model, [data[i] for i in pos], [im for im, _ in test], wd,
                minutes=args.minutes, seed=args.seed, extra=args.finetune_args)
            rows.append({"slices": n, "method": f"crackseg, {how} slices",
                         "train": [names[i] for i in pos], **scores(preds, [t for _, t in test]),
                         **info})
            if how == "random":
                rf, secs = random_forest([data[i] for i in pos], [im for im, _ in test],
                                         seed=args.seed, **args.forest)
                rows.append({"slices": n, "method": "random forest, random slices",
                             "train": [names[i] for i in pos],
                             **scores(rf, [t for _, t in test]), "seconds": round(secs, 1)})
    return rows


def print_table(results: dict) -> None:
    print(f"{'group':6} {'method':34} " + " ".join(f"{n:>9}" for n in NAMES) + f" {'s':>6}")
    for g, res in results["groups"].items():
        for key in [k for k in ("random_forest", "unet_finetuned") if k in res]:
            r = res[key]
            print(f"{g:6} {key:34} " + " ".join(f"{r['dice'][n]:9.3f}" for n in NAMES)
                  + f" {r['seconds']:6.0f}")
        cv = res["unet_finetuned"].get("cross_validated_dice")
        if cv:
            print(f"{g:6} {'  (its cross-validated estimate)':34} "
                  + " ".join(f"{(cv.get(n) or float('nan')):9.3f}" for n in NAMES))
    for g, rows in results.get("curve", {}).items():
        for r in rows:
            print(f"{g:6} {str(r['slices']) + ' ' + r['method']:34} "
                  + " ".join(f"{r['dice'][n]:9.3f}" for n in NAMES) + f" {r['seconds']:6.0f}")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(default_model()))
    p.add_argument("--minutes", type=float, default=10.0,
                   help="budget of each fine-tuning (whole crackseg finetune run)")
    p.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    p.add_argument("--curve", action="store_true", help="also the annotation curve (1, 3 slices)")
    p.add_argument("--finetune-args", default="", help="extra crackseg finetune arguments")
    p.add_argument("--label", default="default", help="name of this variant in the results")
    p.add_argument("--skip-forest", action="store_true", help="crackseg only (ablations)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true",
                   help="smoke test: group B, 0.5-min budgets, small forest, 1-slice curve")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    args.curve_slices = [1, 3]
    args.forest = {}
    if args.quick:
        args.groups, args.minutes, args.curve, args.curve_slices = ["B"], 0.5, True, [1]
        args.forest = {"n_estimators": 20, "pixels_per_image": 5000}
    return args


def main(argv=None) -> int:
    from benchmarks._common import machine_info, write_results

    started = time.time()
    args = parse_args(argv)
    if not DATA.exists():
        print(f"{DATA}: data not found", file=sys.stderr)
        return 2
    machine = machine_info()
    results = {"schema": str(SCHEMA.relative_to(REPO)), "model": args.model,
               "label": args.label, "budget_minutes": args.minutes,
               "settings": {k: v for k, v in vars(args).items()}, "groups": {}, "curve": {}}
    for g in args.groups:
        with tempfile.TemporaryDirectory() as tmp:
            results["groups"][g] = split_part(args, g, Path(tmp))
        if args.curve:
            with tempfile.TemporaryDirectory() as tmp:
                results["curve"][g] = curve_part(args, g, Path(tmp))
    path = write_results("segmentpy_2d", results, quick=args.quick, machine=machine,
                         started=started, path=args.out)
    print_table(results)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
