"""``ortgen convert-fairseq CHECKPOINT_DIR -o HF_DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ortgen.cli._args import positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert-fairseq",
        help="convert a fairseq BioGPT checkpoint (e.g. the PubMedQA fine-tunes) to a Hugging Face directory",
        description=(
            "Convert a fairseq BioGPT directory (checkpoint.pt, dict.txt, bpecodes) into a Hugging Face BioGPT "
            "directory that transformers' BioGptForCausalLM and BioGptTokenizer load. Needs neither fairseq nor "
            "trust in the pickle: only tensors, plain containers, argparse.Namespace and numpy values are "
            "unpickled. Learned prompt tokens of --learned-prompt fine-tunes are kept and named, and their prompt "
            "format is recorded (prompt_format.json) for `ortgen export`. `ortgen export` also accepts the fairseq "
            "directory directly."
        ),
        epilog="example: ortgen convert-fairseq QA-PubMedQA-BioGPT -o biogpt-pubmedqa-hf",
    )
    p.add_argument("checkpoint_dir", metavar="CHECKPOINT_DIR", type=Path,
                   help="a fairseq BioGPT directory: checkpoint.pt, dict.txt and bpecodes")
    p.add_argument("-o", "--output", metavar="HF_DIR", type=Path, required=True,
                   help="where to write the Hugging Face directory (required)")
    p.add_argument("--force", action="store_true", help="replace HF_DIR if it exists (default: refuse)")
    p.add_argument("--learned-prompt", type=positive_int, metavar="N",
                   help="the number of learned prompt tokens, when the checkpoint does not record it "
                        "(default: read from the checkpoint)")
    p.add_argument("--prompt-template", choices=["auto", "pubmedqa", "none"], default="auto",
                   help="the fine-tune's input format: pubmedqa ('question: ... context: ...', lowercased), none, or "
                        "auto (pubmedqa when the training data path says PubMedQA) (default: auto)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress (default: shown)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.convert.fairseq_biogpt import convert_fairseq_biogpt

    out = convert_fairseq_biogpt(args.checkpoint_dir, args.output, force=args.force,
                                 learned_prompt=args.learned_prompt, prompt_template=args.prompt_template,
                                 show_progress=not args.no_progress)
    print(f"converted {args.checkpoint_dir} to {out}")
    return 0
