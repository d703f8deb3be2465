"""Acceptance: the in-graph GreedySearch and BeamSearch models generate transformers' tokens.

(Run with backend="graph": by default the Generator sends length_penalty != 0 beam search to
the step engine, which test_engine_parity.py covers.)

Grid: num_beams 1 and 4, num_return_sequences 1 and 2, repetition_penalty 1.0 and 1.3,
min_new_tokens 0 and 4, on a left-padded batch of three prompts, for every architecture.
Sequences are compared after stripping EOS and padding (ONNX Runtime writes pad where
transformers writes EOS: see docs/ort-vs-transformers.md).

Two model variants per architecture: plain random weights (EOS practically never
generated) with the default length_penalty=1.0, and a model whose EOS logit is pushed up so
that EOS is generated mid-sequence and beams finish at different steps. With EOS in play
ONNX Runtime's length normalisation differs from transformers', so that grid uses
length_penalty=0.0, where the two agree (the difference itself is tested in
test_ort_differences.py).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ortgen.runtime.generator import Generator, left_pad
from tests.helpers.models import ARCHS, EOS_BIAS
from tests.helpers.reference import hf_generate

MAX_NEW = 12
GREEDY_GRID = [dict(num_beams=1, num_return_sequences=1, repetition_penalty=rp, min_new_tokens=mn)
               for rp, mn in itertools.product([1.0, 1.3], [0, 4])]
BEAM_GRID = [dict(num_beams=4, num_return_sequences=nrs, repetition_penalty=rp, min_new_tokens=mn)
             for nrs, rp, mn in itertools.product([1, 2], [1.0, 1.3], [0, 4])]
EARLY_STOPPING_GRID = [dict(num_beams=4, num_return_sequences=2, early_stopping=True, repetition_penalty=rp)
                       for rp in (1.0, 1.3)]
GRID = GREEDY_GRID + BEAM_GRID + EARLY_STOPPING_GRID


def _prompts(vocab_size: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(map(int, rng.integers(4, vocab_size, size=n))) for n in (7, 3, 5)]


def _run_grid(zoo, arch, eos_bias, length_penalty):
    model = zoo.model(arch, eos_bias=eos_bias)
    generator = Generator.load(zoo.package(arch, eos_bias=eos_bias))
    hf = model.load()
    prompts = _prompts(model.vocab_size)
    ids, mask = left_pad(prompts, model.pad_token_id)
    outcomes = []
    for settings in GRID:
        # one EOS id on both sides (the operators stop on one; Llama 3's several: test_llama_family.py)
        result = generator.generate(input_ids=prompts, max_new_tokens=MAX_NEW, length_penalty=length_penalty,
                                    backend="graph", eos_token_id=model.eos_token_id, **settings)
        ours = [[seq.token_ids for seq in group] for group in result.sequences]
        theirs = hf_generate(hf, ids, mask, eos=model.eos_token_id, pad=model.pad_token_id,
                             max_new_tokens=MAX_NEW, length_penalty=length_penalty, **settings)
        expected_graph = ("generate_greedy.onnx" if settings["num_beams"] == 1 else
                          "generate_beam_early_stopping.onnx" if settings.get("early_stopping") else
                          "generate_beam.onnx")
        assert result.graph_file == expected_graph
        assert ours == theirs, f"{arch} {settings}: ortgen {ours} != transformers {theirs}"
        outcomes.append((settings, ours, result))
    return outcomes


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_matches_transformers(zoo, arch):
    _run_grid(zoo, arch, eos_bias=None, length_penalty=1.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_generation_matches_transformers_when_eos_is_generated(zoo, arch):
    outcomes = _run_grid(zoo, arch, eos_bias=EOS_BIAS[arch], length_penalty=0.0)
    lengths = {len(seq) for _, ours, _ in outcomes for group in ours for seq in group}
    finished = [seq.finished for _, _, result in outcomes for group in result.sequences for seq in group]
    # the grid must really exercise EOS: sequences of several lengths, some ended by EOS, some not
    assert len(lengths) >= 3, f"EOS fixture too weak or too strong: lengths {sorted(lengths)}"
    assert any(finished) and not all(finished)
    # and beams within one request finish at different steps
    beam_lengths = [{len(seq) for seq in group} for s, ours, _ in outcomes if s["num_return_sequences"] == 2
                    for group in ours]
    assert any(len(ls) > 1 for ls in beam_lengths)
    # min_new_tokens is honoured: no sequence shorter than 4 when it is set
    for settings, ours, _ in outcomes:
        if settings.get("min_new_tokens"):
            assert all(len(seq) >= settings["min_new_tokens"] for group in ours for seq in group)
