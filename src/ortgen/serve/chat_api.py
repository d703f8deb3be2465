"""``POST /v1/chat/completions``: OpenAI's chat API over the package's chat template.

The messages are rendered with the checkpoint's template (kept in the package at export:
:mod:`ortgen.package.chat_template`) and encoded as ``apply_chat_template(tokenize=True)`` encodes
them; from there a chat request *is* a completions request on those token ids (same options, same
scheduler, same stop strings and logprobs), answered in chat's shape: ``message`` / ``delta`` with
the assistant's role, logprobs as ``content: [{token, logprob, bytes, top_logprobs}]``. The
beam-search extensions of completions (``use_beam_search``, ``num_beams``, ``length_penalty``, ...)
apply unchanged.

Structured output (``response_format`` json_object / json_schema, and vLLM's guided_* and
structured_outputs fields) constrains the answer in every strategy, beam search included
(:mod:`~ortgen.serve.structured_fields`).

Refused with a 400 that says why: a package without a chat template (BioGPT, GPT-2, OPT), tools /
function calling, and anything the template itself refuses (e.g. Llama 2's "Conversation roles
must alternate").
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from ortgen.errors import OrtgenError
from ortgen.runtime.stop_matcher import StopMatcher
from ortgen.serve.openai_api import (PREFIX, CompletionRequest, FinishedChoice, ResponseShape, StreamOptions,
                                     TokenRecords, _options, _Strict, _usage, finished_choices, stream_events)
from ortgen.serve.service import GenerationService, ServeError
from ortgen.serve.structured_fields import FIELDS as STRUCTURED_FIELDS

DEFAULT_MAX_TOKENS = 512  # when a chat request sets neither max_tokens nor max_completion_tokens


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = None


class ChatCompletionRequest(_Strict):
    """``POST /v1/chat/completions``. Unknown fields are refused (400), as by the OpenAI API."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, description="deprecated name of max_completion_tokens")
    max_completion_tokens: int | None = Field(None, ge=1, description=f"new tokens at most (default: "
                                                                      f"{DEFAULT_MAX_TOKENS}, or what the model has left)")
    n: int = Field(1, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_tokens: int | None = Field(None, ge=0)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    use_beam_search: bool = False
    best_of: int | None = Field(None, ge=1)
    num_beams: int | None = Field(None, ge=1)
    length_penalty: float | None = None
    repetition_penalty: float | None = Field(None, gt=0)
    early_stopping: bool | Literal["never"] | None = None
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    return_tokens_as_token_ids: bool = False
    response_format: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_choice: list[str] | None = None
    guided_regex: str | None = None
    guided_grammar: str | None = None
    structured_outputs: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = Field(None, description="more variables for the chat template "
                                                                           "(vLLM's extension)")


def messages_for_template(body: ChatCompletionRequest) -> list[dict[str, Any]]:
    """The messages as the template reads them (``developer`` is OpenAI's newer name for ``system``)."""
    out = []
    for message in body.messages:
        content = message.content
        item: dict[str, Any] = {"role": "system" if message.role == "developer" else message.role,
                                "content": "" if content is None else content if isinstance(content, str)
                                else [part.model_dump() for part in content]}
        if message.name is not None:
            item["name"] = message.name
        out.append(item)
    return out


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    if body.tools or body.tool_choice not in (None, "none") or body.parallel_tool_calls:
        raise ServeError(400, "tools / function calling are not supported by this server", param="tools")
    if body.top_logprobs is not None and not body.logprobs:
        raise ServeError(400, "top_logprobs needs logprobs: true", param="top_logprobs")


def as_completion(body: ChatCompletionRequest, prompt_ids: list[int], max_positions: int) -> CompletionRequest:
    """The completions request the chat request is, on the rendered prompt's ids."""
    limit = body.max_completion_tokens or body.max_tokens
    if limit is None:
        limit = max(1, min(DEFAULT_MAX_TOKENS, max_positions - len(prompt_ids)))
    shared = ("n", "temperature", "top_p", "top_k", "min_tokens", "stop", "seed", "stream", "stream_options", "user",
              "use_beam_search", "best_of", "num_beams", "length_penalty", "repetition_penalty", "early_stopping",
              "no_repeat_ngram_size", "presence_penalty", "frequency_penalty", "logit_bias",
              "return_tokens_as_token_ids", *STRUCTURED_FIELDS)
    return CompletionRequest(model=body.model, prompt=prompt_ids, max_tokens=limit,
                             logprobs=(body.top_logprobs or 0) if body.logprobs else None,
                             **{name: getattr(body, name) for name in shared})


def chat_logprobs(records: TokenRecords | None) -> dict[str, Any] | None:
    """Chat's logprobs: per generated token, its name, log-probability and UTF-8 bytes, and every one of
    the top alternatives (``bytes`` is null where the name is not the token's own text: a piece of a
    character, printed as U+FFFD, or ``token_id:N``)."""
    if records is None:
        return None

    def entry(token: int, logprob: float) -> dict[str, Any]:
        name = records.label(token)
        exact = "\ufffd" not in name and not name.startswith("token_id:")
        return {"token": name, "logprob": logprob, "bytes": list(name.encode("utf-8")) if exact else None}

    return {"content": [{**entry(token, record.logprob), "top_logprobs": [entry(t, lp) for t, lp in record.top]}
                        for token, record in zip(records.token_ids, records.records)]}


class ChatShape(ResponseShape):
    """Chat's ``message`` (whole answers) and ``delta`` (streamed chunks, the first naming the role)."""

    object = "chat.completion"
    chunk_object = "chat.completion.chunk"

    def choice(self, c: FinishedChoice) -> dict[str, Any]:
        return {"index": c.index, "message": {"role": "assistant", "content": c.text},
                "logprobs": chat_logprobs(c.records), "finish_reason": c.finish_reason}

    def delta(self, index: int, text: str, logprobs: dict[str, Any] | None, finish: str | None,
              first: bool, records: TokenRecords | None = None) -> dict[str, Any]:
        delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        return {"index": index, "delta": delta, "logprobs": chat_logprobs(records), "finish_reason": finish}


CHAT = ChatShape()


def build_chat_router(service: GenerationService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["OpenAI"])

    @router.post("/chat/completions", summary="Chat completions (the package's chat template)")
    async def chat(request: Request, body: ChatCompletionRequest):
        if body.model != service.model_name:
            raise ServeError(404, f"the model {body.model!r} does not exist; this server serves "
                                  f"{service.model_name!r}", "not_found_error", "model")
        generator = service.generator
        if generator.chat_template is None:
            raise ServeError(400, f"the model {service.model_name!r} has no chat template (BioGPT, GPT-2 and OPT are "
                                  "not chat models): use POST /v1/completions with a prompt", param="messages")
        _refuse_unsupported(body)
        try:
            ids = generator.chat_ids(messages_for_template(body), **(body.chat_template_kwargs or {}))
        except OrtgenError as exc:
            raise ServeError(400, f"the chat template refused the messages: {exc}", param="messages") from None
        ids = service.prompt_ids(ids, "messages")
        completion = as_completion(body, ids, generator.manifest.architecture.max_positions)
        options = _options(completion)
        handles = await service.submit_all([ids], options)
        request.state.prompt_tokens = len(ids)
        request.state.queue_seconds = None
        texts = [generator._decode_text(ids) or ""]
        stops = StopMatcher(options.get("stop_strings", []))
        created, rid = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            return StreamingResponse(stream_events(service, request, completion, handles, texts, [ids], stops,
                                                   created, rid, CHAT), media_type="text/event-stream")
        outputs = await asyncio.gather(*(service.result(h, request.is_disconnected) for h in handles))
        choices = [CHAT.choice(c) for c in finished_choices(service, completion, outputs, texts, [ids], stops)]
        return {"id": rid, "object": CHAT.object, "created": created, "model": service.model_name,
                "choices": choices, "usage": _usage(request, outputs, [ids])}

    return router
