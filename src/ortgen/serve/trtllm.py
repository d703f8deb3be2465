"""The TensorRT-LLM ensemble's input names, as ortgen generation options.

Clients written for TensorRT-LLM's Triton ensemble send ``text_input`` and optional
``max_tokens``, ``beam_width``, ``num_return_sequences``, ``temperature``, ``top_k``, ``top_p``,
``length_penalty``, ``repetition_penalty``, ``min_length``, ``random_seed``, ``stop_words`` (and
``stream``), and read ``text_output``. ``ortgen serve``'s KServe routes and the Triton model
repositories (:mod:`ortgen.triton`) take the same names, through :func:`settings_to_options`.
No web framework, no torch: Triton's python-backend models import it too.

Which search runs (as in ``ortgen serve``'s OpenAI route): a beam width > 1 is beam search,
temperature 0 greedy search, any sampling setting (temperature > 0, top_k, top_p, random_seed)
sampling with top-k off unless given, nothing set the package's defaults. ``min_length`` counts
new tokens, as TensorRT-LLM counts it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ortgen.errors import GenerationSettingsError

# name -> (KServe / Triton datatype, what it sets)
SETTINGS: dict[str, tuple[str, str]] = {
    "max_tokens": ("INT32", "new tokens at most"),
    "beam_width": ("INT32", "beam search width (1: greedy or sampling)"),
    "num_return_sequences": ("INT32", "sequences per prompt"),
    "temperature": ("FP32", "sampling temperature (0: greedy)"),
    "top_k": ("INT32", "sampling: the k most likely tokens (0: off)"),
    "top_p": ("FP32", "sampling: nucleus filtering"),
    "length_penalty": ("FP32", "beam score = logprob sum / length ** length_penalty"),
    "repetition_penalty": ("FP32", "> 1 discourages repeated tokens"),
    "min_length": ("INT32", "EOS is suppressed until this many new tokens"),
    "random_seed": ("UINT64", "sampling seed"),
    "stop_words": ("BYTES", "text that ends a sequence"),
    "no_repeat_ngram_size": ("INT32", "ban repeating an n-gram of this size"),
    "early_stopping": ("BOOL", "beam search: stop once num_beams hypotheses finished"),
    "guided_decoding_guide_type": ("BYTES", "structured output: json (any object), json_schema, regex, ebnf_grammar "
                                            "(Lark or GBNF) or choice"),
    "guided_decoding_guide": ("BYTES", "the JSON schema, regex, grammar, or choices (a JSON list of strings)"),
}
# TensorRT-LLM's guide types -> ortgen's constraint kinds (choice is ortgen's own)
GUIDE_TYPES = {"json": "json_object", "json_schema": "json_schema", "regex": "regex", "ebnf_grammar": "grammar",
               "choice": "choice"}
STREAM = "stream"  # BOOL: stream the output (decoupled models, generate_stream)
# Generator option -> the TensorRT-LLM name a client sent, where they differ
WIRE_NAMES = {"num_beams": "beam_width", "max_new_tokens": "max_tokens", "min_new_tokens": "min_length",
              "seed": "random_seed"}
_OPTION_NAME = re.compile(r"\b(" + "|".join(WIRE_NAMES) + r")\b")


def in_wire_names(message: str) -> str:
    """An error message about Generator options, naming them as the client sent them
    ("beam_width (num_beams) must be ...")."""
    return _OPTION_NAME.sub(lambda m: f"{WIRE_NAMES[m.group(1)]} ({m.group(1)})", message)


def settings_to_options(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (TensorRT-LLM names; ``None`` means unset) -> ``Generator.submit`` options.
    Raises GenerationSettingsError for names it does not know, listing the ones it does."""
    values = {k: v for k, v in values.items() if v is not None}
    unknown = sorted(set(values) - set(SETTINGS) - {STREAM})
    if unknown:
        raise GenerationSettingsError(f"unknown setting(s) {', '.join(unknown)}; allowed: {', '.join(SETTINGS)}")
    options: dict[str, Any] = {}
    beams = values.get("beam_width")
    sampling = {k: values[k] for k in ("temperature", "top_k", "top_p", "random_seed") if k in values}
    if beams is not None and beams > 1:
        options["num_beams"] = beams
    elif values.get("temperature") == 0:
        options["do_sample"] = False
    elif sampling:
        options["do_sample"] = True
        options["top_k"] = sampling.get("top_k", 0)
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("seed", "random_seed")):
            if theirs in sampling:
                options[ours] = sampling[theirs]
    for ours, theirs in (("max_new_tokens", "max_tokens"), ("num_return_sequences", "num_return_sequences"),
                         ("length_penalty", "length_penalty"), ("repetition_penalty", "repetition_penalty"),
                         ("min_new_tokens", "min_length"), ("no_repeat_ngram_size", "no_repeat_ngram_size"),
                         ("early_stopping", "early_stopping")):
        if theirs in values:
            options[ours] = values[theirs]
    stops = values.get("stop_words")
    if stops:
        options["stop_strings"] = [stops] if isinstance(stops, str) else [s for s in stops if s]
    constraint = guided_decoding(values.get("guided_decoding_guide_type"), values.get("guided_decoding_guide"))
    if constraint is not None:
        options["constraint"] = constraint
    return options


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)


def guided_decoding(guide_type: Any, guide: Any) -> dict[str, Any] | None:
    """TensorRT-LLM's ``guided_decoding_guide_type`` / ``guided_decoding_guide`` as a constraint (its
    :meth:`~ortgen.runtime.constraint.Constraint.parse` form); None when neither is set."""
    if guide_type is None and guide is None:
        return None
    kind = GUIDE_TYPES.get(_text(guide_type)) if guide_type is not None else None
    if kind is None:
        raise GenerationSettingsError(f"guided_decoding_guide_type must be one of {', '.join(GUIDE_TYPES)}, got "
                                      f"{guide_type!r}")
    if kind == "json_object":
        return {"json_object": True}
    if guide is None or not _text(guide).strip():
        raise GenerationSettingsError(f"guided_decoding_guide_type {_text(guide_type)!r} needs guided_decoding_guide "
                                      "(the schema, regex, grammar or choices)")
    text = _text(guide)
    if kind == "choice":
        try:
            return {"choice": json.loads(text)}
        except json.JSONDecodeError:
            raise GenerationSettingsError("guided_decoding_guide for 'choice' must be a JSON list of strings") from None
    return {kind: text}
