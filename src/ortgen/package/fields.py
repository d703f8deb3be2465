"""Strict readers for hand-editable JSON: each bad value becomes a :class:`PackageError` that names
the field by its dotted path (``generation_defaults.num_beams``), the value, and what is allowed.

A manifest is data that people edit by hand (and that the server and Triton repositories copy),
so nothing is coerced: ``"five"`` is not an integer, ``true`` is not 1, ``NaN`` is not a number.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ortgen.errors import PackageError


class Fields:
    """Typed access to one JSON object at ``path`` (for messages) of the file ``source``."""

    def __init__(self, data: Any, path: str, source: str = "ortgen.json") -> None:
        if not isinstance(data, Mapping):
            raise PackageError(f"{source}: {path or 'the top level'} must be a JSON object, got {_show(data)}")
        self.data, self.path, self.source = data, path, source

    def where(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, value: Any, allowed: str) -> PackageError:
        return PackageError(f"{self.source}: {self.where(name)} must be {allowed}, got {_show(value)}")

    def has(self, name: str) -> bool:
        return name in self.data and self.data[name] is not None

    def raw(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)

    def required(self, name: str) -> Any:
        if name not in self.data:
            raise PackageError(f"{self.source}: {self.where(name)} is missing")
        return self.data[name]

    def child(self, name: str) -> "Fields":
        return Fields(self.required(name), self.where(name), self.source)

    def int(self, name: str, *, minimum: int | None = None, optional: bool = False) -> int | None:
        if optional and not self.has(name):
            return None
        value = self.required(name)
        if not is_int(value) or (minimum is not None and value < minimum):
            raise self.fail(name, value, "an integer" + (f" >= {minimum}" if minimum is not None else ""))
        return value

    def float(self, name: str, *, optional: bool = False) -> float | None:
        if optional and not self.has(name):
            return None
        value = self.required(name)
        if not is_number(value):
            raise self.fail(name, value, "a finite number")
        return float(value)

    def str(self, name: str, *, optional: bool = False, choices: tuple[str, ...] | None = None) -> str | None:
        if optional and not self.has(name):
            return None
        value = self.required(name)
        if not isinstance(value, str) or (choices is not None and value not in choices):
            raise self.fail(name, value, "one of " + ", ".join(map(repr, choices)) if choices else "a string")
        return value

    def bool(self, name: str, *, default: bool | None = None) -> bool:
        if not self.has(name) and default is not None:
            return default
        value = self.required(name)
        if not isinstance(value, bool):
            raise self.fail(name, value, "true or false")
        return value

    def int_list(self, name: str, *, default: list[int] | None = None, minimum: int = 0) -> list[int]:
        if not self.has(name) and default is not None:
            return list(default)
        value = self.required(name)
        if not isinstance(value, list) or not all(is_int(v) and v >= minimum for v in value):
            raise self.fail(name, value, f"a list of integers >= {minimum}")
        return list(value)

    def str_list(self, name: str, *, default: list[str] | None = None) -> list[str]:
        if not self.has(name) and default is not None:
            return list(default)
        value = self.required(name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(name, value, "a list of strings")
        return list(value)

    def object(self, name: str, *, default: dict | None = None) -> dict[str, Any]:
        if not self.has(name) and default is not None:
            return dict(default)
        value = self.required(name)
        if not isinstance(value, Mapping):
            raise self.fail(name, value, "a JSON object")
        return dict(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
