"""Structured output's wire fields, as OpenAI and vLLM name them, turned into one ortgen constraint.

Accepted on ``/v1/completions`` and ``/v1/chat/completions`` (at most one of them per request):

- ``response_format``: ``{"type": "text"}`` (no constraint), ``{"type": "json_object"}``,
  ``{"type": "json_schema", "json_schema": {"name": ..., "schema": {...}, "strict": true}}`` (OpenAI);
- ``guided_json`` (a schema), ``guided_choice`` (strings), ``guided_regex``, ``guided_grammar``
  (Lark, or GBNF) (vLLM's extra_body fields);
- ``structured_outputs``: ``{"json": ..., "choice": [...], "regex": ..., "grammar": ..., "json_object": true}``
  (vLLM's newer form of the same).

KServe's generate endpoint and the Triton python model take ``constraint`` in the
:meth:`~ortgen.runtime.constraint.Constraint.parse` form (``{"json_schema": ...}`` ...).
"""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.errors import GenerationSettingsError
from ortgen.runtime.constraint import Constraint
from ortgen.serve.service import ServeError

GUIDED = {"guided_json": "json_schema", "guided_choice": "choice", "guided_regex": "regex",
          "guided_grammar": "grammar"}
STRUCTURED_OUTPUTS = {"json": "json_schema", "choice": "choice", "regex": "regex", "grammar": "grammar",
                      "json_object": "json_object"}
FIELDS = ("response_format", "structured_outputs", *GUIDED)


def _response_format(value: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = value.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    if kind == "json_schema":
        spec = value.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema", {}), Mapping):
            raise ServeError(400, "response_format json_schema needs json_schema: {name, schema: {...}}",
                             param="response_format")
        return {"json_schema": spec.get("schema") or {}}
    raise ServeError(400, f"response_format type must be 'text', 'json_object' or 'json_schema', got {kind!r}",
                     param="response_format")


def constraint_from_fields(fields: Mapping[str, Any]) -> Constraint | None:
    """The constraint the request's fields ask for (None: free text); a 400 naming the field when they
    are malformed or when several ask at once."""
    given = {name: fields[name] for name in FIELDS if fields.get(name) is not None}
    if "response_format" in given and _response_format(given["response_format"]) is None:
        del given["response_format"]  # {"type": "text"}
    if not given:
        return None
    if len(given) > 1:
        raise ServeError(400, f"{' and '.join(sorted(given))} each constrain the output: pass one",
                         param=sorted(given)[1])
    name, value = next(iter(given.items()))
    if name == "response_format":
        form = _response_format(value)
    elif name == "structured_outputs":
        if not isinstance(value, Mapping):
            raise ServeError(400, "structured_outputs must be an object with one of "
                                  f"{', '.join(STRUCTURED_OUTPUTS)}", param=name)
        unknown = sorted(set(value) - set(STRUCTURED_OUTPUTS))
        if unknown:
            raise ServeError(400, f"structured_outputs has unsupported field(s) {', '.join(unknown)}; supported: "
                                  f"{', '.join(STRUCTURED_OUTPUTS)}", param=name)
        form = {STRUCTURED_OUTPUTS[k]: v for k, v in value.items() if v is not None and v is not False}
    else:
        form = {GUIDED[name]: value}
    try:
        return Constraint.parse(form or {})
    except GenerationSettingsError as exc:
        raise ServeError(400, f"{name}: {exc}", param=name) from None


__all__ = ["FIELDS", "constraint_from_fields"]
