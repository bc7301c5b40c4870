"""The notebooks in notebooks/ execute from top to bottom."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from crackseg.model_io import default_model_dir

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
NEEDS_MODEL = {"01_quickstart.ipynb": default_model_dir(),
               "02_finetune_new_material.ipynb": default_model_dir().parent / "nmc4-synthetic-2d-v1"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path):
    model = NEEDS_MODEL.get(path.name)
    if model is not None and not (model / "model_card.json").exists():
        pytest.skip(f"{model.name} not present")
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {"01_quickstart.ipynb", "03_statistics.ipynb"} <= names
