"""``ortgen bench``: ortgen against transformers and CTranslate2 on this machine."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from ortgen.cli._args import positive_int
from ortgen.errors import OrtgenError


def _csv(choices):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        bad = [t for t in items if t not in choices]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}; got {text!r}")
        return items
    return parse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ortgen.bench.models import MODELS
    from ortgen.bench.suite import ALL_SYSTEMS

    p = sub.add_parser(
        "bench",
        help="benchmark ortgen against transformers and CTranslate2 (JSON, markdown table, PNG plot)",
        description=(
            "Run workloads W1 (prompt 64 -> 64, beam 5), W2 (prompt 512 -> 64, beam 5) and W3 (batch 8 x 128 -> "
            "64, greedy), and the throughput workloads C1-C3 (many requests through the scheduler against the "
            "same requests one at a time, and transformers one at a time and in a static batch), on "
            "random-weight models of real shapes (BioGPT base and Large; GPT-2-medium for "
            "CTranslate2, which cannot load BioGPT), for transformers fp32, ortgen's in-graph operators and step "
            "engine (fp32 and int8) and CTranslate2 (fp32, int8), in one process, alternating, medians. Also "
            "measures this machine's matmul rate and memory bandwidth and reports each result against the "
            "workload's floor. --quick: tiny models and workloads (CI smoke)."
        ),
        epilog="example: ortgen bench --models biogpt-base --workloads W1,W2 --out bench-results",
    )
    p.add_argument("--models", type=_csv(list(MODELS)), default=["biogpt-base", "gpt2-medium"],
                   help=f"comma-separated, from {', '.join(MODELS)} (default: biogpt-base,gpt2-medium)")
    p.add_argument("--workloads", type=_csv(["W1", "W2", "W3", "C1", "C2", "C3"]), default=["W1", "W2", "W3"],
                   help="comma-separated: single requests W1, W2, W3; many requests at once C1 (16 x beam 5, "
                        "together), C2 (the same as a Poisson stream), C3 (32 x greedy, together) "
                        "(default: W1,W2,W3)")
    p.add_argument("--systems", type=_csv(list(ALL_SYSTEMS)), default=list(ALL_SYSTEMS),
                   help=f"comma-separated, from {', '.join(ALL_SYSTEMS)} (default: all)")
    p.add_argument("--weights", type=_csv(["float32", "float16", "int8", "int4"]), default=["float32", "int8"],
                   help="ortgen package weight types, comma-separated; float16 adds transformers float16 as its "
                        "baseline (the GPU comparison; slow on the CPU). The throughput workloads use the first "
                        "(default: float32,int8)"),
    p.add_argument("--repeats", type=positive_int, default=3, help="timed runs per system and workload; the median is reported (default: 3)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where every system runs (cuda: needs onnxruntime-gpu, torch with CUDA; see docs/benchmarks.md) "
                        "(default: cpu)")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the peak-memory runs (one more run per system and workload, each in its own process) "
                        "(default: measure)")
    p.add_argument("--quick", action="store_true",
                   help="tiny models and workloads: a smoke run in seconds, labelled as such (default: off)")
    p.add_argument("--workdir", type=Path, default=Path("bench-work"),
                   help="models and packages, reused by later runs (default: ./bench-work)")
    p.add_argument("--out", type=Path, default=Path("bench-work/results"),
                   help="where bench.json/.md/.png go (default: ./bench-work/results; the committed results live "
                        "in bench-results/)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        if "transformers" in args.systems:
            raise OrtgenError("the transformers baseline needs the export extra: pip install 'ortgen[export]'")
    from ortgen.bench.report import markdown
    from ortgen.bench.suite import run_suite

    if args.device == "cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise OrtgenError("--device cuda: this onnxruntime has no CUDAExecutionProvider (available: "
                              f"{', '.join(onnxruntime.get_available_providers())}); install onnxruntime-gpu")

    launched = sys.argv[0].endswith("ortgen") or sys.argv[0].endswith("__main__.py")  # ortgen, python -m ortgen
    command = "ortgen " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if launched else "ortgen bench"
    result = run_suite(args.models, args.workloads, args.systems, args.weights, args.repeats, args.quick,
                       args.workdir, args.out, command, args.device,
                       memory=not args.no_memory)
    print(markdown(result))
    return 0
