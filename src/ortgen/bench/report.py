"""Benchmark output: JSON (everything), a markdown table (the README's), a PNG plot."""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


def markdown(result: dict[str, Any]) -> str:
    machine = result["machine"]
    rates = result["rates"]
    from ortgen.bench.throughput import markdown as throughput_markdown

    lines = [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; "
        f"{machine['device']}. Measured rates: float32 GEMM {rates['matmul_gflops']} GFLOP/s, "
        + (f"float16 GEMM {rates['float16_gflops']} GFLOP/s, " if rates.get("float16_gflops") else "")
        + f"int8 MatMulNBits {rates['int8_gflops']} GFLOP/s, weight streaming {rates['bandwidth_gbs']} GB/s. "
        f"Random weights, fixed lengths.",
    ]
    if result["measurements"]:
        baselines = (" \"vs transformers\": fp16 rows over transformers fp16, the others over transformers fp32."
                     if any(m["system"].endswith(" fp16") for m in result["measurements"]) else "")
        lines += [
            "",
            f"Single requests: medians of {result['repeats']} runs after a warm-up. Peak memory: one run in a "
            f"process of its own, above the libraries' baseline.{baselines}",
            "",
            "| model | workload | system | seconds | tokens/s | vs transformers | floor s | x floor | peak memory GB |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
    for m in result["measurements"]:
        speed = f"{m['speedup_vs_transformers']:.2f}x" if m["speedup_vs_transformers"] is not None else "-"
        floor = f"{m['floor_seconds']:.3g}" if m["floor_seconds"] is not None else "-"
        ratio = f"{m['ratio_to_floor']:.2f}" if m["ratio_to_floor"] is not None else "-"
        memory = f"{m['memory_gb']:.2f}" if m.get("memory_gb") is not None else "-"
        lines.append(f"| {m['model']} | {m['workload']} | {m['system']} | {m['seconds']:.3g} | "
                     f"{m['tokens_per_second']:.1f} | {speed} | {floor} | {ratio} | {memory} |")
    lines.append("")
    if result["measurements"]:
        lines.append("Workloads: " + "; ".join(f"{k}: {v}" for k, v in result["workloads"].items()) + ".")
    lines.extend(head_to_head(result["measurements"]))
    lines.extend(step_profiles(result["measurements"]))
    lines.extend(throughput_markdown(result.get("throughput", []), result.get("throughput_workloads", {})))
    return "\n".join(lines) + "\n"


def step_profiles(measurements: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: where the step engine's time per decoding step goes (medians of the timed runs)."""
    rows = [f"| {m['model']} | {m['workload']} | {m['system']} | {p['steps']:g} | {p['decoder_ms_per_step']:.2f} | "
            f"{p['host_ms_per_step']:.2f} | {p['host_ms_per_step'] / max(p['decoder_ms_per_step'], 1e-9):.2f} |"
            for m in measurements if (p := m.get("step_profile"))]
    if not rows:
        return []
    return ["", "Step engine, per decoder call: milliseconds inside ONNX Runtime's run (kernels; on a GPU also "
            "the inputs' and logits' copies) and on the host around it (scheduling, search, logits processors):", "",
            "| model | workload | system | decoder calls | ms in ONNX Runtime | ms on the host | host / ONNX Runtime |",
            "|---|---|---|---:|---:|---:|---:|", *rows]


# (system, baseline) name prefixes compared at the same weight precision
HEAD_TO_HEAD = (("ortgen step engine", "ortgen in-graph op"), ("ortgen step engine", "CTranslate2"))


def head_to_head(measurements: list[dict[str, Any]]) -> list[str]:
    """Markdown lines: the step engine against each other system at the same precision, on the same
    model and workload, as "baseline seconds / engine seconds" (above 1: the engine is faster)."""
    by_key = {(m["model"], m["workload"], m["system"]): m["seconds"] for m in measurements}
    rows = []
    for (model, workload, system), seconds in by_key.items():
        for prefix, baseline in HEAD_TO_HEAD:
            if not system.startswith(prefix + " "):
                continue
            precision = system[len(prefix) + 1:]
            other = by_key.get((model, workload, f"{baseline} {precision}"))
            if other:
                rows.append(f"| {model} | {workload} | {precision} | {seconds:.3g} s | {baseline} {other:.3g} s | "
                            f"{other / seconds:.2f}x |")
    if not rows:
        return []
    return ["", "Head to head, same precision (baseline seconds / step-engine seconds):", "",
            "| model | workload | weights | step engine | baseline | engine speed-up |", "|---|---|---|---:|---:|---:|",
            *rows]


def pyplot() -> Any:
    """matplotlib.pyplot on its file-only backend, or None (with a warning) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot (pip install 'ortgen[bench]')")
        return None
    return plt


def plot(result: dict[str, Any], path: Path) -> bool:
    """Speed-up over transformers per model and workload; False when matplotlib is missing."""
    plt = pyplot()
    if plt is None:
        return False
    measurements = [m for m in result["measurements"] if m["speedup_vs_transformers"]]
    models = list(dict.fromkeys(m["model"] for m in measurements))
    throughput = result.get("throughput", [])
    throughput_models = list(dict.fromkeys(r["model"] for r in throughput))
    panels = [("speed", m) for m in models] + [("throughput", m) for m in throughput_models]
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (kind, model) in zip(axes[0], panels):
        if kind == "speed":
            rows, value, label = [m for m in measurements if m["model"] == model], "speedup_vs_transformers", \
                "speed-up over transformers (fp16 rows: its fp16)"
        else:
            rows, value, label = [r for r in throughput if r["model"] == model], "requests_per_second", "requests/s"
        workloads = list(dict.fromkeys(m["workload"] for m in rows))
        systems = list(dict.fromkeys(m["system"] for m in rows))
        width = 0.8 / max(len(systems), 1)
        for i, system in enumerate(systems):
            values = [next((m[value] for m in rows if m["workload"] == w and m["system"] == system), 0)
                      for w in workloads]
            ax.bar([x + i * width for x in range(len(workloads))], values, width, label=system)
        if kind == "speed":
            ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(workloads))], workloads)
        ax.set_title(model if kind == "speed" else f"{model}: many requests at once")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def cpu_name(fallback: str = "unknown CPU") -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), for the reports' machine line."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or fallback


def write_outputs(result: dict[str, Any], out_dir: Path, stem: str, render: Callable[[dict[str, Any]], str],
                  draw: Callable[[dict[str, Any], Path], bool]) -> list[Path]:
    """STEM.json (everything), STEM.md (``render``), STEM.png (``draw``, when matplotlib is there)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = [out_dir / f"{stem}.json", out_dir / f"{stem}.md"]
    files[0].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    files[1].write_text(render(result), encoding="utf-8")
    if draw(result, out_dir / f"{stem}.png"):
        files.append(out_dir / f"{stem}.png")
    return files


def write(result: dict[str, Any], out_dir: Path) -> list[Path]:
    return write_outputs(result, out_dir, "bench", markdown, plot)
