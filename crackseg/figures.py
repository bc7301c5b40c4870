"""Figures of images, segmentations and particle maps (matplotlib, no display).

Statistics figures (histograms, depth profiles, representativeness) live in
:mod:`crackseg.stats.figures`; this module draws the pictures of the volume
itself.

Examples
--------
>>> import numpy as np
>>> from crackseg.figures import orthoslices_figure
>>> img = np.random.default_rng(0).random((16, 20, 24))
>>> seg = (img > 0.5).astype(np.uint8)
>>> fig = orthoslices_figure(img, seg)
>>> len(fig.axes)
3
"""

from __future__ import annotations

import base64
import io as _io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from crackseg.labels import NMC4, LabelSchema  # noqa: E402

CLASS_COLOURS = {"matrix": None, "particle": (0.95, 0.85, 0.3, 0.18),
                 "crack": (0.9, 0.1, 0.1, 0.85), "pore": (0.1, 0.45, 1.0, 0.8)}
"""Overlay colour (RGBA) per class name; other classes get a tab10 colour."""


def figure_png(fig, *, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib figure (the figure is closed)."""
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` URI for embedding a PNG in HTML."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _overlay_rgba(seg2d: np.ndarray, schema: LabelSchema) -> np.ndarray:
    rgba = np.zeros(seg2d.shape + (4,), dtype=np.float32)
    tab = plt.get_cmap("tab10")
    for i, (name, value) in enumerate(schema.classes.items()):
        colour = CLASS_COLOURS.get(name, (*tab(i)[:3], 0.5))
        if colour is None:
            continue
        rgba[seg2d == value] = colour
    return rgba


def central_slices(vol, index=None) -> list[tuple[str, np.ndarray]]:
    """The three orthogonal slices through ``index`` (default: the centre) of a ZYX volume."""
    z, y, x = index or tuple(s // 2 for s in vol.shape)
    return [(f"YX (z = {z})", np.asarray(vol[z])), (f"ZX (y = {y})", np.asarray(vol[:, y])),
            (f"ZY (x = {x})", np.asarray(vol[:, :, x]))]


def orthoslices_figure(image, seg=None, *, schema: LabelSchema = NMC4, voxel_size_um=None,
                       title: str | None = None):
    """Orthogonal slices of a volume with the segmentation overlaid.

    Parameters
    ----------
    image : array_like, shape (Z, Y, X) or (Y, X)
        Grey values.
    seg : array_like of int, same shape, optional
        Semantic labels (crack red, pore blue, particle faint yellow).
    schema : LabelSchema
        Schema of ``seg``.
    voxel_size_um : sequence of float, optional
        Used to draw slices with the right aspect ratio.
    """
    image = np.asarray(image) if np.ndim(image) == 2 else image
    if np.ndim(image) == 2:
        panels = [("YX", np.asarray(image))]
        segs = [np.asarray(seg)] if seg is not None else [None]
        aspects = [1.0]
    else:
        panels = central_slices(image)
        segs = [s for _, s in central_slices(seg)] if seg is not None else [None] * 3
        vs = voxel_size_um or (1.0, 1.0, 1.0)
        aspects = [vs[1] / vs[2], vs[0] / vs[2], vs[0] / vs[1]]
    sample = np.concatenate([p.ravel() for _, p in panels]).astype(np.float32)
    lo, hi = np.percentile(sample, [1, 99])
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, (name, sl), s, asp in zip(axes[0], panels, segs, aspects):
        ax.imshow(sl, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, aspect=asp,
                  interpolation="nearest")
        if s is not None:
            ax.imshow(_overlay_rgba(s, schema), aspect=asp, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title)
    return fig


def damage_lut(instances_max: int, labels, values, *, fill: float = np.nan) -> np.ndarray:
    """Lookup table instance id -> value (``fill`` for ids not in ``labels``)."""
    lut = np.full(int(instances_max) + 1, fill, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    keep = labels <= instances_max
    lut[labels[keep]] = np.asarray(values, dtype=np.float32)[keep]
    return lut


DAMAGE_CMAP = "viridis"
"""Colour map of particle damage: undamaged particles dark blue-violet, damaged ones yellow."""
BACKGROUND_RGBA = (1.0, 1.0, 1.0, 1.0)
"""Colour of the space between particles in particle maps (white, unlike any damage colour)."""


def particle_damage_figure(instances, labels, damage, *, vmax: float | None = None,
                           n_slices: int = 3, depth_axis: int = 0, voxel_size_um=None,
                           title: str | None = None):
    """Particle map coloured by each particle's damage (crack_fraction).

    A volume shows ``n_slices`` slices through the instance map at evenly
    spaced depths and a projection along x in which each pixel shows the
    first particle met, shaded by its distance; a 2-D section shows itself.
    Space between particles is white; particles not in ``labels`` (e.g.
    excluded ones) are light grey.

    Parameters
    ----------
    instances : array_like of int, shape (Z, Y, X) or (Y, X)
        Particle instance labels (0 = none).
    labels, damage : sequence
        Instance ids and their damage (e.g. ``crack_fraction``) from the
        particle table.
    vmax : float, optional
        Upper end of the colour scale (default: 95th percentile of damage).
    voxel_size_um : sequence of float, optional
        Voxel size per axis: depths are given in µm and panels drawn with
        true proportions; without it, in voxels.
    """
    ndim = len(instances.shape) if hasattr(instances, "shape") else np.ndim(instances)
    if ndim == 3:
        views = depth_views(instances, depth_axis, n_slices)
        if depth_axis != 0 and voxel_size_um is not None:
            vs = list(voxel_size_um)
            voxel_size_um = [vs[depth_axis]] + [v for i, v in enumerate(vs) if i != depth_axis]
    else:
        inst = np.asarray(instances)
        views = {"max": int(inst.max())}
    damage = np.asarray(damage, dtype=np.float32)
    vmax = float(np.nanpercentile(damage, 95)) if vmax is None and damage.size else (vmax or 1.0)
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    lut = damage_lut(views["max"], labels, damage)
    cmap = plt.get_cmap(DAMAGE_CMAP).with_extremes(bad=(0.82, 0.82, 0.82))

    def colour(ids):
        rgba = cmap(np.clip(lut[ids] / vmax, 0, 1))
        rgba[~np.isfinite(lut[ids])] = (0.82, 0.82, 0.82, 1.0)
        rgba[ids == 0] = BACKGROUND_RGBA
        return rgba

    sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, vmax))
    if ndim == 2:
        fig, ax = plt.subplots(figsize=(7, 7 * inst.shape[0] / max(inst.shape[1], 1) + 0.8))
        aspect = (voxel_size_um[0] / voxel_size_um[1]) if voxel_size_um else 1.0
        ax.imshow(colour(inst), interpolation="nearest", aspect=aspect)
        ax.set_xticks([])
        ax.set_yticks([])
        cb = fig.colorbar(sm, ax=ax, shrink=0.8, pad=0.01)
        cb.set_label("damage (crack_fraction; area fraction in this section)")
        if title:
            ax.set_title(title, fontsize=10)
        return fig
    vz, vy = (voxel_size_um[0], voxel_size_um[1]) if voxel_size_um else (1.0, 1.0)
    unit = "µm" if voxel_size_um else "voxels"
    fig, axes = plt.subplots(1, n_slices + 1, figsize=(3.6 * (n_slices + 1), 3.9))
    for ax, (z, sl) in zip(axes[:-1], views["slices"]):
        ax.imshow(colour(sl), interpolation="nearest")
        ax.set_title(f"slice at depth {z * vz:.3g} {unit}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    first, any_hit = views["first"], views["any_hit"]
    rgba = colour(np.where(any_hit, views["front"], 0))
    shade = 1.0 - 0.5 * first / max(1, views["width"] - 1)
    rgba[..., :3] = np.where(any_hit[..., None], rgba[..., :3] * shade[..., None], rgba[..., :3])
    # True proportions: one voxel is vz tall and vy wide.
    axes[-1].imshow(rgba, interpolation="nearest", aspect=vz / vy)
    axes[-1].set_title("projection along x (nearest particle,\ndarker = deeper)", fontsize=9)
    axes[-1].set_xlabel("y")
    axes[-1].set_ylabel("depth (z)")
    axes[-1].set_xticks([])
    axes[-1].set_yticks([])
    cb = fig.colorbar(sm, ax=list(axes), shrink=0.8, pad=0.01)
    cb.set_label("damage (crack_fraction)")
    if title:
        fig.suptitle(title)
    return fig


def depth_views(instances, depth_axis: int = 0, n_slices: int = 3,
                slab_voxels: int = 1 << 24) -> dict:
    """What :func:`particle_damage_figure` shows of a volume, read a slab at a time.

    Parameters
    ----------
    instances : array-like of int, shape (Z, Y, X)
        Particle instances (NumPy or lazy).
    depth_axis : int
        Axis of the depth; the others keep their order after it.
    n_slices : int
        Slices at evenly spaced depths.
    slab_voxels : int
        Voxels read at a time.

    Returns
    -------
    dict
        ``max`` (largest label), ``slices`` ((depth index, 2-D labels) pairs),
        ``first`` (index of the first particle voxel along the last axis,
        shape (depth, rows)), ``any_hit`` (whether a row meets a particle),
        ``front`` (the label met first) and ``width`` (length of the last axis).

    Examples
    --------
    >>> a = np.zeros((4, 2, 3), np.uint32); a[1, 0, 2] = 5
    >>> v = depth_views(a, n_slices=1)
    >>> v["max"], v["first"][1].tolist(), v["front"][1].tolist()
    (5, [2, 0], [5, 0])
    """
    shape = tuple(instances.shape)
    depth = shape[depth_axis]
    depths = np.linspace(0, depth - 1, n_slices + 2)[1:-1].astype(int)
    step = max(1, slab_voxels // max(1, int(np.prod(shape)) // max(depth, 1)))
    out = {"max": 0, "slices": [], "first": [], "any_hit": [], "front": []}
    for z0 in range(0, depth, step):
        idx = [slice(None)] * 3
        idx[depth_axis] = slice(z0, min(depth, z0 + step))
        inst = np.moveaxis(np.asarray(instances[tuple(idx)]), depth_axis, 0)
        out["max"] = max(out["max"], int(inst.max(initial=0)))
        out["slices"] += [(int(z), inst[z - z0]) for z in depths if z0 <= z < z0 + step]
        hit = inst != 0
        first = np.argmax(hit, axis=2)
        zz, yy = np.indices(first.shape)
        out["first"].append(first)
        out["any_hit"].append(hit.any(axis=2))
        out["front"].append(inst[zz, yy, first])
    for key in ("first", "any_hit", "front"):
        out[key] = np.concatenate(out[key])
    out["width"] = inst.shape[2]
    return out


def uncertainty_figure(entropy, *, title: str | None = None):
    """Central orthogonal slices of a per-voxel predictive entropy map."""
    panels = central_slices(entropy) if np.ndim(entropy) == 3 else [("YX", np.asarray(entropy))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    vmax = max(float(np.nanmax([np.nanmax(p.astype(np.float32)) for _, p in panels])), 1e-6)
    im = None
    for ax, (name, sl) in zip(axes[0], panels):
        im = ax.imshow(sl.astype(np.float32), cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.8)
    cb.set_label("predictive entropy (nats)")
    if title:
        fig.suptitle(title)
    return fig
