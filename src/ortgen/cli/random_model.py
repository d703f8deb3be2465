"""``ortgen make-random-model DIR --preset ...``: BioGPT-shaped checkpoints with random weights."""

from __future__ import annotations

import argparse
from pathlib import Path

from ortgen.errors import OrtgenError

PRESET_NAMES = ("demo", "small", "biogpt-base", "biogpt-large")  # see ortgen.demo.models.PRESETS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "make-random-model",
        help="write a BioGPT-shaped Hugging Face checkpoint with random weights (benchmarks, tests)",
        description=(
            "Write a Hugging Face BioGPT directory with random weights: 'demo' is the small embedded default, 'small' "
            "a 20M-parameter one, "
            "'biogpt-base' has microsoft/biogpt's dimensions (347M parameters), 'biogpt-large' BioGPT-Large's "
            "(1.57B). Weights are written one tensor at a time."
        ),
    )
    p.add_argument("output", metavar="DIR", type=Path,
                   help="where to write the checkpoint (written beside it first, moved into place when complete)")
    p.add_argument("--preset", choices=PRESET_NAMES, default="demo",
                   help="the model's dimensions (default: demo)")
    p.add_argument("--tokenizer", metavar="DIR", type=Path,
                   help="copy BioGPT's vocab.json/merges.txt from DIR (default: learn the small demo tokenizer)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the weights, >= 0 (default: 0)")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists (default: refuse)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.demo.models import build_random_biogpt

    if args.output.exists() and not args.force:
        raise OrtgenError(f"{args.output} already exists; pass --force to replace it")
    build_random_biogpt(args.output, args.preset, tokenizer=args.tokenizer, seed=args.seed)
    print(f"wrote a random {args.preset} BioGPT to {args.output}")
    return 0
