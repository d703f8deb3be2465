"""The KServe v2 protocol (what Triton and KServe clients speak), with Triton's generate extension.

    GET  /v2                              server metadata
    GET  /v2/health/live, /v2/health/ready
    GET  /v2/models/{name}[/versions/{v}] model metadata (inputs, outputs)
    GET  /v2/models/{name}/ready
    POST /v2/models/{name}/infer          inputs: text_input BYTES [batch] (+ typed settings) -> text_output
    POST /v2/models/{name}/generate       {"text_input": ..., settings...} -> {"text_output": ...}
    POST /v2/models/{name}/generate_stream   the same as server-sent events, a delta per event

Input and output names follow the TensorRT-LLM ensemble users know (``text_input``,
``max_tokens``, ``beam_width``, ``num_return_sequences``, ``temperature``, ``top_k``, ``top_p``,
``length_penalty``, ``repetition_penalty``, ``min_length`` (new tokens, as TensorRT-LLM counts
it), ``random_seed``, ``stop_words``; ``text_output``), so clients written for it work. Settings may
also come as request ``parameters``. ``infer`` takes JSON tensors or Triton's binary tensor
extension (what ``tritonclient.http`` sends by default). Errors are ``{"error": "message"}``.
"""


import asyncio
import json
import struct
from typing import Annotated, Any, AsyncIterator

import numpy as np
from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ortgen import __version__
from ortgen.errors import GenerationSettingsError
from ortgen.serve import trtllm
from ortgen.serve.service import GenerationService, ServeError
from ortgen.serve.trtllm import SETTINGS

PREFIX = "/v2"
BINARY_HEADER = "Inference-Header-Content-Length"
MODEL_VERSION = "1"

NUMERIC = {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "FP16", "FP32", "FP64"}


class InferTensor(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferOutputRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    """``POST /v2/models/{name}/infer`` (JSON form; the binary tensor extension is also accepted)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    id: str | None = None
    parameters: dict[str, Any] | None = None
    inputs: list[InferTensor] = Field(min_length=1)
    outputs: list[InferOutputRequest] | None = None


class GenerateRequest(BaseModel):
    """``POST /v2/models/{name}/generate``: ``text_input`` and settings (as keys or ``parameters``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)
    text_input: str
    parameters: dict[str, Any] | None = None
    max_tokens: int | None = None
    beam_width: int | None = None
    num_return_sequences: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    length_penalty: float | None = None
    repetition_penalty: float | None = None
    min_length: int | None = None
    random_seed: int | None = None
    stop_words: str | list[str] | None = None
    no_repeat_ngram_size: int | None = None
    early_stopping: bool | None = None
    guided_decoding_guide_type: str | None = None  # structured output, TensorRT-LLM's names (serve.trtllm)
    guided_decoding_guide: str | None = None
    stream: bool | None = None


INFER_SCHEMA = InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")
INFER_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {k: v for k, v in INFER_SCHEMA.items() if k != "$defs"}}}}}


def openapi_components() -> dict[str, Any]:
    """The schemas the infer body refers to (it is read by hand: JSON or binary tensors)."""
    return {"InferRequest": {k: v for k, v in INFER_SCHEMA.items() if k != "$defs"}, **INFER_SCHEMA.get("$defs", {})}


def error_response(error: ServeError) -> JSONResponse:
    headers = {"Retry-After": str(error.retry_after)} if error.retry_after else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


def settings_to_options(values: dict[str, Any]) -> dict[str, Any]:
    try:
        return trtllm.settings_to_options(values)
    except GenerationSettingsError as exc:
        raise ServeError(400, str(exc)) from None


# -- tensors ----------------------------------------------------------------------------------

def _scalar(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def _decode_bytes(raw: bytes) -> list[bytes]:
    """Triton's BYTES binary layout: each element a 4-byte little-endian length, then its bytes."""
    out, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise ServeError(400, "malformed BYTES tensor in the binary data")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        out.append(raw[offset:offset + length])
        offset += length
    return out


_NUMPY = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
          "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32,
          "FP64": np.float64, "BOOL": np.bool_}


def _tensor_values(tensor: InferTensor, binary: bytes | None) -> list[Any]:
    count = int(np.prod(tensor.shape)) if tensor.shape else 1
    if binary is not None:
        if tensor.datatype == "BYTES":
            values: list[Any] = _decode_bytes(binary)
        elif tensor.datatype in _NUMPY:
            values = np.frombuffer(binary, dtype=_NUMPY[tensor.datatype]).tolist()
        else:
            raise ServeError(400, f"input {tensor.name}: unsupported datatype {tensor.datatype}")
    else:
        if tensor.data is None:
            raise ServeError(400, f"input {tensor.name} has no data")
        values = list(np.array(tensor.data, dtype=object).reshape(-1)) if tensor.data else []
    if len(values) != count:
        raise ServeError(400, f"input {tensor.name}: shape {tensor.shape} needs {count} values, got {len(values)}")
    return [_scalar(v) for v in values]


def _check_type(name: str, datatype: str, values: list[Any]) -> None:
    expected = SETTINGS[name][0]
    kind = "BYTES" if expected == "BYTES" else "BOOL" if expected == "BOOL" else "number"
    given = "BYTES" if datatype == "BYTES" else "BOOL" if datatype == "BOOL" else "number" if datatype in NUMERIC \
        else datatype
    if kind != given:
        raise ServeError(400, f"input {name} must be {expected}, got {datatype}")
    for v in values:
        if kind == "number" and (isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v in (
                float("inf"), float("-inf"))):
            raise ServeError(400, f"input {name} must hold finite numbers, got {v!r}")
        if expected in ("INT32", "UINT64") and isinstance(v, float):
            if not v.is_integer():
                raise ServeError(400, f"input {name} must hold integers, got {v!r}")


def _int_if_integral(name: str, value: Any) -> Any:
    if SETTINGS.get(name, ("",))[0] in ("INT32", "UINT64") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _encode_bytes(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


# -- routes -----------------------------------------------------------------------------------

def build_router(service: GenerationService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["KServe v2"])
    Name = Annotated[str, Path(description="the served model's name", json_schema_extra={"enum": [service.model_name]})]
    Version = Annotated[str, Path(description="the model's version", json_schema_extra={"enum": [MODEL_VERSION]})]

    def check_model(name: str, version: str | None = None) -> None:
        if name != service.model_name:
            raise ServeError(404, f"unknown model {name!r}; this server serves {service.model_name!r}")
        if version is not None and version != MODEL_VERSION:
            raise ServeError(404, f"unknown version {version!r} of {name!r}; it has version {MODEL_VERSION}")

    @router.get("", summary="Server metadata")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "ortgen", "version": __version__, "extensions": ["generate", "binary_tensor_data"]}

    @router.get("/health/live", summary="Liveness (no API key needed)")
    async def live() -> Response:
        return Response(status_code=200)

    @router.get("/health/ready", summary="Readiness (no API key needed); 503 while shutting down")
    async def ready() -> Response:
        return Response(status_code=200 if service.ready else 503)

    def metadata() -> dict[str, Any]:
        inputs = [{"name": "text_input", "datatype": "BYTES", "shape": [-1]}]
        inputs += [{"name": n, "datatype": d, "shape": [-1], "optional": True} for n, (d, _) in SETTINGS.items()]
        return {"name": service.model_name, "versions": [MODEL_VERSION], "platform": "ortgen",
                "inputs": inputs, "outputs": [{"name": "text_output", "datatype": "BYTES", "shape": [-1, -1]}]}

    @router.get("/models/{name}", summary="Model metadata")
    async def model_metadata(name: Name) -> dict[str, Any]:
        check_model(name)
        return metadata()

    @router.get("/models/{name}/versions/{version}", summary="Model metadata (one version)")
    async def model_version_metadata(name: Name, version: Version) -> dict[str, Any]:
        check_model(name, version)
        return metadata()

    def config() -> dict[str, Any]:
        """The model's configuration in Triton's JSON form (what tritonclient's get_model_config reads)."""
        triton_types = {"BYTES": "TYPE_STRING", "INT32": "TYPE_INT32", "UINT64": "TYPE_UINT64", "FP32": "TYPE_FP32",
                        "BOOL": "TYPE_BOOL"}
        inputs = [{"name": "text_input", "data_type": "TYPE_STRING", "dims": [-1]}]
        inputs += [{"name": n, "data_type": triton_types[d], "dims": [-1], "optional": True}
                   for n, (d, _) in SETTINGS.items()]
        return {"name": service.model_name, "platform": "ortgen", "backend": "ortgen", "version_policy": {"latest": {
            "num_versions": 1}}, "max_batch_size": 0, "input": inputs,
            "output": [{"name": "text_output", "data_type": "TYPE_STRING", "dims": [-1, -1]}],
            "model_transaction_policy": {"decoupled": False}}

    @router.get("/models/{name}/config", summary="Model configuration (Triton's JSON form)")
    async def model_config(name: Name) -> dict[str, Any]:
        check_model(name)
        return config()

    @router.get("/models/{name}/versions/{version}/config", summary="Model configuration (one version)")
    async def model_version_config(name: Name, version: Version) -> dict[str, Any]:
        check_model(name, version)
        return config()

    @router.get("/models/{name}/ready", summary="Model readiness")
    async def model_ready(name: Name) -> Response:
        check_model(name)
        return Response(status_code=200 if service.ready else 503)

    @router.get("/models/{name}/versions/{version}/ready", summary="Model readiness (one version)")
    async def model_version_ready(name: Name, version: Version) -> Response:
        check_model(name, version)
        return Response(status_code=200 if service.ready else 503)

    @router.post("/models/{name}/infer", summary="Inference: text_input -> text_output",
                 openapi_extra=INFER_BODY)
    async def infer(name: Name, request: Request) -> Response:
        check_model(name)
        return await _infer(service, request)

    @router.post("/models/{name}/versions/{version}/infer", summary="Inference (one version)",
                 openapi_extra=INFER_BODY)
    async def infer_version(name: Name, version: Version, request: Request) -> Response:
        check_model(name, version)
        return await _infer(service, request)

    @router.post("/models/{name}/generate", summary="Generate extension: text in, text out")
    async def generate(name: Name, body: GenerateRequest, request: Request) -> dict[str, Any]:
        check_model(name)
        handle, settings = await _submit_generate(service, body, request)
        output = await service.result(handle, request.is_disconnected)
        request.state.completion_tokens = output.completion_tokens
        request.state.queue_seconds = output.timings.queue_seconds
        texts = output.texts
        return {"model_name": service.model_name, "model_version": MODEL_VERSION,
                "text_output": texts[0] if len(texts) == 1 else texts}

    @router.post("/models/{name}/generate_stream", summary="Generate extension, streamed (server-sent events)")
    async def generate_stream(name: Name, body: GenerateRequest, request: Request) -> StreamingResponse:
        check_model(name)
        handle, _ = await _submit_generate(service, body, request)
        return StreamingResponse(_events(service, handle, request), media_type="text/event-stream")

    return router


async def _submit_generate(service: GenerationService, body: GenerateRequest, request: Request):
    values = {k: v for k, v in body.model_dump(exclude={"text_input", "parameters"}).items() if v is not None}
    for key, value in (body.parameters or {}).items():
        values.setdefault(key, value)
    options = settings_to_options(values)
    ids = service.prompt_ids(body.text_input, "text_input")
    request.state.prompt_tokens = len(ids)
    return await service.submit(ids, options), options


async def _events(service: GenerationService, handle, request: Request) -> AsyncIterator[bytes]:
    tokens = 0
    try:
        async for delta in service.stream(handle, request.is_disconnected):
            tokens += len(delta.token_ids)
            if delta.text or delta.finished:
                payload = {"model_name": service.model_name, "model_version": MODEL_VERSION,
                           "text_output": delta.text, "index": delta.index}
                if delta.finished:
                    payload["finish_reason"] = "length" if delta.finish_reason in ("length", "incomplete") else "stop"
                yield f"data: {json.dumps(payload)}\n\n".encode()
    except ServeError as error:  # after the 200: the error travels in the stream
        yield f"data: {json.dumps({'error': error.message})}\n\n".encode()
    request.state.completion_tokens = tokens


async def _read_infer(request: Request) -> tuple[InferRequest, dict[str, bytes]]:
    body = await request.body()
    header_length = request.headers.get(BINARY_HEADER)
    binary: dict[str, bytes] = {}
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise ServeError(400, f"{BINARY_HEADER} must be an integer, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise ServeError(400, f"{BINARY_HEADER} is {length}, but the body has {len(body)} bytes")
        header, rest = body[:length], body[length:]
    else:
        header, rest = body, b""
    try:
        parsed = InferRequest.model_validate_json(header)
    except ValidationError as exc:
        raise ServeError(400, "invalid inference request: " + _validation_message(exc)) from None
    offset = 0
    for tensor in parsed.inputs:
        size = (tensor.parameters or {}).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise ServeError(400, f"input {tensor.name}: binary_data_size {size!r} does not fit the body")
            binary[tensor.name] = rest[offset:offset + size]
            offset += size
    return parsed, binary


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts)


async def _infer(service: GenerationService, request: Request) -> Response:
    parsed, binary = await _read_infer(request)
    tensors = {t.name: t for t in parsed.inputs}
    if "text_input" not in tensors:
        raise ServeError(400, "the request has no text_input (BYTES [batch])")
    unknown = sorted(set(tensors) - {"text_input"} - set(SETTINGS))
    if unknown:
        raise ServeError(400, f"unknown input(s) {', '.join(unknown)}; inputs: text_input, {', '.join(SETTINGS)}")
    text_tensor = tensors["text_input"]
    if text_tensor.datatype != "BYTES":
        raise ServeError(400, f"text_input must be BYTES, got {text_tensor.datatype}")
    try:
        texts = [v if isinstance(v, str) else bytes(v).decode("utf-8")
                 for v in _tensor_values(text_tensor, binary.get("text_input"))]
    except UnicodeDecodeError:
        raise ServeError(400, "text_input is not UTF-8") from None
    if not texts:
        raise ServeError(400, "text_input is empty")
    if parsed.outputs and all(o.name != "text_output" for o in parsed.outputs):
        names = ", ".join(o.name for o in parsed.outputs)
        raise ServeError(400, f"unknown output(s) {names}; this model returns text_output")
    values: dict[str, Any] = {}
    for name, tensor in tensors.items():
        if name == "text_input":
            continue
        items = _tensor_values(tensor, binary.get(name))
        _check_type(name, tensor.datatype, items)
        items = [_int_if_integral(name, v) for v in items]
        if SETTINGS[name][0] == "BYTES":
            values[name] = [v if isinstance(v, str) else bytes(v).decode("utf-8", "replace") for v in items]
        elif len(set(map(repr, items))) > 1:
            raise ServeError(400, f"input {name}: one value for the whole batch, got {items}")
        else:
            values[name] = items[0] if items else None
    for key, value in (parsed.parameters or {}).items():
        if key in ("binary_data_output",):
            continue
        values.setdefault(key, value)
    options = settings_to_options({k: v for k, v in values.items() if v is not None})
    ids = [service.prompt_ids(t, "text_input") for t in texts]
    request.state.prompt_tokens = sum(len(i) for i in ids)
    handles = await service.submit_all(ids, options)
    outputs = await asyncio.gather(*(service.result(h, request.is_disconnected) for h in handles))
    request.state.completion_tokens = sum(o.completion_tokens for o in outputs)
    request.state.queue_seconds = max((o.timings.queue_seconds or 0) for o in outputs)
    n = len(outputs[0].sequences)
    flat = [text for output in outputs for text in output.texts]
    wants_binary = bool((parsed.parameters or {}).get("binary_data_output")) or any(
        (o.parameters or {}).get("binary_data") for o in parsed.outputs or [] if o.name == "text_output")
    result: dict[str, Any] = {"model_name": service.model_name, "model_version": MODEL_VERSION,
                              **({"id": parsed.id} if parsed.id else {})}
    shape = [len(outputs), n]
    if not wants_binary:
        result["outputs"] = [{"name": "text_output", "datatype": "BYTES", "shape": shape, "data": flat}]
        return JSONResponse(result)
    data = _encode_bytes(flat)
    result["outputs"] = [{"name": "text_output", "datatype": "BYTES", "shape": shape,
                          "parameters": {"binary_data_size": len(data)}}]
    header = json.dumps(result).encode()
    return Response(header + data, media_type="application/octet-stream",
                    headers={BINARY_HEADER: str(len(header))})
