"""``ortgen chat PACKAGE [MESSAGE]``: talk to a chat model through its own chat template."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, TextIO

from ortgen.cli.generate import add_generation_arguments, generation_options
from ortgen.errors import OrtgenError

DEFAULT_MAX_NEW_TOKENS = 256


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chat",
        help="chat with a package that has a chat template (Llama, Mistral, Qwen2 instruct models)",
        description=(
            "Answer MESSAGE as the model's assistant, with the checkpoint's own chat template (kept in the package "
            "at export, rendered without transformers), streaming the answer. Without MESSAGE: an interactive "
            "conversation when stdin is a terminal (an empty line or Ctrl-D ends it; each answer joins the "
            "history), else one message read from stdin. Generation settings are transformers' names, as in "
            "`ortgen generate`; the package's generation_config applies where they are unset."
        ),
        epilog='example: ortgen chat biomistral-int4 "What does aspirin inhibit?" --system "Answer briefly."',
    )
    p.add_argument("package", metavar="PACKAGE", type=Path, help="a package directory written by `ortgen export`")
    p.add_argument("message", metavar="MESSAGE", nargs="?", help="the user's message (default: a conversation, "
                   "or stdin when it is not a terminal)")
    p.add_argument("--system", metavar="TEXT", help="a system message before the conversation (default: none; "
                   "some templates add their own, e.g. Qwen2's)")
    add_generation_arguments(p)
    p.add_argument("--provider", default="cpu", help="execution provider: cpu or cuda (default: cpu)")
    p.set_defaults(run=run)


def _answer(generator: Any, messages: list[dict[str, str]], options: dict[str, Any], out: TextIO) -> str:
    """Stream the assistant's next turn to ``out``; returns its text."""
    ids = generator.chat_ids(messages)
    pieces = []
    for piece in generator.stream(None, input_ids=ids, **options):
        pieces.append(piece)
        print(piece, end="", file=out, flush=True)
    print(file=out)
    return "".join(pieces)


def _conversation(generator: Any, messages: list[dict[str, str]], options: dict[str, Any]) -> None:
    print("(an empty line or Ctrl-D ends the conversation)", file=sys.stderr)
    while True:
        try:
            text = input("> ")
        except EOFError:
            print(file=sys.stderr)
            return
        if not text.strip():
            return
        messages.append({"role": "user", "content": text})
        try:
            messages.append({"role": "assistant", "content": _answer(generator, messages, options, sys.stdout)})
        except OrtgenError as exc:  # e.g. the template's own refusal: the conversation goes on without the turn
            messages.pop()
            print(f"error: {exc}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from ortgen.runtime.generator import Generator

    options = generation_options(args)
    if options.get("num_beams", 1) > 1 or options.get("num_return_sequences", 1) > 1:
        raise OrtgenError("ortgen chat streams one answer: for beams or several answers use `ortgen generate` on "
                          "the conversation's text, or the server's /v1/chat/completions")
    options.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    generator = Generator.load(args.package, providers=args.provider)
    if generator.chat_template is None:
        raise OrtgenError(f"{args.package} has no chat template (the checkpoint had none: BioGPT, GPT-2 and OPT are "
                          "not chat models); use `ortgen generate` with a prompt")
    messages = [{"role": "system", "content": args.system}] if args.system else []
    with generator:
        if args.message is not None or not sys.stdin.isatty():
            message = args.message if args.message is not None else sys.stdin.read()
            if not message.strip():
                raise OrtgenError("the message is empty")
            _answer(generator, messages + [{"role": "user", "content": message}], options, sys.stdout)
        else:
            _conversation(generator, messages, options)
    return 0
