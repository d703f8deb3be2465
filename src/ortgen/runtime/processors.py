"""Logits processors and warpers with transformers' semantics, in numpy.

Each class mirrors the transformers class of the same name (5.x): same order of
application (see :func:`build_processors`), same treatment of padding, same edge cases.
``scores`` is ``[rows, vocab]`` float32; ``input_ids`` is ``[rows, length]`` int64 (the
prompt, left-padded with pad_token_id exactly as transformers pads it, then the generated
tokens). Processors return a new array or modify ``scores`` in place and return it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

NEG_INF = np.float32(-np.inf)


class LogitsProcessor(Protocol):
    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray: ...


@dataclass
class RepetitionPenalty:
    """Penalise every token already in the row (transformers 5: left padding excluded)."""

    penalty: float
    padding_lengths: np.ndarray  # [rows]: left pads per row, skipped

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        rows, vocab = scores.shape
        mask = np.zeros((rows, vocab + 1), dtype=bool)
        positions = np.arange(input_ids.shape[1])[None, :]
        ids = np.where(positions < self.padding_lengths[:, None], vocab, input_ids)
        mask[np.arange(rows)[:, None], ids] = True
        mask = mask[:, :vocab]
        penalised = np.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return np.where(mask, penalised, scores).astype(np.float32, copy=False)


@dataclass
class NoRepeatNGram:
    """Ban tokens that would repeat an n-gram already in the row (prompt and padding included)."""

    size: int

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        length = input_ids.shape[1]
        if length < self.size:
            return scores
        n = self.size
        for row in range(input_ids.shape[0]):
            seq = input_ids[row]
            prefix = tuple(seq[length - n + 1:]) if n > 1 else ()
            banned = [seq[i + n - 1] for i in range(length - n + 1) if tuple(seq[i:i + n - 1]) == prefix]
            if banned:
                scores[row, banned] = NEG_INF
        return scores


@dataclass
class NoBadWords:
    """Ban single tokens always, and the last token of a multi-token sequence after its prefix.

    As in transformers, a bad word that is exactly one of the EOS tokens is ignored.
    """

    bad_words_ids: list[list[int]]
    eos_token_ids: list[int]

    def __post_init__(self) -> None:
        words = [w for w in self.bad_words_ids if not (len(w) == 1 and w[0] in self.eos_token_ids)]
        self._single = sorted({w[0] for w in words if len(w) == 1})
        self._multi = [(tuple(w[:-1]), w[-1]) for w in words if len(w) > 1]

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self._single:
            scores[:, self._single] = NEG_INF
        length = input_ids.shape[1]
        for prefix, last in self._multi:
            if len(prefix) > length:
                continue
            matching = (input_ids[:, length - len(prefix):] == np.array(prefix)).all(axis=1)
            scores[matching, last] = NEG_INF
        return scores


@dataclass
class MinLength:
    """No EOS while the whole row (prompt included) is shorter than ``min_length``."""

    min_length: int
    eos_token_ids: list[int]

    def bans_eos(self, length: int) -> bool:
        """Whether rows of ``length`` tokens (prompt included) may not end yet."""
        return length < self.min_length

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.bans_eos(input_ids.shape[1]):
            scores[:, self.eos_token_ids] = NEG_INF
        return scores


@dataclass
class MinNewTokens:
    """No EOS until ``min_new_tokens`` tokens were generated after the (padded) prompt."""

    prompt_length: int
    min_new_tokens: int
    eos_token_ids: list[int]

    def bans_eos(self, length: int) -> bool:
        """Whether rows of ``length`` tokens (prompt included) may not end yet."""
        return length - self.prompt_length < self.min_new_tokens

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self.bans_eos(input_ids.shape[1]):
            scores[:, self.eos_token_ids] = NEG_INF
        return scores


@dataclass
class Temperature:
    temperature: float

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return (scores / np.float32(self.temperature)).astype(np.float32, copy=False)


@dataclass
class TopK:
    """Keep the ``top_k`` highest scores (ties with the k-th kept too), at least ``min_tokens_to_keep``."""

    top_k: int
    min_tokens_to_keep: int = 1

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        k = min(max(self.top_k, self.min_tokens_to_keep), scores.shape[-1])
        kth = -np.partition(-scores, k - 1, axis=-1)[:, k - 1:k]  # the k-th largest per row
        scores[scores < kth] = NEG_INF
        return scores


@dataclass
class TopP:
    """Nucleus filtering: drop the tokens whose cumulative probability (ascending) is <= 1 - top_p."""

    top_p: float
    min_tokens_to_keep: int = 1

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        order = np.argsort(scores, axis=-1, kind="stable")  # ascending, as torch.sort
        sorted_scores = np.take_along_axis(scores, order, axis=-1)
        shifted = sorted_scores - sorted_scores[:, -1:]
        probs = np.exp(shifted, dtype=np.float32)
        probs /= probs.sum(axis=-1, keepdims=True)
        cumulative = np.cumsum(probs, axis=-1)
        remove_sorted = cumulative <= (1 - self.top_p)
        remove_sorted[:, -self.min_tokens_to_keep:] = False
        remove = np.zeros_like(remove_sorted)
        np.put_along_axis(remove, order, remove_sorted, axis=-1)
        scores[remove] = NEG_INF
        return scores


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float32 (what transformers' beam search scores with, whatever the
    model's dtype: it casts float16 logits to float32 first, and so do we)."""
    logits = logits.astype(np.float32, copy=False)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(np.float32, copy=False)


def apply(processors: Sequence[LogitsProcessor], input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    for processor in processors:
        scores = processor(input_ids, scores)
    return scores


def build_processors(
    *,
    repetition_penalty: float,
    padding_lengths: np.ndarray,
    no_repeat_ngram_size: int,
    bad_words_ids: list[list[int]] | None,
    min_length: int,
    min_new_tokens: int,
    prompt_length: int,
    eos_token_ids: list[int],
    do_sample: bool,
    num_beams: int,
    temperature: float,
    top_k: int,
    top_p: float,
    constraint: LogitsProcessor | None = None,
) -> list[LogitsProcessor]:
    """Processors then warpers, in transformers' ``_get_logits_processor`` order; a grammar's mask
    (``constraint``) after the processors, before the warpers (as transformers places a caller's
    ``logits_processor``), so that sampling's top-k / top-p choose among what the grammar allows."""
    processors: list[LogitsProcessor] = []
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(repetition_penalty, padding_lengths))
    if no_repeat_ngram_size > 0:
        processors.append(NoRepeatNGram(no_repeat_ngram_size))
    if bad_words_ids:
        processors.append(NoBadWords(bad_words_ids, eos_token_ids))
    if min_length > 0 and eos_token_ids:
        processors.append(MinLength(min_length, eos_token_ids))
    if min_new_tokens > 0 and eos_token_ids:
        processors.append(MinNewTokens(prompt_length, min_new_tokens, eos_token_ids))
    if constraint is not None:
        processors.append(constraint)
    if do_sample:
        keep = len(eos_token_ids) + 1 if num_beams > 1 and eos_token_ids else (2 if num_beams > 1 else 1)
        if temperature != 1.0:
            processors.append(Temperature(temperature))
        if top_k:
            processors.append(TopK(top_k, keep))
        if top_p < 1.0:
            processors.append(TopP(top_p, keep))
    return processors
