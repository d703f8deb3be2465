"""``ortgen validate PACKAGE --reference MODEL``: prove the package generates what transformers does."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ortgen.cli._args import non_negative_int, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="compare a package with transformers (decoder outputs, generated tokens, sampling statistics)",
        description=(
            "Run the package and transformers over a prompt suite x generation settings grid. Decoder level: "
            "output names, then shapes, then values within the architecture's tolerance. Generation level: "
            "token ids for greedy and beam search (num_beams, num_return_sequences, length and repetition "
            "penalties, min lengths, early stopping) and beam scores; for each mismatch, the first diverging "
            "step, both tokens and their log-probabilities. Known differences between ONNX Runtime's operators "
            "and transformers are recognised (and checked) and reported as explained. Sampling is checked "
            "statistically. Exits 1 on any unexplained mismatch."
        ),
        epilog="example: ortgen validate biogpt-pkg --reference microsoft/biogpt --json report.json",
    )
    from ortgen.validate.suite import ALLOWED_SETTINGS  # light: no torch

    p.add_argument("package", metavar="PACKAGE", type=Path, help="a package directory written by `ortgen export`")
    p.add_argument("--reference", metavar="MODEL", required=True,
                   help="the model the package was exported from: a Hugging Face directory, a fairseq BioGPT "
                        "directory or a Hub id (required)")
    p.add_argument("--prompts", metavar="FILE", type=Path,
                   help="prompts: a text file (one per line) or JSON (list of strings or of token-id lists); "
                        "every 3 form a batch (default: a built-in biomedical suite)")
    p.add_argument("--settings", metavar="FILE", type=Path,
                   help="JSON list of settings objects with the keys " + ", ".join(sorted(ALLOWED_SETTINGS))
                        + " (default: a built-in grid of greedy and beam search settings)")
    p.add_argument("--json", metavar="OUT", type=Path, help="write the full report as JSON (default: not written)")
    p.add_argument("--fast", action="store_true",
                   help="decoder and one batch with greedy and beam search only (default: the full suite)")
    p.add_argument("--draws", type=positive_int, default=1000,
                   help="samples for each first-token frequency test (default: 1000)")
    p.add_argument("--seed", type=non_negative_int,
                   help="seed of the sampling checks, to repeat a run (default: a new one each run, printed in "
                        "the report)")
    p.add_argument("--backend", choices=["both", "graph", "engine"], default="both",
                   help="validate the in-graph operators, the step engine, or both (default: both)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.validate.report import render
    from ortgen.validate.runner import validate_package
    from ortgen.validate.suite import load_prompts, load_settings

    prompts = load_prompts(args.prompts) if args.prompts else None
    settings = load_settings(args.settings) if args.settings else None
    backends = ("graph", "engine") if args.backend == "both" else (args.backend,)
    report = validate_package(args.package, args.reference, prompts=prompts, settings=settings, fast=args.fast,
                              draws=args.draws, backends=backends, seed=args.seed)
    print(render(report))
    if args.json:
        args.json.write_text(report.to_json(), encoding="utf-8")
        print(f"full report: {args.json}", file=sys.stderr)
    return 0 if report.ok else 1
