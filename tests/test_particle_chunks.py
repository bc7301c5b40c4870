"""Chunked particle labelling: equal to the whole-volume labels, parallel, resumable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import crackseg.particle_chunks as pc
from crackseg.particles import instance_matching, particle_instances
from crackseg.synthetic import generate_electrode

pytestmark = pytest.mark.filterwarnings("ignore:particles up to")
CHUNK = 24
FACE_SLIVER = Path(__file__).parent / "data" / "particle_face_sliver.npz"
"""``generate_electrode((256,) * 3, seed=1, voxel_size_um=0.3, imaging=False).labels``
cut to ``[56:134, 120:198, 0:48]``: a particle ~34 voxels in radius whose distance peak is
flat along Z, its seed 34 voxels before the chunk face at Z = 72 that it reaches into."""


@pytest.fixture(scope="module")
def phantom():
    """Particles up to ~70 voxels wide (0.3 µm voxels) in a 48x64x64 volume, and their labels."""
    ph = generate_electrode((48, 64, 64), seed=5, voxel_size_um=0.3, imaging=False)
    whole = particle_instances(ph.labels, voxel_size_um=ph.voxel_size_um)
    return ph, whole


def _widest(inst) -> int:
    from scipy import ndimage as ndi

    boxes = ndi.find_objects(inst)
    return max(max(s.stop - s.start for s in b) for b in boxes if b is not None)


def test_chunked_equals_whole_volume(phantom):
    ph, whole = phantom
    assert _widest(whole) > CHUNK  # particles span several chunks and faces
    chunked = particle_instances(ph.labels, voxel_size_um=ph.voxel_size_um, chunk_size=CHUNK,
                                 workers=1)
    assert instance_matching(chunked, whole, iou_threshold=0.9)["f1"] >= 0.99
    np.testing.assert_array_equal(chunked, whole)


def test_seed_beyond_the_chunk_keeps_its_whole_volume_position():
    seg = np.load(FACE_SLIVER)["seg"]
    vs = (0.3,) * 3
    whole = particle_instances(seg, voxel_size_um=vs)
    chunked = particle_instances(seg, voxel_size_um=vs, chunk_size=72, workers=1)
    np.testing.assert_array_equal(chunked, whole)
    # With the 62-voxel margin as the distance map's context too, the block's face is 28
    # voxels from that seed, closer than its radius: the distance peak (and with it the seed)
    # moves, and the particle's sliver at the chunk face gets another name.
    narrow = particle_instances(seg, voxel_size_um=vs, chunk_size=72, workers=1, margin=62)
    assert narrow.max() == whole.max() + 1


def test_context_costs_memory_while_the_distance_map_is_computed():
    shape, chunk = (512,) * 3, (128,) * 3
    plain = pc.labelling_bytes(chunk, (62,) * 3, shape, 1)
    wide = pc.labelling_bytes(chunk, (62,) * 3, shape, 1, context=(80,) * 3)
    assert plain == 252**3 * pc.LABEL_BYTES_PER_VOXEL
    assert wide == max(plain + 288**3, 288**3 * pc.CONTEXT_BYTES_PER_VOXEL)
    assert pc.labelling_bytes(chunk, (62,) * 3, shape, 1, context=(62,) * 3) == plain


def test_margin_grows_with_particles():
    small = pc.margin_for_radius(5, sigma=1, closing_radius=1, voxel_size_um=None, ndim=3)
    big = pc.margin_for_radius(40, sigma=1, closing_radius=1, voxel_size_um=None, ndim=3)
    assert big[0] > 60 > small[0]
    aniso = pc.margin_for_radius(40, sigma=1, closing_radius=1, voxel_size_um=(1.0, 0.5, 0.5),
                                 ndim=3)
    assert aniso[0] * 2 == pytest.approx(aniso[1], abs=2)
    context = pc.margin_for_radius(40, sigma=1, closing_radius=1, voxel_size_um=None, ndim=3,
                                   per_radius=pc.CONTEXT_PER_RADIUS)
    assert context[0] - big[0] == pytest.approx(20, abs=2)


@pytest.mark.parametrize("workers", [1, 2])
def test_scan_finds_the_radius_of_a_ball_wider_than_its_margin(workers):
    """A ball of radius 36 (> the scan margin) cut by chunk faces: the wider rescan measures it."""
    from crackseg.labels import NMC4
    from crackseg.particle_blocks import block_radius

    z, y, x = np.mgrid[:88, :88, :88]
    seg = (((z - 42) ** 2 + (y - 45) ** 2 + (x - 43) ** 2) < 36**2).astype(np.uint8)
    opts = {"schema": NMC4, "voxel_size_um": None, "closing_radius": 1}
    whole = block_radius(seg, NMC4, voxel_size_um=None, closing_radius=1)
    assert whole > pc.SCAN_MARGIN
    pool = pc._executor(workers, 8)
    try:
        radius, sums = pc.scan_radius(seg, (44, 44, 44), opts, pool, progress=False)
    finally:
        if pool is not None:
            pool.shutdown()
    assert radius == pytest.approx(whole) and len(sums) == 8


def test_interrupted_run_resumes(phantom, tmp_path, monkeypatch):
    ph, whole = phantom
    saved = pc.save_counts
    calls = []

    def stop_after_three(store, index, counts):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(index)
        saved(store, index, counts)

    kw = dict(voxel_size_um=ph.voxel_size_um, chunk_size=CHUNK, workers=1, store=tmp_path / "w")
    monkeypatch.setattr(pc, "save_counts", stop_after_three)
    with pytest.raises(KeyboardInterrupt):
        particle_instances(ph.labels, **kw)
    assert len(list((tmp_path / "w" / "counts").glob("*.npz"))) == 3
    monkeypatch.setattr(pc, "save_counts", saved)
    labelled = []
    task = pc.label_task
    monkeypatch.setattr(pc, "label_task", lambda *a: labelled.append(a[2]) or task(*a))
    inst = particle_instances(ph.labels, **kw)
    n_chunks = len(pc.chunk_grid(ph.labels.shape, CHUNK))
    assert len(labelled) == n_chunks - 3  # the finished chunks were kept
    assert str(inst.store_path).endswith("w/instances.zarr/0")
    np.testing.assert_array_equal(np.asarray(inst[...]), whole)
    # A finished run is not redone; a changed input is.
    labelled.clear()
    np.testing.assert_array_equal(np.asarray(particle_instances(ph.labels, **kw)[...]), whole)
    assert labelled == []
    seg = ph.labels.copy()
    seg[:, :, :8] = 0
    again = particle_instances(seg, **kw)
    assert len(labelled) == n_chunks
    np.testing.assert_array_equal(np.asarray(again[...]),
                                  particle_instances(seg, voxel_size_um=ph.voxel_size_um))


def test_two_workers_equal_one(phantom, tmp_path):
    import zarr

    ph, whole = phantom
    seg = ph.labels[:, :48, :48]
    one = particle_instances(seg, voxel_size_um=ph.voxel_size_um, chunk_size=CHUNK, workers=1)
    out = zarr.create_array(store=str(tmp_path / "o.zarr"), shape=seg.shape, dtype=np.uint32,
                            chunks=(CHUNK,) * 3, fill_value=0)
    two = particle_instances(seg, voxel_size_um=ph.voxel_size_um, chunk_size=CHUNK, workers=2,
                             out=out)
    assert two is out
    np.testing.assert_array_equal(np.asarray(two[...]), one)


def test_plan_for_memory_fits_the_budget():
    shape, chunk, margin = (512,) * 3, (256,) * 3, (50,) * 3
    plans = [pc.plan_for_memory(gb * 1e9, chunk, margin, shape, 2) for gb in (0.3, 0.9, 1.4, 4)]
    for gb, plan in zip((0.3, 0.9, 1.4, 4), plans):
        assert plan["fits"] and plan["bytes"] <= gb * 1e9
        assert plan["bytes"] == pc.labelling_bytes(plan["chunk"], margin, shape, plan["workers"])
        # a multiple of the step, or an even cut of the 512 voxels (3 x 171)
        assert all(c % pc.CHUNK_STEP == 0 or -(-512 // -(-512 // c)) == c for c in plan["chunk"])
    assert plans[-1]["chunk"] == chunk and plans[-1]["workers"] == 2  # enough for everything
    assert plans[0]["workers"] == 1 and plans[0]["chunk"] < chunk
    assert [p["chunk"][0] * p["workers"] for p in plans] == sorted(
        p["chunk"][0] * p["workers"] for p in plans)
    tiny = pc.plan_for_memory(1e6, chunk, margin, shape, 2)
    assert not tiny["fits"] and tiny["workers"] == 1 and tiny["chunk"] == (pc.CHUNK_STEP,) * 3


def test_memory_budget_sizes_the_chunks(phantom, tmp_path, monkeypatch):
    import json

    ph, _ = phantom
    kw = dict(voxel_size_um=ph.voxel_size_um, margin=8, workers=1)
    monkeypatch.setattr(pc, "resident_bytes", lambda: 0)
    # A 32^3 chunk with its margins fits the budget, the whole 48x64x64 volume not.
    shape = ph.labels.shape
    budget = 1.2 * pc.labelling_bytes((32,) * 3, (8,) * 3, shape, 1)
    assert pc.labelling_bytes(shape, (0,) * 3, shape, 1) > budget
    inst = particle_instances(ph.labels, chunk_size=64, store=tmp_path / "w",
                              max_memory_gb=budget / 2**30, **kw)
    prog = json.loads((tmp_path / "w" / "progress.json").read_text())
    assert prog["chunk"] == [32, 32, 32] and prog["workers"] == 1
    assert prog["max_memory_gb"] == pytest.approx(budget / 2**30)
    np.testing.assert_array_equal(np.asarray(inst[...]),
                                  particle_instances(ph.labels, chunk_size=32, **kw))
