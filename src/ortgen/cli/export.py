"""``ortgen export MODEL -o PACKAGE_DIR``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to a package (decoder + BeamSearch/GreedySearch/Sampling graphs)",
        description=(
            "Export a Hugging Face decoder-only checkpoint (biogpt, gpt2, opt, llama, mistral, qwen2) to a package "
            "directory: the decoder with KV cache built from the checkpoint's weights, wrapped in ONNX Runtime's "
            "BeamSearch, GreedySearch and Sampling operators, weights stored once, tokenizer and manifest. "
            "The package is written to a temporary directory and moved into place when complete."
        ),
        epilog="example: ortgen export microsoft/biogpt -o biogpt-pkg",
    )
    p.add_argument("model", metavar="MODEL",
                   help="a local Hugging Face model directory, a fairseq BioGPT directory (checkpoint.pt, dict.txt, "
                        "bpecodes) or a Hub id")
    p.add_argument("-o", "--output", metavar="PACKAGE_DIR", required=True, type=Path,
                   help="where to write the package (required; must not exist unless --force)")
    p.add_argument("--force", action="store_true",
                   help="replace PACKAGE_DIR if it is an existing package (default: refuse)")
    p.add_argument("--tokenizer", metavar="DIR", type=Path,
                   help="take the tokenizer from DIR instead of MODEL, e.g. for a checkpoint saved without one "
                        "(default: MODEL's)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature baked into generate_sample.onnx (default: 1.0)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="nucleus-sampling top_p baked into generate_sample.onnx, in (0, 1] (default: 1.0, no "
                        "filtering)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32",
                   help="precision of the activations, the KV cache, the logits and the unquantized weights. "
                        "float16 halves the weight and cache bytes and is what the CUDA provider computes in; on "
                        "the CPU only the step engine runs it (ONNX Runtime's CPU BeamSearch / GreedySearch / "
                        "Sampling take float32), and no faster than float32 there; `ortgen validate` checks it "
                        "against the float32 reference for quality, not token for token (docs/gpu.md) (default: "
                        "float32)")
    p.add_argument("--quantize", choices=["none", "int8", "int4"], default="none",
                   help="weight-only quantization of every linear layer (com.microsoft MatMulNBits, block-wise, "
                        "symmetric): int8 reads 4x fewer weight bytes per step than float32; see docs/quantization.md "
                        "(default: none)")
    p.add_argument("--block-size", type=int, default=None,
                   help="quantization block size along the input dimension, a power of two >= 16 (default: 128 for "
                        "int8, 32 for int4; smaller is more precise, larger faster)")
    p.add_argument("--validate", action="store_true",
                   help="after export, run `ortgen validate --fast` against MODEL (needs transformers) (default: off)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress (default: shown)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.export.package import ExportOptions, SamplingOptions, export_package
    from ortgen.export.quantize import QuantConfig

    options = ExportOptions(
        quantize=QuantConfig.parse(args.quantize, args.block_size),
        dtype=args.dtype,
        force=args.force,
        tokenizer=args.tokenizer,
        sampling=SamplingOptions(temperature=args.temperature, top_p=args.top_p),
        show_progress=not args.no_progress,
    )
    manifest = export_package(args.model, args.output, options)
    arch = manifest.architecture
    weights = "" if manifest.weights_dtype == "float32" else f", {manifest.weights_dtype} weights"
    if manifest.dtype != "float32" and manifest.weights_dtype != manifest.dtype:
        weights += f", {manifest.dtype} activations"
    print(f"exported {arch.model_type} ({arch.parameters / 1e6:.1f}M parameters{weights}) to {args.output}")
    if not args.validate:
        return 0
    from ortgen.validate.report import render
    from ortgen.validate.runner import validate_package

    report = validate_package(args.output, args.model, fast=True)
    print(render(report))
    if not report.ok:
        print(f"the package is complete, but validation failed: run `ortgen validate {args.output} "
              f"--reference {args.model}` for the full report", file=sys.stderr)
    return 0 if report.ok else 1
