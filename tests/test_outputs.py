import numpy as np
import zarr

from crackseg.io import create_zarr_volume
from crackseg.outputs import write_image


def test_write_image_copies_into_slab_chunks(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 4, size=(96, 40, 48), dtype=np.uint8)
    src = create_zarr_volume(tmp_path / "src.zarr", data.shape, data.dtype, (0.5,) * 3,
                             chunks=(64, 64, 64))
    src[...] = data
    path = write_image(tmp_path / "out.zarr", src, (0.5,) * 3, "zarr", overwrite=False,
                       meta={"crackseg": "test"})
    out = zarr.open_array(str(path / "0"), mode="r")
    assert out.chunks == (32, 64, 64)   # thin along axis 0, aligned with the source's chunks
    assert np.array_equal(out[...], data)


def test_write_image_keeps_2d_chunks(tmp_path):
    data = np.arange(50 * 60, dtype=np.uint8).reshape(50, 60)
    src = create_zarr_volume(tmp_path / "src.zarr", data.shape, data.dtype, None, chunks=(32, 32))
    src[...] = data
    out = zarr.open_array(str(write_image(tmp_path / "o.zarr", src, None, "zarr",
                                          overwrite=False, meta={}) / "0"), mode="r")
    assert out.chunks == (32, 32) and np.array_equal(out[...], data)
