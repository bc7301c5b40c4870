"""Peer methods that users run today, for comparison with crackseg.

Two segmentation pipelines, both fitted on the same sparse slice annotations
(label value 255 = not annotated) that crackseg trains on:

Classical pipeline (:func:`classical_segmentation`, tuned by :func:`tune_classical`)
    Gaussian smoothing, multi-Otsu thresholds (:func:`skimage.filters.threshold_multiotsu`)
    into dark / mid-grey / bright phases.  With a crack class (``nmc4``): the
    bright phase is the particle solid; its closing (Euclidean ball) with
    holes filled (:func:`scipy.ndimage.binary_fill_holes`) is the particle
    envelope; non-solid voxels inside the envelope are voids, split by an
    opening with a ball of radius ``crack_width`` into thick parts (pores)
    and thin ones (cracks); everything outside the envelope is matrix.
    Without a crack class (e.g. particle / binder / pore) the three phases
    are the classes, darkest to brightest.  Particles are then separated with
    the distance-transform watershed of :func:`crackseg.particles.particle_instances`.
Random-forest pixel classifier (:func:`fit_random_forest`, :func:`random_forest_segmentation`)
    The ilastik approach: intensity, gradient and Hessian-eigenvalue features
    at several Gaussian scales (:func:`skimage.feature.multiscale_basic_features`)
    and a :class:`sklearn.ensemble.RandomForestClassifier` (100 trees by
    default, as ilastik's) trained on a class-balanced sample of the
    annotated voxels; all voxels are then classified, the whole volume at
    once or in z-slabs when its features would not fit in memory.  Features
    are computed, and trees grown and evaluated, on all usable cores.

Arrays are ZYX volumes or YX images; label images hold stored values of the
schema (:mod:`crackseg.labels`).

Examples
--------
>>> from crackseg.synthetic import generate_electrode, sparse_labels
>>> from benchmarks.baselines import classical_segmentation, fit_random_forest, random_forest_segmentation
>>> ph = generate_electrode((32, 32, 32), seed=0)
>>> classical_segmentation(ph.image).shape
(32, 32, 32)
>>> rf = fit_random_forest([ph.image], [sparse_labels(ph.labels, every=8)], seed=0, n_estimators=5)
>>> random_forest_segmentation(ph.image, rf).dtype
dtype('uint8')
"""

from __future__ import annotations

import itertools
import os
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from crackseg.errors import InputError
from crackseg.labels import NMC4, LabelSchema
from crackseg.normalize import normalize_image

DEFAULT_CLASSICAL = {"sigma": 1.0, "offset": 0.0, "closing_radius": 2.0, "crack_width": 1.0}
"""Classical pipeline settings used when none are tuned."""
CLASSICAL_GRID = {"sigma": (0.7, 1.2), "offset": (-0.15, 0.0, 0.15),
                  "closing_radius": (1.5, 2.5), "crack_width": (1.0, 1.5)}
"""Settings tried by :func:`tune_classical` (all combinations)."""
PHASE_ORDER = ("pore", "binder", "particle")
"""Three-phase schemas: class names from darkest to brightest."""
_OTSU_SAMPLE = 1_000_000
_CLASSICAL_KEYS = ("sigma", "offset", "closing_radius", "crack_width")


# ---------------------------------------------------------------- classical pipeline


def _check_image(image) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim not in (2, 3):
        raise InputError(f"image of shape {a.shape}: need a 2-D image (Y, X) or 3-D volume (Z, Y, X)")
    if not np.issubdtype(a.dtype, np.number):
        raise InputError(f"image has dtype {a.dtype}; grey values must be numbers")
    return a


def phase_thresholds(smoothed, *, seed: int = 0, max_voxels: int = _OTSU_SAMPLE) -> tuple[float, float]:
    """The two multi-Otsu thresholds splitting grey values into dark, mid-grey and bright.

    Parameters
    ----------
    smoothed : ndarray, shape (Z, Y, X) or (Y, X)
        (Smoothed) grey values.
    seed : int
        Seed of the voxel subsample used for the histogram on large images.
    max_voxels : int
        Histogram from at most this many randomly chosen voxels.

    Returns
    -------
    (float, float)
        Low and high threshold.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.repeat([0.0, 0.5, 1.0], 100) + np.random.default_rng(0).normal(0, 0.02, 300)
    >>> lo, hi = phase_thresholds(img.reshape(15, 20))
    >>> bool(0.0 < lo < 0.5 < hi < 1.0)
    True
    """
    from skimage.filters import threshold_multiotsu

    flat = np.asarray(smoothed, dtype=np.float32).ravel()
    if flat.size > max_voxels:
        flat = flat[np.random.default_rng(seed).choice(flat.size, max_voxels, replace=False)]
    if np.ptp(flat) == 0:
        raise InputError("the image is constant; nothing to threshold")
    lo, hi = threshold_multiotsu(flat, classes=3)
    return float(lo), float(hi)


def usable_cores() -> int:
    """Number of CPU cores this process may run on (threads used by default).

    Examples
    --------
    >>> usable_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _edt(mask: np.ndarray) -> np.ndarray:
    import edt

    return edt.edt(np.ascontiguousarray(mask, dtype=np.uint8), black_border=False,
                   parallel=usable_cores())


def ball_closing(mask, radius: float) -> np.ndarray:
    """Closing of a mask with a Euclidean ball (via distance transforms; voxel units).

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((9, 9), bool); m[2:7, 2:7] = True; m[4, 2:7] = False
    >>> bool(ball_closing(m, 1.5)[4, 4])
    True
    """
    m = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return m.copy()
    return _closing_from_distance(m, _edt(~m), radius)


def _closing_from_distance(mask: np.ndarray, outside: np.ndarray, radius: float) -> np.ndarray:
    # ``outside``: distance of every voxel to ``mask`` (shared by closings of several radii)
    if radius <= 0:
        return mask.copy()
    return _edt(outside <= radius) > radius


def ball_opening(mask, radius: float) -> np.ndarray:
    """Opening of a mask with a Euclidean ball: the parts at least ``2 * radius`` thick.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((12, 12), bool); m[1, 1:11] = True; m[5:10, 5:10] = True
    >>> o = ball_opening(m, 1.0)
    >>> bool(o[1].any()), bool(o[7, 7])
    (False, True)
    """
    m = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return m.copy()
    return _opening_from_distance(m, _edt(m), radius)


def _opening_from_distance(mask: np.ndarray, inside: np.ndarray, radius: float) -> np.ndarray:
    # ``inside``: distance of every mask voxel to the background (shared by several radii)
    if radius <= 0:
        return mask.copy()
    return (_edt(~(inside > radius)) <= radius) & mask


def _nmc_candidates(smoothed, solid_thresholds, closing_radii, crack_widths, schema):
    """Labels of the nmc4 pipeline for every combination of its settings.

    Yields ``(i, closing_radius, crack_width, labels)`` with ``i`` the index
    into ``solid_thresholds``; the distance transforms that do not depend on
    the later settings are computed once (a solid's distance map serves all
    closing radii, a void's all crack widths).
    """
    background = schema.value("matrix") if schema.has("matrix") else 0
    for i, threshold in enumerate(solid_thresholds):
        solid = smoothed > threshold
        outside = _edt(~solid) if any(r > 0 for r in closing_radii) else None
        for radius in closing_radii:
            envelope = ndi.binary_fill_holes(_closing_from_distance(solid, outside, radius))
            void = envelope & ~solid
            inside = _edt(void) if any(w > 0 for w in crack_widths) else None
            for width in crack_widths:
                pore = _opening_from_distance(void, inside, width)
                out = np.full(smoothed.shape, background, np.uint8)
                out[solid] = schema.value("particle")
                out[void & ~pore] = schema.value("crack")
                out[pore] = schema.value("pore")
                yield i, radius, width, out


def _phase_names(schema: LabelSchema, phase_order) -> list[str]:
    order = list(phase_order) if phase_order is not None else [n for n in PHASE_ORDER if schema.has(n)]
    if len(order) != 3 or not all(schema.has(n) for n in order):
        raise InputError(
            f"label schema {schema.name!r} ({', '.join(schema.names)}): the classical pipeline "
            "needs classes particle, crack, pore (nmc4) or three phases named darkest to "
            "brightest (phase_order)")
    return order


def classical_segmentation(image, *, schema: LabelSchema = NMC4, sigma: float = 1.0,
                           offset: float = 0.0, closing_radius: float = 2.0,
                           crack_width: float = 1.0, phase_order=None,
                           thresholds=None) -> np.ndarray:
    """Threshold-and-morphology segmentation (the classical pipeline).

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (Y, X)
        Grey values (any range; particles bright, voids dark).
    schema : LabelSchema
        ``nmc4``-like (classes ``particle``, ``crack``, ``pore``, optional
        ``matrix``), or a three-phase schema (see ``phase_order``).
    sigma : float
        Gaussian smoothing (voxels) before thresholding.
    offset : float
        Shift of the solid (high) threshold, as a fraction of the gap between
        the two multi-Otsu thresholds (positive: fewer solid voxels, more voids).
    closing_radius : float
        Radius (voxels) of the ball closing the solid into particle envelopes
        (nmc4); for three-phase schemas, of the closing of the bright phase
        (0: none).
    crack_width : float
        Voids thinner than ``2 * crack_width`` voxels are cracks, thicker ones pores.
    phase_order : sequence of 3 str, optional
        Three-phase schemas: class names darkest to brightest (default
        ``("pore", "binder", "particle")``).
    thresholds : (float, float), optional
        Low and high threshold of the smoothed image (default: multi-Otsu).

    Returns
    -------
    ndarray of uint8, same shape
        Stored label values of ``schema``.

    Examples
    --------
    >>> import numpy as np
    >>> zz, yy, xx = np.mgrid[:32, :32, :32]
    >>> img = np.where((zz - 16) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 100, 1.0, 0.1)
    >>> img[img == 0.1] = np.where(xx[img == 0.1] < 16, 0.1, 0.5)   # dark and mid-grey matrix
    >>> img[16, 9:24, 15] = 0.1                                       # a thin crack
    >>> seg = classical_segmentation(img, sigma=0.5)
    >>> int(seg[16, 16, 16]), int(seg[16, 16, 15]), int(seg[2, 2, 2])
    (1, 2, 0)
    """
    a = _check_image(image).astype(np.float32, copy=False)
    g = ndi.gaussian_filter(a, sigma) if sigma > 0 else a
    lo, hi = thresholds if thresholds is not None else phase_thresholds(g)
    hi_shifted = hi + float(offset) * (hi - lo)
    if _has_crack_classes(schema):
        return next(_nmc_candidates(g, [hi_shifted], [closing_radius], [crack_width], schema))[3]
    dark, mid, bright = _phase_names(schema, phase_order)
    out = np.full(a.shape, schema.value(mid), np.uint8)
    out[g <= lo] = schema.value(dark)
    solid = g > hi_shifted
    if closing_radius > 0:
        solid = ball_closing(solid, closing_radius)
    out[solid] = schema.value(bright)
    return out


def _dice_mean(pred, truth, schema) -> float:
    from crackseg.metrics import dice_per_class

    d = dice_per_class(pred, truth, schema)
    vals = [v for v in d.values() if v == v]
    return float(np.mean(vals)) if vals else 0.0


def tune_classical(images, labels, *, schema: LabelSchema = NMC4, grid: dict | None = None,
                   phase_order=None, progress: bool = False) -> dict:
    """Choose the classical pipeline's settings by mean Dice on annotated voxels.

    Every combination of ``grid`` is run on every image; the score is the mean
    over classes of the Dice on the annotated voxels (label != ignore) of all
    images together.  Multi-Otsu thresholds are computed per image, so only
    their relative ``offset`` is tuned.

    Parameters
    ----------
    images : list of ndarray
        Grey-value volumes (ZYX) or images (YX).
    labels : list of ndarray
        Sparse annotations of the same shapes (schema values, ignore elsewhere).
    schema : LabelSchema
    grid : dict of str to sequence, optional
        Values per setting of :func:`classical_segmentation` (default
        :data:`CLASSICAL_GRID`; for three-phase schemas ``crack_width`` is unused).
    phase_order : sequence of 3 str, optional
        See :func:`classical_segmentation`.  For three-phase schemas, when
        not given, both orders of the two darker phases are tried (the
        brightest being ``particle``), since which of binder and pore looks
        darker depends on the instrument.
    progress : bool
        Progress bar on stderr.

    Returns
    -------
    dict
        ``params`` (best settings), ``score`` (its mean Dice), ``phase_order``
        (three-phase schemas; else ``None``) and ``tried`` (list of
        ``{**settings, "score": ...}``).

    Examples
    --------
    >>> from crackseg.synthetic import generate_electrode, sparse_labels
    >>> ph = generate_electrode((32, 32, 32), seed=0)
    >>> r = tune_classical([ph.image], [sparse_labels(ph.labels, every=8)],
    ...                    grid={"sigma": [1.0], "offset": [0.0, 0.1]})
    >>> sorted(r["params"]), len(r["tried"])
    (['closing_radius', 'crack_width', 'offset', 'sigma'], 2)
    """
    images = [_check_image(im) for im in images]
    labels = _checked_labels(images, labels, schema, "to tune the classical pipeline on")
    annotated = [lb != schema.ignore for lb in labels]
    if not any(a.any() for a in annotated):
        raise InputError("no annotated voxels to tune the classical pipeline on")
    g, combos = _classical_combinations(schema, grid, phase_order)
    preds = _classical_predictions(images, annotated, g, combos, schema, progress=progress)
    truth = np.concatenate([lb[a] for lb, a in zip(labels, annotated)])
    tried = []
    for c in combos:
        score = _dice_mean(np.concatenate(preds[c]), truth, schema)
        order = {} if c[4] is None else {"phase_order": list(c[4])}
        tried.append({**dict(zip(_CLASSICAL_KEYS, (float(v) for v in c[:4]))), **order,
                      "score": round(score, 5)})
    best = max(tried, key=lambda r: r["score"])
    return {"params": {k: best[k] for k in _CLASSICAL_KEYS}, "score": best["score"],
            "phase_order": best.get("phase_order"), "tried": tried}


def _checked_labels(images, labels, schema: LabelSchema, purpose: str) -> list[np.ndarray]:
    """``labels`` as arrays, after checking there is one per image, of its shape, in ``schema``."""
    from crackseg.labels import validate_labels

    if not len(images) or len(images) != len(labels):
        raise InputError(f"give one label image per image {purpose}")
    labels = [np.asarray(lb) for lb in labels]
    for i, (im, lb) in enumerate(zip(images, labels)):
        if np.shape(im) != lb.shape:
            raise InputError(f"image {i} has shape {np.shape(im)} but its labels {lb.shape}")
        validate_labels(lb, schema, source=f"labels {i}")
    return labels


def _has_crack_classes(schema: LabelSchema) -> bool:
    return schema.has("crack") and schema.has("particle") and schema.has("pore")


def _classical_combinations(schema: LabelSchema, grid, phase_order):
    """The full grid ``{setting: values}`` and its combinations ``(*settings, phase_order)``.

    Settings are in the order of ``_CLASSICAL_KEYS``; ``phase_order`` is ``None`` for
    nmc4-like schemas, else each order to try (see :func:`tune_classical`).
    """
    g = {**{k: [v] for k, v in DEFAULT_CLASSICAL.items()}, **(grid or CLASSICAL_GRID)}
    unknown = set(g) - set(DEFAULT_CLASSICAL)
    if unknown:
        raise InputError(f"unknown classical setting(s) {sorted(unknown)}; "
                         f"use {sorted(DEFAULT_CLASSICAL)}")
    orders: list = [None]
    if not _has_crack_classes(schema):
        g["crack_width"] = [DEFAULT_CLASSICAL["crack_width"]]
        first = _phase_names(schema, phase_order)
        orders = [tuple(first)]
        if phase_order is None:
            orders.append((first[1], first[0], first[2]))
    combos = [c + (o,) for c in itertools.product(*(g[k] for k in _CLASSICAL_KEYS))
              for o in orders]
    return g, combos


def _classical_predictions(images, annotated, g: dict, combos, schema: LabelSchema, *,
                           progress: bool = False) -> dict:
    """Labels of the annotated voxels, one array per image, for every combination."""
    from tqdm.auto import tqdm

    nmc = _has_crack_classes(schema)
    preds: dict = {c: [] for c in combos}
    bar = tqdm(total=len(combos) * len(images), desc="tune classical", disable=not progress,
               file=sys.stderr, leave=False)
    for im, a in zip(images, annotated):
        x = im.astype(np.float32, copy=False)
        for sigma in g["sigma"]:
            sm = ndi.gaussian_filter(x, sigma) if sigma > 0 else x
            th = phase_thresholds(sm)
            if nmc:
                lo, hi = th
                offsets = list(g["offset"])
                for i, radius, width, seg in _nmc_candidates(
                        sm, [hi + float(o) * (hi - lo) for o in offsets], list(g["closing_radius"]),
                        list(g["crack_width"]), schema):
                    preds[(sigma, offsets[i], radius, width, None)].append(seg[a])
                    bar.update()
                continue
            for c in (c for c in combos if c[0] == sigma):
                seg = classical_segmentation(sm, schema=schema, sigma=0, offset=c[1],
                                             closing_radius=c[2], crack_width=c[3],
                                             phase_order=c[4], thresholds=th)
                preds[c].append(seg[a])
                bar.update()
    bar.close()
    return preds


# ---------------------------------------------------------------- random forest


@dataclass
class PixelClassifier:
    """A fitted random-forest pixel classifier and how to compute its features.

    Attributes
    ----------
    forest : sklearn.ensemble.RandomForestClassifier
        Predicts channel indices of ``schema``.
    schema : LabelSchema
    feature_settings : dict
        Arguments of :func:`pixel_features`.
    normalization : dict
        Grey-value normalisation (:func:`crackseg.normalize.normalize_image`).
    training : dict
        Samples per class, seed, number of images.
    """

    forest: object
    schema: LabelSchema
    feature_settings: dict
    normalization: dict = field(default_factory=dict)
    training: dict = field(default_factory=dict)


FEATURE_MEMORY_BYTES = 1 << 30
"""Pixel features of a volume are computed whole when they (and their temporaries)
fit in this many bytes, else in z-slabs that do."""


def _n_features(ndim: int, sigma_min: float, sigma_max: float) -> int:
    # per scale: smoothed intensity, gradient magnitude and ``ndim`` Hessian eigenvalues,
    # scales as in skimage.feature.multiscale_basic_features
    return (2 + ndim) * int(np.log2(sigma_max) - np.log2(sigma_min) + 1)


def pixel_features(image, *, sigma_min: float = 0.5, sigma_max: float = 8.0,
                   normalization: dict | None = None, workers: int | None = None) -> np.ndarray:
    """Multiscale intensity, gradient and Hessian features of every voxel.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (Y, X)
        Grey values; normalised first (default: 1st/99th percentile -> 0..1).
    sigma_min, sigma_max : float
        Smallest and largest Gaussian scale (voxels); scales double in between.
    normalization : dict, optional
        See :func:`crackseg.normalize.normalize_image`.
    workers : int, optional
        Threads computing the scales in parallel (default: all usable cores);
        the features do not depend on it.

    Returns
    -------
    ndarray of float32, shape image.shape + (n_features,)
        Per scale: smoothed intensity, gradient magnitude and the Hessian
        eigenvalues (5 features per scale in 3-D, 4 in 2-D).

    Examples
    --------
    >>> import numpy as np
    >>> pixel_features(np.random.default_rng(0).random((16, 16, 16)), sigma_max=2.0).shape
    (16, 16, 16, 15)
    """
    from skimage.feature import multiscale_basic_features

    x = normalize_image(_check_image(image), normalization)
    return multiscale_basic_features(x, intensity=True, edges=True, texture=True,
                                     sigma_min=sigma_min, sigma_max=sigma_max,
                                     workers=int(workers or usable_cores()),
                                     channel_axis=None).astype(np.float32, copy=False)


def _cached_features(image, memory, **kwargs) -> np.ndarray:
    """:func:`pixel_features`, looked up in (and stored to) a joblib cache when one is given."""
    if memory is None:
        return pixel_features(image, **kwargs)
    from sklearn.utils.validation import check_memory

    return check_memory(memory).cache(pixel_features, ignore=["workers"])(image, **kwargs)


def fit_random_forest(images, labels, *, schema: LabelSchema = NMC4, max_per_class: int = 20000,
                      n_estimators: int = 100, min_samples_leaf: int = 2, sigma_min: float = 0.5,
                      sigma_max: float = 8.0, seed: int = 0, normalization: dict | None = None,
                      n_jobs: int | None = None, memory=None,
                      progress: bool = False) -> PixelClassifier:
    """Train a random-forest pixel classifier on annotated voxels (the ilastik approach).

    Parameters
    ----------
    images : list of ndarray
        Grey-value volumes (ZYX) or images (YX).
    labels : list of ndarray
        Annotations of the same shapes (schema values; the ignore value,
        255, marks unannotated voxels).
    schema : LabelSchema
    max_per_class : int
        Annotated voxels drawn per class at most (uniformly over all images),
        as a user's brush strokes would give a roughly balanced set.
    n_estimators, min_samples_leaf : int
        Forest size (default 100 trees, as ilastik's pixel classification)
        and leaf size.
    sigma_min, sigma_max : float
        Feature scales (see :func:`pixel_features`).
    seed : int
        Seed of the voxel sample and of the forest.
    normalization : dict, optional
        Grey-value normalisation (default: per-image percentiles).
    n_jobs : int, optional
        Threads growing the trees, and later classifying voxels (default: all
        usable cores); the forest does not depend on it.
    memory : str or joblib.Memory, optional
        Cache of pixel features (as in scikit-learn's ``Pipeline(memory=...)``):
        features of an image seen before are read back, not recomputed.
    progress : bool
        Progress bar on stderr.

    Returns
    -------
    PixelClassifier

    Raises
    ------
    InputError
        Mismatched shapes, labels outside the schema, or no annotated voxel.
    """
    from sklearn.ensemble import RandomForestClassifier
    from tqdm.auto import tqdm

    labels = _checked_labels(images, labels, schema, "to train the random forest on")
    rng = np.random.default_rng(seed)
    lut = schema.index_lut()
    settings = {"sigma_min": float(sigma_min), "sigma_max": float(sigma_max)}
    norm = dict(normalization or {})
    idx_per_image = [lut[lb.astype(np.uint8)].ravel() for lb in labels]
    n = schema.num_classes
    totals = np.array([sum(int((ix == c).sum()) for ix in idx_per_image) for c in range(n)])
    if totals.sum() == 0:
        raise InputError("no annotated voxels to train the random forest on")
    # voxels chosen per class, spread over images in proportion to their annotated voxels
    take = np.minimum(totals, int(max_per_class))
    xs, ys = [], []
    for im, ix in tqdm(list(zip(images, idx_per_image)), desc="rf features", disable=not progress,
                       file=sys.stderr, leave=False):
        chosen = []
        for c in range(n):
            where = np.flatnonzero(ix == c)
            if where.size == 0 or take[c] == 0:
                continue
            k = int(round(take[c] * where.size / totals[c]))
            if k:
                chosen.append(rng.choice(where, min(k, where.size), replace=False))
        if not chosen:
            continue
        sel = np.sort(np.concatenate(chosen))
        f = _cached_features(im, memory, normalization=norm, **settings)
        xs.append(f.reshape(-1, f.shape[-1])[sel])
        ys.append(ix[sel])
        del f
    x, y = np.concatenate(xs), np.concatenate(ys)
    forest = RandomForestClassifier(n_estimators=int(n_estimators), min_samples_leaf=int(min_samples_leaf),
                                    n_jobs=int(n_jobs or usable_cores()), random_state=int(seed))
    forest.fit(x, y)
    counts = np.bincount(y, minlength=n)
    return PixelClassifier(forest=forest, schema=schema, feature_settings=settings,
                           normalization=norm,
                           training={"samples_per_class": dict(zip(schema.names, map(int, counts))),
                                     "max_per_class": int(max_per_class),
                                     "n_images": len(images), "seed": int(seed),
                                     "n_estimators": int(n_estimators),
                                     "min_samples_leaf": int(min_samples_leaf)})


def _slab_thickness(shape, n_features: int, margin: int) -> int:
    # features, their stacked copy and the per-scale temporaries: ~3 float32 copies
    per_slice = int(np.prod(shape[1:])) * n_features * 4 * 3
    fits = FEATURE_MEMORY_BYTES // max(per_slice, 1)
    if fits >= shape[0]:
        return int(shape[0])
    return int(max(fits - 2 * margin, margin, 8))


def random_forest_probabilities(image, classifier: PixelClassifier, *, block: int | None = None,
                                memory=None, progress: bool = False) -> np.ndarray:
    """Class probabilities of every voxel from a fitted pixel classifier.

    The features of a volume are computed whole when they fit in
    :data:`FEATURE_MEMORY_BYTES`, else in slabs of ``block`` z-slices, each
    with a margin of ``4 * sigma_max + 4`` slices of context, so memory
    stays bounded and the features equal those of the whole volume.  The
    forest classifies with its own ``n_jobs`` threads.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (Y, X)
    classifier : PixelClassifier
    block : int, optional
        Slab thickness (z-slices); default: the whole volume if its features
        fit in memory, else the thickest slab that does.
    memory : str or joblib.Memory, optional
        Cache of pixel features (see :func:`fit_random_forest`).
    progress : bool
        Progress bar on stderr.

    Returns
    -------
    ndarray of float32, shape (C,) + image.shape
        Channel-first probabilities (channels in schema order).

    Examples
    --------
    >>> from crackseg.synthetic import generate_electrode, sparse_labels
    >>> ph = generate_electrode((32, 32, 32), seed=0)
    >>> rf = fit_random_forest([ph.image], [sparse_labels(ph.labels, every=8)], n_estimators=5,
    ...                        sigma_max=2.0)
    >>> p = random_forest_probabilities(ph.image, rf)
    >>> p.shape, bool(abs(p.sum(0) - 1).max() < 1e-5)
    ((4, 32, 32, 32), True)
    """
    from tqdm.auto import tqdm

    from crackseg.normalize import percentile_range

    a = _check_image(image)
    norm = dict(classifier.normalization or {})
    if norm.get("mode", "per_volume") == "per_volume":
        # percentiles of the whole image, so that every slab is scaled alike
        pct = norm.get("percentiles", [1.0, 99.0])
        lo, hi = percentile_range(a, pct)
        norm = {"method": "percentile", "mode": "fixed", "range": [lo, hi]}
    n = classifier.schema.num_classes
    out = np.zeros((n,) + a.shape, np.float32)
    classes = classifier.forest.classes_
    settings = classifier.feature_settings
    # Gaussian reach (4 sigma) plus the finite differences of gradients and Hessians
    margin = int(np.ceil(4 * settings["sigma_max"])) + 4
    if a.ndim == 3:
        if block is None:
            block = _slab_thickness(a.shape, _n_features(3, settings["sigma_min"], settings["sigma_max"]),
                                    margin)
        starts = range(0, a.shape[0], int(block))
    else:
        starts = [0]
    for z0 in tqdm(list(starts), desc="random forest", disable=not progress, file=sys.stderr,
                   leave=False):
        if a.ndim == 3:
            z1 = min(z0 + int(block), a.shape[0])
            lo_, hi_ = max(0, z0 - margin), min(a.shape[0], z1 + margin)
            f = _cached_features(a[lo_:hi_], memory, normalization=norm, **settings)
            f = f[z0 - lo_:z1 - lo_]
            region = (slice(None), slice(z0, z1))
        else:
            f = _cached_features(a, memory, normalization=norm, **settings)
            region = (slice(None),)
        p = classifier.forest.predict_proba(f.reshape(-1, f.shape[-1]))
        slab = np.zeros((n, p.shape[0]), np.float32)
        slab[classes] = p.T
        out[region] = slab.reshape((n,) + f.shape[:-1])
    return out


def random_forest_segmentation(image, classifier: PixelClassifier, *, block: int | None = None,
                               memory=None, progress: bool = False) -> np.ndarray:
    """Label every voxel with a fitted random-forest pixel classifier.

    Parameters
    ----------
    image : ndarray, shape (Z, Y, X) or (Y, X)
    classifier : PixelClassifier
        From :func:`fit_random_forest`.
    block, memory, progress
        Slab thickness, feature cache and progress bar, as in
        :func:`random_forest_probabilities`.

    Returns
    -------
    ndarray of uint8, same shape
        Stored label values of the classifier's schema; the argmax of
        :func:`random_forest_probabilities`.
    """
    p = random_forest_probabilities(image, classifier, block=block, memory=memory, progress=progress)
    return classifier.schema.values_lut()[p.argmax(0)]
