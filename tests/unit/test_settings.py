"""Generation settings: defaults, strategy inference and every rejected combination."""

from __future__ import annotations

import pytest

from ortgen.errors import GenerationSettingsError, PromptTooLongError
from ortgen.runtime.settings import GenerationRequest, check_lengths, resolve_settings


def resolve(defaults=None, **request):
    return resolve_settings(GenerationRequest(**request), defaults or {}, [2], vocab_size=300)


def test_defaults_are_greedy_with_32_new_tokens():
    s = resolve()
    assert (s.strategy, s.num_beams, s.max_new_tokens, s.min_new_tokens, s.num_return_sequences) == (
        "greedy", 1, 32, 0, 1)
    assert s.eos_token_ids == [2] and s.backend == "auto"


def test_package_defaults_apply():
    s = resolve({"num_beams": 5, "max_new_tokens": 40, "length_penalty": 0.5, "repetition_penalty": 1.2,
                 "no_repeat_ngram_size": 3})
    assert (s.strategy, s.num_beams, s.max_new_tokens, s.length_penalty, s.repetition_penalty,
            s.no_repeat_ngram_size) == ("beam", 5, 40, 0.5, 1.2, 3)


def test_strategy_inference():
    assert resolve(num_beams=4).strategy == "beam"
    assert resolve(num_beams=1).strategy == "greedy"
    assert resolve(seed=3).strategy == "sample"
    assert resolve(do_sample=True).strategy == "sample"
    assert resolve(do_sample=True, num_beams=3).strategy == "beam_sample"
    assert resolve(strategy="beam").num_beams == 4  # beam without a count gets 4
    assert resolve(strategy="beam", num_beams=1).strategy == "greedy"  # as in transformers
    assert resolve({"do_sample": True}).strategy == "sample"


def test_sampling_defaults_follow_transformers():
    s = resolve(do_sample=True)
    assert (s.top_k, s.top_p, s.temperature) == (50, 1.0, 1.0)
    assert resolve({"top_k": 10}, do_sample=True).top_k == 10
    assert resolve(do_sample=True, top_k=0).top_k == 0


def test_lists_and_strings():
    s = resolve(eos_token_id=[2, 7], bad_words_ids=[[5], [6, 7]], stop_strings="stop", early_stopping="never",
                num_beams=2)
    assert s.eos_token_ids == [2, 7] and s.bad_words_ids == [[5], [6, 7]] and s.stop_strings == ["stop"]
    assert s.early_stopping == "never"
    assert resolve(eos_token_id=9).eos_token_ids == [9]


@pytest.mark.parametrize(
    "request_, message",
    [
        (dict(num_beams=2, num_return_sequences=3), "num_return_sequences (3) must be <= num_beams (2)"),
        (dict(num_return_sequences=2), "greedy search returns one sequence"),
        (dict(max_new_tokens=0), "max_new_tokens=0 generates nothing: it is for scoring a prompt, with "
                                 "prompt_logprobs"),
        (dict(max_new_tokens=-5), "max_new_tokens must be an integer >= 0 (0: score the prompt only, with "
                                  "prompt_logprobs), got -5"),
        (dict(min_new_tokens=-1), "min_new_tokens must be an integer >= 0, got -1"),
        (dict(min_new_tokens=10, max_new_tokens=5), "min_new_tokens (10) must not exceed max_new_tokens (5)"),
        (dict(min_length=-3), "min_length must be an integer >= 0, got -3"),
        (dict(max_length=0), "max_length must be an integer >= 1, got 0"),
        (dict(num_beams=0), "num_beams must be an integer in [1, 128], got 0"),
        (dict(num_beams=129), "num_beams must be an integer in [1, 128], got 129"),
        (dict(num_beams="five"), "num_beams must be an integer in [1, 128], got 'five'"),
        (dict(repetition_penalty=0.0), "repetition_penalty must be a finite number > 0, got 0.0"),
        (dict(repetition_penalty=float("nan")), "repetition_penalty must be a finite number > 0, got nan"),
        (dict(repetition_penalty=float("inf")), "repetition_penalty must be a finite number > 0, got inf"),
        (dict(num_beams=2, length_penalty=float("nan")), "length_penalty must be a finite number, got nan"),
        (dict(do_sample=True, temperature=float("nan")), "temperature must be a finite number > 0, got nan"),
        (dict(do_sample="yes"), "do_sample must be true or false, got 'yes'"),
        (dict(strategy="nucleus"), "strategy must be one of 'beam', 'greedy', 'sample', got 'nucleus'"),
        (dict(strategy="beam", temperature=0.7), "apply to sampling only"),
        (dict(strategy="greedy", num_beams=3), "strategy='greedy' needs num_beams=1"),
        (dict(strategy="sample", top_p=0.0), "top_p must be a number in (0, 1], got 0.0"),
        (dict(strategy="sample", top_p=1.5), "top_p must be a number in (0, 1], got 1.5"),
        (dict(strategy="sample", temperature=0.0), "temperature must be a finite number > 0, got 0.0"),
        (dict(do_sample=True, top_k=-1), "top_k must be an integer >= 0, got -1"),
        (dict(max_new_tokens=2.5), "max_new_tokens must be an integer >= 0 (0: score the prompt only, with "
                                   "prompt_logprobs), got 2.5"),
        (dict(seed=-1), "seed must be an integer in [0, 9223372036854775807], got -1"),
        (dict(num_beams=2, early_stopping="sometimes"), "early_stopping must be true, false or 'never', got 'sometimes'"),
        (dict(num_beams=2, early_stopping=1), "early_stopping must be true, false or 'never', got 1"),
        (dict(no_repeat_ngram_size=-1), "no_repeat_ngram_size must be an integer >= 0, got -1"),
        (dict(bad_words_ids=[[]]), "bad_words_ids must be a non-empty list of non-empty lists of token ids"),
        (dict(bad_words_ids=[5]), "bad_words_ids must be a non-empty list of non-empty lists of token ids"),
        (dict(bad_words_ids=[[5, 99999]]), "bad_words_ids contains token id 99999, outside the vocabulary [0, 300)"),
        (dict(eos_token_id=[]), "eos_token_id must be a token id or a non-empty list of token ids"),
        (dict(eos_token_id=99999), "eos_token_id contains token id 99999, outside the vocabulary [0, 300)"),
        (dict(stop_strings=[""]), "stop_strings must be a non-empty string or a list of at most 64 non-empty strings "
                                  "of at most 256 characters"),
        (dict(stop_strings=["x"] * 65), "a list of at most 64 non-empty strings"),
        (dict(stop_strings=["x" * 257]), "of at most 256 characters"),
        (dict(backend="gpu"), "backend must be one of 'auto', 'graph', 'engine', got 'gpu'"),
        (dict(logprobs=21), "logprobs must be an integer in [0, 20], got 21"),
    ],
)
def test_invalid_settings_are_explained(request_, message):
    with pytest.raises(GenerationSettingsError) as info:
        resolve(**request_)
    assert message in str(info.value)


def test_prompt_plus_new_tokens_must_fit_positions():
    s = resolve(max_new_tokens=10)
    check_lengths(s, 54, 64)  # exactly fits
    with pytest.raises(PromptTooLongError, match="needs 65 positions; the model has 64 .at most 9 new tokens fit"):
        check_lengths(s, 55, 64)
    with pytest.raises(PromptTooLongError, match="shorten the prompt"):
        check_lengths(s, 70, 64)
