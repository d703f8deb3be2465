"""Per-token log-probabilities (``logprobs=N``) against transformers' own numbers.

Greedy search: transformers' processed scores (``output_scores``), log-softmaxed, as its
``compute_transition_scores(normalize_logits=True)`` does. Beam search: its transition scores
(``compute_transition_scores`` with ``beam_indices``). Sampling: the log of transformers' sampling
distribution (after temperature, top-k, top-p) for the prefix each token was drawn after.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ortgen.runtime.generator import Generator
from ortgen.validate.reference import Reference

PROMPT = [2, 40, 41, 42, 43, 44]


def _hf(network, **options):
    with torch.no_grad():
        return network.generate(torch.tensor([PROMPT]), attention_mask=torch.ones(1, len(PROMPT), dtype=torch.long),
                                return_dict_in_generate=True, output_scores=True, pad_token_id=1, eos_token_id=2,
                                **options)


@pytest.mark.parametrize("arch", ["biogpt", "gpt2"])
def test_greedy_logprobs_and_alternatives_equal_transformers(zoo, arch):
    model = zoo.model(arch)
    options = dict(max_new_tokens=8, repetition_penalty=1.3)
    with Generator.load(zoo.package(arch)) as generator:
        sequence = generator.generate(input_ids=[PROMPT], logprobs=3, **options).sequences[0][0]
    out = _hf(model.load(), do_sample=False, **options)
    assert sequence.token_ids == out.sequences[0, len(PROMPT):].tolist()[:len(sequence.token_ids)]
    assert len(sequence.logprobs) == len(sequence.token_ids)
    for step, record in enumerate(sequence.logprobs):
        theirs = torch.log_softmax(out.scores[step][0].double(), dim=-1).numpy()
        assert record.token == sequence.token_ids[step]
        assert record.logprob == pytest.approx(theirs[record.token], abs=1e-4)
        top = np.argsort(-theirs, kind="stable")[:3]
        assert [t for t, _ in record.top] == top.tolist()
        assert [lp for _, lp in record.top] == pytest.approx(theirs[top].tolist(), abs=1e-4)


def test_beam_logprobs_are_transformers_transition_scores(zoo):
    model = zoo.model("biogpt")
    network = model.load()
    options = dict(max_new_tokens=8, num_beams=3, length_penalty=1.0)
    with Generator.load(zoo.package("biogpt")) as generator:
        sequence = generator.generate(input_ids=[PROMPT], logprobs=2, **options).sequences[0][0]
    out = _hf(network, do_sample=False, **options)
    transition = network.compute_transition_scores(out.sequences, out.scores, out.beam_indices, normalize_logits=False)
    theirs = transition[0].numpy()[:len(sequence.token_ids)]
    assert sequence.token_ids == out.sequences[0, len(PROMPT):].tolist()[:len(sequence.token_ids)]
    assert [r.logprob for r in sequence.logprobs] == pytest.approx(theirs.tolist(), abs=1e-4)
    # the beam score is the sum of the transition scores over the length (EOS included when it ended)
    assert all(len(r.top) == 2 and r.top[0][1] >= r.top[1][1] for r in sequence.logprobs)


def test_sampled_logprobs_are_the_sampling_distribution(zoo):
    model = zoo.model("biogpt", sharpness=5.0)
    reference = Reference(model.load(), "tiny")
    with Generator.load(zoo.package("biogpt", sharpness=5.0)) as generator:
        result = generator.generate(input_ids=[PROMPT], logprobs=0, do_sample=True, temperature=0.7, top_k=20,
                                    top_p=0.9, seed=3, num_return_sequences=3, max_new_tokens=6)
    for sequence in result.sequences[0]:
        for step, record in enumerate(sequence.logprobs):
            probs = reference.sampling_distribution(PROMPT + sequence.token_ids[:step], 0.7, 0.9, 20)
            assert record.logprob == pytest.approx(float(np.log(probs[record.token])), abs=1e-4)
            assert record.top == []
