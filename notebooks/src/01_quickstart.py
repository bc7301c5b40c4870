# %% [markdown]
# # Quick start: segment a tomogram and read the numbers
#
# This notebook runs the shipped 3-D model on a small synthetic electrode,
# separates the particles, measures their damage, and summarises the
# distribution. Replace `image` with your own volume
# (`crackseg.io.read_volume("scan.tif")`) to do the same on real data.

# %% tags=["parameters"]
SHAPE = (64, 96, 96)    # a small phantom keeps this notebook fast on a laptop
SEED = 2

# %%
from crackseg import load_model, predict_volume
from crackseg.figures import orthoslices_figure, particle_damage_figure
from crackseg.particles import particle_instances
from crackseg.stats import particle_table, summarize
from crackseg.synthetic import generate_electrode

ph = generate_electrode(SHAPE, seed=SEED)
image, voxel_size = ph.image, ph.voxel_size_um
net, card = load_model()            # the default shipped model
print(card["name"], card["schema"]["classes"], "voxel size", voxel_size, "µm")

# %%
pred = predict_volume((net, card), image, voxel_size_um=voxel_size, progress=False)
seg = pred.labels
orthoslices_figure(image, seg, voxel_size_um=voxel_size)

# %% [markdown]
# Per-class Dice against the phantom's truth (all voxels):

# %%
import numpy as np

for name, v in card["schema"]["classes"].items():
    a, b = seg == v, ph.labels == v
    print(f"{name:9s} Dice {2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()):.3f}")

# %%
instances = particle_instances(seg, voxel_size_um=voxel_size)
table = particle_table(seg, instances, voxel_size_um=voxel_size)
summary = summarize(table, n_resamples=500, seed=SEED, seg=seg, instances=instances)
m = summary["damage"]["mean"]
print(f"{summary['n_particles']} particles; mean crack_fraction {m['estimate']:.4f} "
      f"CI [{m['ci'][0]:.4f}, {m['ci'][1]:.4f}] ({m['method']})")
particle_damage_figure(instances, table["label"], table["crack_fraction"])

# %%
table.sort_values("crack_fraction", ascending=False).head()
