"""``ortgen loadtest``: drive ``ortgen serve`` with concurrent HTTP clients, per concurrency level."""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

from ortgen.cli._args import positive_int
from ortgen.errors import OrtgenError


def _levels(text: str) -> list[int]:
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated client counts, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected client counts >= 1, got {text!r}")
    return values


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ortgen.bench.loadtest import LoadSettings

    d = LoadSettings()
    p = sub.add_parser(
        "loadtest",
        help="load-test ortgen serve: N concurrent HTTP clients per level (throughput, first token, p50/p99)",
        description=(
            "Drive a running `ortgen serve` (--url) or servers this command starts (--package) with concurrent "
            "clients sending streamed OpenAI completions back to back, for --duration seconds per concurrency "
            "level. Reports requests/s, tokens/s, time to first token, p50/p99 latency, 429s, 5xx, and responses "
            "that differ from the same request sent alone (JSON, markdown, PNG). With --package it also runs the "
            "same server with --max-running 1 (one request at a time) at the --compare-at levels."
        ),
        epilog="example: ortgen loadtest --package biogpt-pkg --concurrency 1,4,16,32 --duration 120 "
               "--out bench-results/serve",
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000 (default: none; one of --url or "
                                      "--package is required)")
    target.add_argument("--package", type=Path, help="start `ortgen serve PACKAGE` here on loopback (default: none; "
                                                     "one of --url or --package is required)")
    p.add_argument("--api-key", help="the server's API key (default: $ORTGEN_API_KEY, else none)")
    p.add_argument("--concurrency", type=_levels, default=[1, 4, 16, 32],
                   help="client counts, one level each (default: 1,4,16,32)")
    p.add_argument("--compare-at", type=_levels, default=[16],
                   help="with --package: levels also run against --max-running 1 (default: 16)")
    p.add_argument("--duration", type=float, default=d.duration,
                   help=f"seconds each level keeps starting requests (default: {d.duration:g})")
    p.add_argument("--prompt-tokens", type=positive_int, default=d.prompt_tokens,
                   help=f"tokens per prompt (default: {d.prompt_tokens})")
    p.add_argument("--max-tokens", type=positive_int, default=d.max_tokens,
                   help=f"new tokens per request, exactly (default: {d.max_tokens})")
    p.add_argument("--beam-width", type=positive_int, default=d.beam_width,
                   help=f"beam search width; 1 is greedy (default: {d.beam_width})")
    p.add_argument("--prompts", type=positive_int, default=d.prompts,
                   help=f"distinct prompts, cycled (default: {d.prompts})")
    p.add_argument("--server-args", default="",
                   help="with --package: extra `ortgen serve` options, e.g. '--threads 2' (default: none)")
    p.add_argument("--triton-env", type=Path, metavar="DIR",
                   help="with --package: also load-test Triton serving the package's `ortgen triton --backend python` "
                        "repository, from the environment built by `ortgen triton-env DIR`, at the --concurrency "
                        "levels (generate_stream); every server then gets the same text prompts (default: off)")
    p.add_argument("--out", type=Path, default=Path("bench-work/loadtest"),
                   help="where loadtest.json/.md/.png go (default: ./bench-work/loadtest)")
    p.set_defaults(run=run)


def _machine() -> str:
    from ortgen.bench.report import cpu_name

    return f"{cpu_name('CPU')}, {os.cpu_count()} cores"


def run(args: argparse.Namespace) -> int:
    try:
        import httpx
    except ImportError:
        raise OrtgenError("ortgen loadtest needs httpx: pip install 'ortgen[serve]'") from None
    from ortgen.bench.loadtest import LoadSettings, as_dicts, load_test, markdown, write

    if args.duration <= 0:
        raise OrtgenError(f"--duration must be > 0, got {args.duration}")
    if args.triton_env and not args.package:
        raise OrtgenError("--triton-env needs --package (the Triton repository is written for that package)")
    settings = LoadSettings(prompt_tokens=args.prompt_tokens, max_tokens=args.max_tokens, beam_width=args.beam_width,
                            prompts=args.prompts, duration=args.duration)
    key = args.api_key or os.environ.get("ORTGEN_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    levels: list = []
    comparisons = []
    started = time.time()
    if args.url:
        url = args.url.rstrip("/")
        model = _model(httpx, url, headers)
        results, _ = asyncio.run(load_test(url, model["id"], headers, model["vocab_size"], args.concurrency, settings,
                                           "ortgen serve"))
        levels += as_dicts(results)
    else:
        from ortgen.serve.process import running_server

        extra = shlex.split(args.server_args)
        env = {"ORTGEN_API_KEY": key} if key else None
        prompts = None
        if args.triton_env:  # Triton's models take text: every server gets the same text prompts
            from ortgen.triton.loadtest import text_prompts

            prompts, mean_tokens = text_prompts(args.package, settings)
            prompt_note = f"text prompts ({mean_tokens:.1f} tokens on average)"
        with running_server(args.package, *extra, env=env) as server:
            model = _model(httpx, server.url, headers)
            results, expected = asyncio.run(load_test(server.url, model["id"], headers, model["vocab_size"],
                                                      args.concurrency, settings, "ortgen serve", prompts=prompts))
        levels += as_dicts(results)
        with running_server(args.package, *extra, "--max-running", "1", env=env) as server:
            single, _ = asyncio.run(load_test(server.url, model["id"], headers, model["vocab_size"],
                                              args.compare_at, settings, "--max-running 1", expected, prompts=prompts))
        levels += as_dicts(single)
        if args.triton_env:
            from ortgen.triton.loadtest import triton_levels

            threads = next((int(extra[i + 1]) for i, a in enumerate(extra[:-1]) if a == "--threads"), None)
            levels += triton_levels(args.package, args.triton_env, args.concurrency, settings, prompts, expected,
                                    threads)
        for one in single:
            mine = next((r for r in results if r.concurrency == one.concurrency), None)
            if mine is not None and one.requests_per_second:
                comparisons.append({"concurrency": one.concurrency, "scheduler": mine.requests_per_second,
                                    "one_at_a_time": one.requests_per_second,
                                    "ratio": round(mine.requests_per_second / one.requests_per_second, 2)})
    command = "ortgen " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[0].endswith("ortgen") else \
        "ortgen loadtest"
    result = {"command": command, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": _machine(),
              "model": model["id"], "settings": settings.__dict__, "levels": levels, "comparisons": comparisons,
              "seconds": round(time.time() - started, 1)}
    if args.url is None and args.triton_env:
        result["prompts"] = prompt_note
    write(result, args.out)
    print(markdown(result))
    return 0


def _model(httpx, url: str, headers: dict[str, str]) -> dict:
    try:
        response = httpx.get(url + "/v1/models", headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        raise OrtgenError(f"no ortgen server answers at {url}: {exc}") from None
    if response.status_code != 200:
        raise OrtgenError(f"{url}/v1/models answered {response.status_code}: {response.text[:200]}")
    return response.json()["data"][0]
