"""Reading dataset files without running code from them.

Both real datasets ship as pickles: EEG-ImageNet as ``torch.save``\\ d dicts, THINGS-EEG2 as ``np.save``\\ d
dicts (a 0-d object array holding a pickled dict). Unpickling an untrusted file can run arbitrary code, so

- :func:`load_torch` reads torch files with ``weights_only=True`` (tensors, numbers, strings and plain
  containers only);
- :func:`load_numpy_dict` reads ``.npy`` files with a restricted unpickler that resolves only the numpy
  array/dtype/scalar reconstructors and a few harmless builtins (``set``, ``frozenset``, ``complex``,
  ``slice``, ``collections.OrderedDict``, ``_codecs.encode`` for Python-2-era byte strings).

Anything else raises :class:`DataFormatError`, whose message names the file, what was expected and what to
do. The helpers :func:`expect_keys` and :func:`expect_array` give loaders the same style of error for
fields of the wrong type, shape or dtype.
"""

from __future__ import annotations

import collections
import io
import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from regionaldiff.data.torch_legacy import is_legacy_torch_file, load_legacy_lazy
from regionaldiff.errors import DataFormatError, MissingFileError, UnsafeFileError

__all__ = [
    "DataFormatError",
    "UnsafeFileError",
    "load_torch",
    "load_torch_streamed",
    "load_numpy_dict",
    "expect_keys",
    "expect_array",
]


def _check_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        hint = f" (the folder {path.parent} does not exist)" if not path.parent.is_dir() else ""
        raise MissingFileError(f"{what} not found: {path}{hint}. Check dataset.root and the file name settings.")
    return path


# -- torch --------------------------------------------------------------------------------------
def load_torch(path: str | Path, *, what: str = "torch file", mmap: bool = True) -> Any:
    """Load a ``torch.save`` file with ``weights_only=True`` on the CPU.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file should be, for error messages (e.g. ``"EEG-ImageNet EEG file"``).
    mmap : bool
        Memory-map tensor storages when the file is in the zip format (torch >= 1.6); the legacy format
        (the perceivelab release) is always read into memory.

    Returns
    -------
    object
        The unpickled object (tensors, numbers, strings, lists, tuples, dicts).

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    UnsafeFileError
        The file holds objects other than tensors and plain containers (no code was run).
    DataFormatError
        The file is not a torch file (truncated, another format).
    """
    import torch

    path = _check_file(path, what)
    use_mmap = mmap and zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        blocked = re.search(r"(unsupported GLOBAL|not an allowed global|Unsupported global)[^\n]*", text)
        if blocked:
            raise UnsafeFileError(
                f"{path} ({what}) contains Python objects other than tensors, numbers, strings and plain "
                f"containers, so it was not loaded (no code from it was run): {blocked.group(0)[:200].rstrip('.')}. "
                "Use the file as released, or re-save it with only tensors and plain containers."
            ) from None
        detail = [
            line
            for line in text.splitlines()
            if line.strip() and "weights_only" not in line and "Weights only" not in line
        ]
        raise DataFormatError(
            f"{path} is not a readable {what} ({'; '.join(detail[:2])[:300]}). "
            "The file may be truncated or in another format; download it again."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise DataFormatError(
            f"{path} is not a readable {what}: {type(err).__name__}: {str(err)[:300]}. "
            "The file may be truncated or in another format; download it again."
        ) from None


def load_torch_streamed(path: str | Path, *, what: str = "torch file") -> tuple[Any, Any]:
    """Load a ``torch.save`` file without holding its tensors' data in memory; returns ``(object, closer)``.

    A legacy-format file (the EEG-ImageNet release) is parsed by
    :func:`regionaldiff.data.torch_legacy.load_legacy_lazy`: tensors come back as
    :class:`~regionaldiff.data.torch_legacy.LazyTensor` objects whose values are read from the file by
    ``np.asarray(t)``. A zip-format file is loaded with ``mmap=True`` (:func:`load_torch`). Call ``closer()``
    once the tensors are read. Same safety and errors as :func:`load_torch`.
    """
    path = _check_file(path, what)
    if zipfile.is_zipfile(path) or not is_legacy_torch_file(path):
        return load_torch(path, what=what, mmap=True), lambda: None
    try:
        data, source = load_legacy_lazy(path, what)
    except UnsafeFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise DataFormatError(
            f"{path} is not a readable {what}: {type(err).__name__}: {str(err)[:300]}. "
            "The file may be truncated or in another format; download it again."
        ) from None
    return data, source.close


# -- numpy --------------------------------------------------------------------------------------
def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric

    allowed: dict[tuple[str, str], Any] = {}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        # numeric._frombuffer is private: numpy's stubs do not declare it
        allowed[(module, "_frombuffer")] = numeric._frombuffer  # type: ignore[attr-defined]
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # numpy >= 1.25 may name the dtype classes directly (numpy.dtypes.Float64DType, ...)
    for name in dir(np.dtypes):
        if name.endswith("DType"):
            allowed[("numpy.dtypes", name)] = getattr(np.dtypes, name)
    import _codecs

    allowed.update(
        {
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("builtins", "complex"): complex,
            ("builtins", "slice"): slice,
            ("builtins", "bytearray"): bytearray,
            ("collections", "OrderedDict"): collections.OrderedDict,
            ("_codecs", "encode"): _codecs.encode,
            ("__builtin__", "set"): set,
            ("__builtin__", "frozenset"): frozenset,
            ("__builtin__", "complex"): complex,
        }
    )
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy arrays, dtypes, scalars and plain containers."""

    def __init__(self, file, path: Path, what: str) -> None:
        super().__init__(file, encoding="latin1")
        self._allowed = _numpy_globals()
        self._path = path
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self._path} ({self._what}) asks to load the Python object {module}.{name}; only numpy arrays "
                "and plain containers (dict, list, tuple, str, numbers) are allowed, so it was not loaded and no "
                "code from it was run. Use the file as released by the dataset authors."
            ) from None

    def persistent_load(self, pid: Any) -> Any:  # pragma: no cover - np.save never writes persistent ids
        raise UnsafeFileError(
            f"{self._path} ({self._what}) uses pickle persistent ids, which .npy files never contain."
        )


def _read_header(f, path: Path, what: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
    except ValueError:
        raise DataFormatError(
            f"{path} is not a .npy file (no numpy magic string); expected {what} written by np.save."
        ) from None
    try:
        if version == (1, 0):
            return fmt.read_array_header_1_0(f)
        if version in ((2, 0), (3, 0)):
            # 3.0 only changes the header's text encoding (utf8), which read_array_header_2_0 decodes too
            return fmt.read_array_header_2_0(f)
    except ValueError as err:
        raise DataFormatError(f"{path}: unreadable .npy header ({err}); the file may be truncated.") from None
    raise DataFormatError(f"{path}: unsupported .npy format version {version}.")


def load_numpy_dict(
    path: str | Path, *, what: str = "numpy dict file", required: Sequence[str] = ()
) -> dict[str, Any]:
    """Load a dict saved with ``np.save(path, dict)`` without running code from the file.

    Parameters
    ----------
    path : str or Path
        The ``.npy`` file.
    what : str
        What the file should be, for error messages.
    required : sequence of str
        Keys the dict must have (checked with :func:`expect_keys`).

    Returns
    -------
    dict
        The stored dict (values: numpy arrays, lists, strings, numbers).

    Raises
    ------
    FileNotFoundError, UnsafeFileError, DataFormatError
    """
    path = _check_file(path, what)
    with open(path, "rb") as f:
        shape, _fortran, dtype = _read_header(f, path, what)
        if dtype != np.dtype(object):
            raise DataFormatError(
                f"{path}: expected {what}, a dict saved with np.save (a 0-d object array); got a plain "
                f"{dtype} array of shape {shape}."
            )
        try:
            array = _RestrictedUnpickler(io.BufferedReader(f), path, what).load()
        except UnsafeFileError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise DataFormatError(
                f"{path}: the pickled content of {what} is unreadable ({type(err).__name__}: {str(err)[:200]}); "
                "the file may be truncated. Download it again."
            ) from None
    if not isinstance(array, np.ndarray) or array.shape != () or not isinstance(array.item(), dict):
        kind = (
            type(array.item()).__name__
            if isinstance(array, np.ndarray) and array.shape == ()
            else f"array {getattr(array, 'shape', '?')}"
        )
        raise DataFormatError(f"{path}: expected {what}, a dict saved with np.save; it holds {kind}.")
    data = array.item()
    expect_keys(data, required, path, what)
    return data


# -- field checks -------------------------------------------------------------------------------
def expect_keys(obj: Any, keys: Iterable[str], path: str | Path, what: str) -> None:
    """Raise :class:`DataFormatError` unless ``obj`` is a mapping holding every key of ``keys``."""
    keys = list(keys)
    if not isinstance(obj, Mapping):
        raise DataFormatError(f"{path}: expected {what} to be a dict with keys {keys}; got {type(obj).__name__}.")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DataFormatError(
            f"{path}: {what} lacks the key(s) {missing}; expected keys {keys}, found {sorted(map(str, obj))}. "
            "Is this the right file?"
        )


def expect_array(
    value: Any,
    path: str | Path,
    field: str,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    kinds: str = "fiu",
) -> np.ndarray:
    """Return ``value`` as a numpy array, or raise :class:`DataFormatError` naming the file and field.

    Parameters
    ----------
    value : array-like or torch.Tensor
        The stored value.
    path : str or Path
        The file it came from.
    field : str
        Its key (for the message).
    ndim : int, optional
        Required number of dimensions.
    shape : sequence of int or None, optional
        Required shape (None = any size on that axis).
    kinds : str
        Allowed ``dtype.kind`` letters (default: floats and integers).
    """
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch.Tensor
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except Exception as err:  # noqa: BLE001 - anything that is not array-like
        raise DataFormatError(f"{path}: field {field!r} is not an array ({type(value).__name__}: {err}).") from None
    expected = f"[{', '.join('*' if s is None else str(s) for s in shape)}]" if shape is not None else f"{ndim}-D"
    if array.dtype.kind not in kinds:
        raise DataFormatError(
            f"{path}: field {field!r} has dtype {array.dtype}; expected a numeric array ({kinds!r} kinds) of shape {expected}."
        )
    want_ndim = len(shape) if shape is not None else ndim
    if want_ndim is not None and array.ndim != want_ndim:
        raise DataFormatError(f"{path}: field {field!r} has shape {array.shape}; expected {expected}.")
    if shape is not None and any(s is not None and s != a for s, a in zip(shape, array.shape)):
        raise DataFormatError(f"{path}: field {field!r} has shape {array.shape}; expected {expected}.")
    return array
