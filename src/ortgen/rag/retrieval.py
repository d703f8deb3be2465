"""Search: dense, BM25, or both fused by reciprocal rank fusion.

    question ─┬─► embedder ─► dense vector ─► store.dense_search (top `candidates`) ──┐
              └─► analyzer ─► terms ─► store.bm25_search (exact BM25, top `candidates`) ┴► RRF(k) ─► top k ─► fetch

RRF scores a passage ``sum over lists of 1 / (k + rank)``: it needs no calibration between a
cosine and a BM25 score, and a passage that both lists rank well beats one that only one list
likes. Fusion happens here, not in the engine, so both stores (``ortgen.rag.store``) rank alike.
Filters apply inside both searches, before ranking.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ortgen.rag.bm25 import Analyzer
from ortgen.rag.embedder import Embedder
from ortgen.rag.filters import FilterError, Filters, SearchError
from ortgen.rag.store import PassageStore, SearchWork

log = logging.getLogger(__name__)

SEARCH_MODES = ("hybrid", "dense", "bm25")
DEFAULT_K = 5
DEFAULT_RRF_K = 60
DEFAULT_CANDIDATES = 10  # per list before fusion; deeper fusion measured worse (docs/rag.md)
MAX_K = 1000

__all__ = ["Filters", "FilterError", "Passage", "QuestionTooLongError", "Retriever", "SearchError", "SearchTimings",
           "fuse_rankings"]


class QuestionTooLongError(SearchError):
    """The question has more tokens than the embedder reads (it would be silently truncated)."""


@dataclass(frozen=True)
class Passage:
    """One search result. ``score``: RRF score (hybrid), cosine similarity (dense) or BM25 (bm25)."""

    doc_id: str
    chunk_id: str
    number: int
    title: str
    text: str
    source: str
    score: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "chunk_id": self.chunk_id, "number": self.number, "title": self.title,
                "text": self.text, "source": self.source, "score": self.score, "rank": self.rank}


@dataclass
class SearchTimings:
    """Seconds one search spent, by part (for logs and the HTTP answer's timings)."""

    embed_s: float = 0.0  # the question's dense vector
    dense_s: float = 0.0  # the store's dense search
    bm25_s: float = 0.0  # analysis and the store's BM25 search
    fetch_s: float = 0.0  # reading the chosen passages

    def to_dict(self) -> dict[str, float]:
        return {"embed_s": round(self.embed_s, 4), "dense_s": round(self.dense_s, 4),
                "bm25_s": round(self.bm25_s, 4), "fetch_s": round(self.fetch_s, 4)}


class Retriever:
    """Runs searches against one store with one embedder; safe to call from several threads at once."""

    def __init__(self, store: PassageStore, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder
        self.analyzer = Analyzer()
        self.last_timings = SearchTimings()
        self.last_work = SearchWork()

    def _check(self, question: str, k: int, mode: str, candidates: int, rrf_k: int) -> None:
        if mode not in SEARCH_MODES:
            raise SearchError(f"search mode {mode!r} is not one of {', '.join(SEARCH_MODES)}")
        if not isinstance(question, str) or not question.strip():
            raise SearchError("the question is empty")
        if not 1 <= k <= MAX_K:
            raise SearchError(f"k must be between 1 and {MAX_K}, got {k}")
        if rrf_k < 1 or candidates < 1:
            raise SearchError(f"rrf_k and candidates must be >= 1, got {rrf_k} and {candidates}")
        limit = self.embedder.manifest.max_seq_length - 2
        tokens = self.embedder.count_tokens([question])[0]
        if tokens > limit:
            raise QuestionTooLongError(f"the question has {tokens} tokens; the embedder reads at most {limit} "
                                       "(it would be cut off): shorten it")

    def search(self, question: str, k: int = DEFAULT_K, filters: Filters | None = None, *, mode: str = "hybrid",
               rrf_k: int = DEFAULT_RRF_K, candidates: int = DEFAULT_CANDIDATES) -> list[Passage]:
        """The ``k`` best passages for ``question`` (fewer when fewer match the filters)."""
        passages, self.last_timings = self.search_timed(question, k, filters, mode=mode, rrf_k=rrf_k,
                                                        candidates=candidates)
        return passages

    def search_timed(self, question: str, k: int = DEFAULT_K, filters: Filters | None = None, *,
                     mode: str = "hybrid", rrf_k: int = DEFAULT_RRF_K, candidates: int = DEFAULT_CANDIDATES,
                     work: SearchWork | None = None) -> tuple[list[Passage], SearchTimings]:
        """:meth:`search` and where its time went; ``work`` collects what the store read."""
        self._check(question, k, mode, candidates, rrf_k)
        filters = filters or None
        candidates = max(candidates, k)
        work = work if work is not None else SearchWork()
        timings = SearchTimings()
        lists = []
        if mode in ("hybrid", "dense"):
            started = time.perf_counter()
            vector = self.embedder.encode([question])[0]
            timings.embed_s = time.perf_counter() - started
            started = time.perf_counter()
            lists.append(self.store.dense_search(vector, candidates, filters, work))
            timings.dense_s = time.perf_counter() - started
        if mode in ("hybrid", "bm25"):
            started = time.perf_counter()
            terms = self.analyzer.terms(question)
            lists.append(self.store.bm25_search(question, terms, candidates, filters, work) if terms else [])
            timings.bm25_s = time.perf_counter() - started
        if mode == "hybrid":
            chosen = fuse_rankings([[key for key, _ in hits] for hits in lists], rrf_k)[:k]
        else:
            chosen = lists[0][:k]
        started = time.perf_counter()
        records = self.store.fetch([key for key, _ in chosen])
        timings.fetch_s = time.perf_counter() - started
        self.last_work = work
        passages = []
        for key, value in chosen:
            record = records.get(key)
            if record is None:  # deleted between the search and the fetch
                continue
            passages.append(Passage(doc_id=record.doc_id, chunk_id=record.chunk_id, number=record.number,
                                    title=record.title, text=record.text, source=record.source, score=float(value),
                                    rank=len(passages) + 1))
        return passages, timings


def fuse_rankings(rankings: Sequence[Sequence[Any]], k: int = DEFAULT_RRF_K) -> list[tuple[Any, float]]:
    """Reciprocal rank fusion of ranked id lists (the formula of Milvus's RRFRanker), best first; equal
    scores keep the order in which the items were first seen (the dense list's first)."""
    scores: dict[Any, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
