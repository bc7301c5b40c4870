"""Label schemas: which value in a label image means which material.

The default schema ``nmc4`` (see DESIGN.md) is::

    0 matrix, 1 particle, 2 crack, 3 pore, 255 ignore (not annotated)

Other materials bring their own schema as data (a YAML file or a dict), never
as a code change.  Class names ``particle``, ``crack`` and ``pore`` are what the
per-particle statistics look for.

Examples
--------
>>> from crackseg.labels import NMC4, schema_from_dict
>>> NMC4.value("crack")
2
>>> s = schema_from_dict({"name": "cathode3", "classes": {"particle": 0, "binder": 1, "pore": 2}})
>>> s.num_classes, s.ignore
(3, 255)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from crackseg.errors import CracksegError, InputError

IGNORE = 255
"""Label value of voxels that were not annotated."""


@dataclass(frozen=True)
class LabelSchema:
    """Names and stored values of the classes of a label image.

    Parameters
    ----------
    name : str
        Free text identifying the schema.
    classes : dict of str to int
        Class name -> value as stored in label images (0..254).  The order of
        the dict is the order of the network's output channels.
    ignore : int
        Value of unannotated voxels; they contribute nothing to losses or
        metrics.
    """

    name: str
    classes: dict[str, int] = field(hash=False)
    ignore: int = IGNORE

    def __post_init__(self):
        if not self.classes:
            raise CracksegError(f"label schema {self.name!r} has no classes")
        values = list(self.classes.values())
        for cname, v in self.classes.items():
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v <= 254:
                raise CracksegError(
                    f"label schema {self.name!r}: class {cname!r} has value {v!r}; "
                    "values must be integers 0..254"
                )
        if len(set(values)) != len(values):
            raise CracksegError(f"label schema {self.name!r}: two classes share one value")
        if self.ignore in values:
            raise CracksegError(
                f"label schema {self.name!r}: ignore value {self.ignore} is also a class value"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes (network output channels)."""
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        """Class names in channel order."""
        return list(self.classes)

    @property
    def values(self) -> list[int]:
        """Stored label values in channel order."""
        return list(self.classes.values())

    def value(self, name: str) -> int:
        """Stored label value of class ``name``."""
        try:
            return self.classes[name]
        except KeyError:
            raise CracksegError(
                f"label schema {self.name!r} has no class {name!r} (has {', '.join(self.classes)})"
            ) from None

    def has(self, name: str) -> bool:
        """Whether the schema has a class called ``name``."""
        return name in self.classes

    def to_dict(self) -> dict:
        """Plain-data form, as stored in a model card or YAML file."""
        return {"name": self.name, "classes": dict(self.classes), "ignore": self.ignore}

    def index_lut(self) -> np.ndarray:
        """Lookup table mapping stored values (0..255) to channel indices.

        Values that belong to no class, and the ignore value, map to ``-1``.
        """
        lut = np.full(256, -1, dtype=np.int16)
        for i, v in enumerate(self.values):
            lut[v] = i
        return lut

    def values_lut(self) -> np.ndarray:
        """Array mapping channel index -> stored label value (uint8)."""
        return np.asarray(self.values, dtype=np.uint8)


NMC4 = LabelSchema(
    name="nmc4",
    classes={"matrix": 0, "particle": 1, "crack": 2, "pore": 3},
    ignore=IGNORE,
)
"""Default schema of DESIGN.md: matrix, particle, crack, pore."""

BUILTIN_SCHEMAS = {"nmc4": NMC4}


def schema_from_dict(d: dict) -> LabelSchema:
    """Build a :class:`LabelSchema` from its plain-data form.

    Parameters
    ----------
    d : dict
        ``{"name": str, "classes": {name: value}, "ignore": int (optional)}``.
    """
    if not isinstance(d, dict) or not isinstance(d.get("classes"), dict):
        raise CracksegError("a label schema needs a 'classes' mapping of name: value")
    classes = {str(k): v for k, v in d["classes"].items()}
    return LabelSchema(name=str(d.get("name", "custom")), classes=classes,
                       ignore=d.get("ignore", IGNORE))


def load_schema(spec: str | Path | dict | LabelSchema | None) -> LabelSchema:
    """Return a schema from a built-in name, a YAML file, a dict or a schema.

    Parameters
    ----------
    spec : str, Path, dict, LabelSchema or None
        ``None`` or ``"nmc4"`` gives the default schema; a path names a YAML
        file of the form shown in DESIGN.md.

    Examples
    --------
    >>> load_schema("nmc4").names
    ['matrix', 'particle', 'crack', 'pore']
    """
    if spec is None:
        return NMC4
    if isinstance(spec, LabelSchema):
        return spec
    if isinstance(spec, dict):
        return schema_from_dict(spec)
    if str(spec) in BUILTIN_SCHEMAS:
        return BUILTIN_SCHEMAS[str(spec)]
    path = Path(spec)
    if not path.exists():
        raise InputError(
            f"{path}: label schema not found (give a YAML file or one of: "
            f"{', '.join(BUILTIN_SCHEMAS)})"
        )
    try:
        d = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    try:
        return schema_from_dict(d)
    except CracksegError as e:
        raise InputError(f"{path}: {e}") from None


def validate_labels(labels, schema: LabelSchema = NMC4, *, source: str = "labels",
                    allow_ignore: bool = True) -> np.ndarray:
    """Check that a label array only holds values of ``schema``.

    Parameters
    ----------
    labels : array_like of int, shape (Z, Y, X) or (Y, X)
        Label image.
    schema : LabelSchema
        Schema the values must belong to.
    source : str
        Name used in the error message (usually the file path).
    allow_ignore : bool
        Whether the schema's ignore value is allowed (sparse annotations).

    Returns
    -------
    numpy.ndarray
        The values present, sorted.

    Raises
    ------
    InputError
        If the array is not integer-valued or holds values outside the schema.

    Examples
    --------
    >>> import numpy as np
    >>> validate_labels(np.array([[0, 1], [2, 255]], dtype=np.uint8)).tolist()
    [0, 1, 2, 255]
    """
    arr = np.asarray(labels)
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise InputError(
                f"{source}: label image has non-integer dtype {arr.dtype}; save labels as uint8"
            )
    present = np.unique(arr)
    allowed = set(schema.values) | ({schema.ignore} if allow_ignore else set())
    bad = [int(v) for v in present if int(v) not in allowed]
    if bad:
        shown = ", ".join(map(str, bad[:8])) + (" ..." if len(bad) > 8 else "")
        raise InputError(
            f"{source}: label values {shown} are not in schema {schema.name!r} "
            f"(allowed: {sorted(allowed)}); fix the labels or pass the matching --schema"
        )
    return present
