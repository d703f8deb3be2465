"""``ortgen serve PACKAGE``: an HTTP server speaking the OpenAI and KServe v2 protocols."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from ortgen.errors import OrtgenError

_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20, "g": 1e9,
          "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def byte_size(text: str) -> int:
    match = _SIZE.match(text)
    unit = (match.group(2) or "").lower() if match else None
    if match is None or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"expected a size like 2GiB, 512MB or 1000000, got {text!r}")
    return int(float(match.group(1)) * _UNITS[unit])


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ortgen.runtime.scheduler import SchedulerLimits
    from ortgen.serve.config import DEFAULT_HOST, DEFAULT_PORT, ServeConfig

    limits, config = SchedulerLimits(), ServeConfig()
    p = sub.add_parser(
        "serve",
        help="serve a package over HTTP (OpenAI completions, KServe v2 / Triton generate)",
        description=(
            "Serve one package over HTTP: OpenAI's /v1/completions (what the official openai client calls; beam "
            "search via extra_body, streaming included) and KServe v2 (/v2/models/NAME/infer, the generate "
            "extension /generate and /generate_stream: what tritonclient and KServe clients call), /metrics "
            "(Prometheus) and /openapi.json. Every request goes through ortgen's scheduler: requests share "
            "decoder steps. SIGTERM stops accepting (503), lets running requests finish within the grace period, "
            "then exits 0. Needs the serve extra: pip install 'ortgen[serve]'. Reference: docs/serve.md."
        ),
        epilog="example: ortgen serve biogpt-pkg --port 8000 --api-key $KEY   then   "
               "curl -H 'Authorization: Bearer $KEY' localhost:8000/v1/completions -d '{\"model\": \"biogpt-pkg\", "
               "\"prompt\": \"Aspirin is\", \"max_tokens\": 20}'",
    )
    p.add_argument("package", metavar="PACKAGE", type=Path, help="a package directory written by `ortgen export`")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on; 0.0.0.0 exposes the server to the network (default: {DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port; 0 picks a free one (default: {DEFAULT_PORT})")
    p.add_argument("--api-key", metavar="KEY",
                   help="require 'Authorization: Bearer KEY' on every route but health (default: the ORTGEN_API_KEY "
                        "environment variable; unset: no key)")
    p.add_argument("--model-name", metavar="NAME", help="the model name clients use (default: the package "
                                                         "directory's name)")
    p.add_argument("--max-running", type=int, default=limits.max_requests,
                   help=f"requests generating at once, sharing decoder steps (default: {limits.max_requests})")
    p.add_argument("--max-sequences", type=int, default=limits.max_sequences,
                   help=f"sequences (beams, samples) decoding at once (default: {limits.max_sequences})")
    p.add_argument("--max-queue", type=int, default=limits.max_queue,
                   help=f"requests waiting for a place; more get 429 with Retry-After (default: {limits.max_queue})")
    p.add_argument("--kv-budget", type=byte_size, metavar="BYTES",
                   help="KV cache the running requests may reserve, e.g. 2GiB (default: a quarter of the RAM, at "
                        "most 4 GiB)")
    p.add_argument("--prefill-chunk", type=int, default=limits.prefill_chunk,
                   help=f"prompt tokens prefilled per decoder step (default: {limits.prefill_chunk})")
    p.add_argument("--request-timeout", type=float, default=config.request_timeout,
                   help=f"seconds from arrival to the last token; later: 504 and cancelled "
                        f"(default: {config.request_timeout:g})")
    p.add_argument("--max-body-bytes", type=byte_size, default=config.max_body_bytes,
                   help=f"largest request body (default: {config.max_body_bytes} bytes)")
    p.add_argument("--max-prompt-tokens", type=int, help="longest prompt (default: the model's positions)")
    p.add_argument("--max-tokens", type=int, help="most new tokens one request may ask for (default: the model's "
                                                  "positions)")
    p.add_argument("--max-n", type=int, default=config.max_n,
                   help=f"most sequences per prompt (n, num_return_sequences) (default: {config.max_n})")
    p.add_argument("--max-beam-width", type=int, default=config.max_beam_width,
                   help=f"widest beam search (default: {config.max_beam_width})")
    p.add_argument("--grace", type=float, default=config.grace_seconds,
                   help=f"after SIGTERM, seconds running requests may take to finish (default: {config.grace_seconds:g})")
    p.add_argument("--index", type=Path, metavar="INDEX",
                   help="a retrieval index (ortgen rag index): adds POST /v1/rag/answer, GET /v1/rag/collections "
                        "and the question page at / (default: none)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu or cuda (default: cpu)")
    p.set_defaults(run=run)


def _positive(name: str, value: float | int | None) -> None:
    if value is not None and value <= 0:
        raise OrtgenError(f"--{name} must be > 0, got {value}")


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise OrtgenError(f"ortgen serve needs the serve extra ({exc.name} is missing): pip install 'ortgen[serve]'") \
            from None
    import logging

    from ortgen.runtime.generator import Generator
    from ortgen.runtime.scheduler import SchedulerLimits
    from ortgen.serve.config import ServeConfig
    from ortgen.serve.server import bind, serve
    from ortgen.serve.service import GenerationService

    for name in ("max-running", "max-sequences", "max-queue", "prefill-chunk", "request-timeout", "max-body-bytes",
                 "max-prompt-tokens", "max-tokens", "max-n", "max-beam-width", "grace", "threads", "kv-budget"):
        _positive(name, getattr(args, name.replace("-", "_")))
    if not 0 <= args.port <= 65535:
        raise OrtgenError(f"--port must be in [0, 65535], got {args.port}")
    api_key = args.api_key or os.environ.get("ORTGEN_API_KEY") or None
    limits = SchedulerLimits(max_requests=args.max_running, max_sequences=args.max_sequences,
                             max_queue=args.max_queue, kv_budget=args.kv_budget, prefill_chunk=args.prefill_chunk)
    config = ServeConfig(host=args.host, port=args.port, api_key=api_key, model_name=args.model_name,
                         request_timeout=args.request_timeout, max_body_bytes=args.max_body_bytes,
                         max_prompt_tokens=args.max_prompt_tokens, max_tokens=args.max_tokens, max_n=args.max_n,
                         max_beam_width=args.max_beam_width, grace_seconds=args.grace)
    generator = Generator.load(args.package, providers=args.provider, threads=args.threads, limits=limits)
    generator.scheduler  # noqa: B018 - load the engine now: the first request should not wait for it
    name = args.model_name or args.package.resolve().name
    service = GenerationService(generator, config, name)
    logging.getLogger("ortgen.serve.requests").setLevel(logging.INFO)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise OrtgenError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host, port = sock.getsockname()[:2]
    rag = None
    if args.index is not None:
        try:
            from ortgen.rag.answer import RagPipeline
            from ortgen.rag.index import Index
        except ImportError as exc:
            raise OrtgenError(f"--index needs the rag extra ({exc.name} is missing): pip install 'ortgen[rag]'") \
                from None
        from ortgen.cli.rag import quiet_milvus

        quiet_milvus()
        rag = RagPipeline(Index.open(args.index, threads=args.threads or 0), generator)

    def ready() -> None:
        print(f"serving {name} on http://{host}:{port} (OpenAI: /v1, KServe v2: /v2, metrics: /metrics"
              f"{', retrieval QA: /v1/rag/answer and the page at /' if rag else ''})"
              f"{'; API key required' if api_key else ''}", file=sys.stderr, flush=True)

    serve(service, sock, ready, rag)
    return 0
