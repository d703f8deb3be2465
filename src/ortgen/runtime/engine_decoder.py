"""One call of ``decoder_engine.onnx`` over the rows of a step: what goes in, how it is bound.

A step is a list of row entries, each ``(row, tokens, positions, new length, bias, logits?)``:
a chunk of a prompt being prefilled, or the next token of each of a request's sequences.
:class:`StepBuilder` packs them the way the graph wants (see
:mod:`ortgen.export.engine_graph`)::

    rows of the step:  [ row 0: 256-token prompt chunk | row 3: beams 0..4 | row 5: 1 greedy token ]
    input_ids [1, T]   (packed: 256 + 5 + 1 tokens, row by row)
    slot_tokens        [rows, S=256]: row 0 -> tokens 0..255; row 3 -> 256..260, padding; ...
    query_seqlens      [256, 0, 0, 5, 0, 1]   (rows without an entry get nothing)
    logits_index       [255, 256..260, 261]   (prompt chunks give logits only after their last token)

and :class:`EngineDecoder` binds them with the pool's cache buffers (in place) and runs, fetching
either the picked rows' whole logits or, when every search of the step can choose from a few
candidates (:func:`ortgen.runtime.search.best_k`), only each row's ``best_k`` largest logits, their
ids and log-sum-exp: on a GPU the ``[picks, vocab]`` logits then never leave the device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import onnxruntime as ort

from ortgen.package import contract
from ortgen.package.contract import (
    ATTENTION_BIAS,
    BEST_IDS,
    BEST_K,
    BEST_LOGITS,
    LOGSUMEXP,
    LOGITS_INDEX,
    QUERY_SEQLENS,
    SEQLENS_K,
    SLOT_TOKENS,
    TOKEN_SLOTS,
    TOTAL_SEQUENCE_LENGTH,
    past_key_name,
    past_value_name,
    present_key_name,
    present_value_name,
)
from ortgen.runtime.batch_invariance import MIN_SLOTS, ROW_MULTIPLE, padded_count
from ortgen.runtime.kv_pool import KVPool
from ortgen.runtime.search import BestTokens


@dataclass
class _Entry:
    row: int
    tokens: np.ndarray  # int32 [q]
    positions: np.ndarray  # int32 [q]
    length: int  # the row's valid length after this step
    bias: np.ndarray | None  # float32 [q, >= length] (0 or -inf) or None (causal only)
    logits: str  # "all", "last" or "none"


@dataclass
class StepBatch:
    """The packed inputs of one engine call, and where each entry's logits land."""

    inputs: dict[str, np.ndarray]
    rows: int
    logit_slices: list[slice] = field(default_factory=list)  # per entry, rows of the logits output
    tokens: int = 0  # the step's real tokens
    padding: int = 0  # tokens added so the linear layers see a batch-invariant row count


class StepBuilder:
    """Collect a step's row entries, then :meth:`build` the graph's inputs."""

    def __init__(self) -> None:
        self.entries: list[_Entry] = []

    def add(self, row: int, tokens: Sequence[int] | np.ndarray, positions: Sequence[int] | np.ndarray, length: int,
            *, bias: np.ndarray | None = None, logits: str = "all") -> int:
        """Add an entry; returns its index (its logits come back in that order)."""
        self.entries.append(_Entry(row, np.asarray(tokens, np.int32), np.asarray(positions, np.int32), length,
                                   bias, logits))
        return len(self.entries) - 1

    @property
    def widest(self) -> int:
        return max((len(e.tokens) for e in self.entries), default=0)

    def build(self, bind_rows: int, float_dtype: str = "float32", row_multiple: int = 1) -> StepBatch:
        """Inputs over rows ``[0, bind_rows)`` (every entry's row must be below it); the attention
        bias in ``float_dtype``, the graph's. ``row_multiple``: the packed tokens and the picked logit
        rows are padded to a multiple of it (:mod:`ortgen.runtime.batch_invariance`): padding tokens
        run through the linear layers only (no cache row, no logits read), padding picks repeat the
        last one."""
        entries = self.entries
        S = max(self.widest, MIN_SLOTS)
        T = sum(len(e.tokens) for e in entries)
        total = max(max(e.length for e in entries), S)  # GroupQueryAttention wants total >= S
        input_ids = np.concatenate([e.tokens for e in entries])[None, :]
        positions = np.concatenate([e.positions for e in entries])[None, :]
        slot_tokens = np.zeros((bind_rows, S), np.int32)
        token_slots = np.empty(T, np.int32)
        query = np.zeros(bind_rows, np.int32)
        seqlens = np.zeros(bind_rows, np.int32)
        needs_bias = any(e.bias is not None for e in entries)
        bias = np.zeros((bind_rows if needs_bias else 1, 1, S, total), float_dtype)
        picks: list[np.ndarray] = []
        slices: list[slice] = []
        start = picked = 0
        for e in entries:
            q = len(e.tokens)
            packed = np.arange(start, start + q, dtype=np.int32)
            slot_tokens[e.row, :q] = packed
            token_slots[start:start + q] = e.row * S + np.arange(q, dtype=np.int32)
            query[e.row] = q
            seqlens[e.row] = e.length - 1
            if e.bias is not None:
                width = min(e.bias.shape[1], total)
                bias[e.row, 0, :q, :width] = e.bias[:, :width]
            chosen = packed if e.logits == "all" else packed[-1:] if e.logits == "last" else packed[:0]
            picks.append(chosen)
            slices.append(slice(picked, picked + len(chosen)))
            picked += len(chosen)
            start += q
        logits_index = np.concatenate(picks).astype(np.int32) if picks else np.zeros(0, np.int32)
        padding = padded_count(T, row_multiple) - T
        if padding:
            filler = np.zeros((1, padding), np.int32)
            input_ids = np.concatenate([input_ids, filler], axis=1)
            positions = np.concatenate([positions, filler], axis=1)
            token_slots = np.concatenate([token_slots, filler[0]])  # reads slot 0's output; never written back
        extra = padded_count(len(logits_index), row_multiple) - len(logits_index)
        if extra:
            logits_index = np.concatenate([logits_index, np.repeat(logits_index[-1:], extra)])
        inputs = {
            contract.INPUT_IDS: input_ids,
            contract.POSITION_IDS: positions,
            SLOT_TOKENS: slot_tokens,
            TOKEN_SLOTS: token_slots,
            SEQLENS_K: seqlens,
            TOTAL_SEQUENCE_LENGTH: np.array(total, np.int32),
            QUERY_SEQLENS: query,
            ATTENTION_BIAS: bias,
            LOGITS_INDEX: logits_index,
        }
        return StepBatch(inputs, bind_rows, slices, T, padding)


class EngineDecoder:
    """One ONNX Runtime session of the engine graph, run over a :class:`KVPool`."""

    def __init__(self, session: ort.InferenceSession, num_layers: int, float_dtype: str = "float32",
                 row_multiple: int = ROW_MULTIPLE, window: int | None = None) -> None:
        self.session = session
        self.window = window  # attention window in positions (the manifest's architecture.sliding_window), or None
        self.num_layers = num_layers
        self.float_dtype = float_dtype  # the graph's cache, attention bias and logits
        self.row_multiple = row_multiple  # step rows padded to a multiple of it (batch invariance)
        outputs = {o.name: o for o in session.get_outputs()}
        self.vocab_size = int(outputs[contract.LOGITS].shape[-1])
        self.has_best = BEST_IDS in outputs  # packages exported before the best_* outputs lack them
        self._takes_best_k = any(i.name == BEST_K for i in session.get_inputs())

    def run(self, pool: KVPool, batch: StepBatch, best_k: int | None = None, *, whole: bool | None = None
            ) -> np.ndarray | BestTokens | tuple[np.ndarray, BestTokens]:
        """Run one step. Returns the picked rows' logits, [K, vocab] in the graph's dtype; or, with
        ``best_k`` (the graph must have the best_* outputs), their ``best_k`` best tokens; or, with
        ``best_k`` and ``whole=True``, both (a step whose requests need one or the other: each gets what
        it would get alone)."""
        io = self.session.io_binding()
        fetch_whole = best_k is None or bool(whole)
        fetched = ([contract.LOGITS] if fetch_whole else []) + ([BEST_LOGITS, BEST_IDS, LOGSUMEXP] if best_k else [])
        for name in fetched:  # first: get_outputs() lists outputs in binding order
            io.bind_output(name, "cpu")
        for name, value in batch.inputs.items():
            io.bind_cpu_input(name, np.ascontiguousarray(value))
        if self._takes_best_k:
            io.bind_cpu_input(BEST_K, np.array([min(best_k or 1, self.vocab_size)], np.int64))
        for layer, (key, value) in enumerate(pool.ort_values(batch.rows)):
            io.bind_ortvalue_input(past_key_name(layer), key)
            io.bind_ortvalue_input(past_value_name(layer), value)
            io.bind_ortvalue_output(present_key_name(layer), key)
            io.bind_ortvalue_output(present_value_name(layer), value)
        self.session.run_with_iobinding(io)
        values = [value.numpy() for value in io.get_outputs()[:len(fetched)]]
        if best_k is None:
            return values[0]
        best = BestTokens(values[-3], values[-2], values[-1], self.vocab_size)
        return (values[0], best) if fetch_whole else best
