"""The Python API: ``Generator.load(package).generate(prompts, ...)``.

Reads the package's manifest, tokenizes a batch of prompts (applying the package's prompt
format, if any), checks the settings, picks the backend and turns its output back into
text. Two backends (:mod:`ortgen.runtime.backend`):

- the in-graph operators (com.microsoft BeamSearch / GreedySearch / Sampling), used
  whenever their semantics equal transformers' for the requested settings;
- the step engine (:mod:`ortgen.runtime.engine`), ortgen's own loop over
  ``decoder_engine.onnx``, for everything else (and for streaming).

Needs neither torch nor transformers.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Sequence

from ortgen.package import contract
from ortgen.errors import GenerationSettingsError, OrtgenError, PackageError
from ortgen.package import Manifest, open_package
from ortgen.runtime.backend import ENGINE, GRAPH, choose_backend
from ortgen.runtime.graph_runner import OPERATORS, GraphRunner, graph_key, left_pad
from ortgen.package.prompt_format import PromptFormat
from ortgen.runtime.results import Answer, GeneratedSequence, GenerationResult
from ortgen.runtime.search import Hypothesis, StepEvent
from ortgen.runtime.sessions import create_session, resolve_providers
from ortgen.runtime.settings import GenerationRequest, GenerationSettings, check_lengths, replace, resolve_settings
from ortgen.runtime.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

__all__ = ["Generator", "GenerationResult", "GeneratedSequence", "Answer", "left_pad"]


class Generator:
    """A loaded package. Sessions are created on first use of each graph."""

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
        self.prompt_format: PromptFormat | None = manifest.prompt_format
        self._engine = None

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
        manifest = open_package(package_dir)
        tokenizer = None
        if manifest.tokenizer is not None:
            tokenizer = load_tokenizer(package_dir / contract.TOKENIZER_DIR, manifest.tokenizer)
        return cls(package_dir, manifest, tokenizer, resolve_providers(providers), threads, max_sessions)

    # -- sessions -----------------------------------------------------------------------

    def session(self, graph: str):
        """The ONNX Runtime session of ``graph`` ("decoder", "decoder_engine", "beam", ...)."""
        if graph in self._sessions:
            self._sessions.move_to_end(graph)
            return self._sessions[graph]
        info = self.manifest.graphs.get(graph)
        if info is None:
            raise PackageError(f"this package has no {graph!r} graph; it has: {', '.join(self.manifest.graphs)}")
        if self.max_sessions is not None:
            while len(self._sessions) >= max(self.max_sessions, 1):
                released, _ = self._sessions.popitem(last=False)
                if released == contract.DECODER_ENGINE:
                    self._engine = None
                log.debug("released %s", released)
        started = time.perf_counter()
        self._sessions[graph] = create_session(self.package_dir / info.file, self.providers, self.threads)
        log.debug("loaded %s in %.2fs", info.file, time.perf_counter() - started)
        return self._sessions[graph]

    def release(self, graph: str | None = None) -> None:
        """Drop one loaded graph (or all) to free its memory."""
        if graph is None or graph == contract.DECODER_ENGINE:
            self._engine = None
        if graph is None:
            self._sessions.clear()
        else:
            self._sessions.pop(graph, None)

    @property
    def engine(self):
        """The step engine (loads ``decoder_engine.onnx`` on first use)."""
        from ortgen.runtime.engine import StepEngine

        if self._engine is None or contract.DECODER_ENGINE not in self._sessions:
            self._engine = StepEngine(self.session(contract.DECODER_ENGINE), self.manifest, self.tokenizer)
        else:
            self._sessions.move_to_end(contract.DECODER_ENGINE)
        return self._engine

    # -- settings and backend -------------------------------------------------------------

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids for text prompts, with the package's prompt format applied (if it has one)."""
        if self.tokenizer is None:
            raise OrtgenError("this package has no tokenizer: pass input_ids instead of text prompts")
        fmt = self.prompt_format
        if fmt is None:
            return [self.tokenizer.encode(p) for p in prompts]
        prefix_len = len(self.manifest.tokenizer.prefix_ids) if self.manifest.tokenizer else 0
        return [fmt.build_ids(self.tokenizer.encode(fmt.source_text(p)), prefix_len) for p in prompts]

    def settings_for(self, **request: Any) -> GenerationSettings:
        """Resolve generation options against the package's defaults (no generation runs)."""
        return resolve_settings(GenerationRequest.from_options(request), self.manifest.generation_defaults,
                                [self.manifest.special_tokens.eos_token_id], self.manifest.architecture.vocab_size)

    def plan(self, settings: GenerationSettings) -> tuple[str, str]:
        """(backend, why): "graph" or "engine" for these settings."""
        return choose_backend(settings, self.manifest.graphs, self.manifest.special_tokens.eos_token_id)

    def graph_for(self, settings: GenerationSettings) -> str:
        """Which graph of the package runs ``settings``."""
        backend, _ = self.plan(settings)
        return contract.DECODER_ENGINE if backend == ENGINE else graph_key(settings)

    def _batch(self, prompts: str | Sequence[str] | None, input_ids: Sequence[Sequence[int]] | None) -> list[list[int]]:
        if (prompts is None) == (input_ids is None):
            raise GenerationSettingsError("pass either prompts or input_ids")
        if isinstance(prompts, str):
            prompts = [prompts]
        batch = self.encode(prompts) if prompts is not None else [list(map(int, ids)) for ids in input_ids or []]
        if not batch or any(len(ids) == 0 for ids in batch):
            raise GenerationSettingsError("every prompt must have at least one token")
        vocab = self.manifest.architecture.vocab_size
        for ids in batch:
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise GenerationSettingsError(f"input_ids contains token id {bad[0]}, outside the vocabulary [0, {vocab})")
        return batch

    # -- generation ---------------------------------------------------------------------

    def generate(
        self,
        prompts: str | Sequence[str] | None = None,
        *,
        input_ids: Sequence[Sequence[int]] | None = None,
        **options: Any,
    ) -> GenerationResult:
        """Generate for a batch of prompts (text, or token ids with ``input_ids=``).

        Options use transformers' names: num_beams, do_sample (or strategy="beam" /
        "greedy" / "sample"), max_new_tokens, min_new_tokens, min_length,
        num_return_sequences, length_penalty, repetition_penalty, no_repeat_ngram_size,
        bad_words_ids, eos_token_id, stop_strings, early_stopping, temperature, top_k, top_p,
        seed; and backend ("auto", "graph", "engine").
        """
        settings = self.settings_for(**options)
        batch = self._batch(prompts, input_ids)
        limit = self.manifest.architecture.max_positions
        new_tokens = [check_lengths(settings, len(ids), limit) for ids in batch]
        backend, reason = self.plan(settings)
        started = time.perf_counter()
        sequences: list[list[GeneratedSequence]] = [[] for _ in batch]
        extra: dict[str, Any] = {}
        # max_length counts each prompt: prompts of different lengths may gain different numbers of tokens
        for count in sorted(set(new_tokens)):
            rows = [i for i, n in enumerate(new_tokens) if n == count]
            concrete = replace(settings, max_new_tokens=count, max_length=None)
            group = [batch[i] for i in rows]
            if backend == GRAPH:
                runner = GraphRunner(self.session, self.manifest.special_tokens.eos_token_id, self._decode)
                outputs, extra = runner.run(group, concrete)
            else:
                outputs = self._from_hypotheses(self.engine.generate(group, concrete), concrete)
            for i, output in zip(rows, outputs):
                sequences[i] = output
        if backend == GRAPH:
            key = graph_key(settings)
            graph_file, operator = self.manifest.graphs[key].file, OPERATORS[key]
        else:
            graph_file, operator = self.manifest.graphs[contract.DECODER_ENGINE].file, "step engine"
        seconds = time.perf_counter() - started
        log.debug("%s ran in %.2fs (%s)", graph_file, seconds, reason)
        return GenerationResult(sequences, batch, settings, graph_file, operator, seconds, backend, reason, extra)

    def stream(self, prompt: str | None = None, *, input_ids: Sequence[int] | None = None,
               **options: Any) -> Iterator[str]:
        """Text as it is generated, for one prompt (step engine). Greedy search and sampling
        yield new text every step; beam search yields the best hypothesis once it is chosen."""
        settings = self.settings_for(**{**options, "backend": "engine"})
        if settings.num_return_sequences > 1:
            raise GenerationSettingsError("streaming returns one sequence; num_return_sequences must be 1")
        batch = self._batch(None if prompt is None else [prompt], None if input_ids is None else [input_ids])
        new = check_lengths(settings, len(batch[0]), self.manifest.architecture.max_positions)
        settings = replace(settings, max_new_tokens=new, max_length=None)
        self.plan(settings)  # raises if the engine is unavailable
        if settings.num_beams > 1:
            best = self._from_hypotheses(self.engine.generate(batch, settings), settings)[0][0]
            yield best.text or ""
            return
        tokens: list[int] = []
        emitted = ""
        eos = set(settings.eos_token_ids)
        for event in self.engine.events(batch, settings):
            if not isinstance(event, StepEvent):
                break
            tokens.extend(t for t in event.new_tokens[0] if t not in eos)
            text = self._decode(tokens) or ""
            cut = max(text.rfind(" "), 0) if not event.finished[0] else len(text)  # hold back a partial word
            if text.startswith(emitted) and cut > len(emitted):
                yield text[len(emitted):cut]
                emitted = text[:cut]
        final = self._decode(tokens) or ""
        if final.startswith(emitted) and len(final) > len(emitted):
            yield final[len(emitted):]

    def answer(self, question: str, contexts: str | Sequence[str], **options: Any) -> Answer:
        """Ask a question about contexts with a QA fine-tune's prompt format; parse its answer."""
        fmt = self.prompt_format
        if fmt is None or not fmt.answers_questions:
            raise OrtgenError("this package has no question-answering prompt format (e.g. a PubMedQA fine-tune)")
        result = self.generate([fmt.question_text(question, contexts)], **options)
        best = result.sequences[0][0]
        return Answer(fmt.parse_answer(best.text or ""), best.text or "", result)

    # -- helpers ------------------------------------------------------------------------

    def _decode(self, tokens: list[int]) -> str | None:
        return self.tokenizer.decode(tokens) if self.tokenizer is not None else None

    def _from_hypotheses(self, groups: list[list[Hypothesis]], settings: GenerationSettings
                         ) -> list[list[GeneratedSequence]]:
        eos = set(settings.eos_token_ids)
        out = []
        for group in groups:
            sequences = []
            for h in group:
                tokens = h.tokens[:-1] if h.stop_reason == "eos" and h.tokens and h.tokens[-1] in eos else h.tokens
                sequences.append(GeneratedSequence(tokens, self._decode(tokens), h.stop_reason != "length", h.score,
                                                   h.stop_reason))
            out.append(sequences)
        return out

