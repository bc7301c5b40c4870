"""Where the chunk outputs of one prediction go, and which chunks are finished.

Without a folder, outputs are NumPy arrays in memory.  With one, each output
(``labels``, ``entropy``, ``crack_bits``, ``pore_bits``) is a Zarr store in
it, chunked like the core chunks, and ``progress.json`` lists the finished
chunks with a fingerprint of the settings and input
(:func:`settings_fingerprint`); a later run with the same fingerprint skips
those chunks, so an interrupted prediction resumes bit for bit.

Examples
--------
>>> store = ChunkStore((4, 4), None, (2, 2), n_samples=1, uncertainty=False, workdir=None,
...                    fingerprint="", resume=False, meta={})
>>> sorted(store.arrays), store.arrays["labels"].dtype, store.done
(['labels'], dtype('uint8'), set())
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from crackseg.io import write_json
from crackseg.uncertainty import SAMPLE_CLASSES, bits_dtype


def sink_path(workdir, name: str) -> Path:
    """Level-0 Zarr array of output ``name`` (labels, entropy, ...) in ``workdir``."""
    return Path(workdir) / f"{name}.zarr" / "0"


def settings_fingerprint(d: dict) -> str:
    """SHA-256 of a JSON-able record of settings (keys sorted)."""
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def input_identity(volume) -> dict:
    """Path, dataset, size and modification time of an input file (``{"path": None}`` for arrays)."""
    if isinstance(volume, (str, os.PathLike)):
        from crackseg.io import split_dataset_path

        p, ds = split_dataset_path(volume)
        try:
            st = p.stat()
            return {"path": str(p.resolve()), "dataset": ds, "size": st.st_size,
                    "mtime": st.st_mtime}
        except OSError:
            return {"path": str(volume)}
    return {"path": None}


def output_dtypes(n_samples: int, uncertainty: bool) -> dict:
    """Output name -> dtype of a prediction (labels; entropy and sample bits with uncertainty)."""
    names = {"labels": np.dtype(np.uint8)}
    if uncertainty:
        names["entropy"] = np.dtype(np.float16)
        for c in SAMPLE_CLASSES:
            names[f"{c}_bits"] = bits_dtype(n_samples)
    return names


class ChunkStore:
    """Output arrays of one prediction: NumPy in memory or Zarr stores on disk.

    Parameters
    ----------
    shape : tuple of int
        Volume shape (ZYX or YX), voxels.
    vs : tuple of float or None
        Voxel size (µm), written into the Zarr metadata.
    core_chunk : sequence of int
        Core chunk size (voxels): the Zarr chunking.
    n_samples : int
    uncertainty : bool
        Keep entropy and per-sample bits as well as labels.
    workdir : path-like or None
        Folder of the Zarr stores and ``progress.json`` (``None``: in memory).
    fingerprint : str
        Of the settings and input (:func:`settings_fingerprint`).
    resume : bool
        Keep the finished chunks of a run with the same fingerprint.
    meta : dict
        Metadata of new Zarr stores.

    Attributes
    ----------
    arrays : dict
        Output name -> array of ``shape``.
    done : set of int
        Indices of the finished chunks.
    """

    def __init__(self, shape, vs, core_chunk, *, n_samples, uncertainty, workdir, fingerprint,
                 resume, meta):
        self.workdir = Path(workdir) if workdir is not None else None
        self.fingerprint = fingerprint
        self.done: set[int] = set()
        names = output_dtypes(n_samples, uncertainty)
        if self.workdir is None:
            self.arrays = {k: np.zeros(shape, dt) for k, dt in names.items()}
            return
        state = self._saved_state() if resume else None
        if state is not None and state.get("fingerprint") == fingerprint:
            import zarr

            self.done = set(int(i) for i in state.get("done", []))
            self.arrays = {k: zarr.open_array(str(sink_path(self.workdir, k)), mode="r+")
                           for k in names}
        else:
            from crackseg.io import create_zarr_volume

            self.workdir.mkdir(parents=True, exist_ok=True)
            self.arrays = {k: create_zarr_volume(self.workdir / f"{k}.zarr", shape, dt, vs,
                                                 chunks=tuple(core_chunk), metadata=meta)
                           for k, dt in names.items()}
            self._save_progress()

    def _saved_state(self) -> dict | None:
        prog = self.workdir / "progress.json"
        if not prog.exists():
            return None
        try:
            return json.loads(prog.read_text())
        except (json.JSONDecodeError, OSError):
            return None

    def _save_progress(self):
        write_json(self.workdir / "progress.json",
                   {"fingerprint": self.fingerprint, "done": sorted(self.done)})

    def write(self, chunk, outputs: dict):
        """Write a chunk's outputs into its core and record it as finished."""
        for k, v in outputs.items():
            self.arrays[k][chunk.core] = v
        self.mark_done(chunk.index)

    def mark_done(self, index: int):
        """Record chunk ``index`` as finished (its core is written)."""
        self.done.add(index)
        if self.workdir is not None:
            self._save_progress()
