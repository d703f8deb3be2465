"""The generation options ortgen understands, and the one check every value goes through.

The API (``Generator.generate`` / ``submit``), the CLI, the HTTP server and the package's own
defaults (``generation_defaults`` in ``ortgen.json``, from the checkpoint's
``generation_config.json``) all check a value with :func:`check_option`, so an option means the
same thing and is refused with the same words wherever it comes from. The message names the
option, the value, and what is allowed. Options that combine (``min_new_tokens`` against
``max_new_tokens``, ``num_return_sequences`` against ``num_beams``) are checked where they are
resolved together (:mod:`ortgen.runtime.settings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ortgen.errors import GenerationSettingsError
from ortgen.package.fields import is_int, is_number

MAX_BEAMS = 128  # ONNX Runtime's BeamSearch limit; the engine follows it too
MAX_SEED = 2**63 - 1
MAX_LOGPROBS = 20  # the OpenAI API's limit for `logprobs`
MAX_STOP_STRINGS = 64  # the OpenAI API allows 4; matching costs the same for 1 or 64 (runtime/stop_matcher.py)
MAX_STOP_STRING_CHARS = 256
STRATEGIES = ("beam", "greedy", "sample")
BACKENDS = ("auto", "graph", "engine")
EARLY_STOPPING_VALUES = (True, False, "never")


@dataclass(frozen=True)
class Option:
    """One option: its check (returns the normalised value, or None when invalid) and the words
    that say what is allowed."""

    name: str
    allowed: str
    check: Callable[[Any], Any]
    help: str = ""


_INVALID = object()


def _int_range(minimum: int, maximum: int | None = None) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
            return _INVALID
        return int(value)
    return check


def _float_check(low: float | None = None, *, low_open: bool = True, high: float | None = None
                 ) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not is_number(value):
            return _INVALID
        value = float(value)
        if low is not None and (value <= low if low_open else value < low):
            return _INVALID
        if high is not None and value > high:
            return _INVALID
        return value
    return check


def _bool(value: Any) -> Any:
    return value if isinstance(value, bool) else _INVALID


def _choice(choices: tuple) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        for choice in choices:  # `True == 1`: compare types too
            if value == choice and type(value) is type(choice):
                return choice
        return _INVALID
    return check


def _token_lists(value: Any) -> Any:
    if not isinstance(value, (list, tuple)) or not value:
        return _INVALID
    out = []
    for seq in value:
        if not isinstance(seq, (list, tuple)) or not seq or not all(is_int(t) and t >= 0 for t in seq):
            return _INVALID
        out.append([int(t) for t in seq])
    return out


def _token_ids(value: Any) -> Any:
    if is_int(value) and value >= 0:
        return [int(value)]
    if isinstance(value, (list, tuple)) and value and all(is_int(t) and t >= 0 for t in value):
        return [int(t) for t in value]
    return _INVALID


def _strings(value: Any) -> Any:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(s, str) and s for s in value):
        return _INVALID
    if len(value) > MAX_STOP_STRINGS or any(len(s) > MAX_STOP_STRING_CHARS for s in value):
        return _INVALID
    return list(value)


OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("strategy", "one of 'beam', 'greedy', 'sample'", _choice(STRATEGIES),
           "shorthand for num_beams / do_sample"),
    Option("do_sample", "true or false", _bool, "sample instead of picking the most likely tokens"),
    Option("num_beams", f"an integer in [1, {MAX_BEAMS}]", _int_range(1, MAX_BEAMS), "beam width; 1: no beam search"),
    Option("max_new_tokens", "an integer >= 0 (0: score the prompt only, with prompt_logprobs)", _int_range(0),
           "tokens to generate at most"),
    Option("max_length", "an integer >= 1", _int_range(1),
           "prompt + new tokens at most (max_new_tokens wins when both are set)"),
    Option("min_new_tokens", "an integer >= 0", _int_range(0), "EOS is suppressed until this many new tokens"),
    Option("min_length", "an integer >= 0", _int_range(0), "EOS is suppressed until prompt + new tokens reach this"),
    Option("num_return_sequences", "an integer >= 1", _int_range(1), "sequences returned per prompt"),
    Option("length_penalty", "a finite number", _float_check(), "beam score = logprob sum / length ** length_penalty"),
    Option("repetition_penalty", "a finite number > 0", _float_check(0.0), "> 1 discourages repeated tokens"),
    Option("no_repeat_ngram_size", "an integer >= 0", _int_range(0), "ban repeating an n-gram of this size"),
    Option("bad_words_ids", "a non-empty list of non-empty lists of token ids", _token_lists,
           "token sequences never to generate"),
    Option("eos_token_id", "a token id or a non-empty list of token ids", _token_ids, "token id(s) that end a sequence"),
    Option("stop_strings", f"a non-empty string or a list of at most {MAX_STOP_STRINGS} non-empty strings of at "
                           f"most {MAX_STOP_STRING_CHARS} characters", _strings, "text that ends a sequence"),
    Option("early_stopping", "true, false or 'never'", _choice(EARLY_STOPPING_VALUES),
           "beam search: when to stop searching"),
    Option("temperature", "a finite number > 0", _float_check(0.0), "sampling temperature"),
    Option("top_k", "an integer >= 0", _int_range(0), "sampling: keep the k most likely tokens (0: off)"),
    Option("top_p", "a number in (0, 1]", _float_check(0.0, high=1.0), "sampling: nucleus filtering"),
    Option("seed", f"an integer in [0, {MAX_SEED}]", _int_range(0, MAX_SEED), "sampling seed (reproducible)"),
    Option("prompt_logprobs", f"an integer in [0, {MAX_LOGPROBS}]", _int_range(0, MAX_LOGPROBS),
           "per prompt token: its log-probability given the tokens before it, and the top N alternatives'"),
    Option("logprobs", f"an integer in [0, {MAX_LOGPROBS}]", _int_range(0, MAX_LOGPROBS),
           "return the chosen token's log-probability and the top N alternatives'"),
    Option("backend", "one of 'auto', 'graph', 'engine'", _choice(BACKENDS),
           "auto: the step engine; graph: ONNX Runtime's generation operators"),
)}

# generation_config.json keys a package carries as its defaults
DEFAULT_KEYS = (
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_return_sequences",
    "length_penalty", "repetition_penalty", "do_sample", "temperature", "top_p", "top_k", "early_stopping",
    "no_repeat_ngram_size", "bad_words_ids",
)


def check_option(name: str, value: Any) -> Any:
    """``value`` normalised (lists for token ids and strings), or a GenerationSettingsError naming
    the option, the value and what is allowed."""
    option = OPTIONS.get(name)
    if option is None:
        raise GenerationSettingsError(f"unknown generation option {name!r}; allowed: {', '.join(OPTIONS)}")
    checked = option.check(value)
    if checked is _INVALID:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise GenerationSettingsError(f"{name} must be {option.allowed}, got {shown}")
    return checked


def check_token_ids_in_vocab(name: str, ids: list[int], vocab_size: int) -> None:
    """Token ids must index the model's vocabulary."""
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise GenerationSettingsError(
            f"{name} contains token id {bad[0]}, outside the vocabulary [0, {vocab_size})")


@dataclass(frozen=True)
class GenerationDefaults:
    """A package's generation defaults: checked values, applied where a request leaves an option unset."""

    values: Mapping[str, Any]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "generation_defaults",
                  source: str = "ortgen.json") -> "GenerationDefaults":
        from ortgen.errors import PackageError

        values: dict[str, Any] = {}
        for name, value in data.items():
            if name not in DEFAULT_KEYS:
                raise PackageError(f"{source}: {where}.{name} is not a generation default ortgen reads; "
                                   f"allowed: {', '.join(DEFAULT_KEYS)}")
            if value is None:
                continue
            try:
                values[name] = check_option(name, value)
            except GenerationSettingsError as exc:
                raise PackageError(f"{source}: {where}.{exc}") from None
        return cls(values)

    @classmethod
    def from_generation_config(cls, config: Mapping[str, Any]) -> "GenerationDefaults":
        """The subset of a checkpoint's generation_config.json that generation uses."""
        return cls.from_dict({k: config[k] for k in DEFAULT_KEYS if k in config},
                             where="generation_config.json", source="the checkpoint")

    def get(self, name: str, default: Any = None) -> Any:
        return self.values.get(name, default)

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def __bool__(self) -> bool:
        return bool(self.values)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.values)
