"""The question-answering prompt: retrieved passages and a question in the package's prompt format.

A PubMedQA fine-tune of BioGPT was trained on ``</s> question: Q context: C`` (lowercased, ending
with a period: the package's recorded prompt format) followed by its learned prompt tokens, and
answers "the answer to the question given the context is yes." (or no / maybe). The prompt built
here is exactly that, token for token, for the passages in rank order; when they do not all fit
(the model's positions, minus the new tokens to generate, minus the learned tokens, and the
fine-tune's own source limit), the context is cut at a word boundary from the end, so the prompt
is still the training format of a shorter context, never a sequence cut mid-word. The question
is always kept whole: a question that does not fit with an empty context is refused.

Packages without a question-answering format (microsoft/biogpt, GPT-2, OPT) get the same
``question: Q context: C`` layout, without normalisation or learned tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ortgen.errors import GenerationSettingsError
from ortgen.package.prompt_format import PromptFormat
from ortgen.runtime.tokenizer import Tokenizer

DEFAULT_TEMPLATE = "question: {question} context: {context}"


class QuestionTooLongError(GenerationSettingsError):
    """The question alone does not fit the model's prompt."""


@dataclass(frozen=True)
class QAPrompt:
    ids: list[int]  # what the model reads: the tokenized source, then the learned tokens
    source: str  # the source text after the format's normalisation
    passages_used: int  # passages whose text (or its start) is in the prompt
    truncated: bool  # the context was cut to fit


class QAPromptBuilder:
    """Builds :class:`QAPrompt` s for one package (its tokenizer, prompt format and prefix ids)."""

    def __init__(self, tokenizer: Tokenizer, prompt_format: PromptFormat | None, prefix_length: int) -> None:
        self.tokenizer = tokenizer
        self.format = prompt_format if prompt_format is not None and prompt_format.answers_questions else None
        self.prefix_length = prefix_length
        self.learned = list(self.format.learned_prompt_ids) if self.format else []

    def source(self, question: str, context: str) -> str:
        template = self.format.template if self.format else DEFAULT_TEMPLATE
        text = template.format(question=question.strip(), context=context.strip())  # type: ignore[union-attr]
        return self.format.source_text(text) if self.format else text.strip()

    def _ids(self, question: str, context: str) -> tuple[list[int], str]:
        source = self.source(question, context)
        return self.tokenizer.encode(source), source

    def source_budget(self, max_prompt_tokens: int) -> int:
        """Tokens the source may take (the tokenizer's prefix included)."""
        budget = max_prompt_tokens - len(self.learned)
        if self.format is not None and self.format.max_source_tokens is not None:
            budget = min(budget, self.prefix_length + self.format.max_source_tokens)
        return budget

    def build(self, question: str, passages: Sequence[str], max_prompt_tokens: int) -> QAPrompt:
        """The prompt for ``question`` and ``passages`` (best first) within ``max_prompt_tokens``."""
        if not question.strip():
            raise GenerationSettingsError("the question is empty")
        budget = self.source_budget(max_prompt_tokens)
        bare, _ = self._ids(question, "")
        if len(bare) > budget:
            raise QuestionTooLongError(
                f"the question takes {len(bare)} tokens in the prompt format; with the tokens to generate and the "
                f"format's learned tokens, {budget} fit: shorten the question or lower max_new_tokens")
        texts = [p.strip() for p in passages if p.strip()]
        ids, source = self._ids(question, " ".join(texts))
        if len(ids) <= budget:
            return QAPrompt(ids + self.learned, source, len(texts), False)
        words = " ".join(texts).split()
        low, high = 0, len(words)  # the most context words that fit
        while low < high:
            middle = (low + high + 1) // 2
            if len(self._ids(question, " ".join(words[:middle]))[0]) <= budget:
                low = middle
            else:
                high = middle - 1
        ids, source = self._ids(question, " ".join(words[:low]))
        used, count = 0, 0
        for text in texts:
            if count >= low:
                break
            used += 1
            count += len(text.split())
        return QAPrompt(ids + self.learned, source, used, True)
