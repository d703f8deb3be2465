"""Every CLI option explains itself and states its default; docs/cli.md is the parser's own help."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from ortgen.cli import build_parser
from ortgen.cli.reference import _subparsers, cli_markdown

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _options(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
            continue
        yield action


def _all_parsers():
    parser = build_parser()
    yield "ortgen", parser
    for name, sub in _subparsers(parser).items():
        yield f"ortgen {name}", sub
        for inner, subsub in _subparsers(sub).items():  # verbs with sub-verbs (ortgen rag index ...)
            yield f"ortgen {name} {inner}", subsub


def test_every_option_has_help_that_states_its_default():
    missing = []
    for verb, parser in _all_parsers():
        in_required_group = {id(a) for g in parser._mutually_exclusive_groups if g.required for a in g._group_actions}
        for action in _options(parser):
            name = "/".join(action.option_strings) or action.dest
            text = action.help or ""
            required = action.required or id(action) in in_required_group
            if not text or text == argparse.SUPPRESS:
                missing.append(f"{verb} {name}: no help")
            elif action.option_strings and not required and "default" not in text:
                missing.append(f"{verb} {name}: help does not state the default")
            elif action.option_strings and required and "required" not in text:
                missing.append(f"{verb} {name}: help does not say it is required")
    assert not missing, "\n".join(missing)


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="argparse's layout differs between Python versions; "
                                                             "docs/cli.md is generated with 3.11")
def test_docs_cli_md_is_the_current_help():
    assert DOCS.read_text(encoding="utf-8") == cli_markdown(), (
        "docs/cli.md is stale: regenerate it with `python -m ortgen.cli.reference > docs/cli.md`")
