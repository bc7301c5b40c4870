import numpy as np
import pytest
from scipy import ndimage as ndi
from skimage.morphology import h_maxima as skimage_h_maxima
from skimage.morphology import reconstruction

from crackseg.extrema import h_maxima, reconstruction_by_dilation
from crackseg.particle_blocks import distance_map, envelope_mask
from crackseg.synthetic import generate_electrode


def _smooth_field(rng, shape, dtype):
    a = ndi.gaussian_filter(rng.random(shape) * 10, rng.uniform(0.5, 3)).astype(dtype)
    return np.round(a, 1) if rng.random() < 0.3 else a  # plateaus too


@pytest.mark.parametrize("seed", range(6))
def test_h_maxima_equals_scikit_image_on_random_fields(seed):
    rng = np.random.default_rng(seed)
    for _ in range(8):
        shape = tuple(int(n) for n in rng.integers(3, 24, size=rng.integers(2, 4)))
        a = _smooth_field(rng, shape, rng.choice([np.float32, np.float64]))
        h = float(rng.choice([0.05, 0.5, 1.0, 2.0]))
        assert np.array_equal(h_maxima(a, h), skimage_h_maxima(a, h))


def test_h_maxima_equals_scikit_image_on_a_phantom_distance_map():
    seg = generate_electrode((48, 48, 48), seed=3, voxel_size_um=0.3).labels
    env = envelope_mask(seg)
    dist = ndi.gaussian_filter(distance_map(env, None), 1.0, output=np.float32)
    dist[~env] = 0
    sub = dist[::2, ::2, ::2]
    out = h_maxima(sub, 0.5)
    assert out.any()
    assert np.array_equal(out, skimage_h_maxima(sub, 0.5))


def test_reconstruction_handed_over_when_values_travel_far():
    # a long ramp: values travel the whole row, one voxel per sweep
    mask = np.tile(np.linspace(0, 1, 200, dtype=np.float32), (3, 1))
    marker = np.full_like(mask, -1.0)
    marker[:, -1] = 1.0
    expected = reconstruction(marker, mask)
    for budget in (0.5, 3, 1000):
        got = reconstruction_by_dilation(marker, mask, sweep_budget=budget)
        assert got.dtype == mask.dtype
        assert np.array_equal(got, expected)


def test_h_maxima_of_integers_and_flat_images_as_scikit_image():
    ints = np.array([[0, 3, 0, 1, 2, 0]], np.uint8)
    assert np.array_equal(h_maxima(ints, 2), skimage_h_maxima(ints, 2))
    flat = np.ones((4, 4), np.float32)
    assert not h_maxima(flat, 0.5).any()
