"""Generation level: token ids from the package against transformers' generate().

Every (prompt batch x settings) case runs through each backend of the package and through
transformers: the in-graph operator against transformers on the same left-padded batch (both
run the batch as one), the step engine against transformers on each prompt alone (the engine
runs each prompt as its own request, whatever else is running). A sequence matches when its tokens and its
EOS agree. Otherwise the first diverging step is located and both tokens are scored by
transformers' model (log-probabilities after the common prefix, and their gap). A case
with mismatches is *explained* only when a known difference accounts for it, and the
explanation is checked, not assumed:

- near-tie: every divergence is between tokens (or beams) whose log-probabilities differ by
  less than ``TIE_TOLERANCE``; float rounding decides such ties either way;
- length normalisation (in-graph BeamSearch only, length_penalty != 0, EOS involved): the
  same case with length_penalty = 0 is re-run on both sides and must match.

The step engine implements transformers' semantics, so only near-ties can explain it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

from ortgen.runtime.generator import GenerationResult, Generator, left_pad
from ortgen.runtime.graph_runner import GraphRunner, graph_key
from ortgen.runtime.settings import GenerationSettings
from ortgen.validate.reference import Reference, ReferenceSequence
from ortgen.validate.report import EXPLAINED, MATCH, MISMATCH, Divergence, GenerationCase, SequenceComparison

log = logging.getLogger(__name__)

TIE_TOLERANCE = 1e-3  # log-probability gap below which two choices are a numerical tie
SCORE_TOLERANCE = 1e-3  # beam scores, transformers' convention

LENGTH_NORMALISATION = (
    "length normalisation: ONNX Runtime divides a beam's log-probability by prompt + generated length "
    "(EOS not counted), transformers by the generated length including EOS; with EOS ending beams at "
    "different steps the operator ranks them differently. Checked: with length_penalty=0 both agree on "
    "this case (docs/ort-vs-transformers.md #5)"
)


def _with_eos(tokens: list[int], finished: bool, eos: int) -> list[int]:
    return tokens + ([eos] if finished else [])


def find_divergence(reference: Reference, prompt: list[int], ours: list[int], theirs: list[int], eos: int,
                    tokenizer: Any | None) -> Divergence | None:
    """The first step where two token lists (EOS appended when finished) differ, scored by transformers."""
    k = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
    if k == len(ours) == len(theirs):
        return None
    ours_token = ours[k] if k < len(ours) else None
    theirs_token = theirs[k] if k < len(theirs) else None
    logprobs = reference.next_token_logprobs(prompt + ours[:k])
    lp_ours = float(logprobs[ours_token]) if ours_token is not None else None
    lp_theirs = float(logprobs[theirs_token]) if theirs_token is not None else None
    gap = lp_theirs - lp_ours if lp_ours is not None and lp_theirs is not None else None

    def text(token: int | None) -> str | None:
        if token is None:
            return "(ended)"
        if token == eos:
            return "EOS"
        return tokenizer.decode([token], skip_special_tokens=False) if tokenizer is not None else None

    return Divergence(k, ours_token, theirs_token, lp_ours, lp_theirs, gap, text(ours_token), text(theirs_token))


def _compare(result: GenerationResult, theirs: list[list[ReferenceSequence]], batch: list[list[int]],
             reference: Reference, eos: int, tokenizer: Any | None) -> tuple[list[SequenceComparison], float | None]:
    comparisons, score_diffs = [], []
    for b, (our_group, their_group) in enumerate(zip(result.sequences, theirs)):
        for r, (o, t) in enumerate(zip(our_group, their_group)):
            a = _with_eos(o.token_ids, o.stop_reason == "eos", eos)
            c = _with_eos(t.token_ids, t.finished, eos)
            same = a == c
            divergence = None if same else find_divergence(reference, batch[b], a, c, eos, tokenizer)
            if same and o.score is not None and t.score is not None:
                score_diffs.append(abs(o.score - t.score))
            comparisons.append(SequenceComparison(
                prompt_index=b, rank=r, status=MATCH if same else MISMATCH,
                ortgen_tokens=o.token_ids, transformers_tokens=t.token_ids,
                ortgen_finished=o.stop_reason == "eos", transformers_finished=t.finished,
                ortgen_score=o.score, transformers_score=t.score, divergence=divergence,
            ))
    return comparisons, (max(score_diffs) if score_diffs else None)


def _same_hypotheses_reordered(comparisons: list[SequenceComparison]) -> bool:
    """Beam search returned the same hypotheses per prompt, only ordered differently among near-equal scores."""
    by_prompt: dict[int, list[SequenceComparison]] = {}
    for c in comparisons:
        by_prompt.setdefault(c.prompt_index, []).append(c)
    for group in by_prompt.values():
        ours = sorted((c.ortgen_tokens, c.ortgen_finished) for c in group)
        theirs = sorted((c.transformers_tokens, c.transformers_finished) for c in group)
        if ours != theirs:
            return False
        for c in group:
            if c.status == MISMATCH and (c.ortgen_score is None or c.transformers_score is None):
                return False
        scores = [c.transformers_score for c in group if c.transformers_score is not None]
        moved = [c for c in group if c.status == MISMATCH]
        if moved and any(min(abs(c.ortgen_score - s) for s in scores) > SCORE_TOLERANCE for c in moved):
            return False
    return True


def generate_with(generator: Generator, backend: str, batch: list[list[int]], options: dict[str, Any]
                  ) -> GenerationResult:
    """Run ``options`` on one backend: "engine", or "graph" even where the operators are known to differ
    (validation's job is to show, and explain, those differences)."""
    if backend == "engine":
        return generator.generate(input_ids=batch, **{**options, "backend": "engine"})
    settings = generator.settings_for(**options)
    key = graph_key(settings)
    runner = GraphRunner(generator.session, generator.manifest.special_tokens.eos_token_id, generator._decode)
    started = time.perf_counter()
    sequences, extra = runner.run(batch, settings)
    return GenerationResult(sequences, batch, settings, generator.manifest.graphs[key].file, key,
                            time.perf_counter() - started, "graph", "validation", extra)


def _reference(reference: Reference, backend: str, batch: list[list[int]], ids, mask, settings: GenerationSettings,
               eos: int, pad: int) -> list[list[ReferenceSequence]]:
    """transformers' answer to compare ``backend`` with: the batch as one for the operators, each
    prompt alone for the step engine."""
    if backend == "engine":
        return reference.generate_alone(batch, settings, eos=eos, pad=pad)
    return reference.generate(ids, mask, settings, eos=eos, pad=pad, tokenizer=None)


def run_case(
    generator: Generator,
    reference: Reference,
    batch: list[list[int]],
    batch_index: int,
    entry: dict[str, Any],
    backend: str = "graph",
) -> GenerationCase:
    """One settings entry on one prompt batch, on one backend."""
    options = {k: v for k, v in entry.items() if k != "name"}
    special = generator.manifest.special_tokens
    eos, pad = special.eos_token_id, special.pad_token_id
    started = time.perf_counter()
    ours = generate_with(generator, backend, batch, options)
    ours_seconds = time.perf_counter() - started
    ids, mask = left_pad(batch, pad)  # transformers' own padding
    started = time.perf_counter()
    theirs = _reference(reference, backend, batch, ids, mask, ours.settings, eos, pad)
    theirs_seconds = time.perf_counter() - started

    comparisons, max_score_diff = _compare(ours, theirs, batch, reference, eos, generator.tokenizer)
    status, explanation = MATCH, None
    if any(c.status == MISMATCH for c in comparisons):
        status, explanation = _explain(generator, backend, reference, batch, ids, mask, ours.settings, comparisons,
                                       options, eos, pad)
    elif max_score_diff is not None and max_score_diff > SCORE_TOLERANCE:
        status, explanation = MISMATCH, f"same tokens, but beam scores differ by up to {max_score_diff:.2g}"
    return GenerationCase(
        name=entry["name"], settings=ours.settings.as_dict(), graph=ours.graph_file, batch=batch_index,
        status=status, explanation=explanation, sequences=comparisons, max_score_diff=max_score_diff,
        ortgen_seconds=ours_seconds, transformers_seconds=theirs_seconds, prompt_ids=[list(p) for p in batch],
        backend=backend,
    )


def _explain(generator: Generator, backend: str, reference: Reference, batch: list[list[int]], ids, mask,
             settings: GenerationSettings, comparisons: list[SequenceComparison], options: dict[str, Any],
             eos: int, pad: int) -> tuple[str, str | None]:
    mismatched = [c for c in comparisons if c.status == MISMATCH]
    gaps = [c.divergence.gap for c in mismatched if c.divergence is not None]
    if len(gaps) == len(mismatched) and all(g is not None and abs(g) < TIE_TOLERANCE for g in gaps):
        return EXPLAINED, (f"near-tie: at each divergence the two tokens are within {max(abs(g) for g in gaps):.1e} "
                           f"in log-probability (< {TIE_TOLERANCE:g}); float rounding decides")
    if settings.num_beams > 1 and _same_hypotheses_reordered(comparisons):
        return EXPLAINED, "near-tie: the same hypotheses, ordered differently among scores within tolerance"
    eos_involved = any(c.ortgen_finished or c.transformers_finished for c in comparisons)
    if backend == "graph" and settings.strategy == "beam" and settings.length_penalty != 0 and eos_involved:
        neutral = replace(settings, length_penalty=0.0)
        ours = generate_with(generator, backend, batch, {**options, "length_penalty": 0.0})
        theirs = _reference(reference, backend, batch, ids, mask, neutral, eos, pad)
        again, _ = _compare(ours, theirs, batch, reference, eos, generator.tokenizer)
        if all(c.status == MATCH for c in again):
            return EXPLAINED, LENGTH_NORMALISATION
    return MISMATCH, None
