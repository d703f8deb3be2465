"""The step engine's best-tokens path: when every search of a step can choose from a few candidates
(greedy and beam search, no sampling, no log-probabilities, no processor but the EOS bans of
min_length / min_new_tokens), the scheduler fetches each picked row's best logits, their ids and its
log-sum-exp instead of whole logits rows (on a GPU the rows then never leave the device).

It must choose exactly what the whole rows choose: compared here with the whole-rows path
(``fetch_best_tokens = False``) and with transformers (tests/parity/test_engine_parity.py runs its
eligible settings through it).
"""

from __future__ import annotations

import numpy as np
import pytest

from ortgen.runtime.generator import Generator
from ortgen.runtime.search import SearchSpec, best_k
from tests.helpers.models import ARCHS, EOS_BIAS
from tests.parity.test_engine_parity import MAX_NEW, _compare, _prompts

ELIGIBLE = [
    dict(num_beams=1),
    dict(num_beams=1, min_new_tokens=6),
    dict(num_beams=1, min_length=12),
    dict(num_beams=4),
    dict(num_beams=4, num_return_sequences=3, length_penalty=2.0),
    dict(num_beams=4, num_return_sequences=2, early_stopping=True),
    dict(num_beams=3, min_new_tokens=5),
    dict(num_beams=5, min_length=14, eos_token_id=None),  # eos_token_id filled in with a second EOS id below
]
NOT_ELIGIBLE = [
    dict(num_beams=1, repetition_penalty=1.3),
    dict(num_beams=3, no_repeat_ngram_size=2),
    dict(num_beams=3, bad_words_ids=[[40]]),
    dict(do_sample=True, top_k=0, seed=1),
    dict(num_beams=1, logprobs=2),
]


def _run(generator, prompts, options, fetch_best: bool):
    scheduler = generator.scheduler
    scheduler.fetch_best_tokens = fetch_best
    before = scheduler.stats.best_token_steps
    result = generator.generate(input_ids=prompts, max_new_tokens=MAX_NEW, backend="engine", **options)
    tokens = [[s.token_ids for s in group] for group in result.sequences]
    scores = [[s.score for s in group] for group in result.sequences]
    return tokens, scores, scheduler.stats.best_token_steps - before


def _options(options, eos_token_id):
    options = dict(options)
    if "eos_token_id" in options:
        options["eos_token_id"] = [eos_token_id, 17]
    return options


@pytest.mark.parametrize("eos_bias", [False, True], ids=["plain", "eos-generated"])
@pytest.mark.parametrize("arch", ARCHS)
def test_best_tokens_choose_what_whole_rows_choose(zoo, arch, eos_bias):
    model = zoo.model(arch, eos_bias=EOS_BIAS[arch] if eos_bias else None)
    generator = Generator.load(zoo.package(arch, eos_bias=EOS_BIAS[arch] if eos_bias else None))
    prompts = _prompts(model.vocab_size, seed=3)
    for options in ELIGIBLE:
        options = _options(options, model.eos_token_id)
        best_tokens, best_scores, best_steps = _run(generator, prompts, options, True)
        whole_tokens, whole_scores, whole_steps = _run(generator, prompts, options, False)
        assert best_steps > 0 and whole_steps == 0, options  # each path really ran
        assert best_tokens == whole_tokens, f"{arch} {options}"
        for ours, theirs in zip(best_scores, whole_scores):  # log-sum-exp in ONNX Runtime: the last bits differ
            if theirs[0] is not None:  # beam search scores its sequences; greedy does not
                assert ours == pytest.approx(theirs, rel=1e-6, abs=1e-5), f"{arch} {options}"
    generator.close()


def test_settings_that_need_whole_rows_never_take_the_best_tokens_path(zoo):
    generator = Generator.load(zoo.package("gpt2"))
    prompts = _prompts(zoo.model("gpt2").vocab_size)
    for options in NOT_ELIGIBLE:
        assert _run(generator, prompts, options, True)[2] == 0, options
    generator.close()


def test_a_step_mixing_the_two_fetches_both_and_each_request_reads_its_own(zoo):
    """A request that needs whole rows beside greedy ones: the step fetches both, and each greedy request reads
    its best tokens as it would alone (the same tokens and scores, bitwise: batch invariance)."""
    generator = Generator.load(zoo.package("biogpt"))
    prompts = _prompts(zoo.model("biogpt").vocab_size)
    alone = [generator.generate(input_ids=[p], max_new_tokens=MAX_NEW, num_beams=3).sequences[0] for p in prompts]
    scheduler = generator.scheduler
    mixed_before = scheduler.stats.mixed_fetch_steps
    penalised = generator.submit(input_ids=prompts[0], max_new_tokens=MAX_NEW, num_beams=1, repetition_penalty=1.5)
    beams = [generator.submit(input_ids=p, max_new_tokens=MAX_NEW, num_beams=3) for p in prompts]
    together = [h.result().sequences for h in beams]
    penalised.result()
    assert [[(s.token_ids, s.score) for s in g] for g in together] == [[(s.token_ids, s.score) for s in g] for g in alone]
    # the steps the penalised request shared fetched both outputs (it runs MAX_NEW steps from the first)
    assert scheduler.stats.mixed_fetch_steps - mixed_before >= MAX_NEW - 2
    generator.close()


def test_a_package_without_the_best_outputs_fetches_whole_rows(zoo):
    """Packages exported before the best_* outputs existed still run (on whole rows)."""
    generator = Generator.load(zoo.package("opt"))
    prompts = _prompts(zoo.model("opt").vocab_size)
    expected = _run(generator, prompts, dict(num_beams=4), True)
    generator.scheduler.decoder.has_best = False
    assert _run(generator, prompts, dict(num_beams=4), True)[0] == expected[0]
    assert _run(generator, prompts, dict(num_beams=4), True)[2] == 0
    generator.close()


def test_float16_best_tokens_match_whole_rows(zoo):
    _, lines = zoo.trained("biogpt")
    prompts = [line[:n] for line, n in zip(lines[::4], [3, 5, 2, 6])]
    generator = Generator.load(zoo.trained_package("biogpt", "float16"))
    for options in (dict(num_beams=1), dict(num_beams=4, num_return_sequences=2)):
        best = _run(generator, prompts, options, True)
        whole = _run(generator, prompts, options, False)
        assert best[2] > 0 and best[0] == whole[0], options
    generator.close()


def test_best_k_leaves_room_for_the_banned_eos_ids():
    def spec(**kw):
        base = dict(max_new_tokens=8, num_beams=1, num_return_sequences=1, do_sample=False, length_penalty=1.0,
                    early_stopping=False, eos_token_ids=[2], pad_token_id=1, processors=[])
        base.update(kw)
        return SearchSpec(**base)

    from ortgen.runtime.processors import MinNewTokens, RepetitionPenalty

    assert best_k(spec()) == 1
    assert best_k(spec(num_beams=4)) == 8  # transformers' 2 x num_beams candidates
    assert best_k(spec(num_beams=4, eos_token_ids=[2, 7, 9])) == 16  # (1 + n_eos) x num_beams
    ban = MinNewTokens(prompt_length=3, min_new_tokens=5, eos_token_ids=[2, 7])
    assert best_k(spec(num_beams=4, eos_token_ids=[2, 7], processors=[ban])) == 12 + 2
    assert best_k(spec(processors=[RepetitionPenalty(1.2, np.zeros(1, np.int64))])) is None
    assert best_k(spec(do_sample=True)) is None and best_k(spec(logprobs=3)) is None


def test_engine_parity_with_transformers_runs_through_the_best_tokens_path(zoo):
    """The transformers comparison of test_engine_parity, on settings that take this path."""
    generator_steps = []
    original = Generator.generate

    def counting(self, *args, **kwargs):
        before = self.scheduler.stats.best_token_steps
        result = original(self, *args, **kwargs)
        generator_steps.append(self.scheduler.stats.best_token_steps - before)
        return result

    Generator.generate = counting
    try:
        _compare(zoo, "biogpt", EOS_BIAS["biogpt"], [dict(num_beams=1), dict(num_beams=4, num_return_sequences=2),
                                                      dict(num_beams=3, min_new_tokens=5)])
    finally:
        Generator.generate = original
    assert generator_steps and all(steps > 0 for steps in generator_steps)
