"""Segmentation error measured on annotated sections, and the mean damage corrected for it.

A model's segmentation can call more or fewer crack voxels than are there; no
resampling of its own output can see that.  Given a few annotated sections
(2-D label images of some slices along axis 0, label 255 = not annotated),
every particle the model found that crosses an annotated section is measured
twice in that section, with the envelope definition of the particle table
(:mod:`crackseg.stats.table`): crack pixels of the model and of the
annotation inside the particle's envelope (the model's instance), over the
annotated envelope pixels.  From these pairs:

* :func:`error_model`: a ratio estimator of the model's bias,
  ``R = sum(annotated crack) / sum(model crack)`` (``weighting="area"``:
  pixel counts; ``"particle"``: per-particle crack fractions, each particle
  profile counting once, as the mean damage counts each particle), with its
  sampling distribution from a seeded two-stage cluster bootstrap: sections
  with replacement, then particle profiles within each drawn section;
* :func:`corrected_mean`: ``R x`` the mean damage, with an interval that
  draws the mean from the spatial block bootstrap's interval
  (:func:`crackseg.stats.summary.summarize`) and ``R`` from its bootstrap,
  and the share of the interval's variance due to segmentation error.

With fewer than :data:`MIN_PARTICLES` particles crossing the sections, or no
crack pixel in the annotation or the model, the bias cannot be measured: the
estimate is left uncorrected and the interval widened to span both the
uncorrected interval and the correction, and the note says so.

Arrays are ZYX; section indices are along axis 0.  The annotated sections are
read one at a time, as are the segmentation's and instances' slices at those
indices: nothing else of a (lazy) volume is read.

Examples
--------
>>> import numpy as np
>>> seg = np.zeros((4, 20, 20), np.uint8); seg[:, 2:18, 2:18] = 1; seg[:, 9, 2:18] = 2
>>> inst = (seg > 0).astype(np.uint32)
>>> ann = seg[[1]].copy(); ann[0, 10, 2:18] = 2           # the model misses half the crack
>>> pairs = section_pairs(seg, inst, [1], ann)
>>> pairs[["model_crack_px", "annotated_crack_px"]].values.tolist()
[[16, 32]]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema, validate_labels

#: Fewest particles crossing the annotated sections for a measured correction.
MIN_PARTICLES = 10

#: Fewest particles crossing the sections for a calibration line (``kind="auto"``).
MIN_LINE_PARTICLES = 30

#: Monte Carlo draws of :func:`corrected_mean`.
N_DRAWS = 20000

PAIR_COLUMNS = ("section", "label", "envelope_px", "model_crack_px", "annotated_crack_px",
                "model_crack_fraction", "annotated_crack_fraction")
"""Columns of :func:`section_pairs`: one row per particle profile in an annotated section."""


class ErrorModel(NamedTuple):
    """The model's crack bias measured on annotated sections (:func:`error_model`)."""

    ratio: float
    """``R``: annotated over model crack (NaN when the model calls no crack there)."""
    replicates: np.ndarray
    """Bootstrap replicates of ``R``, (n_resamples,); may hold inf (no model crack drawn)."""
    ci: tuple
    """Percentile interval of ``R``."""
    confidence: float
    weighting: str
    n_particles: int
    """Distinct particles crossing the annotated sections."""
    n_profiles: int
    """Particle profiles (a particle crossing two sections counts twice)."""
    n_sections: int
    sections: list
    annotated_px: int
    """Annotated envelope pixels."""
    model_crack_px: int
    annotated_crack_px: int
    sufficient: bool
    """Whether the data can measure ``R`` (:data:`MIN_PARTICLES`, crack pixels on both sides)."""
    note: str
    kind: str = "ratio"
    """``"ratio"``: corrected = R x mean; ``"line"``: intercept + slope x mean."""
    line: tuple = (float("nan"), float("nan"))
    """(intercept, slope) of the calibration line (``kind="line"``; else (0, R))."""
    line_replicates: np.ndarray | None = None
    """Bootstrap replicates of (intercept, slope), (n_resamples, 2)."""

    def to_dict(self) -> dict:
        """JSON-ready fields (no replicates)."""
        d = self._asdict()
        d.pop("replicates")
        reps = d.pop("line_replicates")
        d["ci"] = [float(v) for v in self.ci]
        d["line"] = [float(v) for v in self.line]
        if reps is not None:
            alpha = (1 - self.confidence) / 2
            reps = reps[np.isfinite(reps).all(axis=1)]
            d["line_ci"] = np.quantile(reps, [alpha, 1 - alpha], axis=0).T.tolist() \
                if reps.size else [[float("nan")] * 2] * 2
        return d

    def coefficients(self) -> tuple[np.ndarray, np.ndarray]:
        """Bootstrap replicates of (intercept, slope) of the correction, each (n,), finite ones."""
        if self.line_replicates is not None:
            reps = self.line_replicates[np.isfinite(self.line_replicates).all(axis=1)]
            return reps[:, 0], reps[:, 1]
        r = self.replicates[~np.isnan(self.replicates)]
        return np.zeros_like(r), r


def parse_slices(text: str | None) -> list[int] | None:
    """Section indices from ``"10,40,70"`` (``None`` or empty: none given).

    Examples
    --------
    >>> parse_slices("10, 40,70")
    [10, 40, 70]
    """
    if text is None or not str(text).strip():
        return None
    try:
        return [int(v) for v in str(text).replace(" ", "").split(",") if v != ""]
    except ValueError:
        raise InputError(f"--annotated-slices {text!r}: give slice indices along axis 0 "
                         "separated by commas, e.g. 10,40,70") from None


def annotated_sections(annotations, shape, slices=None, *, schema: LabelSchema = NMC4,
                       source: str = "annotations") -> tuple[list[int], np.ndarray]:
    """The annotated sections of a volume: their axis-0 indices and 2-D label images.

    Parameters
    ----------
    annotations : path-like or array_like of int
        A label file (read lazily) or array: either a volume of the
        segmentation's shape, 255 where not annotated (the sections are
        ``slices``, or every slice holding a value other than 255), or a
        stack of ``len(slices)`` sections of shape (k, Y, X), or one (Y, X)
        section.
    shape : tuple of 3 int
        Shape (Z, Y, X) of the segmentation.
    slices : sequence of int, optional
        Axis-0 indices of the sections; required unless ``annotations`` is a
        whole volume.
    schema : LabelSchema
        Values allowed (plus its ignore value).
    source : str
        Name in error messages.

    Returns
    -------
    slices : list of int
    labels : numpy.ndarray of uint8, shape (k, Y, X)

    Raises
    ------
    InputError
        Wrong shape, values outside the schema, indices out of range or
        repeated, a section with no annotated pixel, or none at all.

    Examples
    --------
    >>> lab = np.full((5, 4, 4), 255, np.uint8); lab[2] = 1
    >>> annotated_sections(lab, (5, 4, 4))[0]
    [2]
    """
    arr = _label_array(annotations, source)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise InputError(f"annotated sections need a 3-D (Z, Y, X) segmentation, got shape {shape}")
    given = None if slices is None else [int(z) for z in slices]
    ashape = tuple(arr.shape)
    if len(ashape) not in (2, 3) or ashape[-2:] != shape[1:]:
        raise InputError(f"{source}: shape {ashape} does not fit the segmentation {shape}; give a "
                         f"label volume of shape {shape} (255 where not annotated) or sections "
                         f"of shape (k, {shape[1]}, {shape[2]}) with --annotated-slices")
    if ashape == shape:
        if given is None:
            given = [z for z in range(shape[0]) if (np.asarray(arr[z]) != schema.ignore).any()]
        _check_slices(given, shape[0], source)
        stack = np.stack([np.asarray(arr[z]) for z in given]) if given else None
    else:
        k = 1 if len(ashape) == 2 else ashape[0]
        if given is None or len(given) != k:
            raise InputError(f"{source}: {k} annotated section{'s' * (k != 1)} of shape "
                             f"{ashape[-2:]}; give their {k} slice indices with "
                             "--annotated-slices (e.g. 10,40,70)")
        _check_slices(given, shape[0], source)
        stack = np.asarray(arr[...]).reshape((k,) + ashape[-2:])
    if not given:
        raise InputError(f"{source}: no annotated pixel (every value is {schema.ignore}); "
                         "annotate some sections or give the right file")
    validate_labels(stack, schema, source=source)
    empty = [z for z, s in zip(given, stack) if not (s != schema.ignore).any()]
    if empty:
        raise InputError(f"{source}: section{'s' * (len(empty) > 1)} {empty} ha"
                         f"{'ve' if len(empty) > 1 else 's'} no annotated pixel; drop "
                         f"{'them' if len(empty) > 1 else 'it'} from --annotated-slices")
    return given, stack.astype(np.uint8)


def _label_array(annotations, source: str):
    """An array-like of the annotations (a file read lazily)."""
    if hasattr(annotations, "shape") and hasattr(annotations, "dtype"):
        return annotations
    if isinstance(annotations, (str, bytes)) or hasattr(annotations, "__fspath__"):
        from crackseg.io import read_volume

        return read_volume(annotations, lazy=True).data
    return np.asarray(annotations)


def _check_slices(slices: list[int], depth: int, source: str) -> None:
    bad = [z for z in slices if not 0 <= z < depth]
    if bad:
        raise InputError(f"{source}: annotated slice{'s' * (len(bad) > 1)} {bad} outside the "
                         f"volume's {depth} slices along axis 0 (0..{depth - 1})")
    if len(set(slices)) != len(slices):
        raise InputError(f"{source}: annotated slices {slices} repeat an index; give each once")


def section_pairs(seg, instances, slices, annotations, *, schema: LabelSchema = NMC4,
                  labels=None) -> pd.DataFrame:
    """Each particle profile's crack in the annotated sections, through the model and the annotation.

    Parameters
    ----------
    seg, instances : array_like, shape (Z, Y, X)
        The model's semantic labels and particle instances (may be lazy: only
        the slices ``slices`` are read).
    slices : sequence of int
        Axis-0 indices of the annotated sections.
    annotations : array_like of uint8, shape (len(slices), Y, X)
        Their labels (``schema``; its ignore value where not annotated), as
        from :func:`annotated_sections`.
    schema : LabelSchema
        Which value is ``crack``.
    labels : array_like of int, optional
        Keep only these particles (default: all crossing the sections).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`PAIR_COLUMNS`: per (section, particle) the annotated
        pixels of its envelope, the model's and the annotation's crack pixels
        among them, and both crack fractions.
    """
    crack = schema.value("crack")
    keep = None if labels is None else np.unique(np.asarray(labels, dtype=np.int64))
    rows = []
    for z, ann in zip(slices, np.asarray(annotations)):
        inst = np.asarray(instances[int(z)]).astype(np.int64, copy=False)
        inside = (inst > 0) & (ann != schema.ignore)
        lab = inst[inside]
        if keep is not None:
            ok = np.isin(lab, keep)
            inside[inside] = ok
            lab = lab[ok]
        if lab.size == 0:
            continue
        ids, inv = np.unique(lab, return_inverse=True)
        model_crack = np.asarray(seg[int(z)])[inside] == crack
        env = np.bincount(inv, minlength=ids.size)
        rows.append(pd.DataFrame({
            "section": int(z), "label": ids, "envelope_px": env,
            "model_crack_px": np.bincount(inv, weights=model_crack, minlength=ids.size).astype(int),
            "annotated_crack_px": np.bincount(inv, weights=ann[inside] == crack,
                                              minlength=ids.size).astype(int)}))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in PAIR_COLUMNS})
    out = pd.concat(rows, ignore_index=True)
    out["model_crack_fraction"] = out["model_crack_px"] / out["envelope_px"]
    out["annotated_crack_fraction"] = out["annotated_crack_px"] / out["envelope_px"]
    return out[list(PAIR_COLUMNS)]


def error_model(pairs: pd.DataFrame, *, kind: str = "ratio", weighting: str = "area",
                n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                min_particles: int = MIN_PARTICLES) -> ErrorModel:
    """Ratio (or calibration line) of annotated to model crack, with its cluster bootstrap.

    Parameters
    ----------
    pairs : pandas.DataFrame
        From :func:`section_pairs`.
    kind : {"ratio", "line", "auto"}
        ``"ratio"``: the corrected mean is ``R x`` the mean (the model's crack
        error is proportional); ``"line"``: a calibration line, the annotated
        crack fraction of each profile against the model's (least squares
        weighted by envelope pixels), so that corrected = intercept + slope x
        mean (a proportional and an additive error, e.g. noise called crack
        everywhere); ``"auto"``: the line from :data:`MIN_LINE_PARTICLES`
        particles on, else the ratio.  ``R`` is reported either way.
    weighting : {"area", "particle"}
        ``"area"``: ``R = sum(annotated crack px) / sum(model crack px)``;
        ``"particle"``: the ratio of the mean crack fractions of the profiles.
    n_resamples : int
        Bootstrap replicates: sections drawn with replacement, then each drawn
        section's profiles with replacement.
    confidence : float
    seed : int
        Seed of the resampling.
    min_particles : int
        Fewest distinct particles for a measured correction.

    Returns
    -------
    ErrorModel

    Examples
    --------
    >>> p = pd.DataFrame({"section": [0] * 12 + [5] * 12, "label": range(24),
    ...                   "envelope_px": 100, "model_crack_px": 10, "annotated_crack_px": 5})
    >>> m = error_model(p, n_resamples=200)
    >>> m.ratio, m.sufficient
    (0.5, True)
    """
    if weighting not in ("area", "particle"):
        raise InputError(f"weighting {weighting!r} must be 'area' or 'particle'")
    env = pairs["envelope_px"].to_numpy(np.float64)
    num = pairs["annotated_crack_px"].to_numpy(np.float64)
    den = pairs["model_crack_px"].to_numpy(np.float64)
    if weighting == "particle":
        num, den = num / np.maximum(env, 1), den / np.maximum(env, 1)
    sec = pairs["section"].to_numpy()
    counts = _two_stage_counts(sec, n_resamples, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = (counts @ num) / (counts @ den)
        ratio = float(num.sum() / den.sum()) if den.sum() > 0 else float("nan")
    ci = _percentile_ci(reps[~np.isnan(reps)], confidence)
    n_particles = int(pairs["label"].nunique())
    sections = sorted({int(s) for s in sec})
    ann_px, mod_px = int(pairs["annotated_crack_px"].sum()), int(pairs["model_crack_px"].sum())
    problems = _problems(n_particles < min_particles, f"only {n_particles} particle"
                         f"{'s' * (n_particles != 1)} cross the annotated sections (at least "
                         f"{min_particles} are needed)", ann_px, mod_px)
    if kind == "auto":
        kind = "line" if n_particles >= MIN_LINE_PARTICLES else "ratio"
    line, line_reps = (0.0, ratio), None
    if kind == "line":
        line, line_reps = _calibration_line(pairs, counts)
    return ErrorModel(ratio, reps, ci, confidence, weighting, n_particles, len(pairs),
                      len(sections), sections, int(env.sum()), mod_px, ann_px, not problems,
                      "; ".join(problems), kind, line, line_reps)


def _percentile_ci(replicates: np.ndarray, confidence: float) -> tuple:
    """Percentile interval of finite replicates (NaN, NaN when there are none)."""
    alpha = (1 - confidence) / 2
    return tuple(float(v) for v in np.quantile(replicates, [alpha, 1 - alpha])) \
        if replicates.size else (float("nan"), float("nan"))


def _problems(too_few: bool, few_text: str, ann_px: int, mod_px: int | None) -> list[str]:
    """Why the sections cannot measure the correction (``mod_px`` None: the model's crack
    is not needed)."""
    problems = [few_text] if too_few else []
    if ann_px == 0:
        problems.append("the annotation marks no crack pixel inside the particles")
    if mod_px == 0:
        problems.append("the model calls no crack pixel inside the particles of the sections")
    return problems


def _calibration_line(pairs: pd.DataFrame, counts: np.ndarray) -> tuple[tuple, np.ndarray]:
    """(intercept, slope) of annotated on model crack fraction, weighted by envelope pixels,
    and its replicates under the bootstrap ``counts`` (n_resamples, n_rows)."""
    w = pairs["envelope_px"].to_numpy(np.float64)
    x = pairs["model_crack_fraction"].to_numpy(np.float64)
    y = pairs["annotated_crack_fraction"].to_numpy(np.float64)

    def fit(c):
        sw, sx, sy = c @ w, c @ (w * x), c @ (w * y)
        with np.errstate(divide="ignore", invalid="ignore"):
            sxx = c @ (w * x * x) - sx * sx / sw
            slope = (c @ (w * x * y) - sx * sy / sw) / sxx
            slope = np.where(sxx > 1e-12 * np.maximum(sw, 1), slope, np.nan)
            return (sy - slope * sx) / sw, slope

    a, b = fit(np.ones((1, w.size)))
    ra, rb = fit(counts)
    return (float(a[0]), float(b[0])), np.stack([ra, rb], axis=1)


def _two_stage_counts(sections: np.ndarray, n_resamples: int, seed: int,
                      groups: np.ndarray | None = None) -> np.ndarray:
    """How often each row is drawn in each replicate, (n_resamples, n_rows).

    Sections are drawn with replacement; a section drawn ``c`` times
    contributes ``c x (its rows)`` draws of its rows with replacement (the sum
    of ``c`` independent multinomials is one multinomial of ``c`` times the size),
    separately for each of ``groups`` (e.g. annotation and model profiles of
    the same section, which share the section's draw).
    """
    rng = np.random.default_rng([int(seed), 12])
    ids, inv = np.unique(sections, return_inverse=True)
    groups = np.zeros(sections.size, int) if groups is None else np.asarray(groups)
    n_sec = ids.size
    counts = np.zeros((int(n_resamples), sections.size))
    if n_sec == 0:
        return counts
    outer = rng.multinomial(n_sec, np.full(n_sec, 1.0 / n_sec), size=int(n_resamples))
    for j in range(n_sec):
        for g in np.unique(groups[inv == j]):
            rows = np.flatnonzero((inv == j) & (groups == g))
            counts[:, rows] = rng.multinomial(outer[:, j] * rows.size,
                                              np.full(rows.size, 1.0 / rows.size))
    return counts


PROFILE_COLUMNS = ("source", "section", "label", "envelope_px", "crack_px", "crack_fraction")
"""Columns of :func:`section_profiles`: one row per 2-D particle profile of a section."""


def section_profiles(seg, slices, annotations, *, schema: LabelSchema = NMC4) -> pd.DataFrame:
    """The 2-D particle profiles of the annotated sections, of the annotation and of the model.

    Each annotated section is labelled twice into 2-D particle instances
    (:func:`crackseg.sections.section_instances`): the annotation, and the
    model's segmentation of the same section.  Each profile is measured as a
    section table measures it (:func:`crackseg.stats.table.section_stack_table`:
    crack pixels over envelope pixels).  Profiles cut by the section's edge,
    or touching pixels that are not annotated, are left out on both sides.

    Parameters
    ----------
    seg : array_like, shape (Z, Y, X)
        The model's semantic labels (may be lazy: only ``slices`` are read).
    slices : sequence of int
        Axis-0 indices of the annotated sections.
    annotations : array_like of uint8, shape (len(slices), Y, X)
        Their labels, as from :func:`annotated_sections`.
    schema : LabelSchema

    Returns
    -------
    pandas.DataFrame
        Columns :data:`PROFILE_COLUMNS`; ``source`` is ``"annotation"`` or
        ``"model"``, ``section`` the axis-0 index.

    Examples
    --------
    >>> seg = np.zeros((3, 20, 20), np.uint8); seg[:, 4:16, 4:16] = 1; seg[1, 9, 4:16] = 2
    >>> ann = seg[[1]].copy(); ann[0, 10, 4:16] = 2
    >>> section_profiles(seg, [1], ann)[["source", "crack_px"]].values.tolist()
    [['annotation', 24], ['model', 12]]
    """
    ann = np.asarray(annotations)
    ignore = ann == schema.ignore
    model = np.stack([np.asarray(seg[int(z)]) for z in slices])
    parts = [_profiles(np.where(ignore, 0, stack).astype(np.uint8), ignore, slices, schema)
             .assign(source=source) for source, stack in (("annotation", ann), ("model", model))]
    return pd.concat(parts, ignore_index=True)[list(PROFILE_COLUMNS)]


def _profiles(stack: np.ndarray, ignore: np.ndarray, slices, schema: LabelSchema) -> pd.DataFrame:
    """Profiles of one stack of sections, without those cut by its edge or by ``ignore``."""
    from scipy.ndimage import binary_dilation

    from crackseg.sections import section_instances
    from crackseg.stats.table import section_stack_table

    inst = section_instances(stack, schema=schema)
    cut = np.zeros(int(inst.max(initial=0)) + 1, bool)
    for k in range(stack.shape[0]):
        cut[inst[k][binary_dilation(ignore[k])]] = True
    cut[0] = False
    try:
        t = section_stack_table(stack, inst, schema=schema)
    except InputError:  # no particle in any section
        return pd.DataFrame({c: pd.Series(dtype=float) for c in PROFILE_COLUMNS[1:]})
    t = t.loc[~t["touches_border"].to_numpy(bool) & ~cut[t["label"].to_numpy()]]
    return pd.DataFrame({"section": np.asarray(slices, int)[t["section"].to_numpy(int)],
                         "label": t["label"].to_numpy(), "envelope_px": t["envelope_px"].to_numpy(),
                         "crack_px": t["crack_px"].to_numpy(),
                         "crack_fraction": t["crack_fraction"].to_numpy()})


def profile_model(profiles: pd.DataFrame, *, kind: str = "sections", n_resamples: int = 2000,
                  confidence: float = 0.95, seed: int = 0,
                  min_particles: int = MIN_PARTICLES) -> ErrorModel:
    """The mean damage from the annotated sections' particle profiles, with its cluster bootstrap.

    ``A`` is the mean crack fraction of the annotation's profiles, ``B`` that
    of the model's own profiles in the same sections; ``R = A / B``.  Both are
    means over section profiles, so the way sections sample particles (larger
    ones more often) cancels in ``R``.

    Parameters
    ----------
    profiles : pandas.DataFrame
        From :func:`section_profiles`.
    kind : {"sections", "profiles"}
        ``"sections"``: the estimate is ``A`` itself (the mean damage measured
        on the annotated sections; the model's segmentation is not used);
        ``"profiles"``: the estimate is ``R x`` the model's mean damage.
    n_resamples, confidence, seed, min_particles
        As for :func:`error_model`; sections are drawn with replacement, then
        each drawn section's annotation and model profiles.

    Returns
    -------
    ErrorModel
        ``n_particles`` counts annotated profiles, ``n_profiles`` those of
        both sides; for ``"sections"``, ``line`` is ``(A, 0)``.

    Examples
    --------
    >>> p = pd.DataFrame({"source": ["annotation", "model"] * 12, "section": [0, 0, 5, 5] * 6,
    ...                   "label": range(24), "envelope_px": 100, "crack_px": [5, 10] * 12,
    ...                   "crack_fraction": [0.05, 0.1] * 12})
    >>> m = profile_model(p, n_resamples=200)
    >>> round(m.ratio, 6), round(m.line[0], 6), m.sufficient
    (0.5, 0.05, True)
    """
    if kind not in ("sections", "profiles"):
        raise InputError(f"kind {kind!r} must be 'sections' or 'profiles'")
    is_ann = (profiles["source"] == "annotation").to_numpy()
    frac = profiles["crack_fraction"].to_numpy(np.float64)
    counts = _two_stage_counts(profiles["section"].to_numpy(), n_resamples, seed, groups=is_ann)
    with np.errstate(divide="ignore", invalid="ignore"):
        a_reps = (counts[:, is_ann] @ frac[is_ann]) / counts[:, is_ann].sum(axis=1)
        b_reps = (counts[:, ~is_ann] @ frac[~is_ann]) / counts[:, ~is_ann].sum(axis=1)
        a, b = (float(frac[k].mean()) if k.any() else float("nan") for k in (is_ann, ~is_ann))
        ratio, reps = a / b if b > 0 else float("nan"), a_reps / b_reps
    ci = _percentile_ci(reps[np.isfinite(reps)], confidence)
    crack = profiles["crack_px"].to_numpy(np.float64)
    ann_px, mod_px = int(crack[is_ann].sum()), int(crack[~is_ann].sum())
    n_ann = int(is_ann.sum())
    problems = _problems(n_ann < min_particles, f"only {n_ann} particle profile"
                         f"{'s' * (n_ann != 1)} in the annotated sections (at least "
                         f"{min_particles} are needed)", ann_px,
                         mod_px if kind == "profiles" else None)
    line, line_reps = (0.0, ratio), None
    if kind == "sections":
        line, line_reps = (a, 0.0), np.stack([a_reps, np.zeros_like(a_reps)], axis=1)
    sections = sorted({int(z) for z in profiles["section"]})
    return ErrorModel(ratio, reps, ci, confidence, "particle", n_ann, len(profiles),
                      len(sections), sections,
                      int(profiles.loc[is_ann, "envelope_px"].sum()), mod_px, ann_px,
                      not problems, "; ".join(problems), kind, line, line_reps)


def corrected_mean(mean: dict, model: ErrorModel, *, seed: int = 0,
                   n_draws: int = N_DRAWS) -> dict:
    """The mean damage corrected by ``R``, its interval, and the segmentation share.

    The mean is drawn from a two-piece normal through its interval (each
    half with the standard deviation its half-width implies), ``R`` from its
    bootstrap replicates, independently; the corrected mean of each draw is
    their product (clipped to [0, 1]), and the interval its percentiles.  The
    segmentation share is ``m^2 var(R) / (m^2 var(R) + R^2 var(mean))``.

    Parameters
    ----------
    mean : dict
        ``summary["damage"]["mean"]``: ``estimate``, ``ci``, ``confidence``.
    model : ErrorModel
    seed : int
    n_draws : int

    Returns
    -------
    dict
        ``estimate``, ``ci``, ``confidence``, ``method``, ``uncorrected``,
        ``ratio``, ``ratio_ci``, ``segmentation_share``, counts, ``sufficient``
        and ``note`` (JSON-ready after :func:`crackseg.io.json_safe`).

    Examples
    --------
    >>> p = pd.DataFrame({"section": [0] * 12 + [5] * 12, "label": range(24),
    ...                   "envelope_px": 100, "model_crack_px": 10, "annotated_crack_px": 5})
    >>> c = corrected_mean({"estimate": 0.1, "ci": [0.08, 0.12]}, error_model(p, n_resamples=200))
    >>> round(c["estimate"], 3), c["ratio"]
    (0.05, 0.5)
    """
    from scipy.stats import norm

    m = float(mean["estimate"])
    ci = mean.get("ci") or [None, None]
    conf = float(mean.get("confidence", model.confidence))
    alpha = (1 - conf) / 2
    rng = np.random.default_rng([int(seed), 13])
    lo, hi = (m, m) if ci[0] is None or ci[1] is None else (float(ci[0]), float(ci[1]))
    z = float(norm.ppf(1 - alpha))
    u = rng.standard_normal(n_draws)
    m_draws = m + u * np.where(u < 0, (m - lo) / z, (hi - m) / z)
    a_reps, b_reps = model.coefficients()
    pick = rng.integers(0, a_reps.size, n_draws) if a_reps.size else None
    with np.errstate(invalid="ignore"):
        theta = np.clip(a_reps[pick] + b_reps[pick] * m_draws, 0.0, 1.0) if a_reps.size \
            else np.full(n_draws, np.nan)
        seg_only = a_reps + b_reps * m
    q = [float(v) for v in np.nanquantile(theta, [alpha, 1 - alpha])] \
        if np.isfinite(theta).any() else [float("nan")] * 2
    seg_only = seg_only[np.isfinite(seg_only)]
    var_seg = float(np.var(seg_only, ddof=1)) if seg_only.size > 1 else float("nan")
    intercept, slope = model.line
    var_samp = (slope ** 2) * float(np.var(m_draws, ddof=1))
    share = var_seg / (var_seg + var_samp) if np.isfinite(var_seg + var_samp) and \
        var_seg + var_samp > 0 else None
    estimate, note = intercept + slope * m, ""
    if ci[0] is None or ci[1] is None:
        q, note = [None, None], "no interval of the mean to correct (too few particles)"
    elif not model.sufficient:
        corr = [v for v in q + [estimate] if np.isfinite(v)]
        if model.annotated_crack_px > 0 and model.model_crack_px == 0:
            corr.append(1.0)  # the model sees none of the annotated crack: no upper bound
        estimate, q = m, [min([lo] + corr), max([hi] + corr)]
        note = (f"SEGMENTATION ERROR NOT MEASURABLE: {model.note}. The estimate is left "
                "uncorrected and the interval spans both the uncorrected interval and the "
                "correction; annotate more sections (or sections with cracks).")
    return {
        "estimate": estimate, "ci": q, "confidence": conf,
        "method": _method_text(model),
        "uncorrected": {"estimate": m, "ci": [lo, hi]},
        "ratio": model.ratio, "ratio_ci": list(model.ci), "segmentation_share": share,
        **{k: v for k, v in model.to_dict().items()
           if k not in ("ratio", "ci", "confidence", "note")},
        "note": note or model.note, "n_draws": int(n_draws), "seed": int(seed),
    }


def _method_text(model: ErrorModel) -> str:
    """How :func:`corrected_mean` corrected, in words."""
    head = {
        "sections": "mean crack fraction of the annotation's own 2-D particle profiles (the "
                    "model's segmentation is not used),",
        "profiles": "profile ratio: R = mean crack fraction of the annotation's 2-D particle "
                    "profiles / that of the model's profiles in the same sections, corrected = "
                    "R x mean,",
        "line": "calibration line: annotated on model crack fraction of each particle profile "
                "(least squares weighted by its pixels), corrected = intercept + slope x mean,",
    }.get(model.kind, f"ratio correction: R = {'sum' if model.weighting == 'area' else 'mean'} "
                      "of annotated / model crack "
                      f"{'pixels' if model.weighting == 'area' else 'fractions'},")
    where = ("over the particle profiles of" if model.kind in ("sections", "profiles")
             else "over the particles crossing")
    return (f"{head} {where} {model.n_sections} annotated section{'s' * (model.n_sections != 1)},"
            " two-stage cluster bootstrap (sections, then particle profiles)"
            + ("" if model.kind == "sections" else
               "; combined with the interval of the mean by Monte Carlo") + " (percentile)")


def annotation_error_statement(entry: dict) -> str:
    """Whether and how the corrected interval carries segmentation error, in plain words.

    Examples
    --------
    >>> annotation_error_statement({"sufficient": False, "note": "x", "n_sections": 1,
    ...                             "n_particles": 3}).split(":")[0]
    'not measurable'
    """
    where = (f"{entry.get('n_sections')} annotated section{'s' * (entry.get('n_sections') != 1)}"
             f" ({entry.get('n_particles')} particles)")
    if not entry.get("sufficient"):
        return (f"not measurable: {where} cannot measure it; the corrected interval "
                "(annotation_error) is widened to span the uncorrected interval and the "
                "correction")
    share = entry.get("segmentation_share")
    if entry.get("kind") == "sections":
        return (f"included in annotation_error: the mean damage measured on {where} of the "
                f"annotation is the corrected estimate and its interval (the model's profiles "
                f"there give R = {entry['ratio']:.3g}); the estimate and ci above are the "
                "segmentation's, uncorrected")
    return (f"included in annotation_error: measured on {where}, the model's crack "
            f"calls x {entry['ratio']:.3g} (R) give the corrected estimate and its interval"
            + (f", {share:.0%} of whose variance is segmentation error" if share is not None
               else "") + "; the estimate and ci above are the segmentation's, uncorrected")


def corrected_line(entry: dict) -> str:
    """One line for the console: the mean damage from the annotated sections, its interval,
    ``R`` and (for a correction of the model's mean) the segmentation share.

    Examples
    --------
    >>> corrected_line({"estimate": 0.05, "ci": [0.03, 0.07], "ratio": 0.5,
    ...                 "ratio_ci": [0.4, 0.6], "segmentation_share": 0.4, "n_sections": 3,
    ...                 "n_particles": 40, "sufficient": True})
    'mean crack_fraction corrected on 3 annotated sections (40 particles): 0.05 [0.03, 0.07], R 0.5 [0.4, 0.6], segmentation error 40% of the variance'
    >>> corrected_line({"kind": "sections", "estimate": 0.05, "ci": [0.03, 0.07], "ratio": 0.5,
    ...                 "ratio_ci": [0.4, 0.6], "segmentation_share": 1.0, "n_sections": 3,
    ...                 "n_particles": 60, "sufficient": True})
    'mean crack_fraction of the annotated particle profiles in 3 annotated sections (60 profiles): 0.05 [0.03, 0.07], R 0.5 [0.4, 0.6]'
    """
    ci, rci = entry.get("ci") or [None, None], entry.get("ratio_ci") or [None, None]

    def fmt(v):
        return "?" if v is None else f"{v:.4g}"

    share = entry.get("segmentation_share")
    sections = f"{entry.get('n_sections')} annotated section{'s' * (entry.get('n_sections') != 1)}"
    head = (f"mean crack_fraction of the annotated particle profiles in {sections} "
            f"({entry.get('n_particles')} profiles)" if entry.get("kind") == "sections" else
            f"mean crack_fraction corrected on {sections} ({entry.get('n_particles')} particles)")
    text = (f"{head}: {fmt(entry.get('estimate'))} [{fmt(ci[0])}, {fmt(ci[1])}], "
            f"R {fmt(entry.get('ratio'))} [{fmt(rci[0])}, {fmt(rci[1])}]"
            + (f", segmentation error {share:.0%} of the variance"
               if share is not None and entry.get("kind") != "sections" else ""))
    return text if entry.get("sufficient") else f"{text}; {entry.get('note')}"


def apply_annotation_error(summary: dict, seg, instances, annotations, slices=None, *,
                           schema: LabelSchema = NMC4, seed: int = 0, n_resamples: int = 2000,
                           kind: str = "sections", weighting: str = "area",
                           source: str = "annotations") -> dict:
    """Add ``damage.mean.annotation_error`` to a summary and restate its ``segmentation_error``.

    Parameters
    ----------
    summary : dict
        From :func:`crackseg.stats.summary.summarize` (changed in place).
    seg, instances : array_like, shape (Z, Y, X)
        The model's segmentation and particle instances (lazy arrays are read
        only at the annotated sections).
    annotations, slices
        As for :func:`annotated_sections`.
    kind : {"sections", "profiles", "ratio", "line", "auto"}
        ``"sections"`` (default) and ``"profiles"``: :func:`profile_model`
        on the 2-D particle profiles of annotation and model
        (:func:`section_profiles`); the others: :func:`error_model` on the
        model's particles crossing the sections (:func:`section_pairs`).
    schema, seed, n_resamples, weighting, source
        As for :func:`annotated_sections` and :func:`error_model`.

    Returns
    -------
    dict
        The ``annotation_error`` entry.
    """
    from crackseg.io import json_safe

    if len(np.shape(seg)) != 3:
        raise InputError("annotated sections need a 3-D (Z, Y, X) segmentation; for a 2-D "
                         "section compare it with its annotation directly")
    slices, labels = annotated_sections(annotations, np.shape(seg), slices, schema=schema,
                                        source=source)
    mean = summary["damage"]["mean"]
    conf = float(mean.get("confidence", 0.95))
    if kind in ("sections", "profiles"):
        model = profile_model(section_profiles(seg, slices, labels, schema=schema), kind=kind,
                              n_resamples=n_resamples, confidence=conf, seed=seed)
    else:
        pairs = section_pairs(seg, instances, slices, labels, schema=schema)
        model = error_model(pairs, kind=kind, weighting=weighting, n_resamples=n_resamples,
                            confidence=conf, seed=seed)
    entry = json_safe(corrected_mean(mean, model, seed=seed))
    entry["source"] = str(source)
    mean["annotation_error"] = entry
    mean["segmentation_error"] = annotation_error_statement(entry)
    return entry
