"""What a caller may constrain a request's output to: a JSON schema, any JSON object, one of a
list of strings, a regular expression, or a grammar.

A :class:`Constraint` is plain data, checked when it is made (the message names the field, the
value and what is allowed); :mod:`ortgen.runtime.grammar` turns it into a token mask per step.
Every entry point reads the same forms (:meth:`Constraint.parse`), so the Python API, the CLI,
both OpenAI endpoints, KServe and Triton accept the same things:

    Constraint.json_schema({"type": "object", ...})   {"json_schema": {...}}
    Constraint.json_object()                          {"json_object": true}
    Constraint.choice(["yes", "no", "maybe"])         {"choice": ["yes", "no", "maybe"]}
    Constraint.regex(r"\\d{4}-\\d{2}")                 {"regex": "..."}
    Constraint.grammar('start: "a"+')                 {"grammar": "..."}  (Lark, or GBNF with ::=)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ortgen.errors import GenerationSettingsError

JSON_SCHEMA, JSON_OBJECT, CHOICE, REGEX, GRAMMAR = "json_schema", "json_object", "choice", "regex", "grammar"
KINDS = (JSON_SCHEMA, JSON_OBJECT, CHOICE, REGEX, GRAMMAR)
MAX_CHOICES = 1024
MAX_SOURCE_CHARS = 1 << 20  # a schema, regex or grammar: 1 MiB of text at most


@dataclass(frozen=True)
class Constraint:
    """One constraint. ``source``: the schema as canonical JSON text, the regex, the grammar, or the
    choices as a JSON list (hashable, so compiled grammars can be cached by it)."""

    kind: str
    source: str

    # -- constructors --------------------------------------------------------------------

    @classmethod
    def json_schema(cls, schema: Mapping[str, Any] | str) -> "Constraint":
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise GenerationSettingsError(f"json_schema is not valid JSON: {exc}") from None
        if not isinstance(schema, Mapping):
            raise GenerationSettingsError(f"json_schema must be a JSON object (a schema), got {_shown(schema)}")
        return cls(JSON_SCHEMA, _bounded(JSON_SCHEMA, json.dumps(schema, sort_keys=True, ensure_ascii=False)))

    @classmethod
    def json_object(cls) -> "Constraint":
        return cls(JSON_OBJECT, "")

    @classmethod
    def choice(cls, choices: Sequence[str]) -> "Constraint":
        if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices \
                or not all(isinstance(c, str) and c for c in choices):
            raise GenerationSettingsError(f"choice must be a non-empty list of non-empty strings, got {_shown(choices)}")
        if len(choices) > MAX_CHOICES:
            raise GenerationSettingsError(f"choice lists at most {MAX_CHOICES} strings, got {len(choices)}")
        return cls(CHOICE, _bounded(CHOICE, json.dumps(list(choices), ensure_ascii=False)))

    @classmethod
    def regex(cls, pattern: str) -> "Constraint":
        if not isinstance(pattern, str) or not pattern:
            raise GenerationSettingsError(f"regex must be a non-empty string, got {_shown(pattern)}")
        return cls(REGEX, _bounded(REGEX, pattern))

    @classmethod
    def grammar(cls, text: str) -> "Constraint":
        if not isinstance(text, str) or not text.strip():
            raise GenerationSettingsError(f"grammar must be a non-empty string (Lark, or GBNF), got {_shown(text)}")
        return cls(GRAMMAR, _bounded(GRAMMAR, text))

    @classmethod
    def parse(cls, value: "Constraint | Mapping[str, Any]") -> "Constraint":
        """A Constraint, or a mapping with exactly one of ``json_schema``, ``json_object`` (true),
        ``choice``, ``regex``, ``grammar``."""
        if isinstance(value, Constraint):
            return value
        if not isinstance(value, Mapping):
            raise GenerationSettingsError(f"constraint must be an object with one of {', '.join(KINDS)}, "
                                          f"got {_shown(value)}")
        given = [k for k in KINDS if value.get(k) is not None and value.get(k) is not False]
        unknown = sorted(set(value) - set(KINDS))
        if unknown:
            raise GenerationSettingsError(f"constraint has unknown field(s) {', '.join(unknown)}; "
                                          f"allowed: {', '.join(KINDS)}")
        if len(given) != 1:
            raise GenerationSettingsError(f"constraint takes exactly one of {', '.join(KINDS)}; got "
                                          f"{', '.join(given) if given else 'none'}")
        kind = given[0]
        item = value[kind]
        if kind == JSON_OBJECT:
            if item is not True:
                raise GenerationSettingsError(f"json_object must be true, got {_shown(item)}")
            return cls.json_object()
        return {JSON_SCHEMA: cls.json_schema, CHOICE: cls.choice, REGEX: cls.regex, GRAMMAR: cls.grammar}[kind](item)

    # -- reading ---------------------------------------------------------------------------

    @property
    def schema(self) -> dict[str, Any] | None:
        """The JSON schema (``{"type": "object"}`` for json_object), or None for other kinds."""
        if self.kind == JSON_OBJECT:
            return {"type": "object"}
        return json.loads(self.source) if self.kind == JSON_SCHEMA else None

    @property
    def choices(self) -> list[str] | None:
        return json.loads(self.source) if self.kind == CHOICE else None

    def to_dict(self) -> dict[str, Any]:
        """The :meth:`parse` form."""
        if self.kind == JSON_OBJECT:
            return {JSON_OBJECT: True}
        value: Any = self.schema if self.kind == JSON_SCHEMA else self.choices if self.kind == CHOICE else self.source
        return {self.kind: value}

    def describe(self) -> str:
        """A short human description (logs, errors)."""
        if self.kind == CHOICE:
            return f"one of {len(self.choices or [])} choices"
        return {JSON_SCHEMA: "a JSON schema", JSON_OBJECT: "a JSON object", REGEX: "a regex",
                GRAMMAR: "a grammar"}[self.kind]


def _bounded(kind: str, text: str) -> str:
    if len(text) > MAX_SOURCE_CHARS:
        raise GenerationSettingsError(f"{kind} is {len(text)} characters; at most {MAX_SOURCE_CHARS} are accepted")
    return text


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["Constraint", "KINDS", "JSON_SCHEMA", "JSON_OBJECT", "CHOICE", "REGEX", "GRAMMAR"]
