"""Retrieval QA over HTTP (``ortgen serve PACKAGE --index INDEX``), and the page at ``/``.

    POST /v1/rag/answer       {"question", "k", "filters", "mode", "settings", "stream"}
                              -> {"answer", "text", "sources": [passage + highlights], "prompt", "timings"}
                              stream: server-sent events: sources first, then the answer's text as it
                              settles, then the final answer (parsed yes / no / maybe for PubMedQA fine-tunes)
    GET  /v1/rag/collections  what the index holds
    GET  /                    a page: ask, watch the answer stream, read the sources (matched words marked)

The same pipeline as ``ortgen rag ask`` (:class:`ortgen.rag.answer.RagPipeline`): the answer for
the same question and settings is the same. Generation goes through the service, so limits, the
queue (429), timeouts and cancellation on disconnect apply as for every other route. The page is
one HTML file shipped in the package (no build step, no external fetches); it sends the API key
the user types.
"""

import asyncio
import json
import time
from importlib import resources
from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ortgen.errors import OrtgenError
from ortgen.rag.answer import RagAnswer, RagPipeline
from ortgen.rag.highlight import matches
from ortgen.serve.service import GenerationService, ServeError


class RagRequest(BaseModel):
    """``POST /v1/rag/answer``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    question: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50, description="passages to retrieve")
    filters: dict[str, Any] | None = Field(None, description='{"doc_ids": [...], "source_prefix", "title_contains", '
                                                             '"expr": a boolean expression in Milvus syntax}')
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid"
    settings: dict[str, Any] | None = Field(None, description="generation settings, ortgen's names (num_beams, "
                                                              "max_new_tokens, ...); default: the package's")
    stream: bool = False


def _sources(question: str, passages: list[Any]) -> list[dict[str, Any]]:
    out = []
    for passage in passages:
        item = passage.to_dict()
        item["highlights"] = [list(span) for span in matches(question, passage.text)]
        out.append(item)
    return out


def build_router(service: GenerationService, pipeline: RagPipeline) -> APIRouter:
    router = APIRouter(tags=["retrieval QA"])

    @router.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        html = resources.files("ortgen.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html.replace("{{MODEL}}", service.model_name))

    @router.get("/v1/rag/collections", summary="What the retrieval index holds")
    async def collections() -> dict[str, Any]:
        return {"collections": [pipeline.index.describe()]}

    @router.post("/v1/rag/answer", summary="Answer a question from the index's passages")
    async def answer(body: RagRequest, request: Request):
        started = time.perf_counter()
        options = pipeline.with_verdict(dict(body.settings or {}))
        try:
            passages, timings = await asyncio.to_thread(pipeline.retrieve, body.question, body.k, body.filters,
                                                        body.mode)
            prompt = pipeline.prompt(body.question, [p.text for p in passages], options)
        except OrtgenError as exc:
            raise ServeError(400, str(exc)) from None
        handle = await service.submit(prompt.ids, options)
        request.state.prompt_tokens = len(prompt.ids)
        result = RagAnswer(body.question, "", None, passages, prompt,
                           timings={"retrieve_seconds": sum(timings.to_dict().values()), "_started": started})
        if body.stream:
            return StreamingResponse(_events(service, pipeline, handle, result, request),
                                     media_type="text/event-stream")
        output = await service.result(handle, request.is_disconnected)
        request.state.completion_tokens = output.completion_tokens
        done = pipeline.finish(result, output).to_dict()
        done["sources"] = _sources(body.question, passages)
        return done

    return router


async def _events(service: GenerationService, pipeline: RagPipeline, handle, result: RagAnswer,
                  request: Request) -> AsyncIterator[bytes]:
    def event(payload: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()

    yield event({"type": "sources", "sources": _sources(result.question, result.passages),
                 "prompt": {"tokens": len(result.prompt.ids), "passages_used": result.prompt.passages_used,
                            "truncated": result.prompt.truncated}})
    try:
        async for delta in service.stream(handle, request.is_disconnected):
            if delta.index == 0 and delta.text:
                yield event({"type": "delta", "text": delta.text})
    except ServeError as error:
        yield event({"type": "error", "error": error.message})
        return
    output = handle._output
    if output is not None:
        request.state.completion_tokens = output.completion_tokens
        final = pipeline.finish(result, output).to_dict()
        final.pop("sources", None)
        yield event({"type": "done", **final})
