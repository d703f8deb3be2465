"""Run every system on every workload of a model, in one process, and take medians.

Systems that fit in memory together are loaded together and run in alternation (A, B, C,
A, B, C, ...), so that drifting machine load affects them alike; otherwise (BioGPT-Large)
one system at a time. Each system does an untimed warm-up run per workload. Peak memory is
measured afterwards, per system and workload, in a process of its own
(:mod:`ortgen.bench.memory`).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Sequence

from ortgen.bench.floor import MachineRates, floor_seconds, model_cost
from ortgen.bench.memory import peak_memory_gb
from ortgen.bench.models import BenchModel
from ortgen.bench.systems import (CTranslate2System, OrtgenSystem, System, TransformersSystem, baseline_dtype,
                                  short_dtype)
from ortgen.bench.workloads import Workload

log = logging.getLogger(__name__)


@dataclass
class Measurement:
    model: str
    workload: str
    system: str
    weights: str
    runs: list[float]
    seconds: float  # median
    tokens_per_second: float
    memory_gb: float | None  # peak above the libraries' baseline, in a process of its own
    floor_seconds: float | None = None
    speedup_vs_transformers: float | None = None  # over transformers in baseline_dtype(weights)
    ratio_to_floor: float | None = None
    step_profile: dict[str, float] | None = None  # step engine: decoder steps, ms per step in ONNX Runtime / host


def systems_for(model: BenchModel, names: Sequence[str], device: str = "cpu") -> list[System]:
    out: list[System] = []
    if "transformers" in names:  # the baseline of each package's precision
        for dtype in dict.fromkeys(baseline_dtype(weights) for weights in model.packages):
            out.append(TransformersSystem(model.hf_dir, model.pad_token_id, model.eos_token_id, device, dtype))
    for dtype, package in model.packages.items():
        for backend in ("graph", "engine"):
            if f"ortgen-{backend}" not in names:
                continue
            if backend == "graph" and dtype == "float16" and device == "cpu":
                log.warning("%s: no in-graph operator row for float16 on the CPU (ONNX Runtime's CPU kernels of "
                            "the generation operators take float32 models)", model.name)
                continue
            out.append(OrtgenSystem(package, backend, device))
    if model.ct2_dir is not None and "ctranslate2" in names:
        out.extend([CTranslate2System(model.ct2_dir, "float32", device), CTranslate2System(model.ct2_dir, "int8", device)])
    return out


def _timed(system: System, workload: Workload, prompts: list[list[int]]) -> float:
    started = time.perf_counter()
    system.run(workload, prompts)
    return time.perf_counter() - started


def step_profile(runs: list[tuple[float, dict[str, float]]]) -> dict[str, float] | None:
    """Medians over timed runs of (wall seconds, the step engine's profile): decoder steps, and per
    step the milliseconds inside ONNX Runtime's run (kernels, and on a GPU the copies in and out)
    and on the host around it (scheduling, search, logits processors)."""
    runs = [(wall, p) for wall, p in runs if p and p["steps"]]
    if not runs:
        return None
    return {
        "steps": statistics.median(p["steps"] for _, p in runs),
        "decoder_ms_per_step": round(statistics.median(1000 * p["decoder_seconds"] / p["steps"] for _, p in runs), 3),
        "host_ms_per_step": round(statistics.median(1000 * (wall - p["decoder_seconds"]) / p["steps"]
                                                    for wall, p in runs), 3),
    }


def bench_model(model: BenchModel, workloads: Sequence[Workload], system_names: Sequence[str], repeats: int,
                rates: MachineRates, alternate: bool, device: str = "cpu", memory: bool = True) -> list[Measurement]:
    systems = systems_for(model, system_names, device)
    runs: dict[tuple[str, str], list[float]] = {}
    profiles: dict[tuple[str, str], list[tuple[float, dict[str, float]]]] = {}

    def timed_run(system: System, workload: Workload, prompts: list[list[int]], r: int) -> None:
        seconds = _timed(system, workload, prompts)
        runs.setdefault((system.name, workload.name), []).append(seconds)
        if system.last_profile is not None:
            profiles.setdefault((system.name, workload.name), []).append((seconds, system.last_profile))
        log.info("%s %s %s run %d: %.2fs", model.name, workload.name, system.name, r + 1, seconds)

    if alternate:
        for system in systems:
            log.info("%s: loading %s", model.name, system.name)
            system.setup()
        for workload in workloads:
            prompts = workload.prompts(model.vocab_size, model.first_token)
            for system in systems:  # warm-up
                _timed(system, workload, prompts)
            for r in range(repeats):
                for system in systems:
                    timed_run(system, workload, prompts, r)
        for system in systems:
            system.teardown()
    else:
        for system in systems:
            log.info("%s: loading %s", model.name, system.name)
            system.setup()
            for workload in workloads:
                prompts = workload.prompts(model.vocab_size, model.first_token)
                _timed(system, workload, prompts)
                for r in range(repeats):
                    timed_run(system, workload, prompts, r)
            system.teardown()

    peaks: dict[tuple[str, str], float | None] = {}
    if memory:
        for workload in workloads:
            prompts = workload.prompts(model.vocab_size, model.first_token)
            for system in systems:
                log.info("%s %s %s: peak memory (own process)", model.name, workload.name, system.name)
                peaks[(system.name, workload.name)] = peak_memory_gb(system.spec(), workload, prompts)

    measurements = []
    costs = {dtype: model_cost(package) for dtype, package in model.packages.items()}
    for workload in workloads:
        for system in systems:
            times = runs[(system.name, workload.name)]
            median = statistics.median(times)
            dtype = system.dtype
            baseline = runs.get((f"transformers {short_dtype(baseline_dtype(dtype))}", workload.name))
            base_median = statistics.median(baseline) if baseline else None
            cost = costs.get(dtype) or costs.get("float32")
            floor = floor_seconds(workload, cost, rates, dtype) if cost else None
            measurements.append(Measurement(
                model=model.name, workload=workload.name, system=system.name, weights=dtype,
                runs=[round(t, 3) for t in times], seconds=round(median, 3),
                tokens_per_second=round(workload.generated_tokens / median, 2),
                memory_gb=_round(peaks.get((system.name, workload.name))),
                floor_seconds=float(f"{floor:.4g}") if floor else None,
                speedup_vs_transformers=round(base_median / median, 2) if base_median else None,
                ratio_to_floor=round(median / floor, 2) if floor else None,
                step_profile=step_profile(profiles.get((system.name, workload.name), [])),
            ))
    return measurements


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def as_dicts(measurements: list[Measurement]) -> list[dict]:
    return [asdict(m) for m in measurements]
