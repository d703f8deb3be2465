"""Run ``decoder_engine.onnx`` step by step over a KV cache that is never re-allocated.

:class:`KVCache` owns one numpy buffer per layer for keys and one for values, shaped
``[rows, heads, capacity, head_dim]``, wrapped as ONNX Runtime values without a copy. The
engine graph (com.microsoft GroupQueryAttention) reads past keys from those buffers and
writes new ones in place, at each row's own length: rows never need padding, and a step
costs one token per row. Beam search reorders rows in place (:meth:`KVCache.reorder`).

:class:`EngineDecoder` binds inputs and outputs with IO binding; the logits output is a
buffer reused across steps.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from ortgen import contract

SEQLENS_K = "seqlens_k"
TOTAL_SEQUENCE_LENGTH = "total_sequence_length"
LAST_INDEX = "last_index"


class KVCache:
    """Keys and values of ``rows`` sequences, up to ``capacity`` positions each."""

    def __init__(self, keys: list[np.ndarray], values: list[np.ndarray]) -> None:
        self.keys, self.values = keys, values
        self.rows, self.capacity = keys[0].shape[0], keys[0].shape[2]
        # ONNX Runtime values over the same memory: the graph reads and writes these arrays
        self._key_values = [ort.OrtValue.ortvalue_from_numpy(a) for a in keys]
        self._value_values = [ort.OrtValue.ortvalue_from_numpy(a) for a in values]

    @classmethod
    def allocate(cls, layers: int, rows: int, heads: int, capacity: int, head_dim: int) -> "KVCache":
        shape = (rows, heads, capacity, head_dim)
        return cls([np.zeros(shape, np.float32) for _ in range(layers)],
                   [np.zeros(shape, np.float32) for _ in range(layers)])

    def first_rows(self, rows: int) -> "KVCache":
        """The first ``rows`` rows as a cache of their own, sharing memory (contiguous slices)."""
        if rows == self.rows:
            return self
        return KVCache([k[:rows] for k in self.keys], [v[:rows] for v in self.values])

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys) + sum(a.nbytes for a in self.values)

    def ort_values(self, layer: int) -> tuple[Any, Any]:
        return self._key_values[layer], self._value_values[layer]

    def reorder(self, source_rows: np.ndarray, length: int) -> None:
        """Row r takes the first ``length`` positions of row ``source_rows[r]`` (beam search)."""
        if np.array_equal(source_rows, np.arange(self.rows)):
            return
        moved = np.nonzero(source_rows != np.arange(self.rows))[0]
        sources = source_rows[moved]
        for buffer in (*self.keys, *self.values):
            buffer[moved, :, :length] = buffer[sources, :, :length]  # the right side is gathered first

    def copy_rows(self, source_rows: Sequence[int], target_rows: Sequence[int], length: int) -> None:
        for buffer in (*self.keys, *self.values):
            buffer[list(target_rows), :, :length] = buffer[list(source_rows), :, :length]


class EngineDecoder:
    """One ONNX Runtime session of the engine graph."""

    def __init__(self, session: ort.InferenceSession, num_layers: int, num_heads: int, head_dim: int,
                 vocab_size: int) -> None:
        self.session = session
        self.num_layers, self.num_heads, self.head_dim, self.vocab_size = num_layers, num_heads, head_dim, vocab_size
        self._logits: dict[int, tuple[np.ndarray, Any]] = {}
        self._cache: KVCache | None = None

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        """A cache for ``rows`` sequences of up to ``capacity`` positions.

        The last one is reused when it fits: its memory is already mapped (fresh pages cost a
        page fault each on first write), and stale contents are never read, since attention
        only looks at each row's first ``length`` positions and every prompt is written
        from position 0.
        """
        cached = self._cache
        if cached is not None and cached.rows == rows and capacity <= cached.capacity <= 2 * capacity:
            return cached
        self._cache = KVCache.allocate(self.num_layers, rows, self.num_heads, capacity, self.head_dim)
        return self._cache

    def _logits_buffer(self, rows: int) -> tuple[np.ndarray, Any]:
        if rows not in self._logits:
            array = np.zeros((rows, self.vocab_size), np.float32)
            self._logits[rows] = (array, ort.OrtValue.ortvalue_from_numpy(array))
        return self._logits[rows]

    def run(self, cache: KVCache, input_ids: np.ndarray, position_ids: np.ndarray, lengths: np.ndarray,
            last_index: np.ndarray) -> np.ndarray:
        """Feed ``input_ids`` [rows, S] (row r's tokens end at ``last_index[r]``); ``lengths`` are the
        rows' total lengths after this call. Returns logits [rows, vocab] (a reused buffer: copy to keep)."""
        rows = input_ids.shape[0]
        if rows != cache.rows:
            raise ValueError(f"{rows} input rows for a cache of {cache.rows}")
        if int(lengths.max()) > cache.capacity:
            raise ValueError(f"sequence length {int(lengths.max())} exceeds the cache capacity {cache.capacity}")
        logits, logits_value = self._logits_buffer(rows)
        io = self.session.io_binding()
        io.bind_cpu_input(contract.INPUT_IDS, np.ascontiguousarray(input_ids, dtype=np.int32))
        io.bind_cpu_input(contract.POSITION_IDS, np.ascontiguousarray(position_ids, dtype=np.int32))
        io.bind_cpu_input(SEQLENS_K, (lengths - 1).astype(np.int32))
        io.bind_cpu_input(TOTAL_SEQUENCE_LENGTH, np.array(int(lengths.max()), dtype=np.int32))
        io.bind_cpu_input(LAST_INDEX, np.ascontiguousarray(last_index, dtype=np.int32))
        io.bind_ortvalue_output(contract.LOGITS, logits_value)
        for layer in range(self.num_layers):
            key, value = cache.ort_values(layer)
            io.bind_ortvalue_input(f"past_key_{layer}", key)
            io.bind_ortvalue_input(f"past_value_{layer}", value)
            io.bind_ortvalue_output(f"present_key_{layer}", key)
            io.bind_ortvalue_output(f"present_value_{layer}", value)
        self.session.run_with_iobinding(io)
        return logits

    def prefill(self, cache: KVCache, prompts: Sequence[Sequence[int]]) -> np.ndarray:
        """Run each prompt from position 0 into cache rows 0..len(prompts)-1 (right-padded batch);
        returns the logits after each prompt's last token, [len(prompts), vocab] (a copy)."""
        width = max(len(p) for p in prompts)
        ids = np.zeros((len(prompts), width), np.int32)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = prompt
        positions = np.broadcast_to(np.arange(width, dtype=np.int32), ids.shape)
        lengths = np.array([len(p) for p in prompts], np.int64)
        if len(prompts) == cache.rows:
            return self.run(cache, ids, positions, lengths, lengths - 1).copy()
        raise ValueError("prefill fills the whole cache; use a cache with one row per prompt")

    def step(self, cache: KVCache, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """One new token per row at position ``lengths - 1``; returns logits [rows, vocab] (reused buffer)."""
        tokens = tokens.reshape(-1, 1)
        positions = (lengths - 1).reshape(-1, 1)
        return self.run(cache, tokens, positions, lengths, np.zeros(len(tokens), np.int32))
