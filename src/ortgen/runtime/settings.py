"""Generation settings: what a caller may ask for, checked before anything runs.

:func:`resolve_settings` turns the caller's (partly unset) :class:`GenerationRequest`
plus the package's defaults into concrete :class:`GenerationSettings`, or raises a
:class:`~ortgen.errors.GenerationSettingsError` that says what is wrong and what is
allowed, in the cases where transformers' ``generate()`` raises (our words, same rules).
Semantics follow transformers: ``num_beams == 1`` is greedy search (or sampling), lengths
count new tokens, ``min_new_tokens`` suppresses EOS until reached, sampling defaults to
``top_k=50`` as transformers' does.

Which backend runs a request (the in-graph operators or the step engine) is decided
separately, by :mod:`ortgen.runtime.backend`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

from ortgen.errors import GenerationSettingsError

DEFAULT_MAX_NEW_TOKENS = 32
MAX_BEAMS = 128  # ONNX Runtime's BeamSearch limit (the engine follows it too)
MAX_TOTAL_LENGTH = 4096  # ONNX Runtime's max_length limit

GREEDY, SAMPLE, BEAM, BEAM_SAMPLE = "greedy", "sample", "beam", "beam_sample"
REQUESTABLE_STRATEGIES = ("beam", "greedy", "sample")
BACKENDS = ("auto", "graph", "engine")


@dataclass(frozen=True)
class GenerationRequest:
    """What the caller asked for; ``None`` means "use the package default"."""

    strategy: str | None = None  # "beam", "greedy" or "sample" (shorthand for num_beams / do_sample)
    do_sample: bool | None = None
    num_beams: int | None = None
    max_new_tokens: int | None = None
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
    backend: str | None = None  # "auto" (default), "graph" (in-graph operators) or "engine"


@dataclass(frozen=True)
class GenerationSettings:
    """Concrete settings for one generate() call."""

    strategy: str  # greedy, sample, beam, beam_sample
    num_beams: int
    max_new_tokens: int
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

    @property
    def do_sample(self) -> bool:
        return self.strategy in (SAMPLE, BEAM_SAMPLE)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GenerationSettingsError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise GenerationSettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise GenerationSettingsError(f"{name} must be a number, got {value!r}")
    return float(value)


def _pick(request: GenerationRequest, defaults: Mapping[str, Any], name: str, fallback: Any) -> Any:
    value = getattr(request, name)
    if value is None:
        value = defaults.get(name)
    return fallback if value is None else value


def _token_lists(name: str, value: Any) -> list[list[int]]:
    if not isinstance(value, (list, tuple)) or not value or not all(
        isinstance(seq, (list, tuple)) and seq and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                       for t in seq) for seq in value):
        raise GenerationSettingsError(f"{name} must be a non-empty list of non-empty lists of token ids, got {value!r}")
    return [list(seq) for seq in value]


def _strategy(request: GenerationRequest, defaults: Mapping[str, Any]) -> tuple[bool, int | None]:
    """(do_sample, num_beams as requested) from strategy / do_sample / sampling options."""
    if request.strategy is not None and request.strategy not in REQUESTABLE_STRATEGIES:
        raise GenerationSettingsError(
            f"strategy must be one of {', '.join(REQUESTABLE_STRATEGIES)}, got {request.strategy!r}")
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
        return bool(request.do_sample), beams
    sampling_options = [n for n in ("temperature", "top_k", "top_p", "seed") if getattr(request, n) is not None]
    if sampling_options and request.strategy is None:
        return True, beams  # a sampling option implies sampling (transformers would warn and ignore it)
    if request.strategy == "beam":
        return False, beams
    return bool(defaults.get("do_sample", False)), beams


def resolve_settings(request: GenerationRequest, defaults: Mapping[str, Any], eos_token_ids: Sequence[int] = ()
                     ) -> GenerationSettings:
    """Fill unset fields from the package and check that the result can run."""
    do_sample, beams = _strategy(request, defaults)
    num_beams = _int("num_beams", beams if beams is not None else int(defaults.get("num_beams") or 1), 1)
    if num_beams > MAX_BEAMS:
        raise GenerationSettingsError(f"num_beams must be <= {MAX_BEAMS}, got {num_beams}")
    if request.strategy == "greedy" and num_beams > 1:
        raise GenerationSettingsError(f"strategy='greedy' needs num_beams=1, got {num_beams}")
    strategy = (BEAM_SAMPLE if do_sample else BEAM) if num_beams > 1 else (SAMPLE if do_sample else GREEDY)
    if not do_sample:
        given = [n for n in ("temperature", "top_k", "top_p", "seed") if getattr(request, n) is not None]
        if given:
            raise GenerationSettingsError(f"{', '.join(given)} apply to sampling only; this request uses "
                                          f"{'beam' if num_beams > 1 else 'greedy'} search (set do_sample=True)")

    max_new = _int("max_new_tokens", _pick(request, defaults, "max_new_tokens", DEFAULT_MAX_NEW_TOKENS), 1)
    min_new = _int("min_new_tokens", _pick(request, defaults, "min_new_tokens", 0), 0)
    if min_new > max_new:
        raise GenerationSettingsError(f"min_new_tokens ({min_new}) must not exceed max_new_tokens ({max_new})")
    min_length = _int("min_length", _pick(request, defaults, "min_length", 0), 0)

    nrs = _int("num_return_sequences", _pick(request, defaults, "num_return_sequences", 1), 1)
    if num_beams > 1 and nrs > num_beams:
        raise GenerationSettingsError(
            f"num_return_sequences ({nrs}) must be <= num_beams ({num_beams}): beam search returns its best beams")
    if num_beams == 1 and not do_sample and nrs > 1:
        raise GenerationSettingsError(
            f"greedy search returns one sequence per prompt; num_return_sequences={nrs} needs num_beams >= {nrs} "
            "or sampling")

    length_penalty = _float("length_penalty", _pick(request, defaults, "length_penalty", 1.0))
    repetition_penalty = _float("repetition_penalty", _pick(request, defaults, "repetition_penalty", 1.0))
    if repetition_penalty <= 0:
        raise GenerationSettingsError(f"repetition_penalty must be > 0, got {repetition_penalty}")
    ngram = _int("no_repeat_ngram_size", _pick(request, defaults, "no_repeat_ngram_size", 0), 0)

    temperature, top_p, top_k = 1.0, 1.0, 0
    if do_sample:
        temperature = _float("temperature", _pick(request, defaults, "temperature", 1.0))
        if temperature <= 0:
            raise GenerationSettingsError(f"temperature must be > 0 (for greedy decoding use do_sample=False), "
                                          f"got {temperature}")
        top_p = _float("top_p", _pick(request, defaults, "top_p", 1.0))
        if not 0 < top_p <= 1:
            raise GenerationSettingsError(f"top_p must be in (0, 1], got {top_p}")
        top_k = _int("top_k", _pick(request, defaults, "top_k", 50), 0)
    seed = None if request.seed is None else _int("seed", request.seed, 0)

    early_stopping = _pick(request, defaults, "early_stopping", False)
    if early_stopping not in (True, False, "never"):
        raise GenerationSettingsError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")

    bad_words = []
    bad_words_value = _pick(request, defaults, "bad_words_ids", None)
    if bad_words_value is not None:
        bad_words = _token_lists("bad_words_ids", bad_words_value)
    eos_value = request.eos_token_id if request.eos_token_id is not None else list(eos_token_ids)
    eos_list = [eos_value] if isinstance(eos_value, int) else list(eos_value)
    if not eos_list or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in eos_list):
        raise GenerationSettingsError(f"eos_token_id must be a token id or a non-empty list of them, got {eos_value!r}")
    stops = request.stop_strings
    stop_list = [stops] if isinstance(stops, str) else list(stops or [])
    if any(not isinstance(s, str) or not s for s in stop_list):
        raise GenerationSettingsError(f"stop_strings must be non-empty strings, got {stops!r}")
    backend = request.backend or "auto"
    if backend not in BACKENDS:
        raise GenerationSettingsError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")

    return GenerationSettings(
        strategy=strategy, num_beams=num_beams, max_new_tokens=max_new, min_new_tokens=min_new,
        num_return_sequences=nrs, length_penalty=length_penalty, repetition_penalty=repetition_penalty,
        temperature=temperature, top_p=top_p, seed=seed,
        early_stopping=early_stopping if num_beams > 1 else False,
        top_k=top_k, min_length=min_length, no_repeat_ngram_size=ngram, bad_words_ids=bad_words,
        eos_token_ids=eos_list, stop_strings=stop_list, backend=backend,
    )


def check_lengths(settings: GenerationSettings, prompt_length: int, max_positions: int) -> None:
    """The padded prompt plus the new tokens must fit the model's positions."""
    from ortgen.errors import PromptTooLongError

    total = prompt_length + settings.max_new_tokens
    limit = min(max_positions, MAX_TOTAL_LENGTH)
    if total > limit:
        room = limit - prompt_length
        hint = f"at most {room} new tokens fit" if room > 0 else "shorten the prompt"
        raise PromptTooLongError(
            f"a prompt of {prompt_length} tokens plus max_new_tokens={settings.max_new_tokens} needs {total} "
            f"positions; the model has {limit} ({hint})"
        )


__all__ = ["GenerationRequest", "GenerationSettings", "resolve_settings", "check_lengths", "replace",
           "GREEDY", "SAMPLE", "BEAM", "BEAM_SAMPLE", "BACKENDS"]
