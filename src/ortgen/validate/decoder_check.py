"""Decoder level: ``decoder.onnx`` against transformers' forward, optimum-style.

For each case: output names first (``logits``, ``present_0..L-1``), then shapes, then
values within the architecture's tolerance. Cases use shapes unlike anything at export
(the decoder is built, not traced, but the check does not assume it): a left-padded
batch of three with empty past, one new token on that past, then three new tokens at once.
Padded positions are excluded: their outputs are masked everywhere downstream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ortgen.package import contract
from ortgen.package.manifest import Manifest
from ortgen.validate.reference import Reference
from ortgen.validate.report import DecoderCase, OutputCheck


def _run(session: Any, ids: np.ndarray, mask: np.ndarray, past: list[np.ndarray]) -> dict[str, np.ndarray]:
    feeds = {contract.INPUT_IDS: ids.astype(np.int32), contract.POSITION_IDS: np.zeros_like(ids, np.int32),
             contract.ATTENTION_MASK: mask.astype(np.int32)}
    feeds.update({contract.past_name(i): p for i, p in enumerate(past)})
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def _compare(name: str, ours: np.ndarray | None, theirs: np.ndarray, valid: np.ndarray, tolerance: float,
             batch_axis: int, time_axis: int) -> OutputCheck:
    expected = list(theirs.shape)
    if ours is None:
        return OutputCheck(name, expected, None, None, tolerance, "missing")
    if list(ours.shape) != expected:
        return OutputCheck(name, expected, list(ours.shape), None, tolerance, "shape")
    # move (batch, time) to the front and keep the valid positions
    a = np.moveaxis(ours, (batch_axis, time_axis), (0, 1))[valid]
    b = np.moveaxis(theirs, (batch_axis, time_axis), (0, 1))[valid]
    diff = float(np.abs(a.astype(np.float64) - b).max()) if a.size else 0.0
    return OutputCheck(name, expected, list(ours.shape), diff, tolerance, "ok" if diff <= tolerance else "values")


def _case(name: str, description: str, outputs: dict[str, np.ndarray], logits: np.ndarray,
          presents: list[np.ndarray], new_valid: np.ndarray, total_valid: np.ndarray, tolerance: float) -> DecoderCase:
    checks = [_compare(contract.LOGITS, outputs.get(contract.LOGITS), logits, new_valid, tolerance, 0, 1)]
    for i, present in enumerate(presents):
        key = contract.present_name(i)
        ours, valid = outputs.get(key), total_valid
        kept = present.shape[3]
        if ours is not None and kept < ours.shape[3]:  # a sliding-window model's cache keeps the last window - 1
            ours, valid = ours[:, :, :, -kept:], total_valid[:, -kept:]
        checks.append(_compare(key, ours, present, valid, tolerance, 1, 3))
    expected_names = {contract.LOGITS} | {contract.present_name(i) for i in range(len(presents))}
    for extra in sorted(set(outputs) - expected_names):
        checks.append(OutputCheck(extra, [], list(outputs[extra].shape), None, tolerance, "unexpected"))
    return DecoderCase(name, description, checks)


def check_decoder(session: Any, manifest: Manifest, reference: Reference, tolerance: float,
                  seed: int = 7) -> list[DecoderCase]:
    """Compare the decoder with transformers on three cases; see the module docstring."""
    a = manifest.architecture
    pad = manifest.special_tokens.pad_token_id
    prefix = manifest.tokenizer.prefix_ids if manifest.tokenizer else []
    rng = np.random.default_rng(seed)
    low = min(4, a.vocab_size - 1)
    lengths = [11, 6, 1]
    width = max(lengths)
    ids = np.full((3, width), pad, dtype=np.int64)
    mask = np.zeros((3, width), dtype=np.int64)
    for row, n in enumerate(lengths):
        tokens = (prefix + list(rng.integers(low, a.vocab_size, size=n)))[:n]
        ids[row, width - n:] = tokens
        mask[row, width - n:] = 1
    empty = [np.zeros((2, 3, a.kv_heads, 0, a.head_dim), np.float32) for _ in range(a.num_layers)]

    cases = []
    ours = _run(session, ids, mask, empty)
    logits, presents, cache = reference.forward(ids, mask)
    valid = mask.astype(bool)
    cases.append(_case("prompt", "batch 3 left-padded (11, 6, 1 tokens), no past", ours, logits, presents, valid,
                       valid, tolerance))

    for name, new, what in (("one step", 1, "1 new token on that past"), ("chunk", 3, "3 new tokens at once")):
        past = [ours[contract.present_name(i)] for i in range(a.num_layers)]
        tokens = rng.integers(low, a.vocab_size, size=(3, new))
        description = f"{what} (past {mask.shape[1]})"
        mask = np.concatenate([mask, np.ones((3, new), mask.dtype)], axis=1)
        ours = _run(session, tokens, mask, past)
        logits, presents, cache = reference.forward(tokens, mask, cache)
        cases.append(_case(name, description, ours, logits, presents, np.ones((3, new), bool), mask.astype(bool),
                           tolerance))
    return cases
