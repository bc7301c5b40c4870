"""Sparse-slice data: label indices, patch sampler, hold-out, manifests, normalisation."""

from pathlib import Path

import numpy as np
import pytest

from crackseg.data import (
    PatchDataset,
    checked_index,
    class_counts,
    holdout_slices,
    labels_to_index,
    load_pair,
    read_manifest,
    synthetic_pairs,
)
from crackseg.errors import InputError
from crackseg.io import write_volume
from crackseg.labels import NMC4
from crackseg.normalize import fit_normalization, normalize_image


@pytest.fixture(scope="module")
def phantom():
    image, sparse, full = synthetic_pairs(1, (40, 40, 40), seed=3, sparse_every=12)[0]
    return image, sparse, full


def test_synthetic_pairs_are_sparse_slices(phantom):
    image, sparse, full = phantom
    annotated = sparse != 255
    assert annotated.any() and not annotated.all()
    assert np.array_equal(sparse[annotated], full[annotated])
    # whole z- or y-slices are annotated, nothing else
    z_rows = annotated.all(axis=(1, 2))
    y_rows = annotated.all(axis=(0, 2))
    assert z_rows.any() and y_rows.any()
    rebuilt = z_rows[:, None, None] | y_rows[None, :, None]
    assert np.array_equal(np.broadcast_to(rebuilt, annotated.shape), annotated)


def test_labels_to_index_maps_ignore_to_minus_one():
    idx = labels_to_index(np.array([[0, 1], [2, 255]], np.uint8), NMC4)
    assert idx.tolist() == [[0, 1], [2, -1]]


def test_sampler_draws_only_patches_with_annotations(phantom):
    image, sparse, _ = phantom
    ds = PatchDataset([(normalize_image(image), labels_to_index(sparse))], (16, 16, 16), 4,
                      length=40, seed=0)
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (1, 16, 16, 16) and y.shape == (1, 16, 16, 16)
        assert (y >= 0).any()


def test_sampler_oversamples_rare_class(phantom):
    image, sparse, _ = phantom
    idx = labels_to_index(sparse)
    counts = class_counts(idx, 4)
    rare = int(np.argmin(np.where(counts > 0, counts, counts.max() + 1)))
    item = [(normalize_image(image), idx)]
    n = 60

    def share_with_rare(ratios):
        ds = PatchDataset(item, (9, 9, 9), 4, length=n, class_ratios=ratios, augment=False, seed=1)
        return np.mean([bool((ds[i][1] == rare).any()) for i in range(n)])

    natural = counts / counts.sum()  # ratios proportional to frequency = no oversampling
    only_rare = [1.0 if c == rare else 0.0 for c in range(4)]
    assert share_with_rare(only_rare) == 1.0
    assert share_with_rare([1, 1, 1, 1]) > share_with_rare(list(natural)) + 0.1


def test_sampler_is_reproducible(phantom):
    image, sparse, _ = phantom
    item = [(normalize_image(image), labels_to_index(sparse))]
    a = PatchDataset(item, (16, 16, 16), 4, length=3, seed=5)[2]
    b = PatchDataset(item, (16, 16, 16), 4, length=3, seed=5)[2]
    assert np.array_equal(a[0].numpy(), b[0].numpy()) and np.array_equal(a[1].numpy(), b[1].numpy())


def test_sampler_pads_small_images():
    img = np.zeros((8, 20, 20), np.float32)
    idx = np.full(img.shape, -1, np.int16)
    idx[4] = 1
    x, y = PatchDataset([(img, idx)], (16, 16, 16), 4, length=1, augment=False)[0]
    assert x.shape == (1, 16, 16, 16) and (y == 1).any()


def test_2d_sampler():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(30, 30)).astype(np.float32)
    idx = np.full(img.shape, -1, np.int16)
    idx[::5] = rng.integers(0, 3, (6, 30))
    x, y = PatchDataset([(img, idx)], (16, 16), 3, length=2, seed=0)[1]
    assert x.shape == (1, 16, 16) and (y >= 0).any()


def test_holdout_slices_splits_annotated_slices(phantom):
    _, sparse, _ = phantom
    idx = labels_to_index(sparse)
    train, val = holdout_slices(idx, 0.5, axis=0, seed=0)
    assert ((train >= 0) & (val >= 0)).sum() == 0
    assert (val >= 0).any() and (train >= 0).any()
    both = np.where(val >= 0, val, train)
    assert np.array_equal(both, idx)


def test_normalization_maps_percentiles_to_unit_range(phantom):
    image = phantom[0]
    out = normalize_image(image)
    lo, hi = np.percentile(out, [1, 99])
    assert lo == pytest.approx(0, abs=1e-3) and hi == pytest.approx(1, abs=1e-3)
    rec = fit_normalization([image, image * 2.0])
    assert rec["mode"] == "per_volume" and rec["percentiles"] == [1.0, 99.0]
    assert rec["reference"]["n_images"] == 2 and rec["range"][1] > rec["range"][0]
    fixed = normalize_image(image, {**rec, "mode": "fixed"})
    assert fixed.dtype == np.float32


def _write_pair(tmp_path, name, image, labels):
    write_volume(tmp_path / f"{name}.tif", image, (0.5, 0.5, 0.5))
    write_volume(tmp_path / f"{name}_labels.tif", labels, (0.5, 0.5, 0.5))
    return tmp_path / f"{name}.tif", tmp_path / f"{name}_labels.tif"


def test_manifest_yaml_and_csv(tmp_path, phantom):
    image, sparse, full = phantom
    _write_pair(tmp_path, "a", image, sparse)
    _write_pair(tmp_path, "b", image, full)
    (tmp_path / "m.yaml").write_text(
        "train:\n  - {image: a.tif, labels: a_labels.tif}\nval:\n  - {image: b.tif, labels: b_labels.tif}\n")
    m = read_manifest(tmp_path / "m.yaml")
    assert m["train"] == [(tmp_path / "a.tif", tmp_path / "a_labels.tif")]
    assert len(m["val"]) == 1
    (tmp_path / "m.csv").write_text("image,labels,split\na.tif,a_labels.tif,train\nb.tif,b_labels.tif,val\n")
    assert read_manifest(tmp_path / "m.csv") == m


def test_manifest_missing_file_is_one_line_error(tmp_path):
    (tmp_path / "m.yaml").write_text("train:\n  - {image: nope.tif, labels: nope_labels.tif}\n")
    with pytest.raises(InputError, match="does not exist") as e:
        read_manifest(tmp_path / "m.yaml")
    assert "\n" not in str(e.value)


def test_bad_pairs_are_rejected(tmp_path, phantom):
    image, sparse, _ = phantom
    ip, _ = _write_pair(tmp_path, "a", image, sparse)
    write_volume(tmp_path / "short.tif", sparse[:-1], (0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="shape"):
        load_pair(ip, tmp_path / "short.tif")
    bad = sparse.copy()
    bad[0, 0, 0] = 7
    write_volume(tmp_path / "bad.tif", bad, (0.5, 0.5, 0.5))
    with pytest.raises(InputError, match="not in schema"):
        load_pair(ip, tmp_path / "bad.tif")
    with pytest.raises(InputError, match="no annotated voxels"):
        checked_index(np.full((4, 4), 255, np.uint8), NMC4)


def test_real_segmentpy_slice_loads_with_its_schema():
    data = Path(__file__).resolve().parents[1] / "data" / "segmentpy"
    schema_file = Path(__file__).resolve().parents[1] / "training" / "schemas" / "segmentpy3.yaml"
    image, index = load_pair(data / "1.tif", data / "1_label.tif", str(schema_file))
    assert image.ndim == 2 and index.shape == image.shape
    assert set(np.unique(index)) <= {0, 1, 2}
