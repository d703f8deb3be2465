"""Batch invariance: a token's result never depends on what shares its engine call, in every precision
ortgen ships on the CPU (float32, int8, int4), through the engine's real graph and through the
scheduler (the rules and their sources: ortgen/runtime/batch_invariance.py).

- kernel level: M cache rows of one token each in one call, M = 1..64 and 127..131, 1 and 2 threads:
  each token's logits bitwise those it gets among 131 (the linear layers see M rows, padded);
- prompts longer than the kernels' 128-row ranges prefilled alone and beside others that take
  part of the step's budget: the same logits for their last token, bitwise;
- scheduler level: 32 mixed requests from 8 threads on int8 and int4 packages, and long prompts
  beside decoding requests on every precision, each bitwise equal (tokens and scores) to the same
  request alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from ortgen.runtime.batch_invariance import ROW_MULTIPLE, chunk_grid, cpu_has_avx512, padded_count
from ortgen.runtime.engine_decoder import StepBuilder
from ortgen.runtime.generator import Generator
from ortgen.runtime.scheduler import SchedulerLimits
from tests.parity.test_concurrency import MAX_NEW, _requests, _submit_from_threads

ROW_COUNTS = list(range(1, 65)) + [127, 128, 129, 130, 131]
WEIGHTS = ["float32", "int8", "int4"]


@pytest.fixture(scope="module")
def small_packages(tmp_path_factory) -> dict[str, object]:
    """A 512-wide random BioGPT (6 layers, ffn 2048: the kernels' real tile paths) in each precision."""
    from ortgen.demo.models import build_random_biogpt
    from ortgen.export.package import ExportOptions, export_package

    root = tmp_path_factory.mktemp("invariance")
    build_random_biogpt(root / "hf", "small")
    out = {}
    for weights in WEIGHTS:
        export_package(str(root / "hf"), root / weights, ExportOptions.for_weights(weights, show_progress=False))
        out[weights] = root / weights
    return out


def test_padding_never_leaves_one_row_in_a_range_and_is_even_on_avx512():
    assert [padded_count(n, 2) for n in (0, 1, 2, 3, 128, 129)] == [0, 2, 2, 4, 128, 130]
    assert [padded_count(n, 1) for n in (0, 1, 2, 3, 5, 128, 129, 257)] == [0, 2, 2, 3, 5, 128, 130, 258]
    assert [chunk_grid(b) for b in (5, 128, 256)] == [5, 128, 128]
    assert cpu_has_avx512("flags\t\t: fpu sse avx2 avx512f avx512bw\n") is True
    assert cpu_has_avx512("flags\t\t: fpu sse avx2 fma\n") is False
    assert ROW_MULTIPLE == (2 if cpu_has_avx512() else 1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("weights", WEIGHTS)
def test_each_token_is_the_same_whatever_the_row_count_of_its_call(small_packages, weights, threads):
    limits = SchedulerLimits(max_requests=max(ROW_COUNTS) + 1)
    with Generator.load(small_packages[weights], threads=threads, limits=limits) as generator:
        scheduler = generator.scheduler
        decoder, pool = scheduler.decoder, scheduler.pool
        rng = np.random.default_rng(0)
        tokens = rng.integers(4, generator.manifest.architecture.vocab_size, size=max(ROW_COUNTS))
        rows = [pool.take() for _ in range(max(ROW_COUNTS))]
        try:
            results = {}
            for m in ROW_COUNTS:
                builder = StepBuilder()
                for i in range(m):  # a fresh cache row per token: each token's result depends on it alone
                    builder.add(rows[i], tokens[i:i + 1], [0], 1, logits="all")
                batch = builder.build(pool.bind_rows(max(rows[:m]) + 1), decoder.float_dtype, decoder.row_multiple)
                assert batch.tokens + batch.padding == padded_count(m, decoder.row_multiple)
                results[m] = np.array(decoder.run(pool, batch)[:m])
        finally:
            for row in rows:
                pool.give_back(row)
    widest = results[max(ROW_COUNTS)]
    differing = [m for m, logits in results.items() if not np.array_equal(logits, widest[:m])]
    assert not differing, f"{weights}, {threads} threads: token logits change with the call's row count at M = " \
                          f"{differing}"


def _prefill_last_logits(generator, prompt: list[int], budget: int, beside: int) -> np.ndarray:
    """The logits of ``prompt``'s last token, prefilled by the scheduler's chunking rule with ``budget``
    tokens a step, ``beside`` of which another prompt takes first (a request ahead of it in the queue)."""
    scheduler = generator.scheduler
    decoder, pool = scheduler.decoder, scheduler.pool
    grid = scheduler.chunk_grid
    row, other = pool.take(), pool.take()
    try:
        start, last = 0, None
        while start < len(prompt):
            builder = StepBuilder()
            left = budget
            if beside:
                builder.add(other, np.full(beside, 5), np.arange(beside), beside, logits="none")
                left -= beside
            chunk = min(len(prompt) - start, left)
            if chunk < len(prompt) - start:
                chunk -= chunk % grid
            if chunk:
                end = start + chunk
                builder.add(row, prompt[start:end], np.arange(start, end), end,
                            logits="last" if end == len(prompt) else "none")
                batch = builder.build(pool.bind_rows(max(row, other) + 1), decoder.float_dtype, decoder.row_multiple)
                logits = decoder.run(pool, batch)
                last = np.array(logits[batch.logit_slices[-1]]) if end == len(prompt) else last
                start = end
            beside = 0  # the other prompt only shares the first step
        return last
    finally:
        pool.give_back(row)
        pool.give_back(other)


@pytest.mark.parametrize("weights", WEIGHTS)
def test_a_long_prompt_is_prefilled_alike_whatever_shares_the_budget(small_packages, weights):
    with Generator.load(small_packages[weights], threads=2) as generator:
        vocab = generator.manifest.architecture.vocab_size
        rng = np.random.default_rng(1)
        for length in (129, 130, 200, 257, 300):
            prompt = [int(t) for t in rng.integers(4, vocab, size=length)]
            alone = _prefill_last_logits(generator, prompt, 256, 0)
            for budget, beside in ((256, 37), (256, 128), (128, 0), (384, 100)):
                assert np.array_equal(_prefill_last_logits(generator, prompt, budget, beside), alone), \
                    f"{weights}: prompt of {length} with budget {budget}, {beside} taken by another"


@pytest.mark.parametrize("weights", ["int8", "int4"])
@pytest.mark.parametrize("arch", ["biogpt", "gpt2"])
def test_quantized_requests_under_load_equal_themselves_alone(zoo, arch, weights):
    from tests.helpers.models import EOS_BIAS

    package = zoo.weights_package(arch, weights, eos_bias=EOS_BIAS.get(arch, 0.35))
    vocab = zoo.model(arch, eos_bias=EOS_BIAS.get(arch, 0.35)).vocab_size
    requests = _requests(vocab, 32, seed=3)
    limits = SchedulerLimits(prefill_chunk=5)  # prompts prefilled over several steps while others decode
    with Generator.load(package, limits=limits) as generator:
        outputs = _submit_from_threads(generator, requests)
        assert generator.scheduler.stats.step_rows / generator.scheduler.stats.steps > 1.5
    with Generator.load(package, limits=limits) as alone:  # the same configuration, one request at a time
        for (prompt, options), output in zip(requests, outputs):
            single = alone.generate(input_ids=[prompt], max_new_tokens=MAX_NEW, **options).sequences[0]
            assert [(s.token_ids, s.stop_reason, s.score) for s in output.sequences] == \
                   [(s.token_ids, s.stop_reason, s.score) for s in single], f"{arch} {weights} {options}"


@pytest.mark.parametrize("weights", WEIGHTS)
def test_long_prompts_beside_decoding_requests_equal_themselves_alone(small_packages, weights):
    """Prompts of 129-300 tokens (the kernels' 128-row ranges) prefilled while short requests decode, with
    the default 256-token prefill budget shared between them: every request equals itself alone."""
    rng = np.random.default_rng(2)
    with Generator.load(small_packages[weights]) as generator:
        vocab = generator.manifest.architecture.vocab_size
        requests = []
        for i, length in enumerate((3, 129, 5, 257, 130, 4, 300, 200)):
            options = [dict(), dict(num_beams=3), dict(do_sample=True, top_k=20, seed=i)][i % 3]
            requests.append(([int(t) for t in rng.integers(4, vocab, size=length)], options))
        handles = [generator.submit(input_ids=p, max_new_tokens=6, **o) for p, o in requests]
        outputs = [h.result(timeout=300) for h in handles]
        for (prompt, options), output in zip(requests, outputs):
            single = generator.generate(input_ids=[prompt], max_new_tokens=6, **options).sequences[0]
            assert [(s.token_ids, s.score) for s in output.sequences] == [(s.token_ids, s.score) for s in single], \
                f"{weights}: prompt of {len(prompt)} {options}"


@pytest.mark.parametrize("weights", WEIGHTS)
def test_scoring_requests_beside_others_equal_themselves_alone(small_packages, weights):
    """Prompt log-probabilities (lm-eval's scoring requests: every prompt position's logits, nothing
    generated) computed beside decoding requests and other scoring requests equal those computed alone,
    bitwise, for prompts within one and across several of the kernels' 128-row ranges."""
    rng = np.random.default_rng(3)
    with Generator.load(small_packages[weights]) as generator:
        vocab = generator.manifest.architecture.vocab_size
        prompts = [[int(t) for t in rng.integers(4, vocab, size=n)] for n in (7, 129, 40, 260)]
        alone = [generator.logprobs_of(input_ids=p, top=2) for p in prompts]
        busy = [generator.submit(input_ids=[int(t) for t in rng.integers(4, vocab, size=n)], max_new_tokens=8, **o)
                for n, o in ((5, {}), (131, dict(num_beams=3)), (9, dict(do_sample=True, seed=1)))]
        scored = [generator.submit(input_ids=p, max_new_tokens=0, prompt_logprobs=2) for p in prompts]
        together = [h.result(timeout=300).prompt_logprobs for h in scored]
        for h in busy:
            h.result(timeout=300)
        for prompt, a, b in zip(prompts, alone, together):
            assert a == b, f"{weights}: scoring a prompt of {len(prompt)} tokens"
