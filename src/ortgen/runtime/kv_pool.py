"""The step engine's KV cache as a pool of rows, allocated once, handed to requests one row each.

One key buffer and one value buffer per layer, ``[rows, heads, capacity, head_dim]``. A request
takes a row when it starts and gives it back when it ends or is cancelled; its prompt and then,
step by step, one token per beam (or sample) are appended to that row (see
:mod:`ortgen.runtime.paths`). The engine graph reads and writes the buffers in place through IO
binding, as both past and present.

Memory. On the CPU the buffers are anonymous memory mappings reserved without committing
(``MAP_NORESERVE``): a page costs physical memory only once written, and when a row is given back
its pages are returned to the system (``madvise(MADV_DONTNEED)``). So the resident size of the
pool follows what running requests hold, and the scheduler's KV budget (bytes reserved by
running requests) is the memory actually used, not a virtual reservation. A row range
``[0, hi)`` is bound per step as views of the same memory (no copy), so a step over 3 busy rows
of a 64-row pool costs 3 rows of attention.

On CUDA the buffers are device memory (ONNX Runtime values allocated on the device), bound the
same way; the whole pool is bound every step (idle rows get no new tokens and cost nothing).
"""

from __future__ import annotations

import heapq
import logging
import mmap
import os
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)

_MAP_NORESERVE = 0x4000 if sys.platform.startswith("linux") else 0  # not exported by Python's mmap module
_ROW_ALIGN_POSITIONS = 128  # capacity is rounded up so that every row starts on a page boundary


@dataclass(frozen=True)
class PoolShape:
    layers: int
    rows: int
    heads: int
    capacity: int  # positions per row
    head_dim: int  # the cache's (possibly padded) head size
    dtype: str = "float32"  # the engine graph's cache dtype: float32 or float16

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def bytes_per_position(self) -> int:
        """Keys and values of one position of one row, all layers."""
        return 2 * self.layers * self.heads * self.head_dim * self.itemsize

    @property
    def row_bytes(self) -> int:
        """One row of one buffer (one layer's keys, say)."""
        return self.heads * self.capacity * self.head_dim * self.itemsize


def round_capacity(positions: int) -> int:
    return -(-positions // _ROW_ALIGN_POSITIONS) * _ROW_ALIGN_POSITIONS


class _HostBuffer:
    """An array over an anonymous mapping whose pages can be handed back."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        try:
            self._map: mmap.mmap | None = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS
                                                    | _MAP_NORESERVE)
            self.array = np.frombuffer(self._map, dtype=dtype).reshape(shape)
        except (OSError, ValueError, AttributeError):  # no anonymous mmap here: plain (lazily zeroed) memory
            self._map = None
            self.array = np.zeros(shape, dtype)

    def release_rows(self, start: int, count: int, row_bytes: int) -> None:
        if self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, start * row_bytes, count * row_bytes)


class KVPool:
    """Rows of keys and values for every layer; see the module docstring."""

    def __init__(self, shape: PoolShape, device: str = "cpu") -> None:
        self.shape = shape
        self.device = device
        dims = (shape.rows, shape.heads, shape.capacity, shape.head_dim)
        self._free = list(range(shape.rows))
        heapq.heapify(self._free)
        self._views: tuple[int, list[tuple[Any, Any]]] | None = None
        if device == "cpu":
            self._keys = [_HostBuffer(dims, shape.dtype) for _ in range(shape.layers)]
            self._values = [_HostBuffer(dims, shape.dtype) for _ in range(shape.layers)]
            self._device_values: list[tuple[Any, Any]] = []
        else:  # device memory: ONNX Runtime allocates it; bound whole
            self._keys, self._values = [], []
            self._device_values = [
                (ort.OrtValue.ortvalue_from_shape_and_type(dims, np.dtype(shape.dtype), device, 0),
                 ort.OrtValue.ortvalue_from_shape_and_type(dims, np.dtype(shape.dtype), device, 0))
                for _ in range(shape.layers)]
        log.debug("KV pool: %d rows x %d positions, %.1f MB per row (reserved, committed on use)",
                  shape.rows, shape.capacity, shape.bytes_per_position * shape.capacity / 1e6)

    @property
    def free_rows(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """The lowest free row (keeps busy rows at the front, so steps bind few rows)."""
        if not self._free:
            raise RuntimeError("no free KV row")  # the scheduler checks free_rows first
        return heapq.heappop(self._free)

    def give_back(self, row: int) -> None:
        heapq.heappush(self._free, row)
        for buffer in self._keys + self._values:
            buffer.release_rows(row, 1, self.shape.row_bytes)

    def bind_rows(self, hi: int) -> int:
        """How many rows a step must bind so that rows ``[0, hi)`` are included."""
        return hi if self.device == "cpu" else self.shape.rows

    def ort_values(self, rows: int) -> list[tuple[Any, Any]]:
        """Per layer, (keys, values) as ONNX Runtime values over rows ``[0, rows)`` of the pool."""
        if self.device != "cpu":
            return self._device_values
        if self._views is None or self._views[0] != rows:
            self._views = (rows, [(ort.OrtValue.ortvalue_from_numpy(k.array[:rows]),
                                   ort.OrtValue.ortvalue_from_numpy(v.array[:rows]))
                                  for k, v in zip(self._keys, self._values)])
        return self._views[1]

    def resident_bytes(self) -> int | None:
        """Memory of the host pool actually backed by RAM now, read from /proc/self/pagemap (Linux;
        None elsewhere). Measures what the KV budget promises; slow on huge pools (tests, benchmarks)."""
        if self.device != "cpu" or not os.path.exists("/proc/self/pagemap"):
            return None
        page = os.sysconf("SC_PAGE_SIZE")
        total = 0
        with open("/proc/self/pagemap", "rb") as pagemap:
            for buffer in self._keys + self._values:
                address = buffer.array.__array_interface__["data"][0]
                first, count = address // page, -(-buffer.array.nbytes // page)
                pagemap.seek(first * 8)
                entries = np.frombuffer(pagemap.read(count * 8), dtype=np.uint64)
                total += int(((entries >> np.uint64(63)) & np.uint64(1)).sum()) * page  # bit 63: page present
        return total

    def keys(self, layer: int) -> np.ndarray:
        """Layer ``layer``'s key buffer (host pools; tests read the cache through it)."""
        return self._keys[layer].array
