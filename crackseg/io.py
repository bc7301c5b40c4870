"""Reading and writing volumes and images with their voxel size.

Arrays are ZYX (3-D) or YX (2-D).  Voxel sizes are in micrometres, one value
per axis, or ``None`` when the file does not state one.

Supported formats
-----------------
======================  ==================================  =====================
format                  path                                voxel size
======================  ==================================  =====================
TIFF (ImageJ)           ``scan.tif``                        ImageJ ``spacing`` + resolution tags
OME-TIFF                ``scan.ome.tif``                    OME ``PhysicalSize*``
folder of TIFF slices   ``slices/`` (sorted numerically)    from the first slice
Zarr v3 / OME-Zarr      ``scan.zarr`` (level 0)             ``coordinateTransformations`` scale
HDF5 (extra ``hdf5``)   ``scan.h5:/exchange/data``          ``element_size_um`` attribute
NumPy                   ``scan.npy``                        sidecar ``scan.npy.json``
======================  ==================================  =====================

Large inputs are opened lazily (memory-mapped TIFF, Zarr arrays, HDF5
datasets) with ``lazy=True``; slicing the returned array reads only what is
asked for.  Every writer is atomic: it writes to a temporary name beside the
target and renames it when complete.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from crackseg.io import read_volume, write_volume
>>> d = tempfile.mkdtemp()
>>> p = write_volume(os.path.join(d, "v.tif"), np.zeros((4, 5, 6), np.uint8), (0.5, 0.25, 0.25))
>>> img = read_volume(p)
>>> img.data.shape, img.voxel_size_um
((4, 5, 6), (0.5, 0.25, 0.25))
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crackseg.errors import InputError

SUPPORTED_DTYPES = (
    np.bool_, np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32, np.int64,
    np.uint64, np.float16, np.float32, np.float64,
)
TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")

_UNIT_TO_UM = {
    "um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "micrometer": 1.0,
    "micrometre": 1.0, "\\u00B5m": 1.0, "nm": 1e-3, "nanometer": 1e-3, "nanometre": 1e-3,
    "mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "cm": 1e4, "m": 1e6, "meter": 1e6,
    "metre": 1e6, "a": 1e-4, "angstrom": 1e-4, "å": 1e-4,
}


@dataclass(frozen=True)
class Image:
    """An image or volume with its voxel size.

    Attributes
    ----------
    data : array-like, shape (Z, Y, X) or (Y, X)
        A NumPy array, or with ``lazy=True`` an array-like (``numpy.memmap``,
        ``zarr.Array``, ``h5py.Dataset``) that reads on slicing.
    voxel_size_um : tuple of float or None
        Voxel size in micrometres per axis (same order as ``data``), or
        ``None`` when the file does not say.
    source : str
        Where the data came from (path, with HDF5 dataset if any).
    axes : str
        ``"ZYX"`` or ``"YX"``.
    """

    data: object
    voxel_size_um: tuple[float, ...] | None
    source: str
    axes: str = "ZYX"
    metadata: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def ndim(self) -> int:
        return len(self.data.shape)


_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, RuntimeError, zlib.error)
"""What decoding a damaged file raises (tifffile, imagecodecs, zarr, h5py, NumPy)."""


def _read_failure(source: str, fmt: str, e: BaseException) -> InputError:
    """The one-line error for a file that cannot be read."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return InputError(f"{source}: cannot read {fmt} ({msg}); the file may be truncated or corrupt")


class LazyArray:
    """Array-like over a lazily read array: native byte order, read errors as user errors.

    Slicing reads only what is asked for (as the wrapped ``zarr.Array``,
    ``h5py.Dataset`` or memory map does); a failure to decode the file
    (truncated strip, corrupt chunk) becomes one :class:`InputError` naming
    the file, wherever the read happens, and big-endian data come back in
    the machine's byte order.

    Examples
    --------
    >>> a = LazyArray(np.arange(6, dtype=">u2").reshape(2, 3), "a.tif")
    >>> a.shape, a.dtype, a[1].dtype.isnative
    ((2, 3), dtype('uint16'), True)
    """

    def __init__(self, base, source: str, fmt: str = "file"):
        self.base = base
        self.source = source
        self.fmt = fmt
        self.shape = tuple(base.shape)
        self.dtype = np.dtype(base.dtype).newbyteorder("=")
        self.chunks = getattr(base, "chunks", None)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        try:
            out = np.asarray(self.base[key])
        except InputError:
            raise
        except _READ_ERRORS as e:
            raise _read_failure(self.source, self.fmt, e) from None
        return out if out.dtype.isnative else out.astype(self.dtype)

    def __array__(self, dtype=None, copy=None):
        out = self[...]
        return out if dtype is None else out.astype(dtype, copy=False)


# ---------------------------------------------------------------- paths


def split_dataset_path(path: str | os.PathLike) -> tuple[Path, str | None]:
    """Split ``scan.h5:/exchange/data`` into file and dataset path.

    Examples
    --------
    >>> split_dataset_path("scan.h5:/exchange/data")
    (PosixPath('scan.h5'), '/exchange/data')
    >>> split_dataset_path("scan.tif")
    (PosixPath('scan.tif'), None)
    """
    s = os.fspath(path)
    m = re.match(r"^(.*?\.(?:h5|hdf5|hdf|nxs|zarr)):(/?[^:]*)$", s, flags=re.IGNORECASE)
    if m and not re.match(r"^[A-Za-z]:[\\/]", s[len(m.group(1)):]):
        return Path(m.group(1)), (m.group(2) or None)
    return Path(s), None


def format_of(path: str | os.PathLike) -> str:
    """Name of the format a path is read or written as.

    One of ``"tiff"``, ``"ome-tiff"``, ``"tiff-folder"``, ``"zarr"``,
    ``"hdf5"``, ``"npy"``.
    """
    p, _ = split_dataset_path(path)
    name = p.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        return "ome-tiff"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if name.endswith(".zarr") or (p.is_dir() and ((p / "zarr.json").exists() or (p / ".zarray").exists() or (p / ".zgroup").exists())):
        return "zarr"
    if name.endswith(HDF5_SUFFIXES):
        return "hdf5"
    if name.endswith(".npy"):
        return "npy"
    if p.is_dir():
        return "tiff-folder"
    raise InputError(
        f"{p}: unknown file type; use .tif/.tiff, .ome.tif, .zarr, .h5/.hdf5 (file.h5:/dataset), "
        ".npy, or a folder of .tif slices"
    )


# ---------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    If the body raises, the temporary file or folder is removed and ``path``
    is left as it was, so an interrupted write never leaves a file that looks
    complete.

    Parameters
    ----------
    path : path-like
        Final file or folder name.
    overwrite : bool
        Replace an existing ``path``; otherwise an existing one is an error.

    Examples
    --------
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> with atomic_path(os.path.join(d, "a.txt")) as tmp:
    ...     _ = tmp.write_text("hello")
    >>> open(os.path.join(d, "a.txt")).read()
    'hello'
    """
    final = Path(path)
    if final.exists() and not overwrite:
        raise InputError(f"{final}: already exists; pass --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmpname = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent)
    os.close(fd)
    os.unlink(tmpname)
    # Keep the real suffix at the end so libraries that dispatch on it still work.
    tmp = Path(tmpname[: -len(".part")] + ".part" + "".join(final.suffixes[-2:]))
    try:
        yield tmp
        if final.exists() and final.is_dir() and not tmp.is_dir():
            shutil.rmtree(final)
        if tmp.is_dir() and final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


def write_text(path: str | os.PathLike, text: str, *, overwrite: bool = True) -> Path:
    """Write a text file atomically and return its path."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj, *, overwrite: bool = True) -> Path:
    """Write JSON atomically (NumPy scalars and arrays converted)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n",
                      overwrite=overwrite)


def json_safe(o):
    """Plain JSON data from nested dicts/lists with NumPy scalars and arrays, paths and NaN.

    Keys become strings, NumPy arrays lists, NumPy scalars Python numbers,
    paths strings, and non-finite floats ``None`` (JSON has no NaN).

    Examples
    --------
    >>> json_safe({1: [np.float32(0.5), float("nan")], "p": Path("a")})
    {'1': [0.5, None], 'p': 'a'}
    >>> json_safe({"a": np.array([np.inf, 1.5]), "b": np.bool_(True)})
    {'a': [None, 1.5], 'b': True}
    """
    if isinstance(o, dict):
        return {str(k): json_safe(v) for k, v in o.items()}
    if isinstance(o, np.ndarray):
        o = o.tolist()
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    return o


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


# ---------------------------------------------------------------- checks


def check_array(data, source: str, *, channel: int | None = None,
                channel_axis: int | None = None, channel_declared: bool = False):
    """Validate dimensionality and dtype; select a channel of a multi-channel array.

    Singleton axes of 4-D+ arrays are dropped first.  A 4-D array, or a 3-D
    one whose channel axis the file declares (``channel_declared``, e.g. an
    RGB or ImageJ multi-channel TIFF), holds several channels: ``channel``
    picks one, along ``channel_axis`` (default: the shortest axis).  Given
    ``channel``, a 3-D array without a declared channel axis is taken as
    multi-channel along its shortest axis too.  Returns the (possibly
    reduced) array-like.

    Raises
    ------
    InputError
        For 1-D data, multi-channel data without ``channel`` (the message
        names ``--channel``), or unsupported dtypes.
    """
    dtype = np.dtype(data.dtype).newbyteorder("=")
    if not any(dtype == np.dtype(t) for t in SUPPORTED_DTYPES):
        raise InputError(
            f"{source}: unsupported data type {dtype}; convert to uint8, uint16 or float32"
        )
    shape = tuple(data.shape)
    if len(shape) > 3:
        keep = tuple(slice(None) if s != 1 else 0 for s in shape)
        if sum(s != 1 for s in shape) < len(shape):
            data = data[keep]
            shape = tuple(data.shape)
    multi = len(shape) > 3 or (len(shape) == 3 and (channel_declared or channel is not None))
    if multi:
        ax = int(np.argmin(shape)) if channel_axis is None else int(channel_axis)
        if channel is None:
            raise InputError(
                f"{source}: {len(shape)}-D array of shape {shape} with {shape[ax]} channels "
                f"(axis {ax}); choose one with --channel N (in Python: read_volume(path, "
                "channel=N)), or save one channel as a volume"
            )
        if not 0 <= channel < shape[ax]:
            raise InputError(f"{source}: channel {channel} out of range 0..{shape[ax] - 1} "
                             f"(axis {ax} of shape {shape})")
        index = [slice(None)] * len(shape)
        index[ax] = channel
        data = data[tuple(index)]
        shape = tuple(data.shape)
        if len(shape) > 3:
            raise InputError(f"{source}: still {len(shape)}-D after choosing a channel: {shape}")
    if len(shape) < 2:
        raise InputError(f"{source}: {len(shape)}-D array of shape {shape}; need a 2-D image or 3-D volume")
    if min(shape) == 0:
        raise InputError(f"{source}: empty array of shape {shape}")
    return data


def declared_channel_axis(axes: str | None, shape) -> int | None:
    """Channel axis a file declares, as counted after :func:`check_array` drops the
    singleton axes of a 4-D+ array; ``None`` if none or unclear.

    Declared are a ``C`` axis of tifffile's axes, and an ``S`` (samples) axis when it is
    the last one, as in an RGB image (``YXS``).  A leading ``S`` axis is what tifffile
    writes by default for a volume of 3 or 4 slices, so it is not taken as channels.

    Examples
    --------
    >>> declared_channel_axis("YXS", (40, 50, 3)), declared_channel_axis("ZCYX", (1, 2, 9, 9))
    (2, 0)
    >>> declared_channel_axis("ZYX", (4, 9, 9)) is None, declared_channel_axis("SYX", (3, 9, 9))
    (True, None)
    """
    if not axes or len(axes) != len(shape):
        return None
    pairs = list(zip(axes, shape))
    if len(shape) > 3 and any(s == 1 for s in shape):
        pairs = [(a, s) for a, s in pairs if s != 1]
    hits = [i for i, (a, s) in enumerate(pairs)
            if s > 1 and (a == "C" or (a == "S" and i == len(pairs) - 1))]
    return hits[0] if len(hits) == 1 else None


def count_nonfinite(data, *, chunk_voxels: int = 1 << 24) -> int:
    """Number of NaN/Inf values, read slab by slab (bounded memory)."""
    if not np.issubdtype(np.dtype(data.dtype), np.floating):
        return 0
    n = 0
    step = max(1, chunk_voxels // max(1, int(np.prod(data.shape[1:]))))
    for i in range(0, data.shape[0], step):
        n += int(np.count_nonzero(~np.isfinite(np.asarray(data[i:i + step]))))
    return n


def replace_nonfinite(block: np.ndarray, fill: float = 0.0) -> np.ndarray:
    """Return ``block`` with NaN and Inf replaced by ``fill``."""
    if np.issubdtype(block.dtype, np.floating):
        bad = ~np.isfinite(block)
        if bad.any():
            block = np.where(bad, np.asarray(fill, dtype=block.dtype), block)
    return block


def check_same_shape(image_shape, labels_shape, image_source: str, labels_source: str) -> None:
    """Raise a clear error if a label image does not match its image."""
    if tuple(image_shape) != tuple(labels_shape):
        raise InputError(
            f"{labels_source}: label shape {tuple(labels_shape)} differs from image "
            f"{image_source} shape {tuple(image_shape)}"
        )


# ---------------------------------------------------------------- reading


def read_volume(path: str | os.PathLike, *, lazy: bool = False, dataset: str | None = None,
                channel: int | None = None, channel_axis: int | None = None,
                nan_policy: str = "error") -> Image:
    """Read a 3-D volume or 2-D image with its voxel size.

    Parameters
    ----------
    path : path-like
        File, folder of TIFF slices, Zarr store, or ``file.h5:/dataset``.
    lazy : bool
        Return an array-like that reads on slicing instead of loading the whole
        array (memory-mapped TIFF when possible, Zarr, HDF5 dataset).
    dataset : str, optional
        HDF5 dataset path or Zarr array path (alternative to ``file:/path``).
    channel, channel_axis : int, optional
        Channel to take from multi-channel data (4-D, or 3-D with a channel
        axis the file declares, such as an RGB TIFF; ``--channel`` on the
        command line).  The channel axis is the one the file declares, else
        the shortest.
    nan_policy : {"error", "replace", "ignore"}
        What to do with NaN/Inf voxels of an eagerly read float image: raise,
        replace with 0 (reported on stderr by the caller through
        ``Image.metadata["nonfinite"]``), or leave.  Lazy arrays are checked
        chunk by chunk by the consumer.

    Returns
    -------
    Image
        Data (axes ZYX or YX) with voxel size in micrometres (or ``None``).

    Raises
    ------
    InputError
        Missing, unreadable or truncated file, unsupported dtype or
        dimensionality, NaN/Inf under ``nan_policy="error"``.
    """
    p, ds = split_dataset_path(path)
    ds = dataset or ds
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    fmt = format_of(p)
    reader = {
        "tiff": _read_tiff, "ome-tiff": _read_tiff, "tiff-folder": _read_tiff_folder,
        "zarr": _read_zarr, "hdf5": _read_hdf5, "npy": _read_npy,
    }[fmt]
    source = f"{p}:{ds}" if ds else str(p)
    try:
        data, vs, meta = reader(p, ds, lazy)
        declared = declared_channel_axis(meta.get("axes_in_file"), data.shape)
        data = check_array(data, source, channel=channel,
                           channel_axis=declared if channel_axis is None else channel_axis,
                           channel_declared=declared is not None)
        if not lazy:
            data = np.asarray(data)
    except InputError:
        raise
    except (*_READ_ERRORS, IndexError, TypeError) as e:
        raise _read_failure(source, fmt, e) from None
    if lazy and not (isinstance(data, np.memmap) and data.dtype.isnative):
        data = LazyArray(data, source, fmt)
    elif not lazy and not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    ndim = len(data.shape)
    if vs is not None:
        vs = tuple(float(v) for v in vs)[-ndim:]
        if len(vs) != ndim or not all(np.isfinite(v) and v > 0 for v in vs):
            vs = None
    if not lazy:
        if nan_policy != "ignore":
            n_bad = count_nonfinite(data)
            if n_bad:
                if nan_policy == "error":
                    raise InputError(
                        f"{source}: {n_bad} NaN/Inf voxels; fix the data or pass "
                        "--nan-policy replace to set them to 0"
                    )
                data = replace_nonfinite(data, 0.0)
                meta = {**meta, "nonfinite": n_bad, "nonfinite_replaced_with": 0.0}
    return Image(data=data, voxel_size_um=vs, source=source, axes="ZYX"[-ndim:], metadata=meta)


def read_image(path: str | os.PathLike, **kwargs) -> Image:
    """Alias of :func:`read_volume` for 2-D images."""
    return read_volume(path, **kwargs)


def _unit_factor(unit) -> float | None:
    if unit is None:
        return None
    u = str(unit).strip().lower().replace("\\u00b5", "µ")
    return _UNIT_TO_UM.get(u)


def _tiff_voxel_size(tif, ndim: int):
    """Voxel size from OME, ImageJ, or crackseg's JSON description."""
    if tif.is_ome and tif.ome_metadata:
        vs = _ome_xml_voxel_size(tif.ome_metadata)
        if vs is not None:
            return vs
    shaped = getattr(tif, "shaped_metadata", None)
    if shaped:
        for md in shaped:
            if isinstance(md, dict) and md.get("voxel_size_um"):
                return tuple(float(v) for v in md["voxel_size_um"])
    page = tif.pages[0]
    ij = tif.imagej_metadata if tif.is_imagej else None
    unit = ij.get("unit") if ij else None
    factor = _unit_factor(unit) if unit is not None else None
    xres = page.tags.get("XResolution")
    yres = page.tags.get("YResolution")
    runit = page.tags.get("ResolutionUnit")
    if factor is None and runit is not None and int(runit.value) == 3:  # centimetre
        factor = 1e4
    if factor is None or xres is None or yres is None:
        return None

    def size(tag):
        num, den = tag.value
        return (den / num) * factor if num else None

    sx, sy = size(xres), size(yres)
    if sx is None or sy is None:
        return None
    if ndim == 2:
        return (sy, sx)
    sz = (ij or {}).get("spacing")
    sz = float(sz) * factor if sz is not None else sx
    return (sz, sy, sx)


def _ome_xml_voxel_size(xml: str):
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    pix = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pix is None:
        return None
    out = []
    for ax in "ZYX":
        v = pix.get(f"PhysicalSize{ax}")
        f = _unit_factor(pix.get(f"PhysicalSize{ax}Unit", "µm"))
        out.append(float(v) * f if v is not None and f is not None else None)
    if out[1] is None or out[2] is None:
        return None
    return tuple(out) if out[0] is not None else (out[1], out[1], out[2])


def _read_tiff(p: Path, ds, lazy):
    import tifffile

    with tifffile.TiffFile(p) as tif:
        if not tif.series:
            raise InputError(f"{p}: TIFF holds no image")
        _check_tiff_complete(tif, p)
        series = tif.series[0]
        ndim = sum(1 for s in series.shape if s > 1) or len(series.shape)
        vs = _tiff_voxel_size(tif, min(ndim, 3))
        meta = {"format": "tiff", "axes_in_file": series.axes}
        if not lazy:
            data = series.asarray()
            return data, vs, meta
    try:
        data = tifffile.memmap(p, mode="r")
        return data, vs, meta
    except (ValueError, OSError):
        import zarr

        store = tifffile.imread(p, aszarr=True)
        return zarr.open_array(store, mode="r"), vs, meta


def _check_tiff_complete(tif, p: Path) -> None:
    """Raise if the pages announced by the file are not all present."""
    size = p.stat().st_size
    expected = None
    if tif.is_imagej and tif.imagej_metadata:
        expected = tif.imagej_metadata.get("images")
    n_pages = len(tif.pages)
    if expected is not None and n_pages < int(expected):
        raise InputError(
            f"{p}: truncated TIFF ({n_pages} of {int(expected)} slices present); re-export or re-copy the file"
        )
    for page in (tif.pages[0], tif.pages[-1]):
        offsets = getattr(page, "dataoffsets", ()) or ()
        counts = getattr(page, "databytecounts", ()) or ()
        if offsets and counts and offsets[-1] + counts[-1] > size:
            raise InputError(
                f"{p}: truncated TIFF (image data runs past the end of the file); "
                "re-export or re-copy the file"
            )


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def _read_tiff_folder(p: Path, ds, lazy):
    import tifffile

    files = sorted((f for f in p.iterdir() if f.suffix.lower() in TIFF_SUFFIXES
                    and not f.name.startswith(".")), key=_natural_key)
    if not files:
        raise InputError(f"{p}: folder holds no .tif slices")
    with tifffile.TiffFile(files[0]) as tif:
        vs2 = _tiff_voxel_size(tif, 2)
        first = tif.series[0]
        shape0, dtype0 = first.shape, first.dtype
    vs = (vs2[0], vs2[0], vs2[1]) if vs2 else None
    for f in files[1:]:
        with tifffile.TiffFile(f) as tif:
            if tif.series[0].shape != shape0 or tif.series[0].dtype != dtype0:
                raise InputError(
                    f"{f}: slice shape {tif.series[0].shape} {tif.series[0].dtype} differs from "
                    f"{files[0].name} {shape0} {dtype0}"
                )
    meta = {"format": "tiff-folder", "n_slices": len(files)}
    seq = tifffile.TiffSequence(files, pattern=None)
    if lazy:
        import zarr

        store = seq.aszarr()
        return zarr.open_array(store, mode="r"), vs, meta
    return seq.asarray(), vs, meta


def _zarr_voxel_size(attrs: dict, array_path: str):
    ome = attrs.get("ome", attrs)
    for ms in ome.get("multiscales", []) or []:
        for level in ms.get("datasets", []):
            if level.get("path") != array_path:
                continue
            scale = None
            for t in level.get("coordinateTransformations", []):
                if t.get("type") == "scale":
                    scale = list(t["scale"])
            if scale is None:
                return None
            axes = ms.get("axes", [])
            out = []
            for i, s in enumerate(scale):
                ax = axes[i] if i < len(axes) else {}
                if isinstance(ax, dict) and ax.get("type") not in (None, "space"):
                    continue
                f = _unit_factor(ax.get("unit")) if isinstance(ax, dict) and ax.get("unit") else 1.0
                out.append(float(s) * (f if f is not None else 1.0))
            return tuple(out)
    return None


def _read_zarr(p: Path, ds, lazy):
    import zarr

    node = zarr.open(str(p), mode="r")
    vs = None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        ome = attrs.get("ome", attrs)
        path = ds.strip("/") if ds else None
        if path is None:
            ms = ome.get("multiscales") or []
            path = ms[0]["datasets"][0]["path"] if ms else None
        if path is None:
            names = sorted(k for k, _ in node.arrays())
            if not names:
                raise InputError(f"{p}: Zarr group holds no array; give one as {p}:/NAME")
            path = names[0]
        arr = node[path]
        vs = _zarr_voxel_size(attrs, path)
    else:
        arr = node
        attrs = dict(arr.attrs)
        if "voxel_size_um" in attrs:
            vs = tuple(attrs["voxel_size_um"])
    meta = {"format": "zarr"}
    return (arr if lazy else arr[...]), vs, meta


def _read_hdf5(p: Path, ds, lazy):
    try:
        import h5py
    except ImportError:
        raise InputError(f"{p}: reading HDF5 needs h5py: pip install 'crackseg[hdf5]'") from None
    f = h5py.File(p, "r")
    try:
        if ds is None:
            names = []
            f.visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.ndim >= 2 else None)
            if len(names) != 1:
                raise InputError(
                    f"{p}: give the dataset as {p.name}:/path (found: {', '.join(names[:5]) or 'none'})"
                )
            ds = names[0]
        if ds not in f:
            raise InputError(f"{p}: no dataset {ds!r} in the file")
        d = f[ds]
        vs = None
        for key in ("element_size_um", "voxel_size_um", "voxel_size"):
            if key in d.attrs:
                vs = tuple(float(v) for v in np.atleast_1d(d.attrs[key]))
                if len(vs) == 1:
                    vs = vs * d.ndim
                break
        meta = {"format": "hdf5", "dataset": ds}
        if lazy:
            return d, vs, meta
        data = d[()]
        f.close()
        return data, vs, meta
    except BaseException:
        f.close()
        raise


def _read_npy(p: Path, ds, lazy):
    data = np.load(p, mmap_mode="r" if lazy else None, allow_pickle=False)
    side = p.with_name(p.name + ".json")
    vs = None
    if side.exists():
        try:
            vs = json.loads(side.read_text()).get("voxel_size_um")
        except json.JSONDecodeError:
            raise InputError(f"{side}: not valid JSON") from None
    return data, vs, {"format": "npy"}


# ---------------------------------------------------------------- writing


def write_volume(path: str | os.PathLike, data, voxel_size_um=None, *, overwrite: bool = False,
                 compression: str | None = "zlib", chunks=None,
                 metadata: dict | None = None) -> Path:
    """Write a volume or image atomically, with its voxel size.

    Parameters
    ----------
    path : path-like
        Target; the format follows the name (see module docs).  HDF5 targets
        take a dataset path: ``out.h5:/data`` (default ``/data``).
    data : array_like, shape (Z, Y, X) or (Y, X)
        Array to write.
    voxel_size_um : sequence of float, optional
        Voxel size in micrometres per axis.
    overwrite : bool
        Replace an existing target.
    compression : str or None
        ``"zlib"`` (default) or ``None`` for TIFF/HDF5; Zarr uses zstd.
    chunks : tuple of int, optional
        Chunk shape for Zarr/HDF5.
    metadata : dict, optional
        Extra JSON-serialisable metadata stored with the image where the format
        allows (TIFF description, Zarr/HDF5 attributes).

    Returns
    -------
    pathlib.Path
        The written path (file part only for HDF5).
    """
    p, ds = split_dataset_path(path)
    fmt = format_of(p) if not p.is_dir() or p.name.lower().endswith(".zarr") else "zarr"
    data = np.asarray(data)
    if voxel_size_um is not None:
        voxel_size_um = tuple(float(v) for v in voxel_size_um)
        if len(voxel_size_um) != data.ndim:
            raise InputError(
                f"{p}: voxel size {voxel_size_um} has {len(voxel_size_um)} values for a {data.ndim}-D array"
            )
    with atomic_path(p, overwrite=overwrite) as tmp:
        if fmt in ("tiff", "ome-tiff"):
            _write_tiff(tmp, data, voxel_size_um, ome=(fmt == "ome-tiff"),
                        compression=compression, metadata=metadata)
        elif fmt == "zarr":
            _write_zarr(tmp, data, voxel_size_um, chunks=chunks, metadata=metadata)
        elif fmt == "hdf5":
            _write_hdf5(tmp, ds or "/data", data, voxel_size_um, compression=compression,
                        chunks=chunks, metadata=metadata)
        elif fmt == "npy":
            np.save(tmp, data, allow_pickle=False)
        else:
            raise InputError(f"{p}: cannot write format {fmt}")
    if fmt == "npy":
        side = {"voxel_size_um": list(voxel_size_um) if voxel_size_um else None,
                **(metadata or {})}
        write_json(p.with_name(p.name + ".json"), side, overwrite=True)
    return p


def _write_tiff(tmp: Path, data, vs, *, ome, compression, metadata):
    import tifffile

    ndim = data.ndim
    axes = "ZYX"[-ndim:]
    kwargs = {"compression": compression} if compression else {}
    if ome:
        md = {"axes": axes}
        if vs:
            for ax, v in zip(axes, vs):
                md[f"PhysicalSize{ax}"] = v
                md[f"PhysicalSize{ax}Unit"] = "µm"
        tifffile.imwrite(tmp, data, ome=True, metadata=md, **kwargs)
        return
    resolution = (1.0 / vs[-1], 1.0 / vs[-2]) if vs else None
    if data.dtype in (np.uint8, np.uint16, np.float32):
        # No unit without a voxel size: ImageJ would otherwise read 1 µm per pixel.
        md = {"axes": axes, **({"unit": "um"} if vs else {})}
        if vs and ndim == 3:
            md["spacing"] = vs[0]
        if metadata:
            md["Info"] = json.dumps(metadata, default=_json_default)
        tifffile.imwrite(tmp, data, imagej=True, resolution=resolution,
                         resolutionunit=None if vs else None, metadata=md, **kwargs)
    else:
        md = {"axes": axes, "voxel_size_um": list(vs) if vs else None, **(metadata or {})}
        tifffile.imwrite(tmp, data, resolution=resolution, metadata=md, **kwargs)


def ome_zarr_attrs(shape_ndim: int, voxel_size_um, name: str = "image") -> dict:
    """OME-NGFF 0.5 ``multiscales`` attributes for a single-level image."""
    axes = "zyx"[-shape_ndim:]
    scale = list(voxel_size_um) if voxel_size_um else [1.0] * shape_ndim
    return {
        "ome": {
            "version": "0.5",
            "multiscales": [{
                "name": name,
                "axes": [{"name": a, "type": "space",
                          **({"unit": "micrometer"} if voxel_size_um else {})} for a in axes],
                "datasets": [{"path": "0", "coordinateTransformations": [
                    {"type": "scale", "scale": scale}]}],
            }],
        }
    }


SLAB_CHUNK_PLANES = 32
"""Planes per Zarr chunk along axis 0 of label volumes that are read slab by slab."""


def thin_chunks(chunks, *, planes: int = SLAB_CHUNK_PLANES) -> tuple[int, ...]:
    """3-D ``chunks`` at most ``planes`` thick along axis 0, aligned with the given ones.

    The first edge becomes its largest divisor within ``planes``, so that
    writers of blocks of the given chunks stay chunk-aligned; 2-D chunks are
    returned as they are.

    Examples
    --------
    >>> thin_chunks((192, 192, 192)), thin_chunks((171, 171, 171)), thin_chunks((64, 64))
    ((32, 192, 192), (19, 171, 171), (64, 64))
    """
    chunks = tuple(int(c) for c in chunks)
    if len(chunks) < 3:
        return chunks
    z = max(d for d in range(1, min(planes, chunks[0]) + 1) if chunks[0] % d == 0)
    return (z,) + chunks[1:]


def slab_chunks(shape, *, edge: int = 256, planes: int = SLAB_CHUNK_PLANES) -> tuple[int, ...]:
    """Zarr chunks of a label volume that later steps read in slabs of a few planes.

    Readers of thin slabs (statistics, domain checks, figures) decompress
    whole chunks; chunks ``planes`` thick along axis 0 (``edge`` wide along
    the others) cut the data they decompress per slab several times over
    cubes of ``edge``.  ``planes`` is lowered to the largest divisor of
    ``edge`` within it, so that writers of ``edge``-sized cubes stay
    chunk-aligned.  2-D shapes get ``edge`` squares.

    Examples
    --------
    >>> slab_chunks((1024, 1024, 1024)), slab_chunks((20, 64, 64)), slab_chunks((171, 300), edge=171)
    ((32, 256, 256), (20, 64, 64), (171, 171))
    >>> slab_chunks((512, 512, 512), edge=171)
    (19, 171, 171)
    """
    if len(shape) < 3:
        return tuple(min(edge, int(s)) for s in shape)
    z = thin_chunks((edge,) * 3, planes=planes)[0]
    return (min(z, int(shape[0])),) + tuple(min(edge, int(s)) for s in shape[1:])


def create_zarr_volume(path: str | os.PathLike, shape, dtype, voxel_size_um=None, *,
                       chunks=None, fill_value=0, metadata: dict | None = None):
    """Create an empty OME-Zarr (v3) image at ``path`` for chunk-by-chunk writing.

    Returns the level-0 ``zarr.Array``.  The caller is responsible for
    atomicity (create under a temporary name, then rename with
    :func:`atomic_path`).
    """
    import zarr

    ndim = len(shape)
    if chunks is None:
        chunks = tuple(min(s, 128 if ndim == 3 else 1024) for s in shape)
    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    root.attrs.update(ome_zarr_attrs(ndim, voxel_size_um))
    if metadata:
        root.attrs["crackseg"] = json.loads(json.dumps(metadata, default=_json_default))
    return root.create_array("0", shape=tuple(shape), dtype=dtype, chunks=tuple(chunks),
                             fill_value=fill_value)


def _write_zarr(tmp: Path, data, vs, *, chunks, metadata):
    arr = create_zarr_volume(tmp, data.shape, data.dtype, vs, chunks=chunks, metadata=metadata)
    arr[...] = data


def _write_hdf5(tmp: Path, ds: str, data, vs, *, compression, chunks, metadata):
    try:
        import h5py
    except ImportError:
        raise InputError("writing HDF5 needs h5py: pip install 'crackseg[hdf5]'") from None
    with h5py.File(tmp, "w") as f:
        kw = {"compression": "gzip"} if compression else {}
        if chunks:
            kw["chunks"] = tuple(chunks)
        d = f.create_dataset(ds, data=data, **kw)
        if vs:
            d.attrs["element_size_um"] = np.asarray(vs, dtype=np.float64)
        for k, v in (metadata or {}).items():
            d.attrs[k] = json.dumps(v, default=_json_default) if isinstance(v, (dict, list)) else v


def describe_voxel_size(vs) -> str:
    """Human-readable voxel size, e.g. ``"0.5 x 0.25 x 0.25 µm"``."""
    if vs is None:
        return "unknown (voxel units)"
    return " x ".join(f"{v:g}" for v in vs) + " µm"
