"""The serving lifecycle, apart from any wire format: load, check, submit, wait or stream, finish.

Every protocol module (OpenAI, KServe v2) turns its JSON into a prompt and generation options,
calls :meth:`GenerationService.submit`, then :meth:`result` or :meth:`stream`, and turns the
output back into its JSON. Everything a protocol should not have to know lives here: the limits
on one request, the request timeout, cancelling a request whose client went away, the metrics of
each request, and which errors mean what (:class:`ServeError` carries the HTTP status; each
protocol renders it in its own error shape). Requests go to the Generator's scheduler, which
batches them with every other running request; nothing here holds a lock around generation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

from ortgen.errors import (
    GenerationSettingsError,
    OrtgenError,
    PromptTooLongError,
    QueueFullError,
    RequestCancelledError,
    RequestTooLargeError,
)
from ortgen.runtime.generator import Generator
from ortgen.runtime.request import Delta, RequestHandle, RequestOutput
from ortgen.serve.config import ServeConfig
from ortgen.serve.metrics import Metrics

log = logging.getLogger(__name__)

DISCONNECT_POLL_SECONDS = 0.1


@dataclass
class ServeError(Exception):
    """An error with its HTTP status; ``kind`` and ``param`` fill the OpenAI error object."""

    status: int
    message: str
    kind: str = "invalid_request_error"
    param: str | None = None
    retry_after: int | None = None

    def __str__(self) -> str:
        return self.message


def serve_error(exc: BaseException) -> ServeError:
    """What an exception from the runtime means to a client."""
    if isinstance(exc, ServeError):
        return exc
    if isinstance(exc, QueueFullError):
        return ServeError(429, f"{exc}", "overloaded")
    if isinstance(exc, (PromptTooLongError, RequestTooLargeError, GenerationSettingsError)):
        return ServeError(400, str(exc))
    if isinstance(exc, RequestCancelledError):
        return ServeError(503, "the server is shutting down; the request was cancelled", "unavailable")
    if isinstance(exc, OrtgenError):
        return ServeError(400, str(exc))
    return ServeError(500, "internal error (see the server log)", "server_error")


class GenerationService:
    """One package, served. See the module docstring."""

    def __init__(self, generator: Generator, config: ServeConfig, model_name: str) -> None:
        self.generator = generator
        self.config = config
        self.model_name = model_name
        architecture = generator.manifest.architecture
        self.max_prompt_tokens = config.max_prompt_tokens or architecture.max_positions
        self.max_tokens = config.max_tokens or architecture.max_positions
        self.metrics = Metrics(model_name, generator)
        self.draining = False
        self.in_flight = 0

    @property
    def ready(self) -> bool:
        return not self.draining

    # -- prompts and limits -------------------------------------------------------------

    def prompt_ids(self, prompt: str | Sequence[int], what: str = "prompt") -> list[int]:
        """Token ids of a text prompt (the package's prompt format applied) or a list of ids, checked."""
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ServeError(400, f"{what} is empty", param=what)
            ids = self.generator.encode([prompt])[0]
        else:
            ids = list(prompt)
            if not ids:
                raise ServeError(400, f"{what} has no tokens", param=what)
            vocab = self.generator.manifest.architecture.vocab_size
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise ServeError(400, f"{what} contains token id {bad[0]}, outside the vocabulary [0, {vocab})",
                                 param=what)
        if len(ids) > self.max_prompt_tokens:
            raise ServeError(400, f"{what} has {len(ids)} tokens; this server takes at most {self.max_prompt_tokens}",
                             param=what)
        return ids

    def check_options(self, options: dict[str, Any]) -> None:
        """The server's limits on one request (beyond the settings' own rules)."""
        new = options.get("max_new_tokens")
        if new is not None and isinstance(new, int) and new > self.max_tokens:
            raise ServeError(400, f"max_tokens is {new}; this server allows at most {self.max_tokens}",
                             param="max_tokens")
        n = options.get("num_return_sequences")
        if isinstance(n, int) and n > self.config.max_n:
            raise ServeError(400, f"n is {n}; this server allows at most {self.config.max_n}", param="n")
        beams = options.get("num_beams")
        if isinstance(beams, int) and beams > self.config.max_beam_width:
            raise ServeError(400, f"the beam width is {beams}; this server allows at most "
                                  f"{self.config.max_beam_width}", param="num_beams")

    # -- submitting, waiting, streaming -----------------------------------------------------

    async def submit(self, ids: list[int], options: dict[str, Any]) -> RequestHandle:
        """Hand one prompt to the scheduler (settings checked, limits applied); raises ServeError."""
        if self.draining:
            raise ServeError(503, "the server is shutting down", "unavailable")
        self.check_options(options)
        try:
            handle = self.generator.submit(input_ids=ids, **options)
        except QueueFullError as exc:
            self.metrics.rejected()
            raise ServeError(429, str(exc), "overloaded", retry_after=self.config.retry_after_seconds) from exc
        except Exception as exc:  # mapped to what it means for the client
            error = serve_error(exc)
            if error.status >= 500:
                log.exception("submit failed")
            raise error from exc
        self.metrics.submitted(handle)
        return handle

    async def submit_all(self, ids_list: Sequence[list[int]], options: dict[str, Any]) -> list[RequestHandle]:
        """Submit every prompt of one HTTP request, or none: on the first refusal the ones already
        queued are cancelled and the ServeError propagates."""
        handles: list[RequestHandle] = []
        try:
            for ids in ids_list:
                handles.append(await self.submit(ids, options))
        except ServeError:
            for handle in handles:
                handle.cancel()
            raise
        return handles

    async def result(self, handle: RequestHandle, disconnected: Callable[[], Awaitable[bool]] | None = None
                     ) -> RequestOutput:
        """Wait for ``handle`` within the request timeout; cancel it if the client goes away."""
        waiter = asyncio.ensure_future(self._await(handle))
        watcher = asyncio.ensure_future(self._watch(disconnected)) if disconnected is not None else None
        try:
            done, _ = await asyncio.wait([w for w in (waiter, watcher) if w is not None],
                                         timeout=self._remaining(handle), return_when=asyncio.FIRST_COMPLETED)
            if waiter in done:
                return waiter.result()
            handle.cancel()
            self.metrics.cancelled()
            if watcher is not None and watcher in done:
                raise ServeError(499, "the client closed the connection", "cancelled")
            raise ServeError(504, f"the request did not finish within {self.config.request_timeout:g} s "
                                  "(request timeout); it was cancelled", "timeout")
        finally:
            for task in (waiter, watcher):
                if task is not None and not task.done():
                    task.cancel()

    async def stream(self, handle: RequestHandle, disconnected: Callable[[], Awaitable[bool]] | None = None
                     ) -> AsyncIterator[Delta]:
        """The handle's deltas within the request timeout. The request is cancelled when the client goes
        away (``disconnected``: uvicorn drops writes to a closed connection silently, so a stream must
        watch for it) or when the consumer stops early."""
        deadline = time.monotonic() + self._remaining(handle)
        iterator = handle.__aiter__()
        watcher = asyncio.ensure_future(self._watch(disconnected)) if disconnected is not None else None
        pending: asyncio.Future | None = None
        try:
            while True:
                pending = asyncio.ensure_future(iterator.__anext__())
                waiting = [pending] + ([watcher] if watcher is not None else [])
                done, _ = await asyncio.wait(waiting, timeout=max(deadline - time.monotonic(), 0.001),
                                             return_when=asyncio.FIRST_COMPLETED)
                if pending in done:
                    try:
                        delta = pending.result()
                    except StopAsyncIteration:
                        break
                    pending = None
                    yield delta
                    continue
                if watcher is not None and watcher in done:
                    return  # the client is gone: the finally below cancels the request
                raise ServeError(504, f"the request did not finish within {self.config.request_timeout:g} s "
                                      "(request timeout); it was cancelled", "timeout")
            self.metrics.finished(handle)
        except ServeError:
            raise
        except Exception as exc:
            raise serve_error(exc) from exc
        finally:
            for task in (pending, watcher):
                if task is not None and not task.done():
                    task.cancel()
            if not handle.done:
                handle.cancel()
                self.metrics.cancelled()

    async def _await(self, handle: RequestHandle) -> RequestOutput:
        try:
            output = await handle
        except Exception as exc:
            raise serve_error(exc) from exc
        self.metrics.finished(handle)
        return output

    @staticmethod
    async def _watch(disconnected: Callable[[], Awaitable[bool]]) -> None:
        while not await disconnected():
            await asyncio.sleep(DISCONNECT_POLL_SECONDS)

    def _remaining(self, handle: RequestHandle) -> float:
        return max(self.config.request_timeout - (time.perf_counter() - handle.timings.submitted), 0.001)

    def close(self) -> None:
        self.generator.close()
