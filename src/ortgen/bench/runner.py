"""Run every system on every workload of a model, in one process, and take medians.

Systems that fit in memory together are loaded together and run in alternation (A, B, C,
A, B, C, ...), so that drifting machine load affects them alike; otherwise (BioGPT-Large)
one system at a time. Each system does an untimed warm-up run per workload. Memory is
measured per system: what loading it added, plus its peak above that during the runs
(Linux ``VmHWM``, reset before each run).
"""

from __future__ import annotations

import logging
import re
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ortgen.bench.floor import MachineRates, floor_seconds, model_cost
from ortgen.bench.models import BenchModel
from ortgen.bench.systems import CTranslate2System, OrtgenSystem, System, TransformersSystem
from ortgen.bench.workloads import Workload

log = logging.getLogger(__name__)


def _status(field_name: str) -> float:
    """GB of a /proc/self/status field (VmRSS, VmHWM)."""
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"{field_name}:\s+(\d+) kB", text)
    return int(match.group(1)) / 1e6 if match else float("nan")


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass


@dataclass
class Measurement:
    model: str
    workload: str
    system: str
    weights: str
    runs: list[float]
    seconds: float  # median
    tokens_per_second: float
    memory_gb: float
    floor_seconds: float | None = None
    speedup_vs_transformers: float | None = None
    ratio_to_floor: float | None = None


@dataclass
class SystemState:
    system: System
    loaded_gb: float = 0.0
    peaks: dict[str, float] = field(default_factory=dict)


def systems_for(model: BenchModel, names: Sequence[str], device: str = "cpu") -> list[System]:
    out: list[System] = []
    if "transformers" in names:
        out.append(TransformersSystem(model.hf_dir, model.pad_token_id, model.eos_token_id, device))
    for dtype, package in model.packages.items():
        for backend in ("graph", "engine"):
            if f"ortgen-{backend}" in names:
                out.append(OrtgenSystem(package, backend, device))
    if model.ct2_dir is not None and "ctranslate2" in names:
        out.extend([CTranslate2System(model.ct2_dir, "float32", device), CTranslate2System(model.ct2_dir, "int8", device)])
    return out


def _timed(state: SystemState, workload: Workload, prompts: list[list[int]]) -> float:
    before = _status("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    state.system.run(workload, prompts)
    seconds = time.perf_counter() - started
    state.peaks[workload.name] = max(state.peaks.get(workload.name, 0.0), _status("VmHWM") - before)
    return seconds


def _load(state: SystemState) -> None:
    before = _status("VmRSS")
    state.system.setup()
    state.loaded_gb = max(_status("VmRSS") - before, 0.0)


def bench_model(model: BenchModel, workloads: Sequence[Workload], system_names: Sequence[str], repeats: int,
                rates: MachineRates, alternate: bool, device: str = "cpu") -> list[Measurement]:
    states = [SystemState(s) for s in systems_for(model, system_names, device)]
    runs: dict[tuple[str, str], list[float]] = {}
    if alternate:
        for state in states:
            log.info("%s: loading %s", model.name, state.system.name)
            _load(state)
        for workload in workloads:
            prompts = workload.prompts(model.vocab_size, model.first_token)
            for state in states:  # warm-up
                _timed(state, workload, prompts)
            for r in range(repeats):
                for state in states:
                    seconds = _timed(state, workload, prompts)
                    runs.setdefault((state.system.name, workload.name), []).append(seconds)
                    log.info("%s %s %s run %d: %.2fs", model.name, workload.name, state.system.name, r + 1, seconds)
        for state in states:
            state.system.teardown()
    else:
        for state in states:
            log.info("%s: loading %s", model.name, state.system.name)
            _load(state)
            for workload in workloads:
                prompts = workload.prompts(model.vocab_size, model.first_token)
                _timed(state, workload, prompts)
                for r in range(repeats):
                    seconds = _timed(state, workload, prompts)
                    runs.setdefault((state.system.name, workload.name), []).append(seconds)
                    log.info("%s %s %s run %d: %.2fs", model.name, workload.name, state.system.name, r + 1, seconds)
            state.system.teardown()

    measurements = []
    costs = {dtype: model_cost(package) for dtype, package in model.packages.items()}
    for workload in workloads:
        baseline = runs.get(("transformers fp32", workload.name))
        base_median = statistics.median(baseline) if baseline else None
        for state in states:
            times = runs[(state.system.name, workload.name)]
            median = statistics.median(times)
            dtype = state.system.dtype
            cost = costs.get(dtype) or costs.get("float32")
            floor = floor_seconds(workload, cost, rates, int8=dtype != "float32") if cost else None
            measurements.append(Measurement(
                model=model.name, workload=workload.name, system=state.system.name, weights=dtype,
                runs=[round(t, 3) for t in times], seconds=round(median, 3),
                tokens_per_second=round(workload.generated_tokens / median, 2),
                memory_gb=round(state.loaded_gb + state.peaks.get(workload.name, 0.0), 2),
                floor_seconds=round(floor, 4) if floor else None,
                speedup_vs_transformers=round(base_median / median, 2) if base_median else None,
                ratio_to_floor=round(median / floor, 2) if floor else None,
            ))
    return measurements


def as_dicts(measurements: list[Measurement]) -> list[dict]:
    return [asdict(m) for m in measurements]
