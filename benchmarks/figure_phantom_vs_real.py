"""Figure: a synthetic phantom slice next to a real electrode slice, with labels.

Writes ``docs/figures/phantom_vs_real.png`` (or ``--out``).  The real slice is
``../shared/data/segmentpy/1.tif`` with its manual labels (0 particle,
1 carbon-binder, 2 pore space incl. cracks); the phantom uses the nmc4 schema
(0 matrix, 1 particle, 2 crack, 3 pore).

Usage::

    python benchmarks/figure_phantom_vs_real.py [--seed 1] [--out docs/figures/phantom_vs_real.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from crackseg.io import read_volume  # noqa: E402
from crackseg.synthetic import generate_electrode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "segmentpy"


def _stretch(a):
    lo, hi = np.percentile(a, [1, 99])
    return np.clip((a.astype(np.float32) - lo) / (hi - lo), 0, 1)


def make_figure(seed: int = 1, shape=(96, 256, 256), real: str = "1"):
    """Build the comparison figure; returns a matplotlib Figure."""
    ph = generate_electrode(shape, seed=seed)
    z = shape[0] // 2
    img = read_volume(DATA / f"{real}.tif").data
    lab = read_volume(DATA / f"{real}_label.tif").data

    nmc4 = ListedColormap(["#2b2b2b", "#9fb7d6", "#e8452c", "#f2c230"])
    segpy = ListedColormap(["#9fb7d6", "#6a9a5b", "#2b2b2b"])
    fig, ax = plt.subplots(2, 2, figsize=(11, 10.5), constrained_layout=True)
    ax[0, 0].imshow(_stretch(ph.image[z]), cmap="gray")
    ax[0, 0].set_title(f"phantom (seed {seed}), slice z={z}, {ph.voxel_size_um[0]} µm voxels")
    ax[0, 1].imshow(ph.labels[z], cmap=nmc4, vmin=-0.5, vmax=3.5, interpolation="nearest")
    ax[0, 1].set_title("phantom labels: matrix / particle / crack / pore")
    ax[1, 0].imshow(_stretch(img), cmap="gray")
    ax[1, 0].set_title(f"real NMC electrode slice (SegmentPy {real}.tif)")
    ax[1, 1].imshow(lab, cmap=segpy, vmin=-0.5, vmax=2.5, interpolation="nearest")
    ax[1, 1].set_title("real labels: particle / carbon-binder / pore+crack")
    for a in ax.ravel():
        a.set_xticks([])
        a.set_yticks([])
    return fig


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "docs" / "figures" / "phantom_vs_real.png"))
    args = p.parse_args(argv)
    if not DATA.exists():
        print(f"real data not found at {DATA}")
        return 1
    fig = make_figure(seed=args.seed)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
