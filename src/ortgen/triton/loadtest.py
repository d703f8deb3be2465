"""Triton under load, next to ``ortgen serve``: the generate extension as a load-test protocol.

``ortgen loadtest --package PKG --triton-env DIR`` drives ``ortgen serve`` (OpenAI streaming
completions, :mod:`ortgen.bench.loadtest`) and then Triton serving the package's ``--backend
python`` repository (``POST /v2/models/NAME/generate_stream``, what a TensorRT-LLM client sends:
text_input, max_tokens, min_length, beam_width, stream) with the same clients, prompts and
settings. The prompts are text (random token ids decoded with the package's tokenizer: Triton's
models take text), sent as text to both servers; every Triton response must equal ortgen serve's
text for the same prompt alone.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from ortgen.bench.loadtest import LoadSettings, make_prompts

MODEL = "ortgen"


async def triton_generate(client, url: str, headers: dict[str, str], settings: LoadSettings, model: str,
                          prompt: str) -> tuple[int, str, float | None, int]:
    """(status, text, seconds to the first text, new tokens) of one streamed generate request."""
    body: dict[str, Any] = {"text_input": prompt, "max_tokens": settings.max_tokens,
                            "min_length": settings.max_tokens, "stream": True}
    if settings.beam_width > 1:
        body["beam_width"] = settings.beam_width
    else:
        body["temperature"] = 0.0
    started = time.perf_counter()
    first = None
    text = ""
    async with client.stream("POST", f"{url}/v2/models/{model}/generate_stream", json=body,
                             headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, "", None, 0
        async for line in response.aiter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                return 500, "", None, 0
            delta = event.get("text_output") or ""
            delta = delta if isinstance(delta, str) else (delta[0] if delta else "")
            if delta and first is None:
                first = time.perf_counter() - started
            text += delta
    return 200, text, first, settings.max_tokens  # min_length = max_tokens: exactly that many


def text_prompts(package: Path, settings: LoadSettings) -> tuple[list[str], float]:
    """The load test's random prompts as text, and their mean length in tokens once encoded again."""
    from ortgen.runtime.generator import Generator

    generator = Generator.load(package)
    prefix = len(generator.manifest.tokenizer.prefix_ids) if generator.manifest.tokenizer else 0
    ids = make_prompts(generator.manifest.architecture.vocab_size, settings)
    texts = [generator.tokenizer.decode(p[prefix:]) for p in ids]  # type: ignore[union-attr]
    tokens = [len(t) for t in generator.encode(texts)]
    return texts, sum(tokens) / len(tokens)


def triton_levels(package: Path, env_dir: Path, levels: list[int], settings: LoadSettings, prompts: list[str],
                  expected: list[str], threads: int | None = None) -> list[dict[str, Any]]:
    """Write the package's --backend python repository, start Triton from ``env_dir`` on it, and
    load-test it at ``levels`` (responses checked against ``expected``)."""
    import asyncio

    from ortgen.bench.loadtest import as_dicts, load_test
    from ortgen.triton.env import open_env
    from ortgen.triton.repository import RepositoryOptions, write_repository
    from ortgen.triton.server import running_tritonserver

    env = open_env(env_dir)
    with tempfile.TemporaryDirectory(prefix="ortgen-loadtest-triton-") as tmp:
        repo = Path(tmp) / "repository"
        write_repository(package, repo, RepositoryOptions(name=MODEL, backend="python", threads=threads))
        with running_tritonserver(repo, env) as server:
            results, _ = asyncio.run(load_test(server.http_url, MODEL, {}, 0, levels, settings,
                                               "Triton (--backend python)", expected, triton_generate, prompts))
    return as_dicts(results)
