"""Prompt formats recorded in a package: how a fine-tune expects its input.

BioGPT's PubMedQA fine-tunes were trained on ``question: Q context: C`` (lowercased, ending
with a period), followed by N learned prompt tokens, and answer with "the answer to the
question given the context is yes." (or no / maybe). The converter records this in
``prompt_format.json`` and the exporter in the manifest; the Generator applies it to text
prompts, so users pass plain text (or a question and its contexts) and get the answer back.
"""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ortgen.errors import OrtgenError
from ortgen.package.fields import Fields


@dataclass(frozen=True)
class PromptFormat:
    learned_prompt_ids: list[int]
    learned_prompt_tokens: list[str] = field(default_factory=list)
    template: str | None = None  # "question: {question} context: {context}"
    lowercase: bool = False
    ensure_period: bool = False
    max_source_tokens: int | None = None
    answer_prefix: str | None = None
    answers: list[str] = field(default_factory=list)
    description: str = ""

    @classmethod
    def from_dict(cls, data: Any, path: str = "prompt_format", source: str = "ortgen.json") -> "PromptFormat":
        f = Fields(data, path, source)
        template = f.str("template", optional=True)
        if template is not None:
            unknown = {name for _, name, _, _ in string.Formatter().parse(template) if name} - {"question", "context"}
            if unknown:
                raise f.fail("template", template, "a template whose only fields are {question} and {context}")
        return cls(
            learned_prompt_ids=f.int_list("learned_prompt_ids", default=[]),
            learned_prompt_tokens=f.str_list("learned_prompt_tokens", default=[]),
            template=template,
            lowercase=f.bool("lowercase", default=False),
            ensure_period=f.bool("ensure_period", default=False),
            max_source_tokens=f.int("max_source_tokens", minimum=1, optional=True),
            answer_prefix=f.str("answer_prefix", optional=True),
            answers=f.str_list("answers", default=[]),
            description=f.str("description", optional=True) or "",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def answers_questions(self) -> bool:
        return self.template is not None and "{question}" in self.template

    def source_text(self, text: str) -> str:
        """Normalise a source text the way the fine-tune's training data was."""
        text = text.strip()
        if self.lowercase:
            text = text.lower()
        if self.ensure_period and text and not text.endswith("."):
            text += "."
        return text

    def question_text(self, question: str, contexts: str | Sequence[str]) -> str:
        if not self.answers_questions:
            raise OrtgenError("this package's prompt format does not take a question and contexts")
        context = contexts if isinstance(contexts, str) else " ".join(c.strip() for c in contexts)
        return self.template.format(question=question.strip(), context=context.strip())  # type: ignore[union-attr]

    def build_ids(self, source_ids: list[int], prefix_len: int) -> list[int]:
        """``source_ids`` (with the tokenizer's prefix) cut to max_source_tokens, then the learned tokens."""
        if self.max_source_tokens is not None and len(source_ids) - prefix_len > self.max_source_tokens:
            source_ids = source_ids[: prefix_len + self.max_source_tokens]
        return source_ids + self.learned_prompt_ids

    def verdict_regex(self) -> str | None:
        """For a closed set of answers (PubMedQA: yes / no / maybe), the regex of the answer sentence:
        the answer prefix, one of the answers, an optional period (structured output decodes it, so the
        verdict is always one of them). None without an answer prefix and answers."""
        if not self.answers_questions or not self.answer_prefix or not self.answers:
            return None
        words = "|".join(_regex_literal(a) for a in self.answers)
        return f"{_regex_literal(self.answer_prefix.strip())} ({words})( ?\\.)?"

    def parse_answer(self, generated: str) -> str | None:
        """The answer word after ``answer_prefix`` (e.g. yes / no / maybe), or None."""
        if not self.answer_prefix:
            return None
        match = re.search(re.escape(self.answer_prefix) + r"\s*([A-Za-z]+)", generated.lower())
        if not match:
            return None
        answer = match.group(1)
        return answer if not self.answers or answer in self.answers else None


def _regex_literal(text: str) -> str:
    """``text`` matched literally (a backslash before each regex metacharacter)."""
    return "".join("\\" + ch if ch in ".^$*+?()[]{}|\\/-" else ch for ch in text)
