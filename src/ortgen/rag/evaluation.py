"""Retrieval quality: recall@k and MRR@k of each search mode over questions with known answers.

    recall@k  share of questions whose relevant document is among the first k passages
    MRR@k     mean over questions of 1 / rank of the first relevant passage (0 if not in the first k)

Relevance is by document (a passage counts when its ``doc_id`` is relevant), the unit a user
asks for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

from ortgen.rag.retrieval import SEARCH_MODES, Passage


class Searchable(Protocol):
    def search(self, question: str, k: int = ..., filters=None, *, mode: str = ..., **options: Any
               ) -> list[Passage]: ...


class Judged(Protocol):
    question: str
    relevant: str
    kind: str


def first_relevant_rank(passages: Sequence[Passage], relevant: str) -> int | None:
    """1-based rank of the first passage of the relevant document, or None."""
    return next((p.rank for p in passages if p.doc_id == relevant), None)


@dataclass
class ModeScores:
    """Scores of one search mode, overall and by question kind."""

    mode: str
    ranks: list[int | None] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)

    def recall(self, k: int, kind: str | None = None) -> float:
        ranks = self._ranks(kind)
        return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0

    def mrr(self, k: int, kind: str | None = None) -> float:
        ranks = self._ranks(kind)
        return sum(1.0 / r for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0

    def _ranks(self, kind: str | None) -> list[int | None]:
        return [r for r, kd in zip(self.ranks, self.kinds) if kind is None or kd == kind]


def evaluate(index: Searchable, queries: Iterable[Judged], modes: Sequence[str] = SEARCH_MODES,
             depth: int = 10, **search_options: Any) -> dict[str, ModeScores]:
    """Search every question in every mode to ``depth`` results; returns scores per mode.
    ``search_options`` (rrf_k, candidates) go to every search."""
    queries = list(queries)
    results = {mode: ModeScores(mode) for mode in modes}
    for query in queries:
        for mode in modes:
            passages = index.search(query.question, k=depth, mode=mode, **search_options)
            results[mode].ranks.append(first_relevant_rank(passages, query.relevant))
            results[mode].kinds.append(query.kind)
    return results


def table(results: dict[str, ModeScores], label: str = "", kinds: Sequence[str] = ()) -> str:
    """A markdown table: recall@5 and MRR@10 per mode, overall and per question kind."""
    columns = ["all"] + list(kinds)
    header = f"| {label or 'mode'} | " + " | ".join(f"R@5 {c} | MRR@10 {c}" for c in columns) + " |"
    lines = [header, "|" + "---|" * (1 + 2 * len(columns))]
    for mode, scores in results.items():
        cells = []
        for c in columns:
            kind = None if c == "all" else c
            cells += [f"{scores.recall(5, kind):.3f}", f"{scores.mrr(10, kind):.3f}"]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
