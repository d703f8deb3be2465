"""Peak memory of one system on one workload, measured in a process of its own.

In the timing process every system shares one heap: memory one system frees is reused by the
next without the resident size moving, so per-system numbers taken there would be wrong. Here
a child process imports what the system needs, notes its resident size (``VmRSS``), loads
the system, runs the workload once and reports its peak (``VmHWM``) above that baseline:
the model, the runtime's buffers and the workload's working memory.

    python -m ortgen.bench.memory < request.json   ->   {"peak_gb": 1.23}
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ortgen.bench.workloads import Workload

log = logging.getLogger(__name__)


def status_gb(field_name: str) -> float:
    """GB of a /proc/self/status field (VmRSS, VmHWM); NaN where there is no /proc."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return float("nan")
    match = re.search(rf"{field_name}:\s+(\d+) kB", text)
    return int(match.group(1)) / 1e6 if match else float("nan")


def peak_memory_gb(spec: dict[str, Any], workload: Workload, prompts: list[list[int]]) -> float | None:
    """Run ``spec`` (a System's ``spec()``) on ``workload`` in a child process; its peak in GB."""
    request = json.dumps({"system": spec, "workload": asdict(workload), "prompts": prompts})
    done = subprocess.run([sys.executable, "-m", "ortgen.bench.memory"], input=request, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        log.warning("memory measurement of %s failed: %s", spec.get("kind"), done.stderr.strip()[-500:])
        return None
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak_gb"])


def _child() -> None:
    from ortgen.bench.systems import system_from_spec

    request = json.loads(sys.stdin.read())
    system = system_from_spec(request["system"])
    system.prepare_imports()
    baseline = status_gb("VmRSS")
    system.setup()
    system.run(Workload(**request["workload"]), request["prompts"])
    print(json.dumps({"peak_gb": status_gb("VmHWM") - baseline}))


if __name__ == "__main__":
    _child()
