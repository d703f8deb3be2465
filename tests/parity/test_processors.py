"""Each numpy logits processor equals transformers' on random inputs (left-padded histories)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers.generation import logits_process as hf

from ortgen.runtime import processors as ours

V = 60


@pytest.fixture()
def batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, size=(4, 12))
    ids[0, :3] = 1  # left padding (pad id 1) in two rows
    ids[2, :5] = 1
    ids[1, -4:] = ids[1, 2:6]  # a repeated n-gram
    scores = (rng.standard_normal((4, V)) * 3).astype(np.float32)
    scores[3, :8] = scores[3, 8]  # ties
    return ids, scores


CASES = [
    (lambda: ours.RepetitionPenalty(1.4, np.array([3, 0, 5, 0])),
     lambda: hf.RepetitionPenaltyLogitsProcessor(1.4, prompt_ignore_length=torch.tensor([3, 0, 5, 0]))),
    (lambda: ours.NoRepeatNGram(2), lambda: hf.NoRepeatNGramLogitsProcessor(2)),
    (lambda: ours.NoRepeatNGram(3), lambda: hf.NoRepeatNGramLogitsProcessor(3)),
    (lambda: ours.NoBadWords([[5], [7, 8], [2], [1, 2, 3]], [2]),
     lambda: hf.NoBadWordsLogitsProcessor([[5], [7, 8], [2], [1, 2, 3]], eos_token_id=2)),
    (lambda: ours.MinLength(15, [2, 9]), lambda: hf.MinLengthLogitsProcessor(15, [2, 9])),
    (lambda: ours.MinNewTokens(10, 3, [2]), lambda: hf.MinNewTokensLengthLogitsProcessor(10, 3, [2])),
    (lambda: ours.Temperature(0.7), lambda: hf.TemperatureLogitsWarper(0.7)),
    (lambda: ours.TopK(5), lambda: hf.TopKLogitsWarper(5)),
    (lambda: ours.TopK(1, 2), lambda: hf.TopKLogitsWarper(1, min_tokens_to_keep=2)),
    (lambda: ours.TopP(0.7), lambda: hf.TopPLogitsWarper(0.7)),
    (lambda: ours.TopP(0.05, 3), lambda: hf.TopPLogitsWarper(0.05, min_tokens_to_keep=3)),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_processor_equals_transformers(batch, case):
    ids, scores = batch
    make_ours, make_theirs = CASES[case]
    got = make_ours()(ids.copy(), scores.copy())
    expected = make_theirs()(torch.tensor(ids), torch.tensor(scores)).numpy()
    assert np.array_equal(np.isneginf(got), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-6)


def test_log_softmax_matches_torch(batch):
    _, scores = batch
    np.testing.assert_allclose(ours.log_softmax(scores), torch.log_softmax(torch.tensor(scores), -1).numpy(),
                               atol=2e-6)
