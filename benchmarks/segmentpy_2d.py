"""A new material: 2-D nano-CT cathode slices with their own 3-class labels (SegmentPy data).

For each group of slices (A: 1, 100, 200, 300, 400; B: 1501..1504), the shipped
2-D model is fine-tuned with the group's schema (``training/schemas/segmentpy3.yaml``:
0 particle, 1 carbon-binder, 2 pore; output layer re-initialised) on a few
slices, and evaluated on the other slices of the group.  Beside it, a random-
forest pixel classifier on standard multiscale filter features (the ilastik
approach: ``skimage.feature.multiscale_basic_features`` +
``sklearn.ensemble.RandomForestClassifier``) is trained on the same slices.
Both see the same percentile-normalised images.  Per-class Dice on all pixels
of the held-out slices is written to ``benchmarks/results/segmentpy_2d.json``.

Usage::

    python benchmarks/segmentpy_2d.py [--model models/nmc4-synthetic-2d-v1]
        [--minutes 4] [--max-steps 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "segmentpy"
SCHEMA = REPO / "training" / "schemas" / "segmentpy3.yaml"
GROUPS = {
    "A": {"train": [1, 200], "test": [100, 300, 400]},
    "B": {"train": [1501, 1503], "test": [1502, 1504]},
}


def read_slice(n: int):
    """Image (float32, YX) and labels (uint8) of one slice."""
    import tifffile

    return (tifffile.imread(DATA / f"{n}.tif").astype(np.float32),
            tifffile.imread(DATA / f"{n}_label.tif").astype(np.uint8))


def dice_per_class(pred: np.ndarray, true: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each class over all pixels (NaN if absent from both)."""
    out = []
    for c in range(n_classes):
        p, t = pred == c, true == c
        s = p.sum() + t.sum()
        out.append(float(2 * (p & t).sum() / s) if s else float("nan"))
    return out


def random_forest(train, test, *, seed: int, pixels_per_image: int = 30000,
                  n_estimators: int = 100) -> tuple[list[np.ndarray], float]:
    """Pixel classifier on multiscale intensity/edge/texture features (ilastik-style)."""
    from skimage.feature import multiscale_basic_features
    from sklearn.ensemble import RandomForestClassifier

    from crackseg.normalize import normalize_image

    def feats(img):
        return multiscale_basic_features(normalize_image(img), intensity=True, edges=True,
                                         texture=True, sigma_min=0.5, sigma_max=16)

    t0 = time.time()
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for img, lab in train:
        f = feats(img)
        f = f.reshape(-1, f.shape[-1])
        sel = rng.choice(f.shape[0], size=min(pixels_per_image, f.shape[0]), replace=False)
        xs.append(f[sel])
        ys.append(lab.ravel()[sel])
    rf = RandomForestClassifier(n_estimators=n_estimators, n_jobs=1, random_state=seed,
                                min_samples_leaf=2)
    rf.fit(np.concatenate(xs), np.concatenate(ys))
    preds = []
    for img, _ in test:
        f = feats(img)
        preds.append(rf.predict(f.reshape(-1, f.shape[-1])).reshape(img.shape).astype(np.uint8))
    return preds, time.time() - t0


def finetuned_unet(train, test, *, model: str, minutes: float, max_steps: int, seed: int,
                   workdir: Path) -> tuple[list[np.ndarray], float, dict]:
    """Fine-tune the 2-D model with the segmentpy3 schema (crackseg finetune) and predict."""
    from crackseg.io import write_volume
    from crackseg.model_io import load_model
    from crackseg.training import predict_labels

    args = [sys.executable, "-m", "crackseg", "finetune", "--model", model, "--schema", str(SCHEMA),
            "-o", str(workdir / "model"), "--max-steps", str(max_steps), "--max-minutes",
            str(minutes), "--seed", str(seed), "--batch-size", "8", "--quiet",
            "--run-dir", str(workdir / "run")]
    for i, (img, lab) in enumerate(train):
        write_volume(workdir / f"img{i}.tif", img)
        write_volume(workdir / f"lab{i}.tif", lab)
        args += ["--image", str(workdir / f"img{i}.tif"), "--labels", str(workdir / f"lab{i}.tif")]
    t0 = time.time()
    subprocess.run(args, check=True)
    seconds = time.time() - t0
    net, card = load_model(workdir / "model")
    lut = np.asarray(list(card["schema"]["classes"].values()), dtype=np.uint8)
    preds = [lut[predict_labels(net, card, img, sw_batch_size=4)] for img, _ in test]
    return preds, seconds, {"steps": card["training"]["finetune"]["steps_done"],
                            "command": " ".join(args)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "nmc4-synthetic-2d-v1"))
    p.add_argument("--minutes", type=float, default=4.0, help="fine-tuning budget per group")
    p.add_argument("--max-steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "segmentpy_2d.json"))
    args = p.parse_args(argv)
    if not DATA.exists():
        print(f"{DATA}: data not found", file=sys.stderr)
        return 2
    names = ["particle", "binder", "pore"]
    results = {"groups": {}, "schema": str(SCHEMA.relative_to(REPO)), "model": args.model,
               "settings": vars(args), "command": " ".join([sys.executable, *sys.argv]),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "processor": platform.processor()}}
    for g, split in GROUPS.items():
        train = [read_slice(n) for n in split["train"]]
        test = [read_slice(n) for n in split["test"]]
        truth = np.concatenate([lab.ravel() for _, lab in test])
        rf_pred, rf_s = random_forest(train, test, seed=args.seed)
        with tempfile.TemporaryDirectory() as tmp:
            un_pred, un_s, info = finetuned_unet(train, test, model=args.model,
                                                 minutes=args.minutes, max_steps=args.max_steps,
                                                 seed=args.seed, workdir=Path(tmp))
        res = {"train_slices": split["train"], "test_slices": split["test"]}
        for key, pred, secs in (("random_forest", rf_pred, rf_s), ("unet_finetuned", un_pred, un_s)):
            d = dice_per_class(np.concatenate([q.ravel() for q in pred]), truth, 3)
            res[key] = {"dice": dict(zip(names, d)), "mean_dice": float(np.nanmean(d)),
                        "seconds": round(secs, 1)}
        res["unet_finetuned"].update(info)
        results["groups"][g] = res
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"{'group':6} {'method':16} " + " ".join(f"{n:>9}" for n in names) + f" {'mean':>7} {'s':>6}")
    for g, res in results["groups"].items():
        for key in ("random_forest", "unet_finetuned"):
            r = res[key]
            print(f"{g:6} {key:16} " + " ".join(f"{r['dice'][n]:9.3f}" for n in names)
                  + f" {r['mean_dice']:7.3f} {r['seconds']:6.0f}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
