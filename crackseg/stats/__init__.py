"""Statistics of particle damage: per-particle table, distributions with honest
confidence intervals, spatial heterogeneity, representativeness of small
samples, and comparisons between samples.

Examples
--------
>>> from crackseg.stats import particle_table, summarize     # doctest: +SKIP
>>> table = particle_table(seg, instances, voxel_size_um=(0.5, 0.5, 0.5))  # doctest: +SKIP
>>> summary = summarize(table)                                # doctest: +SKIP
>>> summary["damage"]["mean"]["ci"]                           # doctest: +SKIP
[0.051, 0.069]
"""

from crackseg.stats.bootstrap import (
    Interval,
    bootstrap_ci,
    bootstrap_columns,
    bootstrap_many,
    spatial_blocks,
)
from crackseg.stats.compare import cliffs_delta, compare_samples, read_manifest
from crackseg.stats.distribution import distribution_statistics, population
from crackseg.stats.representativeness import particles_needed, representativeness
from crackseg.stats.slices import (
    section_crack_fractions,
    section_measures,
    section_particle_means,
)
from crackseg.stats.spatial import (
    correlation_length,
    depth_profile,
    hot_spots,
    morans_i,
    variogram,
)
from crackseg.stats.summary import summarize
from crackseg.stats.table import (
    particle_table,
    posterior_crack_fractions,
    read_particle_samples,
    section_stack_table,
    write_particle_samples,
)

__all__ = [
    "Interval", "bootstrap_ci", "bootstrap_columns", "bootstrap_many", "spatial_blocks",
    "cliffs_delta",
    "compare_samples", "read_manifest", "distribution_statistics", "population",
    "particles_needed", "representativeness", "section_crack_fractions", "section_measures",
    "section_particle_means",
    "correlation_length",
    "depth_profile", "hot_spots", "morans_i", "variogram", "summarize", "particle_table",
    "section_stack_table", "posterior_crack_fractions", "read_particle_samples", "write_particle_samples",
]
