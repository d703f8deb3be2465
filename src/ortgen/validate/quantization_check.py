"""Quality of a reduced-precision package (float16, int8, int4) against the float32 transformers model.

A float16 or quantized package cannot match transformers token for token: every logit moves a
little (float16 keeps 11 significant bits, int8 / int4 weights 8 / 4).
What a user needs to know is how much, and how often that changes a greedy decision:

- **logit error**: the largest and the mean ``|logit_quantized - logit_fp32|`` over every
  position of every prompt, and the mean relative to the spread of the fp32 logits (their
  standard deviation over the vocabulary, averaged over positions): a scale-free number that
  says how far quantization moves logits compared with how far apart they are;
- **greedy agreement** (teacher-forced): transformers decodes each prompt greedily; at every
  step of that continuation, does the quantized decoder pick the same next token? Teacher
  forcing keeps one early disagreement from counting every later step as a disagreement;
- **same greedy output**: the share of prompts whose whole greedy continuation, decoded by
  ortgen's step engine on the quantized package, equals transformers';
- **same best beam**: the same for beam search (``BEAM_WIDTH`` beams): the share of prompts whose
  best beam equals transformers' best beam. Beam search ranks whole sequences by summed
  log-probabilities, so near-ties between beams flip more easily than a greedy choice.

Each metric is held against the tolerance stated for its weight type (``TOLERANCES``; see
docs/quantization.md for how they were set and what they were measured on).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from ortgen.package import contract
from ortgen.runtime.generator import Generator
from ortgen.validate.reference import Reference
from ortgen.validate.report import FAIL, PASS, QuantizationQuality


@dataclass(frozen=True)
class QualityTolerance:
    min_greedy_agreement: float  # teacher-forced share of steps with the same greedy token
    max_relative_logit_error: float  # mean |diff| / mean std of the fp32 logits over the vocabulary


# Stated tolerances per weight type, measured on random-weight models (docs/quantization.md).
TOLERANCES = {
    "float16": QualityTolerance(min_greedy_agreement=0.98, max_relative_logit_error=0.005),
    "int8": QualityTolerance(min_greedy_agreement=0.95, max_relative_logit_error=0.03),
    "int4": QualityTolerance(min_greedy_agreement=0.85, max_relative_logit_error=0.25),
}

BEAM_WIDTH = 4

log = logging.getLogger(__name__)


def _decoder_logits(session: Any, ids: np.ndarray, mask: np.ndarray, num_layers: int, heads: int,
                    head_dim: int, dtype: str) -> np.ndarray:
    empty = np.zeros((2, ids.shape[0], heads, 0, head_dim), dtype)
    feeds = {contract.INPUT_IDS: ids.astype(np.int32), contract.POSITION_IDS: np.zeros_like(ids, np.int32),
             contract.ATTENTION_MASK: mask.astype(np.int32)}
    feeds.update({contract.past_name(i): empty for i in range(num_layers)})
    return session.run([contract.LOGITS], feeds)[0]


def check_quantization(generator: Generator, reference: Reference, batches: list[list[list[int]]],
                       new_tokens: int = 24) -> QuantizationQuality:
    """Measure a float16 or quantized package against ``reference`` on ``batches`` of prompts (token ids)."""
    manifest = generator.manifest
    a = manifest.architecture
    special = manifest.special_tokens
    weights = manifest.weights_dtype
    tolerance = TOLERANCES.get(weights)
    options = dict(num_beams=1, do_sample=False, max_new_tokens=new_tokens)
    settings = generator.settings_for(**options)
    beam_options = dict(num_beams=BEAM_WIDTH, do_sample=False, max_new_tokens=new_tokens)
    beam_settings = generator.settings_for(**beam_options)
    session = generator.session(contract.DECODER)
    agree = steps = same = same_beam = prompts = 0
    max_abs = 0.0
    abs_sum = std_sum = 0.0
    abs_count = positions = 0
    for batch in batches:
        prompts += len(batch)
        width = max(map(len, batch))
        ids = np.full((len(batch), width), special.pad_token_id, np.int64)
        mask = np.zeros_like(ids)
        for row, prompt in enumerate(batch):
            ids[row, width - len(prompt):] = prompt
            mask[row, width - len(prompt):] = 1
        theirs = reference.generate(ids, mask, settings, eos=special.eos_token_id, pad=special.pad_token_id)
        ours = generator.generate(input_ids=batch, backend="engine", **options)
        theirs_beam = reference.generate(ids, mask, beam_settings, eos=special.eos_token_id, pad=special.pad_token_id)
        ours_beam = generator.generate(input_ids=batch, backend="engine", **beam_options)
        same_beam += sum(o[0].token_ids == t[0].token_ids for o, t in zip(ours_beam.sequences, theirs_beam))
        for row, prompt in enumerate(batch):
            reference_tokens = theirs[row][0].token_ids + ([special.eos_token_id] if theirs[row][0].finished else [])
            same += ours.sequences[row][0].token_ids == theirs[row][0].token_ids
            full = np.array([prompt + reference_tokens], np.int64)
            full_mask = np.ones_like(full)
            q = _decoder_logits(session, full, full_mask, a.num_layers, a.kv_heads, a.head_dim,
                                manifest.dtype)[0].astype(np.float64)
            r = reference.forward(full, full_mask)[0][0].astype(np.float64)
            diff = np.abs(q - r)
            max_abs = max(max_abs, float(diff.max()))
            abs_sum += float(diff.sum())
            abs_count += diff.size
            std_sum += float(r.std(axis=-1).sum())
            positions += r.shape[0]
            # position p predicts token p + 1: compare the decisions that made the continuation
            decided = slice(len(prompt) - 1, len(prompt) - 1 + len(reference_tokens))
            agree += int((q[decided].argmax(-1) == r[decided].argmax(-1)).sum())
            steps += len(reference_tokens)
    generator.release(contract.DECODER)
    quality = QuantizationQuality(
        weights=weights, prompts=prompts, steps=steps, greedy_agreement=agree / max(steps, 1),
        same_greedy_output=same / max(prompts, 1), same_best_beam=same_beam / max(prompts, 1),
        beam_width=BEAM_WIDTH,
        max_abs_logit_error=max_abs,
        mean_abs_logit_error=abs_sum / max(abs_count, 1),
        relative_logit_error=(abs_sum / max(abs_count, 1)) / max(std_sum / max(positions, 1), 1e-30),
    )
    if tolerance is None:
        quality.problems.append(f"no stated tolerance for {weights} weights")
    else:
        quality.tolerance = {"min_greedy_agreement": tolerance.min_greedy_agreement,
                             "max_relative_logit_error": tolerance.max_relative_logit_error}
        if quality.greedy_agreement < tolerance.min_greedy_agreement:
            quality.problems.append(f"greedy agreement {quality.greedy_agreement:.3f} < "
                                    f"{tolerance.min_greedy_agreement}")
        if quality.relative_logit_error > tolerance.max_relative_logit_error:
            quality.problems.append(f"relative logit error {quality.relative_logit_error:.4f} > "
                                    f"{tolerance.max_relative_logit_error}")
    quality.status = FAIL if quality.problems else PASS
    log.info("%s quality: greedy agreement %.3f over %d steps, same best beam %.2f, relative logit error %.4f",
             weights, quality.greedy_agreement, steps, quality.same_best_beam, quality.relative_logit_error)
    return quality
