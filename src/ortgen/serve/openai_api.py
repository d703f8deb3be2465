"""The OpenAI protocol: ``POST /v1/completions``, ``GET /v1/models``, ``POST /v1/chat/completions``.

What the official ``openai`` client sends, as vLLM serves it (docs/serve.md lists every field):
``prompt`` as a string, a list of strings, token ids or a list of token-id lists; max_tokens, n,
temperature, top_p, stop, seed, echo, logprobs, user, stream with ``data: [DONE]`` and
``stream_options.include_usage``; and the extensions vLLM users pass through ``extra_body``:
use_beam_search, best_of (the beam width), num_beams, length_penalty, repetition_penalty,
min_tokens, top_k, early_stopping, no_repeat_ngram_size. Beam search streams too: what every beam
agrees on, as it settles.

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
from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ortgen.runtime.request import RequestOutput
from ortgen.serve.service import GenerationService, ServeError

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
    max_tokens: int | None = Field(16, ge=1, description="new tokens at most (the OpenAI default: 16)")
    n: int = Field(1, ge=1, description="sequences per prompt")
    temperature: float | None = Field(None, ge=0, description="0: greedy; > 0: sampling")
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1, description="sampling: the k most likely tokens; -1 or 0: off")
    min_tokens: int | None = Field(None, ge=0, description="EOS is suppressed until this many new tokens")
    stop: str | list[str] | None = Field(None, description="text that ends a sequence (not part of the result)")
    seed: int | None = Field(None, ge=0)
    echo: bool = Field(False, description="return the prompt in front of the text")
    logprobs: int | None = Field(None, ge=0, le=20, description="log-probabilities of the chosen and the top N tokens")
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


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[Any] | None = None


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
    options: dict[str, Any] = {"max_new_tokens": body.max_tokens}
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
    return options


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first stop string (OpenAI leaves stop strings out)."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _finish_reason(stop_reason: str) -> str:
    return "length" if stop_reason == "length" else "stop"


class _Choice:
    """One choice's text as it is produced: stop strings cut, echo prepended, logprobs formatted."""

    def __init__(self, service: GenerationService, index: int, prompt_text: str, echo: bool, stops: list[str],
                 token_ids: bool = False):
        self.service, self.index, self.stops, self.token_ids = service, index, stops, token_ids
        self.prefix = prompt_text if echo else ""
        self.hold = max((len(s) for s in stops), default=1) - 1  # a stop string may still complete here
        self.emitted = ""
        self.raw = ""
        self.tokens: list[int] = []
        self.offset = len(self.prefix)

    def text_of(self, raw: str) -> tuple[str, bool]:
        return _cut_at_stop(raw, self.stops) if self.stops else (raw, False)

    def logprobs(self, records, tokens: list[int]) -> dict[str, Any] | None:
        if records is None:
            return None
        tok = self.service.generator.tokenizer

        def surface(t: int) -> str:
            return tok.decode([t], skip_special_tokens=False) if tok else f"token_id:{t}"

        def label(t: int) -> str:
            return f"token_id:{t}" if self.token_ids else surface(t)

        names = [label(t) for t in tokens]
        offsets = []
        for token in tokens:
            offsets.append(self.offset)
            self.offset += len(surface(token))
        top = [{label(t): lp for t, lp in r.top} for r in records]
        return {"tokens": names, "token_logprobs": [r.logprob for r in records], "top_logprobs": top,
                "text_offset": offsets}

    def delta(self, text: str, final: bool) -> str:
        """New text to stream, holding back what a stop string may still claim."""
        self.raw += text
        visible, stopped = self.text_of(self.raw)
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

    @router.post("/chat/completions", summary="Chat completions (needs a chat template)")
    async def chat(request: Request, body: ChatRequest) -> JSONResponse:
        raise ServeError(400, f"the model {service.model_name!r} has no chat template (BioGPT, GPT-2 and OPT are "
                              "not chat models): use POST /v1/completions with a prompt", param="messages")

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
        texts = [p if isinstance(p, str) else service.generator._decode_text(p) for p in prompts]
        stops = options.get("stop_strings", [])
        created, rid = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(_stream(service, request, body, handles, texts, stops, created, rid),
                                     media_type="text/event-stream")
        outputs = await asyncio.gather(*(service.result(h, request.is_disconnected) for h in handles))
        choices = []
        completion_tokens = 0
        for p, (output, prompt_text) in enumerate(zip(outputs, texts)):
            for j, sequence in enumerate(output.sequences):
                choice = _Choice(service, p * body.n + j, prompt_text, body.echo, stops,
                                 body.return_tokens_as_token_ids)
                text, cut = choice.text_of(sequence.text or "")
                completion_tokens += len(sequence.token_ids)
                choices.append({"index": choice.index, "text": choice.prefix + text,
                                "logprobs": choice.logprobs(sequence.logprobs, sequence.token_ids),
                                "finish_reason": "stop" if cut else _finish_reason(sequence.stop_reason)})
        _note(request, outputs, completion_tokens)
        prompt_tokens = sum(len(i) for i in ids)
        return {"id": rid, "object": "text_completion", "created": created, "model": service.model_name,
                "choices": choices, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                              "total_tokens": prompt_tokens + completion_tokens}}

    return router


def _note(request: Request, outputs: list[RequestOutput], completion_tokens: int) -> None:
    """What the request log line reports."""
    request.state.completion_tokens = completion_tokens
    queue = [o.timings.queue_seconds for o in outputs if o.timings.queue_seconds is not None]
    request.state.queue_seconds = max(queue) if queue else None


async def _stream(service: GenerationService, request: Request, body: CompletionRequest, handles, texts: list[str],
                  stops: list[str], created: int, rid: str) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per delta, a final chunk per choice, the usage chunk, [DONE]."""
    queue: asyncio.Queue = asyncio.Queue()
    choices: dict[int, _Choice] = {}

    async def pump(p: int, handle) -> None:
        try:
            async for delta in service.stream(handle, request.is_disconnected):
                await queue.put((p, delta))
            await queue.put((p, None))
        except Exception as exc:  # delivered in the stream
            await queue.put((p, exc))

    def chunk(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload)}\n\n".encode()

    base = {"id": rid, "object": "text_completion", "created": created, "model": service.model_name}
    tasks = [asyncio.ensure_future(pump(p, h)) for p, h in enumerate(handles)]
    completion_tokens = 0
    try:
        if body.echo:
            for p, text in enumerate(texts):
                for j in range(body.n):
                    choice = choices.setdefault(p * body.n + j, _Choice(service, p * body.n + j, text, True, stops,
                                                                        body.return_tokens_as_token_ids))
                    yield chunk({**base, "choices": [{"index": choice.index, "text": choice.prefix, "logprobs": None,
                                                      "finish_reason": None}]})
        open_handles = len(handles)
        while open_handles:
            p, item = await queue.get()
            if item is None:
                open_handles -= 1
                continue
            if isinstance(item, Exception):
                error = item if isinstance(item, ServeError) else ServeError(500, "internal error", "server_error")
                yield chunk(error_body(error))
                open_handles -= 1
                continue
            index = p * body.n + item.index
            choice = choices.setdefault(index, _Choice(service, index, texts[p], body.echo, stops,
                                                       body.return_tokens_as_token_ids))
            text = choice.delta(item.text, item.finished)
            completion_tokens += len(item.token_ids)
            finish = None
            if item.finished:
                _, cut = choice.text_of(choice.raw)
                finish = "stop" if cut else _finish_reason(item.finish_reason or "length")
            if text or finish or item.logprobs:
                yield chunk({**base, "choices": [{"index": index, "text": text,
                                                  "logprobs": choice.logprobs(item.logprobs, item.token_ids),
                                                  "finish_reason": finish}]})
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
