# %% [markdown]
# # Fine-tune on a new material with a few annotated slices
#
# A new electrode, beamline or label set rarely matches the shipped model.
# This notebook adapts the shipped 2-D model to real nano-CT slices of an NMC
# cathode (SegmentPy data, see `../shared/data/README.md`) that come with
# their own 3-class labels: particle / carbon-binder / pore. The output layer
# is re-initialised for the new schema; everything else is kept.
#
# From the command line the same is:
#
# ```bash
# crackseg finetune --model models/nmc4-synthetic-2d-v1 --schema segmentpy3.yaml \
#     --image 1.tif --labels 1_label.tif --image 100.tif --labels 100_label.tif \
#     --max-minutes 10 -o models/segmentpy-nmc
# ```

# %% tags=["parameters"]
MAX_STEPS = 40          # a few hundred for real use (--max-minutes bounds the time)
TRAIN = ["1", "100"]    # annotated slices used for training
TEST = ["200", "300"]   # held-out slices
SEED = 0

# %%
from pathlib import Path

import numpy as np

import crackseg
from crackseg.figures import orthoslices_figure
from crackseg.io import read_volume
from crackseg.labels import schema_from_dict
from crackseg.model_io import default_model_dir
from crackseg.training import evaluate_model, finetune_model

DATA = Path(crackseg.__file__).resolve().parents[2] / "shared" / "data" / "segmentpy"
assert DATA.exists(), f"point DATA at the SegmentPy slices (not found at {DATA})"
schema = schema_from_dict({"name": "segmentpy3",
                           "classes": {"particle": 0, "binder": 1, "pore": 2}})
parent = default_model_dir().parent / "nmc4-synthetic-2d-v1"
work = Path("finetune_work")
work.mkdir(exist_ok=True)

# %%
new_model = finetune_model(
    parent, [DATA / f"{s}.tif" for s in TRAIN], [DATA / f"{s}_label.tif" for s in TRAIN],
    work / "segmentpy-nmc", schema=schema.to_dict(), max_steps=MAX_STEPS, seed=SEED,
    run_dir=work / "runs", overwrite=True, quiet=True)
print("new model:", new_model)

# %%
test = [(read_volume(DATA / f"{s}.tif").data, read_volume(DATA / f"{s}_label.tif").data)
        for s in TEST]
scores = evaluate_model(new_model, test)
print("per-class Dice on held-out slices:", scores["dice"])

# %%
net, card = crackseg.load_model(new_model)
print("parent recorded in the card:", card["parent"])
pred = crackseg.predict_volume((net, card), test[0][0], progress=False)
orthoslices_figure(test[0][0], pred.labels, schema=schema)
