"""Run a package's in-graph generation models (com.microsoft BeamSearch / GreedySearch / Sampling).

One ONNX Runtime call per request: the prompt batch is left-padded, the operator loops
inside ONNX Runtime, and its output rows are read back up to their first EOS.

    prompts (token ids) ─► left-pad (B, S) + attention_mask ─► generate_<strategy>.onnx
                        ◄─ rows up to the first EOS, beam scores in transformers' convention
"""

from __future__ import annotations

import secrets
from typing import Any, Callable, Sequence

import numpy as np

from ortgen.package import contract
from ortgen.errors import GenerationSettingsError
from ortgen.runtime.results import GeneratedSequence
from ortgen.runtime.settings import BEAM, SAMPLE, GenerationSettings

OPERATORS = {contract.BEAM: "BeamSearch", contract.BEAM_EARLY_STOPPING: "BeamSearch",
             contract.GREEDY: "GreedySearch", contract.SAMPLE: "Sampling"}


def left_pad(batch: Sequence[Sequence[int]], pad_id: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Left-pad token lists into ``input_ids`` and ``attention_mask`` (int32, B x S).

    With ``pad_id=None`` each row is padded with its own first token. Padded positions
    are masked out and positions come from the mask, so the filler's value only matters
    to ONNX Runtime's repetition penalty, which penalises every id in the row, padding
    included; transformers (5.x) skips the padding. A row's own first token is penalised
    anyway, so padding with it makes the two agree.
    """
    if not batch or any(len(ids) == 0 for ids in batch):
        raise GenerationSettingsError("every prompt must have at least one token")
    width = max(len(ids) for ids in batch)
    input_ids = np.zeros((len(batch), width), dtype=np.int32)
    mask = np.zeros((len(batch), width), dtype=np.int32)
    for row, ids in enumerate(batch):
        input_ids[row, : width - len(ids)] = ids[0] if pad_id is None else pad_id
        input_ids[row, width - len(ids):] = ids
        mask[row, width - len(ids):] = 1
    return input_ids, mask


def hf_beam_score(ort_score: float, prompt_len: int, generated: int, finished: bool, length_penalty: float) -> float:
    """Convert ONNX Runtime's beam score to transformers' convention.

    ONNX Runtime divides a hypothesis' log-probability sum by (prompt + generated)^lp,
    counting neither EOS nor the prompt separately; transformers divides by the number
    of generated tokens, EOS included.
    """
    ort_len = prompt_len + generated
    hf_len = generated + (1 if finished else 0)
    if length_penalty == 0 or hf_len == 0:
        return ort_score
    return ort_score * (ort_len ** length_penalty) / (hf_len ** length_penalty)


def graph_key(settings: GenerationSettings) -> str:
    """Which generation graph of a package runs ``settings``."""
    if settings.strategy == BEAM:
        return contract.BEAM_EARLY_STOPPING if settings.early_stopping is True else contract.BEAM
    return contract.SAMPLE if settings.strategy == SAMPLE else contract.GREEDY


class GraphRunner:
    """Feeds one request to a generation model and reads its output."""

    def __init__(self, session_for: Callable[[str], Any], eos_token_id: int,
                 decode: Callable[[list[int]], str | None]) -> None:
        self.session_for, self.eos, self.decode = session_for, eos_token_id, decode

    def run(self, batch: Sequence[Sequence[int]], settings: GenerationSettings
            ) -> tuple[list[list[GeneratedSequence]], dict[str, Any]]:
        ids, mask = left_pad(batch)
        if settings.strategy == BEAM:
            return self._beam(ids, mask, settings)
        if settings.strategy == SAMPLE:
            return self._sampling(ids, mask, settings)
        return self._greedy(ids, mask, settings)

    def _feeds(self, ids: np.ndarray, mask: np.ndarray, s: GenerationSettings) -> dict[str, np.ndarray]:
        width = ids.shape[1]
        # the operators' min_length counts the prompt: it covers min_length and min_new_tokens at once
        min_total = max(s.min_length, width + s.min_new_tokens if s.min_new_tokens else 0)
        return {
            contract.INPUT_IDS: ids,
            contract.MAX_LENGTH: np.array([width + s.max_new_tokens], dtype=np.int32),
            contract.MIN_LENGTH: np.array([min_total], dtype=np.int32),
            contract.REPETITION_PENALTY: np.array([s.repetition_penalty], dtype=np.float32),
            contract.ATTENTION_MASK: mask,
        }

    def _sequence(self, row: np.ndarray, prompt_width: int, eos_ids: Sequence[int] = ()) -> GeneratedSequence:
        """A row's new tokens up to the first EOS (the operator's, or any of ``eos_ids``).

        The generation graphs write EOS after a finished sequence (their fill token), and
        GreedySearch / Sampling leave the tail uninitialised once all rows have finished:
        everything after the first EOS is discarded. The operators stop on one EOS id; a model
        with several (Llama 3) has its other ones cut here, which is exact for greedy search and
        sampling (a sequence's tokens never depend on what follows them).
        """
        new = [int(t) for t in row[prompt_width:]]
        stops = {self.eos, *eos_ids}
        end = next((i for i, t in enumerate(new) if t in stops), None)
        if end is not None:
            tokens = new[:end]
            return GeneratedSequence(tokens, self.decode(tokens), True, stop_reason="eos")
        return GeneratedSequence(new, self.decode(new), False)

    def _greedy(self, ids, mask, s):
        out = self.session_for(contract.GREEDY).run([contract.SEQUENCES], self._feeds(ids, mask, s))[0]
        return [[self._sequence(row, ids.shape[1], s.eos_token_ids)] for row in out], {}

    def _sampling(self, ids, mask, s):
        n = s.num_return_sequences
        seed = s.seed if s.seed is not None else secrets.randbelow(2**31 - 2)
        feeds = self._feeds(np.repeat(ids, n, axis=0), np.repeat(mask, n, axis=0), s)
        # the operator's seed is an int32, and 0 means "seed from the clock": map every seed into
        # [1, 2**31 - 1) so each is reproducible
        feeds[contract.SEED] = np.array([seed % (2**31 - 2) + 1], dtype=np.int32)
        out = self.session_for(contract.SAMPLE).run([contract.SEQUENCES], feeds)[0]
        rows = [self._sequence(row, ids.shape[1], s.eos_token_ids) for row in out]
        return [rows[b * n:(b + 1) * n] for b in range(ids.shape[0])], {"seed": seed}

    def _beam(self, ids, mask, s):
        feeds = self._feeds(ids, mask, s)
        feeds[contract.NUM_BEAMS] = np.array([s.num_beams], dtype=np.int32)
        feeds[contract.NUM_RETURN_SEQUENCES] = np.array([s.num_return_sequences], dtype=np.int32)
        feeds[contract.LENGTH_PENALTY] = np.array([s.length_penalty], dtype=np.float32)
        out, scores = self.session_for(graph_key(s)).run([contract.SEQUENCES, contract.SEQUENCES_SCORES], feeds)
        width = ids.shape[1]
        result = []
        for b in range(out.shape[0]):
            group = []
            for r in range(out.shape[1]):
                seq = self._sequence(out[b, r], width, s.eos_token_ids)
                score = hf_beam_score(float(scores[b, r]), width, len(seq.token_ids), seq.finished, s.length_penalty)
                group.append(GeneratedSequence(seq.token_ids, seq.text, seq.finished, score, seq.stop_reason))
            result.append(group)
        return result, {"onnxruntime_scores": scores.tolist()}
