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
    """Voxels of context each side that a window's centre depends on (upper bound).

    Used to size halos for tiled inference.
    """
    args = architecture["args"]
    levels = len(args["channels"])
    strides = list(args.get("strides") or [2] * (levels - 1)) + [1]
    res = max(1, int(args.get("num_res_units", 0)))
    # Each level applies ~ (res units x 2 convs) of 3x3x3 at its own scale, down and up;
    # a level's scale is the product of the strides before it.
    halo, scale = 0, 1
    for s in strides:
        scale *= int(s)
        halo += 2 * (2 * res) * scale
    return halo
