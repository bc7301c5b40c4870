"""Released model directories: ``weights.safetensors`` + ``model_card.json`` + ``README.md``.

Loading never unpickles anything: the card is JSON, the network is built from
an allow-listed architecture (:mod:`crackseg.nets`), and the weights are
safetensors whose SHA-256 must match the card.

Examples
--------
>>> import tempfile, os
>>> from crackseg.nets import unet_architecture, build_network
>>> from crackseg.model_io import new_card, save_model, load_model
>>> arch = unet_architecture(3, out_channels=4, channels=(4, 8))
>>> card = new_card("tiny", arch, patch_size=(32, 32, 32))
>>> d = save_model(build_network(arch), card, os.path.join(tempfile.mkdtemp(), "tiny"))
>>> net, card2 = load_model(d)
>>> card2["spatial_dims"], card2["schema"]["name"]
(3, 'nmc4')
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from crackseg._version import __version__
from crackseg.errors import ModelError
from crackseg.io import atomic_path
from crackseg.labels import NMC4, LabelSchema, load_schema
from crackseg.model_readme import model_readme
from crackseg.nets import build_network

FORMAT_VERSION = 1
"""Model card format this version of crackseg writes and reads."""

WEIGHTS = "weights.safetensors"
CARD = "model_card.json"
README = "README.md"

DEFAULT_MODEL_NAME = "nmc4-synthetic-v1"


def default_model_dir() -> Path:
    """Path of the shipped default model (``models/nmc4-synthetic-v1``)."""
    return Path(__file__).resolve().parent.parent / "models" / DEFAULT_MODEL_NAME


def shipped_models() -> dict[str, int]:
    """Shipped model names (under ``models/``) and their ``spatial_dims``, sorted by name."""
    out = {}
    for d in sorted(default_model_dir().parent.glob("*/" + CARD)):
        try:
            out[d.parent.name] = int(json.loads(d.read_text()).get("spatial_dims", 3))
        except (OSError, ValueError, TypeError):
            continue
    return out


def model_hint(spatial_dims: int) -> str:
    """Advice naming the shipped model for ``spatial_dims``-D inputs.

    Examples
    --------
    >>> model_hint(7)
    'use a 7-D model (--model DIR)'
    """
    names = [n for n, d in shipped_models().items() if d == int(spatial_dims)]
    if int(spatial_dims) == 3 and DEFAULT_MODEL_NAME in names:
        names = [DEFAULT_MODEL_NAME]
    if not names:
        return f"use a {spatial_dims}-D model (--model DIR)"
    return f"use the {spatial_dims}-D model: --model {names[0]}"


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """Turn a model argument into a directory: a path, a shipped model name, or the default."""
    if model is None:
        return default_model_dir()
    p = Path(model)
    if p.exists():
        return p
    shipped = default_model_dir().parent / str(model)
    if shipped.exists():
        return shipped
    raise ModelError(f"{model}: no such model directory (give a path or a name under models/)")


def new_card(name: str, architecture: dict, *, schema: LabelSchema | dict | None = None,
             patch_size=None, normalization: dict | None = None, overlap: float = 0.25,
             training: dict | None = None, metrics: dict | None = None,
             parent: dict | None = None, description: str = "") -> dict:
    """A model card dictionary (see DESIGN.md, "Models").

    Parameters
    ----------
    name : str
        Model name (directory name under ``models/``).
    architecture : dict
        From :func:`crackseg.nets.unet_architecture`.
    schema : LabelSchema or dict, optional
        Label schema of the outputs (default ``nmc4``).
    patch_size : sequence of int
        Training patch size; also the default inference window.
    normalization : dict, optional
        Input normalisation, default per-volume 1-99 percentile scaling.
    overlap : float
        Default sliding-window overlap.
    """
    schema = load_schema(schema) if not isinstance(schema, LabelSchema) else schema
    sd = int(architecture["args"]["spatial_dims"])
    patch = [int(p) for p in (patch_size or [96] * sd)]
    return {
        "format_version": FORMAT_VERSION,
        "name": name,
        "description": description,
        "spatial_dims": sd,
        "architecture": architecture,
        "schema": schema.to_dict(),
        "normalization": normalization or {"method": "percentile", "mode": "per_volume",
                                           "percentiles": [1.0, 99.0]},
        "patch_size": patch,
        "inference": {"roi_size": patch, "overlap": float(overlap), "mode": "gaussian"},
        "training": training or {},
        "metrics": metrics or {},
        "parent": parent,
        "crackseg_version": __version__,
    }


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(net, card: dict, out_dir: str | os.PathLike, *, readme: str | None = None,
               overwrite: bool = False) -> Path:
    """Write a model directory atomically.

    Parameters
    ----------
    net : torch.nn.Module
        Network whose ``state_dict`` is saved (as float32 safetensors).
    card : dict
        Model card; ``weights_sha256`` is filled in here.
    out_dir : path-like
        Target directory.
    readme : str, optional
        README text; :func:`crackseg.model_readme.model_readme` of the card
        if not given.
    overwrite : bool
        Replace an existing directory.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    state = {k: v.detach().float().contiguous().cpu() if v.is_floating_point() else v.detach().contiguous().cpu()
             for k, v in net.state_dict().items()}
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.mkdir()
        # One metadata key: safetensors writes several in no fixed order, which would
        # change the file's bytes (and weights_sha256) from one save to the next.
        save_file(state, str(tmp / WEIGHTS), metadata={"format": "pt"})
        os.chmod(tmp / WEIGHTS, 0o644)
        card = {**card, "weights_sha256": file_sha256(tmp / WEIGHTS)}
        (tmp / CARD).write_text(json.dumps(card, indent=2) + "\n")
        (tmp / README).write_text(readme if readme is not None else model_readme(card))
    return out


def read_card(model_dir: str | os.PathLike) -> dict:
    """Read and check a model card without loading weights."""
    d = Path(model_dir)
    if d.is_file():
        if d.suffix in (".ckpt", ".pt", ".pth", ".pkl", ".bin"):
            raise ModelError(
                f"{d}: a pickled checkpoint cannot be loaded safely; export it to a model "
                "directory with `crackseg export`"
            )
        raise ModelError(f"{d}: a model is a directory with {CARD} and {WEIGHTS}")
    if not d.is_dir():
        raise ModelError(f"{d}: no such model directory")
    cp = d / CARD
    if not cp.exists():
        raise ModelError(f"{d}: no {CARD}; not a crackseg model directory")
    try:
        card = json.loads(cp.read_text())
    except json.JSONDecodeError as e:
        raise ModelError(f"{cp}: not valid JSON ({e})") from None
    fv = card.get("format_version")
    if fv != FORMAT_VERSION:
        raise ModelError(
            f"{d}: model card format version {fv!r}; this crackseg reads version {FORMAT_VERSION}"
        )
    for key in ("spatial_dims", "architecture", "schema", "weights_sha256", "normalization"):
        if key not in card:
            raise ModelError(f"{cp}: missing field {key!r}")
    return card


def load_model(model_dir: str | os.PathLike | None = None, *, device: str = "cpu"):
    """Load a model directory safely.

    Parameters
    ----------
    model_dir : path-like or None
        Model directory or shipped model name; ``None`` loads the default.
    device : str
        Torch device to put the network on.

    Returns
    -------
    net : torch.nn.Module
        The network in eval mode.
    card : dict
        Its model card.

    Raises
    ------
    ModelError
        Unknown format version, missing files, weights whose SHA-256 differs
        from the card (tampered), pickled files, or weights that do not fit
        the architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    d = resolve_model_path(model_dir)
    card = read_card(d)
    wp = d / WEIGHTS
    if not wp.exists():
        raise ModelError(f"{d}: no {WEIGHTS}")
    digest = file_sha256(wp)
    if digest != card["weights_sha256"]:
        raise ModelError(
            f"{wp}: SHA-256 {digest[:12]}... does not match the model card "
            f"({str(card['weights_sha256'])[:12]}...); the weights were modified or corrupted"
        )
    net = build_network(card["architecture"])
    try:
        state = load_file(str(wp), device="cpu")
    except (SafetensorError, OSError) as e:
        raise ModelError(f"{wp}: not a valid safetensors file ({e})") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ModelError(f"{wp}: weights do not fit the architecture ({str(e).splitlines()[0]})") from None
    net.eval()
    return net.to(device), card


def card_schema(card: dict) -> LabelSchema:
    """Label schema of a model card."""
    return load_schema(card.get("schema") or NMC4.to_dict())
