"""Writing a phantom to a folder.

Examples
--------
>>> import tempfile, os
>>> from crackseg.synthetic import generate_electrode, write_phantom
>>> ph = generate_electrode((24, 24, 24), seed=0)
>>> files = write_phantom(ph, os.path.join(tempfile.mkdtemp(), "ph"), sparse_every=6)
>>> sorted(files)
['image', 'instances', 'labels', 'labels_sparse', 'params', 'truth']
"""

from __future__ import annotations

import os
from pathlib import Path

from crackseg.errors import InputError
from crackseg.io import atomic_path, write_json, write_text, write_volume
from crackseg.synthetic.generate import Phantom
from crackseg.synthetic.sparse import sparse_labels

FILES = {
    "image": "image.tif",
    "labels": "labels.tif",
    "labels_sparse": "labels_sparse.tif",
    "instances": "instances.tif",
    "truth": "truth.csv",
    "params": "params.json",
}


def write_phantom(phantom: Phantom, out_dir, *, sparse_every: int = 12, sparse_axes=(0, 1),
                  sparse_offset=None, overwrite: bool = False) -> dict[str, Path]:
    """Write a phantom's volumes, truth table and parameters into a folder.

    The folder is written under a temporary name and renamed when complete,
    so an interrupted run leaves nothing that looks finished.

    Parameters
    ----------
    phantom : Phantom
        Output of :func:`crackseg.synthetic.generate_electrode`.
    out_dir : path-like
        Folder to create; an existing non-empty folder is an error unless
        ``overwrite``.
    sparse_every : int
        Annotate every ``sparse_every``-th slice in ``labels_sparse.tif``.
    sparse_axes : sequence of int
        Axes of the annotated slices.
    sparse_offset : int, optional
        First annotated slice; ``None`` draws it from the phantom's seed.
    overwrite : bool
        Replace an existing folder.

    Returns
    -------
    dict of str to pathlib.Path
        ``image`` (ImageJ TIFF with voxel size; absent without an image),
        ``labels``, ``labels_sparse``, ``instances``, ``truth`` (CSV),
        ``params`` (JSON).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out}: folder exists and is not empty; pass --overwrite to replace it")
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    seed = phantom.params.get("seed", 0)
    sparse = sparse_labels(phantom.labels, every=sparse_every, axes=sparse_axes,
                           offset=sparse_offset, seed=seed)
    params = dict(phantom.params)
    params["sparse_labels"] = {"every": int(sparse_every), "axes": [int(a) for a in sparse_axes],
                               "offset": sparse_offset, "seed": seed, "ignore": 255}
    vs = phantom.voxel_size_um
    meta = {"crackseg_version": params.get("crackseg_version"), "seed": seed,
            "generator": params.get("generator")}
    written = {}
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir(parents=True)
        volumes = {"image": phantom.image, "labels": phantom.labels,
                   "labels_sparse": sparse, "instances": phantom.instances}
        for key, data in volumes.items():
            if data is None:
                continue
            write_volume(tmp / FILES[key], data, vs, metadata={**meta, "content": key})
            written[key] = out / FILES[key]
        write_text(tmp / FILES["truth"], phantom.truth.to_csv(index=False))
        written["truth"] = out / FILES["truth"]
        write_json(tmp / FILES["params"], params)
        written["params"] = out / FILES["params"]
    return written


def describe_files(files: dict[str, Path]) -> str:
    """One line per written file, for the command line."""
    return os.linesep.join(f"  {k:14s} {p}" for k, p in files.items())
