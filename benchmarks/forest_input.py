"""Does a random forest's output help a fine-tuned network on real slices? (Shallow2Deep check)

The idea (Matskevych et al., Frontiers in Computer Science 2022): give the
network the class probabilities of a pixel forest trained on the same few
annotated slices, so that it starts from what the forest knows and adds
spatial context. Measured on the real SegmentPy slices (same train/test
split as ``segmentpy_2d.py``), starting from ``nmc4-2d-v2``, three ways under
the same time budget:

- ``image``: the network sees the grey image only (as ``crackseg finetune``);
- ``forest``: grey image plus the forest's three class probabilities as input
  channels (first convolution widened, new weights zero);
- ``residual``: as ``forest``, and the network's output is added to the log
  of the forest probabilities, so that it starts as the forest and learns a
  correction.

On the training slices the forest probabilities are cross-fitted (each slice
gets those of a forest trained on the other slices), as a network must not
learn from probabilities the forest fitted to those very pixels; the test
slices get those of the forest trained on all training slices, whose own
scores are the baseline.

This is a compact training loop (random 128² patches centred on each class
equally often, flips and rotations, Dice + cross entropy with class weights,
AdamW with warm-up and a cosine schedule over the budget), not the
``crackseg finetune`` path: a feasibility check of the input, not a recipe.

Usage::

    python benchmarks/forest_input.py --minutes 4              # both groups, all three ways
    python benchmarks/forest_input.py --groups B --modes image --minutes 1 --out /tmp/f.json

Results: ``benchmarks/results/forest_input.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from segmentpy_2d import GROUPS, fit_forest, forest_features, read_slice, scores  # noqa: E402

MODES = ("image", "forest", "residual")
PATCH, BATCH, LR = 128, 6, 1e-3


def forest_probabilities(rf, img) -> np.ndarray:
    """Class probabilities (C, Y, X) float32 of a 2-D image."""
    f = forest_features(img)
    p = rf.predict_proba(f.reshape(-1, f.shape[-1]))
    return p.T.reshape(p.shape[1], *img.shape).astype(np.float32)


def widened_network(model_dir, in_channels: int, out_channels: int):
    """The parent's architecture with more input channels and a new output; weights copied,
    the first convolution's new input channels zero, the output layer fresh."""
    import torch

    from crackseg.model_io import load_model
    from crackseg.nets import build_network

    parent, card = load_model(model_dir)
    arch = json.loads(json.dumps(card["architecture"]))
    arch["args"].update(in_channels=int(in_channels), out_channels=int(out_channels))
    net = build_network(arch)
    own, src = net.state_dict(), parent.state_dict()
    for k, v in own.items():
        s = src.get(k)
        if s is None:
            continue
        if s.shape == v.shape:
            own[k] = s
        elif s.ndim == v.ndim and s.shape[0] == v.shape[0] and s.shape[1] == 1 < v.shape[1]:
            w = torch.zeros_like(v)
            w[:, :1] = s
            own[k] = w
    net.load_state_dict(own)
    return net, card


def residual_network(net):
    """``net``'s output plus the log of the forest probabilities (input channels 1..C)."""
    import torch

    class ForestResidual(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + torch.log(x[:, 1:].clamp_min(1e-3))

    return ForestResidual(net)


def patch_batch(items, centres, rng):
    """A batch of patches centred on each class equally often, flipped and rotated."""
    import torch

    xs, ys = [], []
    for _ in range(BATCH):
        c = int(rng.integers(len(centres)))
        k, flat = centres[c][int(rng.integers(len(centres[c])))]
        x, lab = items[k]
        cy, cx = np.unravel_index(int(flat[rng.integers(len(flat))]), lab.shape)
        y0 = int(np.clip(cy - PATCH // 2 + rng.integers(-32, 33), 0, lab.shape[0] - PATCH))
        x0 = int(np.clip(cx - PATCH // 2 + rng.integers(-32, 33), 0, lab.shape[1] - PATCH))
        xp, lp = x[:, y0:y0 + PATCH, x0:x0 + PATCH], lab[y0:y0 + PATCH, x0:x0 + PATCH]
        if rng.random() < 0.5:
            xp, lp = xp[:, ::-1], lp[::-1]
        if rng.random() < 0.5:
            xp, lp = xp[:, :, ::-1], lp[:, ::-1]
        r = int(rng.integers(4))
        xp, lp = np.rot90(xp, r, (1, 2)), np.rot90(lp, r)
        xs.append(np.ascontiguousarray(xp))
        ys.append(np.ascontiguousarray(lp)[None])
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def train(net, items, n_classes: int, minutes: float, rng) -> int:
    """Train for ``minutes`` of wall time; the number of optimiser steps."""
    import torch
    from monai.losses import DiceCELoss

    labels = np.concatenate([lab.ravel() for _, lab in items])
    inv = 1.0 / np.maximum(np.bincount(labels, minlength=n_classes) / labels.size, 1e-6)
    w = np.clip(inv ** 0.5 / (inv ** 0.5).mean(), 0.25, 8.0)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, weight=torch.tensor(w, dtype=torch.float32))
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-5)
    centres = [[(k, np.flatnonzero(lab.ravel() == c)) for k, (_, lab) in enumerate(items)
                if (lab == c).any()] for c in range(n_classes)]
    budget, t0, step = minutes * 60.0, time.time(), 0
    net.train()
    while time.time() - t0 < budget:
        frac = (time.time() - t0) / budget
        for g in opt.param_groups:
            g["lr"] = LR * min(1.0, (step + 1) / 20) * 0.5 * (1 + math.cos(math.pi * frac))
        x, y = patch_batch(items, centres, rng)
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
        step += 1
    return step


def run_mode(group: str, mode: str, args) -> dict:
    """Train one way on a group's training slices and score it on the test slices."""
    import torch
    from monai.inferers import sliding_window_inference

    from crackseg.normalize import normalize_image

    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_pairs = [read_slice(n) for n in GROUPS[group]["train"]]
    test_pairs = [read_slice(n) for n in GROUPS[group]["test"]]
    t0 = time.time()
    rf = fit_forest(train_pairs, rng, seed=args.seed)
    test_probs = [forest_probabilities(rf, im) for im, _ in test_pairs]
    forest_s = round(time.time() - t0, 1)
    truths = [lab for _, lab in test_pairs]
    out = {"group": group, "mode": mode, "forest": {**scores([p.argmax(0) for p in test_probs],
                                                             truths), "seconds": forest_s}}
    with_forest = mode != "image"
    oof = [forest_probabilities(fit_forest([p for j, p in enumerate(train_pairs) if j != i], rng,
                                           seed=args.seed), train_pairs[i][0])
           if with_forest else None for i in range(len(train_pairs))]
    n_classes = test_probs[0].shape[0]
    net, card = widened_network(args.model, 1 + n_classes * with_forest, n_classes)
    norm = card.get("normalization")

    def channels(img, probs):
        x = normalize_image(img, norm)[None].astype(np.float32)
        return np.concatenate([x, probs]) if with_forest else x

    items = [(channels(im, pr), lab.astype(np.int64)) for (im, lab), pr in zip(train_pairs, oof)]
    if mode == "residual":
        net = residual_network(net)
    t1 = time.time()
    steps = train(net, items, n_classes, args.minutes, rng)
    net.eval()
    with torch.inference_mode():
        preds = [sliding_window_inference(torch.from_numpy(channels(im, pr))[None], (256, 256), 2,
                                          net, overlap=0.25, mode="gaussian")[0].argmax(0).numpy()
                 for (im, _), pr in zip(test_pairs, test_probs)]
    out["network"] = {**scores(preds, truths), "steps": steps,
                      "train_seconds": round(time.time() - t1, 1)}
    out["beats_forest_on_every_class"] = all(
        out["network"]["dice"][n] > out["forest"]["dice"][n] for n in out["forest"]["dice"])
    return out


def main(argv=None) -> int:
    import torch

    from benchmarks._common import machine_info, write_results

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(REPO / "models" / "nmc4-2d-v2"))
    p.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS))
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    p.add_argument("--minutes", type=float, default=4.0, help="training budget of each network")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started, machine = time.time(), machine_info()
    rows = []
    for g in args.groups:
        for mode in args.modes:
            rows.append(run_mode(g, mode, args))
            r = rows[-1]
            print(f"{g} {mode:9} " + " ".join(f"{k} {v:.3f}" for k, v in r["network"]["dice"].items())
                  + f"  ({r['network']['steps']} steps)   forest "
                  + " ".join(f"{v:.3f}" for v in r["forest"]["dice"].values()), flush=True)
    path = write_results("forest_input", {"model": args.model, "minutes": args.minutes,
                                          "threads": args.threads, "rows": rows},
                         quick=False, machine=machine, started=started, path=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
