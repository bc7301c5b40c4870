"""Peer methods: classical threshold pipeline and random-forest pixel classifier."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.baselines import (
    ball_closing,
    ball_opening,
    classical_segmentation,
    fit_random_forest,
    phase_thresholds,
    random_forest_probabilities,
    random_forest_segmentation,
    tune_classical,
)
from crackseg.errors import InputError
from crackseg.labels import NMC4, schema_from_dict
from crackseg.metrics import dice_per_class
from crackseg.synthetic import generate_electrode, sparse_labels

SCHEMA3 = schema_from_dict({"name": "s3", "classes": {"particle": 0, "binder": 1, "pore": 2}})
RF_SMALL = dict(n_estimators=8, max_per_class=2000, sigma_max=2.0)


@pytest.fixture(scope="module")
def phantoms():
    return [generate_electrode((40, 40, 40), seed=s) for s in (11, 12)]


def mean_dice(pred, truth, schema=NMC4):
    d = dice_per_class(pred, truth, schema)
    return float(np.nanmean(list(d.values())))


# ---------------------------------------------------------------- morphology


def test_ball_closing_and_opening():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    m[9, 5:15] = False  # a one-voxel slit
    assert ball_closing(m, 1.5)[9, 6:14].all()
    assert not ball_closing(m, 0)[9, 6:14].any()
    thin = np.zeros((20, 20), bool)
    thin[3, 2:18] = True
    thin[8:16, 8:16] = True
    o = ball_opening(thin, 1.0)
    assert not o[3].any() and o[11, 11]
    assert np.array_equal(ball_opening(thin, 0), thin)


def test_phase_thresholds_separate_three_levels():
    rng = np.random.default_rng(0)
    img = np.repeat([0.1, 0.5, 1.0], 4000) + rng.normal(0, 0.03, 12000)
    lo, hi = phase_thresholds(img)
    assert 0.1 < lo < 0.5 < hi < 1.0
    with pytest.raises(InputError, match="constant"):
        phase_thresholds(np.ones((5, 5)))


# ---------------------------------------------------------------- classical


def test_classical_sphere_with_crack_and_pore():
    zz, yy, xx = np.mgrid[:40, :40, :40]
    r2 = (zz - 20) ** 2 + (yy - 20) ** 2 + (xx - 20) ** 2
    truth = np.where(r2 < 15 ** 2, 1, 0).astype(np.uint8)
    truth[20, 8:32, 19] = 2  # a one-voxel thin crack through the middle
    truth[(zz - 20) ** 2 + (yy - 26) ** 2 + (xx - 26) ** 2 < 9] = 3  # a small round pore
    img = np.select([truth == 1, truth == 0], [1.0, np.where(xx < 20, 0.1, 0.5)], 0.1)
    seg = classical_segmentation(img, sigma=0.5, closing_radius=2.0, crack_width=1.0)
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    assert seg[20, 20, 19] == 2 and seg[20, 26, 26] == 3 and seg[2, 2, 2] == 0
    d = dice_per_class(seg, truth)
    assert d["particle"] > 0.95 and d["matrix"] > 0.95


def test_classical_on_phantom_beats_constant(phantoms):
    ph = phantoms[0]
    seg = classical_segmentation(ph.image)
    assert seg.dtype == np.uint8 and seg.shape == ph.labels.shape
    constant = np.zeros_like(ph.labels)
    assert mean_dice(seg, ph.labels) > mean_dice(constant, ph.labels)


def test_classical_three_phase_2d():
    rng = np.random.default_rng(1)
    truth = np.ones((60, 60), np.uint8)  # binder
    truth[:, :20] = 2  # pore: darkest
    truth[:, 40:] = 0  # particle: brightest
    levels = np.array([1.0, 0.5, 0.1])[truth]
    img = levels + rng.normal(0, 0.05, truth.shape)
    seg = classical_segmentation(img, schema=SCHEMA3, sigma=1.0, closing_radius=0)
    d = dice_per_class(seg, truth, SCHEMA3)
    assert min(d.values()) > 0.9
    # an instrument where binder looks darker than pore: tuning finds the order
    swapped = np.array([1.0, 0.1, 0.5])[truth] + rng.normal(0, 0.05, truth.shape)
    r = tune_classical([swapped], [truth], schema=SCHEMA3,
                       grid={"sigma": [1.0], "offset": [0.0], "closing_radius": [0.0]})
    assert r["phase_order"] == ["binder", "pore", "particle"]
    assert r["score"] > 0.9


def test_classical_needs_known_classes():
    schema = schema_from_dict({"name": "x", "classes": {"a": 0, "b": 1}})
    with pytest.raises(InputError, match="classical pipeline"):
        classical_segmentation(np.random.default_rng(0).random((8, 8)), schema=schema)
    with pytest.raises(InputError, match="2-D image"):
        classical_segmentation(np.zeros(5))


def test_tune_classical_reports_its_best(phantoms):
    ph = phantoms[0]
    sparse = sparse_labels(ph.labels, every=8, seed=0)
    r = tune_classical([ph.image], [sparse], grid={"sigma": [0.7, 1.2], "offset": [0.0, 0.15]})
    assert len(r["tried"]) == 4
    assert r["score"] == max(t["score"] for t in r["tried"])
    seg = classical_segmentation(ph.image, **r["params"])
    keep = sparse != 255
    assert mean_dice(seg[keep], sparse[keep]) == pytest.approx(r["score"], abs=1e-4)


def test_tune_classical_scores_equal_single_runs(phantoms):
    # tuning shares distance maps between settings; every score must equal that of a single run
    ph = phantoms[1]
    sparse = sparse_labels(ph.labels, every=6, seed=1)
    keep = sparse != 255
    grid = {"sigma": [1.0], "offset": [-0.1, 0.1], "closing_radius": [0.0, 2.0],
            "crack_width": [0.0, 1.5]}
    r = tune_classical([ph.image], [sparse], grid=grid)
    assert len(r["tried"]) == 8
    for t in r["tried"]:
        settings = {k: t[k] for k in ("sigma", "offset", "closing_radius", "crack_width")}
        seg = classical_segmentation(ph.image, **settings)
        assert mean_dice(seg[keep], sparse[keep]) == pytest.approx(t["score"], abs=1e-4)


def test_tune_classical_bad_input(phantoms):
    ph = phantoms[0]
    with pytest.raises(InputError, match="no annotated"):
        tune_classical([ph.image], [np.full(ph.labels.shape, 255, np.uint8)])
    with pytest.raises(InputError, match="shape"):
        tune_classical([ph.image], [ph.labels[:-1]])
    with pytest.raises(InputError, match="unknown classical"):
        tune_classical([ph.image], [ph.labels], grid={"threshold": [1]})


# ---------------------------------------------------------------- random forest


def test_random_forest_learns_and_is_seeded(phantoms):
    train, test = phantoms
    sparse = sparse_labels(train.labels, every=8, seed=0)
    rf = fit_random_forest([train.image], [sparse], seed=3, **RF_SMALL)
    seg = random_forest_segmentation(test.image, rf)
    assert seg.dtype == np.uint8 and seg.shape == test.labels.shape
    assert set(np.unique(seg)) <= set(NMC4.values)
    assert mean_dice(seg, test.labels) > mean_dice(np.zeros_like(seg), test.labels)
    assert sum(rf.training["samples_per_class"].values()) <= 4 * RF_SMALL["max_per_class"]
    again = fit_random_forest([train.image], [sparse], seed=3, **RF_SMALL)
    assert np.array_equal(random_forest_segmentation(test.image, again), seg)


def test_random_forest_slabs_match_whole_volume(phantoms):
    train, test = phantoms
    rf = fit_random_forest([train.image], [sparse_labels(train.labels, every=8, seed=0)], seed=0,
                           **RF_SMALL)
    whole = random_forest_probabilities(test.image, rf, block=64)
    slabs = random_forest_probabilities(test.image, rf, block=7)
    assert whole.shape == (4,) + test.image.shape
    np.testing.assert_allclose(whole.sum(0), 1.0, atol=1e-5)
    assert (whole.argmax(0) == slabs.argmax(0)).mean() > 0.999


def test_random_forest_automatic_slabs_and_threads(phantoms, monkeypatch):
    import benchmarks.baselines as baselines

    train, test = phantoms
    sparse = sparse_labels(train.labels, every=8, seed=0)
    rf = fit_random_forest([train.image], [sparse], seed=0, n_jobs=1, **RF_SMALL)
    whole = random_forest_probabilities(test.image, rf, block=64)
    assert np.array_equal(random_forest_probabilities(test.image, rf), whole)
    # the forest and its probabilities do not depend on the number of threads
    rf2 = fit_random_forest([train.image], [sparse], seed=0, n_jobs=2, **RF_SMALL)
    np.testing.assert_allclose(random_forest_probabilities(test.image, rf2), whole, atol=1e-6)
    # too little memory for the whole volume's features: z-slabs, same labels
    monkeypatch.setattr(baselines, "FEATURE_MEMORY_BYTES", 40 * 40 * 15 * 4 * 3 * 20)
    assert baselines._slab_thickness(test.image.shape, 15, margin=12) < test.image.shape[0]
    slabs = random_forest_probabilities(test.image, rf)
    assert (slabs.argmax(0) == whole.argmax(0)).mean() > 0.999


def test_random_forest_feature_cache(phantoms, tmp_path, monkeypatch):
    import skimage.feature
    from joblib import Memory

    train, test = phantoms
    sparse = sparse_labels(train.labels, every=8, seed=0)
    plain = fit_random_forest([train.image], [sparse], seed=0, **RF_SMALL)
    expected = random_forest_probabilities(test.image, plain)
    memory = Memory(tmp_path, verbose=0)
    cached = fit_random_forest([train.image], [sparse], seed=0, memory=memory, **RF_SMALL)
    assert np.array_equal(random_forest_probabilities(test.image, cached, memory=memory), expected)
    calls = []
    compute = skimage.feature.multiscale_basic_features
    monkeypatch.setattr(skimage.feature, "multiscale_basic_features",
                        lambda *a, **k: calls.append(1) or compute(*a, **k))
    # other annotations of the same image: its features, and the test image's, are read back
    again = fit_random_forest([train.image], [sparse_labels(train.labels, every=5, seed=1)],
                              seed=0, memory=memory, **RF_SMALL)
    random_forest_segmentation(test.image, again, memory=memory)
    assert calls == []


def test_random_forest_2d_three_phase():
    rng = np.random.default_rng(2)
    truth = np.ones((48, 48), np.uint8)
    truth[:, :16] = 2
    truth[:, 32:] = 0
    img = np.array([1.0, 0.5, 0.1])[truth] + rng.normal(0, 0.05, truth.shape)
    rf = fit_random_forest([img], [truth], schema=SCHEMA3, seed=0, **RF_SMALL)
    seg = random_forest_segmentation(img + rng.normal(0, 0.02, img.shape), rf)
    assert min(dice_per_class(seg, truth, SCHEMA3).values()) > 0.9


def test_random_forest_bad_input(phantoms):
    ph = phantoms[0]
    with pytest.raises(InputError, match="no annotated"):
        fit_random_forest([ph.image], [np.full(ph.labels.shape, 255, np.uint8)], **RF_SMALL)
    with pytest.raises(InputError, match="shape"):
        fit_random_forest([ph.image], [ph.labels[1:]], **RF_SMALL)
    with pytest.raises(InputError):
        fit_random_forest([ph.image], [np.full(ph.labels.shape, 7, np.uint8)], **RF_SMALL)
