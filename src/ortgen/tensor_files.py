"""Read tensors from checkpoint files without loading the whole checkpoint.

Safetensors files are parsed directly (header, then one read per tensor), so exporting a
safetensors checkpoint needs no torch and reads one tensor at a time: a 6 GB checkpoint
never sits in memory whole. PyTorch ``.bin`` files need torch (the ``export`` extra) and
are opened with ``mmap=True, weights_only=True`` (no code from the pickle runs).
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np

from ortgen.errors import ModelSourceError

log = logging.getLogger(__name__)

_SAFETENSORS_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # widened to float32 by shifting into the high half
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class TensorSource(Protocol):
    """A read-only mapping from checkpoint key to tensor."""

    def keys(self) -> Iterable[str]: ...

    def shape(self, key: str) -> tuple[int, ...]: ...

    def read(self, key: str) -> np.ndarray:
        """The tensor as a float32 (or integer) numpy array."""
        ...


class SafetensorsFile:
    """One ``.safetensors`` file, memory-mapped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as f:
                (header_len,) = struct.unpack("<Q", f.read(8))
                if header_len <= 0 or header_len > 100_000_000:
                    raise ValueError(f"implausible header length {header_len}")
                header = json.loads(f.read(header_len))
        except (OSError, ValueError, struct.error) as exc:
            raise ModelSourceError(f"cannot read safetensors file {path}: {exc}") from exc
        header.pop("__metadata__", None)
        self._entries = header
        self._data_start = 8 + header_len

    def keys(self) -> Iterable[str]:
        return self._entries.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def read(self, key: str) -> np.ndarray:
        """Read one tensor (a plain read, not a mapping: memory holds one tensor at a time)."""
        entry = self._entries[key]
        dtype_name = entry["dtype"]
        if dtype_name not in _SAFETENSORS_DTYPES:
            raise ModelSourceError(f"{self.path}: tensor {key} has unsupported dtype {dtype_name}")
        begin, end = entry["data_offsets"]
        dtype = _SAFETENSORS_DTYPES[dtype_name]
        try:
            array = np.fromfile(self.path, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                offset=self._data_start + begin)
        except (OSError, ValueError) as exc:
            raise ModelSourceError(f"cannot read tensor {key} from {self.path}: {exc}") from exc
        if array.nbytes != end - begin:
            raise ModelSourceError(f"{self.path} is truncated: tensor {key} is incomplete")
        array = array.reshape(entry["shape"])
        if dtype_name == "BF16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        if array.dtype.kind == "f":
            return array.astype(np.float32, copy=False)
        return array


class TorchBinFile:
    """One PyTorch ``.bin`` state dict (needs torch)."""

    def __init__(self, path: Path) -> None:
        try:
            import torch
        except ImportError as exc:
            raise ModelSourceError(
                f"{path.name} is a PyTorch checkpoint; reading it needs torch: pip install 'ortgen[export]'"
            ) from exc
        self.path = path
        try:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) files cannot be memory-mapped
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt or unsafe files
            raise ModelSourceError(f"cannot read PyTorch checkpoint {path}: {exc}") from exc
        if not isinstance(state, dict):
            raise ModelSourceError(f"{path} does not hold a state dict (got {type(state).__name__})")
        self._state = {k: v for k, v in state.items() if hasattr(v, "shape")}

    def keys(self) -> Iterable[str]:
        return self._state.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._state[key].shape)

    def read(self, key: str) -> np.ndarray:
        tensor = self._state[key]
        if tensor.is_floating_point():
            return tensor.float().numpy()
        return tensor.numpy()


class ShardedSource:
    """Several files behind one key space (sharded checkpoints)."""

    def __init__(self, sources: list[TensorSource]) -> None:
        self._by_key: dict[str, TensorSource] = {}
        for source in sources:
            for key in source.keys():
                self._by_key[key] = source

    def keys(self) -> Iterable[str]:
        return self._by_key.keys()

    def shape(self, key: str) -> tuple[int, ...]:
        return self._by_key[key].shape(key)

    def read(self, key: str) -> np.ndarray:
        return self._by_key[key].read(key)


def _open_one(path: Path) -> TensorSource:
    if path.suffix == ".safetensors":
        return SafetensorsFile(path)
    return TorchBinFile(path)


def open_weights(model_dir: Path) -> TensorSource:
    """Open the weights of a Hugging Face model directory (single file or sharded).

    Safetensors is preferred when both formats are present.
    """
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index_path = model_dir / index_name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text())["weight_map"]
            except (OSError, ValueError, KeyError) as exc:
                raise ModelSourceError(f"cannot read shard index {index_path}: {exc}") from exc
            shard_names = sorted(set(weight_map.values()))
            missing = [name for name in shard_names if not (model_dir / name).is_file()]
            if missing:
                raise ModelSourceError(f"{index_path.name} lists shards that are missing: {', '.join(missing)}")
            log.info("reading %d weight shards from %s", len(shard_names), model_dir)
            return ShardedSource([_open_one(model_dir / name) for name in shard_names])
    for name in ("model.safetensors", "pytorch_model.bin"):
        path = model_dir / name
        if path.is_file():
            return _open_one(path)
    raise ModelSourceError(
        f"no weights in {model_dir}: expected model.safetensors, pytorch_model.bin or a sharded index"
    )


_NUMPY_TO_SAFETENSORS = {np.dtype(v).str: k for k, v in _SAFETENSORS_DTYPES.items() if k != "BF16"}


def write_safetensors(
    path: Path,
    tensors: dict[str, np.ndarray] | dict[str, tuple[tuple[int, ...], Callable[[], np.ndarray]]],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file (no torch needed).

    Values are arrays, or ``(shape, make)`` pairs where ``make()`` returns the float32
    array when it is written: a checkpoint larger than memory is produced one tensor at
    a time.
    """
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name, value in tensors.items():
        if isinstance(value, np.ndarray):
            shape, dtype = value.shape, value.dtype
        else:
            shape, dtype = value[0], np.dtype(np.float32)
        kind = _NUMPY_TO_SAFETENSORS.get(dtype.str)
        if kind is None:
            raise ValueError(f"cannot store dtype {dtype} in safetensors")
        nbytes = int(np.prod(shape)) * dtype.itemsize
        header[name] = {"dtype": kind, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # align the data section
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for name, value in tensors.items():
            array = value if isinstance(value, np.ndarray) else value[1]()
            expected = tuple(header[name]["shape"])  # type: ignore[index]
            if tuple(array.shape) != expected:
                raise ValueError(f"{name}: produced shape {array.shape}, declared {expected}")
            f.write(memoryview(np.ascontiguousarray(array).reshape(-1).view(np.uint8)))
