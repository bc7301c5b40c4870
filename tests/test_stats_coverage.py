"""Coverage of the default interval for the mean damage: a small seeded Monte Carlo.

``benchmarks/calibration.py`` measures coverage on 50 phantoms per row; this
is its fast guard in the suite.  Each volume is a damage point pattern
(:func:`crackseg.synthetic.points.damage_points`: the phantoms' damage law,
clustered by a latent field, without voxels) whose superpopulation mean is
known, and its interval is made as ``crackseg stats`` makes it: blocks of
twice the fitted correlation length, widened for covariance across block
faces out to the fitted model's range.  The seeds are fixed, so the counts
are exact; a change that makes the intervals too narrow fails here.
"""

import numpy as np
import pytest

from crackseg.stats.bootstrap import bootstrap_ci
from crackseg.stats.spatial import correlation_length
from crackseg.stats.summary import block_size_for
from crackseg.synthetic.points import damage_points

SIDE = 170.0
N_PARTICLES = 600
N_VOLUMES = 40


def _covered(seed: int, kernel: str, length: float) -> tuple[bool, bool]:
    """Whether the default and the iid interval of one volume contain the true mean."""
    (vol,), truth = damage_points(N_PARTICLES, (SIDE,) * 3, seed=seed, kernel=kernel,
                                  correlation_length_um=length)
    values, xyz = vol
    fitted, fit, _ = correlation_length(values, xyz, seed=seed)
    size, _ = block_size_for(fitted, (SIDE,) * 3)
    ci = bootstrap_ci(values, "mean", coords=xyz, block_size_um=size, extent=(SIDE,) * 3,
                      n_resamples=499, seed=seed, cross_block_range=fit["correlation_range"]).ci
    iid = bootstrap_ci(values, "mean", method="iid", n_resamples=499, seed=seed).ci
    return ci[0] <= truth <= ci[1], iid[0] <= truth <= iid[1]


@pytest.mark.parametrize("kernel, length", [("squared_exponential", 20.0), ("exponential", 10.0)])
def test_default_interval_covers_the_true_mean(kernel, length):
    hits = np.array([_covered(1000 + s, kernel, length) for s in range(N_VOLUMES)])
    default, iid = hits.mean(axis=0)
    # nominal 95 %: 34 of 40 or fewer would happen with probability 1.4 % if it held
    assert default >= 0.875, f"coverage of the default interval fell to {default:.3f}"
    assert iid < default  # the check can see intervals that ignore the clustering
