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
}
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
    return options
