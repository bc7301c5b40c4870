"""Per-particle table: exact agreement with the phantom truth and analytic cases."""

import numpy as np
import pandas as pd
import pytest

from crackseg.errors import InputError
from crackseg.stats.table import (
    particle_table,
    posterior_crack_fractions,
    read_particle_samples,
    write_particle_samples,
)
from crackseg.synthetic import generate_electrode


@pytest.fixture(scope="module")
def phantom():
    return generate_electrode((64, 64, 64), seed=3, imaging=False)


def ball(shape, centre, radius):
    zz, yy, xx = np.indices(shape)
    return (zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2 <= radius ** 2


def test_crack_fraction_matches_generator_truth_exactly(phantom):
    t = particle_table(phantom.labels, phantom.instances, voxel_size_um=phantom.voxel_size_um)
    truth = phantom.truth.set_index("label").loc[t["label"]]
    assert len(t) == len(phantom.truth)
    np.testing.assert_array_equal(t["crack_fraction"].to_numpy(), truth["crack_fraction"].to_numpy())
    np.testing.assert_array_equal(t["pore_fraction"].to_numpy(), truth["pore_fraction"].to_numpy())
    np.testing.assert_array_equal(t["void_fraction"].to_numpy(), truth["void_fraction"].to_numpy())
    np.testing.assert_array_equal(t["volume_vox"].to_numpy(), truth["volume_vox"].to_numpy())
    np.testing.assert_array_equal(t["touches_border"].to_numpy(), truth["touches_border"].to_numpy())
    np.testing.assert_allclose(t["depth_um"].to_numpy(), truth["depth_um"].to_numpy())
    np.testing.assert_allclose(t["centroid_x_vox"].to_numpy(), truth["centroid_x"].to_numpy())


def test_ball_with_core_crack_and_shell_crack():
    shape = (40, 40, 40)
    env = ball(shape, (20, 20, 20), 12)
    seg = env.astype(np.uint8)
    core_crack = ball(shape, (20, 20, 20), 4)
    seg[core_crack] = 2
    inst = env.astype(np.uint32)
    t = particle_table(seg, inst, voxel_size_um=(0.5, 0.5, 0.5), shell_um=1.0)
    row = t.iloc[0]
    assert row["crack_fraction"] == pytest.approx(core_crack.sum() / env.sum())
    assert row["surface_crack_fraction"] == 0.0
    assert row["internal_crack_fraction"] > 0
    assert not row["touches_border"]
    # volume and equivalent diameter in physical units
    assert row["volume_um3"] == pytest.approx(env.sum() * 0.125)
    assert row["equivalent_diameter_um"] == pytest.approx((6 * env.sum() * 0.125 / np.pi) ** (1 / 3))
    # a digital ball is nearly a sphere once face counting is corrected for orientation
    assert 0.9 < row["sphericity"] < 1.1
    # crack only in the outer shell
    seg2 = env.astype(np.uint8)
    shell = env & ~ball(shape, (20, 20, 20), 10.5)
    seg2[shell & (np.indices(shape)[0] > 20)] = 2
    r2 = particle_table(seg2, inst, voxel_size_um=(0.5, 0.5, 0.5), shell_um=1.0).iloc[0]
    assert r2["internal_crack_fraction"] == 0.0
    assert r2["surface_crack_fraction"] > 0


def test_voxel_units_without_voxel_size_and_border_flag():
    seg = np.zeros((10, 10, 10), np.uint8)
    seg[0:3, 2:5, 2:5] = 1
    seg[5:8, 5:8, 5:8] = 1
    inst = np.zeros_like(seg, dtype=np.uint32)
    inst[0:3, 2:5, 2:5] = 7
    inst[5:8, 5:8, 5:8] = 9
    t = particle_table(seg, inst)
    assert t["label"].tolist() == [7, 9]
    assert t["touches_border"].tolist() == [True, False]
    assert t["volume_um3"].isna().all() and (t["volume_vox"] == 27).all()
    assert t["depth_vox"].tolist() == [1.0, 6.0]


def test_bad_inputs():
    seg = np.zeros((8, 8, 8), np.uint8)
    with pytest.raises(InputError, match="no particles"):
        particle_table(seg, np.zeros_like(seg, dtype=np.uint32))
    seg[2:4, 2:4, 2:4] = 7
    with pytest.raises(InputError, match="not in schema"):
        particle_table(seg, (seg > 0).astype(np.uint32))
    seg[2:4, 2:4, 2:4] = 1
    with pytest.raises(InputError, match="differs"):
        particle_table(seg, np.zeros((8, 8, 9), np.uint32))


def test_posterior_samples_roundtrip(tmp_path, phantom):
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(3):
        s = phantom.labels.copy()
        flip = (s == 1) & (rng.random(s.shape) < 0.01)
        s[flip] = 2
        samples.append(s)
    labels, cf = posterior_crack_fractions(iter(samples), phantom.instances)
    assert cf.shape == (3, len(phantom.truth))
    # each sample only adds cracks, so its crack fraction is at least the truth
    truth = phantom.truth.set_index("label").loc[labels, "crack_fraction"].to_numpy()
    assert (cf >= truth - 1e-6).all()
    path = write_particle_samples(tmp_path / "particle_samples.npz", labels, cf)
    l2, cf2 = read_particle_samples(path)
    np.testing.assert_array_equal(l2, labels)
    np.testing.assert_allclose(cf2, cf)
    # the count form written by inference gives the same fractions
    env = np.bincount(phantom.instances.ravel())[labels]
    np.savez(tmp_path / "counts.npz", label=labels, envelope_voxels=env,
             crack_voxels=np.rint(cf * env).astype(np.int64), n_samples=3)
    l3, cf3 = read_particle_samples(tmp_path / "counts.npz")
    np.testing.assert_allclose(cf3, cf, atol=1e-6)
    t = particle_table(phantom.labels, phantom.instances, voxel_size_um=phantom.voxel_size_um,
                       posterior=(l3, cf3))
    assert t["label"].tolist() == l3.tolist()
    np.testing.assert_allclose(t["crack_fraction_mean"], cf3.mean(axis=0))


@pytest.mark.parametrize("chunk", [16, (13, 20, 64)])
def test_block_by_block_table_equals_whole_volume(phantom, chunk):
    """Blocks smaller than the particles: sums across block faces and at the border agree."""
    from crackseg.stats.table_blocks import blocks

    whole = particle_table(phantom.labels, phantom.instances, voxel_size_um=(1.0, 0.4, 0.3),
                           shell_um=0.9, depth_axis=2)
    blocked = particle_table(phantom.labels, phantom.instances, voxel_size_um=(1.0, 0.4, 0.3),
                             shell_um=0.9, depth_axis=2, chunk_size=chunk)
    pd.testing.assert_frame_equal(blocked, whole, check_exact=False, rtol=1e-12)
    assert blocked.attrs == whole.attrs
    # the case is the one meant: particles cut by block faces, some touching the border
    cores = [tuple(slice(r.start + c.start, r.start + c.stop) for r, c in zip(read, core))
             for read, core in blocks(phantom.labels.shape, np.broadcast_to(chunk, (3,)), (0,) * 3)]
    n_blocks = np.zeros(int(phantom.instances.max()) + 1, int)
    for c in cores:
        n_blocks[np.unique(phantom.instances[c])] += 1
    assert (n_blocks[whole["label"]] > 1).sum() > len(whole) // 2
    assert whole["touches_border"].any() and (~whole["touches_border"]).any()


def test_lazy_arrays_are_read_block_by_block(tmp_path, phantom):
    from crackseg.io import read_volume, write_volume

    write_volume(tmp_path / "seg.zarr", phantom.labels, phantom.voxel_size_um, chunks=(16,) * 3)
    write_volume(tmp_path / "inst.zarr", phantom.instances, phantom.voxel_size_um,
                 chunks=(16,) * 3)
    seg, inst = (read_volume(tmp_path / f"{n}.zarr", lazy=True).data for n in ("seg", "inst"))
    lazy = particle_table(seg, inst, voxel_size_um=phantom.voxel_size_um, max_memory_gb=0.0002)
    whole = particle_table(phantom.labels, phantom.instances, voxel_size_um=phantom.voxel_size_um)
    pd.testing.assert_frame_equal(lazy, whole, check_exact=False, rtol=1e-12)


def test_blocks_measured_in_worker_processes_give_the_same_table(phantom):
    whole = particle_table(phantom.labels, phantom.instances, voxel_size_um=phantom.voxel_size_um)
    parallel = particle_table(phantom.labels, phantom.instances,
                              voxel_size_um=phantom.voxel_size_um, chunk_size=24, workers=2)
    pd.testing.assert_frame_equal(parallel, whole, check_exact=False, rtol=1e-12)


def test_block_shape_follows_memory():
    from crackseg.stats.table_blocks import block_shape

    assert block_shape((64, 64, 64)) == (64, 64, 64)
    assert block_shape((64, 64, 64), lazy=True, max_memory_gb=64**3 * 40 / 4e9) == (16, 64, 64)
    assert block_shape((1024, 1024, 1024), max_memory_gb=1.0) == (23, 1024, 1024)
    with pytest.raises(InputError, match="positive"):
        block_shape((8, 8, 8), chunk_size=0)
