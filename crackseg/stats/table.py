"""Per-particle table: damage, porosity, size, shape and position of every particle.

A particle's *envelope* is its solid plus the crack and pore voxels it
encloses (DESIGN.md, "Per-particle quantities").  Given a semantic
segmentation and an instance volume whose labels cover each envelope, every
quantity here is a ratio of voxel counts, computed for all particles at once
with :func:`numpy.bincount` (no Python loop over particles).

Arrays are ZYX; voxel sizes are in micrometres per axis.  Columns ending in
``_um``/``_um3`` are NaN when the voxel size is unknown; the ``_vox`` columns
are always filled.

Posterior samples of the segmentation (test-time augmentation or MC dropout)
are stored compactly as ``particle_samples.npz``: ``label`` (n_particles,)
uint32 instance labels, the column order of the others, and either
``crack_fraction`` (n_samples, n_particles) float32, or the per-sample
counts ``crack_voxels`` (n_samples, n_particles) with ``envelope_voxels``
(n_particles,) as written by inference
(:func:`crackseg.uncertainty.particle_posterior_counts`).

:func:`posterior_crack_fractions` builds them from an iterator of sampled
label volumes; :func:`write_particle_samples` / :func:`read_particle_samples`
store and load them.

Examples
--------
>>> import numpy as np
>>> seg = np.zeros((8, 8, 8), np.uint8); seg[2:6, 2:6, 2:6] = 1; seg[3, 2:6, 2:6] = 2
>>> inst = (seg > 0).astype(np.uint32)
>>> t = particle_table(seg, inst, voxel_size_um=(0.5, 0.5, 0.5))
>>> float(t.loc[0, "crack_fraction"])
0.25
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from crackseg.errors import InputError
from crackseg.io import atomic_path
from crackseg.labels import NMC4, LabelSchema
from crackseg.stats.table_blocks import DEFAULT_MAX_MEMORY_GB, block_shape, particle_sums

#: Area correction of face counting: the mean of |n_z|+|n_y|+|n_x| over
#: isotropic surface orientations is 3/2, so counted faces overestimate the
#: area of a smooth surface by that factor on average.
FACE_COUNT_AREA_FACTOR = 2.0 / 3.0


def _names(ndim: int) -> dict:
    """Words of the column names for a 3-D volume or a 2-D section."""
    if ndim == 2:
        return {"size": "area", "pix": "px", "size_um": "um2", "axes": "yx",
                "boundary": "perimeter_um", "shape": "circularity"}
    return {"size": "volume", "pix": "vox", "size_um": "um3", "axes": "zyx",
            "boundary": "surface_area_um2", "shape": "sphericity"}


def _column_names(ndim: int) -> list[str]:
    """Columns of the table of a volume (``ndim`` 3) or a section (2), in order."""
    nm = _names(ndim)
    pix, axes = nm["pix"], nm["axes"]
    return ([
        "label", f"{nm['size']}_{pix}", f"{nm['size']}_{nm['size_um']}",
        "equivalent_diameter_um", f"equivalent_diameter_{pix}",
        f"envelope_{pix}", f"solid_{pix}", f"crack_{pix}", f"pore_{pix}",
        "crack_fraction", "pore_fraction", "void_fraction",
        "surface_crack_fraction", "internal_crack_fraction", f"shell_{pix}_count",
        f"core_{pix}_count", nm["boundary"], nm["shape"]]
        + [f"centroid_{a}_{pix}" for a in axes] + [f"centroid_{a}_um" for a in axes]
        + [f"depth_{pix}", "depth_um"]
        + [f"bbox_{a}0" for a in axes] + [f"bbox_{a}1" for a in axes] + ["touches_border"])


TABLE_COLUMNS = _column_names(3)
"""Columns of the table of a 3-D volume."""

TABLE_COLUMNS_2D = _column_names(2)
"""Columns of the table of a 2-D section (areas, perimeters and pixels instead of volumes,
surfaces and voxels; the damage columns are area fractions in the section)."""

TABLE_COLUMNS_STACK = (
    ["section"] + TABLE_COLUMNS_2D[:TABLE_COLUMNS_2D.index("centroid_y_px")]
    + ["centroid_z_px", "centroid_y_px", "centroid_x_px",
       "centroid_z_um", "centroid_y_um", "centroid_x_um", "depth_px", "depth_um",
       "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1", "touches_border"]
)
"""Columns of the table of a stack of 2-D sections: one row per particle profile, the columns
of a section plus the ``section`` index, its position (``centroid_z_*``: the section's
index, and its index x the section spacing in µm) and ``bbox_z0``/``bbox_z1`` (the section,
half-open)."""

#: Perimeter correction of edge counting: the mean of |n_y|+|n_x| over isotropic
#: orientations is 4/pi, so counted pixel edges overestimate a smooth perimeter by it.
EDGE_COUNT_PERIMETER_FACTOR = np.pi / 4.0

UNIT_LABELS = {"um": "µm", "vox": "voxels", "px": "pixels"}
"""How a unit code of the tables and summaries is written for readers."""


def unit_label(unit: str) -> str:
    """Readable name of a unit code (``"um"`` -> ``"µm"``, ``"vox"`` -> ``"voxels"``, ...).

    Examples
    --------
    >>> unit_label("px")
    'pixels'
    """
    return UNIT_LABELS.get(unit, unit)


def _class_value(schema: LabelSchema, name: str) -> int | None:
    return schema.value(name) if schema.has(name) else None


def _check_inputs(seg, instances, schema, source):
    """Dimensionality, schema and instance shape and dtype, without reading lazy arrays."""
    seg = seg if hasattr(seg, "shape") and hasattr(seg, "dtype") else np.asarray(seg)
    if len(seg.shape) not in (2, 3):
        raise InputError(f"{source}: segmentation must be a 3-D (Z, Y, X) volume or a 2-D (Y, X) "
                         f"section, got shape {tuple(seg.shape)}")
    if not schema.has("particle"):
        raise InputError(
            f"{source}: schema {schema.name!r} has no 'particle' class; per-particle statistics "
            "need classes named particle (and crack, pore)"
        )
    if instances is not None:
        if not (hasattr(instances, "shape") and hasattr(instances, "dtype")):
            instances = np.asarray(instances)
        if tuple(instances.shape) != tuple(seg.shape):
            raise InputError(
                f"instances shape {tuple(instances.shape)} differs from segmentation {source} "
                f"shape {tuple(seg.shape)}; give the instance volume computed from this "
                "segmentation"
            )
        if not np.issubdtype(np.dtype(instances.dtype), np.integer):
            raise InputError(f"instances have non-integer dtype {instances.dtype}; save them as uint32")
    return seg, instances


def particle_table(seg, instances=None, *, schema: LabelSchema = NMC4, voxel_size_um=None,
                   depth_axis: int = 0, shell_um: float | None = None, shell_vox: float = 2.0,
                   posterior=None, min_volume_um3: float | None = None,
                   source: str = "segmentation", chunk_size=None, max_memory_gb: float | None = None,
                   progress: bool = False, workers: int = 1) -> pd.DataFrame:
    """One row per particle with its damage, size, shape and position.

    Arrays larger than ``max_memory_gb`` allows, and lazy arrays (Zarr, TIFF,
    HDF5 from ``read_volume(..., lazy=True)``), are measured block by block
    (:func:`crackseg.stats.table_blocks.particle_sums`), as the whole array.

    Parameters
    ----------
    seg : array_like of uint8, shape (Z, Y, X) or (Y, X)
        Semantic labels of ``schema`` (nmc4: 0 matrix, 1 particle, 2 crack,
        3 pore): a volume, or one 2-D section (SEM, FIB, a tomogram slice).
    instances : array_like of int, same shape as ``seg``, optional
        Particle instance labels (0 = none) covering each particle's envelope.
        Computed with :func:`crackseg.particles.particle_instances` when
        omitted.
    schema : LabelSchema
        Classes named ``particle``, ``crack`` and ``pore`` are used.
    voxel_size_um : sequence of float, optional
        Voxel (pixel) size per axis in µm.  Without it the ``_um`` columns
        are NaN and sizes are in voxels (pixels).
    depth_axis : int
        Array axis along the electrode thickness; depth is measured from the
        first slice along it.
    shell_um, shell_vox : float
        Thickness of the outer shell of the envelope that counts as the
        particle surface (``surface_crack_fraction``); ``shell_um`` wins when
        given with a voxel size, else ``shell_vox`` voxels.
    posterior : array_like, shape (n_samples, n_particles), or (labels, array), optional
        Posterior samples of ``crack_fraction`` (columns in table order, or a
        ``(labels, samples)`` pair as from :func:`read_particle_samples`);
        adds ``crack_fraction_mean`` and ``crack_fraction_std``.
    min_volume_um3 : float, optional
        Passed to :func:`crackseg.particles.particle_instances` when
        instances are computed here.
    source : str
        Name of the segmentation in error messages.
    chunk_size : int or sequence of int, optional
        Block edge (voxels, one or per axis) of block-by-block measurement;
        default from ``max_memory_gb``.
    max_memory_gb : float, optional
        Working memory of the measurement (default 1 GB), shared by the ``workers``.
    progress : bool
        Progress bar on stderr over the blocks.
    workers : int
        Processes measuring blocks in parallel (the table does not depend on it).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS` for a volume, :data:`TABLE_COLUMNS_2D`
        for a section (plus posterior columns); ``attrs`` records voxel size,
        depth axis, shell thickness and shape.  Shape measures
        (``sphericity``/``circularity``, surface area/perimeter) of particles
        truncated by the field of view are NaN: their cut face is not their
        surface.

    Raises
    ------
    InputError
        Wrong dimensionality, labels outside the schema, shape mismatch, or no
        particles.

    Examples
    --------
    >>> import numpy as np
    >>> seg = np.zeros((6, 6, 6), np.uint8); seg[1:5, 1:5, 1:5] = 1
    >>> particle_table(seg, (seg > 0).astype(np.uint32))["volume_vox"].tolist()
    [64]
    >>> sec = np.zeros((8, 8), np.uint8); sec[2:6, 2:6] = 1; sec[3, 2:6] = 2
    >>> t = particle_table(sec, (sec > 0).astype(np.uint32), voxel_size_um=(0.5, 0.5))
    >>> t[["area_px", "area_um2", "crack_fraction"]].values.tolist()
    [[16.0, 4.0, 0.25]]
    """
    seg, instances = _check_inputs(seg, instances, schema, source)
    nd = len(seg.shape)
    vs_known = voxel_size_um is not None
    vs = _voxel_size(voxel_size_um, nd, ", ".join(_names(nd)["axes"]))
    if depth_axis not in range(nd):
        raise InputError(f"depth axis {depth_axis} must be one of {', '.join(map(str, range(nd)))} "
                         f"for a {nd}-D {'section' if nd == 2 else 'volume'}")
    if instances is None:
        seg = np.asarray(seg[...])
        instances = _label_instances(seg, schema, voxel_size_um, min_volume_um3)
    thickness = shell_um if (shell_um is not None and vs_known) else \
        shell_vox * (min(vs) if vs_known else 1.0)
    lazy = not (isinstance(seg, np.ndarray) and isinstance(instances, np.ndarray))
    gb = (DEFAULT_MAX_MEMORY_GB if max_memory_gb is None else max_memory_gb) / max(1, int(workers))
    block = block_shape(seg.shape, chunk_size=chunk_size, max_memory_gb=gb, lazy=lazy)
    sums = particle_sums(seg, instances, schema=schema, thickness=thickness,
                         anisotropy=vs if vs_known else None, block=block, source=source,
                         progress=progress, workers=workers)
    if sums["label"].size == 0:
        raise InputError(f"{source}: no particles found (no particle instances); nothing to measure")
    return _table_of_sums(sums, tuple(seg.shape), vs if vs_known else None, depth_axis,
                          thickness, schema, posterior)


def _table_of_sums(sums: dict, shape: tuple, voxel_size_um, depth_axis: int, thickness: float,
                   schema: LabelSchema, posterior) -> pd.DataFrame:
    """The table of :func:`particle_table` from its per-particle sums, with its ``attrs``."""
    nd, vs_known = len(shape), voxel_size_um is not None
    vs = tuple(voxel_size_um) if vs_known else (1.0,) * nd
    cols = _measured_columns(sums, shape, vs, vs_known, depth_axis)
    table = pd.DataFrame({name: cols[name] for name in _column_names(nd)})
    n_samples = _add_posterior_columns(table, posterior)
    if n_samples is not None:
        table.attrs["n_posterior_samples"] = n_samples
    table.attrs.update({
        "voxel_size_um": list(vs) if vs_known else None,
        "depth_axis": int(depth_axis),
        "shape": list(shape),
        "shell_thickness": float(thickness),
        "shell_unit": "um" if vs_known else _names(nd)["pix"],
        "schema": schema.name,
    })
    return table


def _label_instances(seg: np.ndarray, schema, voxel_size_um, min_volume_um3) -> np.ndarray:
    """Particle instances of ``seg`` (:func:`crackseg.particles.particle_instances`)."""
    from crackseg.particles import particle_instances

    kw = {} if min_volume_um3 is None else {"min_volume_um3": min_volume_um3}
    return particle_instances(seg, schema=schema, voxel_size_um=voxel_size_um, **kw)


def _voxel_size(voxel_size_um, nd: int, axes: str) -> tuple[float, ...]:
    """Voxel size per axis in µm (ones when unknown), checked: ``nd`` finite positive numbers."""
    vs = tuple(float(v) for v in voxel_size_um) if voxel_size_um is not None else (1.0,) * nd
    if len(vs) != nd or not all(np.isfinite(v) and v > 0 for v in vs):
        raise InputError(f"voxel size {voxel_size_um} must be {nd} positive numbers ({axes}) in µm")
    return vs


def _add_posterior_columns(table: pd.DataFrame, posterior) -> int | None:
    """Add ``crack_fraction_mean`` and ``_std`` of posterior samples; return their number."""
    if posterior is None:
        return None
    samples = align_posterior(posterior, table["label"].to_numpy())
    table["crack_fraction_mean"] = samples.mean(axis=0)
    table["crack_fraction_std"] = samples.std(axis=0, ddof=1) if samples.shape[0] > 1 else 0.0
    return int(samples.shape[0])


def _measured_columns(sums: dict, shape: tuple, vs: tuple, vs_known: bool,
                      depth_axis: int) -> dict:
    """Every column of :func:`particle_table` by name (arrays of shape (n_particles,)) from
    the per-particle sums of :func:`crackseg.stats.table_blocks.particle_sums`."""
    nd, pix = len(shape), _names(len(shape))["pix"]
    n = sums["label"].size
    env_n = sums["envelope"]
    bbox = sums["bbox"]
    touches = ((bbox[:, :nd] == 0) | (bbox[:, nd:] == np.asarray(shape))).any(axis=1)
    size = env_n * float(np.prod(vs))
    env = env_n.astype(np.float64)
    diameter = _equivalent_diameter(nd)
    nan = np.full(n, np.nan)
    return {
        "label": sums["label"].astype(np.uint32),
        f"{_names(nd)['size']}_{pix}": env_n,
        f"{_names(nd)['size']}_{_names(nd)['size_um']}": size if vs_known else nan,
        "equivalent_diameter_um": diameter(size) if vs_known else nan,
        f"equivalent_diameter_{pix}": diameter(env),
        **{f"{c}_{pix}": sums[c] for c in ("envelope", "solid", "crack", "pore")},
        "crack_fraction": sums["crack"] / env,
        "pore_fraction": sums["pore"] / env,
        "void_fraction": (env - sums["solid"]) / env,
        **_shell_columns(sums, pix),
        **_boundary_columns(sums["faces"], vs, size, touches, vs_known),
        **_position_columns([c / env_n for c in sums["coord_sum"]], bbox, touches,
                            vs, vs_known, depth_axis, pix),
    }


def _shell_columns(sums: dict, pix: str) -> dict:
    """Crack fractions of each envelope's outer shell and of its core, and their sizes.

    The shell is the part of the envelope within the shell thickness of
    another label (a label-aware distance transform).
    """
    shell_n, shell_crack = sums["shell"], sums["shell_crack"]
    core_n = sums["envelope"] - shell_n
    core_crack = sums["crack"] - shell_crack
    with np.errstate(divide="ignore", invalid="ignore"):
        surface_cf = np.where(shell_n > 0, shell_crack / shell_n, np.nan)
        internal_cf = np.where(core_n > 0, core_crack / np.maximum(core_n, 1), np.nan)
    return {"surface_crack_fraction": surface_cf, "internal_crack_fraction": internal_cf,
            f"shell_{pix}_count": shell_n, f"core_{pix}_count": core_n}


def _equivalent_diameter(nd: int):
    """Diameter of the ball (3-D) or disc (2-D) of a given volume (area)."""
    if nd == 3:
        return lambda v: (6 * v / np.pi) ** (1 / 3)
    return lambda a: np.sqrt(4 * a / np.pi)


def _boundary_faces(faces: np.ndarray, voxel_size) -> np.ndarray:
    """Size of the faces (3-D, µm²) or edges (2-D, µm) between each label and anything else,
    from the face counts per axis (ndim, n)."""
    nd = faces.shape[0]
    area = np.zeros(faces.shape[1])
    for axis in range(nd):
        area += float(np.prod([voxel_size[i] for i in range(nd) if i != axis])) * faces[axis]
    return area


def _boundary_columns(faces: np.ndarray, vs: tuple, size: np.ndarray, touches: np.ndarray,
                      vs_known: bool) -> dict:
    """Surface area and sphericity (3-D), or perimeter and circularity (2-D), of each particle.

    NaN for particles truncated by the field of view: their cut face is not
    their surface.  The boundary is NaN without a voxel size too.
    """
    nm = _names(faces.shape[0])
    n = size.size
    if faces.shape[0] == 3:
        boundary = _boundary_faces(faces, vs) * FACE_COUNT_AREA_FACTOR
        with np.errstate(divide="ignore", invalid="ignore"):
            shape_measure = np.pi ** (1 / 3) * (6 * size) ** (2 / 3) / boundary
    else:
        boundary = _boundary_faces(faces, vs) * EDGE_COUNT_PERIMETER_FACTOR
        with np.errstate(divide="ignore", invalid="ignore"):
            shape_measure = 4 * np.pi * size / boundary ** 2
    shape_measure = np.where(touches, np.nan, np.clip(shape_measure, 0.0, None))
    boundary = np.where(touches, np.nan, boundary)
    return {nm["boundary"]: boundary if vs_known else np.full(n, np.nan),
            nm["shape"]: shape_measure}


def _position_columns(centroid: list, bbox: np.ndarray, touches: np.ndarray, vs: tuple,
                      vs_known: bool, depth_axis: int, pix: str) -> dict:
    """Centroids (voxels and µm), depth, bounding box and border contact of each particle."""
    axes = _names(len(centroid))["axes"]
    nd, nan = len(axes), np.full(len(touches), np.nan)
    return {
        **{f"centroid_{a}_{pix}": centroid[i] for i, a in enumerate(axes)},
        **{f"centroid_{a}_um": centroid[i] * vs[i] if vs_known else nan
           for i, a in enumerate(axes)},
        f"depth_{pix}": centroid[depth_axis],
        "depth_um": centroid[depth_axis] * vs[depth_axis] if vs_known else nan,
        **{f"bbox_{a}0": bbox[:, i] for i, a in enumerate(axes)},
        **{f"bbox_{a}1": bbox[:, nd + i] for i, a in enumerate(axes)},
        "touches_border": touches,
    }


def section_stack_table(seg, instances=None, *, schema: LabelSchema = NMC4, voxel_size_um=None,
                        depth_axis: int = 0, shell_um: float | None = None,
                        shell_vox: float = 2.0, posterior=None,
                        min_volume_um3: float | None = None,
                        source: str = "segmentation") -> pd.DataFrame:
    """One row per particle profile of every section of a stack of 2-D sections.

    Each section (``seg[z]``) is measured as :func:`particle_table` measures
    a section alone (areas, circularity, damage as crack area / particle area
    in that plane; ``touches_border`` for profiles cut by the section's own
    edge), and the rows are stacked with the section's index and position.
    A particle cut by several sections appears once per section.

    Parameters
    ----------
    seg : array_like of uint8, shape (Z, Y, X)
        Semantic labels of Z sections stacked along axis 0.
    instances : array_like of int, shape (Z, Y, X), optional
        Particle instances labelled per section (a label belongs to one
        section), as from :func:`crackseg.sections.section_instances`
        (computed here when omitted).
    voxel_size_um : sequence of 3 float, optional
        (section spacing, y, x) in µm.  Without it positions are in pixels
        and the sections are taken to be one pixel apart.
    depth_axis : int
        0: depth is the section's position in the stack; 1 or 2: the rows or
        columns of each section.
    shell_um, shell_vox, posterior, min_volume_um3, source
        As for :func:`particle_table` (``posterior`` in the table's order or
        as ``(labels, samples)``; ``min_volume_um3`` is an area in µm² here).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TABLE_COLUMNS_STACK` (plus posterior columns);
        ``attrs`` as :func:`particle_table` with the 3-D ``shape`` and voxel
        size and ``n_sections``.

    Examples
    --------
    >>> seg = np.zeros((3, 12, 12), np.uint8); seg[:, 3:9, 3:9] = 1; seg[1, 5, 3:9] = 2
    >>> t = section_stack_table(seg, voxel_size_um=(2.0, 0.5, 0.5))
    >>> t[["section", "centroid_z_um", "crack_fraction"]].values.tolist()
    [[0.0, 0.0, 0.0], [1.0, 2.0, 0.16666666666666666], [2.0, 4.0, 0.0]]
    """
    seg = seg if hasattr(seg, "shape") and hasattr(seg, "dtype") else np.asarray(seg)
    if len(seg.shape) != 3:
        raise InputError(f"{source}: a stack of sections is 3-D (Z, Y, X); got shape "
                         f"{tuple(seg.shape)}")
    vs_known = voxel_size_um is not None
    vs = _voxel_size(voxel_size_um, 3, "section spacing, y, x")
    if depth_axis not in (0, 1, 2):
        raise InputError(f"depth axis {depth_axis} must be 0 (through the stack), 1 or 2")
    if instances is None:
        from crackseg.sections import section_instances

        kw = {} if min_volume_um3 is None else {"min_volume_um3": min_volume_um3}
        seg = np.asarray(seg[...])
        instances = section_instances(seg, schema=schema, voxel_size_um=voxel_size_um, **kw)
    if not hasattr(instances, "shape"):
        instances = np.asarray(instances)
    if tuple(instances.shape) != tuple(seg.shape):
        raise InputError(f"instances shape {tuple(instances.shape)} differs from segmentation "
                         f"{source} shape {tuple(seg.shape)}; give the instances computed from "
                         "this segmentation")
    tables = []
    for z in range(seg.shape[0]):
        inst_z = np.asarray(instances[z])
        if not inst_z.any():
            continue
        t = particle_table(np.asarray(seg[z]), inst_z, schema=schema,
                           voxel_size_um=vs[1:] if vs_known else None,
                           depth_axis=max(depth_axis - 1, 0), shell_um=shell_um,
                           shell_vox=shell_vox, source=f"{source} (section {z})")
        t.insert(0, "section", z)
        t["centroid_z_px"] = float(z)
        t["centroid_z_um"] = z * vs[0] if vs_known else np.nan
        t["bbox_z0"], t["bbox_z1"] = z, z + 1
        if depth_axis == 0:
            t["depth_px"] = float(z)
            t["depth_um"] = z * vs[0] if vs_known else np.nan
        tables.append(t)
    if not tables:
        raise InputError(f"{source}: no particles found in any of its {seg.shape[0]} sections; "
                         "nothing to measure")
    attrs = dict(tables[0].attrs)
    table = pd.concat(tables, ignore_index=True)[TABLE_COLUMNS_STACK]
    if table["label"].duplicated().any():
        raise InputError(f"{source}: instance labels repeat across sections; label the particles "
                         "of a stack section by section (crackseg.sections.section_instances)")
    n_samples = _add_posterior_columns(table, posterior)
    if n_samples is not None:
        attrs["n_posterior_samples"] = n_samples
    attrs.update({"voxel_size_um": list(vs) if vs_known else None, "depth_axis": int(depth_axis),
                  "shape": list(seg.shape), "n_sections": int(seg.shape[0])})
    table.attrs = attrs
    return table


def align_posterior(posterior, labels: np.ndarray) -> np.ndarray:
    """Posterior crack-fraction samples as (n_samples, n_particles) in ``labels`` order.

    Parameters
    ----------
    posterior : array_like (n_samples, n_particles), or (sample_labels, array)
        Bare arrays must already be in ``labels`` order.
    labels : numpy.ndarray of int, shape (n_particles,)
        Target order (e.g. a table's ``label`` column).
    """
    if isinstance(posterior, tuple) and len(posterior) == 2:
        plabels, arr = np.asarray(posterior[0]), np.asarray(posterior[1], dtype=np.float64)
        pos = {int(v): i for i, v in enumerate(plabels)}
        missing = [int(v) for v in labels if int(v) not in pos]
        if missing:
            raise InputError(
                f"posterior samples lack particles {missing[:5]}; they were computed for other instances"
            )
        return arr[:, [pos[int(v)] for v in labels]]
    arr = np.asarray(posterior, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != len(labels):
        raise InputError(
            f"posterior samples of shape {arr.shape} do not match {len(labels)} particles "
            "(expected (n_samples, n_particles))"
        )
    return arr


def posterior_crack_fractions(seg_samples: Iterable, instances, *, schema: LabelSchema = NMC4,
                              labels=None) -> tuple[np.ndarray, np.ndarray]:
    """Crack fraction of every particle in each posterior sample of a segmentation.

    Parameters
    ----------
    seg_samples : iterable of array_like uint8, each shape (Z, Y, X)
        Sampled label volumes (TTA / MC dropout), one per posterior sample.
    instances : array_like of int, shape (Z, Y, X)
        Particle instances (envelopes) shared by all samples.
    schema : LabelSchema
        Which value is ``crack``.
    labels : array_like of int, optional
        Particle labels to report, in this order (default: all, sorted).

    Returns
    -------
    labels : numpy.ndarray of uint32, shape (n_particles,)
    crack_fraction : numpy.ndarray of float32, shape (n_samples, n_particles)

    Examples
    --------
    >>> import numpy as np
    >>> inst = np.zeros((4, 4, 4), np.uint32); inst[:2] = 1; inst[2:] = 2
    >>> s = np.ones((4, 4, 4), np.uint8); s[0, 0, :] = 2
    >>> lab, cf = posterior_crack_fractions([s, np.ones_like(s)], inst)
    >>> cf.tolist()
    [[0.125, 0.0], [0.0, 0.0]]
    """
    inst = np.asarray(instances).ravel()
    maxid = int(inst.max()) if inst.size else 0
    envelope = np.bincount(inst, minlength=maxid + 1)
    if labels is None:
        labels = np.flatnonzero(envelope)
        labels = labels[labels > 0]
    labels = np.asarray(labels, dtype=np.int64)
    crack_value = schema.value("crack")
    rows = []
    for sample in seg_samples:
        s = np.asarray(sample).ravel()
        if s.size != inst.size:
            raise InputError(f"posterior sample of {s.size} voxels does not match instances of {inst.size}")
        crack = np.bincount(inst[s == crack_value], minlength=maxid + 1)
        rows.append(crack[labels] / np.maximum(envelope[labels], 1))
    if not rows:
        raise InputError("no posterior samples given")
    return labels.astype(np.uint32), np.asarray(rows, dtype=np.float32)


def write_particle_samples(path: str | os.PathLike, labels, crack_fraction, *,
                           pore_fraction=None, overwrite: bool = False) -> Path:
    """Store posterior per-particle samples as ``particle_samples.npz`` (atomic)."""
    arrays = {"label": np.asarray(labels, dtype=np.uint32),
              "crack_fraction": np.asarray(crack_fraction, dtype=np.float32)}
    if pore_fraction is not None:
        arrays["pore_fraction"] = np.asarray(pore_fraction, dtype=np.float32)
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


def read_particle_samples(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(labels, crack_fraction)`` from a ``particle_samples.npz``.

    Reads either form: ``crack_fraction`` (n_samples, n_particles), or the
    counts written by inference, ``crack_voxels`` (n_samples, n_particles)
    and ``envelope_voxels`` (n_particles,).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such posterior samples file")
    try:
        with np.load(p, allow_pickle=False) as z:
            labels = np.asarray(z["label"])
            if "crack_fraction" in z:
                cf = np.asarray(z["crack_fraction"], dtype=np.float64)
            else:
                env = np.asarray(z["envelope_voxels"], dtype=np.float64)
                cf = np.asarray(z["crack_voxels"], dtype=np.float64) / np.maximum(env, 1.0)
    except (OSError, ValueError, KeyError) as e:
        raise InputError(f"{p}: not a particle_samples.npz with 'label' and 'crack_fraction' or "
                         f"'crack_voxels' + 'envelope_voxels' ({e})") from None
    if cf.ndim != 2 or cf.shape[1] != labels.shape[0]:
        raise InputError(f"{p}: crack samples of shape {cf.shape} do not match {labels.shape[0]} labels")
    return labels, cf


def spatial_axes(table: pd.DataFrame) -> str:
    """Axes of a table's particle positions: ``"zyx"`` (a volume) or ``"yx"`` (a section).

    Examples
    --------
    >>> spatial_axes(pd.DataFrame({"centroid_y_px": [1.0], "centroid_x_px": [2.0]}))
    'yx'
    """
    return "".join(a for a in "zyx"
                   if f"centroid_{a}_vox" in table or f"centroid_{a}_px" in table)


def pixel_unit(table: pd.DataFrame) -> str:
    """``"px"`` for the table of a 2-D section, ``"vox"`` for a volume."""
    return "px" if "centroid_y_px" in table else "vox"


def is_section_table(table: pd.DataFrame) -> bool:
    """Whether a particle table measures 2-D sections (areas) rather than a volume:
    one section, or a stack of them (:func:`is_stack_table`)."""
    return pixel_unit(table) == "px"


def is_stack_table(table: pd.DataFrame) -> bool:
    """Whether a particle table measures a stack of 2-D sections (a ``section`` column).

    Examples
    --------
    >>> is_stack_table(pd.DataFrame({"section": [0], "centroid_z_px": [0.0],
    ...                              "centroid_y_px": [1.0], "centroid_x_px": [2.0]}))
    True
    """
    return is_section_table(table) and "section" in table and "centroid_z_px" in table


def particle_coords(table: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Particle centroids (n, ndim) in µm when known, else in voxels (pixels), and the unit.

    The unit is ``"um"``, ``"vox"`` or, for a 2-D section, ``"px"``.
    """
    axes = spatial_axes(table)
    um = table[[f"centroid_{a}_um" for a in axes]].to_numpy(dtype=np.float64)
    if np.isfinite(um).all():
        return um, "um"
    pix = pixel_unit(table)
    return table[[f"centroid_{a}_{pix}" for a in axes]].to_numpy(dtype=np.float64), pix


def depth_values(table: pd.DataFrame, unit: str) -> np.ndarray:
    """Each particle's depth in ``unit`` (``"um"``, or the table's voxel/pixel unit)."""
    col = "depth_um" if unit == "um" else f"depth_{pixel_unit(table)}"
    return table[col].to_numpy(dtype=np.float64)


def volume_extent(table: pd.DataFrame) -> tuple[np.ndarray, str]:
    """Extent of the analysed volume (or section) in the unit of :func:`particle_coords`."""
    axes = spatial_axes(table)
    shape = np.asarray(table.attrs.get("shape") or
                       table[[f"bbox_{a}1" for a in axes]].max().to_numpy(), dtype=np.float64)
    vs = table.attrs.get("voxel_size_um")
    _, unit = particle_coords(table)
    if unit == "um" and vs:
        return shape * np.asarray(vs), "um"
    return shape, unit
