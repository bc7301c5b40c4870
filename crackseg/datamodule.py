"""Lightning data module: sparse-slice training data from a manifest, files or phantoms.

Examples
--------
A recipe's ``data:`` section (``crackseg train fit -c recipe.yaml``)::

    data:
      synthetic: {n_volumes: 6, n_val: 1, shape: [96, 96, 96], seed: 0, sparse_every: 12}
      patch_size: [64, 64, 64]
      batch_size: 2

or ``manifest: pairs.yaml`` listing image/label pairs (see
:func:`crackseg.data.read_manifest`).
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch

from crackseg.data import (
    PatchDataset,
    checked_index,
    class_counts,
    fixed_patches,
    holdout_slices,
    load_pair,
    normalized_items,
    read_manifest,
    synthetic_pairs,
)
from crackseg.errors import InputError
from crackseg.io import json_safe
from crackseg.labels import load_schema
from crackseg.normalize import fit_normalization

#: Keys of ``randomized`` that hold a (low, high) range, and their smallest allowed value.
RANDOMIZED_RANGES = {"voxel_size_um": 1e-9, "intact_fraction": 0.0, "asphericity": 0.0,
                     "roughness": 0.0, "surface_noise_vox": 0.0}

#: Keys of ``randomized`` that may be given.
RANDOMIZED_KEYS = {"n_volumes", "n_val", "shape", "seed", "appearance", "focus_probability",
                   "intact_volume_probability", *RANDOMIZED_RANGES}


def check_randomized(spec: dict) -> None:
    """Raise :class:`InputError` (one line) for an unknown key or a malformed range of ``spec``.

    Examples
    --------
    >>> check_randomized({"roughness": [0.05, 0.3]})
    >>> check_randomized({"surface_noise_vox": 2.0})
    Traceback (most recent call last):
    ...
    crackseg.errors.InputError: randomized.surface_noise_vox is 2.0; give a range [low, high] with 0 <= low <= high, e.g. [2.0, 2.0] for a fixed value
    """
    unknown = sorted(set(spec) - RANDOMIZED_KEYS)
    if unknown:
        raise InputError(f"randomized: unknown key{'s' * (len(unknown) > 1)} "
                         f"{', '.join(unknown)}; known: {', '.join(sorted(RANDOMIZED_KEYS))}")
    for key, floor in RANDOMIZED_RANGES.items():
        if key not in spec:
            continue
        v = spec[key]
        ok = isinstance(v, (list, tuple)) and len(v) == 2 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        if not ok or not floor <= v[0] <= v[1]:
            fixed = f", e.g. [{v}, {v}] for a fixed value" if isinstance(v, (int, float)) else ""
            raise InputError(f"randomized.{key} is {v!r}; give a range [low, high] with "
                             f"{floor:g} <= low <= high{fixed}")


class SparseSliceDataModule(pl.LightningDataModule):
    """Training and validation patches from sparsely annotated images.

    Parameters
    ----------
    manifest : str, optional
        YAML/CSV manifest of image/label pairs (train and optionally val).
    images, labels : list of str, optional
        Image/label pairs given directly (all for training).
    randomized : dict, optional
        Domain-randomised phantoms instead: dense label maps at random scales
        (:func:`crackseg.synthetic.pool.label_pool`: ``n_volumes``,
        ``n_val``, ``shape``, ``seed``, ``voxel_size_um``, ``intact_fraction``,
        ``intact_volume_probability``, ``asphericity``, ``roughness``,
        ``surface_noise_vox``) rendered afresh for
        every patch under random imaging (``appearance``: overrides of
        :class:`crackseg.synthetic.randomize.AppearanceRanges`), with
        ``focus_probability`` of centring a patch near a crack or pore.
    synthetic : dict, optional
        Generate phantoms instead: ``n_volumes`` (training), ``n_val``
        (validation, fully labelled unless ``val_sparse``), ``shape``,
        ``seed``, ``sparse_every`` (default 12), ``sparse_axes`` (default
        [0, 1]) and ``phantom`` (extra arguments of
        :func:`crackseg.synthetic.generate_electrode`).
    schema : str or dict
        Label schema (name, YAML path or dict).
    spatial_dims : {2, 3}
        3 trains on volume patches; 2 on slices (annotated slices along
        ``slice_axes`` of volumes, or 2-D images).
    patch_size : list of int
        Patch shape (Z, Y, X) or (Y, X).
    batch_size : int
        Patches per step.
    samples_per_epoch : int
        Patches drawn per epoch.
    val_patches : int
        Fixed validation patches.
    val_fraction : float
        Without validation data: fraction of annotated z-slices (or of 2-D
        images) held out for validation; 0 disables validation.
    class_ratios : list of float, optional
        Relative chance of a patch centred on each class (default equal).
    augment : bool
        MONAI augmentations on training patches.
    percentiles : list of float
        Normalisation percentiles.
    slice_axes : list of int
        Slicing axes for 2-D training on volumes.
    num_workers : int
        Data-loader worker processes.
    seed : int
        Seed of patch sampling, augmentation and hold-out choice.
    """

    def __init__(self, manifest: str | None = None, images: list[str] | None = None,
                 labels: list[str] | None = None, synthetic: dict | None = None,
                 randomized: dict | None = None,
                 schema: str | dict = "nmc4", spatial_dims: int = 3,
                 patch_size: list[int] = (64, 64, 64), batch_size: int = 2,
                 samples_per_epoch: int = 200, val_patches: int = 16, val_fraction: float = 0.2,
                 class_ratios: list[float] | None = None, augment: bool = True,
                 percentiles: list[float] = (1.0, 99.0), slice_axes: list[int] = (0, 1),
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        if sum(x is not None for x in (manifest, images, synthetic, randomized)) != 1:
            raise InputError("give exactly one data source: manifest, images/labels, synthetic "
                             "or randomized")
        if images is not None and (labels is None or len(images) != len(labels)):
            raise InputError("give one labels file per image")
        if len(patch_size) != spatial_dims:
            raise InputError(f"patch_size {list(patch_size)} does not have {spatial_dims} axes")
        self.manifest, self.images, self.labels = manifest, images, labels
        self.synthetic = dict(synthetic) if synthetic is not None else None
        self.randomized = dict(randomized) if randomized is not None else None
        if self.randomized is not None:
            check_randomized(self.randomized)
        self.schema = load_schema(schema)
        self.spatial_dims = int(spatial_dims)
        self.patch_size = [int(p) for p in patch_size]
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.samples_per_epoch, self.val_patches = int(samples_per_epoch), int(val_patches)
        self.val_fraction = float(val_fraction)
        self.class_ratios = class_ratios
        self.augment = bool(augment)
        self.percentiles = [float(p) for p in percentiles]
        self.slice_axes = [int(a) for a in slice_axes]
        self.normalization = None
        self.training_domain: dict | None = None
        self.provenance: dict = {}
        self.train_set = None
        self.val_set: list = []

    # ------------------------------------------------------------ loading

    def load_raw(self):
        """Raw training and validation pairs ``[(image, index)]`` (checked; errors before training)."""
        n = self.schema.num_classes
        prov: dict = {"schema": self.schema.name}
        if self.synthetic is not None:
            spec = {"n_volumes": 4, "n_val": 1, "shape": [96, 96, 96], "seed": 0,
                    "sparse_every": 12, "sparse_axes": [0, 1], "val_sparse": False,
                    "phantom": {}, **self.synthetic}
            kw = dict(shape=spec["shape"], sparse_every=spec["sparse_every"],
                      sparse_axes=spec["sparse_axes"], **(spec["phantom"] or {}))
            train = [(im, checked_index(sp, self.schema, source=f"phantom {i}"))
                     for i, (im, sp, _) in enumerate(
                         synthetic_pairs(spec["n_volumes"], seed=spec["seed"], **kw))]
            vseed = int(spec["seed"]) + int(spec["n_volumes"])
            val = [(im, checked_index(sp if spec["val_sparse"] else full, self.schema))
                   for im, sp, full in synthetic_pairs(spec["n_val"], seed=vseed, **kw)]
            prov.update(source="synthetic", synthetic=spec,
                        train_seeds=list(range(int(spec["seed"]), vseed)),
                        val_seeds=list(range(vseed, vseed + int(spec["n_val"]))))
        else:
            if self.manifest is not None:
                pairs = read_manifest(self.manifest)
                prov.update(source="manifest", manifest=str(Path(self.manifest).resolve()))
            else:
                pairs = {"train": [(Path(i), Path(lb)) for i, lb in zip(self.images, self.labels)],
                         "val": []}
                prov.update(source="files")
            for split in ("train", "val"):
                prov[f"{split}_files"] = [[str(a), str(b)] for a, b in pairs.get(split, [])]
            train = [load_pair(a, b, self.schema, spatial_dims=None if self.spatial_dims == 2 else 3)
                     for a, b in pairs["train"]]
            val = [load_pair(a, b, self.schema) for a, b in pairs.get("val", [])]
            if not val and self.val_fraction > 0:
                train, val = self._hold_out(train)
                prov["validation"] = f"held-out annotated slices (fraction {self.val_fraction})"
        counts = sum(class_counts(idx, n) for _, idx in train)
        prov["annotated_voxels_per_class"] = dict(zip(self.schema.names, map(int, counts)))
        return train, val, prov

    def _hold_out(self, train):
        if self.spatial_dims == 2 and all(im.ndim == 2 for im, _ in train) and len(train) > 1:
            k = max(1, int(round(self.val_fraction * len(train))))
            return train[:-k], train[-k:]
        out_t, out_v = [], []
        for i, (im, idx) in enumerate(train):
            t, v = holdout_slices(idx, self.val_fraction, axis=0, seed=self.seed + i)
            out_t.append((im, t))
            out_v.append((im, v))
        return out_t, out_v

    def _setup_randomized(self):
        from crackseg.normalize import DEFAULT_NORMALIZATION
        from crackseg.randomized_data import RandomizedPatchDataset, training_domain
        from crackseg.synthetic.pool import label_pool
        from crackseg.synthetic.randomize import AppearanceRanges

        spec = {"n_volumes": 8, "n_val": 1, "shape": [96, 96, 96], "seed": 0,
                "voxel_size_um": [0.16, 0.6], "appearance": {}, "focus_probability": 0.5,
                "intact_fraction": [0.0, 0.0], "intact_volume_probability": 0.0,
                "asphericity": [0.15, 0.15], "roughness": [0.08, 0.08],
                "surface_noise_vox": [0.0, 0.0], **self.randomized}
        ranges = AppearanceRanges.from_dict(spec["appearance"])
        kw = dict(shape=spec["shape"], voxel_size_um=spec["voxel_size_um"], progress=True,
                  intact_fraction=spec["intact_fraction"],
                  intact_volume_probability=spec["intact_volume_probability"],
                  asphericity=spec["asphericity"], roughness=spec["roughness"],
                  surface_noise_vox=spec["surface_noise_vox"])
        train = label_pool(spec["n_volumes"], seed=spec["seed"], **kw)
        # validation members always hold damage, so crack and pore Dice are measurable
        val = label_pool(spec["n_val"], seed=int(spec["seed"]) + 100_000,
                         **{**kw, "intact_volume_probability": 0.0})
        dims = dict(slice_axes=self.slice_axes, focus_probability=spec["focus_probability"])
        self.train_set = RandomizedPatchDataset(train, self.patch_size, ranges=ranges,
                                                length=self.samples_per_epoch, seed=self.seed,
                                                **dims)
        vset = RandomizedPatchDataset(val, self.patch_size, ranges=ranges,
                                      length=self.val_patches, seed=self.seed + 10_000, **dims)
        self.val_set = [vset[i] for i in range(self.val_patches)]
        self.normalization = {**DEFAULT_NORMALIZATION,
                              "percentiles": [float(p) for p in self.percentiles]}
        self.training_domain = training_domain(train, ranges, seed=self.seed)
        diam = [m["diameter_vox"] for m in train if m["diameter_vox"] == m["diameter_vox"]]
        self.provenance = {
            "schema": self.schema.name, "source": "randomized phantoms",
            "randomized": json_safe(spec), "appearance_ranges": ranges.to_dict(),
            "pool_voxel_size_um": [m["voxel_size_um"] for m in train],
            "particle_diameter_vox": {"median_per_volume": diam,
                                      "range": [float(min(diam)), float(max(diam))] if diam
                                      else None},
            "train_seeds": [int(spec["seed"]) + i for i in range(int(spec["n_volumes"]))],
            "val_seeds": [int(spec["seed"]) + 100_000 + i for i in range(int(spec["n_val"]))],
            "n_val_patches": len(self.val_set), "patch_size": self.patch_size,
            "seed": self.seed, "labels": "dense (every voxel)"}

    def setup(self, stage: str | None = None):
        if self.train_set is not None:
            return
        if self.randomized is not None:
            self._setup_randomized()
            return
        train, val, self.provenance = self.load_raw()
        self.normalization = fit_normalization([im for im, _ in train], self.percentiles)
        kw = dict(spatial_dims=self.spatial_dims, slice_axes=self.slice_axes)
        t_items = normalized_items(train, self.normalization, **kw)
        n = self.schema.num_classes
        self.train_set = PatchDataset(t_items, self.patch_size, n, length=self.samples_per_epoch,
                                      class_ratios=self.class_ratios, augment=self.augment,
                                      seed=self.seed)
        self.val_set = []
        if val and self.val_patches > 0:
            v_items = normalized_items(val, self.normalization, **kw)
            v_items = [(im, idx) for im, idx in v_items if (idx >= 0).any()]
            if v_items:
                self.val_set = fixed_patches(v_items, self.patch_size, n, self.val_patches,
                                             seed=self.seed + 10_000)
        self.provenance.update(n_train_items=len(t_items), n_val_patches=len(self.val_set),
                               patch_size=self.patch_size, seed=self.seed,
                               normalization_fitted_on=len(train))

    def set_epoch(self, epoch: int) -> None:
        if self.train_set is not None:
            self.train_set.set_epoch(epoch)

    # ------------------------------------------------------------ loaders

    def train_dataloader(self):
        g = torch.Generator().manual_seed(self.seed)
        return torch.utils.data.DataLoader(self.train_set, batch_size=self.batch_size,
                                           shuffle=True, generator=g, num_workers=self.num_workers,
                                           drop_last=len(self.train_set) >= self.batch_size)

    def val_dataloader(self):
        if not self.val_set:
            return []
        return torch.utils.data.DataLoader(self.val_set, batch_size=self.batch_size,
                                           shuffle=False, num_workers=0)

    def card_info(self) -> dict:
        """Normalisation, patch size and provenance for a model card."""
        return {"normalization": self.normalization, "patch_size": self.patch_size,
                "provenance": json_safe(self.provenance),
                "training_domain": json_safe(self.training_domain)}

