"""Generation settings: what a caller may ask for, checked before anything runs.

:func:`resolve_settings` turns the caller's (partly unset) :class:`GenerationRequest`
plus the package's defaults into concrete :class:`GenerationSettings`, or raises a
:class:`~ortgen.errors.GenerationSettingsError` that says what is wrong and what is
allowed. Semantics follow transformers' ``generate()``: ``num_beams == 1`` is greedy
search, lengths count new tokens, ``min_new_tokens`` suppresses EOS until reached.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping

from ortgen.contract import BEAM, GREEDY, SAMPLE, STRATEGIES
from ortgen.errors import GenerationSettingsError

DEFAULT_MAX_NEW_TOKENS = 32
MAX_BEAMS = 128  # ONNX Runtime's BeamSearch limit
MAX_TOTAL_LENGTH = 4096  # ONNX Runtime's max_length limit


@dataclass(frozen=True)
class GenerationRequest:
    """What the caller asked for; ``None`` means "use the package default"."""

    strategy: str | None = None
    num_beams: int | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    num_return_sequences: int | None = None
    length_penalty: float | None = None
    repetition_penalty: float | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    early_stopping: bool | str | None = None


@dataclass(frozen=True)
class GenerationSettings:
    """Concrete settings for one generate() call."""

    strategy: str
    num_beams: int
    max_new_tokens: int
    min_new_tokens: int
    num_return_sequences: int
    length_penalty: float
    repetition_penalty: float
    temperature: float
    top_p: float
    seed: int | None
    early_stopping: bool = False

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


def resolve_settings(
    request: GenerationRequest,
    defaults: Mapping[str, Any],
    sampling_graph: Mapping[str, Any] | None,
) -> GenerationSettings:
    """Fill unset fields from the package and check that the result can run.

    ``defaults`` is the package's generation_config subset; ``sampling_graph`` holds the
    temperature and top_p the package's Sampling graph was exported with (None if the
    package has no sampling graph).
    """
    strategy = request.strategy
    if strategy is not None and strategy not in STRATEGIES:
        raise GenerationSettingsError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    wants_sampling = any(v is not None for v in (request.temperature, request.top_p, request.seed))
    if strategy is None:
        if wants_sampling or (request.num_beams is None and defaults.get("do_sample")):
            strategy = SAMPLE
        else:
            beams = request.num_beams if request.num_beams is not None else defaults.get("num_beams", 1)
            strategy = BEAM if beams and beams > 1 else GREEDY
    if strategy != SAMPLE and wants_sampling:
        given = [n for n in ("temperature", "top_p", "seed") if getattr(request, n) is not None]
        raise GenerationSettingsError(f"{', '.join(given)} apply to sampling only; this request uses {strategy} search")

    num_beams = request.num_beams
    if num_beams is None:
        num_beams = int(defaults.get("num_beams", 1)) if strategy == BEAM else 1
        if strategy == BEAM and num_beams < 2:
            num_beams = 4
    num_beams = _int("num_beams", num_beams, 1)
    if num_beams > MAX_BEAMS:
        raise GenerationSettingsError(f"num_beams must be <= {MAX_BEAMS} (ONNX Runtime's limit), got {num_beams}")
    if strategy == SAMPLE and num_beams > 1:
        raise GenerationSettingsError(
            "beam sampling (num_beams > 1 with sampling) is not available in ONNX Runtime's operators; "
            "use num_beams=1 to sample or drop the sampling options for beam search"
        )
    if strategy == BEAM and num_beams == 1:
        strategy = GREEDY  # as in transformers: one beam is greedy search

    max_new = request.max_new_tokens
    if max_new is None:
        max_new = defaults.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
    max_new = _int("max_new_tokens", max_new, 1)
    min_new = request.min_new_tokens if request.min_new_tokens is not None else defaults.get("min_new_tokens", 0)
    min_new = _int("min_new_tokens", min_new or 0, 0)
    if min_new > max_new:
        raise GenerationSettingsError(f"min_new_tokens ({min_new}) must not exceed max_new_tokens ({max_new})")

    nrs = request.num_return_sequences
    if nrs is None:
        nrs = int(defaults.get("num_return_sequences", 1))
    nrs = _int("num_return_sequences", nrs, 1)
    if strategy == BEAM and nrs > num_beams:
        raise GenerationSettingsError(
            f"num_return_sequences ({nrs}) must be <= num_beams ({num_beams}): beam search returns its best beams"
        )
    if strategy == GREEDY and nrs > 1:
        raise GenerationSettingsError(
            f"greedy search returns one sequence per prompt; num_return_sequences={nrs} needs num_beams >= {nrs} "
            "or sampling"
        )

    length_penalty = _float("length_penalty", request.length_penalty if request.length_penalty is not None
                            else defaults.get("length_penalty", 1.0))
    repetition_penalty = _float("repetition_penalty", request.repetition_penalty if request.repetition_penalty
                                is not None else defaults.get("repetition_penalty", 1.0))
    if repetition_penalty <= 0:
        raise GenerationSettingsError(f"repetition_penalty must be > 0, got {repetition_penalty}")

    temperature, top_p = 1.0, 1.0
    if strategy == SAMPLE:
        if sampling_graph is None:
            raise GenerationSettingsError("this package has no sampling graph")
        fixed_t, fixed_p = float(sampling_graph["temperature"]), float(sampling_graph["top_p"])
        temperature = _float("temperature", request.temperature) if request.temperature is not None else fixed_t
        top_p = _float("top_p", request.top_p) if request.top_p is not None else fixed_p
        if temperature <= 0:
            raise GenerationSettingsError(f"temperature must be > 0, got {temperature}")
        if not 0 < top_p <= 1:
            raise GenerationSettingsError(f"top_p must be in (0, 1], got {top_p}")
        if (temperature, top_p) != (fixed_t, fixed_p):
            raise GenerationSettingsError(
                f"this package's Sampling graph was exported with temperature={fixed_t:g}, top_p={fixed_p:g} "
                f"(ONNX Runtime fixes them in the graph); to sample with temperature={temperature:g}, "
                f"top_p={top_p:g}, re-export with `ortgen export --temperature {temperature:g} --top-p {top_p:g}`"
            )
    seed = None
    if request.seed is not None:
        seed = _int("seed", request.seed, 0)
    early_stopping = request.early_stopping
    if early_stopping is None:
        early_stopping = defaults.get("early_stopping", False)
    if early_stopping == "never":
        raise GenerationSettingsError(
            "early_stopping='never' is not available in ONNX Runtime's BeamSearch operator; use True or False"
        )
    if not isinstance(early_stopping, bool):
        raise GenerationSettingsError(f"early_stopping must be True, False or 'never', got {early_stopping!r}")

    return GenerationSettings(
        strategy=strategy,
        num_beams=num_beams,
        max_new_tokens=max_new,
        min_new_tokens=min_new,
        num_return_sequences=nrs,
        length_penalty=length_penalty,
        repetition_penalty=repetition_penalty,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        early_stopping=early_stopping and strategy == BEAM,
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


__all__ = ["GenerationRequest", "GenerationSettings", "resolve_settings", "check_lengths", "replace"]
