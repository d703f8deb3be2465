"""``ortgen generate PACKAGE PROMPT...``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ortgen.cli._args import token_ids
from ortgen.errors import OrtgenError

if TYPE_CHECKING:
    from ortgen.runtime.generator import GenerationResult

OPTIONS = ("strategy", "do_sample", "num_beams", "max_new_tokens", "max_length", "min_new_tokens", "min_length",
           "num_return_sequences", "length_penalty", "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids",
           "eos_token_id", "stop_strings", "early_stopping", "temperature", "top_k", "top_p", "seed", "backend")


def _early_stopping(text: str) -> bool | str:
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    if lowered == "never":
        return "never"
    raise argparse.ArgumentTypeError(f"expected true, false or never, got {text!r}")


def add_generation_arguments(p: argparse.ArgumentParser) -> None:
    """The generation settings (transformers' names), shared by the verbs that generate."""
    g = p.add_argument_group("generation settings (transformers' names and semantics; unset: the package's "
                             "generation_config, else transformers' default)")
    g.add_argument("--strategy", choices=["beam", "greedy", "sample"],
                   help="shorthand for --num-beams / --do-sample (default: inferred from the other options)")
    g.add_argument("--do-sample", action="store_true", default=None,
                   help="sample instead of searching (with --num-beams > 1: beam sampling) (default: off)")
    g.add_argument("--num-beams", type=int, help="beam width; 1 is greedy search or sampling (default: 1)")
    g.add_argument("--max-new-tokens", type=int, help="new tokens at most (default: 32; wins over --max-length)")
    g.add_argument("--max-length", type=int, help="prompt + new tokens at most, as transformers' max_length "
                   "(default: unset)")
    g.add_argument("--min-new-tokens", type=int, help="EOS is suppressed until this many tokens are generated "
                   "(default: 0)")
    g.add_argument("--min-length", type=int, help="EOS is suppressed until prompt + new tokens reach this (default: 0)")
    g.add_argument("--num-return-sequences", type=int,
                   help="sequences returned per prompt: the best beams, or independent samples (default: 1)")
    g.add_argument("--length-penalty", type=float, help="beam search: score = logprob sum / length ** penalty "
                   "(default: 1.0)")
    g.add_argument("--repetition-penalty", type=float, help="> 1 discourages repeating tokens (default: 1.0, off)")
    g.add_argument("--early-stopping", type=_early_stopping, metavar="{true,false,never}",
                   help="beam search: true stops once num_beams hypotheses finished; never searches on "
                        "(default: false, transformers' heuristic)")
    g.add_argument("--no-repeat-ngram-size", type=int, help="ban repeating any n-gram of this size (default: 0, off)")
    g.add_argument("--bad-words-ids", type=token_ids, action="append", metavar="IDS",
                   help="a token sequence never to generate, comma-separated ids (repeatable; default: none)")
    g.add_argument("--eos-token-id", type=token_ids, metavar="IDS",
                   help="EOS id(s), comma-separated (default: the model's)")
    g.add_argument("--stop", dest="stop_strings", action="append", metavar="TEXT",
                   help="stop a sequence when it produces TEXT (repeatable; default: none)")
    g.add_argument("--temperature", type=float, help="sampling temperature, > 0 (default: 1.0)")
    g.add_argument("--top-k", type=int, help="sampling: keep the k most likely tokens; 0 turns it off "
                   "(default: 50, as transformers)")
    g.add_argument("--top-p", type=float, help="sampling: nucleus filtering, in (0, 1] (default: 1.0, off)")
    g.add_argument("--seed", type=int, help="sampling seed: the same seed gives the same tokens (default: random)")
    c = p.add_argument_group("structured output (one of these; any strategy, beam search included)")
    c.add_argument("--json-schema", metavar="SCHEMA", help="the output follows this JSON schema: JSON text, or a "
                   "file holding it (default: none)")
    c.add_argument("--json-object", action="store_true", default=None,
                   help="the output is a JSON object, any (default: off)")
    c.add_argument("--choice", action="append", metavar="TEXT",
                   help="the output is one of these strings (repeat the option for each; default: none)")
    c.add_argument("--regex", metavar="REGEX", help="the output matches this regular expression (default: none)")
    c.add_argument("--grammar", metavar="GRAMMAR", help="the output follows this Lark (or GBNF, with ::=) grammar: "
                   "the text, or a file holding it (default: none)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text with a package",
        description=(
            "Generate continuations for one or more prompts (a batch). Options follow transformers' generate(): "
            "num_beams > 1 is beam search, --do-sample (or any of temperature/top-k/top-p/seed) samples, both is "
            "beam sampling, otherwise greedy search. ortgen's step engine runs it (transformers' semantics for every "
            "setting, each prompt run once for all its beams); --backend graph runs ONNX Runtime's in-graph "
            "BeamSearch / GreedySearch / Sampling operators instead (what Triton serves). "
            "Prints which graph ran and why."
        ),
        epilog='example: ortgen generate pkg "Aspirin is" "Metformin is" --num-beams 4 --num-return-sequences 2',
    )
    p.add_argument("package", metavar="PACKAGE", type=Path, help="a package directory written by `ortgen export`")
    p.add_argument("prompts", metavar="PROMPT", nargs="*", help="prompt text(s); several make a batch")
    p.add_argument("--input-ids", metavar="IDS", type=token_ids, action="append",
                   help="a prompt as comma-separated token ids (repeatable); instead of PROMPT (default: none)")
    p.add_argument("--question", help="QA fine-tunes (e.g. BioGPT PubMedQA): the question; prints the parsed "
                                      "answer (default: none)")
    p.add_argument("--context", action="append",
                   help="with --question: a context passage (repeatable; default: none)")
    add_generation_arguments(p)
    p.add_argument("--backend", choices=["auto", "graph", "engine"],
                   help="auto: ortgen's step engine (exact for every setting); graph: ONNX Runtime's in-graph "
                        "BeamSearch / GreedySearch / Sampling operators, what Triton serves (refuses what they "
                        "cannot do); engine: the step engine (default: auto)")
    p.add_argument("--stream", action="store_true", help="print text as it is generated (one prompt) (default: off)")
    p.add_argument("--provider", default="cpu", help="execution provider: cpu or cuda (default: cpu)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (default: text)")
    p.set_defaults(run=run)


def print_result(result: GenerationResult, prompts: Sequence[str] | None) -> None:
    """Each prompt, then its sequences with length, EOS and score; which graph ran goes to stderr."""
    for i, group in enumerate(result.sequences):
        prompt = prompts[i] if prompts else ",".join(map(str, result.prompt_ids[i]))
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
          f"in {result.seconds:.2f}s ({result.reason})", file=sys.stderr)


def result_json(result: GenerationResult, prompts: Sequence[str] | None) -> str:
    return json.dumps({
        "graph": result.graph_file,
        "operator": result.operator,
        "backend": result.backend_kind,
        "reason": result.reason,
        "seconds": result.seconds,
        "settings": result.settings.as_dict(),
        "results": [
            {"prompt": prompts[i] if prompts else None, "prompt_ids": result.prompt_ids[i],
             "sequences": [s.__dict__ for s in group]}
            for i, group in enumerate(result.sequences)
        ],
        **result.extra,
    }, indent=2)


def generation_options(args: argparse.Namespace) -> dict:
    """The generation settings given on the command line, as Generator options."""
    options = {name: getattr(args, name) for name in OPTIONS if getattr(args, name, None) is not None}
    if isinstance(options.get("eos_token_id"), list) and len(options["eos_token_id"]) == 1:
        options["eos_token_id"] = options["eos_token_id"][0]
    constraint = {name: value for name, value in (
        ("json_schema", _text_or_file(getattr(args, "json_schema", None))),
        ("json_object", getattr(args, "json_object", None)), ("choice", getattr(args, "choice", None)),
        ("regex", getattr(args, "regex", None)), ("grammar", _text_or_file(getattr(args, "grammar", None))),
    ) if value is not None}
    if constraint:
        options["constraint"] = constraint  # checked (one kind, valid values) by the Generator
    return options


def _text_or_file(value: str | None) -> str | None:
    """A schema or grammar given inline, or the path of a file holding it."""
    if value is None or "\n" in value or len(value) > 4096:
        return value
    path = Path(value)
    return path.read_text(encoding="utf-8") if path.is_file() else value


def _run_question(args: argparse.Namespace) -> int:
    from ortgen.runtime.generator import Generator

    if args.prompts or args.input_ids:
        raise OrtgenError("--question replaces PROMPT and --input-ids; give only one of them")
    if not args.context:
        raise OrtgenError("--question needs at least one --context passage")
    generator = Generator.load(args.package, providers=args.provider)
    answer = generator.answer(args.question, args.context, **generation_options(args))
    if args.json:
        print(json.dumps({"answer": answer.answer, "text": answer.text, "graph": answer.result.graph_file},
                         indent=2))
    else:
        print(f"answer: {answer.answer if answer.answer is not None else '(none parsed)'}")
        print(f"generated: {answer.text}")
        print(f"ran {answer.result.backend} in {answer.result.seconds:.2f}s", file=sys.stderr)
    return 0


def _run_stream(generator, args: argparse.Namespace, options: dict) -> int:
    if args.json:
        raise OrtgenError("--stream prints text as it comes; it does not combine with --json")
    prompts = args.prompts or []
    if len(prompts) + len(args.input_ids or []) != 1:
        raise OrtgenError("--stream takes exactly one prompt")
    started = time.perf_counter()
    chunks = generator.stream(prompts[0] if prompts else None,
                              input_ids=args.input_ids[0] if args.input_ids else None, **options)
    for chunk in chunks:
        print(chunk, end="", flush=True)
    print()
    print(f"streamed from {generator.manifest.graphs['decoder_engine'].file} (ortgen step engine) in "
          f"{time.perf_counter() - started:.2f}s", file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    from ortgen.runtime.generator import Generator

    if args.question is not None:
        return _run_question(args)
    if args.context:
        raise OrtgenError("--context goes with --question (a QA fine-tune's question about the passages); "
                          "without --question, give PROMPT text(s) or --input-ids")
    if bool(args.prompts) == bool(args.input_ids):
        raise OrtgenError("give either PROMPT text(s) or --input-ids, not both and not neither")
    generator = Generator.load(args.package, providers=args.provider)
    options = generation_options(args)
    if args.stream:
        return _run_stream(generator, args, options)
    if args.prompts:
        result = generator.generate(args.prompts, **options)
    else:
        result = generator.generate(input_ids=args.input_ids, **options)
    if args.json:
        print(result_json(result, args.prompts))
    else:
        print_result(result, args.prompts)
    return 0
