"""Streaming reader of the legacy (pre-zip) ``torch.save`` format: tensors read from the file when asked for.

``torch.load`` reads a legacy file whole (the EEG-ImageNet release: 3 GB, about 6.5 GB peak memory when it is
converted). The format is a sequence of pickles followed by the raw storages::

    pickle  magic number (0x1950a86a20f9469cfc6c)
    pickle  protocol version (1001)
    pickle  sys info (byte order, type sizes)
    pickle  the object; each tensor is _rebuild_tensor_v2(storage, offset, size, stride, ...), each storage a
            persistent id ("storage", <type>, <key>, <location>, <numel>, <view>)
    pickle  the storage keys, in the order their data follows
    data    per storage: its element count (int64, little-endian), then its bytes

:func:`load_legacy_lazy` unpickles the object with every tensor replaced by a :class:`LazyTensor` (shape,
dtype, and where its data lies in the file), then records each storage's offset by seeking over the data
section. Nothing else is read: a tensor's values are read from the file by :meth:`LazyTensor.numpy`
(``np.asarray(t)``), and released with the array. Memory stays at the object's skeleton plus what the caller
holds.

Safety is that of ``weights_only=True``: the unpickler resolves only the tensor rebuild functions, the storage
types and ``collections.OrderedDict`` (each mapped to a function of this module); anything else raises
:class:`~regionaldiff.errors.UnsafeFileError` and no code from the file runs.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from regionaldiff.errors import UnsafeFileError

__all__ = ["LazyTensor", "LegacyTorchFile", "is_legacy_torch_file", "load_legacy_lazy"]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


def is_legacy_torch_file(path: str | Path) -> bool:
    """True when ``path`` starts like a legacy ``torch.save`` file (a pickle, protocol 2 to 5: the magic number)."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


class _StorageType:
    """What the pickle's ``torch.FloatStorage`` (etc.) resolves to: the storage's numpy dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = np.dtype(STORAGE_DTYPES[name])


class _Storage:
    """A storage of the file: its dtype, element count, and (once the data section is scanned) its offset."""

    def __init__(self, source: LegacyTorchFile, key: str, dtype: np.dtype, numel: int) -> None:
        self.source = source
        self.key = key
        self.dtype = dtype
        self.numel = int(numel)
        self.data_offset: int | None = None

    def read(self, start: int, count: int) -> np.ndarray:
        """Elements ``[start, start + count)`` of the storage, read from the file."""
        if self.data_offset is None:  # pragma: no cover - load_legacy_lazy scans every storage
            raise RuntimeError(f"storage {self.key} has no data offset")
        return self.source.read(self.data_offset + start * self.dtype.itemsize, count, self.dtype)


class _StorageView:
    """A view into a root storage (legacy files written by old torch versions)."""

    def __init__(self, root: _Storage, offset: int, numel: int) -> None:
        self.root = root
        self.offset = int(offset)
        self.numel = int(numel)
        self.dtype = root.dtype

    def read(self, start: int, count: int) -> np.ndarray:
        return self.root.read(self.offset + start, count)


class LazyTensor:
    """A tensor of a legacy file whose values stay in the file until asked for.

    Attributes
    ----------
    shape : tuple of int
        The tensor's size.
    dtype : numpy.dtype
        Its element type.
    """

    def __init__(self, storage: _Storage | _StorageView, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]):
        self._storage = storage
        self._offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self._stride = tuple(int(s) for s in stride)
        self.dtype = storage.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def numpy(self) -> np.ndarray:
        """The values, read from the file into a new array."""
        if any(s == 0 for s in self.shape):
            return np.empty(self.shape, dtype=self.dtype)
        span = 1 + sum((size - 1) * step for size, step in zip(self.shape, self._stride))
        flat = self._storage.read(self._offset, span)
        contiguous = self._stride == tuple(int(np.prod(self.shape[i + 1 :])) for i in range(self.ndim))
        if contiguous:
            return flat.reshape(self.shape)
        strides = tuple(step * self.dtype.itemsize for step in self._stride)
        return np.lib.stride_tricks.as_strided(flat, self.shape, strides).copy()

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        array = self.numpy()
        return array if dtype is None else array.astype(dtype, copy=False)

    def item(self) -> Any:
        """The value of a one-element tensor."""
        if int(np.prod(self.shape)) != 1:
            raise ValueError(f"item() of a tensor of shape {self.shape}")
        return self.numpy().reshape(()).item()

    def __repr__(self) -> str:
        return f"LazyTensor(shape={self.shape}, dtype={self.dtype})"


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any, *_: Any) -> LazyTensor:
    return LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> LazyTensor:
    return LazyTensor(storage, storage_offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    """Resolves only tensors, storages and OrderedDict; storages become :class:`_Storage` references."""

    def __init__(self, file: BinaryIO, source: LegacyTorchFile) -> None:
        super().__init__(file, encoding="utf-8")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch._utils" and name == "_rebuild_tensor":
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise UnsafeFileError(
            f"{self._source.path} ({self._source.what}) asks to load the Python object {module}.{name}; only "
            "tensors, numbers, strings and plain containers are allowed, so it was not loaded and no code from it "
            "was run. Use the file as released, or re-save it with only tensors and plain containers."
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage" or len(pid) != 6:
            raise UnsafeFileError(
                f"{self._source.path} ({self._source.what}) holds a persistent object of kind {kind!r} (not a "
                "tensor storage), so it was not loaded."
            )
        storage_type, key, _location, numel, view = pid[1:]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        key = key.decode("ascii") if isinstance(key, bytes) else str(key)
        root = self._source.storages.get(key)
        if root is None:
            root = self._source.storages[key] = _Storage(self._source, key, storage_type.dtype, numel)
        if view is not None:
            _view_key, offset, view_size = view
            return _StorageView(root, offset, view_size)
        return root


class LegacyTorchFile:
    """An open legacy ``torch.save`` file: :meth:`load` gives its object with :class:`LazyTensor` tensors.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file should be, for error messages.
    """

    def __init__(self, path: str | Path, what: str = "torch file") -> None:
        self.path = Path(path)
        self.what = what
        self.storages: dict[str, _Storage] = {}
        self._file: io.BufferedReader | None = None

    def _handle(self) -> io.BufferedReader:
        if self._file is None:
            self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        return self._file

    def close(self) -> None:
        """Close the file (lazy tensors cannot be read afterwards)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> LegacyTorchFile:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def read(self, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
        """``count`` elements of ``dtype`` at byte ``offset`` of the file, into a new array."""
        f = self._handle()
        out = np.empty(count, dtype=dtype)
        f.seek(offset)
        got = f.readinto(out.view(np.uint8).data)
        if got != out.nbytes:
            raise EOFError(f"{self.path}: {out.nbytes} bytes expected at offset {offset}, {got} read (truncated?)")
        return out

    def load(self) -> Any:
        """The file's object, tensors as :class:`LazyTensor` (storage offsets scanned, no data read)."""
        f = self._handle()
        f.seek(0)
        size = self.path.stat().st_size
        header = _Unpickler(f, self)
        magic = header.load()
        if magic != MAGIC_NUMBER:
            raise pickle.UnpicklingError("invalid magic number: not a legacy torch file")
        protocol = _Unpickler(f, self).load()
        if protocol != PROTOCOL_VERSION:
            raise pickle.UnpicklingError(f"unsupported legacy protocol version {protocol}")
        sys_info = _Unpickler(f, self).load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            raise pickle.UnpicklingError("big-endian legacy files are not supported")
        result = _Unpickler(f, self).load()
        keys = _Unpickler(f, self).load()
        offset = f.tell()
        for key in keys:
            key = key.decode("ascii") if isinstance(key, bytes) else str(key)
            storage = self.storages.get(key)
            if storage is None:
                raise pickle.UnpicklingError(f"storage {key!r} listed in the data section but never used")
            f.seek(offset)
            raw = f.read(8)
            if len(raw) != 8:
                raise EOFError(f"the data section ends before storage {key!r} (truncated file)")
            (numel,) = struct.unpack("<q", raw)
            if numel != storage.numel:
                raise pickle.UnpicklingError(
                    f"storage {key!r} holds {numel} elements; the pickle says {storage.numel}"
                )
            storage.data_offset = offset + 8
            offset = storage.data_offset + numel * storage.dtype.itemsize
            if offset > size:
                raise EOFError(f"storage {key!r} runs past the end of the file (truncated file)")
        missing = [k for k, s in self.storages.items() if s.data_offset is None]
        if missing:
            raise pickle.UnpicklingError(f"no data for storage(s) {missing[:5]}")
        return result


def load_legacy_lazy(path: str | Path, what: str = "torch file") -> tuple[Any, LegacyTorchFile]:
    """Open ``path`` (legacy format) and return ``(object, file)``; close ``file`` when its tensors are read.

    Raises whatever the parsing raises (``pickle.UnpicklingError``, ``EOFError``, ``UnsafeFileError``...);
    :func:`regionaldiff.data.safe_load.load_torch_streamed` turns them into messages naming the file.
    """
    source = LegacyTorchFile(path, what)
    try:
        return source.load(), source
    except BaseException:
        source.close()
        raise
