"""Acceptance for the step engine: transformers' generate(), token for token, and sampling statistics.

Deterministic search is compared exactly (after stripping EOS and padding): ortgen gets three
prompts at once (each its own request, sharing decoder steps), transformers runs each prompt
alone (a request's result depends on itself only; transformers' own left-padded batches differ
from its single-prompt runs in places: docs/step-engine.md). For BioGPT, GPT-2 and OPT (pre- and
post-LN), on plain random models and on models whose EOS logit is pushed up (EOS mid-sequence,
beams finishing at different steps). Sampling is compared statistically on a model with peaked
distributions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ortgen.runtime.generator import Generator, left_pad
from ortgen.validate.reference import Reference
from ortgen.validate.sampling_check import binned_chi_square, chi_square_p_value
from tests.helpers.models import ARCHS, EOS_BIAS

MAX_NEW = 12

GRID = [
    dict(num_beams=1),
    dict(num_beams=1, repetition_penalty=1.3),
    dict(num_beams=1, min_new_tokens=5),
    dict(num_beams=1, min_length=14),
    dict(num_beams=1, no_repeat_ngram_size=2),
    dict(num_beams=1, bad_words_ids=[[40], [41, 42], [7, 8, 9]]),
    dict(num_beams=4),
    dict(num_beams=4, num_return_sequences=2),
    dict(num_beams=4, num_return_sequences=4, length_penalty=2.0),
    dict(num_beams=4, num_return_sequences=2, length_penalty=-1.0),
    dict(num_beams=4, num_return_sequences=2, early_stopping=True),
    dict(num_beams=4, num_return_sequences=2, early_stopping="never"),
    dict(num_beams=3, repetition_penalty=1.3, min_new_tokens=4),
    dict(num_beams=3, no_repeat_ngram_size=3),
    dict(num_beams=3, bad_words_ids=[[40], [41, 42]]),
]


def _prompts(vocab: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(map(int, rng.integers(4, vocab, size=n))) for n in (7, 3, 5)]


def alone(reference, prompts, settings, model, **kwargs):
    """transformers' generate() on each prompt by itself: per prompt, its sequences."""
    out = []
    for prompt in prompts:
        ids, mask = left_pad([prompt], model.pad_token_id)
        out.append(reference.generate(ids, mask, settings, eos=model.eos_token_id, pad=model.pad_token_id,
                                      **kwargs)[0])
    return out


def _compare(zoo, arch, eos_bias, grid, extra_eos=None):
    model = zoo.model(arch, eos_bias=eos_bias)
    generator = Generator.load(zoo.package(arch, eos_bias=eos_bias))
    reference = Reference(model.load(), "tiny")
    prompts = _prompts(model.vocab_size)
    lengths = set()
    for options in grid:
        options = dict(options)
        if extra_eos is not None:
            options["eos_token_id"] = [model.eos_token_id, extra_eos]
        result = generator.generate(input_ids=prompts, max_new_tokens=MAX_NEW, backend="engine", **options)
        assert result.graph_file == "decoder_engine.onnx" and result.backend_kind == "engine"
        theirs = alone(reference, prompts, result.settings, model)
        ours = [[(s.token_ids, s.stop_reason == "eos") for s in g] for g in result.sequences]
        expected = [[(s.token_ids, s.finished) for s in g] for g in theirs]
        assert ours == expected, f"{arch} {options}"
        for our_group, their_group in zip(result.sequences, theirs):
            for o, t in zip(our_group, their_group):
                if t.score is not None:
                    assert o.score == pytest.approx(t.score, rel=1e-6, abs=1e-4), f"{arch} {options}: beam score"
                lengths.add(len(o.token_ids))
    return lengths


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_equals_transformers(zoo, arch):
    _compare(zoo, arch, None, GRID)


@pytest.mark.parametrize("arch", ARCHS)
def test_engine_equals_transformers_when_eos_is_generated(zoo, arch):
    """length_penalty 1 and 2 (where the in-graph BeamSearch differs), early stopping modes, EOS mid-sequence."""
    lengths = _compare(zoo, arch, EOS_BIAS[arch], GRID)
    assert len(lengths) >= 3, f"the EOS fixture must end sequences at several lengths, got {sorted(lengths)}"


@pytest.mark.parametrize("arch", ["biogpt", "gpt2", "qwen2"])
def test_several_eos_ids(zoo, arch):
    _compare(zoo, arch, None, [dict(num_beams=1), dict(num_beams=3, num_return_sequences=2)], extra_eos=17)
    _compare(zoo, arch, EOS_BIAS[arch], [dict(num_beams=1), dict(num_beams=3, num_return_sequences=2)], extra_eos=17)


@pytest.mark.parametrize("arch", ["biogpt", "gpt2", "llama3"])
def test_stop_strings_equal_transformers(zoo, arch):
    from transformers import AutoTokenizer

    model = zoo.model(arch)
    generator = Generator.load(zoo.package(arch))
    tokenizer = AutoTokenizer.from_pretrained(model.directory)
    reference = Reference(model.load(), "tiny")
    prompts = _prompts(model.vocab_size, seed=4)
    free = generator.generate(input_ids=prompts, max_new_tokens=MAX_NEW, repetition_penalty=2.0, backend="engine")
    # stop strings taken from what the model generates (inside a later token), so that they fire mid-sequence
    pieces = [generator.tokenizer.decode([s.token_ids[3]]) for g in free.sequences for s in g if len(s.token_ids) > 3]
    words = [p.strip() for p in pieces if p.strip().isascii() and p.strip().isprintable() and p.strip()]
    stops = sorted({w[1:3] if len(w) >= 3 else w for w in words})[:2]
    assert stops, pieces
    stopped = 0
    for options in (dict(num_beams=1, repetition_penalty=2.0), dict(num_beams=3, num_return_sequences=2)):
        result = generator.generate(input_ids=prompts, max_new_tokens=MAX_NEW, stop_strings=stops,
                                    backend="engine", **options)
        theirs = alone(reference, prompts, result.settings, model, tokenizer=tokenizer)
        assert [[s.token_ids for s in g] for g in result.sequences] == [[s.token_ids for s in g] for g in theirs]
        stopped += sum(s.stop_reason == "stop_string" for g in result.sequences for s in g)
    assert stopped, "the stop strings must fire in this test"


def _kept_set(reference: Reference, prefix: list[int], temperature: float, top_k: int, top_p: float) -> set[int]:
    probs = reference.sampling_distribution(prefix, temperature, top_p, top_k)
    return set(np.nonzero(probs > 0)[0].tolist())


@pytest.fixture(scope="module", params=["biogpt", "llama3"])
def peaked(zoo, request):
    model = zoo.model(request.param, sharpness=5.0)
    return model, Generator.load(zoo.package(request.param, sharpness=5.0)), Reference(model.load(), "tiny")


@pytest.mark.parametrize("num_beams", [1, 3])
def test_sampling_reproduces_and_stays_in_the_filtered_set(peaked, num_beams):
    model, generator, reference = peaked
    prompts = _prompts(model.vocab_size, seed=2)
    # one EOS id, so that a sequence that ended tells which token ended it (Llama 3 has several)
    options = dict(do_sample=True, num_beams=num_beams, max_new_tokens=6, top_k=5, top_p=0.6, temperature=0.8,
                   eos_token_id=model.eos_token_id)
    a = generator.generate(input_ids=prompts, seed=11, **options)
    b = generator.generate(input_ids=prompts, seed=11, **options)
    assert a.backend_kind == "engine"
    tokens = lambda r: [[s.token_ids for s in g] for g in r.sequences]  # noqa: E731
    assert tokens(a) == tokens(b)
    checked = 0
    for prompt, group in zip(prompts, a.sequences):
        for seq in group:
            generated = seq.token_ids + ([model.eos_token_id] if seq.stop_reason == "eos" else [])
            for k, token in enumerate(generated):
                # every sampled token was allowed at its step (for beam sampling: from its own beam's prefix;
                # beam sampling keeps at least 2 tokens, as transformers does)
                kept = _kept_set(reference, prompt + generated[:k], 0.8, max(5, 2 if num_beams > 1 else 1), 0.6)
                if num_beams > 1:
                    kept |= _kept_set(reference, prompt + generated[:k], 0.8, 2, 1.0)
                assert token in kept, f"step {k}: token {token} outside the top-k/top-p set {sorted(kept)}"
                checked += 1
    assert checked >= 12


def test_top_k_1_is_greedy(peaked):
    model, generator, _ = peaked
    prompts = _prompts(model.vocab_size, seed=6)
    greedy = generator.generate(input_ids=prompts, max_new_tokens=10)
    sampled = generator.generate(input_ids=prompts, max_new_tokens=10, do_sample=True, top_k=1, seed=5)
    assert [[s.token_ids for s in g] for g in sampled.sequences] == [[s.token_ids for s in g] for g in greedy.sequences]


@pytest.mark.parametrize("temperature, top_k, top_p", [(1.0, 50, 1.0), (0.7, 20, 0.9), (1.3, 0, 0.8)])
def test_first_token_frequencies_match_transformers(peaked, temperature, top_k, top_p):
    """2000 draws (20 concurrent requests of 100, each seeded); chi-square over probability-sorted
    bins (expected count >= 5), fail below p = 0.001."""
    model, generator, reference = peaked
    prompt = [2, 40, 41, 42]
    handles = [generator.submit(input_ids=prompt, do_sample=True, max_new_tokens=1, num_return_sequences=100,
                                temperature=temperature, top_k=top_k, top_p=top_p, seed=123 + i, backend="engine",
                                eos_token_id=model.eos_token_id)  # one EOS id: an ended sequence drew it
               for i in range(20)]
    firsts = np.array([s.token_ids[0] if s.token_ids else model.eos_token_id
                       for h in handles for s in h.result().sequences])
    probs = reference.sampling_distribution(prompt, temperature, top_p, top_k)
    counts = np.bincount(firsts, minlength=probs.shape[0]).astype(float)
    assert counts.sum() == 2000
    assert counts[probs == 0].sum() == 0, "a draw fell outside transformers' support"
    statistic, dof, bins = binned_chi_square(counts, probs)
    assert bins >= 5
    assert chi_square_p_value(statistic, dof) > 1e-3, (statistic, dof)


def test_streaming_yields_the_generated_text(zoo):
    generator = Generator.load(zoo.package("biogpt"))
    prompt = "Aspirin reduces the risk of"
    for options in (dict(max_new_tokens=10), dict(max_new_tokens=10, repetition_penalty=1.5),
                    dict(max_new_tokens=8, num_beams=3)):
        chunks = list(generator.stream(prompt, **options))
        full = generator.generate(prompt, backend="engine", **options).texts[0][0]
        assert "".join(chunks) == full
        if options.get("num_beams", 1) == 1:
            assert len(chunks) > 1, "greedy search streams as it goes"


def test_auto_backend_choice(zoo):
    """auto: the step engine for everything (exact and faster); the in-graph operators only for
    packages without it (test_packages_without_the_step_engine_refuse_what_needs_it)."""
    generator = Generator.load(zoo.package("biogpt"))
    plan = lambda **o: generator.plan(generator.settings_for(**o))  # noqa: E731
    for settings in (dict(), dict(num_beams=4, length_penalty=0.0), dict(do_sample=True, top_k=0),
                     dict(num_beams=4), dict(do_sample=True), dict(do_sample=True, num_beams=3),
                     dict(no_repeat_ngram_size=2), dict(bad_words_ids=[[5]]), dict(stop_strings=["x"]),
                     dict(eos_token_id=[2, 5]), dict(num_beams=2, length_penalty=0.0, early_stopping="never")):
        assert plan(**settings)[0] == "engine", settings
    assert plan(num_beams=4)[1] == plan()[1] == ("auto: ortgen's step engine, exact for every setting and faster "
                                                 "than the in-graph operators")
    assert plan(backend="graph")[0] == "graph"
    assert plan(backend="graph", num_beams=4)[1].startswith("requested; may differ from transformers")


@pytest.mark.parametrize("arch", ["biogpt", "opt-post-ln"])
def test_one_step_mixes_prefill_chunks_and_shared_prompt_rows(zoo, arch):
    """The engine graph and the KV pool, directly: in every step, two requests whose three sequences
    share their prompt's row (random tokens, random beam reorders) run beside a third request whose
    prompt is prefilled in chunks; after each step every sequence's logits, and the third prompt's
    last-token logits, equal transformers' forward over that sequence alone."""
    from ortgen.runtime.engine_decoder import StepBuilder
    from ortgen.runtime.paths import Paths

    model = zoo.model(arch)
    network = model.load()
    scheduler = Generator.load(zoo.package(arch)).scheduler
    pool, decoder = scheduler.pool, scheduler.decoder
    rng = np.random.default_rng(3)
    prompts = [list(map(int, rng.integers(4, model.vocab_size, size=n))) for n in (6, 2)]
    long_prompt = list(map(int, rng.integers(4, model.vocab_size, size=17)))
    width, steps = 3, 5
    rows = [pool.take() for _ in range(3)]

    def expected(tokens: list[int]) -> np.ndarray:
        with torch.no_grad():
            return network(input_ids=torch.tensor([tokens])).logits[0, -1].numpy()

    builder = StepBuilder()
    for row, prompt in zip(rows, prompts):
        builder.add(row, prompt, np.arange(len(prompt)), len(prompt), logits="last")
    logits = decoder.run(pool, builder.build(max(rows) + 1))
    for b, prompt in enumerate(prompts):
        np.testing.assert_allclose(logits[b], expected(prompt), atol=1e-4)
    paths = [Paths(len(p), width, steps) for p in prompts]
    sequences = [[list(p) for _ in range(width)] for p in prompts]
    chunks = [long_prompt[i:i + 4] for i in range(0, len(long_prompt), 4)]
    for step in range(steps):
        builder = StepBuilder()
        for b in range(len(prompts)):
            parents = rng.integers(0, width, size=width) if step else None
            tokens = rng.integers(4, model.vocab_size, size=width)
            if parents is not None:
                sequences[b] = [list(sequences[b][p]) for p in parents]
            for j in range(width):
                sequences[b][j].append(int(tokens[j]))
            position = paths[b].prompt_length + paths[b].steps
            paths[b].advance(parents)
            builder.add(rows[b], tokens, np.full(width, position), paths[b].length, bias=paths[b].bias(paths[b].length))
        if step < len(chunks):  # the third request's prompt, a chunk per step
            start = 4 * step
            end = start + len(chunks[step])
            builder.add(rows[2], chunks[step], np.arange(start, end), end,
                        logits="last" if end == len(long_prompt) else "none")
        logits = decoder.run(pool, builder.build(max(rows) + 1))
        for b in range(len(prompts)):
            for j in range(width):
                np.testing.assert_allclose(logits[b * width + j], expected(sequences[b][j]), atol=1e-4,
                                           err_msg=f"step {step}, prompt {b}, sequence {j}")
        if step == len(chunks) - 1:
            np.testing.assert_allclose(logits[-1], expected(long_prompt), atol=1e-4, err_msg="chunked prefill")


def test_any_head_dim_gets_the_step_engine(tmp_path):
    """GroupQueryAttention's CPU kernel wants head_dim % 8 == 0: other sizes are padded around it,
    and the engine equals transformers (beam search with the default length_penalty, which the
    in-graph operator cannot reproduce)."""
    from transformers import BioGptConfig, BioGptForCausalLM

    from ortgen.demo.models import write_demo_tokenizer
    from ortgen.export.package import ExportOptions, export_package

    directory = tmp_path / "head12"
    vocab = write_demo_tokenizer(directory, num_merges=100)
    torch.manual_seed(0)
    config = BioGptConfig(vocab_size=vocab, hidden_size=36, num_hidden_layers=1, num_attention_heads=3,
                          intermediate_size=48, max_position_embeddings=32)
    network = BioGptForCausalLM(config).eval()
    network.save_pretrained(directory)
    manifest = export_package(str(directory), tmp_path / "pkg", ExportOptions(show_progress=False))
    assert manifest.graphs["decoder_engine"].attributes["cache_head_dim"] == 16
    generator = Generator.load(tmp_path / "pkg")
    prompt = [2, 5, 6, 9]
    result = generator.generate(input_ids=[prompt], max_new_tokens=6, num_beams=3, num_return_sequences=2)
    assert result.backend_kind == "engine"
    theirs = Reference(network, "tiny").generate(*left_pad([prompt], 1), result.settings, eos=2, pad=1)
    assert [s.token_ids for s in result.sequences[0]] == [s.token_ids for s in theirs[0]]
