"""A submitted request as its caller sees it: a handle to wait on, stream from, await, or cancel.

The scheduler's thread publishes progress into the handle (tokens as they settle, then the final
output); callers read it from any thread, or from asyncio. Text is made in the reader's thread
(:class:`~ortgen.runtime.text_stream.TextDeltas`), so the scheduler never waits on a detokenizer
for a reader that may not exist.

    handle = generator.submit("Aspirin reduces", num_beams=4)
    for delta in handle:            # Delta(index, text, token_ids, finished, finish_reason, logprobs)
        print(delta.text, end="")
    handle.result()                 # RequestOutput: sequences, usage, timings
    await handle                    # the same, from asyncio
    async for delta in handle: ...
    handle.cancel()                 # its KV row is freed at the next step
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Iterator

from ortgen.errors import RequestCancelledError
from ortgen.runtime.results import GeneratedSequence
from ortgen.runtime.search import TokenLogprob
from ortgen.runtime.settings import GenerationSettings
from ortgen.runtime.text_stream import TextDeltas


@dataclass(frozen=True)
class Delta:
    """New output of one returned sequence (``index``): text, the tokens that settled, and (when
    asked for) their log-probabilities. The deltas of an index concatenate to its final text."""

    index: int
    text: str
    token_ids: list[int]
    finished: bool = False
    finish_reason: str | None = None  # "eos", "stop_string" or "length" once finished
    logprobs: list[TokenLogprob] | None = None


@dataclass
class RequestTimings:
    """Monotonic clock readings (time.perf_counter) of a request's life."""

    submitted: float
    started: float | None = None  # admitted: took a KV row
    first_token: float | None = None
    finished: float | None = None

    @property
    def queue_seconds(self) -> float | None:
        return None if self.started is None else self.started - self.submitted

    @property
    def first_token_seconds(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.submitted

    @property
    def total_seconds(self) -> float | None:
        return None if self.finished is None else self.finished - self.submitted


@dataclass(frozen=True)
class RequestOutput:
    """One request's result: its sequences (best first for beam search)."""

    request_id: str
    prompt_ids: list[int]
    sequences: list[GeneratedSequence]
    settings: GenerationSettings
    timings: RequestTimings
    # with prompt_logprobs: one per prompt token, None for the first (nothing before it predicts it)
    prompt_logprobs: list[TokenLogprob | None] | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return sum(len(s.token_ids) for s in self.sequences)

    @property
    def texts(self) -> list[str]:
        return [s.text or "" for s in self.sequences]


@dataclass
class _Progress:
    """What the scheduler published for one index: every token settled so far (no final EOS) and,
    when asked for, their log-probabilities."""

    index: int
    settled: list[int]
    logprobs: list[TokenLogprob] | None = None
    finished: bool = False
    finish_reason: str | None = None


class RequestHandle:
    """See the module docstring. Thread-safe; any number of readers."""

    def __init__(self, request_id: str, decode: Callable[[list[int]], str | None], width: int,
                 cancel: Callable[["RequestHandle"], None],
                 settled: Callable[[list[int], str], int | None] | None = None) -> None:
        self.id = request_id
        self.num_sequences = width
        self._decode = decode
        self._settled = settled  # how much of a decoded text no later token changes (the tokenizer's), if known
        self._cancel_hook = cancel
        self._lock = threading.Condition()
        self._progress: list[_Progress] = []
        self._output: RequestOutput | None = None
        self._error: BaseException | None = None
        self._done = False
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.cancelled = False
        self.timings = RequestTimings(time.perf_counter())
        self.prompt_logprobs: list[TokenLogprob | None] | None = None  # set once its prompt is scored

    # -- written by the scheduler ----------------------------------------------------------

    def _publish(self, progress: list[_Progress]) -> None:
        if progress:
            self._update(lambda: self._progress.extend(progress))

    def _finish(self, output: RequestOutput | None, error: BaseException | None = None) -> None:
        def apply() -> None:
            self._output, self._error, self._done = output, error, True
        self._update(apply)

    def _update(self, change: Callable[[], None]) -> None:
        with self._lock:
            change()
            waiters, self._waiters = self._waiters, []
            self._lock.notify_all()
        for loop, event in waiters:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that event loop has closed: nobody is waiting any more
                pass

    # -- read by callers ------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self._done

    def cancel(self) -> None:
        """Stop the request: its KV row is freed at the next step; result() raises RequestCancelledError."""
        if not self._done and not self.cancelled:
            self.cancelled = True
            self._cancel_hook(self)

    def result(self, timeout: float | None = None) -> RequestOutput:
        """Wait for the output (raises the request's error, or TimeoutError after ``timeout`` seconds)."""
        with self._lock:
            if not self._lock.wait_for(lambda: self._done, timeout):
                raise TimeoutError(f"request {self.id} not finished after {timeout} s")
        return self._outcome()

    def _outcome(self) -> RequestOutput:
        if self._error is not None:
            raise self._error
        assert self._output is not None
        return self._output

    def __iter__(self) -> Iterator[Delta]:
        reader = _DeltaReader(self)
        position = 0
        while True:
            with self._lock:
                self._lock.wait_for(lambda: position < len(self._progress) or self._done)
                pending = self._progress[position:]
                position += len(pending)
                done = self._done and position == len(self._progress)
            for item in pending:
                yield from reader.deltas(item)
            if done:
                if self._error is not None:
                    raise self._error
                yield from reader.remaining()
                return

    def __aiter__(self) -> AsyncIterator[Delta]:
        return self._aiter()

    async def _aiter(self) -> AsyncIterator[Delta]:
        reader = _DeltaReader(self)
        position = 0
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                pending = self._progress[position:]
                position += len(pending)
                done = self._done and position == len(self._progress)
                event = None
                if not pending and not done:
                    event = asyncio.Event()
                    self._waiters.append((loop, event))
            for item in pending:
                for delta in reader.deltas(item):
                    yield delta
            if done:
                if self._error is not None:
                    raise self._error
                for delta in reader.remaining():
                    yield delta
                return
            if event is not None:
                await event.wait()

    def __await__(self):
        return self._await().__await__()

    async def _await(self) -> RequestOutput:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._done:
                    break
                event = asyncio.Event()
                self._waiters.append((loop, event))
            await event.wait()
        return self._outcome()


class _DeltaReader:
    """One reader's text state: published progress -> Deltas, per index."""

    def __init__(self, handle: RequestHandle) -> None:
        self.handle = handle
        n = handle.num_sequences
        self.text = [TextDeltas(lambda ids: handle._decode(ids) or "", handle._settled) for _ in range(n)]
        self.count = [0] * n  # tokens already delivered, per index
        self.finished = [False] * n

    def deltas(self, item: _Progress) -> Iterator[Delta]:
        i = item.index
        if self.finished[i]:
            return
        new = item.settled[self.count[i]:]
        logprobs = item.logprobs[self.count[i]:] if item.logprobs is not None else None
        text = self.text[i].update(item.settled, final=item.finished)
        self.count[i] = len(item.settled)
        self.finished[i] = item.finished
        if text or new or item.finished:
            yield Delta(i, text, list(new), item.finished, item.finish_reason, logprobs)

    def remaining(self) -> Iterator[Delta]:
        """After the output: close every index that its progress did not finish (the final sequences)."""
        output = self.handle._output
        if output is None:
            return
        for index, sequence in enumerate(output.sequences):
            if not self.finished[index]:
                yield from self.deltas(_Progress(index, list(sequence.token_ids), sequence.logprobs, True,
                                                 sequence.stop_reason))


def cancelled_error(handle: RequestHandle, why: str = "cancelled") -> RequestCancelledError:
    return RequestCancelledError(f"request {handle.id} was {why}")


__all__ = ["Delta", "RequestHandle", "RequestOutput", "RequestTimings", "cancelled_error"]
