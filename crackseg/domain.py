"""Is this input like what the model was trained on?  Cheap out-of-distribution flags.

A segmentation can be wrong in ways no interval sees: a model shown particles
five times larger than any it was trained on, or fringes three times stronger,
returns labels with the same confidence as ever.  This module compares an
input and its prediction with the model's training domain (the card's
``training_domain``, written for models trained with the ``randomized`` data
source) and flags "model not validated for this input", with the number that
triggered each flag and the limit it crossed.

Signals (all computed in one pass over the labels, a slab at a time):

``particle_size``
    Particle diameter of the input in voxels (what ``predict --scale auto``
    measured, :func:`crackseg.scale.particle_diameter_vox`; else measured on
    the predicted envelopes) times the resampling factor, against the card's
    range widened by :data:`SIZE_MARGIN`.
``resampled_far``
    The input was resampled by a factor beyond :data:`RESAMPLE_LIMIT` (either
    way): the model never saw what that resampling does to thin cracks.
``crack_fraction`` / ``pore_fraction``
    Predicted crack (pore) voxels per particle-envelope voxel, against
    :data:`CLASS_FRACTION_FACTOR` times the most the training volumes had.
``neck_cracks``
    Share of predicted crack voxels within :data:`NECK_DISTANCE_VOX` voxels of
    a contact between two particle instances: dark necks read as cracks.
``cracks_in_matrix``
    Share of the faces of predicted crack voxels that border the matrix
    rather than particle solid: cracks are voids *inside* particles, so a high
    share means the phases are confused (inverted contrast turns the matrix
    into "particles" and real particles into "matrix" with "cracks" in them).
``particle_fraction``
    Share of the volume predicted as particle envelope; near 0 or 1 the model
    is not seeing particles and matrix.
``entropy``
    Mean predictive entropy (as a share of its maximum), when posterior
    samples were drawn.

Cards without a training domain (models trained before crackseg recorded
one) get the checks that need no card (necks, particle fraction, entropy) and
the plain statement that the training domain is unknown.

Arrays are ZYX (volumes) or YX (sections), in voxel units.

Examples
--------
>>> import numpy as np
>>> from crackseg.domain import domain_check
>>> zz, yy, xx = np.mgrid[:32, :32, :52]
>>> inst = np.zeros((32, 32, 52), np.uint32)          # two touching spheres
>>> inst[(zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 15) ** 2 < 12 ** 2] = 1
>>> inst[((zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 35) ** 2 < 12 ** 2) & (inst == 0)] = 2
>>> seg = (inst > 0).astype(np.uint8)
>>> seg[13:20, 12:21, 23:28] = 2                      # "cracks" on the neck between them
>>> d = domain_check(seg, inst, training_domain={"particle_diameter_vox": [15, 40]})
>>> d["validated"], [f["name"] for f in d["flags"]]
(False, ['neck_cracks'])
"""

from __future__ import annotations

import math

import numpy as np

from crackseg.labels import NMC4, LabelSchema
from crackseg.particle_chunks import ANALYSIS_WORKER_BYTES

SIZE_MARGIN = 1.5
"""Particle diameters within [low / 1.5, high x 1.5] of the card's range pass (the
estimate is good to about 30 %)."""
RESAMPLE_LIMIT = 2.0
"""Resampling by a factor beyond 2 (or below 1/2) flags: the model was not validated
on what such resampling does to cracks one or two voxels wide."""
CLASS_FRACTION_FACTOR = 2.0
"""Predicted crack (pore) voxels per envelope voxel above twice the training maximum flag."""
CLASS_FRACTION_SLACK = 0.01
"""...and at least this much above it (absolute), so that a tiny training maximum does not
make every pore-rich input a flag."""
NECK_DISTANCE_VOX = 2
"""Crack voxels this close (voxels) to a contact between two particles count as at a neck."""
NECK_SHARE_LIMIT = 0.25
"""Share of crack voxels at necks above which necks are likely being read as cracks
(phantom truth: 0.04-0.15)."""
CRACK_MATRIX_LIMIT = 0.2
"""Share of crack-voxel faces on the matrix (vs particle solid) above which cracks are not
inside particles (phantom truth and in-domain predictions: 0.04-0.14; inverted contrast
0.25-0.28)."""
PARTICLE_FRACTION_RANGE = (0.05, 0.95)
"""Share of the volume predicted as particle envelope outside this range flags."""
ENTROPY_LIMIT = 0.3
"""Mean predictive entropy (share of its maximum, log of the class count) above this flags."""
MIN_CRACK_VOXELS = 200
"""Fewer predicted crack voxels than this: the neck share is not judged."""
UNKNOWN_LINE = ("model's training domain unknown (its card records none): particle size and "
                "class fractions not checked against it")
SLAB_VOXELS = 1 << 24
"""Voxels per slab read at a time (bounded memory on big or lazy volumes)."""
SLAB_WORKER_BYTES = ANALYSIS_WORKER_BYTES + 30 * SLAB_VOXELS
"""Memory of one worker of :func:`segmentation_signals`: its interpreter, a slab's working
arrays (~20 bytes per voxel) and the slabs read for it in the calling process (2 x 5 bytes
per voxel)."""


def _class_values(schema: LabelSchema) -> dict:
    return {c: (schema.value(c) if schema.has(c) else None)
            for c in ("particle", "crack", "pore", "matrix")}


def _envelope_values(schema: LabelSchema) -> list:
    return [schema.value(c) for c in ("particle", "crack", "pore") if schema.has(c)]


def _face_neighbours(ndim: int, planar: bool):
    """``(axis, lower, upper)`` per axis compared: index tuples of the two voxels of each face.

    Axis 0 is left out of a stack of 2-D sections (``planar`` and 3-D).
    """
    for ax in range(int(planar and ndim == 3), ndim):
        lo = [slice(None)] * ndim
        hi = [slice(None)] * ndim
        lo[ax], hi[ax] = slice(None, -1), slice(1, None)
        yield ax, tuple(lo), tuple(hi)


def _face_pairs(block: np.ndarray, core, a: int, b: int, planar: bool = False) -> int:
    """Face-neighbour pairs (voxel of ``a`` in rows ``core`` of axis 0, neighbour of ``b``)."""
    n = 0
    rows = np.zeros(block.shape[0], bool)
    rows[core] = True
    for ax, lo, hi in _face_neighbours(block.ndim, planar):
        x, y = block[lo], block[hi]
        rx = rows[:-1] if ax == 0 else rows
        ry = rows[1:] if ax == 0 else rows
        shape = (-1,) + (1,) * (block.ndim - 1)
        n += int(((x == a) & (y == b) & rx.reshape(shape)).sum())
        n += int(((y == a) & (x == b) & ry.reshape(shape)).sum())
    return n


def _slabs(shape, halo: int):
    """(read slice, core slice within the read block) along axis 0, ~SLAB_VOXELS each."""
    if len(shape) < 3:
        yield slice(0, shape[0]), slice(0, shape[0])
        return
    step = max(1, SLAB_VOXELS // max(1, int(np.prod(shape[1:]))))
    for z0 in range(0, shape[0], step):
        z1 = min(shape[0], z0 + step)
        r0, r1 = max(0, z0 - halo), min(shape[0], z1 + halo)
        yield slice(r0, r1), slice(z0 - r0, z1 - r0)


def contact_mask(instances: np.ndarray, *, planar: bool = False) -> np.ndarray:
    """Voxels of a particle instance with a face neighbour in a different instance.

    Parameters
    ----------
    instances : ndarray of int, shape (Z, Y, X) or (Y, X)
        Particle instance labels (0 = no particle).
    planar : bool
        A stack of 2-D sections (instances labelled per section): neighbours
        along axis 0 are not compared.

    Returns
    -------
    ndarray of bool, same shape

    Examples
    --------
    >>> a = np.zeros((1, 6), np.uint32); a[0, :3] = 1; a[0, 3:5] = 2
    >>> contact_mask(a).astype(int).tolist()
    [[0, 0, 1, 1, 0, 0]]
    """
    a = np.asarray(instances)
    out = np.zeros(a.shape, bool)
    for _, lo, hi in _face_neighbours(a.ndim, planar):
        x, y = a[lo], a[hi]
        c = (x > 0) & (y > 0) & (x != y)
        out[lo] |= c
        out[hi] |= c
    return out


def slab_counts(s: np.ndarray, inst: np.ndarray, core, vals: dict, env_vals: list,
                neck_distance: int, planar: bool) -> dict:
    """Voxel and face counts of one slab's core for :func:`segmentation_signals` (a worker task).

    ``s`` and ``inst`` are the slab read with ``neck_distance + 1`` planes of
    context; ``core`` selects the planes counted.
    """
    lut = np.zeros(256, bool)
    lut[env_vals] = True
    s_core = s[core]
    env = lut[s_core] if s_core.dtype == np.uint8 else np.isin(s_core, env_vals)
    out = dict(env=int(env.sum()), crack=0, pore=0, neck=0, total=int(s_core.size),
               face_matrix=0, face_solid=0)
    if vals["pore"] is not None:
        out["pore"] = int((s_core == vals["pore"]).sum())
    if vals["crack"] is None:
        return out
    crack = s_core == vals["crack"]
    out["crack"] = int(crack.sum())
    if not out["crack"]:
        return out
    for other, key in ((vals.get("matrix"), "face_matrix"), (vals["particle"], "face_solid")):
        if other is not None:
            out[key] = _face_pairs(s, core, vals["crack"], other, planar)
    contact = contact_mask(inst, planar=planar)
    if not contact.any():
        return out
    out["neck"] = int((crack & near_mask(contact, core, neck_distance, planar=planar)).sum())
    return out


def near_mask(mask: np.ndarray, core, radius: int, *, planar: bool = False) -> np.ndarray:
    """Voxels of ``mask[core]``'s region within Euclidean distance ``radius`` of a ``True`` voxel.

    The same as thresholding a Euclidean distance transform of ``~mask`` at
    ``radius``, by an OR of ``mask`` shifted by every offset of the ball (no
    distance map: a few boolean passes).  ``core`` selects planes along axis
    0; voxels outside ``mask`` count as far.  ``planar``: offsets within
    sections only.

    Examples
    --------
    >>> m = np.zeros((1, 1, 7), bool); m[0, 0, 3] = True
    >>> near_mask(m, (slice(0, 1),), 2)[0, 0].astype(int).tolist()
    [0, 1, 1, 1, 1, 1, 0]
    """
    nd = mask.ndim
    r = int(radius)
    core = (core,) if isinstance(core, slice) else tuple(core)
    core = core + (slice(None),) * (nd - len(core))
    box = [range(-r, r + 1)] * nd
    if planar and nd == 3:
        box[0] = range(0, 1)
    padded = np.pad(mask, r)
    near = np.zeros(mask[core].shape, bool)
    for off in np.ndindex(*[len(b) for b in box]):
        d = [b[i] for b, i in zip(box, off)]
        if sum(x * x for x in d) > r * r:
            continue
        sl = tuple(slice(c.indices(n)[0] + r + o, c.indices(n)[1] + r + o)
                   for c, n, o in zip(core, mask.shape, d))
        near |= padded[sl]
    return near


def segmentation_signals(seg, instances, *, schema: LabelSchema = NMC4,
                         neck_distance: int = NECK_DISTANCE_VOX, planar: bool = False,
                         workers: int = 1) -> dict:
    """Class fractions and the share of crack voxels at particle necks, in one pass.

    Parameters
    ----------
    seg : array_like of int, shape (Z, Y, X) or (Y, X)
        Semantic labels (stored values of ``schema``); lazy arrays are read a
        slab at a time.
    instances : array_like of int, same shape
        Particle instances.
    schema : LabelSchema
        ``particle``, ``crack`` and ``pore`` are matched by name.
    neck_distance : int
        Voxels from a contact between two instances that count as the neck.
    planar : bool
        ``seg`` is a stack of 2-D sections along axis 0: contacts and faces
        are looked for within sections only.
    workers : int
        Processes counting slabs in parallel (slabs are read here); the
        counts do not depend on it.

    Returns
    -------
    dict
        ``crack_fraction_of_envelope`` and ``pore_fraction_of_envelope``
        (crack/pore voxels per particle+crack+pore voxel, as the card's
        ``class_fraction_of_envelope``), ``particle_fraction`` (share of all
        voxels), ``neck_crack_share`` (share of crack voxels within
        ``neck_distance`` of a contact; NaN without cracks),
        ``crack_matrix_face_share`` (faces between crack and matrix voxels per
        face between crack and matrix or particle solid), ``n_crack_voxels``
        and ``n_voxels``.

    Examples
    --------
    >>> seg = np.zeros((4, 10, 10), np.uint8); seg[:, 2:8, 2:8] = 1; seg[:, 4, 2:8] = 2
    >>> s = segmentation_signals(seg, (seg > 0).astype(np.uint32))
    >>> round(s["crack_fraction_of_envelope"], 3), s["neck_crack_share"]
    (0.167, 0.0)
    """
    from crackseg.particle_chunks import map_tasks

    vals = _class_values(schema)
    env_vals = _envelope_values(schema)
    shape = tuple(seg.shape)
    counts = dict(env=0, crack=0, pore=0, neck=0, total=0, face_matrix=0, face_solid=0)
    slabs = list(_slabs(shape, neck_distance + 1))

    def jobs():
        for i, (read, core) in enumerate(slabs):
            yield i, (np.asarray(seg[read]), np.asarray(instances[read]), core, vals, env_vals,
                      neck_distance, planar)

    def add(_, part):
        for k, v in part.items():
            counts[k] += v

    map_tasks(slab_counts, jobs(), add, workers=workers, total=len(slabs), desc="domain checks")
    env = max(1, counts["env"])
    return {
        "crack_fraction_of_envelope": counts["crack"] / env if vals["crack"] is not None else None,
        "pore_fraction_of_envelope": counts["pore"] / env if vals["pore"] is not None else None,
        "particle_fraction": counts["env"] / max(1, counts["total"]),
        "neck_crack_share": counts["neck"] / counts["crack"] if counts["crack"] else float("nan"),
        "crack_matrix_face_share": (counts["face_matrix"] / (counts["face_matrix"]
                                                             + counts["face_solid"])
                                    if counts["face_matrix"] + counts["face_solid"]
                                    else float("nan")),
        "n_crack_voxels": counts["crack"],
        "n_voxels": counts["total"],
    }


def mean_normalized_entropy(entropy, n_classes: int) -> float:
    """Mean predictive entropy as a share of its maximum (``log n_classes``), slab by slab.

    Examples
    --------
    >>> round(mean_normalized_entropy(np.full((2, 3, 3), np.log(4) / 2), 4), 3)
    0.5
    """
    total, n = 0.0, 0
    for read, _ in _slabs(tuple(entropy.shape), 0):
        e = np.asarray(entropy[read], dtype=np.float64)
        e = e[np.isfinite(e)]
        total += float(e.sum())
        n += e.size
    return total / n / math.log(max(2, int(n_classes))) if n else float("nan")


def envelope_diameter_vox(seg, *, schema: LabelSchema = NMC4) -> float:
    """Particle diameter (voxels) of a segmentation, measured as the input's would be.

    :func:`crackseg.scale.particle_diameter_vox` on the envelope classes, for
    when ``predict`` did not measure the input (``--scale none`` or a given
    factor).
    """
    from crackseg.scale import particle_diameter_vox

    env_vals = _envelope_values(schema)
    if len(seg.shape) == 2:
        return particle_diameter_vox(np.isin(np.asarray(seg), env_vals).astype(np.float32))
    z = seg.shape[0]
    idx = np.unique(np.linspace(z * 0.2, z * 0.8, 5).astype(int).clip(0, z - 1))
    secs = np.stack([np.isin(np.asarray(seg[int(i)]), env_vals) for i in idx]).astype(np.float32)
    return particle_diameter_vox(secs)


def _flag(name, value, limit, message) -> dict:
    return {"name": name, "value": _round(value), "limit": _round(limit), "message": message}


def _round(v):
    if isinstance(v, (list, tuple)):
        return [_round(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return float(f"{float(v):.4g}") if math.isfinite(v) else None
    return v


def _range_text(r) -> str:
    return f"{r[0]:.0f}-{r[1]:.0f}"


def _size_checks(scale: dict, diameter_seg: float | None, rng) -> tuple[list, list, dict]:
    """Flags and notes from the particle size and the resampling factor."""
    flags, notes = [], []
    factor = float(scale.get("factor") or 1.0)
    d_in = scale.get("particle_diameter_vox")
    source = "input"
    if d_in is None or not math.isfinite(float(d_in)):
        d_in, source = diameter_seg, "segmentation"
    d_in = None if d_in is None or not math.isfinite(float(d_in)) else float(d_in)
    d_eff = None if d_in is None else d_in * factor
    sig = {"particle_diameter_vox": d_in, "particle_diameter_source": source if d_in else None,
           "scale_factor": factor, "particle_diameter_vox_seen_by_model": d_eff}
    trained = f"model trained on {_range_text(rng)}" if rng else "model's range unknown"
    across = f"particles ~{d_in:.0f} voxels across" if d_in else "particle size not measured"
    if abs(math.log(factor)) > math.log(RESAMPLE_LIMIT):
        flags.append(_flag(
            "resampled_far", factor, [1 / RESAMPLE_LIMIT, RESAMPLE_LIMIT],
            f"{across}, {trained}; resampled by {factor:.2g}, beyond the factor of "
            f"{RESAMPLE_LIMIT:g} the model was validated for: thin cracks may be lost or "
            "invented by the resampling; check the segmentation"))
    elif abs(factor - 1.0) > 1e-6:
        notes.append(f"{across}, {trained}; resampled by {factor:.2g} (within a factor of "
                     f"{RESAMPLE_LIMIT:g})")
    if rng and d_eff is not None:
        lo, hi = rng[0] / SIZE_MARGIN, rng[1] * SIZE_MARGIN
        if not lo <= d_eff <= hi:
            how = (f"seen by the model at ~{d_eff:.0f} after resampling by {factor:.2g}"
                   if abs(factor - 1.0) > 1e-6 else "not resampled (--scale none, or too large "
                   "to resample)")
            flags.append(_flag(
                "particle_size", d_eff, [lo, hi],
                f"{across}, {how}; {trained} (accepted {lo:.0f}-{hi:.0f}): the model has not "
                "seen particles this size"))
    return flags, notes, sig


def domain_check(seg, instances, *, schema: LabelSchema = NMC4, training_domain=None,
                 scale: dict | None = None, entropy=None, n_classes: int | None = None,
                 planar: bool = False, workers: int = 1) -> dict:
    """Compare a prediction (and the input's scale) with a model's training domain.

    Parameters
    ----------
    seg : array_like of int, shape (Z, Y, X) or (Y, X)
        Predicted semantic labels (stored values of ``schema``).
    instances : array_like of int, same shape
        Particle instances of ``seg``.
    schema : LabelSchema
    training_domain : dict or None
        The card's ``training_domain`` (``particle_diameter_vox`` [low, high],
        ``class_fraction_of_envelope`` {crack: {min, max, mean}, pore: ...});
        None for a card without one.
    scale : dict, optional
        ``provenance["settings"]["scale"]`` of the prediction
        (``particle_diameter_vox``, ``factor``).
    entropy : array_like, optional
        Per-voxel predictive entropy (nats), when posterior samples were drawn.
    n_classes : int, optional
        Classes of the model (for the entropy's maximum; default: the schema's).
    planar : bool
        ``seg`` is a stack of 2-D sections along axis 0 (a 2-D model on a stack).
    workers : int
        Processes of :func:`segmentation_signals` (:data:`SLAB_WORKER_BYTES` each).

    Returns
    -------
    dict
        ``validated`` (bool: a training domain is known and nothing flagged),
        ``status`` ("validated", "not validated" or "unknown"),
        ``training_domain_known``, ``message`` (one sentence), ``flags`` (list
        of ``{"name", "value", "limit", "message"}``), ``notes``, ``signals``
        (every measured number) and ``limits``.
    """
    dom = training_domain or {}
    known = bool(dom.get("particle_diameter_vox") or dom.get("class_fraction_of_envelope"))
    rng = dom.get("particle_diameter_vox")
    rng = (float(rng[0]), float(rng[1])) if rng else None
    sig = segmentation_signals(seg, instances, schema=schema, planar=planar, workers=workers)
    scale = dict(scale or {})
    diameter_seg = None
    if scale.get("particle_diameter_vox") is None and rng:
        diameter_seg = envelope_diameter_vox(seg, schema=schema)
    flags, notes, size_sig = _size_checks(scale, diameter_seg, rng)
    sig.update(size_sig)
    limits = {"particle_diameter_vox": [rng[0] / SIZE_MARGIN, rng[1] * SIZE_MARGIN] if rng else None,
              "scale_factor": [1 / RESAMPLE_LIMIT, RESAMPLE_LIMIT],
              "neck_crack_share": NECK_SHARE_LIMIT,
              "crack_matrix_face_share": CRACK_MATRIX_LIMIT, "particle_fraction": list(PARTICLE_FRACTION_RANGE),
              "entropy": ENTROPY_LIMIT}
    fraction_flags, fraction_limits = _class_fraction_checks(
        sig, dom.get("class_fraction_of_envelope") or {})
    limits.update(fraction_limits)
    flags += fraction_flags + _crack_place_flags(sig) + _particle_fraction_flags(sig)
    if entropy is not None:
        sig["mean_normalized_entropy"] = mean_normalized_entropy(entropy,
                                                                 n_classes or schema.num_classes)
        flags += _entropy_flags(sig["mean_normalized_entropy"])
    status = "not validated" if flags else ("validated" if known else "unknown")
    return {"validated": bool(known and not flags), "status": status,
            "training_domain_known": known, "message": _verdict(flags, known), "flags": flags,
            "notes": notes, "signals": {k: _round(v) for k, v in sig.items()},
            "limits": {k: _round(v) for k, v in limits.items()},
            "training_domain": {k: dom[k] for k in ("particle_diameter_vox",
                                                     "class_fraction_of_envelope",
                                                     "voxel_size_um_range") if k in dom}
            if known else None}


def _class_fraction_checks(sig: dict, fractions: dict) -> tuple[list, dict]:
    """Flags of crack and pore fractions above the training maximum, and their limits."""
    flags, limits = [], {}
    for name in ("crack", "pore"):
        value = sig[f"{name}_fraction_of_envelope"]
        top = (fractions.get(name) or {}).get("max")
        if top is None or value is None:
            continue
        limit = max(CLASS_FRACTION_FACTOR * float(top), float(top) + CLASS_FRACTION_SLACK)
        limits[f"{name}_fraction_of_envelope"] = limit
        if value > limit:
            flags.append(_flag(
                f"{name}_fraction", value, limit,
                f"predicted {name} voxels are {value:.3f} of the particle envelopes, "
                f"{value / max(float(top), 1e-12):.1f}x the most the model saw in training "
                f"({float(top):.3f}): {name}s are likely over-called"))
    return flags, limits


def _crack_place_flags(sig: dict) -> list:
    """Flags of predicted cracks where cracks do not lie: at particle necks, on the matrix.

    Judged only with at least :data:`MIN_CRACK_VOXELS` crack voxels.
    """
    if sig["n_crack_voxels"] < MIN_CRACK_VOXELS:
        return []
    checks = (
        ("neck_cracks", sig["neck_crack_share"], NECK_SHARE_LIMIT,
         f"of predicted crack voxels lie within {NECK_DISTANCE_VOX} voxels of a contact between "
         "two particles", "dark necks are likely being read as cracks"),
        ("cracks_in_matrix", sig["crack_matrix_face_share"], CRACK_MATRIX_LIMIT,
         "of the faces of predicted crack voxels border the matrix rather than particle solid",
         "predicted cracks are not inside particles; the phases may be confused (inverted "
         "contrast?)"),
    )
    return [_flag(name, share, limit, f"{share:.0%} {what} (limit {limit:.0%}): {meaning}")
            for name, share, limit, what, meaning in checks if share > limit]


def _particle_fraction_flags(sig: dict) -> list:
    """A flag when the predicted particles fill almost none or almost all of the volume."""
    pf = sig["particle_fraction"]
    lo, hi = PARTICLE_FRACTION_RANGE
    if lo <= pf <= hi:
        return []
    return [_flag(
        "particle_fraction", pf, [lo, hi],
        f"particles fill {pf:.1%} of the predicted volume (expected {lo:.0%}-{hi:.0%}): "
        + ("the model finds almost no particles" if pf < lo else
           "the model finds almost nothing but particles"))]


def _entropy_flags(ent: float) -> list:
    """A flag when the mean normalised predictive entropy exceeds :data:`ENTROPY_LIMIT`."""
    if not (math.isfinite(ent) and ent > ENTROPY_LIMIT):
        return []
    return [_flag("entropy", ent, ENTROPY_LIMIT,
                  f"mean predictive entropy is {ent:.0%} of its maximum (limit "
                  f"{ENTROPY_LIMIT:.0%}): the model is unsure of much of the volume")]


def _verdict(flags: list, known: bool) -> str:
    """The one-sentence ``message`` of a domain check."""
    if flags:
        return (f"Model not validated for this input: {len(flags)} sign"
                f"{'s' if len(flags) > 1 else ''} that it differs from the training data "
                f"({', '.join(f['name'] for f in flags)}); the segmentation, and every "
                "number from it, may be wrong in ways the intervals do not carry.")
    if known:
        return ("The input lies within the model's training domain on every signal checked "
                "(particle size, resampling, class fractions, cracks at necks and in the "
                "matrix, particle fraction).")
    return ("The model's training domain is unknown (its card records none): crackseg "
            "cannot say whether this input resembles what the model was trained on.")


def flag_lines(domain: dict | None) -> list[str]:
    """One console line per flag (or one saying the training domain is unknown).

    Examples
    --------
    >>> flag_lines({"status": "unknown", "flags": [], "training_domain_known": False})[0][:40]
    "model's training domain unknown (its car"
    """
    if not domain:
        return []
    lines = [f"MODEL NOT VALIDATED FOR THIS INPUT: {f['message']}" for f in domain.get("flags", [])]
    if not domain.get("training_domain_known"):
        lines.append(UNKNOWN_LINE)
    return lines


#: ``model_domain`` benchmark settings inside the model's training ranges (the rest lie outside).
INSIDE_SETTINGS = ("randomized",)


def validation_damage(card: dict | None) -> dict | None:
    """How far the model's mean damage was from the truth on its validation phantoms.

    Read from the card's ``validation.model_domain`` (``benchmarks/model_domain.py``
    recorded by ``crackseg export --validation``): per setting, the mean ratio of
    the mean damage the pipeline reports to the true one, and the median
    factor between them per volume.  The damage intervals do not include
    this error; the sentence says how large it was where it was measured.

    Parameters
    ----------
    card : dict or None
        A model card.

    Returns
    -------
    dict or None
        ``settings`` ({setting: {mean_ratio, median_factor, n_volumes}}),
        ``command`` and ``message``; None when the card records no damage
        validation.

    Examples
    --------
    >>> rows = [{"setting": "randomized", "damage": {"predicted_vs_true": [[0.02, 0.03]] * 4,
    ...          "median_factor": 1.5, "mean_ratio": 0.67}},
    ...         {"setting": "matbox", "damage": {"predicted_vs_true": [[0.1, 0.1]] * 4,
    ...          "median_factor": 1.2, "mean_ratio": 0.9}}]
    >>> validation_damage({"validation": {"model_domain": {"rows": rows}}})["message"]
    'on its validation phantoms this model reported 0.67x the true mean damage inside its training ranges (per volume off by a median factor 1.5) and 0.9x outside them (factor 1.2); this interval does not include that error'
    """
    md = ((card or {}).get("validation") or {}).get("model_domain") or {}
    settings = {}
    for row in md.get("rows") or []:
        dmg = row.get("damage") or {}
        if dmg.get("median_factor") and dmg.get("mean_ratio"):
            settings[str(row["setting"])] = {
                "mean_ratio": float(dmg["mean_ratio"]), "median_factor": float(dmg["median_factor"]),
                "n_volumes": len(dmg.get("predicted_vs_true") or [])}
    if not settings:
        return None

    def span(values) -> str:
        return f"{min(values):.2g}" if len(set(values)) == 1 else \
            f"{min(values):.2g}-{max(values):.2g}"

    def part(inside: bool):
        rows = [v for k, v in settings.items() if (k in INSIDE_SETTINGS) == inside]
        if not rows:
            return None
        return (span([r["mean_ratio"] for r in rows]),
                span([r["median_factor"] for r in rows]))

    inside, outside = part(True), part(False)
    bits = []
    if inside:
        bits.append(f"{inside[0]}x the true mean damage inside its training ranges (per volume "
                    f"off by a median factor {inside[1]})")
    if outside:
        bits.append(f"{outside[0]}x outside them (factor {outside[1]})" if inside else
                    f"{outside[0]}x the true mean damage outside its training ranges (per "
                    f"volume off by a median factor {outside[1]})")
    message = ("on its validation phantoms this model reported " + " and ".join(bits)
               + "; this interval does not include that error")
    return {"settings": settings, "command": md.get("command"), "message": message}
