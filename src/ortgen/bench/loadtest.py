"""Load-testing a running ``ortgen serve``: N concurrent HTTP clients for a bounded time, per level.

Each client sends OpenAI completion requests back to back (streamed, so the first token's time is
seen), cycling through a fixed set of distinct prompts. Before the levels, every prompt is sent
alone once: its text is the reference, and every response under load must equal it (the
scheduler's promise: a request's result does not depend on what runs beside it). Per concurrency
level: completed requests/s, generated tokens/s, time to first token p50, latency p50/p99, and
the counts of 429s, 5xx and responses that differ from their reference.

With ``--package`` the command starts the servers itself (loopback, free ports): the server as
configured, and the same server with ``--max-running 1`` (requests one at a time) for the
comparison at the levels given by ``--compare-at``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ortgen.bench.report import write_outputs
from ortgen.bench.workloads import random_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadSettings:
    prompt_tokens: int = 64
    max_tokens: int = 64
    beam_width: int = 5  # 1: greedy
    prompts: int = 16  # distinct prompts, cycled
    duration: float = 60.0  # seconds each level keeps starting requests
    drain: float = 600.0  # seconds to wait for the requests still running when a level ends

    def body(self, model: str, prompt: list[int]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "prompt": prompt, "max_tokens": self.max_tokens,
                                "min_tokens": self.max_tokens, "stream": True, "stream_options": {"include_usage": True},
                                # the token ids come back too: responses compare exactly, whatever the tokenizer
                                "logprobs": 0, "return_tokens_as_token_ids": True}
        if self.beam_width > 1:
            body.update(use_beam_search=True, best_of=self.beam_width)
        else:
            body["temperature"] = 0
        return body


@dataclass
class LevelResult:
    server: str
    concurrency: int
    seconds: float
    completed: int
    requests_per_second: float
    tokens_per_second: float
    first_token_p50: float | None
    latency_p50: float | None
    latency_p99: float | None
    status_429: int = 0
    status_5xx: int = 0
    other_errors: int = 0
    mismatches: int = 0
    statuses: dict[str, int] = field(default_factory=dict)


async def openai_completion(client, url: str, headers: dict[str, str], settings: LoadSettings, model: str,
                            prompt: list[int] | str) -> tuple[int, str, float | None, int]:
    """One request of the load (the default protocol; ortgen.triton.loadtest has Triton's generate_stream)."""
    return await _completion(client, url, headers, settings.body(model, prompt))


async def _completion(client, url: str, headers: dict[str, str], body: dict[str, Any]
                      ) -> tuple[int, str, float | None, int]:
    """(status, output, seconds to the first token, completion tokens) of one streamed completion; the
    output is the text and, when the server returns them, the token ids."""
    started = time.perf_counter()
    first = None
    text, tokens = "", 0
    ids: list[str] = []
    async with client.stream("POST", url + "/v1/completions", json=body, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, "", None, 0
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if "error" in chunk:
                return 500, "", None, 0
            for choice in chunk.get("choices", []):
                new = (choice.get("logprobs") or {}).get("tokens") or []
                if (choice.get("text") or new) and first is None:
                    first = time.perf_counter() - started
                text += choice.get("text", "")
                ids += new
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    return 200, text + ("\x00" + " ".join(ids) if ids else ""), first, tokens


def _same(output: str, reference: str) -> bool:
    """Outputs agree: text and token ids when both carry ids (OpenAI with token ids), else the text, up to
    the leading whitespace: an OpenAI completion continues its prompt's text (BioGPT's Moses detokeniser
    puts a space at the seam) where Triton's generate returns the new tokens decoded alone."""
    if ("\x00" in output) == ("\x00" in reference):
        return output == reference
    return output.split("\x00")[0].lstrip() == reference.split("\x00")[0].lstrip()


def make_prompts(vocab_size: int, settings: LoadSettings, first_token: int | None = 2, seed: int = 0
                 ) -> list[list[int]]:
    return random_prompts(settings.prompts, settings.prompt_tokens, vocab_size, first_token, seed)


async def references(url: str, model: str, headers: dict[str, str], prompts: list,
                     settings: LoadSettings, send=openai_completion) -> list[str]:
    """Each prompt sent alone: the texts every response under load must equal."""
    import httpx

    async with httpx.AsyncClient(timeout=settings.drain) as client:
        out = []
        for prompt in prompts:
            status, text, _, _ = await send(client, url, headers, settings, model, prompt)
            if status != 200:
                raise RuntimeError(f"the reference request failed with HTTP {status}")
            out.append(text)
        return out


async def run_level(url: str, model: str, headers: dict[str, str], prompts: list, expected: list[str],
                    concurrency: int, settings: LoadSettings, server: str, send=openai_completion) -> LevelResult:
    import httpx

    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    latencies: list[float] = []
    firsts: list[float] = []
    statuses: dict[str, int] = {}
    tokens = mismatches = errors = 0
    started = time.perf_counter()
    deadline = started + settings.duration
    counter = iter(range(10**9))

    async def client_loop(client) -> None:
        nonlocal tokens, mismatches, errors
        while time.perf_counter() < deadline:
            i = next(counter) % len(prompts)
            began = time.perf_counter()
            try:
                status, text, first, generated = await send(client, url, headers, settings, model, prompts[i])
            except Exception:  # noqa: BLE001 - a transport error is counted, not fatal
                errors += 1
                continue
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 429:
                await asyncio.sleep(0.2)
                continue
            if status != 200:
                continue
            latencies.append(time.perf_counter() - began)
            if first is not None:
                firsts.append(first)
            tokens += generated
            mismatches += not _same(text, expected[i])

    async with httpx.AsyncClient(timeout=settings.drain + settings.duration, limits=limits) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    seconds = time.perf_counter() - started
    completed = len(latencies)
    return LevelResult(
        server=server, concurrency=concurrency, seconds=round(seconds, 2), completed=completed,
        requests_per_second=round(completed / seconds, 4), tokens_per_second=round(tokens / seconds, 2),
        first_token_p50=round(statistics.median(firsts), 3) if firsts else None,
        latency_p50=round(float(np.percentile(latencies, 50)), 3) if latencies else None,
        latency_p99=round(float(np.percentile(latencies, 99)), 3) if latencies else None,
        status_429=statuses.get("429", 0), status_5xx=sum(v for k, v in statuses.items() if k.startswith("5")),
        other_errors=errors, mismatches=mismatches, statuses=statuses)


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [f"Load test of `ortgen serve` ({result['model']}): {s['prompt_tokens']}-token prompts -> "
             f"{s['max_tokens']} new tokens, {'beam ' + str(s['beam_width']) if s['beam_width'] > 1 else 'greedy'}, "
             f"{s['prompts']} distinct prompts, each level {s['duration']:g} s of requests back to back per client "
             f"(streamed OpenAI completions{'; Triton: streamed generate' if result.get('prompts') else ''}). "
             f"{result['machine']}."
             + (f" Prompts: {result['prompts']}." if result.get("prompts") else ""), "",
             "| server | clients | requests | requests/s | tokens/s | first token p50 s | latency p50 s | "
             "latency p99 s | 429 | 5xx | differ from alone |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["levels"]:
        ttft = f"{r['first_token_p50']:.2f}" if r["first_token_p50"] is not None else "-"
        p50 = f"{r['latency_p50']:.2f}" if r["latency_p50"] is not None else "-"
        p99 = f"{r['latency_p99']:.2f}" if r["latency_p99"] is not None else "-"
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['completed']} | {r['requests_per_second']:.3f} | "
                     f"{r['tokens_per_second']:.1f} | {ttft} | {p50} | {p99} | {r['status_429']} | "
                     f"{r['status_5xx'] + r['other_errors']} | {r['mismatches']} |")
    for c in result.get("comparisons", []):
        lines.append("")
        lines.append(f"At {c['concurrency']} clients: {c['ratio']:.2f}x the requests/s of the same server with "
                     f"--max-running 1 ({c['scheduler']:.3f} vs {c['one_at_a_time']:.3f}).")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> bool:
    from ortgen.bench.report import pyplot

    plt = pyplot()
    if plt is None:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for server in dict.fromkeys(r["server"] for r in result["levels"]):
        rows = [r for r in result["levels"] if r["server"] == server]
        xs = [r["concurrency"] for r in rows]
        left.plot(xs, [r["requests_per_second"] for r in rows], marker="o", label=server)
        right.plot(xs, [r["latency_p50"] or 0 for r in rows], marker="o", label=f"{server} p50")
        right.plot(xs, [r["latency_p99"] or 0 for r in rows], marker="x", linestyle="--", label=f"{server} p99")
    left.set_xlabel("concurrent clients")
    left.set_ylabel("requests/s")
    right.set_xlabel("concurrent clients")
    right.set_ylabel("latency s")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    fig.suptitle(f"ortgen serve under load: {result['model']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write(result: dict[str, Any], out_dir: Path) -> list[Path]:
    return write_outputs(result, out_dir, "loadtest", markdown, plot)


async def load_test(url: str, model: str, headers: dict[str, str], vocab_size: int, levels: Sequence[int],
                    settings: LoadSettings, server: str, expected: list[str] | None = None,
                    send=openai_completion, prompts: list | None = None) -> tuple[list[LevelResult], list[str]]:
    """``send``: one request of the protocol (OpenAI completions by default); ``prompts``: token-id lists or
    texts (default: random token ids, make_prompts)."""
    prompts = prompts if prompts is not None else make_prompts(vocab_size, settings)
    if expected is None:
        log.info("%s: sending each of %d prompts alone (the reference texts)", server, len(prompts))
        expected = await references(url, model, headers, prompts, settings, send)
    results = []
    for level in levels:
        log.info("%s: %d concurrent clients for %gs", server, level, settings.duration)
        result = await run_level(url, model, headers, prompts, expected, level, settings, server, send)
        log.info("%s at %d: %.3f requests/s, p50 %s s, %d x 5xx, %d differ", server, level,
                 result.requests_per_second, result.latency_p50, result.status_5xx, result.mismatches)
        results.append(result)
    return results, expected


def as_dicts(results: list[LevelResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
