# %% [markdown]
# # Damage statistics: distributions, representativeness, comparing electrodes
#
# Cracking in an electrode is heterogeneous and spatially clustered, so the
# damage of a few particles, or of one cross-section, can say almost anything.
# This notebook works on synthetic electrodes whose truth is known:
#
# 1. measure every particle of a phantom from its labels;
# 2. summarise the damage distribution with confidence intervals (spatial block
#    bootstrap vs iid) and compare them with the generator's truth;
# 3. show how far small-sample protocols (one particle, k particles, a cluster,
#    one cross-section) are from the census;
# 4. compare a "pristine" and a "cycled" electrode statistically.
#
# The same functions run on a real segmentation from `crackseg predict`.

# %% tags=["parameters"]
SHAPE = (96, 96, 96)      # phantom size in voxels (use 128^3 or more for real work)
N_RESAMPLES = 500          # bootstrap resamples (2000 by default in `crackseg stats`)
SEED = 3

# %%
import numpy as np
import pandas as pd

from crackseg.stats import compare_samples, particle_table, representativeness, summarize
from crackseg.stats.figures import damage_histogram_figure, representativeness_figure
from crackseg.synthetic import generate_electrode

ph = generate_electrode(SHAPE, seed=SEED, imaging=False)
table = particle_table(ph.labels, ph.instances, voxel_size_um=ph.voxel_size_um)
print(len(table), "particles;", int(table["touches_border"].sum()), "touch the border")
table[["label", "equivalent_diameter_um", "crack_fraction", "pore_fraction",
       "surface_crack_fraction", "internal_crack_fraction", "depth_um"]].head()

# %% [markdown]
# Per-particle `crack_fraction` from the labels is exactly the generator's truth:

# %%
merged = table.merge(ph.truth[["label", "crack_fraction"]], on="label", suffixes=("", "_truth"))
print("largest difference:", float(np.abs(merged.crack_fraction - merged.crack_fraction_truth).max()))

# %% [markdown]
# ## The distribution, with intervals that know about clustering

# %%
block = summarize(table, n_resamples=N_RESAMPLES, seed=SEED, seg=ph.labels, instances=ph.instances)
iid = summarize(table, n_resamples=N_RESAMPLES, seed=SEED, method="iid", spatial=False,
                protocols=False)
for name, s in [("spatial block", block), ("iid", iid)]:
    m = s["damage"]["mean"]
    print(f"{name:14s} mean {m['estimate']:.4f}  CI [{m['ci'][0]:.4f}, {m['ci'][1]:.4f}]")
print("generator's electrode-wide mean:", round(ph.params["true_mean_crack_fraction"], 4))
damage_histogram_figure(block)

# %% [markdown]
# The block interval is wider: particles close together share their damage, so
# they are not independent samples. Even so, an interval from one volume speaks
# for the particles that volume samples; clustering on scales larger than the
# field of view needs several volumes (see `crackseg compare`).
#
# ## How wrong would a small sample have been?

# %%
rep = representativeness(table["crack_fraction"].to_numpy(),
                         table[["centroid_z_um", "centroid_y_um", "centroid_x_um"]].to_numpy(),
                         seg=ph.labels, instances=ph.instances, seed=SEED)
rep.head(12)

# %%
representativeness_figure(block)

# %% [markdown]
# ## Pristine vs cycled
#
# Two phantom "electrodes" that differ only in their damage level, each imaged
# as two volumes; volumes are resampled, then particles (hierarchical bootstrap).

# %%
groups = {}
for cycle, logit in [(0, -4.2), (100, -3.3)]:
    vols = []
    for k in range(2):
        p = generate_electrode(SHAPE, seed=100 * cycle + k + 1, imaging=False,
                               damage_logit_mean=logit)
        t = particle_table(p.labels, p.instances, voxel_size_um=p.voxel_size_um)
        vols.append(t.loc[~t.touches_border, "crack_fraction"].to_numpy())
    groups[cycle] = vols
result = compare_samples(groups, n_resamples=N_RESAMPLES, n_permutations=999, seed=SEED)
c = result["comparisons"]["100"]
print("difference of means", c["difference_of_means"])
print("Cliff's delta", c["cliffs_delta"])
print("Mann-Whitney", c["mann_whitney"])
