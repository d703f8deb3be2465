"""``ortgen <verb>``: one entry point; each verb imports what it needs when it runs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from ortgen import __version__
from ortgen.errors import OrtgenError

log = logging.getLogger("ortgen")

DESCRIPTION = """\
Deploy Hugging Face decoder-only language models (BioGPT, GPT-2, OPT) on ONNX Runtime,
with beam search, greedy search and sampling running inside ONNX Runtime.

  ortgen demo                              build a small random BioGPT, export it, generate
  ortgen export microsoft/biogpt -o pkg    checkpoint -> package directory
  ortgen inspect pkg                       what a package holds
  ortgen generate pkg "Aspirin is" --num-beams 5 --max-new-tokens 40
"""


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.INFO if verbosity == 0 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s" if verbosity > 0 else "%(message)s",
                        stream=sys.stderr)
    for noisy in ("urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _token_ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got {text!r}") from None


# -- export ---------------------------------------------------------------------------


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to a package (decoder + BeamSearch/GreedySearch/Sampling graphs)",
        description=(
            "Export a Hugging Face decoder-only checkpoint (biogpt, gpt2, opt) to a package directory: "
            "the decoder with KV cache built from the checkpoint's weights, wrapped in ONNX Runtime's "
            "BeamSearch, GreedySearch and Sampling operators, weights stored once, tokenizer and manifest. "
            "The package is written to a temporary directory and moved into place when complete."
        ),
        epilog="example: ortgen export microsoft/biogpt -o biogpt-pkg",
    )
    p.add_argument("model", metavar="MODEL", help="local Hugging Face model directory, or a Hub id")
    p.add_argument("-o", "--output", metavar="PACKAGE_DIR", required=True, type=Path,
                   help="where to write the package (must not exist unless --force)")
    p.add_argument("--force", action="store_true", help="replace PACKAGE_DIR if it is an existing package")
    p.add_argument("--tokenizer", metavar="DIR", type=Path,
                   help="take the tokenizer from DIR instead of MODEL (e.g. for a checkpoint saved without one)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="sampling temperature baked into generate_sample.onnx (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="nucleus-sampling top_p baked into generate_sample.onnx, in (0, 1] (default 1.0: no filtering)")
    p.add_argument("--no-progress", action="store_true", help="do not show progress")
    p.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from ortgen.export.package import ExportOptions, SamplingOptions, export_package

    options = ExportOptions(
        force=args.force,
        tokenizer=args.tokenizer,
        sampling=SamplingOptions(temperature=args.temperature, top_p=args.top_p),
        show_progress=not args.no_progress,
    )
    manifest = export_package(args.model, args.output, options)
    arch = manifest.architecture
    print(f"exported {arch.model_type} ({arch.parameters / 1e6:.1f}M parameters) to {args.output}")
    return 0


# -- inspect --------------------------------------------------------------------------


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what a package holds",
                       description="Show a package's architecture, sizes, graphs and their I/O, and defaults.")
    p.add_argument("package", metavar="PACKAGE", type=Path)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--verify", action="store_true", help="also check every file's size and sha256")
    p.set_defaults(run=_run_inspect)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return str(n)


def _run_inspect(args: argparse.Namespace) -> int:
    from ortgen.manifest import Manifest, verify_files

    m = Manifest.load(args.package)
    if args.json:
        print(m.to_json(), end="")
    else:
        a, t = m.architecture, m.special_tokens
        lines = [
            f"package      {args.package}",
            f"model        {a.model_type} from {m.source.get('model', '?')}: {a.parameters / 1e6:.1f}M parameters, {m.dtype}",
            f"decoder      {a.num_layers} layers x {a.hidden_size} hidden, {a.num_heads} heads x {a.head_dim}, "
            f"ffn {a.ffn_size}, {a.activation}, {a.norm_position}-LN",
            f"vocabulary   {a.vocab_size} tokens, {a.max_positions} positions (offset {a.position_offset}), "
            f"embedding scale {a.embed_scale:g}",
            f"tokens       bos {t.bos_token_id}, eos {t.eos_token_id}, pad {t.pad_token_id}",
        ]
        if m.tokenizer:
            lines.append(f"tokenizer    {m.tokenizer.kind} ({', '.join(m.tokenizer.files)}); prompts get prefix "
                         f"{m.tokenizer.prefix_ids} suffix {m.tokenizer.suffix_ids}")
        else:
            lines.append("tokenizer    none (generate from token ids)")
        for key, g in m.graphs.items():
            what = f"com.microsoft {g.operator}" if g.operator else "decoder step with KV cache"
            extra = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in g.attributes.items())
            ins = ", ".join(f"{i.name}" for i in g.inputs if not i.name.startswith("past_"))
            lines.append(f"graph        {g.file:<22} {what}{f' ({extra})' if extra else ''}; {g.logits} logits")
            lines.append(f"               inputs: {ins}{' + past_*' if key == 'decoder' else ''}")
        total = sum(f.bytes for f in m.files.values())
        lines.append(f"files        {len(m.files)} files, {_size(total)} ({m.weights_file}: {_size(m.files[m.weights_file].bytes)})")
        lines.append(f"defaults     {json.dumps(m.generation_defaults) if m.generation_defaults else '(none)'}")
        lines.append(f"ortgen       {m.ortgen_version}")
        print("\n".join(lines))
    if args.verify:
        problems = verify_files(args.package, m)
        if problems:
            raise OrtgenError("package files do not match the manifest: " + "; ".join(problems))
        print(f"verified     all {len(m.files)} files match their sha256")
    return 0


# -- generate -------------------------------------------------------------------------


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text with a package",
        description=(
            "Generate continuations for one or more prompts (a left-padded batch) with the package's in-graph "
            "generation models. The strategy follows transformers: num_beams > 1 is beam search, "
            "temperature/top_p/seed or --strategy sample is sampling, otherwise greedy search. "
            "Prints which graph ran."
        ),
        epilog='example: ortgen generate pkg "Aspirin is" "Metformin is" --num-beams 4 --num-return-sequences 2',
    )
    p.add_argument("package", metavar="PACKAGE", type=Path)
    p.add_argument("prompts", metavar="PROMPT", nargs="*", help="prompt text(s); several make a batch")
    p.add_argument("--input-ids", metavar="IDS", type=_token_ids, action="append",
                   help="a prompt as comma-separated token ids (repeatable); instead of PROMPT")
    p.add_argument("--strategy", choices=["beam", "greedy", "sample"], help="default: inferred from the options")
    p.add_argument("--num-beams", type=_positive_int)
    p.add_argument("--max-new-tokens", type=_positive_int, help="default: the package's, else 32")
    p.add_argument("--min-new-tokens", type=int, help="EOS is suppressed until this many tokens are generated")
    p.add_argument("--num-return-sequences", type=_positive_int)
    p.add_argument("--length-penalty", type=float, help="beam search: score = logprob / length ** penalty")
    p.add_argument("--repetition-penalty", type=float, help="> 1 discourages repeating tokens (1.0: off)")
    p.add_argument("--temperature", type=float, help="sampling (fixed at export)")
    p.add_argument("--top-p", type=float, help="sampling (fixed at export)")
    p.add_argument("--seed", type=int, help="sampling seed (reproducible)")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu or cuda (default cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    from ortgen.runtime.generator import Generator

    if bool(args.prompts) == bool(args.input_ids):
        raise OrtgenError("give either PROMPT text(s) or --input-ids, not both and not neither")
    if args.min_new_tokens is not None and args.min_new_tokens < 0:
        raise OrtgenError(f"--min-new-tokens must be >= 0, got {args.min_new_tokens}")
    generator = Generator.load(args.package, providers=args.provider)
    options = {
        name: getattr(args, name)
        for name in ("strategy", "num_beams", "max_new_tokens", "min_new_tokens", "num_return_sequences",
                     "length_penalty", "repetition_penalty", "temperature", "top_p", "seed")
        if getattr(args, name) is not None
    }
    if args.prompts:
        result = generator.generate(args.prompts, **options)
    else:
        result = generator.generate(input_ids=args.input_ids, **options)
    if args.json:
        print(json.dumps({
            "graph": result.graph_file,
            "operator": result.operator,
            "seconds": result.seconds,
            "settings": result.settings.as_dict(),
            "results": [
                {"prompt": args.prompts[i] if args.prompts else None, "prompt_ids": result.prompt_ids[i],
                 "sequences": [s.__dict__ for s in group]}
                for i, group in enumerate(result.sequences)
            ],
            **result.extra,
        }, indent=2))
        return 0
    for i, group in enumerate(result.sequences):
        prompt = args.prompts[i] if args.prompts else ",".join(map(str, result.prompt_ids[i]))
        print(f"[{i}] {prompt}")
        for r, seq in enumerate(group):
            text = seq.text if seq.text is not None else ",".join(map(str, seq.token_ids))
            tags = [f"{len(seq.token_ids)} tokens", "ended with EOS" if seq.finished else "reached max_new_tokens"]
            if seq.score is not None:
                tags.append(f"score {seq.score:.4f}")
            label = f"  {r + 1}." if len(group) > 1 else "   "
            print(f"{label} {text}   ({', '.join(tags)})")
    s = result.settings
    print(f"ran {result.backend}: strategy={s.strategy} num_beams={s.num_beams} max_new_tokens={s.max_new_tokens} "
          f"in {result.seconds:.2f}s", file=sys.stderr)
    return 0


# -- demo -----------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build a small random BioGPT, export it and generate (no download)",
        description=(
            "The whole path on an embedded default model: build a small BioGPT with random weights and a "
            "tokenizer learned from a short biomedical text (nothing downloaded), export it, show the package "
            "and generate with beam search and greedy search inside ONNX Runtime. Random weights generate "
            "nonsense: this shows the machinery."
        ),
    )
    p.add_argument("--workdir", type=Path, default=Path("ortgen-demo"),
                   help="where the model and package go (default ./ortgen-demo; rebuilt each run)")
    p.add_argument("--prompt", action="append", help="prompt(s) to generate for (repeatable)")
    p.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import shutil

    from ortgen.random_models import build_random_biogpt
    from ortgen.export.package import ExportOptions, export_package

    workdir: Path = args.workdir
    model_dir, package_dir = workdir / "model", workdir / "package"
    if workdir.exists():
        if not (model_dir.exists() or package_dir.exists()) and any(workdir.iterdir()):
            raise OrtgenError(f"{workdir} exists and was not made by `ortgen demo`; choose another --workdir")
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    print(f"1. building a small random BioGPT in {model_dir}")
    build_random_biogpt(model_dir, "demo")
    print(f"2. exporting it to {package_dir}")
    export_package(str(model_dir), package_dir, ExportOptions(force=True))
    print(f"3. the package:")
    _run_inspect(argparse.Namespace(package=package_dir, json=False, verify=False))
    prompts = args.prompt or ["Aspirin reduces the risk of", "The primary outcome was"]
    print(f"4. generating (random weights: expect nonsense)")
    for options in ({"num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 12},
                    {"max_new_tokens": 12}):
        gen_args = argparse.Namespace(package=package_dir, prompts=prompts, input_ids=None, strategy=None,
                                      min_new_tokens=None, length_penalty=None, repetition_penalty=None,
                                      temperature=None, top_p=None, seed=None, provider="cpu", json=False,
                                      num_beams=options.get("num_beams"), max_new_tokens=options["max_new_tokens"],
                                      num_return_sequences=options.get("num_return_sequences"))
        _run_generate(gen_args)
    print(f"done: try `ortgen generate {package_dir} \"your prompt\" --num-beams 4`")
    return 0


# -- make-random-model ----------------------------------------------------------------


def _add_make_random_model(sub: argparse._SubParsersAction) -> None:
    from ortgen.random_models import PRESETS

    p = sub.add_parser(
        "make-random-model",
        help="write a BioGPT-shaped Hugging Face checkpoint with random weights (benchmarks, tests)",
        description=(
            "Write a Hugging Face BioGPT directory with random weights: 'demo' is the small embedded default, "
            "'biogpt-base' has microsoft/biogpt's dimensions (347M parameters), 'biogpt-large' BioGPT-Large's "
            "(1.57B). Weights are written one tensor at a time."
        ),
    )
    p.add_argument("output", metavar="DIR", type=Path)
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    p.add_argument("--tokenizer", metavar="DIR", type=Path,
                   help="copy BioGPT's vocab.json/merges.txt from DIR (default: learn the small demo tokenizer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite DIR if it exists")
    p.set_defaults(run=_run_make_random_model)


def _run_make_random_model(args: argparse.Namespace) -> int:
    import shutil

    from ortgen.random_models import build_random_biogpt

    if args.output.exists():
        if not args.force:
            raise OrtgenError(f"{args.output} already exists; pass --force to overwrite it")
        shutil.rmtree(args.output)
    build_random_biogpt(args.output, args.preset, tokenizer=args.tokenizer, seed=args.seed)
    print(f"wrote a random {args.preset} BioGPT to {args.output}")
    return 0


# -- main -----------------------------------------------------------------------------

_VERBS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_demo, _add_export, _add_inspect, _add_generate, _add_make_random_model,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ortgen", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"ortgen {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for add in _VERBS:
        add(sub)
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


if __name__ == "__main__":
    sys.exit(main())
