"""The Python API: ``Generator.load(package).generate(prompts, ...)``.

Reads the package's manifest, tokenizes and left-pads a batch of prompts, runs the
in-graph generation model that matches the requested strategy (BeamSearch,
GreedySearch or Sampling) and turns its output back into text. Needs neither torch nor
transformers.

    prompts ─► tokenizer ─► left-pad (B, S) + attention_mask ─► generate_<strategy>.onnx
            ◄─ decode ◄─ strip prompt / pad, EOS bookkeeping ◄─ sequences (B, R, max_length)
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ortgen import contract
from ortgen.errors import GenerationSettingsError, OrtgenError, PackageError
from ortgen.manifest import Manifest
from ortgen.runtime.prompt_format import PromptFormat
from ortgen.runtime.sessions import create_session, resolve_providers
from ortgen.runtime.settings import GenerationRequest, GenerationSettings, check_lengths, resolve_settings
from ortgen.runtime.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

_OPERATORS = {contract.BEAM: "BeamSearch", contract.GREEDY: "GreedySearch", contract.SAMPLE: "Sampling"}


@dataclass(frozen=True)
class GeneratedSequence:
    """One returned sequence: the new tokens only (the prompt and EOS are not included)."""

    token_ids: list[int]
    text: str | None
    finished: bool  # True when the model ended it with EOS before max_new_tokens
    score: float | None = None  # beam search: sum of log-probs / generated_length ** length_penalty


@dataclass(frozen=True)
class Answer:
    """A QA fine-tune's answer: the parsed label (yes / no / maybe, None if unparseable) and the text."""

    answer: str | None
    text: str
    result: "GenerationResult"


@dataclass(frozen=True)
class GenerationResult:
    """Outputs of one generate() call, one list of sequences per prompt."""

    sequences: list[list[GeneratedSequence]]
    prompt_ids: list[list[int]]
    settings: GenerationSettings
    graph_file: str  # which generation model ran
    operator: str  # com.microsoft operator inside it
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[list[str]]:
        return [[s.text or "" for s in group] for group in self.sequences]

    @property
    def backend(self) -> str:
        return f"{self.graph_file} (com.microsoft {self.operator})"


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


def _hf_beam_score(ort_score: float, prompt_len: int, generated: int, finished: bool, length_penalty: float) -> float:
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


class Generator:
    """A loaded package. Sessions are created on first use of each generation model."""

    def __init__(
        self,
        package_dir: Path,
        manifest: Manifest,
        tokenizer: Tokenizer | None,
        providers: list[str],
        threads: int | None,
        max_sessions: int | None = None,
    ) -> None:
        self.package_dir = package_dir
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.providers = providers
        self.threads = threads
        self.max_sessions = max_sessions
        self._sessions: OrderedDict[str, Any] = OrderedDict()
        self.prompt_format = PromptFormat.from_dict(manifest.prompt_format) if manifest.prompt_format else None

    @classmethod
    def load(
        cls,
        package_dir: str | Path,
        *,
        providers: Sequence[str] | str | None = None,
        threads: int | None = None,
        max_sessions: int | None = None,
    ) -> "Generator":
        """Open a package written by ``ortgen export`` (graphs load lazily, on first use).

        Each loaded graph holds its own copy of the weights, pre-packed for fast matrix
        products (ONNX Runtime's Python API cannot share pre-packed weights between
        sessions). ``max_sessions`` bounds how many stay loaded; the least recently used
        one is released first.
        """
        package_dir = Path(package_dir)
        manifest = Manifest.load(package_dir)
        tokenizer = None
        if manifest.tokenizer is not None:
            tokenizer = load_tokenizer(package_dir / contract.TOKENIZER_DIR, manifest.tokenizer)
        return cls(package_dir, manifest, tokenizer, resolve_providers(providers), threads, max_sessions)

    # -- sessions -----------------------------------------------------------------------

    def session(self, graph: str):
        """The ONNX Runtime session of ``graph`` ("decoder", "beam", "greedy", "sample", ...)."""
        if graph in self._sessions:
            self._sessions.move_to_end(graph)
            return self._sessions[graph]
        info = self.manifest.graphs.get(graph)
        if info is None:
            raise PackageError(f"this package has no {graph!r} graph; it has: {', '.join(self.manifest.graphs)}")
        if self.max_sessions is not None:
            while len(self._sessions) >= max(self.max_sessions, 1):
                released, _ = self._sessions.popitem(last=False)
                log.debug("released %s", released)
        started = time.perf_counter()
        self._sessions[graph] = create_session(self.package_dir / info.file, self.providers, self.threads)
        log.debug("loaded %s in %.2fs", info.file, time.perf_counter() - started)
        return self._sessions[graph]

    def release(self, graph: str | None = None) -> None:
        """Drop one loaded graph (or all) to free its memory."""
        if graph is None:
            self._sessions.clear()
        else:
            self._sessions.pop(graph, None)

    def graph_for(self, settings: GenerationSettings) -> str:
        """Which graph of the package runs ``settings``."""
        return self._graph_key(settings)

    # -- generation ---------------------------------------------------------------------

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids for text prompts, with the package's prompt format applied (if it has one)."""
        if self.tokenizer is None:
            raise OrtgenError("this package has no tokenizer: pass input_ids instead of text prompts")
        fmt = self.prompt_format
        if fmt is None:
            return [self.tokenizer.encode(p) for p in prompts]
        prefix_len = len(self.manifest.tokenizer.prefix_ids) if self.manifest.tokenizer else 0
        return [fmt.build_ids(self.tokenizer.encode(fmt.source_text(p)), prefix_len) for p in prompts]

    def answer(self, question: str, contexts: str | Sequence[str], **options: Any) -> "Answer":
        """Ask a question about contexts with a QA fine-tune's prompt format; parse its answer."""
        fmt = self.prompt_format
        if fmt is None or not fmt.answers_questions:
            raise OrtgenError("this package has no question-answering prompt format (e.g. a PubMedQA fine-tune)")
        result = self.generate([fmt.question_text(question, contexts)], **options)
        best = result.sequences[0][0]
        return Answer(fmt.parse_answer(best.text or ""), best.text or "", result)

    def settings_for(self, **request: Any) -> GenerationSettings:
        """Resolve generation options against the package's defaults (no generation runs)."""
        unknown = set(request) - set(GenerationRequest.__dataclass_fields__)
        if unknown:
            allowed = ", ".join(GenerationRequest.__dataclass_fields__)
            raise GenerationSettingsError(f"unknown generation option(s) {', '.join(sorted(unknown))}; allowed: {allowed}")
        sample = self.manifest.graphs.get(contract.SAMPLE)
        return resolve_settings(
            GenerationRequest(**request), self.manifest.generation_defaults, sample.attributes if sample else None
        )

    def generate(
        self,
        prompts: str | Sequence[str] | None = None,
        *,
        input_ids: Sequence[Sequence[int]] | None = None,
        **options: Any,
    ) -> GenerationResult:
        """Generate for a batch of prompts (text, or token ids with ``input_ids=``).

        Options (transformers' names): strategy ("beam", "greedy", "sample"), num_beams,
        max_new_tokens, min_new_tokens, num_return_sequences, length_penalty,
        repetition_penalty, early_stopping (beam search), temperature, top_p, seed.
        """
        if (prompts is None) == (input_ids is None):
            raise GenerationSettingsError("pass either prompts or input_ids")
        if isinstance(prompts, str):
            prompts = [prompts]
        settings = self.settings_for(**options)
        batch = self.encode(prompts) if prompts is not None else [list(map(int, ids)) for ids in input_ids or []]
        vocab = self.manifest.architecture.vocab_size
        for ids in batch:
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise GenerationSettingsError(f"token id {bad[0]} is outside the vocabulary [0, {vocab})")
        ids, mask = left_pad(batch)
        check_lengths(settings, ids.shape[1], self.manifest.architecture.max_positions)

        started = time.perf_counter()
        if settings.strategy == contract.SAMPLE:
            sequences, extra = self._run_sampling(ids, mask, settings)
        elif settings.strategy == contract.BEAM:
            sequences, extra = self._run_beam(ids, mask, settings)
        else:
            sequences, extra = self._run_greedy(ids, mask, settings)
        seconds = time.perf_counter() - started
        info = self.manifest.graphs[self._graph_key(settings)]
        log.debug("%s ran in %.2fs", info.file, seconds)
        return GenerationResult(
            sequences=sequences,
            prompt_ids=batch,
            settings=settings,
            graph_file=info.file,
            operator=_OPERATORS[settings.strategy],
            seconds=seconds,
            extra=extra,
        )

    @staticmethod
    def _graph_key(settings: GenerationSettings) -> str:
        if settings.strategy == contract.BEAM and settings.early_stopping:
            return contract.BEAM_EARLY_STOPPING
        return settings.strategy

    def _feeds(self, ids: np.ndarray, mask: np.ndarray, s: GenerationSettings) -> dict[str, np.ndarray]:
        width = ids.shape[1]
        return {
            contract.INPUT_IDS: ids,
            contract.MAX_LENGTH: np.array([width + s.max_new_tokens], dtype=np.int32),
            contract.MIN_LENGTH: np.array([width + s.min_new_tokens if s.min_new_tokens else 0], dtype=np.int32),
            contract.REPETITION_PENALTY: np.array([s.repetition_penalty], dtype=np.float32),
            contract.ATTENTION_MASK: mask,
        }

    def _sequence(self, row: np.ndarray, prompt_width: int) -> tuple[list[int], bool]:
        """New tokens of one output row, up to the first EOS, and whether EOS ended it.

        The generation graphs write EOS after a finished sequence (their fill token), and
        GreedySearch / Sampling leave the tail uninitialised once all rows have finished:
        everything after the first EOS is discarded.
        """
        eos = self.manifest.special_tokens.eos_token_id
        new = [int(t) for t in row[prompt_width:]]
        if eos in new:
            return new[: new.index(eos)], True
        return new, False

    def _decode(self, tokens: list[int]) -> str | None:
        return self.tokenizer.decode(tokens) if self.tokenizer is not None else None

    def _run_greedy(self, ids, mask, s):
        out = self.session(contract.GREEDY).run([contract.SEQUENCES], self._feeds(ids, mask, s))[0]
        result = []
        for row in out:
            tokens, finished = self._sequence(row, ids.shape[1])
            result.append([GeneratedSequence(tokens, self._decode(tokens), finished)])
        return result, {}

    def _run_sampling(self, ids, mask, s):
        n = s.num_return_sequences
        seed = s.seed if s.seed is not None else secrets.randbelow(2**31 - 2)
        feeds = self._feeds(np.repeat(ids, n, axis=0), np.repeat(mask, n, axis=0), s)
        # ONNX Runtime treats seed 0 as "seed from the clock": shift by one so every seed is reproducible.
        feeds[contract.SEED] = np.array([seed + 1], dtype=np.int32)
        out = self.session(contract.SAMPLE).run([contract.SEQUENCES], feeds)[0]
        result = []
        for b in range(ids.shape[0]):
            group = []
            for row in out[b * n:(b + 1) * n]:
                tokens, finished = self._sequence(row, ids.shape[1])
                group.append(GeneratedSequence(tokens, self._decode(tokens), finished))
            result.append(group)
        return result, {"seed": seed}

    def _run_beam(self, ids, mask, s):
        feeds = self._feeds(ids, mask, s)
        feeds[contract.NUM_BEAMS] = np.array([s.num_beams], dtype=np.int32)
        feeds[contract.NUM_RETURN_SEQUENCES] = np.array([s.num_return_sequences], dtype=np.int32)
        feeds[contract.LENGTH_PENALTY] = np.array([s.length_penalty], dtype=np.float32)
        session = self.session(self._graph_key(s))
        out, scores = session.run([contract.SEQUENCES, contract.SEQUENCES_SCORES], feeds)
        width = ids.shape[1]
        result = []
        for b in range(out.shape[0]):
            group = []
            for r in range(out.shape[1]):
                tokens, finished = self._sequence(out[b, r], width)
                score = _hf_beam_score(float(scores[b, r]), width, len(tokens), finished, s.length_penalty)
                group.append(GeneratedSequence(tokens, self._decode(tokens), finished, score))
            result.append(group)
        return result, {"onnxruntime_scores": scores.tolist()}
