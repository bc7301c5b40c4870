"""Tests of particle instances (envelope fill + watershed split)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crackseg.errors import InputError
from crackseg.particles import (
    border_labels,
    envelope_mask,
    instance_matching,
    particle_instances,
)
from crackseg.synthetic import generate_electrode

DATA = Path(__file__).resolve().parents[1] / "data"


def spheres(shape, centres_radii):
    grid = np.indices(shape)
    seg = np.zeros(shape, np.uint8)
    truth = np.zeros(shape, np.uint32)
    for i, (c, r) in enumerate(centres_radii, 1):
        inside = sum((g - ci) ** 2 for g, ci in zip(grid, c)) < r**2
        seg[inside] = 1
        truth[inside] = i
    return seg, truth


def test_touching_spheres_are_split():
    seg, truth = spheres((40, 40, 80), [((20, 20, 20), 14), ((20, 20, 45), 13),
                                        ((20, 20, 66), 10)])
    inst = particle_instances(seg)
    assert inst.dtype == np.uint32
    m = instance_matching(inst, truth)
    assert m["n_pred"] == 3 and m["f1"] == 1.0


def test_cracked_particle_stays_one():
    seg, _ = spheres((40, 40, 40), [((20, 20, 20), 15)])
    seg[19:21, :, :][seg[19:21, :, :] == 1] = 2   # a crack right through the middle
    seg[:, 18:20, :][seg[:, 18:20, :] == 1] = 2   # and a second one across it
    seg[16:24, 16:24, 16:24][seg[16:24, 16:24, 16:24] > 0] = 3  # a hollow core
    inst = particle_instances(seg)
    assert inst.max() == 1
    assert (inst > 0).sum() >= (seg > 0).sum()


def test_envelope_fills_unlabelled_core():
    seg, _ = spheres((30, 30, 30), [((15, 15, 15), 10)])
    seg[12:18, 12:18, 12:18] = 0  # core predicted as matrix
    env = envelope_mask(seg)
    assert env[15, 15, 15]


def test_phantom_instances_f1():
    ph = generate_electrode((64, 96, 96), seed=2, imaging=False)
    inst = particle_instances(ph.labels, voxel_size_um=ph.voxel_size_um)
    m = instance_matching(inst, ph.instances)
    assert m["f1"] >= 0.95, m
    assert m["split_rate"] <= 0.05 and m["merge_rate"] <= 0.05


def test_chunked_labels_are_consistent_across_chunks():
    ph = generate_electrode((48, 80, 80), seed=5, imaging=False)
    whole = particle_instances(ph.labels, voxel_size_um=ph.voxel_size_um)
    chunked = particle_instances(ph.labels, voxel_size_um=ph.voxel_size_um, chunk_size=40,
                                 margin=32)
    m = instance_matching(chunked, whole, iou_threshold=0.9)
    assert m["f1"] >= 0.97, m
    # nothing cut at chunk borders: no instance is split into pieces
    assert m["split_rate"] == 0.0


def test_specks_dropped_by_volume():
    seg, _ = spheres((30, 30, 60), [((15, 15, 15), 10), ((15, 15, 45), 2)])
    assert particle_instances(seg, min_volume_vox=10).max() == 2
    assert particle_instances(seg, min_volume_vox=100).max() == 1
    # 0.5 µm voxels: the small sphere (~33 voxels) is ~4 µm³
    assert particle_instances(seg, voxel_size_um=(0.5,) * 3, min_volume_um3=10).max() == 1
    with pytest.raises(InputError, match="voxel size"):
        particle_instances(seg, min_volume_um3=10)


def test_border_labels():
    seg, _ = spheres((30, 30, 60), [((15, 15, 8), 10), ((15, 15, 40), 8)])
    inst = particle_instances(seg)
    touching = border_labels(inst)
    assert touching.tolist() == [int(inst[15, 15, 8])]


def test_bad_input():
    with pytest.raises(InputError):
        particle_instances(np.zeros((10, 10, 10), np.float32))
    with pytest.raises(InputError):
        particle_instances(np.zeros(10, np.uint8))


def test_2d():
    seg, truth = spheres((60, 90), [((30, 25), 18), ((30, 60), 17)])
    inst = particle_instances(seg)
    assert instance_matching(inst, truth)["f1"] == 1.0


def test_cli_writes_particles(tmp_path):
    from crackseg.io import read_volume, write_volume

    seg, _ = spheres((30, 30, 60), [((15, 15, 15), 10), ((15, 15, 38), 10)])
    p = write_volume(tmp_path / "seg.tif", seg, (0.5, 0.5, 0.5))
    cmd = [sys.executable, "-m", "crackseg", "particles", str(p), "-o", str(tmp_path / "o"),
           "--quiet"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    img = read_volume(tmp_path / "o" / "particles.tif")
    assert img.data.dtype == np.uint32 and img.data.max() == 2
    assert img.voxel_size_um == (0.5, 0.5, 0.5)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(cmd[:5] + ["-o", str(tmp_path / "p"), "--min-volume", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0  # the file's voxel size makes µm³ usable


@pytest.mark.slow
@pytest.mark.skipif(not (DATA / "nmc_matbox_labels.tif").exists(), reason="data/ not present")
def test_real_nmc_geometry():
    from crackseg.io import read_volume

    lab = read_volume(DATA / "nmc_matbox_labels.tif").data[:96, :128, :128]
    seg = (lab == 1).astype(np.uint8)
    inst = particle_instances(seg)
    sizes = np.bincount(inst.ravel())[1:]
    assert inst.max() > 10
    # no particle is shattered into specks: the median instance is a real particle
    assert np.median(sizes) > 200


@pytest.mark.parametrize("shape", [(17, 19, 23), (41, 37)])
def test_flood_equals_skimage_watershed(shape, monkeypatch):
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    import crackseg.particle_flood as pf

    rng = np.random.default_rng(len(shape))
    height = ndi.gaussian_filter(rng.random(shape), 2).astype(np.float32)
    mask = height < np.quantile(height, 0.7)
    seeds = np.zeros(shape, np.uint32)
    seeds.ravel()[rng.choice(seeds.size, 12, replace=False)] = np.arange(1, 13)
    expected = watershed(height, seeds, mask=mask)
    arrays = pf.flood_arrays(height, seeds, mask)
    assert pf._kernel_flood(*arrays)  # the low-memory path runs with this scikit-image
    np.testing.assert_array_equal(arrays[1][(slice(1, -1),) * len(shape)], expected)
    np.testing.assert_array_equal(pf.flood(*pf.flood_arrays(height, seeds, mask)), expected)
    monkeypatch.setattr(pf, "_kernel_flood", lambda *a: False)  # another scikit-image
    np.testing.assert_array_equal(pf.flood(*pf.flood_arrays(height, seeds, mask)), expected)


@pytest.mark.parametrize("radius", [0, 1, 2])
def test_envelope_equals_scipy_closing_and_fill(radius):
    from scipy import ndimage as ndi

    from crackseg.particle_blocks import filled_envelope

    rng = np.random.default_rng(radius)
    for shape in [(13, 17, 19), (31, 29), (1, 6, 7)]:
        fg = ndi.gaussian_filter(rng.random(shape), 1) > 0.5
        ref = fg
        if radius:
            st = ndi.generate_binary_structure(fg.ndim, 1)
            padded = np.pad(fg, radius, mode="edge")
            ref = ndi.binary_closing(padded, st, iterations=radius)[(slice(radius, -radius),)
                                                                    * fg.ndim]
        np.testing.assert_array_equal(filled_envelope(fg, radius), ndi.binary_fill_holes(ref))


def test_envelope_without_solid_is_no_particle():
    seg = np.zeros((30, 30, 60), np.uint8)
    zz, yy, xx = np.mgrid[:30, :30, :60]
    seg[(zz - 15) ** 2 + (yy - 15) ** 2 + (xx - 15) ** 2 < 10 ** 2] = 1
    seg[12:18, 12:18, 12:18] = 2                       # a crack inside the particle
    seg[10:20, 10:20, 40:50] = 2                       # a crack-only blob out in the matrix
    inst = particle_instances(seg)
    assert int(inst.max()) == 1 and inst[15, 15, 15] == 1 and inst[15, 15, 45] == 0
    chunked = particle_instances(seg, chunk_size=16, margin=16, workers=1)
    assert (np.asarray(chunked) == inst).all()
