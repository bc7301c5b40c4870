"""CPU inference speed: crackseg's predict_volume against the obvious MONAI baseline.

Baseline: MONAI ``sliding_window_inference`` (window 96, overlap 0.25,
Gaussian blending, fp32, ``torch.no_grad``) on the whole normalised volume in
memory.  crackseg: :func:`crackseg.predict_volume` with its defaults on the
same array, with the SAME network and weights (MONAI U-Net, channels
16-32-64-128, 2 residual units, strides 2).  Both label maps are compared
(Dice per class of the argmax labels).  Weights: the shipped model when it
has this architecture, else the network is trained for a few hundred steps
on a phantom first (so that the labels mean something and agreement is not
measured on a random network's near-ties).

Also reported: the FLOPs per voxel of one forward pass (PyTorch's FLOP
counter), the measured fp32 (and bf16) matmul peak of this machine, and the
fraction of that peak each method reaches (useful FLOPs = FLOP/voxel x
volume; executed FLOPs include window overlap).

Agreement with the baseline is not agreement with the right answer: the
baseline is itself an approximation whose labels depend on where its windows
fall.  Two more comparisons say how far each method is from the exact answer:

- ``exact_reference``: per-class Dice of the baseline and of each crackseg
  variant against the network applied to the whole volume in one forward
  pass (no windows; skipped above ``--exact-max-voxels``);
- ``baseline_self_agreement``: per-class Dice of the baseline against the
  same baseline run on the volume without its first 48 voxels (half a
  window) on every axis, on the voxels both cover.  Each window sees only
  the voxels inside it, so this moves the windows and changes nothing else:
  it measures how much the baseline's labels depend on where its windows
  fall.  (The shift is smaller when the volume is under 144 voxels, so that
  the cropped volume still holds a whole window.)

An ``interpretation`` line derived from these numbers is stored and printed.

Usage::

    nice -n 10 python benchmarks/speed.py            # 192^3, 3 repeats
    nice -n 10 python benchmarks/speed.py --quick    # 128^3, 1 repeat
    nice -n 10 python benchmarks/speed.py --variants # also bf16 and Gaussian-96 crackseg rows

Writes ``benchmarks/results/speed.json`` (``speed_quick.json`` with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import cpu_model, markdown_table  # noqa: E402
from crackseg.inference import intensity_range, predict_volume  # noqa: E402
from crackseg.labels import NMC4  # noqa: E402
from crackseg.model_io import default_model_dir, new_card, read_card  # noqa: E402
from crackseg.nets import build_network, unet_architecture  # noqa: E402
from crackseg.synthetic import generate_electrode  # noqa: E402

ARCH = unet_architecture(3, out_channels=4, channels=(16, 32, 64, 128), num_res_units=2)


def matmul_peak_gflops(dtype=torch.float32, n: int = 2048, reps: int = 10) -> float:
    """Best-of-3 GFLOP/s of an n x n matmul."""
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps):
            torch.matmul(a, b)
        dt = time.perf_counter() - t
        best = max(best, 2 * n**3 * reps / dt / 1e9)
    return best


def flops_per_voxel(net) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 1, 64, 64, 64)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        net(x)
    return fc.get_total_flops() / 64**3


def quick_trained_net(steps: int, seed: int = 1, patch: int = 64):
    """The benchmark network, trained briefly on a phantom (plain PyTorch loop)."""
    torch.manual_seed(seed)
    ph = generate_electrode((96, 128, 128), seed=seed)
    img = ph.image.astype(np.float32)
    lo, hi = np.percentile(img, [1, 99])
    img = ((img - lo) / (hi - lo)).astype(np.float32)
    lab = ph.labels.astype(np.int64)
    w = torch.tensor([0.5, 1.0, 4.0, 2.0])
    net = build_network(ARCH)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    net.train()
    for _ in range(steps):
        z, y, x = (rng.integers(0, s - patch + 1) for s in img.shape)
        sl = (slice(z, z + patch), slice(y, y + patch), slice(x, x + patch))
        xi = torch.from_numpy(np.ascontiguousarray(img[sl]))[None, None]
        yi = torch.from_numpy(np.ascontiguousarray(lab[sl]))[None]
        loss = torch.nn.functional.cross_entropy(net(xi), yi, weight=w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return net, float(loss.detach())


def dice_per_class(a: np.ndarray, b: np.ndarray, classes=(0, 1, 2, 3)) -> dict:
    out = {}
    for c in classes:
        ia, ib = a == c, b == c
        s = int(ia.sum()) + int(ib.sum())
        out[int(c)] = 1.0 if s == 0 else 2.0 * int((ia & ib).sum()) / s
    return out


def baseline_labels(net, vol_norm: np.ndarray) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(vol_norm)[None, None]
    with torch.no_grad():
        y = sliding_window_inference(x, (96, 96, 96), 1, net, overlap=0.25, mode="gaussian")
    return torch.argmax(y[0], 0).numpy().astype(np.uint8)


def exact_labels(net, vol_norm: np.ndarray) -> np.ndarray:
    """Labels (Z, Y, X) of the network applied to the whole volume in one forward pass.

    No windows, so no stitching error: the answer every tiled method
    approximates.  Each axis must be a multiple of the network's
    downsampling factor.
    """
    with torch.no_grad():
        y = net(torch.from_numpy(np.ascontiguousarray(vol_norm))[None, None])
    return torch.argmax(y[0], 0).numpy().astype(np.uint8)


def shifted_baseline_labels(net, vol_norm: np.ndarray, shift: int) -> np.ndarray:
    """Baseline labels of ``vol_norm[shift:, shift:, shift:]``: the same windows, moved.

    Each baseline window sees only its own 96^3 block of voxels, so running it
    on the volume without its first ``shift`` voxels per axis changes nothing
    but where the windows fall (by ``shift`` voxels relative to the content);
    the result covers the original region ``[shift:]`` on every axis.
    """
    return baseline_labels(net, np.ascontiguousarray(vol_norm[(slice(shift, None),) * vol_norm.ndim]))


def named_dice(d: dict) -> dict:
    """Per-class Dice keyed by class name (argmax channel index -> nmc4 name)."""
    return {NMC4.names[int(k)]: float(v) for k, v in d.items()}


def interpretation(exact: dict | None, self_agreement: dict, main: dict) -> str:
    """One paragraph on what the crack Dice numbers say, built from the measured values."""
    crack = "crack"
    d_main = named_dice(main["dice_vs_baseline"])[crack]
    shift, s = self_agreement["shift_voxels"], self_agreement["dice"][crack]
    parts = [f"Crack Dice of {main['method']} vs the baseline: {d_main:.3f}."]
    parts.append(f"The baseline vs itself with windows moved by {shift} voxels: {s:.3f} "
                 "(on the voxels both runs cover).")
    if s <= d_main:
        parts.append("Moving the baseline's own windows changes its crack labels at least as "
                     "much as switching to crackseg does, so the disagreement between the two "
                     "is within the baseline's own window-placement variability.")
    else:
        parts.append(f"That is {s - d_main:.3f} more than crackseg's agreement with it, so "
                     "crackseg differs from the baseline by more than window placement alone.")
    if exact is not None:
        b = exact["dice"]["baseline"][crack]
        c = exact["dice"][main["method"]][crack]
        parts.append(f"Against the whole-volume forward pass (exact answer): baseline {b:.3f}, "
                     f"{main['method']} {c:.3f}.")
        if c > b:
            parts.append(f"crackseg is closer to the exact answer than the baseline is "
                         f"(by {c - b:.3f}), so its Dice against the baseline understates "
                         "its accuracy as an inference method.")
        else:
            parts.append(f"crackseg is further from the exact answer than the baseline "
                         f"(by {b - c:.3f}).")
    return " ".join(parts)


def windows_voxels(shape, roi, interval) -> int:
    """Voxels a sliding window run pushes through the network (with overlap)."""
    from monai.data.utils import dense_patch_slices

    return len(dense_patch_slices(shape, roi, interval)) * int(np.prod(roi))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="128^3, one repeat, short training")
    ap.add_argument("--size", type=int, default=None, help="volume edge (default 192)")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (median reported)")
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--variants", action="store_true",
                    help="also time fp32/bf16 and valid/gaussian variants of crackseg")
    ap.add_argument("--exact-max-voxels", type=int, default=256**3,
                    help="largest volume for the whole-volume forward pass (default 256^3)")
    ap.add_argument("--shift", type=int, default=48,
                    help="window shift for the baseline's self-agreement (default 48 = half a "
                    "window; at most the volume edge minus 96)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    size = args.size or (128 if args.quick else 192)
    repeats = args.repeats or (1 if args.quick else 3)
    steps = args.train_steps if args.train_steps is not None else (60 if args.quick else 300)
    out = Path(args.out or ROOT / "benchmarks" / "results" /
               ("speed_quick.json" if args.quick else "speed.json"))

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_average_before": os.getloadavg(),
            "command": "python benchmarks/speed.py " + " ".join(argv or sys.argv[1:])}
    print(json.dumps(info), file=sys.stderr)

    shipped = default_model_dir()
    weights = None
    if (shipped / "model_card.json").exists():
        card = read_card(shipped)
        if card["architecture"] == ARCH or card["architecture"]["args"]["channels"] == [16, 32, 64, 128]:
            from crackseg.model_io import load_model

            net, card = load_model(shipped)
            weights = f"shipped model {card['name']}"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crackseg" / \
        f"speed-benchmark-{steps}"
    if weights is None and (cache / "model_card.json").exists():
        from crackseg.model_io import load_model

        net, card = load_model(cache)
        weights = card["description"]
    if weights is None:
        from crackseg.model_io import save_model

        t = time.perf_counter()
        net, loss = quick_trained_net(steps)
        weights = (f"trained {steps} steps on phantom seed 1 (final loss {loss:.3f}, "
                   f"{time.perf_counter() - t:.0f} s)")
        card = new_card("speed-benchmark", ARCH, patch_size=(96, 96, 96), description=weights)
        save_model(net, card, cache, overwrite=True)
    print(f"weights: {weights}", file=sys.stderr)
    net.eval()

    ph = generate_electrode((size,) * 3, seed=7)
    vol = ph.image
    lo, hi = intensity_range(vol, card["normalization"])
    vol_norm = ((vol.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo)))
    n_vox = vol.size
    fpv = flops_per_voxel(net)
    from crackseg.devices import cpu_supports_bf16

    n_mm = 1024 if args.quick else 2048
    peak32 = matmul_peak_gflops(torch.float32, n=n_mm)
    # without native bf16 the matmul is emulated and takes minutes: not a peak worth measuring
    peak16 = matmul_peak_gflops(torch.bfloat16, n=n_mm) if cpu_supports_bf16() else None

    # warm-up of both paths on a small volume
    baseline_labels(net, vol_norm[:96, :96, :96])
    predict_volume((net, card), vol[:64, :64, :64], progress=False)

    def timed(fn):
        times, res = [], None
        for _ in range(repeats):
            t = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), times, res

    t_base, ts_base, lab_base = timed(lambda: baseline_labels(net, vol_norm))
    factor = int(np.prod(card["architecture"]["args"].get("strides") or [2, 2, 2]))
    lab_exact, exact = None, None
    if n_vox > args.exact_max_voxels:
        exact_note = f"skipped: {n_vox} voxels > --exact-max-voxels {args.exact_max_voxels}"
    elif any(n % factor for n in vol.shape):
        exact_note = f"skipped: shape {list(vol.shape)} is not a multiple of {factor}"
    else:
        t = time.perf_counter()
        lab_exact = exact_labels(net, vol_norm)
        exact_note = "network applied to the whole volume in one forward pass (fp32, no_grad)"
        exact = {"note": exact_note, "seconds": time.perf_counter() - t,
                 "dice": {"baseline": named_dice(dice_per_class(lab_exact, lab_base))}}
    print(f"exact reference: {exact_note}", file=sys.stderr)
    shift = max(0, min(args.shift, min(vol.shape) - 96))
    lab_shift = shifted_baseline_labels(net, vol_norm, shift)
    common = (slice(shift, None),) * vol.ndim
    self_agreement = {
        "shift_voxels": shift,
        "method": f"baseline on volume[{shift}:, {shift}:, {shift}:] vs baseline on the volume, "
                  "on the voxels both cover",
        "region": [[shift, n] for n in vol.shape],
        "dice": named_dice(dice_per_class(lab_base[common], lab_shift)),
        "voxel_agreement": float((lab_base[common] == lab_shift).mean()),
    }
    if lab_exact is not None:
        self_agreement["dice_baseline_vs_exact_same_region"] = named_dice(
            dice_per_class(lab_exact[common], lab_base[common]))
        self_agreement["dice_shifted_vs_exact_same_region"] = named_dice(
            dice_per_class(lab_exact[common], lab_shift))
    del lab_shift
    runs = {"crackseg (defaults)": {}}
    if args.variants:
        runs.update({
            "crackseg --precision bf16": {"precision": "bf16"},
            "crackseg --blend gaussian --roi 96 --overlap 0.25 (baseline settings)": {
                "blend": "gaussian", "roi_size": 96, "overlap": 0.25},
        })
    results = []
    exec_base = windows_voxels(vol.shape, (96,) * 3, (72,) * 3)
    base = {"method": "MONAI sliding_window_inference roi 96 overlap 0.25 gaussian fp32",
            "median_s": t_base, "times_s": ts_base, "voxels_per_s": n_vox / t_base,
            "executed_voxel_factor": exec_base / n_vox,
            "fraction_of_fp32_peak_useful": n_vox * fpv / t_base / 1e9 / peak32,
            "fraction_of_fp32_peak_executed": exec_base * fpv / t_base / 1e9 / peak32}
    print(json.dumps(base), file=sys.stderr)
    for name, kw in runs.items():
        t, ts, pred = timed(lambda kw=kw: predict_volume((net, card), vol, progress=False, **kw))
        s = pred.provenance["settings"]
        roi, halo = s["roi_size"], s["halo"]
        if s["blend"] == "valid":
            from crackseg.tiling import valid_tiling

            ext = [min(n, c + 2 * h) for n, c, h in zip(vol.shape, s["chunk_size"], halo)]
            roi, halo, ov = valid_tiling(ext, roi, halo, 8)
            interval = tuple(int(r * (1 - o)) if o else r for r, o in zip(roi, ov))
            n_chunks = int(np.prod([-(-n // c) for n, c in zip(vol.shape, s["chunk_size"])]))
            exec_v = n_chunks * windows_voxels(ext, roi, interval)
        else:
            interval = tuple(int(r * (1 - s["overlap"])) for r in roi)
            exec_v = windows_voxels(vol.shape, tuple(min(r, n) for r, n in zip(roi, vol.shape)),
                                    interval)
        d = dice_per_class(lab_base, pred.labels)
        r = {"method": name, "settings": s, "median_s": t, "times_s": ts,
             "voxels_per_s": n_vox / t, "speedup_vs_baseline": t_base / t,
             "executed_voxel_factor": exec_v / n_vox,
             "fraction_of_fp32_peak_useful": n_vox * fpv / t / 1e9 / peak32,
             "dice_vs_baseline": d, "dice_vs_baseline_mean": float(np.mean(list(d.values()))),
             "voxel_agreement": float((lab_base == pred.labels).mean())}
        if lab_exact is not None:
            r["dice_vs_exact"] = named_dice(dice_per_class(lab_exact, pred.labels))
            exact["dice"][name] = r["dice_vs_exact"]
        print(json.dumps({k: v for k, v in r.items() if k != "settings"}), file=sys.stderr)
        results.append(r)
    record = {
        "machine": info, "volume": {"shape": list(vol.shape), "dtype": str(vol.dtype),
                                    "phantom_seed": 7},
        "network": {"architecture": ARCH, "weights": weights,
                    "flops_per_voxel": fpv},
        "matmul_peak_gflops": {"fp32": peak32, "bf16": peak16},
        "baseline": base, "crackseg": results,
        "exact_reference": exact if exact is not None else {"note": exact_note},
        "baseline_self_agreement": self_agreement,
        "interpretation": interpretation(exact, self_agreement, results[0]),
        "note": "2-core CPU shared with other jobs; medians of repeated runs",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    main_r = results[0]
    rows = [{"comparison": f"baseline vs itself, windows moved {shift} voxels",
             **self_agreement["dice"]}]
    rows += [{"comparison": f"{r['method']} vs baseline", **named_dice(r["dice_vs_baseline"])}
             for r in results]
    if exact is not None:
        rows += [{"comparison": f"{k} vs whole-volume forward pass", **v}
                 for k, v in exact["dice"].items()]
    print(markdown_table(rows, ["comparison", *NMC4.names]))
    print(record["interpretation"])
    print(f"baseline {base['voxels_per_s'] / 1e6:.2f} Mvox/s, crackseg "
          f"{main_r['voxels_per_s'] / 1e6:.2f} Mvox/s, speedup {main_r['speedup_vs_baseline']:.2f}x, "
          f"Dice vs baseline {main_r['dice_vs_baseline']} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
