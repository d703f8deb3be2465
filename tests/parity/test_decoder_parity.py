"""Acceptance: the exported decoder's logits and presents equal transformers' forward.

For every architecture (BioGPT with an odd number of heads, GPT-2, OPT pre-LN, OPT
post-LN with projected embeddings, the Llama family: grouped-query attention, rotary positions
with llama3 scaling, Mistral's 8-token window, Qwen2's biases): empty past with prompts of 1 and 17 tokens; past of 5
plus 1 new token; a left-padded batch of 3 prompts of different lengths. Positions that
are padding are excluded: their outputs are masked everywhere downstream.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from ortgen.package import contract
from ortgen.arch import get_spec
from ortgen.package.manifest import Manifest
from tests.helpers.models import ARCHS, MODEL_TYPE
from tests.helpers.reference import hf_forward

ATOL = 1e-4


class OrtDecoder:
    def __init__(self, package):
        self.manifest = Manifest.load(package)
        self.session = ort.InferenceSession(str(package / contract.GRAPH_FILES["decoder"]),
                                            providers=["CPUExecutionProvider"])
        a = self.manifest.architecture
        self.layers, self.heads, self.head_dim = a.num_layers, a.kv_heads, a.head_dim

    def empty_past(self, batch):
        return [np.zeros((2, batch, self.heads, 0, self.head_dim), np.float32) for _ in range(self.layers)]

    def run(self, ids, mask, past):
        feeds = {contract.INPUT_IDS: ids.astype(np.int32), contract.POSITION_IDS: np.zeros_like(ids, np.int32),
                 contract.ATTENTION_MASK: mask.astype(np.int32)}
        feeds.update({contract.past_name(i): p for i, p in enumerate(past)})
        out = self.session.run(None, feeds)
        return out[0], out[1:]


def _tolerance(arch: str) -> float:
    model_type = MODEL_TYPE[arch]
    return max(ATOL, get_spec(model_type).tolerance.logits_atol)


def _assert_close(ours, theirs, valid, what, atol):
    """Compare on valid (non-pad) positions; ``valid`` is a (B, S) boolean mask."""
    diff = np.abs(ours - theirs)[valid]
    assert diff.max() <= atol, f"{what}: max abs diff {diff.max():.3g} > {atol:g}"


def _assert_presents(ours, theirs, valid_total, atol):
    for layer, (a, b) in enumerate(zip(ours, theirs)):
        if b.shape[3] < a.shape[3]:  # transformers' sliding-window cache keeps only the last window - 1 tokens
            a, valid_total = a[:, :, :, -b.shape[3]:], valid_total[:, -b.shape[3]:]
        assert a.shape == b.shape, f"present_{layer}: shape {a.shape} vs {b.shape}"
        # a: [2, B, H, T, D]; select valid (b, t)
        sel = np.transpose(a, (1, 3, 0, 2, 4))[valid_total]
        ref = np.transpose(b, (1, 3, 0, 2, 4))[valid_total]
        diff = np.abs(sel - ref).max()
        assert diff <= atol, f"present_{layer}: max abs diff {diff:.3g} > {atol:g}"


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, zoo):
    arch = request.param
    return arch, zoo.model(arch).load(), OrtDecoder(zoo.package(arch))


@pytest.mark.parametrize("length", [1, 17])
def test_prompt_with_empty_past(pair, length):
    arch, hf, dec = pair
    rng = np.random.default_rng(length)
    ids = rng.integers(4, dec.manifest.architecture.vocab_size, size=(2, length))
    mask = np.ones_like(ids)
    logits, presents = dec.run(ids, mask, dec.empty_past(2))
    ref_logits, ref_presents, _ = hf_forward(hf, ids, mask)
    assert logits.shape == ref_logits.shape
    valid = mask.astype(bool)
    _assert_close(logits, ref_logits, valid, f"{arch} logits", _tolerance(arch))
    _assert_presents(presents, ref_presents, valid, _tolerance(arch))


def test_past_of_five_plus_one_token(pair):
    arch, hf, dec = pair
    rng = np.random.default_rng(5)
    ids = rng.integers(4, dec.manifest.architecture.vocab_size, size=(2, 6))
    mask = np.ones_like(ids)
    _, past = dec.run(ids[:, :5], mask[:, :5], dec.empty_past(2))
    logits, presents = dec.run(ids[:, 5:], mask, past)
    _, _, cache = hf_forward(hf, ids[:, :5], mask[:, :5])
    ref_logits, ref_presents, _ = hf_forward(hf, ids[:, 5:], mask, cache)
    assert presents[0].shape[3] == 6, "present holds past + new positions"
    _assert_close(logits, ref_logits, np.ones((2, 1), bool), f"{arch} step logits", _tolerance(arch))
    _assert_presents(presents, ref_presents, mask.astype(bool), _tolerance(arch))


def test_left_padded_batch_then_one_step(pair):
    arch, hf, dec = pair
    pad = dec.manifest.special_tokens.pad_token_id
    rng = np.random.default_rng(3)
    lengths = [9, 4, 1]
    width = max(lengths)
    ids = np.full((3, width), pad)
    mask = np.zeros((3, width), dtype=np.int64)
    for row, n in enumerate(lengths):
        ids[row, width - n:] = rng.integers(4, dec.manifest.architecture.vocab_size, size=n)
        mask[row, width - n:] = 1
    logits, past = dec.run(ids, mask, dec.empty_past(3))
    ref_logits, ref_presents, cache = hf_forward(hf, ids, mask)
    valid = mask.astype(bool)
    _assert_close(logits, ref_logits, valid, f"{arch} padded logits", _tolerance(arch))
    _assert_presents(past, ref_presents, valid, _tolerance(arch))
    # one decoding step on top of the padded prompt
    new = rng.integers(4, dec.manifest.architecture.vocab_size, size=(3, 1))
    mask2 = np.concatenate([mask, np.ones((3, 1), mask.dtype)], axis=1)
    logits2, presents2 = dec.run(new, mask2, past)
    ref2, ref_presents2, _ = hf_forward(hf, new, mask2, cache)
    _assert_close(logits2, ref2, np.ones((3, 1), bool), f"{arch} padded step logits", _tolerance(arch))
    _assert_presents(presents2, ref_presents2, mask2.astype(bool), _tolerance(arch))
