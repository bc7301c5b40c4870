"""Volume I/O: round trips with voxel size, lazy reading, atomic writes, bad input."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from crackseg.errors import InputError
from crackseg.io import (
    atomic_path,
    check_same_shape,
    count_nonfinite,
    read_volume,
    split_dataset_path,
    write_volume,
)

DATA = Path(__file__).resolve().parents[1] / "data"
"""Real example data that travels with the project (data/README.md)."""
VS = (0.5, 0.25, 0.125)


def _volume(dtype, shape=(6, 7, 8), seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random(shape) * 200
    return a.astype(dtype)


ROUND_TRIPS = [
    ("v.tif", np.uint8), ("v.tif", np.uint16), ("v.tif", np.float32), ("v.tif", np.uint32),
    ("v.ome.tif", np.uint16), ("v.ome.tif", np.float32),
    ("v.zarr", np.uint16), ("v.zarr", np.float32),
    ("v.h5:/exchange/data", np.uint16), ("v.hdf5:/data", np.float32),
    ("v.npy", np.int16), ("v.npy", np.float64),
]


@pytest.mark.parametrize("name,dtype", ROUND_TRIPS)
@pytest.mark.parametrize("lazy", [False, True])
def test_round_trip_keeps_data_dtype_voxel_size(tmp_path, name, dtype, lazy):
    a = _volume(dtype)
    write_volume(tmp_path / name if ":" not in name else f"{tmp_path}/{name}", a, VS)
    img = read_volume(f"{tmp_path}/{name}", lazy=lazy)
    b = np.asarray(img.data[...])
    assert b.dtype == a.dtype
    np.testing.assert_array_equal(a, b)
    assert img.voxel_size_um == pytest.approx(VS)
    assert img.axes == "ZYX"


@pytest.mark.parametrize("name", ["i.tif", "i.ome.tif", "i.zarr", "i.npy"])
def test_2d_round_trip(tmp_path, name):
    a = _volume(np.uint16, (9, 11))
    write_volume(tmp_path / name, a, (0.3, 0.2))
    img = read_volume(tmp_path / name)
    np.testing.assert_array_equal(img.data, a)
    assert img.axes == "YX"
    assert img.voxel_size_um == pytest.approx((0.3, 0.2))


def test_imagej_voxel_size_in_nanometres_is_converted(tmp_path):
    a = _volume(np.uint8)
    p = tmp_path / "nm.tif"
    tifffile.imwrite(p, a, imagej=True, resolution=(1 / 50.0, 1 / 50.0),
                     metadata={"spacing": 100.0, "unit": "nm", "axes": "ZYX"})
    assert read_volume(p).voxel_size_um == pytest.approx((0.1, 0.05, 0.05))


def test_default_72_dpi_is_not_a_voxel_size():
    img = read_volume(DATA / "nmc_matbox_labels.tif", lazy=True)
    assert img.voxel_size_um is None
    assert img.shape == (128, 192, 192)


def test_lazy_uncompressed_tiff_is_memory_mapped(tmp_path):
    a = _volume(np.uint16, (20, 30, 40))
    p = tmp_path / "raw.tif"
    write_volume(p, a, VS, compression=None)
    img = read_volume(p, lazy=True)
    assert isinstance(img.data, np.memmap)
    np.testing.assert_array_equal(img.data[5:7, 3:9, 10:20], a[5:7, 3:9, 10:20])


def test_folder_of_slices_sorted_numerically(tmp_path):
    a = _volume(np.uint16, (12, 5, 6))
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(a.shape[0]):  # slice_2 must come before slice_10
        tifffile.imwrite(folder / f"slice_{i}.tif", a[i], imagej=True,
                         resolution=(1 / 0.4, 1 / 0.4), metadata={"unit": "um"})
    for lazy in (False, True):
        img = read_volume(folder, lazy=lazy)
        np.testing.assert_array_equal(np.asarray(img.data[...]), a)
        assert img.voxel_size_um == pytest.approx((0.4, 0.4, 0.4))


def test_ome_zarr_written_by_others_reads_scale(tmp_path):
    import zarr

    root = zarr.open_group(str(tmp_path / "ext.zarr"), mode="w", zarr_format=3)
    root.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "z", "type": "space", "unit": "nanometer"},
                 {"name": "y", "type": "space", "unit": "nanometer"},
                 {"name": "x", "type": "space", "unit": "nanometer"}],
        "datasets": [{"path": "s0", "coordinateTransformations": [
            {"type": "scale", "scale": [200.0, 100.0, 100.0]}]},
            {"path": "s1", "coordinateTransformations": [
                {"type": "scale", "scale": [400.0, 200.0, 200.0]}]}]}]}
    root.create_array("s0", data=_volume(np.uint8, (4, 8, 8)))
    root.create_array("s1", data=_volume(np.uint8, (2, 4, 4)))
    img = read_volume(tmp_path / "ext.zarr")
    assert img.shape == (4, 8, 8)
    assert img.voxel_size_um == pytest.approx((0.2, 0.1, 0.1))


def test_hdf5_dataset_path_parsing():
    assert split_dataset_path("a/scan.h5:/exchange/data") == (Path("a/scan.h5"), "/exchange/data")
    assert split_dataset_path("scan.tif") == (Path("scan.tif"), None)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.tif"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path):
    a = _volume(np.uint8)
    write_volume(tmp_path / "a.tif", a)
    with pytest.raises(InputError, match="already exists.*--overwrite"):
        write_volume(tmp_path / "a.tif", a)
    write_volume(tmp_path / "a.tif", a + 1, overwrite=True)
    np.testing.assert_array_equal(read_volume(tmp_path / "a.tif").data, a + 1)


# ---------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_volume(tmp_path / "nope.tif")


def test_truncated_tiff(tmp_path):
    p = tmp_path / "t.tif"
    write_volume(p, _volume(np.uint16, (8, 32, 32)), compression=None)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError, match="t.tif"):
        np.asarray(read_volume(p).data)


def test_not_a_tiff(tmp_path):
    p = tmp_path / "junk.tif"
    p.write_bytes(b"this is not a tiff file at all" * 10)
    with pytest.raises(InputError, match="junk.tif: cannot read"):
        read_volume(p)


def test_unsupported_dtype(tmp_path):
    p = tmp_path / "c.npy"
    np.save(p, np.zeros((4, 4, 4), dtype=np.complex64))
    with pytest.raises(InputError, match="unsupported data type complex64"):
        read_volume(p)


def test_one_d_array(tmp_path):
    p = tmp_path / "line.npy"
    np.save(p, np.zeros(10, dtype=np.float32))
    with pytest.raises(InputError, match="1-D array"):
        read_volume(p)


def test_four_d_needs_channel(tmp_path):
    p = tmp_path / "multi.npy"
    a = _volume(np.uint16, (3, 6, 7, 8))
    np.save(p, a)
    with pytest.raises(InputError, match="save one channel") as e:
        read_volume(p)
    assert "--channel N" in str(e.value)  # the option that reads it
    img = read_volume(p, channel=1)
    np.testing.assert_array_equal(img.data, a[1])


def test_channel_axis_declared_by_the_tiff(tmp_path):
    rgb = _volume(np.uint8, (20, 24, 3))
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    # A 3-D RGB image is not a stack of 20 sections 24 x 3 pixels wide.
    with pytest.raises(InputError, match="3 channels .*--channel N"):
        read_volume(tmp_path / "rgb.tif")
    np.testing.assert_array_equal(read_volume(tmp_path / "rgb.tif", channel=2).data, rgb[..., 2])
    stack = _volume(np.uint16, (4, 2, 10, 12))   # ImageJ hyperstack Z, C, Y, X
    tifffile.imwrite(tmp_path / "zcyx.tif", stack, imagej=True, metadata={"axes": "ZCYX"})
    img = read_volume(tmp_path / "zcyx.tif", channel=1, lazy=True)
    np.testing.assert_array_equal(np.asarray(img.data[...]), stack[:, 1])
    with pytest.raises(InputError, match="out of range 0..1"):
        read_volume(tmp_path / "zcyx.tif", channel=2)


def test_singleton_axes_are_dropped(tmp_path):
    p = tmp_path / "s.npy"
    a = _volume(np.uint8, (1, 6, 7, 8))
    np.save(p, a)
    assert read_volume(p).shape == (6, 7, 8)


def test_nan_inf_reported_and_replaced(tmp_path):
    a = _volume(np.float32)
    a[0, 0, 0] = np.nan
    a[1, 2, 3] = np.inf
    p = tmp_path / "nan.tif"
    write_volume(p, a)
    with pytest.raises(InputError, match="2 NaN/Inf voxels.*--nan-policy replace"):
        read_volume(p)
    img = read_volume(p, nan_policy="replace")
    assert img.metadata["nonfinite"] == 2
    assert np.isfinite(img.data).all()
    assert count_nonfinite(read_volume(p, lazy=True).data) == 2


def test_label_shape_mismatch_message():
    with pytest.raises(InputError, match=r"label shape \(4, 5\) differs from image img.tif shape \(4, 6\)"):
        check_same_shape((4, 6), (4, 5), "img.tif", "lab.tif")


def test_unknown_suffix(tmp_path):
    p = tmp_path / "scan.raw"
    p.write_bytes(b"\0" * 64)
    with pytest.raises(InputError, match="unknown file type"):
        read_volume(p)


def test_real_segmentpy_slices_read():
    img = read_volume(DATA / "segmentpy" / "100.tif")  # big-endian float32, as published
    lab = read_volume(DATA / "segmentpy" / "100_label.tif")
    assert img.axes == "YX" and img.dtype == np.float32 and img.data.dtype.isnative
    check_same_shape(img.shape, lab.shape, img.source, lab.source)


def _corrupt_strip_tiff(path, shape=(6, 32, 32)):
    """A zlib TIFF whose file is complete but whose fourth page's strip is garbage."""
    write_volume(path, _volume(np.uint16, shape), VS, compression="zlib")
    with tifffile.TiffFile(path) as t:
        off, n = t.pages[3].dataoffsets[0], t.pages[3].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[off:off + n] = b"\xff" * n
    path.write_bytes(bytes(raw))
    return path


def test_corrupt_strip_read_lazily_is_one_input_error(tmp_path):
    p = _corrupt_strip_tiff(tmp_path / "bad.tif")
    img = read_volume(p, lazy=True)  # opening reads no pixel data
    np.asarray(img.data[0])  # intact pages still read
    with pytest.raises(InputError, match="bad.tif: cannot read tiff.*truncated or corrupt"):
        img.data[2:5]
    with pytest.raises(InputError, match="bad.tif"):
        read_volume(p)


@pytest.mark.parametrize("order", [">", "<"])
@pytest.mark.parametrize("lazy", [False, True])
def test_any_byte_order_is_read_as_native(tmp_path, order, lazy):
    a = _volume(np.float32, (4, 5, 6)).astype(f"{order}f4")
    p = tmp_path / "be.tif"
    tifffile.imwrite(p, a, byteorder=order)
    img = read_volume(p, lazy=lazy)
    block = np.asarray(img.data[1:3])
    assert block.dtype == np.float32 and block.dtype.isnative
    np.testing.assert_array_equal(block, a[1:3].astype(np.float32))
    n = tmp_path / "be.npy"
    np.save(n, a)
    np.testing.assert_array_equal(np.asarray(read_volume(n, lazy=lazy).data[...]), a)


def test_unknown_voxel_size_is_not_written_as_micrometres(tmp_path):
    for shape in ((4, 5, 6), (5, 6)):
        p = tmp_path / f"novs{len(shape)}.tif"
        write_volume(p, np.zeros(shape, np.uint8))
        with tifffile.TiffFile(p) as t:
            assert (t.imagej_metadata or {}).get("unit") is None
        assert read_volume(p).voxel_size_um is None
