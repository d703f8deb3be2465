"""``ortgen <verb>``: one entry point; each verb lives in its own module and imports what it
needs only when it runs, so ``ortgen --help`` stays fast."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ortgen import __version__
from ortgen.cli import (bench, chat, convert, demo, evaluate, export, export_embedder, generate, inspect, loadtest,
                        rag, random_model, serve, triton, triton_env, validate)
from ortgen.errors import OrtgenError

DESCRIPTION = """\
Deploy Hugging Face decoder-only language models (BioGPT, GPT-2, OPT, Llama, Mistral, Qwen2) on
ONNX Runtime: export them with beam search, greedy search and sampling inside ONNX Runtime's generation operators
(what Triton serves), and generate with ortgen's step engine (transformers' semantics for every
setting, requests batched together) or with those operators.

  ortgen demo                              the whole path on a small random BioGPT (no download)
  ortgen export microsoft/biogpt -o pkg    checkpoint -> package directory
  ortgen inspect pkg                       what a package holds
  ortgen generate pkg "Aspirin is" --num-beams 5 --max-new-tokens 40
  ortgen chat pkg "What does aspirin inhibit?"   a chat model, through its own chat template
  ortgen validate pkg --reference microsoft/biogpt    prove it generates what transformers does
  ortgen convert-fairseq QA-PubMedQA-BioGPT -o hf-dir  fairseq BioGPT -> Hugging Face
  ortgen bench --quick                     speed against transformers and CTranslate2 on this machine
  ortgen serve pkg --port 8000             HTTP: OpenAI /v1/completions and /v1/chat/completions, KServe v2, /metrics
  ortgen loadtest --package pkg            concurrent HTTP clients against ortgen serve
  ortgen triton pkg -o repo                Triton model repository (python backend or onnxruntime ensemble)
  ortgen export-embedder ST_MODEL_DIR -o emb   sentence-transformers model -> ONNX embedder
  ortgen rag index docs/ -o idx --embedder emb   documents -> Milvus (dense + BM25)
  ortgen rag ask idx pkg "question"        retrieve, answer with the package, show the sources
  ortgen eval pkg pkg-int8 ori_pqal.json   PubMedQA accuracy, macro-F1, paired test between packages
"""

VERBS = (demo, export, inspect, generate, chat, validate, convert, bench, random_model, serve, loadtest, triton, triton_env,
         export_embedder, rag, evaluate)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    fmt = "%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr)
    for noisy in ("urllib3", "filelock", "huggingface_hub", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ortgen", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ortgen {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging, -vv for debug (default: progress and results)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only (default: off)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        verb.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        return args.run(args)
    except OrtgenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


__all__ = ["main", "build_parser"]
