"""``ortgen inspect PACKAGE``: what a package holds."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ortgen.errors import OrtgenError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what a package holds",
                       description="Show a package's architecture, sizes, graphs and their I/O, and defaults.")
    p.add_argument("package", metavar="PACKAGE", type=Path, help="a package directory written by `ortgen export`")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON (default: a summary)")
    p.add_argument("--verify", action="store_true",
                   help="also check every file's size and sha256 (default: structure only)")
    p.set_defaults(run=run)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def describe(package: Path) -> str:
    """The human-readable summary of a package's manifest."""
    from ortgen.package import open_package

    m = open_package(package)
    a, t = m.architecture, m.special_tokens
    lines = [
        f"package      {package}",
        f"model        {a.model_type} from {m.source.get('model', '?')}: {a.parameters / 1e6:.1f}M parameters, "
        f"{m.dtype} activations, {m.weights_dtype} weights"
        + (f" (MatMulNBits, blocks of {m.quantization.block_size})" if m.quantization else ""),
        f"decoder      {a.num_layers} layers x {a.hidden_size} hidden, {a.num_heads} heads"
        + (f" ({a.kv_heads} key/value)" if a.kv_heads != a.num_heads else "")
        + f" x {a.head_dim}, ffn {a.ffn_size}, {a.activation}, {a.norm_position}-{'RMSNorm' if a.norm == 'rmsnorm' else 'LN'}"
        + (f", window {a.sliding_window}" if a.sliding_window else ""),
        f"vocabulary   {a.vocab_size} tokens, {a.max_positions} positions "
        + ("(rotary)" if a.positions == "rotary" else f"(offset {a.position_offset})")
        + f", embedding scale {a.embed_scale:g}",
        f"tokens       bos {t.bos_token_id}, eos {', '.join(map(str, t.all_eos))}, pad {t.pad_token_id}",
    ]
    if m.tokenizer:
        lines.append(f"tokenizer    {m.tokenizer.kind} ({', '.join(m.tokenizer.files)}); prompts get prefix "
                     f"{m.tokenizer.prefix_ids} suffix {m.tokenizer.suffix_ids}"
                     + ("; chat template kept" if m.tokenizer.chat_template else ""))
    else:
        lines.append("tokenizer    none (generate from token ids)")
    for key, g in m.graphs.items():
        what = f"com.microsoft {g.operator}" if g.operator else "decoder step with KV cache"
        extra = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in g.attributes.items())
        inputs = ", ".join(i.name for i in g.inputs if not i.name.startswith("past_"))
        lines.append(f"graph        {g.file:<22} {what}{f' ({extra})' if extra else ''}; {g.logits} logits")
        lines.append(f"               inputs: {inputs}{' + past_*' if key == 'decoder' else ''}")
    total = sum(f.bytes for f in m.files.values())
    weights = m.files[m.weights_file].bytes
    lines.append(f"files        {len(m.files)} files, {_size(total)} ({m.weights_file}: {_size(weights)})")
    lines.append(f"defaults     {json.dumps(m.generation_defaults.as_dict()) if m.generation_defaults else '(none)'}")
    lines.append(f"ortgen       {m.ortgen_version}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ortgen.package import open_package, verify_files

    manifest = open_package(args.package)
    print(manifest.to_json(), end="") if args.json else print(describe(args.package))
    if args.verify:
        problems = verify_files(args.package, manifest)
        if problems:
            raise OrtgenError("package files do not match the manifest: " + "; ".join(problems))
        print(f"verified     all {len(manifest.files)} files match their sha256")
    return 0
