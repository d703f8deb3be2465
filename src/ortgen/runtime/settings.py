"""Generation settings: what a caller may ask for, checked before anything runs.

:func:`resolve_settings` turns the caller's (partly unset) :class:`GenerationRequest` plus the
package's defaults into concrete :class:`GenerationSettings`, or raises a
:class:`~ortgen.errors.GenerationSettingsError` that names the setting, the value and what is
allowed. Every single value goes through :func:`ortgen.package.generation_options.check_option`
(the API, the CLI and the server share it; so do the package's defaults when the manifest is
read); this module adds the rules that involve several options and the model (token ids inside
the vocabulary, lengths inside the model's positions).

Semantics follow transformers: ``num_beams == 1`` is greedy search (or sampling), lengths count
new tokens unless ``max_length`` (prompt + new) governs, ``max_new_tokens`` wins over
``max_length``, a value given in the call wins over the package default, ``min_new_tokens``
suppresses EOS until reached, sampling defaults to ``top_k=50`` as transformers' does.

Which backend runs a request (the in-graph operators or the step engine) is decided
separately, by :mod:`ortgen.runtime.backend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

from ortgen.errors import GenerationSettingsError, PromptTooLongError
from ortgen.runtime.constraint import Constraint
from ortgen.package.generation_options import (
    BACKENDS,
    MAX_BEAMS,
    OPTIONS,
    check_option,
    check_token_ids_in_vocab,
)

DEFAULT_MAX_NEW_TOKENS = 32
MAX_TOTAL_LENGTH = 4096  # ONNX Runtime's max_length limit

GREEDY, SAMPLE, BEAM, BEAM_SAMPLE = "greedy", "sample", "beam", "beam_sample"
SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "seed")


@dataclass(frozen=True)
class GenerationRequest:
    """What the caller asked for; ``None`` means "use the package default"."""

    strategy: str | None = None  # "beam", "greedy" or "sample" (shorthand for num_beams / do_sample)
    do_sample: bool | None = None
    num_beams: int | None = None
    max_new_tokens: int | None = None
    max_length: int | None = None  # prompt + new tokens (transformers' name); max_new_tokens wins
    min_new_tokens: int | None = None
    min_length: int | None = None
    num_return_sequences: int | None = None
    length_penalty: float | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    bad_words_ids: Sequence[Sequence[int]] | None = None
    eos_token_id: int | Sequence[int] | None = None
    stop_strings: str | Sequence[str] | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    early_stopping: bool | str | None = None
    logprobs: int | None = None  # per generated token: its log-probability and the top N alternatives'
    prompt_logprobs: int | None = None  # per prompt token (after the first): the same, given the tokens before it
    backend: str | None = None  # "auto" (default), "graph" (in-graph operators) or "engine"
    # structured output: a Constraint, or {"json_schema": ...} / {"json_object": True} / {"choice": [...]} /
    # {"regex": ...} / {"grammar": ...} (ortgen.runtime.constraint)
    constraint: Constraint | Mapping[str, Any] | None = None

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> "GenerationRequest":
        """A request from keyword options, each checked (unknown names refused, with the allowed ones)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise GenerationSettingsError(
                f"unknown generation option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
        return cls(**options)  # values are checked by resolve_settings


@dataclass(frozen=True)
class GenerationSettings:
    """Concrete settings for one request."""

    strategy: str  # greedy, sample, beam, beam_sample
    num_beams: int
    max_new_tokens: int | None  # None: max_length (prompt + new tokens) governs, see new_tokens()
    min_new_tokens: int
    num_return_sequences: int
    length_penalty: float
    repetition_penalty: float
    temperature: float
    top_p: float
    seed: int | None
    early_stopping: bool | str = False
    top_k: int = 0
    min_length: int = 0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list[list[int]] = field(default_factory=list)
    eos_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    backend: str = "auto"
    max_length: int | None = None
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    constraint: Constraint | None = None

    @property
    def do_sample(self) -> bool:
        return self.strategy in (SAMPLE, BEAM_SAMPLE)

    @property
    def width(self) -> int:
        """Sequences that run side by side for one prompt: beams, or samples."""
        return self.num_beams if self.num_beams > 1 else self.num_return_sequences

    def new_tokens(self, prompt_length: int) -> int:
        """How many tokens a prompt of ``prompt_length`` tokens may gain."""
        if self.max_new_tokens is not None:
            return self.max_new_tokens
        assert self.max_length is not None
        return self.max_length - prompt_length

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the constraint in its parse form)."""
        out = dict(self.__dict__)
        out["constraint"] = None if self.constraint is None else self.constraint.to_dict()
        return out


def _pick(request: GenerationRequest, defaults: Mapping[str, Any], name: str, fallback: Any) -> Any:
    value = getattr(request, name)
    if value is None:
        value = defaults.get(name)
    return fallback if value is None else check_option(name, value)


def _strategy(request: GenerationRequest, defaults: Mapping[str, Any]) -> tuple[bool, int | None]:
    """(do_sample, num_beams as requested) from strategy / do_sample / sampling options."""
    beams = request.num_beams
    if request.strategy == "beam" and beams is None:
        default_beams = int(defaults.get("num_beams") or 1)
        beams = default_beams if default_beams > 1 else 4
    if request.strategy == "greedy":
        if request.do_sample:
            raise GenerationSettingsError("strategy='greedy' contradicts do_sample=True")
        return False, 1 if beams is None else beams
    if request.strategy == "sample":
        if request.do_sample is False:
            raise GenerationSettingsError("strategy='sample' contradicts do_sample=False")
        return True, beams
    if request.do_sample is not None:
        return request.do_sample, beams
    if any(getattr(request, n) is not None for n in SAMPLING_OPTIONS) and request.strategy is None:
        return True, beams  # a sampling option implies sampling (transformers would warn and ignore it)
    if request.strategy == "beam":
        return False, beams
    return bool(defaults.get("do_sample", False)), beams


def _max_lengths(request: GenerationRequest, defaults: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(max_new_tokens, max_length): the call before the package, max_new_tokens before max_length."""
    if request.max_new_tokens is not None:
        return request.max_new_tokens, None
    if request.max_length is not None:
        return None, request.max_length
    if defaults.get("max_new_tokens") is not None:
        return check_option("max_new_tokens", defaults.get("max_new_tokens")), None
    if defaults.get("max_length") is not None:
        return None, check_option("max_length", defaults.get("max_length"))
    return DEFAULT_MAX_NEW_TOKENS, None


def resolve_settings(request: GenerationRequest, defaults: Mapping[str, Any], eos_token_ids: Sequence[int] = (),
                     vocab_size: int | None = None) -> GenerationSettings:
    """Fill unset fields from the package's defaults and check that the result can run.

    ``vocab_size``: when given, every token id in the settings must index the vocabulary."""
    constraint = None if request.constraint is None else Constraint.parse(request.constraint)
    request = GenerationRequest(**{f.name: None if getattr(request, f.name) is None or f.name == "constraint"
                                   else check_option(f.name, getattr(request, f.name)) for f in fields(request)})
    do_sample, beams = _strategy(request, defaults)
    num_beams = check_option("num_beams", beams if beams is not None else defaults.get("num_beams", 1))
    if request.strategy == "greedy" and num_beams > 1:
        raise GenerationSettingsError(f"strategy='greedy' needs num_beams=1, got {num_beams}")
    strategy = (BEAM_SAMPLE if do_sample else BEAM) if num_beams > 1 else (SAMPLE if do_sample else GREEDY)
    if not do_sample:
        given = [n for n in SAMPLING_OPTIONS if getattr(request, n) is not None]
        if given:
            raise GenerationSettingsError(f"{', '.join(given)} apply to sampling only; this request uses "
                                          f"{'beam' if num_beams > 1 else 'greedy'} search (set do_sample=True)")

    max_new, max_length = _max_lengths(request, defaults)
    if max_new == 0 and request.prompt_logprobs is None:
        raise GenerationSettingsError("max_new_tokens=0 generates nothing: it is for scoring a prompt, with "
                                      "prompt_logprobs (0 or more)")
    min_new = _pick(request, defaults, "min_new_tokens", 0)
    if max_new is not None and min_new > max_new:
        raise GenerationSettingsError(f"min_new_tokens ({min_new}) must not exceed max_new_tokens ({max_new})")
    min_length = _pick(request, defaults, "min_length", 0)

    nrs = _pick(request, defaults, "num_return_sequences", 1)
    if num_beams > 1 and nrs > num_beams:
        raise GenerationSettingsError(
            f"num_return_sequences ({nrs}) must be <= num_beams ({num_beams}): beam search returns its best beams")
    if num_beams == 1 and not do_sample and nrs > 1:
        raise GenerationSettingsError(
            f"greedy search returns one sequence per prompt; num_return_sequences={nrs} needs num_beams >= {nrs} "
            "or sampling")

    temperature, top_p, top_k = 1.0, 1.0, 0
    if do_sample:
        temperature = _pick(request, defaults, "temperature", 1.0)
        top_p = _pick(request, defaults, "top_p", 1.0)
        top_k = _pick(request, defaults, "top_k", 50)

    early_stopping = _pick(request, defaults, "early_stopping", False)
    eos_list = check_option("eos_token_id", request.eos_token_id if request.eos_token_id is not None
                            else list(eos_token_ids))
    bad_words = _pick(request, defaults, "bad_words_ids", [])
    if vocab_size is not None:
        check_token_ids_in_vocab("eos_token_id", eos_list, vocab_size)
        for word in bad_words:
            check_token_ids_in_vocab("bad_words_ids", word, vocab_size)

    return GenerationSettings(
        strategy=strategy, num_beams=num_beams, max_new_tokens=max_new, max_length=max_length,
        min_new_tokens=min_new, num_return_sequences=nrs,
        length_penalty=_pick(request, defaults, "length_penalty", 1.0),
        repetition_penalty=_pick(request, defaults, "repetition_penalty", 1.0),
        temperature=temperature, top_p=top_p, seed=request.seed,
        early_stopping=early_stopping if num_beams > 1 else False,
        top_k=top_k, min_length=min_length,
        no_repeat_ngram_size=_pick(request, defaults, "no_repeat_ngram_size", 0),
        bad_words_ids=bad_words, eos_token_ids=eos_list,
        stop_strings=[] if request.stop_strings is None else check_option("stop_strings", request.stop_strings),
        backend=request.backend or "auto", logprobs=request.logprobs, prompt_logprobs=request.prompt_logprobs,
        constraint=constraint,
    )


def check_lengths(settings: GenerationSettings, prompt_length: int, max_positions: int) -> int:
    """The prompt plus its new tokens must fit the model's positions; returns the new-token count."""
    limit = min(max_positions, MAX_TOTAL_LENGTH)
    if settings.min_length > limit:
        raise GenerationSettingsError(f"min_length must be <= {limit} (the model's positions: it could never be "
                                      f"reached), got {settings.min_length}")
    new = settings.new_tokens(prompt_length)
    if new < 1 and not (new == 0 and settings.prompt_logprobs is not None):
        raise PromptTooLongError(f"max_length={settings.max_length} leaves no room for new tokens after a prompt of "
                                 f"{prompt_length} tokens (max_length counts the prompt; or set max_new_tokens)")
    if settings.max_new_tokens is None and settings.min_new_tokens > new:
        raise GenerationSettingsError(f"min_new_tokens ({settings.min_new_tokens}) must not exceed the "
                                      f"{new} new tokens that max_length={settings.max_length} leaves")
    total = prompt_length + new
    if total > limit:
        room = limit - prompt_length
        hint = f"at most {room} new tokens fit" if room > 0 else "shorten the prompt"
        what = (f"max_new_tokens={settings.max_new_tokens}" if settings.max_new_tokens is not None
                else f"max_length={settings.max_length}")
        raise PromptTooLongError(
            f"a prompt of {prompt_length} tokens plus {what} needs {total} positions; the model has {limit} ({hint})"
        )
    return new


__all__ = ["GenerationRequest", "GenerationSettings", "resolve_settings", "check_lengths", "replace",
           "GREEDY", "SAMPLE", "BEAM", "BEAM_SAMPLE", "BACKENDS", "MAX_BEAMS", "OPTIONS"]
