"""``run_suite``: prepare the models, measure the machine, run every system, write the report."""

from __future__ import annotations

import logging
import os
import platform
import time
from pathlib import Path
from typing import Sequence

from ortgen import __version__
from ortgen.bench import report
from ortgen.bench.floor import measure_rates
from ortgen.bench.models import prepare
from ortgen.bench.runner import as_dicts, bench_model
from ortgen.bench.throughput import QUICK_THROUGHPUT, THROUGHPUT, bench_throughput
from ortgen.bench.throughput import as_dicts as throughput_dicts
from ortgen.bench.workloads import QUICK, WORKLOADS

log = logging.getLogger(__name__)

ALL_SYSTEMS = ("transformers", "ortgen-graph", "ortgen-engine", "ctranslate2")


def _machine(device: str) -> dict:
    cpu = report.cpu_name()
    try:
        memory = int(Path("/proc/meminfo").read_text().split()[1]) / 1e6
    except OSError:
        memory = 0.0
    name = "CPU"
    if device == "cuda":
        try:
            import torch

            name = torch.cuda.get_device_name(0)
        except Exception:  # noqa: BLE001 - the name is informational
            name = "CUDA GPU"
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory, 1), "device": name,
            "python": platform.python_version()}


def _versions() -> dict:
    import onnxruntime

    versions = {"ortgen": __version__, "onnxruntime": onnxruntime.__version__}
    for name in ("torch", "transformers", "ctranslate2"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    return versions


def run_suite(models: Sequence[str], workloads: Sequence[str], systems: Sequence[str], dtypes: Sequence[str],
              repeats: int, quick: bool, workdir: Path, out_dir: Path, command: str, device: str = "cpu",
              memory: bool = True) -> dict:
    """Prepare the models, measure the machine, run every system on every workload, write the report."""
    started = time.time()
    table = QUICK if quick else WORKLOADS
    chosen = [table[w] for w in workloads if w in table]
    concurrent_table = QUICK_THROUGHPUT if quick else THROUGHPUT
    concurrent = [concurrent_table[w] for w in workloads if w in concurrent_table]
    log.info("measuring this machine's matmul rates and memory bandwidth")
    rates = measure_rates(quick=quick, device=device, float16="float16" in dtypes)
    log.info("rates: %s", rates.as_dict())
    measurements: list = []
    throughput: list = []
    for name in models:
        has_ct2 = "ctranslate2" in systems
        if has_ct2:
            try:
                import ctranslate2  # noqa: F401
            except ImportError:
                log.warning("ctranslate2 is not installed: skipping it (pip install 'ortgen[bench]')")
                has_ct2 = False
        model = prepare(name, workdir, quick=quick, dtypes=list(dtypes), ctranslate2=has_ct2)
        alternate = quick or "large" not in name  # BioGPT-Large: one system loaded at a time
        if chosen:
            measurements.extend(bench_model(model, chosen, systems, repeats, rates, alternate, device, memory))
        if concurrent:
            throughput.extend(bench_throughput(model, concurrent, rates, systems, dtype=dtypes[0], device=device))
    result = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": _machine(device),
        "versions": _versions(),
        "rates": rates.as_dict(),
        "repeats": repeats,
        "quick": quick,
        "workloads": {w.name: w.description for w in chosen},
        "measurements": as_dicts(measurements),
        "throughput_workloads": {w.name: w.description for w in concurrent},
        "throughput": throughput_dicts(throughput),
        "seconds": round(time.time() - started, 1),
    }
    files = report.write(result, out_dir)
    log.info("wrote %s", ", ".join(str(f) for f in files))
    return result
