"""The OpenAI protocol: ``POST /v1/completions``, ``GET /v1/models`` (chat: :mod:`~ortgen.serve.chat_api`).

What the official ``openai`` client sends, as vLLM serves it (docs/serve.md lists every field):
``prompt`` as a string, a list of strings, token ids or a list of token-id lists; max_tokens, n,
temperature, top_p, stop, seed, echo, logprobs, user, stream with ``data: [DONE]`` and
``stream_options.include_usage``; and the extensions vLLM users pass through ``extra_body``:
use_beam_search, best_of (the beam width), num_beams, length_penalty, repetition_penalty,
min_tokens, top_k, early_stopping, no_repeat_ngram_size, prompt_logprobs; structured output
(response_format, guided_json / guided_choice / guided_regex / guided_grammar, structured_outputs:
:mod:`~ortgen.serve.structured_fields`), in every strategy, beam search included. Beam search streams too:
what every beam agrees on, as it settles.

Scoring (lm-evaluation-harness's ``local-completions``): with ``echo`` and ``logprobs`` the logprobs
cover every prompt token too (the first one's is null, as OpenAI and vLLM return it), computed in
the scheduler's prefill with everything else; ``max_tokens: 0`` then scores the prompt without
generating. Texts, token strings and offsets are those of the detokenised whole (prompt, then
completion: :mod:`~ortgen.serve.text_alignment`), and stop strings are found in that text with one
automaton for all of them (:mod:`~ortgen.runtime.stop_matcher`).

Which search runs: ``use_beam_search`` (or num_beams > 1) -> beam search; temperature 0 -> greedy;
a temperature > 0, top_p, top_k, a seed or n > 1 -> sampling (top_k off unless given, as in the
OpenAI API); none of these -> the package's own defaults (its generation_config), else greedy.
As in the OpenAI API, ``stop`` strings end the text and are not part of it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ortgen.runtime.request import RequestOutput
from ortgen.runtime.stop_matcher import StopMatcher, StopScanner
from ortgen.serve.service import GenerationService, ServeError
from ortgen.serve.structured_fields import FIELDS as STRUCTURED_FIELDS
from ortgen.serve.structured_fields import constraint_from_fields
from ortgen.serve.text_alignment import align, continuation

PREFIX = "/v1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False
    continuous_usage_stats: bool = False


PromptType = str | list[str] | list[int] | list[list[int]]


class CompletionRequest(_Strict):
    """``POST /v1/completions``. Unknown fields are refused (400), as by the OpenAI API."""

    model: str = Field(description="the served model's name (GET /v1/models)")
    prompt: PromptType = Field(description="a string, a list of strings, token ids, or a list of token-id lists")
    max_tokens: int | None = Field(16, ge=0, description="new tokens at most (the OpenAI default: 16); 0 with echo "
                                                         "and logprobs (or prompt_logprobs): score the prompt only")
    n: int = Field(1, ge=1, description="sequences per prompt")
    temperature: float | None = Field(None, ge=0, description="0: greedy; > 0: sampling")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, description="sampling: the k most likely tokens; -1 or 0: off")
    min_tokens: int | None = Field(None, ge=0, description="EOS is suppressed until this many new tokens")
    stop: str | list[str] | None = Field(None, description="text that ends a sequence (not part of the result)")
    seed: int | None = Field(None, ge=0)
    echo: bool = Field(False, description="return the prompt in front of the text")
    logprobs: int | None = Field(None, ge=0, le=20, description="log-probabilities of the chosen and the top N tokens "
                                                                 "(with echo: of the prompt's tokens too)")
    prompt_logprobs: int | None = Field(None, ge=0, le=20, description="vLLM's extension: each prompt token's "
                                                                        "log-probability and the top N alternatives'")
    return_tokens_as_token_ids: bool = Field(False, description="logprobs name tokens 'token_id:N' (vLLM's "
                                                                "extension): exact, whatever the tokenizer")
    user: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    use_beam_search: bool = Field(False, description="beam search (the beam width: num_beams, best_of or n)")
    best_of: int | None = Field(None, ge=1, description="with use_beam_search: the beam width")
    num_beams: int | None = Field(None, ge=1)
    length_penalty: float | None = None
    repetition_penalty: float | None = Field(None, gt=0)
    early_stopping: bool | Literal["never"] | None = None
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    presence_penalty: float | None = Field(None, description="not supported: 0 or absent")
    frequency_penalty: float | None = Field(None, description="not supported: 0 or absent")
    logit_bias: dict[str, float] | None = Field(None, description="not supported: absent")
    suffix: str | None = Field(None, description="not supported: absent")
    response_format: dict[str, Any] | None = Field(None, description="structured output: {type: text | json_object "
                                                                     "| json_schema, json_schema: {name, schema}}")
    guided_json: dict[str, Any] | str | None = Field(None, description="vLLM's extension: a JSON schema to follow")
    guided_choice: list[str] | None = Field(None, description="vLLM's extension: answer with one of these strings")
    guided_regex: str | None = Field(None, description="vLLM's extension: a regex the text must match")
    guided_grammar: str | None = Field(None, description="vLLM's extension: a Lark (or GBNF) grammar")
    structured_outputs: dict[str, Any] | None = Field(None, description="vLLM's newer form: {json | choice | regex "
                                                                        "| grammar | json_object}")


def error_body(error: ServeError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.status}}


def error_response(error: ServeError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def _prompts(prompt: PromptType) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise ServeError(400, "prompt is empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]
    return list(prompt)  # type: ignore[arg-type]


def _options(body: CompletionRequest) -> dict[str, Any]:
    """The request's fields as ortgen generation options."""
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            raise ServeError(400, f"{name} is not supported by this server (use repetition_penalty)", param=name)
    for name in ("logit_bias", "suffix"):
        if getattr(body, name):
            raise ServeError(400, f"{name} is not supported by this server", param=name)
    if body.stream_options is not None and not body.stream:
        raise ServeError(400, "stream_options needs stream: true", param="stream_options")
    scored = [n for n in ((body.logprobs if body.echo else None), body.prompt_logprobs) if n is not None]
    if body.max_tokens == 0 and not scored:
        raise ServeError(400, "max_tokens 0 generates nothing: it scores the prompt, with echo: true and logprobs "
                              "(or prompt_logprobs)", param="max_tokens")
    options: dict[str, Any] = {"max_new_tokens": body.max_tokens}
    if scored:
        options["prompt_logprobs"] = max(scored)
    sampling = {k: v for k, v in (("temperature", body.temperature), ("top_p", body.top_p), ("top_k", body.top_k),
                                  ("seed", body.seed)) if v is not None}
    if body.use_beam_search or (body.num_beams or 1) > 1:
        if any(v for k, v in sampling.items() if k != "seed"):
            raise ServeError(400, "beam search is deterministic: temperature, top_p and top_k apply to sampling",
                             param="temperature")
        options.update(num_beams=body.num_beams or body.best_of or max(body.n, 1), num_return_sequences=body.n)
    elif body.best_of is not None:
        raise ServeError(400, "best_of sets the beam width and needs use_beam_search: true", param="best_of")
    elif body.temperature == 0:
        options.update(do_sample=False)
        if body.n > 1:
            raise ServeError(400, "temperature 0 is greedy search, which returns one sequence; n > 1 needs "
                                  "temperature > 0 or use_beam_search", param="n")
    elif sampling or body.n > 1:
        options.update(do_sample=True, num_return_sequences=body.n, top_k=max(body.top_k or 0, 0))
        for name in ("temperature", "top_p", "seed"):
            if name in sampling:
                options[name] = sampling[name]
    for ours, theirs in (("min_new_tokens", body.min_tokens), ("length_penalty", body.length_penalty),
                         ("repetition_penalty", body.repetition_penalty), ("early_stopping", body.early_stopping),
                         ("no_repeat_ngram_size", body.no_repeat_ngram_size), ("logprobs", body.logprobs)):
        if theirs is not None:
            options[ours] = theirs
    if body.stop:
        options["stop_strings"] = [body.stop] if isinstance(body.stop, str) else list(body.stop)
    constraint = constraint_from_fields({name: getattr(body, name) for name in STRUCTURED_FIELDS})
    if constraint is not None:
        options["constraint"] = constraint
    return options


def _constrained(body: CompletionRequest) -> bool:
    """Whether the request constrains its output (its text is then the bytes its grammar matched)."""
    return constraint_from_fields({name: getattr(body, name) for name in STRUCTURED_FIELDS}) is not None


def _finish_reason(stop_reason: str) -> str:
    return "length" if stop_reason in ("length", "incomplete") else "stop"


class _Choice:
    """One choice's text as it is produced, in the context of its prompt: stop strings cut, echo
    prepended, logprobs formatted with token strings and offsets that index into the returned text."""

    def __init__(self, service: GenerationService, index: int, prompt_text: str, prompt_ids: list[int], echo: bool,
                 stops: StopMatcher, token_ids: bool = False, constrained: bool = False):
        self.service, self.index, self.stops, self.token_ids = service, index, stops, token_ids
        self.constrained = constrained  # structured output: the text is the bytes the grammar matched
        self.prompt_ids = prompt_ids
        self.prompt_text = prompt_text
        self.prefix = prompt_text if echo else ""
        self.hold = max(stops.longest - 1, 0)  # a stop string may still complete in the last characters
        self.scanner = StopScanner(stops)
        self.emitted = ""
        self.raw = ""  # the completion so far, in context
        self.lead: str | None = None  # whitespace the detokenizer puts between prompt and completion
        self.tokens: list[int] = []  # completion tokens seen (streaming)
        self.cursor = 0  # streaming logprobs: where in the completion the next token's text starts

    # -- pieces ------------------------------------------------------------------------------

    def _decode(self, ids: list[int]) -> str:
        return self.service.generator._decode_text(ids) or ""

    def _surface(self, token: int) -> str:
        tok = self.service.generator.tokenizer
        return tok.decode([token], skip_special_tokens=False) if tok else ""

    def _label(self, token: int, text: str) -> str:
        return f"token_id:{token}" if self.token_ids or self.service.generator.tokenizer is None else text

    def name(self, token: int) -> str:
        """The token as logprobs name it: its text alone, or ``token_id:N``."""
        return self._label(token, self._surface(token))

    def completion(self, ids: list[int]) -> str:
        generator = self.service.generator
        if self.constrained and generator.grammar is not None:
            return generator.grammar.vocabulary.text(ids)
        return continuation(self._decode, self.prompt_ids, ids)

    def cut(self, text: str) -> tuple[str, bool]:
        """The text before the stop string that completes first (OpenAI leaves stop strings out)."""
        found = self.stops.first(text) if self.stops else None
        return (text[:found[0]], True) if found else (text, False)

    # -- logprobs ----------------------------------------------------------------------------

    def _entries(self, text: str, base: int, tokens: list[int], records: list[Any], start: int = 0
                 ) -> dict[str, list[Any]]:
        aligned = align(text, [self._surface(t) for t in tokens], start)
        if aligned:
            self.cursor = aligned[-1][1] + len(aligned[-1][0])
        out: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for token, record, (piece, offset) in zip(tokens, records, aligned):
            out["tokens"].append(self._label(token, piece))
            out["token_logprobs"].append(None if record is None else record.logprob)
            out["top_logprobs"].append(None if record is None else
                                       {self._label(t, self._surface(t)): lp for t, lp in record.top})
            out["text_offset"].append(base + offset)
        return out

    def logprobs(self, completion: str, tokens: list[int], records: list[Any] | None,
                 prompt_records: list[Any] | None = None, start: int = 0) -> dict[str, Any] | None:
        """The choice's logprobs (OpenAI's shape): the prompt's tokens first when echoed with records;
        the completion's tokens found in ``completion`` from character ``start``."""
        if records is None and prompt_records is None:
            return None
        parts = []
        if prompt_records is not None and self.prefix:
            parts.append(self._entries(self.prompt_text, 0, self.prompt_ids, prompt_records))
        if records is not None:
            parts.append(self._entries(completion, len(self.prefix), list(tokens), list(records), start))
        merged: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for part in parts:
            for key in merged:
                merged[key] += part[key]
        return merged

    def prompt_logprobs(self, records: list[Any] | None) -> list[Any] | None:
        """vLLM's ``prompt_logprobs``: per prompt token, None for the first, else {token id: {logprob, rank,
        decoded_token}} for the token itself and the top alternatives."""
        if records is None:
            return None
        out: list[Any] = []
        for token, record in zip(self.prompt_ids, records):
            if record is None:
                out.append(None)
                continue
            entries = {}
            ranked = [t for t, _ in record.top]
            for t, lp in [(record.token, record.logprob)] + list(record.top):
                entries[str(t)] = {"logprob": lp, "rank": ranked.index(t) + 1 if t in ranked else None,
                                   "decoded_token": self._surface(t)}
            out.append(entries)
        return out

    # -- streaming ---------------------------------------------------------------------------

    def delta(self, text: str, token_ids: list[int], final: bool) -> str:
        """New text to stream, holding back what a stop string may still claim."""
        if self.lead is None and token_ids and self.constrained:
            self.lead = ""  # the grammar's bytes: nothing between prompt and completion
        if self.lead is None and token_ids:  # the detokenizer's space between prompt and completion
            alone, in_context = self._decode(token_ids[:1]), self.completion(token_ids[:1])
            gap = in_context[:len(in_context) - len(alone)] if in_context.endswith(alone) else ""
            self.lead = gap if gap.isspace() else ""
            text = self.lead + text
        self.tokens += token_ids
        self.raw += text
        stopped = self.scanner.feed(text)
        visible = self.raw[:stopped[0]] if stopped else self.raw
        if not final and not stopped and self.hold:
            visible = visible[:max(len(visible) - self.hold, 0)]
        if not visible.startswith(self.emitted):
            return ""
        out = visible[len(self.emitted):]
        self.emitted = visible
        return out


def build_router(service: GenerationService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["OpenAI"])

    def check_model(name: str) -> None:
        if name != service.model_name:
            raise ServeError(404, f"the model {name!r} does not exist; this server serves {service.model_name!r}",
                             "not_found_error", "model")

    @router.get("/models", summary="The served model")
    async def models() -> dict[str, Any]:
        architecture = service.generator.manifest.architecture
        return {"object": "list", "data": [{"id": service.model_name, "object": "model", "created": 0,
                                            "owned_by": "ortgen", "max_model_len": architecture.max_positions,
                                            "vocab_size": architecture.vocab_size}]}

    @router.post("/completions", summary="Text completions (OpenAI's legacy completions API)")
    async def completions(request: Request, body: CompletionRequest):
        check_model(body.model)
        prompts = _prompts(body.prompt)
        if len(prompts) > service.config.max_prompts:
            raise ServeError(400, f"{len(prompts)} prompts; this server takes at most {service.config.max_prompts} "
                                  "per request", param="prompt")
        options = _options(body)
        ids = [service.prompt_ids(p, "prompt") for p in prompts]
        handles = await service.submit_all(ids, options)
        request.state.prompt_tokens = sum(len(i) for i in ids)
        request.state.queue_seconds = None
        texts = [p if isinstance(p, str) else service.generator._decode_text(p) or "" for p in prompts]
        stops = StopMatcher(options.get("stop_strings", []))
        created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(stream_events(service, request, body, handles, texts, ids, stops, created, rid),
                                     media_type="text/event-stream")
        outputs = await asyncio.gather(*(service.result(h, request.is_disconnected) for h in handles))
        choices = [COMPLETION.choice(c) for c in finished_choices(service, body, outputs, texts, ids, stops)]
        return {"id": rid, "object": "text_completion", "created": created, "model": service.model_name,
                "choices": choices, "usage": _usage(request, outputs, ids)}

    return router


@dataclass
class TokenRecords:
    """Generated tokens with their log-probability records, and how to name a token (chat's logprobs
    list every alternative; completions' key them by name, so alternatives that print alike merge)."""

    token_ids: list[int]
    records: list[Any]
    label: Callable[[int], str]


@dataclass
class FinishedChoice:
    """One returned sequence, shaped for neither endpoint yet."""

    index: int
    text: str
    logprobs: dict[str, Any] | None  # completions' shape
    finish_reason: str
    prompt_logprobs: list[Any] | None = None
    has_prompt_logprobs: bool = False
    records: TokenRecords | None = None


def finished_choices(service: GenerationService, body: CompletionRequest, outputs: list[RequestOutput],
                     texts: list[str], ids: list[list[int]], stops: StopMatcher) -> list[FinishedChoice]:
    """Every sequence of every prompt: its text in the context of its prompt, stop strings cut, echo
    prepended, logprobs aligned with the text."""
    choices = []
    for p, (output, prompt_text) in enumerate(zip(outputs, texts)):
        for j, sequence in enumerate(output.sequences):
            choice = _Choice(service, p * body.n + j, prompt_text, ids[p], body.echo, stops,
                             body.return_tokens_as_token_ids, output.settings.constraint is not None)
            text, cut = choice.cut(choice.completion(sequence.token_ids))
            logprobs = choice.logprobs(text, sequence.token_ids, sequence.logprobs,
                                       output.prompt_logprobs if body.echo and body.logprobs is not None else None)
            records = (TokenRecords(list(sequence.token_ids), list(sequence.logprobs), choice.name)
                       if sequence.logprobs is not None else None)
            choices.append(FinishedChoice(
                choice.index, choice.prefix + text, logprobs,
                "stop" if cut else _finish_reason(sequence.stop_reason),
                choice.prompt_logprobs(output.prompt_logprobs) if body.prompt_logprobs is not None else None,
                body.prompt_logprobs is not None, records))
    return choices


def _usage(request: Request, outputs: list[RequestOutput], ids: list[list[int]]) -> dict[str, int]:
    """The response's usage; notes what the request log line reports."""
    completion_tokens = sum(len(s.token_ids) for o in outputs for s in o.sequences)
    _note(request, outputs, completion_tokens)
    prompt_tokens = sum(len(i) for i in ids)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class ResponseShape:
    """How one endpoint shapes a choice: completions' ``text`` (this class) or chat's ``message`` / ``delta``."""

    object = "text_completion"
    chunk_object = "text_completion"

    def choice(self, c: FinishedChoice) -> dict[str, Any]:
        item = {"index": c.index, "text": c.text, "logprobs": c.logprobs, "finish_reason": c.finish_reason}
        if c.has_prompt_logprobs:
            item["prompt_logprobs"] = c.prompt_logprobs
        return item

    def delta(self, index: int, text: str, logprobs: dict[str, Any] | None, finish: str | None,
              first: bool, records: TokenRecords | None = None) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish}


COMPLETION = ResponseShape()


def _note(request: Request, outputs: list[RequestOutput], completion_tokens: int) -> None:
    """What the request log line reports."""
    request.state.completion_tokens = completion_tokens
    queue = [o.timings.queue_seconds for o in outputs if o.timings.queue_seconds is not None]
    request.state.queue_seconds = max(queue) if queue else None


async def stream_events(service: GenerationService, request: Request, body: CompletionRequest, handles,
                        texts: list[str], ids: list[list[int]], stops: StopMatcher, created: int, rid: str,
                        shape: ResponseShape = COMPLETION) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per delta, a final chunk per choice, the usage chunk, [DONE]. With echo,
    a prompt's text (and, with logprobs, its tokens' log-probabilities) goes first, once its prefill is done.
    ``shape`` makes the chunks completions' or chat's."""
    queue: asyncio.Queue = asyncio.Queue()
    choices: dict[int, _Choice] = {}
    echoed: set[int] = set()
    constrained = _constrained(body)

    async def pump(p: int, handle) -> None:
        try:
            async for delta in service.stream(handle, request.is_disconnected):
                await queue.put((p, delta))
            await queue.put((p, None))
        except Exception as exc:  # delivered in the stream
            await queue.put((p, exc))

    def chunk(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    def choice_of(p: int, j: int) -> _Choice:
        index = p * body.n + j
        if index not in choices:
            choices[index] = _Choice(service, index, texts[p], ids[p], body.echo, stops,
                                     body.return_tokens_as_token_ids, constrained)
        return choices[index]

    def echo(p: int) -> list[bytes]:
        """The echo chunks of prompt ``p`` (its prefill is done: the handle has its prompt's records)."""
        echoed.add(p)
        if not body.echo:
            return []
        records = handles[p].prompt_logprobs if body.logprobs is not None else None
        out = []
        for j in range(body.n):
            choice = choice_of(p, j)
            logprobs = choice.logprobs("", [], None, records) if records is not None else None
            out.append(chunk({**base, "choices": [{"index": choice.index, "text": choice.prefix,
                                                   "logprobs": logprobs, "finish_reason": None}]}))
        return out

    base = {"id": rid, "object": shape.chunk_object, "created": created, "model": service.model_name}
    tasks = [asyncio.ensure_future(pump(p, h)) for p, h in enumerate(handles)]
    started: set[int] = set()  # choices that have sent a chunk (chat's first one names the role)
    completion_tokens = 0
    try:
        open_handles = len(handles)
        while open_handles:
            p, item = await queue.get()
            if p not in echoed and not isinstance(item, Exception):
                for event in echo(p):
                    yield event
            if item is None:
                open_handles -= 1
                if body.max_tokens == 0:  # scored only: each choice ends here
                    for j in range(body.n):
                        yield chunk({**base, "choices": [shape.delta(p * body.n + j, "", None, "length", False)]})
                continue
            if isinstance(item, Exception):
                error = item if isinstance(item, ServeError) else ServeError(500, "internal error", "server_error")
                yield chunk(error_body(error))
                open_handles -= 1
                continue
            choice = choice_of(p, item.index)
            text = choice.delta(item.text, item.token_ids, item.finished)
            completion_tokens += len(item.token_ids)
            finish = None
            if item.finished:
                finish = "stop" if choice.scanner.match else _finish_reason(item.finish_reason or "length")
            if text or finish or item.logprobs:
                logprobs = records = None
                if item.logprobs is not None:  # this delta's tokens, found in the completion so far
                    logprobs = choice.logprobs(choice.raw, item.token_ids, item.logprobs, start=choice.cursor)
                    records = TokenRecords(list(item.token_ids), list(item.logprobs), choice.name)
                first = choice.index not in started
                started.add(choice.index)
                yield chunk({**base, "choices": [shape.delta(choice.index, text, logprobs, finish, first, records)]})
        prompt_tokens = getattr(request.state, "prompt_tokens", 0)
        request.state.completion_tokens = completion_tokens
        if body.stream_options and body.stream_options.include_usage:
            yield chunk({**base, "choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                         "completion_tokens": completion_tokens,
                                                         "total_tokens": prompt_tokens + completion_tokens}})
        yield b"data: [DONE]\n\n"
    finally:  # the client went away, or we are done: nothing keeps running
        for task in tasks:
            task.cancel()
        for handle in handles:
            if not handle.done:
                handle.cancel()
