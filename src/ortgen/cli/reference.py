"""docs/cli.md, generated from the parser: every verb's ``--help``, as ``ortgen <verb> --help`` prints it.

Regenerate after changing an option: ``python -m ortgen.cli.reference > docs/cli.md``
(tests/unit/test_cli_help.py fails while the file is stale).
"""

from __future__ import annotations

import argparse
import os
import sys

WIDTH = "100"  # argparse wraps to $COLUMNS: fixed, so the file does not depend on the terminal


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_markdown() -> str:
    """The reference page: the top-level help, then each verb's."""
    from ortgen.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        parser = build_parser()
        parts = ["# Command-line reference", "",
                 "Generated from the parser by `python -m ortgen.cli.reference > docs/cli.md`; "
                 "`ortgen <verb> --help` prints the same.", "",
                 "## ortgen", "", "```", parser.format_help().rstrip(), "```", ""]
        for name, sub in _subparsers(parser).items():
            parts += [f"## ortgen {name}", "", "```", sub.format_help().rstrip(), "```", ""]
        return "\n".join(parts)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


if __name__ == "__main__":
    sys.stdout.write(cli_markdown())
