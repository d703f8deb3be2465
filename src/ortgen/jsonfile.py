"""Reading a user's JSON file with the error ortgen shows for it (no traceback, the file named)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from ortgen.errors import OrtgenError


def read_json(path: Path, *, what: str = "", error: type[OrtgenError] = OrtgenError) -> Any:
    """The parsed contents of ``path``; ``error`` says why when it cannot be read or parsed
    (``what`` names the file's role in the message: "settings file ")."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what}{path}: {exc.strerror or exc}") from exc
    return parse_json(text, path, error=error)


def parse_json(text: str, path: Path, *, error: type[OrtgenError] = OrtgenError) -> Any:
    """``text`` (read from ``path``) parsed, or ``error`` naming the file."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc


def jsonl_objects(text: str, path: Path, shape: str, *, error: type[OrtgenError] = OrtgenError
                  ) -> Iterator[tuple[int, dict[str, Any], str]]:
    """(line number, object, "PATH, line N") for each non-blank line of a JSONL file; ``error`` names the
    line for one that is not a JSON object (``shape`` says what each line must be)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise error(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be "
                        f"{shape}") from None
        if not isinstance(record, dict):
            raise error(f"{where}: expected {shape}, got {type(record).__name__}")
        yield number, record, where
