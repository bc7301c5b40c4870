"""Segmentation networks, built from the architecture a model card records.

Only architectures listed in :data:`ARCHITECTURES` can be built, so a model
card cannot make the loader construct arbitrary objects.

Examples
--------
>>> from crackseg.nets import unet_architecture, build_network
>>> arch = unet_architecture(spatial_dims=3, out_channels=4, channels=(4, 8), dropout=0.1)
>>> net = build_network(arch)
>>> import torch
>>> net(torch.zeros(1, 1, 16, 16, 16)).shape
torch.Size([1, 4, 16, 16, 16])
"""

from __future__ import annotations

from crackseg.errors import ModelError


def _monai_unet(**kwargs):
    from monai.networks.nets import UNet

    kw = dict(kwargs)
    kw["channels"] = tuple(kw["channels"])
    kw["strides"] = tuple(kw["strides"])
    if isinstance(kw.get("norm"), list):
        kw["norm"] = tuple(kw["norm"])
    return UNet(**kw)


ARCHITECTURES = {"monai.UNet": _monai_unet}
"""Architecture names a model card may use, mapped to their constructors."""


def unet_architecture(spatial_dims: int = 3, *, in_channels: int = 1, out_channels: int = 4,
                      channels=(16, 32, 64, 128), strides=None, num_res_units: int = 2,
                      dropout: float = 0.0, norm: str = "batch") -> dict:
    """Architecture record of a MONAI U-Net (full-resolution output).

    Parameters
    ----------
    spatial_dims : {2, 3}
        2 for slice images (YX), 3 for volumes (ZYX).
    in_channels, out_channels : int
        Input channels (1 for grey values) and classes of the label schema.
    channels : sequence of int
        Feature width per level; its length sets the depth.
    strides : sequence of int, optional
        Downsampling per level transition (default 2 each).
    num_res_units : int
        Residual units per block.
    dropout : float
        Dropout probability (needed for MC-dropout uncertainty).
    norm : str
        Normalisation layer name understood by MONAI (``"batch"``, ``"instance"``).

    Returns
    -------
    dict
        ``{"name": "monai.UNet", "args": {...}}`` as stored in a model card.
    """
    if spatial_dims not in (2, 3):
        raise ModelError(f"spatial_dims must be 2 or 3, not {spatial_dims}")
    channels = [int(c) for c in channels]
    if len(channels) < 2:
        raise ModelError("a U-Net needs at least two levels (channels)")
    strides = [2] * (len(channels) - 1) if strides is None else [int(s) for s in strides]
    return {
        "name": "monai.UNet",
        "args": {
            "spatial_dims": int(spatial_dims), "in_channels": int(in_channels),
            "out_channels": int(out_channels), "channels": channels, "strides": strides,
            "num_res_units": int(num_res_units), "dropout": float(dropout), "norm": norm,
        },
    }


def build_network(architecture: dict):
    """Build an untrained network from an architecture record.

    Raises
    ------
    ModelError
        If the architecture is unknown or its arguments are invalid.
    """
    name = architecture.get("name") if isinstance(architecture, dict) else None
    if name not in ARCHITECTURES:
        raise ModelError(
            f"unknown architecture {name!r}; this version of crackseg builds: {', '.join(ARCHITECTURES)}"
        )
    try:
        return ARCHITECTURES[name](**architecture.get("args", {}))
    except (TypeError, ValueError, AssertionError) as e:
        raise ModelError(f"cannot build {name} with {architecture.get('args')}: {e}") from None


def receptive_halo(architecture: dict) -> int:
    """Voxels of context on each side that one output voxel depends on (exact).

    The reach of the network's convolutions along one axis, counted layer by
    layer through the MONAI U-Net (strided and transposed convolutions,
    residual units, skip connections) and maximised over the output
    positions within one downsampling period.  Outside this many voxels the
    input does not change the output, so a window whose centre keeps this
    much context on every side gives the whole-volume forward pass's scores
    there, provided the window sits on the downsampling grid (its origin a
    multiple of the product of the strides).  Instance normalisation is not
    local: its statistics are those of the window (see :mod:`crackseg.tiling`).

    Parameters
    ----------
    architecture : dict
        Architecture record (:func:`unet_architecture`).

    Returns
    -------
    int
        Voxels (pixels for 2-D models) per side; the same on every axis.

    Examples
    --------
    >>> receptive_halo(unet_architecture(3, channels=(8, 16, 32, 64), num_res_units=1))
    29
    >>> receptive_halo(unet_architecture(3, channels=(4, 8), num_res_units=0))
    4
    """
    args = architecture["args"]
    strides = [int(s) for s in (args.get("strides") or [2] * (len(args["channels"]) - 1))]
    n_res = int(args.get("num_res_units", 0))
    k, uk = int(args.get("kernel_size", 3)), int(args.get("up_kernel_size", 3))
    period = 1
    for s in strides:
        period *= s
    reach = 0
    for o in range(period):
        lo, hi = _unet_input_span(o, o, strides, n_res, k, uk)
        reach = max(reach, o - lo, hi - o)
    return reach


def _unet_input_span(lo: int, hi: int, strides, n_res: int, k: int, uk: int) -> tuple[int, int]:
    """Input positions ``[lo', hi']`` that outputs ``[lo, hi]`` of one U-Net level depend on.

    One axis, in voxels of the level's input; ``strides`` are this level's
    and the deeper levels' (empty: the bottom layer).  A level is a down
    layer (residual unit whose first convolution has the stride), the deeper
    levels on a skip connection, and an up layer (transposed convolution,
    then one residual unit).
    """
    r, ur = (k - 1) // 2, (uk - 1) // 2
    if not strides:
        n = max(1, n_res)
        return lo - n * r, hi + n * r
    s = strides[0]
    if n_res > 0:
        lo, hi = lo - r, hi + r
    # transposed convolution: output o takes input i where i * s - ur + j = o, 0 <= j < uk
    lo, hi = -((-(lo + ur - (uk - 1))) // s), (hi + ur) // s
    lo, hi = _unet_input_span(lo, hi, strides[1:], n_res, k, uk)
    extra = max(0, n_res - 1) * r
    return (lo - extra) * s - r, (hi + extra) * s + r
