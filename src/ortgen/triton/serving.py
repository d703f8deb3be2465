"""What the ``--backend python`` model does with a request, without Triton: the model's lifecycle
(set up a Generator; per request: read the tensors, submit, stream or wait, respond) apart from the
python backend's wire objects, which ``models/generator.py`` converts.

    execute(requests) ─► for each request: GeneratorService.start(tensors, sender)   (returns at once)
                                  │  on the service's asyncio loop (one thread for all requests):
                                  ▼
        read_prompts ─► per prompt: Generator.submit(text, **options) ─► handle   (all share decoder steps)
                                  │
        stream:  deltas of every prompt, coalesced ─► sender.send(text_output [B, N] of deltas)  ...
        at the end (or at once without stream):     ─► sender.send(..., final=True)
        any error:                                  ─► sender.send(error=message, code=kind, final=True)
                                                       (kind: invalid_argument for the client's mistakes,
                                                       unavailable when full, cancelled, internal)

Requests from every ``execute()`` call, and the prompts of one request, are separate Generator
requests: the scheduler runs them together, and each gets what it would get alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from ortgen.errors import GenerationSettingsError, OrtgenError, QueueFullError
from ortgen.runtime.generator import Generator
from ortgen.runtime.request import RequestHandle, RequestOutput
from ortgen.runtime.results import GeneratedSequence
from ortgen.serve.trtllm import STREAM, in_wire_names
from ortgen.triton.tensors import (BAD_WORDS, CUM_LOG_PROBS, RETURN_LOG_PROBS, TEXT_OUTPUT, Prompt, read_prompts,
                                   text_matrix, to_options)

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.25


ERROR_CODES = ("invalid_argument", "unavailable", "cancelled", "internal")


class Sender(Protocol):
    """Where a request's responses go (the python backend's response sender, or a test's list). An
    error carries one of ERROR_CODES, which the model maps to Triton's (HTTP 400 / gRPC INVALID_ARGUMENT
    for invalid_argument)."""

    def send(self, outputs: dict[str, np.ndarray] | None = None, *, error: str | None = None,
             code: str = "internal", final: bool = False) -> None: ...


def error_code(exc: BaseException) -> str:
    """The ERROR_CODES entry for an exception raised while serving a request."""
    if isinstance(exc, QueueFullError):
        return "unavailable"
    if isinstance(exc, (OrtgenError, ValueError)):
        return "invalid_argument"  # bad settings, prompts too long, unknown inputs: the client's to fix
    return "internal"


def generator_options(prompt: Prompt, generator: Generator) -> tuple[dict[str, Any], bool, bool]:
    """(Generator.submit options, stream, return_log_probs) of one prompt's TensorRT-LLM settings."""
    values = dict(prompt.values)
    stream = bool(values.pop(STREAM, False))
    return_log_probs = bool(values.pop(RETURN_LOG_PROBS, False))
    bad_words = values.pop(BAD_WORDS, None)
    options = to_options(values)
    if bad_words:
        if generator.tokenizer is None:
            raise GenerationSettingsError("bad_words needs the package's tokenizer, and this package has none")
        options["bad_words_ids"] = [generator.tokenizer.encode_plain(word) for word in bad_words]
    if return_log_probs and options.get("num_beams", 1) <= 1:
        options["logprobs"] = 0  # greedy and sampling: sum the chosen tokens' log-probabilities
    return options, stream, return_log_probs


def cum_log_prob(sequence: GeneratedSequence, output: RequestOutput) -> float:
    """The summed log-probability of a returned sequence: beam search's score without its length
    normalisation (EOS counted, as the score counts it), else the sum of its tokens' log-probabilities."""
    settings = output.settings
    if settings.num_beams > 1 and sequence.score is not None:
        length = len(sequence.token_ids) + (1 if sequence.stop_reason == "eos" else 0)
        return float(sequence.score * (length ** settings.length_penalty if length else 1.0))
    if sequence.logprobs is not None:
        return float(sum(p.logprob for p in sequence.logprobs))
    return float("nan")


def final_outputs(outputs: Sequence[RequestOutput], texts: bool, log_probs: bool) -> dict[str, np.ndarray]:
    result: dict[str, np.ndarray] = {}
    if texts:
        result[TEXT_OUTPUT] = text_matrix([o.texts for o in outputs])
    if log_probs:
        result[CUM_LOG_PROBS] = np.array([[cum_log_prob(s, o) for s in o.sequences] for o in outputs],
                                         dtype=np.float32)
    return result


class GeneratorService:
    """One Generator shared by every request of a model instance (see the module docstring)."""

    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="ortgen-triton", daemon=True)
        self._thread.start()

    def start(self, tensors: Mapping[str, np.ndarray | None], sender: Sender,
              is_cancelled: Callable[[], bool] | None = None) -> None:
        """Serve one request; returns at once, responses go to ``sender``."""
        asyncio.run_coroutine_threadsafe(self._serve(dict(tensors), sender, is_cancelled), self.loop)

    def close(self) -> None:
        self.generator.close()  # running requests end with RequestCancelledError, answered as errors
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    # -- one request ------------------------------------------------------------------------

    async def _serve(self, tensors: dict[str, np.ndarray | None], sender: Sender,
                     is_cancelled: Callable[[], bool] | None) -> None:
        handles: list[RequestHandle] = []
        try:
            prompts = read_prompts(tensors)
            parsed = [generator_options(p, self.generator) for p in prompts]
            if len({stream for _, stream, _ in parsed}) > 1 or len({lp for _, _, lp in parsed}) > 1:
                raise GenerationSettingsError("stream and return_log_probs must be the same for every prompt of a "
                                              "request")
            _, stream, log_probs = parsed[0]
            for prompt, (options, _, _) in zip(prompts, parsed):
                handles.append(self.generator.submit(prompt.text, **options))
            widths = {h.num_sequences for h in handles}
            if len(widths) > 1:
                raise GenerationSettingsError("num_return_sequences must be the same for every prompt of a request "
                                              f"(text_output is [prompts, sequences]); got {sorted(widths)}")
            if stream:
                await self._stream(handles, sender, is_cancelled)
            outputs = [await self._wait(h, is_cancelled) for h in handles]
            if stream:
                final = final_outputs(outputs, False, log_probs)
                sender.send(final or None, final=True)
            else:
                sender.send(final_outputs(outputs, True, log_probs), final=True)
        except (OrtgenError, ValueError) as exc:
            self._cancel(handles)
            _send_error(sender, in_wire_names(str(exc)), error_code(exc))
        except _ClientCancelled:
            self._cancel(handles)
            _send_error(sender, "the request was cancelled", "cancelled")
        except Exception as exc:  # noqa: BLE001 - answered, and logged with its traceback
            log.exception("request failed")
            self._cancel(handles)
            _send_error(sender, f"internal error ({type(exc).__name__}: {exc}); see the server log", "internal")

    async def _wait(self, handle: RequestHandle, is_cancelled: Callable[[], bool] | None) -> RequestOutput:
        waiter = asyncio.ensure_future(handle)  # RequestHandle is awaitable
        try:
            while True:
                done, _ = await asyncio.wait([waiter], timeout=CANCEL_POLL_SECONDS)
                if done:
                    return waiter.result()
                if is_cancelled is not None and is_cancelled():
                    raise _ClientCancelled()
        finally:
            if not waiter.done():
                waiter.cancel()

    async def _stream(self, handles: list[RequestHandle], sender: Sender,
                      is_cancelled: Callable[[], bool] | None) -> None:
        """Send the prompts' text deltas as they come, every delta available at once in one response:
        text_output [prompts, sequences], "" where nothing changed."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(row: int, handle: RequestHandle) -> None:
            try:
                async for delta in handle:
                    queue.put_nowait((row, delta))
            except BaseException as exc:  # delivered to the loop below
                queue.put_nowait((row, exc))
                return
            queue.put_nowait((row, None))

        tasks = [asyncio.ensure_future(pump(row, h)) for row, h in enumerate(handles)]
        width = handles[0].num_sequences
        running = len(handles)
        try:
            while running:
                try:
                    items = [await asyncio.wait_for(queue.get(), CANCEL_POLL_SECONDS)]
                except asyncio.TimeoutError:
                    if is_cancelled is not None and is_cancelled():
                        raise _ClientCancelled() from None
                    continue
                while not queue.empty():
                    items.append(queue.get_nowait())
                texts = [[""] * width for _ in handles]
                for row, item in items:
                    if item is None:
                        running -= 1
                    elif isinstance(item, BaseException):
                        raise item
                    else:
                        texts[row][item.index] += item.text
                if any(t for row in texts for t in row):
                    sender.send({TEXT_OUTPUT: text_matrix(texts)})
        finally:
            for task in tasks:
                task.cancel()

    @staticmethod
    def _cancel(handles: list[RequestHandle]) -> None:
        for handle in handles:
            if not handle.done:
                handle.cancel()


class _ClientCancelled(Exception):
    pass


def _send_error(sender: Sender, message: str, code: str) -> None:
    try:
        sender.send(error=message, code=code, final=True)
    except Exception:  # noqa: BLE001 - the response can no longer be delivered (server stopping)
        log.debug("could not deliver an error response", exc_info=True)


__all__ = ["ERROR_CODES", "GeneratorService", "Sender", "error_code", "generator_options", "cum_log_prob"]
