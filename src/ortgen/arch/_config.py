"""Small helpers for reading Hugging Face ``config.json`` dictionaries."""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.errors import UnsupportedModelError


def required(config: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` present in ``config``; a clear error when none is."""
    for name in names:
        if config.get(name) is not None:
            return config[name]
    raise UnsupportedModelError(f"config.json has no {' / '.join(names)}; it is required")


def optional_int(config: Mapping[str, Any], name: str) -> int | None:
    """An integer field that may be missing or null (lists keep their first entry)."""
    value = config.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return None if value is None else int(value)
