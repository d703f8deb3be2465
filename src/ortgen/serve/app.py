"""The ASGI app: protocol routers over one GenerationService, and what every request goes through.

FastAPI on uvicorn: the request models of each protocol are declared once (pydantic) and give
both the validation (types, ranges, unknown fields refused) and the OpenAPI schema served at
``/openapi.json``, which clients and schemathesis read. Each protocol is a router module
(:mod:`~ortgen.serve.openai_api`, :mod:`~ortgen.serve.kserve_api`); the lifecycle of a request
(submit, wait or stream, timeout, cancel on disconnect, metrics) is :mod:`~ortgen.serve.service`.

Every request passes :class:`Gate` first: the API key (Bearer; health routes are open), the body
size limit, the shutdown gate (503 once draining), then one structured log line and the
per-route counters when it ends. Errors are JSON in the protocol's own shape
(``{"error": {"message", "type", "param", "code"}}`` under ``/v1``, ``{"error": "message"}``
elsewhere) and never carry a stack trace.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ortgen import __version__
from ortgen.serve import chat_api, kserve_api, openai_api
from ortgen.serve.json_guard import check_json_body
from ortgen.serve.service import GenerationService, ServeError

log = logging.getLogger("ortgen.serve")
access_log = logging.getLogger("ortgen.serve.requests")

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/health", "/")  # "/": the QA page, no data in it


def _error(path: str, error: ServeError) -> JSONResponse:
    return openai_api.error_response(error) if path.startswith(openai_api.PREFIX) else kserve_api.error_response(error)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        location = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(location)
        message = error.get("msg", "invalid")
        if error.get("type") == "extra_forbidden":
            message = "unknown field (not accepted by this server)"
        elif error.get("type") == "json_invalid":
            where, message = "", "the body is not valid JSON (UTF-8)"
        elif error.get("type") == "missing" and not where:
            message = "the request has no body: send a JSON object"
        elif error.get("type") == "missing":
            message = "required field missing"
        parts.append(f"{where}: {message}" if where else message)
    return "invalid request: " + "; ".join(parts)


class Gate:
    """ASGI middleware: auth, body size, shutdown gate, in-flight count, log line and counters."""

    def __init__(self, app, service: GenerationService) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        started = time.perf_counter()
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex[:16]
        state: dict[str, Any] = {"status": 500}
        scope.setdefault("state", {})["request_id"] = request_id
        config = self.service.config

        async def send_with_status(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            rejection = self._reject(scope, path)
            if rejection is not None:
                await rejection(scope, receive, send_with_status)
                return
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
                await _error(path, ServeError(413, f"the body has {length} bytes; this server takes at most "
                                                   f"{config.max_body_bytes}"))(scope, receive, send_with_status)
                return
            is_json = _json_by_default(scope)
            self.service.in_flight += 1
            try:
                receiving = _limited(receive, config.max_body_bytes)
                if is_json:
                    body = await _read_body(receiving)
                    problem = check_json_body(body)
                    if problem:
                        await _error(path, ServeError(400, f"invalid request: {problem}"))(
                            scope, receive, send_with_status)
                        return
                    receiving = _replay(body, receive)
                await self.app(scope, receiving, send_with_status)
            except _BodyTooLarge:
                await _error(path, ServeError(413, f"the body is larger than {config.max_body_bytes} bytes"))(
                    scope, receive, send_with_status)
            finally:
                self.service.in_flight -= 1
        finally:
            route = getattr(scope.get("route"), "path", None) or ("(no route)" if state["status"] == 404 else path)
            self.service.metrics.http_request(route, state["status"])
            notes = scope.get("state", {})
            access_log.info(json.dumps({
                "event": "request", "id": request_id, "method": scope.get("method"), "route": route,
                "status": state["status"], "prompt_tokens": notes.get("prompt_tokens"),
                "completion_tokens": notes.get("completion_tokens"),
                "queue_seconds": _round(notes.get("queue_seconds")),
                "seconds": round(time.perf_counter() - started, 4)}))

    def _reject(self, scope, path: str):
        if path in OPEN_PATHS:
            return None
        key = self.service.config.api_key
        if key:
            given = _header(scope, b"authorization") or ""
            token = given[7:] if given.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(token.encode(), key.encode()):
                what = "a wrong API key" if token else "no API key (send Authorization: Bearer KEY)"
                return _error(path, ServeError(401, f"unauthorized: {what}", "authentication_error"))
        if self.service.draining:
            return _error(path, ServeError(503, "the server is shutting down", "unavailable"))
        return None


class _BodyTooLarge(Exception):
    pass


def _limited(receive, limit: int):
    """``receive`` that refuses bodies over ``limit`` bytes (chunked bodies have no Content-Length)."""
    seen = 0

    async def wrapped():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge()
        return message
    return wrapped


def _json_by_default(scope) -> bool:
    """Bodies are JSON whatever the Content-Type says (``curl -d`` sends form encoding), except the
    binary tensor extension's. Returns whether this request's body is JSON."""
    if scope.get("method") != "POST" or _header(scope, b"inference-header-content-length") is not None:
        return False
    headers = [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"]
    scope["headers"] = headers + [(b"content-type", b"application/json")]
    return True


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive):
    """``receive`` that gives the already read ``body`` once, then whatever the client sends next (a
    disconnect, which streaming responses watch for)."""
    sent = False

    async def wrapped():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return wrapped


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def create_app(service: GenerationService, rag=None) -> FastAPI:
    """The app for ``service``; with ``rag`` (a RagPipeline) also retrieval QA and its page."""
    app = FastAPI(title="ortgen", version=__version__,
                  description=f"{service.model_name}: OpenAI completions and KServe v2 (with the generate "
                              "extension) over ortgen's step engine. See docs/serve.md.")
    app.include_router(openai_api.build_router(service))
    app.include_router(chat_api.build_chat_router(service))
    app.include_router(kserve_api.build_router(service))
    if rag is not None:
        from ortgen.serve import rag_api

        app.include_router(rag_api.build_router(service, rag))

    @app.get("/health", summary="Liveness (no API key needed)", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok" if service.ready else "draining"}

    @app.api_route("/metrics", methods=["GET", "HEAD"], summary="Prometheus metrics", tags=["metrics"])
    async def metrics() -> Response:
        body, content_type = service.metrics.exposition()
        return Response(body, media_type=content_type)

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return _error(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(request.url.path, ServeError(400, _validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = {400: "invalid request: the body is not valid JSON (UTF-8)",  # FastAPI could not decode it
                   404: f"no route {request.method} {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return _error(request.url.path, ServeError(exc.status_code, message,
                                                   "not_found_error" if exc.status_code == 404 else
                                                   "invalid_request_error"))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(request.url.path, ServeError(500, "internal error (see the server log)", "server_error"))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {}).setdefault("schemas", {}).update(kserve_api.openapi_components())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_middleware(Gate, service=service)
    return app
