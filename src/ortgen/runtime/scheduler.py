"""Continuous batching: many requests, one decoder call per step.

    submit(request) ──► wait queue ──► admitted: a KV row from the pool ──► running set
                                                                             │ every step: ONE engine call
       rows of a step:  [ prefill chunk of a new request | beams 0..w-1 of A | samples 0..n-1 of B | ... ]
                                                                             │ per-request search: processors,
       handle ◄── progress / final output ◄── finished: row back to the pool ◄─┘ RNG, stop strings

A request owns its settings, processors, random generator, stop strings and unpadded history
(:mod:`ortgen.runtime.search`); a step owns nothing but the batch it assembles. So a request's
result never depends on what runs beside it: it equals the same request run alone, and, for
deterministic settings, transformers' ``generate()`` on that prompt alone.

Each step:

1. drop cancelled requests (their rows go back to the pool);
2. admit waiting requests first come, first served while a row, the sequence limit and the KV
   budget allow (the head of the queue is never overtaken, so a large request is not starved by
   a stream of small ones);
3. assemble: every decoding request contributes the next token of each live sequence; prompts
   being prefilled get chunks from a per-step token budget, oldest first, so a 1,000-token prompt
   is spread over several steps instead of stalling everyone already decoding;
4. run the engine once over the rows in use; hand each request its logits; publish progress;
   finish what is done.

Limits: ``max_sequences`` sequences at once (a beam-5 request counts 5), ``kv_budget`` bytes of
cache reserved by running requests (a request reserves its prompt + max_new_tokens x width
positions), ``max_queue`` waiting requests (``submit`` on a full queue raises QueueFullError),
``row_capacity`` positions per request. A request that could never fit is refused at once, with
the numbers. The loop runs in one background thread per scheduler, started by the first submit,
ended when idle for ``idle_seconds`` and by :meth:`close`.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ortgen.errors import QueueFullError, RequestTooLargeError
from ortgen.runtime.batch_invariance import chunk_grid
from ortgen.runtime.engine_decoder import EngineDecoder, StepBuilder
from ortgen.runtime.grammar import compute_masks
from ortgen.runtime.kv_pool import KVPool, PoolShape, round_capacity
from ortgen.runtime.paths import Paths, window_bias
from ortgen.runtime.processors import log_softmax
from ortgen.runtime.request import RequestHandle, RequestOutput, _Progress, cancelled_error
from ortgen.runtime.results import GeneratedSequence
from ortgen.runtime.search import BestTokens, Hypothesis, Search, SearchSpec, TokenLogprob, best_k, logprob_records, \
    make_search
from ortgen.runtime.settings import GenerationSettings

log = logging.getLogger(__name__)

DEFAULT_KV_BUDGET_FRACTION = 0.25  # of physical memory, at most DEFAULT_KV_BUDGET_MAX
DEFAULT_KV_BUDGET_MAX = 4 << 30


def default_kv_budget() -> int:
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 16 << 30
    return int(min(DEFAULT_KV_BUDGET_MAX, physical * DEFAULT_KV_BUDGET_FRACTION))


@dataclass(frozen=True)
class SchedulerLimits:
    """How much runs at once. ``None`` fields get defaults from the model (see :meth:`resolve`)."""

    max_sequences: int = 256  # sequences decoding at once (beams and samples count one each)
    max_requests: int = 64  # requests running at once: rows of the KV pool
    max_queue: int = 1024  # requests waiting for admission
    kv_budget: int | None = None  # bytes of KV cache reserved by running requests (default: 25% of RAM, <= 4 GiB)
    row_capacity: int | None = None  # positions one request may use (default: 4 x the model's positions)
    prefill_chunk: int = 256  # prompt tokens prefilled per step, over all requests
    idle_seconds: float = 2.0  # the loop thread ends after this long without work

    def resolve(self, max_positions: int) -> "SchedulerLimits":
        from dataclasses import replace

        for name in ("max_sequences", "max_requests", "max_queue", "prefill_chunk"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        return replace(self, kv_budget=self.kv_budget or default_kv_budget(),
                       row_capacity=self.row_capacity or 4 * max_positions)


@dataclass
class _Request:
    handle: RequestHandle
    prompt: list[int]
    settings: GenerationSettings  # concrete for this prompt
    spec: SearchSpec
    need: int  # positions of its row: prompt + max_new_tokens x width
    reserved: int  # bytes of KV budget
    row: int = -1
    prefilled: int = 0
    search: Search | None = None
    paths: Paths | None = None
    published: list[int] = field(default_factory=list)  # settled tokens published, per index
    best_k: int | None = None  # best tokens per row its search needs (None: whole logits rows); see search.best_k
    prompt_records: list[TokenLogprob | None] | None = None  # prompt_logprobs: one per prompt token so far

    def __post_init__(self) -> None:
        self.best_k = best_k(self.spec)
        if self.settings.prompt_logprobs is not None:
            self.best_k = None  # its prompt's rows come back whole, and its first step reads the last of them
            self.prompt_records = [None]  # the first token has nothing before it

    @property
    def scores_prompt(self) -> bool:
        return self.prompt_records is not None

    @property
    def width(self) -> int:
        return self.spec.width

    @property
    def decoding(self) -> bool:
        return self.search is not None


class Scheduler:
    """Owns the KV pool and the loop thread; see the module docstring."""

    def __init__(self, decoder: EngineDecoder, shape: PoolShape, limits: SchedulerLimits,
                 finish: Callable[[list[Hypothesis], GenerationSettings], list[GeneratedSequence]],
                 device: str = "cpu") -> None:
        self.decoder = decoder
        self.window = decoder.window  # Mistral's sliding window, applied through attention_bias (in positions)
        self.limits = limits
        # prompt chunks start on multiples of this, whatever else shares the step's budget, so a
        # prompt's attention calls never depend on its batch-mates (ortgen.runtime.batch_invariance)
        self.chunk_grid = chunk_grid(limits.prefill_chunk)
        self.pool = KVPool(shape, device)
        assert limits.row_capacity is not None
        self.capacity = limits.row_capacity  # positions one request may use (the pool adds headroom for a step)
        self._finish_sequences = finish
        self._cond = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._running: list[_Request] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._ids = itertools.count()
        self.reserved_bytes = 0
        self.running_sequences = 0
        self.stats = SchedulerStats()
        self.step_listeners: list[Callable[[int, int, float], None]] = []  # (rows, tokens, seconds) per step
        # fetch only each picked row's best tokens when every search of a step can do with them
        # (off: whole logits rows always; tests compare the two)
        self.fetch_best_tokens = True

    @classmethod
    def pool_shape(cls, layers: int, heads: int, head_dim: int, limits: SchedulerLimits,
                   dtype: str = "float32") -> PoolShape:
        """The pool for ``limits`` (resolved): rows = max_requests; each row holds row_capacity
        positions plus the headroom GroupQueryAttention wants for a step's widest row."""
        assert limits.row_capacity is not None
        capacity = round_capacity(limits.row_capacity + limits.prefill_chunk + limits.max_sequences)
        return PoolShape(layers, limits.max_requests, heads, capacity, head_dim, dtype)

    # -- submitting ---------------------------------------------------------------------------

    def next_id(self) -> str:
        return f"req-{next(self._ids)}"

    def check_fits(self, prompt_length: int, settings: GenerationSettings) -> tuple[int, int]:
        """(positions, bytes) a request needs; RequestTooLargeError when it could never run."""
        assert settings.max_new_tokens is not None and self.limits.kv_budget is not None
        width = settings.width
        need = prompt_length + settings.max_new_tokens * width
        nbytes = need * self.pool.shape.bytes_per_position
        if width > self.limits.max_sequences:
            raise RequestTooLargeError(
                f"this request runs {width} sequences side by side (num_beams / num_return_sequences); the "
                f"scheduler runs at most {self.limits.max_sequences} at once (max_sequences)")
        if need > self.capacity:
            raise RequestTooLargeError(
                f"this request needs {need} positions of KV cache (a {prompt_length}-token prompt + "
                f"max_new_tokens {settings.max_new_tokens} x {width} sequences); a request may use at most "
                f"{self.capacity} (row_capacity): lower max_new_tokens or the beam width")
        if nbytes > self.limits.kv_budget:
            raise RequestTooLargeError(
                f"this request needs {nbytes / 2**20:.1f} MiB of KV cache ({need} positions x "
                f"{self.pool.shape.bytes_per_position} bytes); the KV budget is "
                f"{self.limits.kv_budget / 2**20:.1f} MiB (kv_budget)")
        return need, nbytes

    def submit(self, handle: RequestHandle, prompt: list[int], settings: GenerationSettings, spec: SearchSpec) -> None:
        need, nbytes = self.check_fits(len(prompt), settings)
        request = _Request(handle, prompt, settings, spec, need, nbytes, published=[0] * spec.num_return_sequences)
        with self._cond:
            if self._closed:
                raise cancelled_error(handle, "refused: the generator is closed")
            if len(self._waiting) >= self.limits.max_queue:
                self.stats.rejected += 1
                raise QueueFullError(f"the wait queue is full ({self.limits.max_queue} requests waiting); "
                                     "try again later")
            self._waiting.append(request)
            self._cond.notify_all()
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ortgen-scheduler", daemon=True)
                self._thread.start()

    def cancel(self, handle: RequestHandle) -> None:
        with self._cond:
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    def close(self, timeout: float | None = 10.0) -> None:
        """Stop: fail what is waiting or running (RequestCancelledError) and end the loop thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        with self._cond:
            for request in list(self._waiting) + self._running:
                request.handle._finish(None, cancelled_error(request.handle, "cancelled: the generator closed"))
                if request in self._running:
                    self._release(request)
            self._waiting.clear()
            self._running.clear()

    # -- the loop -----------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    self._drop_cancelled()
                    self._admit()
                    if self._closed:
                        self._thread = None
                        return
                    if not self._running:
                        if not self._waiting:
                            self._cond.wait(self.limits.idle_seconds)
                            if not self._waiting and not self._running:
                                self._thread = None  # idle: the next submit starts a new thread
                                return
                        continue
                    requests = list(self._running)
                self._step(requests)
        except BaseException as exc:  # a bug: fail every request rather than hang their callers
            log.exception("the scheduler loop failed")
            with self._cond:
                for request in list(self._waiting) + self._running:
                    request.handle._finish(None, exc)
                    if request in self._running:
                        self._release(request)
                self._waiting.clear()
                self._running.clear()
                self._thread = None
            raise

    def _drop_cancelled(self) -> None:
        for request in [r for r in self._waiting if r.handle.cancelled]:
            self._waiting.remove(request)
            request.handle._finish(None, cancelled_error(request.handle))
        for request in [r for r in self._running if r.handle.cancelled]:
            self._running.remove(request)
            self._release(request)
            self.stats.cancelled += 1
            request.handle._finish(None, cancelled_error(request.handle))

    def _admit(self) -> None:
        budget = self.limits.kv_budget or 0
        while self._waiting:
            head = self._waiting[0]
            if (self.pool.free_rows == 0 or self.running_sequences + head.width > self.limits.max_sequences
                    or self.reserved_bytes + head.reserved > budget):
                return  # first come, first served: nothing overtakes the head of the queue
            self._waiting.popleft()
            head.row = self.pool.take()
            head.paths = Paths(len(head.prompt), head.width, head.spec.max_new_tokens)
            self.reserved_bytes += head.reserved
            self.running_sequences += head.width
            head.handle.timings.started = time.perf_counter()
            self._running.append(head)

    def _release(self, request: _Request) -> None:
        if request.row >= 0:
            self.pool.give_back(request.row)
            request.row = -1
            self.reserved_bytes -= request.reserved
            self.running_sequences -= request.width

    def _step(self, requests: Sequence[_Request]) -> None:
        """One engine call over ``requests`` (the running set when the step began)."""
        builder = StepBuilder()
        budget = self.limits.prefill_chunk
        plan: list[tuple[_Request, str]] = []  # (request, "decode" | "chunk" | "last chunk")
        masks = []  # structured output: the sequences whose grammar masks this step's logits need
        for request in requests:
            paths = request.paths
            assert paths is not None
            if request.decoding:
                assert request.search is not None
                if request.spec.grammar is not None:
                    state = request.spec.grammar
                    masks.append((state, state.pending(request.search.next_input_ids())))
                tokens, parents = request.search.feed()
                position = paths.prompt_length + paths.steps  # every sequence's new token sits at this position
                paths.advance(parents)
                bias = paths.bias(paths.length) if paths.width > 1 else None
                positions = np.full(paths.width, position)
                if self.window is not None and position >= self.window:
                    bias = window_bias(positions, paths.key_positions(paths.length), self.window, bias)
                builder.add(request.row, tokens, positions, paths.length, bias=bias)
                plan.append((request, "decode"))
            elif budget > 0:
                start = request.prefilled
                remaining = len(request.prompt) - start
                chunk = min(remaining, budget)
                if chunk < remaining:  # chunks end on the grid (batch invariance of attention)
                    chunk -= chunk % self.chunk_grid
                    if chunk == 0:
                        continue  # not enough of this step's budget left: next step
                budget -= chunk
                end = start + chunk
                last = end == len(request.prompt)
                logits = "all" if request.scores_prompt else "last" if last else "none"
                positions = np.arange(start, end)
                bias = (window_bias(positions, np.arange(end), self.window)
                        if self.window is not None and end > self.window else None)
                builder.add(request.row, request.prompt[start:end], positions, end, bias=bias, logits=logits)
                request.prefilled = end
                plan.append((request, "last chunk" if last else "chunk"))
        if not plan:
            return
        hi = max(request.row for request, _ in plan) + 1
        batch = builder.build(self.pool.bind_rows(hi), self.decoder.float_dtype, self.decoder.row_multiple)
        k, whole = self._fetch(plan)
        if masks:  # every constrained sequence of the step in one call, in llguidance's threads
            started = time.perf_counter()
            self.stats.grammar_masks += compute_masks(masks)
            self.stats.grammar_seconds += time.perf_counter() - started
        started = time.perf_counter()
        result = self.decoder.run(self.pool, batch, k, whole=whole)
        logits, best = result if isinstance(result, tuple) else (
            (None, result) if isinstance(result, BestTokens) else (result, None))
        seconds = time.perf_counter() - started
        self.stats.record_step(seconds, batch.tokens, len(plan))
        self.stats.best_token_steps += k is not None
        self.stats.mixed_fetch_steps += k is not None and whole
        for listener in self.step_listeners:
            listener(len(plan), batch.tokens, seconds)
        for (request, kind), rows in zip(plan, batch.logit_slices):
            if request.scores_prompt and kind != "decode":
                self._score_prompt(request, logits[rows])
            if kind == "chunk":
                continue
            use_best = best is not None and request.best_k is not None  # what it would use alone
            if kind == "last chunk":
                request.handle.timings.first_token = time.perf_counter()
                request.handle.prompt_logprobs = request.prompt_records
                if request.settings.max_new_tokens == 0:  # scoring only: nothing to generate
                    self._complete(request)
                    continue
                request.search = make_search(request.prompt, request.spec)
                if use_best:
                    request.search.first_best(best.rows(rows))
                else:
                    request.search.first(logits[rows][-1])
            else:
                assert request.search is not None
                if use_best:
                    request.search.step_best(best.rows(rows))
                else:
                    request.search.step(logits[rows])
            self._publish(request)
            if request.search.done:
                self._complete(request)

    def _fetch(self, plan: Sequence[tuple[_Request, str]]) -> tuple[int | None, bool]:
        """(best tokens per picked row, whole rows too?) for the step: each search gets what it would get
        alone, whatever shares the step (batch invariance: the in-graph log-sum-exp and numpy's log-softmax
        of a whole row differ in the last bits). best: the most any search that can choose from best tokens
        needs (None when none can, when the graph lacks the best_* outputs, or ``fetch_best_tokens`` is
        off); whole rows when a search needs them."""
        needs = [request.best_k for request, kind in plan if kind != "chunk" or request.scores_prompt]
        if not needs:
            return None, True
        if not (self.decoder.has_best and self.fetch_best_tokens):
            return None, True
        best = [k for k in needs if k is not None]
        return (max(best) if best else None), any(k is None for k in needs)

    def _publish(self, request: _Request) -> None:
        search = request.search
        assert search is not None
        eos = set(request.spec.eos_token_ids)
        progress = []
        for index, tokens in enumerate(search.settled()):
            text_tokens = tokens[:-1] if tokens and tokens[-1] in eos else tokens
            if len(text_tokens) > request.published[index]:
                logprobs = search.settled_logprobs(index, len(text_tokens)) if request.spec.logprobs is not None \
                    else None
                progress.append(_Progress(index, list(text_tokens), logprobs))
                request.published[index] = len(text_tokens)
        request.handle._publish(progress)

    def _score_prompt(self, request: _Request, logits: np.ndarray) -> None:
        """Log-probabilities of the prompt tokens this chunk's logits predict (row i: the token after it)."""
        records = request.prompt_records
        assert records is not None
        start = len(records)  # the next prompt token to score
        targets = request.prompt[start:start + len(logits)]
        if not targets:
            return
        records.extend(logprob_records(log_softmax(logits[:len(targets)]), np.asarray(targets),
                                       request.settings.prompt_logprobs or 0))

    def _complete(self, request: _Request) -> None:
        if request.search is None:  # max_new_tokens=0: the prompt scored, one empty sequence per return
            sequences = [GeneratedSequence([], "", False, None, "length", [] if request.settings.logprobs is not None
                                           else None)] * request.settings.num_return_sequences
        else:
            sequences = self._finish_sequences(request.search.hypotheses(), request.settings)
        with self._cond:
            if request in self._running:
                self._running.remove(request)
            self._release(request)
        request.handle.timings.finished = time.perf_counter()
        self.stats.completed += 1
        self.stats.generated_tokens += sum(len(s.token_ids) for s in sequences)
        self.stats.prompt_tokens += len(request.prompt)
        request.handle._finish(RequestOutput(request.handle.id, request.prompt, sequences, request.settings,
                                             request.handle.timings, request.prompt_records))


@dataclass
class SchedulerStats:
    """Counters for metrics (read without a lock: approximate while running)."""

    steps: int = 0
    step_seconds: float = 0.0
    step_tokens: int = 0
    step_rows: int = 0
    last_step_rows: int = 0
    completed: int = 0
    cancelled: int = 0
    rejected: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    grammar_masks: int = 0  # structured output: token masks computed by the scheduler's batched call
    grammar_seconds: float = 0.0  # ... and the time spent on them
    best_token_steps: int = 0  # steps that fetched each picked row's best tokens
    mixed_fetch_steps: int = 0  # steps that fetched best tokens and whole rows (their searches differ)

    def record_step(self, seconds: float, tokens: int, rows: int) -> None:
        self.steps += 1
        self.step_seconds += seconds
        self.step_tokens += tokens
        self.step_rows += rows
        self.last_step_rows = rows

