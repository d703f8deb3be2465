"""Continuous batching: many requests at once, each gets what it would get alone.

Requests with mixed settings arrive from many threads at staggered times and share decoder steps
(chunked prefill with a small token budget, so prompts are prefilled over several steps while
others decode). Every deterministic request must equal transformers' generate() on its prompt
alone; every seeded sampling request must equal the same request run alone through ortgen.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from transformers import AutoTokenizer

from ortgen.runtime.generator import Generator
from ortgen.runtime.scheduler import SchedulerLimits
from ortgen.validate.reference import Reference
from tests.helpers.models import EOS_BIAS

DETERMINISTIC = [
    dict(),
    dict(num_beams=2),
    dict(num_beams=3, length_penalty=0.5, early_stopping=True),
    dict(num_beams=4, num_return_sequences=2, early_stopping="never"),
    dict(num_beams=5, length_penalty=2.0),
    dict(num_beams=4, num_return_sequences=2, length_penalty=-1.0),
    dict(repetition_penalty=1.3),
    dict(num_beams=3, no_repeat_ngram_size=2),
    dict(min_new_tokens=6),
    dict(num_beams=2, min_new_tokens=4, repetition_penalty=1.2),
    dict(stop_strings=["e"]),
    dict(num_beams=3, num_return_sequences=2, stop_strings=["a"]),
]
SAMPLED = [
    dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.8),
    dict(do_sample=True, num_return_sequences=2, top_k=0, top_p=0.7),
    dict(do_sample=True, num_beams=3, temperature=1.2),  # beam sampling
    dict(do_sample=True, top_k=5, temperature=0.6),
]
MAX_NEW = 10
ARCHS = ["biogpt", "biogpt-hd14", "gpt2", "opt", "llama3", "mistral", "qwen2"]


def _requests(vocab: int, count: int, seed: int = 0) -> list[tuple[list[int], dict]]:
    rng = np.random.default_rng(seed)
    cases = DETERMINISTIC + SAMPLED
    out = []
    for i in range(count):
        prompt = [int(t) for t in rng.integers(4, vocab, size=int(rng.integers(2, 14)))]
        options = dict(cases[i % len(cases)])
        if options.get("do_sample"):
            options["seed"] = 1000 + i
        out.append((prompt, options))
    return out


def _submit_from_threads(generator: Generator, requests, threads: int = 8):
    """Each thread submits its share with random pauses between submissions; returns the outputs."""
    handles: list = [None] * len(requests)
    errors: list[BaseException] = []
    rng = np.random.default_rng(7)
    pauses = rng.uniform(0, 0.03, size=len(requests))

    def worker(k: int) -> None:
        try:
            for i in range(k, len(requests), threads):
                time.sleep(pauses[i])
                prompt, options = requests[i]
                handles[i] = generator.submit(input_ids=prompt, max_new_tokens=MAX_NEW, **options)
        except BaseException as exc:  # reported below
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors
    return [h.result(timeout=120) for h in handles]


@pytest.mark.parametrize("arch", ARCHS)
def test_concurrent_requests_equal_each_request_alone(zoo, arch):
    model = zoo.model(arch, eos_bias=EOS_BIAS.get(arch, 0.35))
    package = zoo.package(arch, eos_bias=EOS_BIAS.get(arch, 0.35))
    requests = _requests(model.vocab_size, 32)
    limits = SchedulerLimits(prefill_chunk=5)  # prompts of up to 13 tokens: prefilled over up to 3 steps
    with Generator.load(package, limits=limits) as generator:
        outputs = _submit_from_threads(generator, requests)
        steps = generator.scheduler.stats
        assert steps.step_rows / steps.steps > 1.5, "the requests must have shared decoder steps"

    reference = Reference(model.load(), "tiny")
    tokenizer = AutoTokenizer.from_pretrained(model.directory)
    lengths = set()
    with Generator.load(package) as alone:
        for (prompt, options), output in zip(requests, outputs):
            ours = [(s.token_ids, s.stop_reason) for s in output.sequences]
            lengths |= {len(s.token_ids) for s in output.sequences}
            if options.get("do_sample"):
                single = alone.generate(input_ids=[prompt], max_new_tokens=MAX_NEW, **options).sequences[0]
                assert ours == [(s.token_ids, s.stop_reason) for s in single], f"{arch} {options}: sampled alone"
                continue
            theirs = reference.generate_alone([prompt], output.settings, eos=model.eos_token_id,
                                              pad=model.pad_token_id, tokenizer=tokenizer)[0]
            assert [s[0] for s in ours] == [t.token_ids for t in theirs], f"{arch} {options} on {prompt}"
            assert [s[1] == "eos" for s in ours] == [t.finished and s[1] == "eos" for s, t in zip(ours, theirs)]
            for o, t in zip(output.sequences, theirs):
                if t.score is not None:
                    assert o.score == pytest.approx(t.score, rel=1e-6, abs=1e-4), f"{arch} {options}: beam score"
    assert len(lengths) >= 3, f"EOS must end sequences at several lengths, got {sorted(lengths)}"


def test_a_request_joining_mid_prefill_and_mid_decode(zoo):
    """Z arrives while X is still being prefilled (chunk by chunk) and Y is decoding: all three equal
    transformers alone."""
    model = zoo.model("biogpt")
    rng = np.random.default_rng(11)
    x = [int(t) for t in rng.integers(4, model.vocab_size, size=40)]
    y = [int(t) for t in rng.integers(4, model.vocab_size, size=3)]
    z = [int(t) for t in rng.integers(4, model.vocab_size, size=9)]
    with Generator.load(zoo.package("biogpt"), limits=SchedulerLimits(prefill_chunk=4)) as generator:
        scheduler = generator.scheduler
        hy = generator.submit(input_ids=y, max_new_tokens=30, num_beams=3)
        hx = generator.submit(input_ids=x, max_new_tokens=8)
        seen = False
        deadline = time.monotonic() + 30
        while not seen and time.monotonic() < deadline:
            running = {r.handle.id: r for r in list(scheduler._running)}
            rx, ry = running.get(hx.id), running.get(hy.id)
            seen = rx is not None and ry is not None and 0 < rx.prefilled < len(x) and ry.search is not None
            if not seen:
                time.sleep(0.0005)
        assert seen, "never saw X mid-prefill while Y decoded"
        hz = generator.submit(input_ids=z, max_new_tokens=8, num_beams=2)
        outputs = [h.result(timeout=60) for h in (hx, hy, hz)]
    reference = Reference(model.load(), "tiny")
    for prompt, output in zip((x, y, z), outputs):
        theirs = reference.generate_alone([prompt], output.settings, eos=model.eos_token_id, pad=model.pad_token_id)[0]
        assert [s.token_ids for s in output.sequences] == [t.token_ids for t in theirs]


@pytest.mark.parametrize("arch, options", [
    ("biogpt", dict(min_length=14)),  # transformers' min_length counts the left padding of shorter prompts
    ("opt", dict(min_length=9)),
    ("gpt2", dict(no_repeat_ngram_size=1)),  # GPT-2 pads with EOS: the padding's EOS is then a banned 1-gram
])
def test_where_transformers_batches_differ_from_single_prompts_ortgen_follows_the_single_prompt(zoo, arch, options):
    from ortgen.runtime.generator import left_pad
    from tests.parity.test_engine_parity import _prompts

    model = zoo.model(arch, eos_bias=EOS_BIAS[arch])
    prompts = _prompts(model.vocab_size)  # lengths 7, 3, 5: left-padded in a transformers batch
    with Generator.load(zoo.package(arch, eos_bias=EOS_BIAS[arch])) as generator:
        ours = generator.generate(input_ids=prompts, max_new_tokens=12, **options)
    reference = Reference(model.load(), "tiny")
    eos, pad = model.eos_token_id, model.pad_token_id
    batched = reference.generate(*left_pad(prompts, pad), ours.settings, eos=eos, pad=pad)
    alone = reference.generate_alone(prompts, ours.settings, eos=eos, pad=pad)
    tokens = lambda groups: [[s.token_ids for s in g] for g in groups]  # noqa: E731
    assert tokens(batched) != tokens(alone), "the documented difference must show on this fixture"
    assert tokens(ours.sequences) == tokens(alone)
