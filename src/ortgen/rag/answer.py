"""Retrieval QA: find the passages, build the package's QA prompt, generate, show the sources.

    question ──► Index.search (hybrid: dense + BM25, fused)  ──► passages, best first
             ──► QAPromptBuilder (the package's prompt format; contexts cut to fit, question whole)
             ──► Generator (the package's generation defaults, e.g. beam search; settings override)
             ──► answer text, parsed yes/no/maybe for PubMedQA fine-tunes (their output constrained to
                 end in one of them: :meth:`RagPipeline.verdict_constraint`), the sources with scores

Used by ``ortgen rag ask`` and by ``ortgen serve --index`` (``POST /v1/rag/answer``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from ortgen.rag.prompt import QAPrompt, QAPromptBuilder
from ortgen.runtime.constraint import Constraint
from ortgen.runtime.generator import Generator
from ortgen.runtime.request import RequestHandle, RequestOutput
from ortgen.runtime.settings import check_lengths


@dataclass
class RagAnswer:
    question: str
    text: str  # the generated answer
    answer: str | None  # parsed label (yes / no / maybe) for QA fine-tunes, else None
    passages: list[Any]  # ortgen.rag.retrieval.Passage, best first
    prompt: QAPrompt
    output: RequestOutput | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        sequence = self.output.sequences[0] if self.output else None
        return {
            "question": self.question,
            "answer": self.answer,
            "text": self.text,
            "sources": [p.to_dict() for p in self.passages],
            "prompt": {"tokens": len(self.prompt.ids), "passages_used": self.prompt.passages_used,
                       "truncated": self.prompt.truncated},
            "finish_reason": None if sequence is None else ("length" if sequence.stop_reason == "length" else "stop"),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


class RagPipeline:
    """One index and one generator, answering questions (thread-safe: searches and requests are)."""

    def __init__(self, index, generator: Generator) -> None:
        if generator.tokenizer is None:
            from ortgen.errors import OrtgenError

            raise OrtgenError("retrieval QA needs a package with a tokenizer (it builds text prompts)")
        self.index = index
        self.generator = generator
        prefix = len(generator.manifest.tokenizer.prefix_ids) if generator.manifest.tokenizer else 0
        self.builder = QAPromptBuilder(generator.tokenizer, generator.prompt_format, prefix)

    def retrieve(self, question: str, k: int = 5, filters: Any = None, mode: str = "hybrid"):
        return self.index.search_timed(question, k=k, filters=filters, mode=mode)

    def prompt(self, question: str, passages: Sequence[str], options: dict[str, Any]) -> QAPrompt:
        """The prompt for the passages' texts (best first), with room left for the tokens the settings
        will generate."""
        settings = self.generator.settings_for(**options)
        positions = self.generator.manifest.architecture.max_positions
        if settings.max_new_tokens is not None:
            room = positions - settings.max_new_tokens
            if room < 1:
                from ortgen.errors import GenerationSettingsError

                raise GenerationSettingsError(
                    f"max_new_tokens {settings.max_new_tokens} leaves no room for the question: the model reads "
                    f"{positions} positions in all (prompt and new tokens); ask for fewer new tokens (at most "
                    f"{positions - 1}, and fewer still to leave room for the passages)")
        else:  # max_length counts the prompt: any prompt shorter than it leaves room
            room = (settings.max_length or positions) - 1
        prompt = self.builder.build(question, passages, room)
        check_lengths(settings, len(prompt.ids), positions)
        return prompt

    def verdict_constraint(self) -> Constraint | None:
        """For a QA fine-tune whose answers are a closed set (PubMedQA: yes / no / maybe), the regex its
        output must follow: its answer sentence ending in one of them (so the verdict is decoded, not
        hoped for and parsed). None for other packages."""
        fmt = self.generator.prompt_format
        regex = fmt.verdict_regex() if fmt is not None else None
        return None if regex is None else Constraint.regex(regex)

    def with_verdict(self, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with the verdict constraint, unless the caller set a constraint (or ``constraint=None``
        explicitly: free text)."""
        if "constraint" in options:
            return options
        constraint = self.verdict_constraint()
        return options if constraint is None else {**options, "constraint": constraint}

    def submit(self, question: str, k: int = 5, filters: Any = None, mode: str = "hybrid",
               **options: Any) -> tuple[RequestHandle, RagAnswer]:
        """Retrieve and start generating; the answer's text is filled in by :meth:`finish`."""
        started = time.perf_counter()
        options = self.with_verdict(options)
        passages, search_timings = self.retrieve(question, k, filters, mode)
        retrieved = time.perf_counter()
        prompt = self.prompt(question, [p.text for p in passages], options)
        handle = self.generator.submit(input_ids=prompt.ids, **options)
        answer = RagAnswer(question, "", None, passages, prompt,
                           timings={"retrieve_seconds": retrieved - started, **{
                               f"search_{k}": v for k, v in search_timings.to_dict().items()}})
        answer.timings["_started"] = started
        return handle, answer

    def finish(self, answer: RagAnswer, output: RequestOutput) -> RagAnswer:
        started = answer.timings.pop("_started", None)
        best = output.sequences[0]
        answer.output = output
        answer.text = best.text or ""
        fmt = self.generator.prompt_format
        answer.answer = fmt.parse_answer(answer.text) if fmt is not None else None
        if output.timings.total_seconds is not None:
            answer.timings["generate_seconds"] = output.timings.total_seconds
        if started is not None:
            answer.timings["total_seconds"] = time.perf_counter() - started
        return answer

    def ask(self, question: str, k: int = 5, filters: Any = None, mode: str = "hybrid", **options: Any) -> RagAnswer:
        handle, answer = self.submit(question, k, filters, mode, **options)
        return self.finish(answer, handle.result())
