"""Throughput workloads: many requests at once, through the scheduler, against doing them one by one.

    C1  16 requests, beam 5, prompt 64 -> 64 new tokens, all arriving together
    C2  the same 16 requests arriving as a Poisson stream (a stated rate, fixed seed)
    C3  32 requests, greedy, prompt 128 -> 64 new tokens, all arriving together

Systems, in one process on one machine: ortgen's scheduler (every request submitted at its
arrival time, all sharing decoder steps); the same requests through ortgen one at a time (a
request starts when it has arrived and the previous one finished); transformers' generate() one
at a time; transformers with the requests in one static batch (where the arrivals allow: C1 and
C3; identical prompt lengths, so no padding). Each reports requests/s, generated tokens/s, time
to first token (where the system exposes it) and p50/p99 latency from arrival to the last token.
ortgen's concurrent tokens are checked against its one-at-a-time tokens (they must be identical).

Floor (arrivals together): the prompts' FLOPs at the measured GEMM rate, then for each decoding
step of the batch the larger of its FLOPs at that rate and its bytes (weights once, plus the KV
cache it reads) at the measured bandwidth. On this 2-core CPU a batched step is compute-bound.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ortgen.bench.floor import MachineRates, ModelCost, model_cost
from ortgen.bench.models import BenchModel
from ortgen.bench.systems import baseline_dtype
from ortgen.bench.workloads import random_prompts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThroughputWorkload:
    name: str
    requests: int
    prompt_tokens: int
    new_tokens: int
    num_beams: int
    rate: float | None  # requests per second (Poisson); None: all arrive together
    description: str

    def prompts(self, vocab_size: int, first_token: int | None, seed: int = 0) -> list[list[int]]:
        return random_prompts(self.requests, self.prompt_tokens, vocab_size, first_token, seed)

    def arrivals(self, seed: int = 0) -> list[float]:
        """Seconds after the start at which each request arrives."""
        if self.rate is None:
            return [0.0] * self.requests
        gaps = np.random.default_rng(seed + 1).exponential(1.0 / self.rate, size=self.requests)
        return [0.0] + list(np.cumsum(gaps[1:]).astype(float))

    @property
    def generated_tokens(self) -> int:
        return self.requests * self.new_tokens

    def options(self) -> dict[str, Any]:
        return dict(num_beams=self.num_beams, max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens)


THROUGHPUT = {
    "C1": ThroughputWorkload("C1", 16, 64, 64, 5, None, "16 requests, beam 5, 64 -> 64, arriving together"),
    "C2": ThroughputWorkload("C2", 16, 64, 64, 5, 0.5, "the same 16 requests as a Poisson stream, 0.5 requests/s"),
    "C3": ThroughputWorkload("C3", 32, 128, 64, 1, None, "32 requests, greedy, 128 -> 64, arriving together"),
}
QUICK_THROUGHPUT = {
    "C1": ThroughputWorkload("C1", 6, 16, 8, 3, None, "quick: 6 requests, beam 3, 16 -> 8, together"),
    "C2": ThroughputWorkload("C2", 6, 16, 8, 3, 20.0, "quick: the same as a Poisson stream, 20 requests/s"),
    "C3": ThroughputWorkload("C3", 8, 16, 8, 1, None, "quick: 8 requests, greedy, 16 -> 8, together"),
}

CONCURRENT, SEQUENTIAL = "ortgen scheduler", "ortgen one at a time"
HF_SEQUENTIAL, HF_BATCH = "transformers one at a time", "transformers static batch"


@dataclass
class ThroughputResult:
    model: str
    workload: str
    system: str
    seconds: float  # first arrival to last token
    requests_per_second: float
    tokens_per_second: float
    first_token_p50: float | None
    latency_p50: float
    latency_p99: float
    floor_seconds: float | None = None
    ratio_to_floor: float | None = None
    speedups: dict[str, float] = field(default_factory=dict)  # requests/s over each other system's
    tokens_identical: bool | None = None  # concurrent vs one at a time (ortgen)
    mean_rows_per_step: float | None = None
    host_share: float | None = None  # ortgen scheduler: share of the wall time outside ONNX Runtime's runs


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def _summary(model: str, w: ThroughputWorkload, system: str, start: float, arrivals: list[float],
             first: list[float | None], done: list[float]) -> ThroughputResult:
    seconds = max(done) - start
    latencies = [d - (start + a) for d, a in zip(done, arrivals)]
    ttft = [f - (start + a) for f, a in zip(first, arrivals) if f is not None]
    return ThroughputResult(
        model=model, workload=w.name, system=system, seconds=round(seconds, 3),
        requests_per_second=round(w.requests / seconds, 4), tokens_per_second=round(w.generated_tokens / seconds, 2),
        first_token_p50=round(statistics.median(ttft), 5) if ttft else None,
        latency_p50=round(_percentile(latencies, 50), 5), latency_p99=round(_percentile(latencies, 99), 5))


def _wait_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        time.sleep(delay)


def run_ortgen_concurrent(generator, model: BenchModel, w: ThroughputWorkload, prompts, arrivals
                          ) -> tuple[ThroughputResult, list[list[list[int]]]]:
    """Submit each request at its arrival time (a thread) and wait for all."""
    handles: list[Any] = [None] * w.requests
    stats_before = (generator.scheduler.stats.steps, generator.scheduler.stats.step_rows,
                    generator.scheduler.stats.step_seconds)
    start = time.perf_counter()

    def arrive() -> None:
        for i, (prompt, at) in enumerate(zip(prompts, arrivals)):
            _wait_until(start + at)
            handles[i] = generator.submit(input_ids=prompt, **w.options())

    submitter = threading.Thread(target=arrive)
    submitter.start()
    submitter.join()
    outputs = [h.result() for h in handles]
    done = [o.timings.finished for o in outputs]
    first = [o.timings.first_token for o in outputs]
    result = _summary(model.name, w, CONCURRENT, start, arrivals, first, done)
    stats = generator.scheduler.stats
    steps, rows = stats.steps - stats_before[0], stats.step_rows - stats_before[1]
    result.mean_rows_per_step = round(rows / steps, 2) if steps else None
    result.host_share = round(1 - (stats.step_seconds - stats_before[2]) / result.seconds, 4)
    return result, [[s.token_ids for s in o.sequences] for o in outputs]


def run_ortgen_sequential(generator, model: BenchModel, w: ThroughputWorkload, prompts, arrivals
                          ) -> tuple[ThroughputResult, list[list[list[int]]]]:
    """One request at a time, each starting once it has arrived and the previous one finished."""
    start = time.perf_counter()
    first, done, tokens = [], [], []
    for prompt, at in zip(prompts, arrivals):
        _wait_until(start + at)
        output = generator.submit(input_ids=prompt, **w.options()).result()
        first.append(output.timings.first_token)
        done.append(output.timings.finished)
        tokens.append([s.token_ids for s in output.sequences])
    return _summary(model.name, w, SEQUENTIAL, start, arrivals, first, done), tokens


def run_transformers(model: BenchModel, w: ThroughputWorkload, prompts, arrivals, batch: bool,
                     device: str = "cpu", dtype: str = "float32") -> ThroughputResult:
    import torch
    from transformers import AutoModelForCausalLM

    network = AutoModelForCausalLM.from_pretrained(model.hf_dir, dtype=getattr(torch, dtype)).eval().to(device)

    def generate(ids: list[list[int]]) -> None:
        tensor = torch.tensor(ids, dtype=torch.long, device=device)
        with torch.no_grad():
            network.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), do_sample=False,
                             length_penalty=1.0, early_stopping=False, pad_token_id=model.pad_token_id,
                             eos_token_id=model.eos_token_id, **w.options())
        if device == "cuda":
            torch.cuda.synchronize()

    generate(prompts[:1])  # warm-up
    start = time.perf_counter()
    if batch:
        generate(prompts)
        done = [time.perf_counter()] * w.requests
        return _summary(model.name, w, HF_BATCH, start, arrivals, [None] * w.requests, done)
    done = []
    for prompt, at in zip(prompts, arrivals):
        _wait_until(start + at)
        generate([prompt])
        done.append(time.perf_counter())
    return _summary(model.name, w, HF_SEQUENTIAL, start, arrivals, [None] * w.requests, done)


def batched_floor(w: ThroughputWorkload, cost: ModelCost, rates: MachineRates, weights: str) -> float:
    """All requests decoding together (see the module docstring), for a package of ``weights``."""
    rate = rates.compute_gflops(weights) * 1e9
    bandwidth = rates.bandwidth_gbs * 1e9
    seconds = cost.prompt_flops(w.prompt_tokens * w.requests, w.requests) / rate
    rows = w.requests * w.num_beams
    for step in range(w.new_tokens - 1):
        kv = cost.kv_bytes_per_position * w.requests * (w.prompt_tokens + step * w.num_beams)
        seconds += max(2 * cost.parameters * rows / rate, (cost.weight_bytes + kv) / bandwidth)
    return seconds


def bench_throughput(model: BenchModel, workloads: Sequence[ThroughputWorkload], rates: MachineRates,
                     systems: Sequence[str], dtype: str = "float32", progress: Callable[[str], None] = log.info,
                     device: str = "cpu") -> list[ThroughputResult]:
    from ortgen.runtime.generator import Generator

    package = model.packages[dtype]
    cost = model_cost(package)
    results: list[ThroughputResult] = []
    for w in workloads:
        prompts = w.prompts(model.vocab_size, model.first_token, seed=len(results))
        arrivals = w.arrivals()
        found: dict[str, ThroughputResult] = {}
        with Generator.load(package, providers=device) as generator:
            generator.generate(input_ids=prompts[:1], **w.options())  # warm-up: loads the engine
            progress(f"{model.name} {w.name}: {CONCURRENT}")
            found[CONCURRENT], concurrent_tokens = run_ortgen_concurrent(generator, model, w, prompts, arrivals)
            progress(f"{model.name} {w.name}: {SEQUENTIAL}")
            found[SEQUENTIAL], sequential_tokens = run_ortgen_sequential(generator, model, w, prompts, arrivals)
        found[CONCURRENT].tokens_identical = concurrent_tokens == sequential_tokens
        if "transformers" in systems:
            progress(f"{model.name} {w.name}: {HF_SEQUENTIAL}")
            hf_dtype = baseline_dtype(dtype)
            found[HF_SEQUENTIAL] = run_transformers(model, w, prompts, arrivals, False, device, hf_dtype)
            if w.rate is None:
                progress(f"{model.name} {w.name}: {HF_BATCH}")
                found[HF_BATCH] = run_transformers(model, w, prompts, arrivals, True, device, hf_dtype)
        if w.rate is None:
            floor = batched_floor(w, cost, rates, dtype)
            mine = found[CONCURRENT]
            mine.floor_seconds, mine.ratio_to_floor = float(f"{floor:.4g}"), round(mine.seconds / floor, 2)
        for name, other in found.items():
            if name != CONCURRENT:
                found[CONCURRENT].speedups[name] = round(found[CONCURRENT].requests_per_second
                                                         / other.requests_per_second, 2)
        for result in found.values():
            log.info("%s %s %s: %.3g requests/s, %.1f tokens/s, p50 %.2fs", model.name, w.name, result.system,
                     result.requests_per_second, result.tokens_per_second, result.latency_p50)
        results.extend(found.values())
    return results


def as_dicts(results: list[ThroughputResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def markdown(results: list[dict[str, Any]], workloads: dict[str, str]) -> list[str]:
    if not results:
        return []
    lines = ["", "Throughput (many requests at once; latency from arrival to the last token):", "",
             "| model | workload | system | seconds | requests/s | tokens/s | first token p50 s | latency p50 s | "
             "latency p99 s | scheduler speed-up | x floor |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by_key = {(r["model"], r["workload"]): r for r in results if r["system"] == CONCURRENT}
    for r in results:
        mine = by_key.get((r["model"], r["workload"]))
        if r["system"] == CONCURRENT:
            speedup = "-"
        else:
            speedup = f"{mine['speedups'].get(r['system'], 0):.2f}x" if mine else "-"
        ttft = f"{r['first_token_p50']:.2f}" if r["first_token_p50"] is not None else "-"
        floor = f"{r['ratio_to_floor']:.2f}" if r["ratio_to_floor"] is not None else "-"
        lines.append(f"| {r['model']} | {r['workload']} | {r['system']} | {r['seconds']:.3g} | "
                     f"{r['requests_per_second']:.3g} | {r['tokens_per_second']:.1f} | {ttft} | "
                     f"{r['latency_p50']:.3g} | {r['latency_p99']:.3g} | {speedup} | {floor} |")
    identical = [f"{k[0]} {k[1]}: {'identical' if v['tokens_identical'] else 'DIFFERENT'}" for k, v in by_key.items()]
    host = [f"{k[0]} {k[1]} {v['host_share']:.1%}" for k, v in by_key.items() if v.get("host_share") is not None]
    lines += ["", "Scheduler speed-up: the scheduler's requests/s over that row's. Tokens of the scheduler vs one at "
              "a time: " + ", ".join(identical) + "."
              + (" Scheduler's wall time outside ONNX Runtime's runs (host: scheduling, search, processors): "
                 + ", ".join(host) + "." if host else ""),
              "Workloads: " + "; ".join(f"{k}: {v}" for k, v in workloads.items()) + "."]
    return lines
