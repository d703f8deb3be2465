"""Greedy search, sampling and beam search (with or without sampling), as transformers does them.

The loops port transformers' ``_sample`` and ``_beam_search`` (5.x, the vectorised beam
search) to numpy over the step engine (:mod:`ortgen.runtime.engine_decoder`):

- the token history a processor sees is transformers' own: prompts left-padded with
  pad_token_id, then the new tokens (the KV cache does not need the padding);
- each prompt runs once, and its keys and values are stored once for all its beams / samples
  (see :mod:`ortgen.runtime.engine_decoder`);
- beam search: log-softmax, processors, beam scores added, the top ``max(2, 1 + n_eos) *
  num_beams`` continuations (sampled without replacement when sampling), finished
  hypotheses scored by ``sum_logprobs / generated_length ** length_penalty`` (EOS
  counted), early stopping True / False / "never" with transformers' heuristics.

Sampling uses numpy's PCG64 (``seed``): same seed, same tokens; not torch's stream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import numpy as np

from ortgen.runtime.engine_decoder import EngineDecoder
from ortgen.runtime.processors import LogitsProcessor, apply, log_softmax

NEG = np.float32(-1.0e9)


@dataclass(frozen=True)
class SearchSpec:
    """Everything a search loop needs, resolved."""

    max_new_tokens: int
    num_beams: int
    num_return_sequences: int
    do_sample: bool
    length_penalty: float
    early_stopping: bool | str
    eos_token_ids: list[int]
    pad_token_id: int
    processors: list[LogitsProcessor]
    stop_strings: Callable[[Sequence[Sequence[int]]], np.ndarray] | None = None
    seed: int | None = None


@dataclass
class Hypothesis:
    """Generated tokens (EOS included when the model produced it) and how the sequence ended."""

    tokens: list[int]
    stop_reason: str  # "eos", "stop_string" or "length"
    score: float | None = None


@dataclass
class StepEvent:
    """Streaming: the tokens each row gained in one step (rows in prompt order)."""

    new_tokens: list[list[int]]
    finished: list[bool] = field(default_factory=list)


def _left_padded(prompts: Sequence[Sequence[int]], pad: int, total: int, repeat: int) -> np.ndarray:
    """transformers' token history: [rows, total], prompts right-aligned, row b*repeat + r."""
    width = max(len(p) for p in prompts)
    history = np.full((len(prompts) * repeat, total), pad, dtype=np.int64)
    for b, prompt in enumerate(prompts):
        history[b * repeat:(b + 1) * repeat, width - len(prompt):width] = prompt
    return history


def _stop_reason(tokens: Sequence[int], eos: Sequence[int], stopped_by_string: bool) -> str:
    if tokens and tokens[-1] in eos:
        return "eos"
    return "stop_string" if stopped_by_string else "length"


def _gumbel(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return -np.log(-np.log(rng.random(shape, dtype=np.float64).clip(1e-300, 1.0))).astype(np.float32)


def sample_or_greedy(
    decoder: EngineDecoder, prompts: Sequence[Sequence[int]], spec: SearchSpec
) -> Iterator[StepEvent | list[list[Hypothesis]]]:
    """Greedy search (``do_sample=False``) or multinomial sampling; yields a StepEvent per step,
    then the result: per prompt, ``num_return_sequences`` hypotheses."""
    B, n = len(prompts), spec.num_return_sequences
    rows = B * n
    width = max(len(p) for p in prompts)
    total = width + spec.max_new_tokens
    eos = np.array(spec.eos_token_ids, dtype=np.int64)
    rng = np.random.default_rng(spec.seed)

    # the prompts run once; each prompt's n sequences then share its cache row (rows of the
    # history, like transformers', are b * n + r)
    decoding, first = decoder.start(prompts, n, spec.max_new_tokens)
    logits = first[np.repeat(np.arange(B), n)]
    history = _left_padded(prompts, spec.pad_token_id, total, n)
    unfinished = np.ones(rows, dtype=bool)
    ended_at = np.full(rows, spec.max_new_tokens, dtype=np.int64)  # generated tokens kept per row
    reasons = np.array(["length"] * rows, dtype=object)
    cur = width
    for step in range(spec.max_new_tokens):
        scores = apply(spec.processors, history[:, :cur], logits.astype(np.float32, copy=True))
        if spec.do_sample:
            tokens = np.argmax(np.where(np.isfinite(scores), scores + _gumbel(rng, scores.shape), -np.inf), axis=-1)
        else:
            tokens = np.argmax(scores, axis=-1)
        tokens = np.where(unfinished, tokens, spec.pad_token_id)
        history[:, cur] = tokens
        cur += 1
        by_eos = np.isin(tokens, eos) & unfinished
        by_string = np.zeros(rows, dtype=bool)
        if spec.stop_strings is not None:
            by_string = spec.stop_strings([history[r, width:cur] for r in range(rows)]) & unfinished & ~by_eos
        newly = by_eos | by_string
        ended_at[newly] = step + 1
        reasons[by_eos] = "eos"
        reasons[by_string] = "stop_string"
        emitted = unfinished.copy()
        unfinished &= ~newly
        yield StepEvent([[int(tokens[r])] if emitted[r] else [] for r in range(rows)], list(~unfinished))
        if not unfinished.any() or cur >= total:
            break
        logits = decoding.step(tokens.reshape(B, n)).reshape(rows, -1)
    results: list[list[Hypothesis]] = []
    for b in range(B):
        group = []
        for r in range(n):
            row = b * n + r
            tokens_out = [int(t) for t in history[row, width:width + ended_at[row]]]
            group.append(Hypothesis(tokens_out, str(reasons[row])))
        results.append(group)
    yield results


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the indices and values of the k largest scores, best first (ties: lower index first).

    argpartition + a sort of k items: a full sort of num_beams * vocab scores per step cost
    more than the decoder step itself.
    """
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.stack([np.lexsort((part[b], -values[b])) for b in range(scores.shape[0])])
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(values, order, axis=1)


def beam_search(
    decoder: EngineDecoder, prompts: Sequence[Sequence[int]], spec: SearchSpec
) -> list[list[Hypothesis]]:
    """transformers' vectorised beam search (beam sampling when ``do_sample``)."""
    B, nb, n_out = len(prompts), spec.num_beams, spec.num_return_sequences
    width = max(len(p) for p in prompts)
    max_length = width + spec.max_new_tokens
    eos = np.array(spec.eos_token_ids, dtype=np.int64)
    K = max(2, 1 + len(spec.eos_token_ids)) * nb
    top_nb_mask = np.zeros(K, dtype=bool)
    top_nb_mask[:nb] = True
    rng = np.random.default_rng(spec.seed)
    lp, early = spec.length_penalty, spec.early_stopping

    decoding, first = decoder.start(prompts, nb, spec.max_new_tokens)  # the prompt once, shared by its beams
    fill = spec.pad_token_id
    running = _left_padded(prompts, fill, max_length, nb).reshape(B, nb, max_length)
    sequences = running.copy()
    lengths_fin = np.zeros((B, nb), dtype=np.int64)  # generated tokens of finished hypotheses
    by_string_fin = np.zeros((B, nb), dtype=bool)
    running_scores = np.zeros((B, nb), dtype=np.float32)
    running_scores[:, 1:] = NEG
    beam_scores = np.full((B, nb), NEG, dtype=np.float32)
    finished = np.zeros((B, nb), dtype=bool)
    heuristic_unsatisfied = np.ones((B, 1), dtype=bool)
    cur = width
    logits = np.repeat(first[:, None, :], nb, axis=1)  # (B, nb, V)
    V = first.shape[-1]
    while True:
        flat_running = running[:, :, :cur].reshape(B * nb, cur)
        log_probs = log_softmax(logits.reshape(B * nb, V))
        log_probs = apply(spec.processors, flat_running, log_probs)
        accumulated = (log_probs.reshape(B, nb, V) + running_scores[:, :, None]).reshape(B, nb * V)
        if spec.do_sample:  # multinomial without replacement == Gumbel top-k
            keys = np.where(np.isfinite(accumulated), accumulated + _gumbel(rng, accumulated.shape), -np.inf)
            top = np.argpartition(-keys, K - 1, axis=1)[:, :K]
            top_scores = np.take_along_axis(accumulated, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
        else:
            top, top_scores = _top_k(accumulated, K)
        source_beam, tokens = top // V, top % V
        candidates = np.take_along_axis(running, source_beam[:, :, None], axis=1)  # (B, K, max_length)
        candidates[:, :, cur] = tokens
        hits = np.isin(tokens, eos) | (cur + 1 >= max_length)
        string_hits = np.zeros_like(hits)
        if spec.stop_strings is not None:
            string_hits = spec.stop_strings([candidates[b, k, width:cur + 1] for b in range(B) for k in range(K)])
            string_hits = string_hits.reshape(B, K)
            hits |= string_hits

        # the best num_beams unfinished continuations keep running
        running_candidate_scores = top_scores + hits.astype(np.float32) * NEG
        keep = np.argsort(-running_candidate_scores, axis=1, kind="stable")[:, :nb]
        running = np.take_along_axis(candidates, keep[:, :, None], axis=1)
        running_scores = np.take_along_axis(running_candidate_scores, keep, axis=1)
        parents = np.take_along_axis(source_beam, keep, axis=1)  # (B, nb)

        # finished hypotheses: only among the top num_beams candidates
        just_finished = hits & top_nb_mask[None, :]
        scores_fin = top_scores / np.float32((cur + 1 - width) ** lp)
        all_done = finished.all(axis=-1, keepdims=True) & (early is True)
        scores_fin = scores_fin + all_done.astype(np.float32) * NEG
        scores_fin = scores_fin + (~heuristic_unsatisfied).astype(np.float32) * NEG
        scores_fin = scores_fin + (~just_finished).astype(np.float32) * NEG
        merged_scores = np.concatenate([beam_scores, scores_fin], axis=1)
        best = np.argsort(-merged_scores, axis=1, kind="stable")[:, :nb]
        sequences = np.take_along_axis(np.concatenate([sequences, candidates], axis=1), best[:, :, None], axis=1)
        beam_scores = np.take_along_axis(merged_scores, best, axis=1)
        finished = np.take_along_axis(np.concatenate([finished, just_finished], axis=1), best, axis=1)
        new_lengths = np.full((B, K), cur + 1 - width, dtype=np.int64)
        lengths_fin = np.take_along_axis(np.concatenate([lengths_fin, new_lengths], axis=1), best, axis=1)
        by_string_fin = np.take_along_axis(np.concatenate([by_string_fin, string_hits], axis=1), best, axis=1)

        cur += 1
        # early-stop heuristic, then whether anything can still change
        best_length = (max_length - width) if (early == "never" and lp > 0.0) else (cur - width)
        best_possible = running_scores[:, :1] / np.float32(best_length ** lp)
        worst_finished = np.where(finished, beam_scores.min(axis=1, keepdims=True), NEG)
        heuristic_unsatisfied = heuristic_unsatisfied & (best_possible > worst_finished).any(axis=-1, keepdims=True)
        improvement_possible = heuristic_unsatisfied.any()
        open_beam = not (finished.all() and early is True)
        valid_continuations = not hits.all()
        if not (improvement_possible and open_beam and valid_continuations):
            break

        # the surviving beams continue their parents' paths with their new tokens
        logits = decoding.step(running[:, :, cur - 1], parents)

    results: list[list[Hypothesis]] = []
    for b in range(B):
        group = []
        for r in range(n_out):
            length = int(lengths_fin[b, r])
            tokens = [int(t) for t in sequences[b, r, width:width + length]]
            reason = _stop_reason(tokens, spec.eos_token_ids, bool(by_string_fin[b, r]))
            group.append(Hypothesis(tokens, reason, float(beam_scores[b, r])))
        results.append(group)
    return results
