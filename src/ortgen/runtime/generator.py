"""The Python API: ``Generator.load(package)``, then ``submit`` / ``generate`` / ``stream``.

Reads the package through its contract (:func:`ortgen.package.open_package`), tokenizes prompts
(applying the package's prompt format, if any), checks the settings, picks the backend and turns
its output back into text. Two backends (:mod:`ortgen.runtime.backend`):

- ortgen's step engine (the default): every request goes to the scheduler
  (:mod:`ortgen.runtime.scheduler`), which runs all running requests in one decoder call per
  step. ``submit`` returns a handle at once; ``generate`` submits each prompt and waits. Any
  number of threads may call them at once: their requests share steps, and each request's
  result is the one it would have alone;
- the in-graph operators (com.microsoft BeamSearch / GreedySearch / Sampling, what Triton
  serves): one ONNX Runtime call per batch, on request (``backend="graph"``).

Needs neither torch nor transformers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

from pathlib import Path

from ortgen.errors import GenerationSettingsError, OrtgenError, PackageError
from ortgen.package import Manifest, contract, open_package
from ortgen.package.chat_template import ChatTemplate
from ortgen.package.prompt_format import PromptFormat
from ortgen.runtime.backend import ENGINE, GRAPH, choose_backend
from ortgen.runtime.constraint import Constraint
from ortgen.runtime.engine import SearchFactory
from ortgen.runtime.engine_decoder import EngineDecoder
from ortgen.runtime.grammar import INCOMPLETE, GrammarEngine
from ortgen.runtime.graph_runner import OPERATORS, GraphRunner, graph_key, left_pad
from ortgen.runtime.request import RequestHandle, RequestOutput
from ortgen.runtime.results import Answer, GeneratedSequence, GenerationResult
from ortgen.runtime.scheduler import Scheduler, SchedulerLimits
from ortgen.runtime.search import Hypothesis, TokenLogprob
from ortgen.runtime.sessions import create_session, resolve_providers
from ortgen.runtime.settings import GenerationRequest, GenerationSettings, check_lengths, replace, resolve_settings
from ortgen.runtime.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

__all__ = ["Generator", "GenerationResult", "GeneratedSequence", "Answer", "RequestHandle", "RequestOutput",
           "SchedulerLimits", "left_pad"]


@dataclass(frozen=True)
class Score:
    """A continuation's log-likelihood after a context (:meth:`Generator.score`)."""

    logprob: float  # the sum over the continuation's tokens
    is_greedy: bool  # every continuation token was the most likely one
    token_ids: list[int]
    token_logprobs: list[float]


class Generator:
    """A loaded package. Sessions are created on first use of each graph; the scheduler on the
    first request for the step engine. ``close()`` (or ``with``) stops the scheduler."""

    def __init__(
        self,
        package_dir: Path,
        manifest: Manifest,
        tokenizer: Tokenizer | None,
        providers: list[str],
        threads: int | None,
        max_sessions: int | None = None,
        limits: SchedulerLimits | None = None,
    ) -> None:
        self.package_dir = package_dir
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.providers = providers
        self.threads = threads
        self.max_sessions = max_sessions
        self.limits = (limits or SchedulerLimits()).resolve(manifest.architecture.max_positions)
        self.prompt_format: PromptFormat | None = manifest.prompt_format
        self._sessions: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()
        self._scheduler: Scheduler | None = None
        self.grammar = None if tokenizer is None else GrammarEngine(
            tokenizer, manifest.architecture.vocab_size, manifest.special_tokens.all_eos)
        self._searches = SearchFactory(tokenizer, manifest.special_tokens.pad_token_id, self.grammar)
        self._chat_template: ChatTemplate | None = None

    @classmethod
    def load(
        cls,
        package_dir: str | Path,
        *,
        providers: Sequence[str] | str | None = None,
        threads: int | None = None,
        max_sessions: int | None = None,
        limits: SchedulerLimits | None = None,
    ) -> "Generator":
        """Open a package written by ``ortgen export`` (graphs load lazily, on first use).

        Each loaded graph holds its own copy of the weights, pre-packed for fast matrix
        products (ONNX Runtime's Python API cannot share pre-packed weights between
        sessions). ``max_sessions`` bounds how many stay loaded; the least recently used
        one is released first. ``limits``: how many requests the step engine runs at once
        (:class:`~ortgen.runtime.scheduler.SchedulerLimits`).
        """
        package_dir = Path(package_dir)
        manifest = open_package(package_dir)
        tokenizer = None
        if manifest.tokenizer is not None:
            tokenizer = load_tokenizer(package_dir / contract.TOKENIZER_DIR, manifest.tokenizer)
        return cls(package_dir, manifest, tokenizer, resolve_providers(providers), threads, max_sessions, limits)

    def __enter__(self) -> "Generator":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Stop the scheduler (requests still waiting or running fail with RequestCancelledError)."""
        with self._lock:
            scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None:
            scheduler.close()

    # -- sessions -----------------------------------------------------------------------

    def session(self, graph: str):
        """The ONNX Runtime session of ``graph`` ("decoder", "decoder_engine", "beam", ...)."""
        with self._lock:
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
                        self.close()  # the scheduler holds the engine session
                    log.debug("released %s", released)
            started = time.perf_counter()
            self._sessions[graph] = create_session(self.package_dir / info.file, self.providers, self.threads)
            log.debug("loaded %s in %.2fs", info.file, time.perf_counter() - started)
            return self._sessions[graph]

    def release(self, graph: str | None = None) -> None:
        """Drop one loaded graph (or all) to free its memory."""
        with self._lock:
            if graph is None or graph == contract.DECODER_ENGINE:
                self.close()
            if graph is None:
                self._sessions.clear()
            else:
                self._sessions.pop(graph, None)

    @property
    def scheduler(self) -> Scheduler:
        """The step engine's scheduler (loads ``decoder_engine.onnx`` on first use)."""
        with self._lock:
            if self._scheduler is None:
                session = self.session(contract.DECODER_ENGINE)
                a = self.manifest.architecture
                info = self.manifest.graphs[contract.DECODER_ENGINE]
                head_dim = int(info.attributes.get("cache_head_dim", a.head_dim))
                shape = Scheduler.pool_shape(a.num_layers, a.kv_heads, head_dim, self.limits, self.manifest.dtype)
                device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
                decoder = EngineDecoder(session, a.num_layers, self.manifest.dtype, window=a.sliding_window)
                self._scheduler = Scheduler(decoder, shape, self.limits, self._sequences, device)
            else:
                self._sessions.move_to_end(contract.DECODER_ENGINE)
            return self._scheduler

    # -- settings and backend -------------------------------------------------------------

    def encode(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids for text prompts, with the package's prompt format applied (if it has one)."""
        if self.tokenizer is None:
            raise OrtgenError("this package has no tokenizer: pass input_ids instead of text prompts")
        if any(not isinstance(p, str) for p in prompts):
            raise GenerationSettingsError("prompts must be strings (token ids go in input_ids)")
        fmt = self.prompt_format
        if fmt is None:
            return [self.tokenizer.encode(p) for p in prompts]
        prefix_len = len(self.manifest.tokenizer.prefix_ids) if self.manifest.tokenizer else 0
        return [fmt.build_ids(self.tokenizer.encode(fmt.source_text(p)), prefix_len) for p in prompts]

    @property
    def chat_template(self) -> ChatTemplate | None:
        """The checkpoint's chat template (compiled on first use), or None when the package has none."""
        info = self.manifest.tokenizer
        if info is None or info.chat_template is None:
            return None
        if self._chat_template is None:
            path = self.package_dir / contract.TOKENIZER_DIR / info.chat_template
            if not path.is_file():
                raise PackageError(f"the package is incomplete: {path} is missing")
            self._chat_template = ChatTemplate(path.read_text(encoding="utf-8"), info.special_tokens)
        return self._chat_template

    def chat_ids(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True,
                 **template_variables: Any) -> list[int]:
        """The prompt ids of a conversation: the chat template's text, encoded without the ids the
        tokenizer adds around plain prompts (the template writes its own BOS: encoding its text as a
        prompt would start it with two), as transformers' ``apply_chat_template(tokenize=True)``."""
        template = self.chat_template
        if template is None:
            raise OrtgenError("this package has no chat template (the checkpoint had neither chat_template.jinja nor "
                              "a chat_template in tokenizer_config.json): pass prompts to generate() instead")
        assert self.tokenizer is not None, "a package with a chat template has a tokenizer"
        text = template.render(messages, add_generation_prompt=add_generation_prompt, **template_variables)
        return self.tokenizer.encode_plain(text)

    def chat(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None,
             template_variables: Mapping[str, Any] | None = None, **options: Any) -> GenerationResult:
        """Generate the assistant's next turn for a conversation (``[{"role": "user", "content": ...}]``),
        rendered with the checkpoint's chat template. ``tools``: JSON schemas the template lists;
        ``template_variables``: other variables the template reads (``date_string``, ...); ``options``:
        as :meth:`generate`."""
        ids = self.chat_ids(messages, tools=tools, **dict(template_variables or {}))
        return self.generate(input_ids=[ids], **options)

    def settings_for(self, **request: Any) -> GenerationSettings:
        """Resolve generation options against the package's defaults (no generation runs)."""
        return resolve_settings(GenerationRequest.from_options(request), self.manifest.generation_defaults,
                                self.manifest.special_tokens.all_eos, self.manifest.architecture.vocab_size)

    def plan(self, settings: GenerationSettings) -> tuple[str, str]:
        """(backend, why): "graph" or "engine" for these settings."""
        backend, why = choose_backend(settings, self.manifest.graphs, self.manifest.special_tokens.eos_token_id)
        if backend == GRAPH and self.manifest.dtype == "float16" and "CUDAExecutionProvider" not in self.providers:
            raise GenerationSettingsError(
                "this package is float16, and ONNX Runtime runs BeamSearch / GreedySearch / Sampling on float16 "
                "models on the CUDA provider only (their CPU kernels take float32 models): use backend='engine' (the "
                "default), load the package with providers='cuda', or export it with --dtype float32")
        return backend, why

    def graph_for(self, settings: GenerationSettings) -> str:
        """Which graph of the package runs ``settings``."""
        backend, _ = self.plan(settings)
        return contract.DECODER_ENGINE if backend == ENGINE else graph_key(settings)

    def _batch(self, prompts: str | Sequence[str] | None, input_ids: Sequence[Sequence[int]] | None) -> list[list[int]]:
        if (prompts is None) == (input_ids is None):
            raise GenerationSettingsError("pass either prompts or input_ids")
        if isinstance(prompts, str):
            prompts = [prompts]
        if prompts is not None:
            batch = self.encode(prompts)
        else:
            try:
                batch = [[int(t) for t in ids] for ids in input_ids or []]
            except (TypeError, ValueError):
                raise GenerationSettingsError("input_ids must be a list of lists of token ids") from None
        if not batch or any(len(ids) == 0 for ids in batch):
            raise GenerationSettingsError("every prompt must have at least one token")
        vocab = self.manifest.architecture.vocab_size
        for ids in batch:
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise GenerationSettingsError(f"input_ids contains token id {bad[0]}, outside the vocabulary [0, {vocab})")
        return batch

    def _concrete(self, settings: GenerationSettings, prompt: Sequence[int]) -> GenerationSettings:
        """``settings`` for one prompt: its new-token count fixed (max_length counts the prompt)."""
        new = check_lengths(settings, len(prompt), self.manifest.architecture.max_positions)
        return replace(settings, max_new_tokens=new, max_length=None)

    # -- generation ---------------------------------------------------------------------

    def submit(self, prompt: str | None = None, *, input_ids: Sequence[int] | None = None,
               **options: Any) -> RequestHandle:
        """Start generating for one prompt (text, or token ids with ``input_ids=``); returns at once.

        The handle can be waited on (``result()``), iterated for streaming (text deltas, each
        saying which returned sequence it extends; beam search streams what every beam agrees
        on), awaited from asyncio, and cancelled. Options as :meth:`generate`. Raises
        GenerationSettingsError for bad settings, QueueFullError when the scheduler's wait
        queue is full, RequestTooLargeError for a request that could never fit its limits.
        """
        settings = self.settings_for(**options)
        if prompt is not None and not isinstance(prompt, str):
            raise GenerationSettingsError("submit() takes one prompt: a string, or input_ids=[token ids]")
        ids = self._batch(None if prompt is None else [prompt], None if input_ids is None else [input_ids])[0]
        concrete = self._concrete(settings, ids)
        backend, _ = self.plan(concrete)
        if backend == GRAPH:
            return self._submit_graph(ids, concrete)
        return self._submit_engine(ids, concrete)

    def _submit_engine(self, ids: list[int], settings: GenerationSettings) -> RequestHandle:
        """Queue one prompt with the step engine's scheduler (``settings`` concrete for it)."""
        scheduler = self.scheduler
        spec = self._searches.spec(settings, ids)
        if settings.constraint is not None:  # its text is the bytes its grammar matched
            assert self.grammar is not None
            vocabulary = self.grammar.vocabulary
            handle = RequestHandle(scheduler.next_id(), vocabulary.text, settings.num_return_sequences,
                                   scheduler.cancel, vocabulary.settled_length)
        else:
            handle = RequestHandle(scheduler.next_id(), self._decode_text, settings.num_return_sequences,
                                   scheduler.cancel, self._settled_length)
        scheduler.submit(handle, ids, settings, spec)
        return handle

    def _submit_graph(self, ids: list[int], settings: GenerationSettings) -> RequestHandle:
        """The in-graph operators for one prompt, in a thread of its own (ONNX Runtime's run() is
        thread-safe); the handle completes when the operator returns."""
        handle = RequestHandle(f"graph-{id(ids):x}", self._decode_text, settings.num_return_sequences,
                               lambda h: None, self._settled_length)

        def run() -> None:
            handle.timings.started = time.perf_counter()
            try:
                runner = GraphRunner(self.session, self.manifest.special_tokens.eos_token_id, self._decode)
                sequences, _ = runner.run([ids], settings)
            except BaseException as exc:  # delivered to the caller through the handle
                handle._finish(None, exc)
                return
            handle.timings.finished = handle.timings.first_token = time.perf_counter()
            handle._finish(RequestOutput(handle.id, ids, sequences[0], settings, handle.timings))

        threading.Thread(target=run, name="ortgen-graph", daemon=True).start()
        return handle

    def generate(
        self,
        prompts: str | Sequence[str] | None = None,
        *,
        input_ids: Sequence[Sequence[int]] | None = None,
        **options: Any,
    ) -> GenerationResult:
        """Generate for a batch of prompts (text, or token ids with ``input_ids=``) and wait.

        Options use transformers' names: num_beams, do_sample (or strategy="beam" /
        "greedy" / "sample"), max_new_tokens, max_length, min_new_tokens, min_length,
        num_return_sequences, length_penalty, repetition_penalty, no_repeat_ngram_size,
        bad_words_ids, eos_token_id, stop_strings, early_stopping, temperature, top_k, top_p,
        seed, logprobs; constraint (structured output: ``Constraint.json_schema(schema)``, or
        ``{"json_schema": ...}`` / ``{"choice": [...]}`` / ``{"regex": ...}`` / ``{"grammar": ...}`` /
        ``{"json_object": True}``; ortgen.runtime.constraint); and backend ("auto", "graph",
        "engine"). On the step engine each prompt
        is its own request (sharing decoder steps with every other request running), and gets
        what it would get alone.
        """
        settings = self.settings_for(**options)
        batch = self._batch(prompts, input_ids)
        concrete = [self._concrete(settings, ids) for ids in batch]
        backend, reason = self.plan(settings)
        started = time.perf_counter()
        if backend == GRAPH:
            sequences, extra = self._generate_graph(batch, concrete)
            key = graph_key(settings)
            graph_file, operator = self.manifest.graphs[key].file, OPERATORS[key]
        else:
            handles: list[RequestHandle] = []
            try:
                for ids, request_settings in zip(batch, concrete):
                    handles.append(self._submit_engine(ids, request_settings))
                outputs = [h.result() for h in handles]
            except BaseException:
                for handle in handles:
                    handle.cancel()
                raise
            sequences = [output.sequences for output in outputs]
            extra = {}
            graph_file, operator = self.manifest.graphs[contract.DECODER_ENGINE].file, "step engine"
        seconds = time.perf_counter() - started
        log.debug("%s ran in %.2fs (%s)", graph_file, seconds, reason)
        return GenerationResult(sequences, batch, settings, graph_file, operator, seconds, backend, reason, extra)

    def _generate_graph(self, batch: list[list[int]], concrete: list[GenerationSettings]
                        ) -> tuple[list[list[GeneratedSequence]], dict[str, Any]]:
        """One operator call per group of prompts with the same new-token count (max_length counts
        each prompt), left-padded as the operators want."""
        runner = GraphRunner(self.session, self.manifest.special_tokens.eos_token_id, self._decode)
        sequences: list[list[GeneratedSequence]] = [[] for _ in batch]
        extra: dict[str, Any] = {}
        counts = [s.max_new_tokens for s in concrete]
        for count in sorted(set(counts)):
            rows = [i for i, n in enumerate(counts) if n == count]
            outputs, extra = runner.run([batch[i] for i in rows], concrete[rows[0]])
            for i, output in zip(rows, outputs):
                sequences[i] = output
        return sequences, extra

    def logprobs_of(self, prompt: str | None = None, *, input_ids: Sequence[int] | None = None,
                    top: int = 0) -> list[TokenLogprob | None]:
        """Each token's log-probability given the tokens before it (None for the first), with the ``top``
        most likely alternatives at each position: one prefill through the scheduler, nothing generated
        (it batches with everything else running)."""
        handle = self.submit(prompt, input_ids=input_ids, max_new_tokens=0, prompt_logprobs=top)
        output = handle.result()
        assert output.prompt_logprobs is not None
        return output.prompt_logprobs

    def score(self, context: str | Sequence[int], continuation: str | Sequence[int]) -> Score:
        """How likely ``continuation`` is after ``context`` (text, or token ids): the sum of its tokens'
        log-probabilities, and whether each was the most likely token (lm-evaluation-harness's
        loglikelihood). Text is tokenized as the package does: the context with its prompt format and
        prefix, the continuation plainly, so that the continuation's tokens are scored as they come."""
        if self.tokenizer is None and (isinstance(context, str) or isinstance(continuation, str)):
            raise OrtgenError("this package has no tokenizer: pass token ids")
        head = self.encode([context])[0] if isinstance(context, str) else [int(t) for t in context]
        tail = self.tokenizer.encode_plain(continuation) if isinstance(continuation, str) \
            else [int(t) for t in continuation]
        if not tail:
            raise GenerationSettingsError("the continuation has no tokens")
        records = self.logprobs_of(input_ids=head + tail, top=1)[len(head):]
        assert all(r is not None for r in records)
        return Score(sum(r.logprob for r in records), all(r.top and r.top[0][0] == r.token for r in records),
                     list(tail), [r.logprob for r in records])

    def stream(self, prompt: str | None = None, *, input_ids: Sequence[int] | None = None,
               **options: Any) -> Iterator[str]:
        """Text as it is generated, for one prompt (step engine). Greedy search and sampling yield
        new text every step; beam search yields what every beam agrees on as it settles."""
        options = {**options, "backend": "engine"}
        if self.settings_for(**options).num_return_sequences > 1:
            raise GenerationSettingsError("stream() returns one sequence; num_return_sequences must be 1 "
                                          "(submit() streams several, each delta saying which)")
        handle = self.submit(prompt, input_ids=input_ids, **options)
        try:
            for delta in handle:
                if delta.text:
                    yield delta.text
        finally:
            if not handle.done:
                handle.cancel()

    def answer(self, question: str, contexts: str | Sequence[str], **options: Any) -> Answer:
        """Ask a question about contexts with a QA fine-tune's prompt format; parse its answer (for a closed
        set of answers, e.g. PubMedQA's, the output is constrained to end in one of them, unless
        ``constraint`` is given: ``constraint=None`` for free text)."""
        fmt = self.prompt_format
        if fmt is None or not fmt.answers_questions:
            raise OrtgenError("this package has no question-answering prompt format (e.g. a PubMedQA fine-tune)")
        regex = fmt.verdict_regex()
        if regex is not None and "constraint" not in options:  # the verdict decoded among the answers
            options = {**options, "constraint": Constraint.regex(regex)}
        result = self.generate([fmt.question_text(question, contexts)], **options)
        best = result.sequences[0][0]
        return Answer(fmt.parse_answer(best.text or ""), best.text or "", result)

    # -- helpers ------------------------------------------------------------------------

    def _decode(self, tokens: list[int]) -> str | None:
        return self.tokenizer.decode(tokens) if self.tokenizer is not None else None

    @property
    def _settled_length(self) -> Any:
        """The tokenizer's streaming rule (how much decoded text is final), or None without a tokenizer."""
        return self.tokenizer.settled_length if self.tokenizer is not None else None

    def _decode_text(self, tokens: list[int]) -> str:
        """Streaming text: the decoded text, or the ids themselves (space-separated) for packages without
        a tokenizer."""
        text = self._decode(tokens)
        return text if text is not None else " ".join(map(str, tokens))

    def _sequences(self, hypotheses: list[Hypothesis], settings: GenerationSettings) -> list[GeneratedSequence]:
        """A request's hypotheses as returned sequences: a final EOS dropped, text decoded."""
        eos = set(settings.eos_token_ids)
        grammar = None if settings.constraint is None or self.grammar is None else self.grammar.compile(
            settings.constraint)
        sequences = []
        for h in hypotheses:
            ends_with_eos = h.stop_reason == "eos" and h.tokens and h.tokens[-1] in eos
            tokens = h.tokens[:-1] if ends_with_eos else h.tokens
            logprobs = h.logprobs[:len(tokens)] if h.logprobs is not None else None
            reason = h.stop_reason
            if grammar is None:
                text = self._decode(tokens)
            else:  # the bytes the grammar matched; ended by EOS yet not a whole sentence: a dead end
                text = self.grammar.vocabulary.text(tokens)
                if reason == "eos" and not grammar.complete(tokens):
                    reason = INCOMPLETE
            sequences.append(GeneratedSequence(tokens, text, reason not in ("length", INCOMPLETE), h.score,
                                               reason, logprobs))
        return sequences
