"""What generation returns, whichever backend ran."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ortgen.runtime.settings import GenerationSettings


@dataclass(frozen=True)
class GeneratedSequence:
    """One returned sequence: the new tokens only (neither the prompt nor a final EOS)."""

    token_ids: list[int]
    text: str | None
    finished: bool  # ended by EOS (or a stop string) before max_new_tokens
    score: float | None = None  # beam search: sum of log-probs / generated_length ** length_penalty (EOS counted)
    stop_reason: str = "length"  # "eos", "stop_string", "length", or "incomplete" (structured output's dead end)
    logprobs: list[Any] | None = None  # with logprobs=N: a TokenLogprob per token of token_ids


@dataclass(frozen=True)
class GenerationResult:
    """Outputs of one generate() call, one list of sequences per prompt."""

    sequences: list[list[GeneratedSequence]]
    prompt_ids: list[list[int]]
    settings: GenerationSettings
    graph_file: str  # which ONNX file ran
    operator: str  # "BeamSearch" / "GreedySearch" / "Sampling" (com.microsoft) or "step engine"
    seconds: float
    backend_kind: str = "graph"  # "graph" (in-graph operators) or "engine" (ortgen's step engine)
    reason: str = ""  # why that backend
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def texts(self) -> list[list[str]]:
        return [[s.text or "" for s in group] for group in self.sequences]

    @property
    def backend(self) -> str:
        """Which graph and what inside it ran, e.g. ``generate_beam.onnx (com.microsoft BeamSearch)``."""
        what = f"com.microsoft {self.operator}" if self.backend_kind == "graph" else f"ortgen {self.operator}"
        return f"{self.graph_file} ({what})"


@dataclass(frozen=True)
class Answer:
    """A QA fine-tune's answer: the parsed label (yes / no / maybe, None if unparseable) and the text."""

    answer: str | None
    text: str
    result: GenerationResult
