"""Reading a versioned JSON manifest into a dataclass, with errors that say what to do.

Shared by the embedder manifest (``embedder.json``) and the index manifest (``index.json``);
json and dataclasses only, so the export side can import it without Milvus or ONNX Runtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from ortgen.errors import OrtgenError

T = TypeVar("T")


def read_manifest(cls: type[T], path: Path, *, format: str, version: int, error: type[OrtgenError],
                  remedy: str) -> T:
    """``path`` parsed into ``cls`` (unknown keys ignored: newer writers may add some); ``error``
    when it is unreadable, of another format or version (``remedy`` says what to do), or incomplete."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise error(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != format:
        raise error(f"{path} is not an {format} manifest (its \"format\" should be {format!r})")
    if data.get("format_version") != version:
        raise error(f"{path} has format_version {data.get('format_version')}; this ortgen reads {version}: "
                    f"{remedy}")
    known = set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise error(f"{path} is incomplete: {exc}") from exc
