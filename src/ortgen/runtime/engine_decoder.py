"""Run ``decoder_engine.onnx`` step by step over a KV cache shared by each prompt's sequences.

One cache row per prompt, not per beam. The prompt's keys and values are written once; then,
at every step, each of the prompt's ``width`` sequences (beams, or samples) appends one token
at its own new position, so a row holds::

    [ prompt (P tokens) | step 0: seq 0, seq 1, ..., seq w-1 | step 1: seq 0, ... | ... ]

A sequence attends to the prompt and to the positions on its own path (its ancestors after
each beam reorder), which :class:`Paths` tracks and the graph receives as an additive
``attention_bias`` (0 visible, -inf hidden); com.microsoft GroupQueryAttention applies it
on top of its causal mask. So:

- the prompt runs once and is stored once per input (transformers and ONNX Runtime's
  BeamSearch run and store it ``num_beams`` times);
- a step reads the prompt's keys and values once for all beams, which is most of the
  memory traffic of a decoding step on long prompts;
- beam reordering copies no keys or values, only a small boolean path table.

The cache buffers (:class:`KVCache`) are allocated once, wrapped as ONNX Runtime values
without a copy and bound as both past and present: the graph writes new keys in place.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnxruntime as ort

from ortgen.package import contract
from ortgen.package.contract import (
    ATTENTION_BIAS,
    LAST_INDEX,
    QUERY_SEQLENS,
    SEQLENS_K,
    TOTAL_SEQUENCE_LENGTH,
    past_key_name,
    past_value_name,
    present_key_name,
    present_value_name,
)


class KVCache:
    """Keys and values of ``rows`` cache rows, up to ``capacity`` positions each."""

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

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.keys) + sum(a.nbytes for a in self.values)

    def ort_values(self, layer: int) -> tuple[Any, Any]:
        return self._key_values[layer], self._value_values[layer]


class Paths:
    """Which generated positions each sequence of each prompt sees: ``visible[b, j, s * width + i]``
    is True when the token sequence ``i`` generated at step ``s`` is an ancestor of (or is)
    sequence ``j``'s latest token."""

    def __init__(self, prompts: int, width: int, max_steps: int) -> None:
        self.width = width
        self.visible = np.zeros((prompts, width, max(max_steps, 1) * width), dtype=bool)

    def advance(self, step: int, parents: np.ndarray | None) -> None:
        """Sequence j continues sequence ``parents[b, j]`` and adds its token of ``step``."""
        if parents is not None and step > 0:
            used = step * self.width
            self.visible[:, :, :used] = np.take_along_axis(self.visible[:, :, :used], parents[:, :, None], axis=1)
        columns = step * self.width + np.arange(self.width)
        self.visible[:, np.arange(self.width), columns] = True

    def bias(self, prompt_lengths: np.ndarray, steps: int, total: int) -> np.ndarray:
        """Additive attention bias [B, 1, width, total] over absolute cache positions."""
        relative = np.arange(total)[None, :] - prompt_lengths[:, None]  # (B, total): position - prompt length
        generated = (relative >= 0) & (relative < steps * self.width)
        index = np.broadcast_to(relative.clip(0, self.visible.shape[2] - 1)[:, None, :],
                                (len(prompt_lengths), self.width, total))
        sees = np.take_along_axis(self.visible, index, axis=2) & generated[:, None, :]
        sees |= (relative < 0)[:, None, :]
        return np.where(sees, np.float32(0), np.float32(-np.inf))[:, None, :, :]


class EngineDecoder:
    """One ONNX Runtime session of the engine graph."""

    def __init__(self, session: ort.InferenceSession, num_layers: int, num_heads: int, head_dim: int,
                 vocab_size: int) -> None:
        self.session = session
        self.num_layers, self.num_heads, self.head_dim, self.vocab_size = num_layers, num_heads, head_dim, vocab_size
        self._logits: dict[tuple[int, int], tuple[np.ndarray, Any]] = {}
        self._cache: KVCache | None = None

    def new_cache(self, rows: int, capacity: int) -> KVCache:
        """A cache for ``rows`` prompts of up to ``capacity`` positions each.

        The last one is reused when it fits: its memory is already mapped (fresh pages cost a
        page fault each on first write), and stale contents are never read, since attention
        only looks at each row's first ``length`` positions and every prompt is written
        from position 0.
        """
        cached = self._cache
        if cached is not None and cached.rows == rows and capacity <= cached.capacity <= 2 * capacity:
            return cached
        self._cache = None  # free the old buffers before allocating the new ones
        self._cache = KVCache.allocate(self.num_layers, rows, self.num_heads, capacity, self.head_dim)
        return self._cache

    def _logits_buffer(self, rows: int, picks: int) -> tuple[np.ndarray, Any]:
        key = (rows, picks)
        if key not in self._logits:
            array = np.zeros((rows, picks, self.vocab_size), np.float32)
            self._logits[key] = (array, ort.OrtValue.ortvalue_from_numpy(array))
        return self._logits[key]

    def run(self, cache: KVCache, input_ids: np.ndarray, position_ids: np.ndarray, lengths: np.ndarray,
            bias: np.ndarray, last_index: np.ndarray) -> np.ndarray:
        """Append ``input_ids`` [rows, S] (right-padded: row r has ``S`` or fewer tokens, ending at
        its length ``lengths[r]`` after this call) and return the logits at ``last_index``
        [rows, K] positions of the chunk: [rows, K, vocab] (a reused buffer: copy to keep)."""
        rows, width = input_ids.shape
        if rows != cache.rows:
            raise ValueError(f"{rows} input rows for a cache of {cache.rows}")
        total = int(lengths.max())
        if total > cache.capacity:
            raise ValueError(f"sequence length {total} exceeds the cache capacity {cache.capacity}")
        logits, logits_value = self._logits_buffer(rows, last_index.shape[1])
        io = self.session.io_binding()
        io.bind_cpu_input(contract.INPUT_IDS, np.ascontiguousarray(input_ids, dtype=np.int32))
        io.bind_cpu_input(contract.POSITION_IDS, np.ascontiguousarray(position_ids, dtype=np.int32))
        io.bind_cpu_input(SEQLENS_K, (lengths - 1).astype(np.int32))
        io.bind_cpu_input(TOTAL_SEQUENCE_LENGTH, np.array(total, dtype=np.int32))
        io.bind_cpu_input(QUERY_SEQLENS, np.minimum(width, lengths).astype(np.int32))
        io.bind_cpu_input(ATTENTION_BIAS, np.ascontiguousarray(bias, dtype=np.float32))
        io.bind_cpu_input(LAST_INDEX, np.ascontiguousarray(last_index, dtype=np.int32))
        io.bind_ortvalue_output(contract.LOGITS, logits_value)
        for layer in range(self.num_layers):
            key, value = cache.ort_values(layer)
            io.bind_ortvalue_input(past_key_name(layer), key)
            io.bind_ortvalue_input(past_value_name(layer), value)
            io.bind_ortvalue_output(present_key_name(layer), key)
            io.bind_ortvalue_output(present_value_name(layer), value)
        self.session.run_with_iobinding(io)
        return logits

    def start(self, prompts: Sequence[Sequence[int]], width: int, max_new_tokens: int) -> tuple["Decoding", np.ndarray]:
        """Run the prompts (one cache row each) for ``width`` sequences per prompt; returns the
        decoding state and the logits after each prompt's last token, [len(prompts), vocab]."""
        lengths = np.array([len(p) for p in prompts], np.int64)
        longest = int(lengths.max())
        cache = self.new_cache(len(prompts), longest + max_new_tokens * width)
        ids = np.zeros((len(prompts), longest), np.int32)
        for row, prompt in enumerate(prompts):
            ids[row, : len(prompt)] = prompt
        positions = np.broadcast_to(np.arange(longest, dtype=np.int32), ids.shape)
        causal_only = np.zeros((1, 1, longest, longest), np.float32)
        logits = self.run(cache, ids, positions, lengths, causal_only, (lengths - 1)[:, None])[:, 0].copy()
        return Decoding(self, cache, lengths, width, max_new_tokens), logits


class Decoding:
    """The state of one generation: each prompt's ``width`` sequences and their paths."""

    def __init__(self, decoder: EngineDecoder, cache: KVCache, prompt_lengths: np.ndarray, width: int,
                 max_steps: int) -> None:
        self.decoder, self.cache, self.prompt_lengths, self.width = decoder, cache, prompt_lengths, width
        self.paths = Paths(len(prompt_lengths), width, max_steps)
        self.steps = 0
        self._last_index = np.broadcast_to(np.arange(width, dtype=np.int32), (len(prompt_lengths), width))

    def step(self, tokens: np.ndarray, parents: np.ndarray | None = None) -> np.ndarray:
        """Feed each sequence's new token, ``tokens`` [prompts, width]; sequence j of prompt b
        continues sequence ``parents[b, j]`` (beam search; None: its own). Returns the next
        logits, [prompts, width, vocab] (a reused buffer: copy to keep)."""
        step = self.steps
        self.paths.advance(step, parents)
        lengths = self.prompt_lengths + (step + 1) * self.width
        total = int(lengths.max())
        positions = np.broadcast_to((self.prompt_lengths + step)[:, None], tokens.shape)
        bias = self.paths.bias(self.prompt_lengths, step + 1, total)
        logits = self.decoder.run(self.cache, tokens, positions, lengths, bias, self._last_index)
        self.steps += 1
        return logits
