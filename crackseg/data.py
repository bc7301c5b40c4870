"""Training data from sparsely annotated volumes: reading, patch sampling, augmentation.

A training example is a grey-value volume (ZYX) or image (YX) with a label
image of the same shape in which unannotated voxels hold the schema's ignore
value (255).  Labels are turned into channel indices with ``-1`` for
unannotated voxels (:func:`labels_to_index`); patches are drawn only around
annotated voxels, with rare classes oversampled (MONAI
``RandCropByLabelClassesd``), then augmented with MONAI transforms.

Data come from a manifest of image/label pairs (:func:`read_manifest`), from
annotated slices held out of the training volumes (:func:`holdout_slices`),
or from phantoms generated on the fly (:func:`synthetic_pairs`).

Examples
--------
>>> import numpy as np
>>> from crackseg.data import labels_to_index, PatchDataset
>>> img = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
>>> lab = np.full((32, 32, 32), 255, np.uint8)
>>> lab[8] = (img[8] > 0).astype(np.uint8)          # one annotated z-slice
>>> ds = PatchDataset([(img, labels_to_index(lab))], patch_size=(16, 16, 16),
...                   n_classes=4, length=4, seed=0)
>>> x, y = ds[0]
>>> tuple(x.shape), bool((y >= 0).any())
((1, 16, 16, 16), True)
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from crackseg.errors import InputError
from crackseg.labels import LabelSchema, load_schema, validate_labels
from crackseg.losses import IGNORE_INDEX
from crackseg.normalize import normalize_image

# ---------------------------------------------------------------- labels


def labels_to_index(labels, schema: LabelSchema | None = None) -> np.ndarray:
    """Channel index per voxel (int16, ``-1`` = not annotated).

    Parameters
    ----------
    labels : array_like of int, shape (Z, Y, X) or (Y, X)
        Stored label values of ``schema`` (ignore value for unannotated).
    schema : LabelSchema, optional
        Default ``nmc4``.
    """
    schema = load_schema(schema)
    lut = schema.index_lut()
    return lut[np.asarray(labels).astype(np.uint8, copy=False)]


def class_counts(index: np.ndarray, n_classes: int) -> np.ndarray:
    """Annotated voxels per class of an index array (from :func:`labels_to_index`)."""
    v = index[index >= 0]
    return np.bincount(v.ravel().astype(np.int64), minlength=n_classes)[:n_classes]


def holdout_slices(index: np.ndarray, fraction: float = 0.2, *, axis: int = 0,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split the annotated slices of one axis into training and validation labels.

    Parameters
    ----------
    index : numpy.ndarray of int, shape (Z, Y, X) or (Y, X)
        Channel indices, ``-1`` = not annotated.
    fraction : float
        Fraction of the annotated slices (at least one) kept for validation.
    axis : int
        Axis whose slices are split (0 = z).
    seed : int
        Seed of the random choice.

    Returns
    -------
    train, val : numpy.ndarray
        Copies of ``index``: the held-out slices are ``-1`` in ``train`` and
        are the only annotated voxels of ``val``.
    """
    other = tuple(a for a in range(index.ndim) if a != axis)
    annotated = np.flatnonzero((index >= 0).any(axis=other))
    if len(annotated) < 2:
        raise InputError(
            f"need at least two annotated slices along axis {axis} to hold some out for validation"
        )
    n_val = max(1, int(round(fraction * len(annotated))))
    chosen = np.random.default_rng(seed).choice(annotated, size=n_val, replace=False)
    sel = [slice(None)] * index.ndim
    sel[axis] = chosen
    val = np.full_like(index, IGNORE_INDEX)
    val[tuple(sel)] = index[tuple(sel)]
    train = index.copy()
    train[tuple(sel)] = IGNORE_INDEX
    return train, val


def annotated_slices(image: np.ndarray, index: np.ndarray, axes: Sequence[int] = (0, 1)):
    """2-D (image, index) pairs of every slice with annotations along the given axes.

    Parameters
    ----------
    image, index : numpy.ndarray, shape (Z, Y, X)
        Volume and its channel indices (``-1`` = not annotated).
    axes : sequence of int
        Axes to slice along (0 = z gives YX slices, 1 = y gives ZX slices).

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        2-D image and index arrays.
    """
    out = []
    for axis in axes:
        other = tuple(a for a in range(3) if a != axis)
        for i in np.flatnonzero((index >= 0).any(axis=other)):
            out.append((np.take(image, i, axis=axis), np.take(index, i, axis=axis)))
    return out


# ---------------------------------------------------------------- reading


def read_manifest(path: str | Path) -> dict[str, list[tuple[Path, Path]]]:
    """Image/label pairs listed in a YAML or CSV manifest.

    YAML::

        train:
          - {image: a.tif, labels: a_labels.tif}
        val:
          - {image: b.tif, labels: b_labels.tif}

    (a plain list means all pairs are for training).  CSV: columns ``image``,
    ``labels`` and optionally ``split`` (``train``/``val``).  Relative paths
    are relative to the manifest's folder.

    Returns
    -------
    dict
        ``{"train": [(image, labels), ...], "val": [...]}``.

    Raises
    ------
    InputError
        Unreadable manifest, missing columns, or files that do not exist.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: manifest not found")
    base = p.parent
    splits: dict[str, list] = {"train": [], "val": []}
    try:
        if p.suffix.lower() == ".csv":
            with open(p, newline="") as f:
                rows = list(csv.DictReader(f))
            for r in rows:
                splits.setdefault((r.get("split") or "train").strip(), []).append(r)
        else:
            doc = yaml.safe_load(p.read_text())
            if isinstance(doc, list):
                splits["train"] = doc
            elif isinstance(doc, dict):
                for k, v in doc.items():
                    splits[str(k)] = list(v or [])
            else:
                raise InputError(f"{p}: a manifest lists image/labels pairs (see the docs)")
    except (yaml.YAMLError, csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read manifest ({str(e).splitlines()[0]})") from None
    out = {}
    for split, rows in splits.items():
        if split not in ("train", "val"):
            raise InputError(f"{p}: unknown split {split!r} (use train or val)")
        pairs = []
        for i, r in enumerate(rows):
            if not isinstance(r, dict) or "image" not in r or "labels" not in r:
                raise InputError(f"{p}: entry {i + 1} of {split!r} needs 'image' and 'labels'")
            ip, lp = (base / str(r["image"]).strip(), base / str(r["labels"]).strip())
            for q in (ip, lp):
                if not q.exists():
                    raise InputError(f"{p}: {q} (entry {i + 1} of {split!r}) does not exist")
            pairs.append((ip, lp))
        out[split] = pairs
    if not out.get("train"):
        raise InputError(f"{p}: no training pairs listed")
    return out


def load_pair(image_path, labels_path, schema: LabelSchema | None = None, *,
              spatial_dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one image/label pair.

    Parameters
    ----------
    image_path, labels_path : path-like
        Grey-value image and label image (any format of :func:`crackseg.io.read_volume`).
    schema : LabelSchema, optional
        Schema of the labels (default ``nmc4``).
    spatial_dims : {2, 3}, optional
        Required dimensionality of the image, if any.

    Returns
    -------
    image : numpy.ndarray, float32
        Raw grey values (ZYX or YX).
    index : numpy.ndarray, int16
        Channel indices, ``-1`` = not annotated.

    Raises
    ------
    InputError
        Shape mismatch, label values outside the schema, no annotated voxels.
    """
    from crackseg.io import check_same_shape, read_volume

    schema = load_schema(schema)
    img = read_volume(image_path)
    lab = read_volume(labels_path)
    check_same_shape(img.shape, lab.shape, img.source, lab.source)
    if spatial_dims == 3 and img.ndim != 3:
        raise InputError(f"{img.source}: a 3-D model needs a volume (Z, Y, X), got shape {img.shape}")
    return np.asarray(img.data, dtype=np.float32), checked_index(lab.data, schema, source=lab.source)


def checked_index(labels, schema: LabelSchema, *, source: str = "labels") -> np.ndarray:
    """Validate labels against a schema and return channel indices; error if none annotated."""
    validate_labels(labels, schema, source=source)
    index = labels_to_index(labels, schema)
    if not (index >= 0).any():
        raise InputError(f"{source}: no annotated voxels (every voxel is {schema.ignore}); "
                         "annotate some slices first")
    return index


def synthetic_pairs(n_volumes: int, shape: Sequence[int] = (96, 96, 96), *, seed: int = 0,
                    sparse_every: int | None = 12, sparse_axes: Sequence[int] = (0, 1),
                    **phantom_kwargs) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Phantom electrodes from :mod:`crackseg.synthetic` as training pairs.

    Parameters
    ----------
    n_volumes : int
        Number of phantoms; phantom ``i`` uses seed ``seed + i``.
    shape : sequence of int
        Volume shape (Z, Y, X).
    seed : int
        First seed.
    sparse_every : int or None
        Keep every n-th slice along ``sparse_axes`` annotated (``None``: all voxels).
    sparse_axes : sequence of int
        Axes of the annotated slices.
    **phantom_kwargs
        Passed to :func:`crackseg.synthetic.generate_electrode` (``snr``,
        ``blur_sigma``, ``voxel_size_um``, ...).

    Returns
    -------
    list of (image, sparse labels, full labels)
        Raw grey values and uint8 label volumes (nmc4, 255 = unannotated).
    """
    from crackseg.synthetic import generate_electrode, sparse_labels

    out = []
    for i in range(int(n_volumes)):
        ph = generate_electrode(tuple(int(s) for s in shape), seed=int(seed) + i, **phantom_kwargs)
        labels = np.asarray(ph.labels, dtype=np.uint8)
        sparse = (labels if not sparse_every else
                  sparse_labels(labels, every=int(sparse_every), axes=tuple(sparse_axes),
                                seed=int(seed) + i))
        out.append((np.asarray(ph.image, dtype=np.float32), sparse, labels))
    return out


# ---------------------------------------------------------------- patches


def pad_to(image: np.ndarray, index: np.ndarray, size: Sequence[int]):
    """Pad an image (reflect) and its indices (``-1``) to at least ``size`` per axis."""
    pads = [(0, max(0, int(s) - n)) for s, n in zip(size, image.shape)]
    if not any(p[1] for p in pads):
        return image, index
    mode = "reflect" if all(n > p[1] for n, p in zip(image.shape, pads)) else "edge"
    return (np.pad(image, pads, mode=mode),
            np.pad(index, pads, mode="constant", constant_values=IGNORE_INDEX))


def augmentations(spatial_dims: int, *, rotate_axes: Sequence[int] | None = None):
    """MONAI augmentations for an ``{"image", "label"}`` patch.

    Flips on every axis, 90-degree rotations in the isotropic plane (the last
    two axes, YX), intensity scale/shift/gamma, Gaussian noise and blur.
    """
    from monai.transforms import (
        RandAdjustContrastd,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandRotate90d,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ["image", "label"]
    rot = tuple(rotate_axes) if rotate_axes is not None else (spatial_dims - 2, spatial_dims - 1)
    t = [RandFlipd(keys, prob=0.5, spatial_axis=a) for a in range(spatial_dims)]
    t += [
        RandRotate90d(keys, prob=0.5, max_k=3, spatial_axes=rot),
        RandScaleIntensityd("image", factors=0.15, prob=0.5),
        RandShiftIntensityd("image", offsets=0.1, prob=0.5),
        RandAdjustContrastd("image", gamma=(0.75, 1.35), prob=0.3),
        RandGaussianNoised("image", prob=0.3, std=0.05),
        RandGaussianSmoothd("image", sigma_x=(0.3, 1.0), sigma_y=(0.3, 1.0), sigma_z=(0.3, 1.0),
                            prob=0.2),
    ]
    return t


class PatchDataset(torch.utils.data.Dataset):
    """Random patches centred on annotated voxels, rare classes oversampled.

    Item ``i`` is reproducible: its random state is derived from
    ``(seed, epoch, i)``, whatever the number of data-loader workers.

    Parameters
    ----------
    items : list of (image, index)
        Normalised images (float32, ZYX or YX) and channel indices (``-1`` =
        not annotated), all of the same dimensionality.
    patch_size : sequence of int
        Patch shape (same dimensionality as the items).
    n_classes : int
        Number of classes.
    length : int
        Number of patches per epoch.
    class_ratios : sequence of float, optional
        Relative chance that a patch is centred on each class (default equal,
        which oversamples rare classes); classes absent from an item are
        skipped.
    augment : bool
        Apply :func:`augmentations`.
    seed : int
        Seed of the sampling and augmentation.

    Returns (per item)
    ------------------
    image : torch.Tensor, float32, shape (1, *patch_size)
    index : torch.Tensor, int64, shape (1, *patch_size), ``-1`` = not annotated
    """

    def __init__(self, items, patch_size, n_classes: int, *, length: int = 100,
                 class_ratios=None, augment: bool = True, seed: int = 0):
        from monai.transforms import ClassesToIndices, Compose, RandCropByLabelClassesd

        self.patch_size = tuple(int(p) for p in patch_size)
        self.n_classes = int(n_classes)
        self.length = int(length)
        self.seed = int(seed)
        self.epoch = 0
        ratios = list(class_ratios) if class_ratios is not None else [1.0] * self.n_classes
        if len(ratios) != self.n_classes:
            raise InputError(f"class_ratios has {len(ratios)} values for {self.n_classes} classes")
        self.items = []
        self.indices = []
        self.ratios = []
        to_idx = ClassesToIndices(num_classes=self.n_classes)
        for image, index in items:
            if image.ndim != len(self.patch_size):
                raise InputError(f"patch size {self.patch_size} does not fit an image of shape "
                                 f"{image.shape}")
            image, index = pad_to(image, index, self.patch_size)
            if not (index >= 0).any():
                continue
            lab = torch.from_numpy(np.ascontiguousarray(index))[None]
            self.items.append((torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None],
                               lab))
            self.indices.append(to_idx(lab))
            counts = class_counts(index, self.n_classes)
            self.ratios.append([r if c > 0 else 0.0 for r, c in zip(ratios, counts)])
        if not self.items:
            raise InputError("no annotated voxels in the training data")
        self.crop = RandCropByLabelClassesd(
            ["image", "label"], label_key="label", spatial_size=self.patch_size,
            num_classes=self.n_classes, num_samples=1, indices_key="label_cls_indices",
            warn=False)
        aug = augmentations(len(self.patch_size)) if augment else []
        self.augment = Compose(aug) if aug else None

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches in the next epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        rng = np.random.default_rng([self.seed, self.epoch, int(i)])
        k = int(rng.integers(len(self.items)))
        image, label = self.items[k]
        self.crop.cropper.ratios = self.ratios[k]
        self.crop.set_random_state(seed=int(rng.integers(2**31)))
        d = self.crop({"image": image, "label": label,
                       "label_cls_indices": self.indices[k]})[0]
        if self.augment is not None:
            self.augment.set_random_state(seed=int(rng.integers(2**31)))
            d = self.augment({"image": d["image"], "label": d["label"]})
        x = torch.as_tensor(np.asarray(d["image"]), dtype=torch.float32)
        y = torch.as_tensor(np.asarray(d["label"]), dtype=torch.int64)
        return x, y


def fixed_patches(items, patch_size, n_classes: int, n: int, *, seed: int = 0,
                  class_ratios=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, reproducible set of un-augmented patches (for validation)."""
    ds = PatchDataset(items, patch_size, n_classes, length=n, class_ratios=class_ratios,
                      augment=False, seed=seed)
    return [ds[i] for i in range(n)]


def normalized_items(pairs, normalization: dict, *, spatial_dims: int,
                     slice_axes: Sequence[int] = (0, 1)):
    """Normalise (image, index) pairs and, for a 2-D model, cut volumes into annotated slices."""
    out = []
    for image, index in pairs:
        img = normalize_image(image, normalization)
        if spatial_dims == 2 and img.ndim == 3:
            out.extend(annotated_slices(img, index, axes=slice_axes))
        elif img.ndim != spatial_dims:
            raise InputError(f"a {spatial_dims}-D model cannot train on an image of shape {img.shape}")
        else:
            out.append((img, index))
    return out
