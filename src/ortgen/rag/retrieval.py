"""Search: dense, BM25, or both fused by reciprocal rank fusion, inside Milvus.

    question ─┬─► embedder ─► dense vector ─► ANN search (COSINE, top `candidates`) ─┐
              └─► analyzer ─► BM25 query vector (idf from current df) ─► sparse search ─┴► RRF(k) ─► top k passages

RRF scores a passage ``sum over lists of 1 / (k + rank)``: it needs no calibration between a
cosine and a BM25 score, and a passage that both lists rank well beats one that only one list
likes. Filters apply inside both searches (Milvus boolean expressions), before ranking.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Sequence

from ortgen.errors import OrtgenError
from ortgen.rag.bm25 import Analyzer, query_vector
from ortgen.rag.embedder import Embedder
from ortgen.rag.store import Store, quote

log = logging.getLogger(__name__)

SEARCH_MODES = ("hybrid", "dense", "bm25")
DEFAULT_K = 5
DEFAULT_RRF_K = 60
DEFAULT_CANDIDATES = 10  # per list before fusion; deeper fusion measured worse (docs/rag.md)
MAX_K = 1000
DF_CACHE_S = 60.0  # how long a term's document frequency is reused (while the passage count is unchanged)
_OUTPUT_FIELDS = ["doc_id", "number", "title", "source", "text"]


class SearchError(OrtgenError, ValueError):
    """A question or search setting that cannot be used."""


class QuestionTooLongError(SearchError):
    """The question has more tokens than the embedder reads (it would be silently truncated)."""


@dataclass(frozen=True)
class Filters:
    """Restrict a search; all given conditions must hold.

    ``doc_ids``: only these documents; ``source_prefix``: passages whose source (file path,
    ``file:line`` for JSONL) starts with it; ``title_contains``: a substring of the title;
    ``expr``: a raw Milvus boolean expression over the fields doc_id, number, title, source, text.
    """

    doc_ids: tuple[str, ...] = ()
    source_prefix: str = ""
    title_contains: str = ""
    expr: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Filters":
        """From JSON-like input (``{"doc_ids": [...], "source_prefix": ..., ...}``), e.g. an HTTP body."""
        if not data:
            return cls()
        unknown = set(data) - {"doc_ids", "source_prefix", "title_contains", "expr"}
        if unknown:
            raise SearchError(f"unknown filter(s) {', '.join(sorted(unknown))}; allowed: doc_ids, source_prefix, "
                              "title_contains, expr")
        doc_ids = data.get("doc_ids") or ()
        if isinstance(doc_ids, str) or not all(isinstance(d, str) for d in doc_ids):
            raise SearchError("filter doc_ids must be a list of strings")
        return cls(tuple(doc_ids), str(data.get("source_prefix") or ""), str(data.get("title_contains") or ""),
                   str(data.get("expr") or ""))

    def to_expr(self) -> str:
        parts = []
        if self.doc_ids:
            parts.append(f"doc_id in [{', '.join(quote(d) for d in self.doc_ids)}]")
        if self.source_prefix:
            parts.append(f"source like {quote(_like_escape(self.source_prefix) + '%')}")
        if self.title_contains:
            parts.append(f"title like {quote('%' + _like_escape(self.title_contains) + '%')}")
        if self.expr:
            parts.append(f"({self.expr})")
        return " and ".join(parts)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
    sparse_s: float = 0.0  # the BM25 query vector (analysis + document frequencies from Milvus)
    milvus_s: float = 0.0  # Milvus's search and fusion

    def to_dict(self) -> dict[str, float]:
        return {"embed_s": round(self.embed_s, 4), "sparse_s": round(self.sparse_s, 4),
                "milvus_s": round(self.milvus_s, 4)}


class Retriever:
    """Runs searches against one store with one embedder."""

    def __init__(self, store: Store, embedder: Embedder) -> None:
        self.store = store
        self.embedder = embedder
        self.analyzer = Analyzer() if store.identity.sparse == "client" else None
        self.last_timings = SearchTimings()
        self._df_cache: dict[str, tuple[int, int, float]] = {}  # term -> (df, passage count, when)
        self._df_lock = threading.Lock()

    def _check(self, question: str, k: int, mode: str, candidates: int, rrf_k: int) -> None:
        if mode not in SEARCH_MODES:
            raise SearchError(f"search mode {mode!r} is not one of {', '.join(SEARCH_MODES)}")
        if not question.strip():
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

    def _document_frequencies(self, terms: list[str], n: int) -> dict[str, int]:
        """df of each term: from the cache while the passage count is still ``n`` and the entry is younger
        than DF_CACHE_S (an update that keeps the count equal is seen within that time), else from Milvus."""
        now = time.monotonic()
        with self._df_lock:
            cached = {t: e[0] for t in terms if (e := self._df_cache.get(t)) and e[1] == n and now - e[2] < DF_CACHE_S}
        missing = [t for t in dict.fromkeys(terms) if t not in cached]
        fresh = self.store.document_frequencies(missing) if missing else {}
        with self._df_lock:
            if len(self._df_cache) > 100_000:
                self._df_cache.clear()
            self._df_cache.update({t: (df, n, now) for t, df in fresh.items()})
        return {**cached, **fresh}

    def _sparse_query(self, question: str) -> Any:
        """What the sparse search gets: the text (Milvus BM25) or the client-side query vector."""
        if self.analyzer is None:
            return question
        terms = self.analyzer.terms(question)
        if not terms:
            return None
        n = self.store.count()
        return query_vector(terms, self._document_frequencies(terms, n), n) or None

    def search(self, question: str, k: int = DEFAULT_K, filters: Filters | None = None, *, mode: str = "hybrid",
               rrf_k: int = DEFAULT_RRF_K, candidates: int = DEFAULT_CANDIDATES) -> list[Passage]:
        """The ``k`` best passages for ``question`` (fewer when fewer match the filters)."""
        passages, self.last_timings = self.search_timed(question, k, filters, mode=mode, rrf_k=rrf_k,
                                                        candidates=candidates)
        return passages

    def search_timed(self, question: str, k: int = DEFAULT_K, filters: Filters | None = None, *,
                     mode: str = "hybrid", rrf_k: int = DEFAULT_RRF_K, candidates: int = DEFAULT_CANDIDATES
                     ) -> tuple[list[Passage], SearchTimings]:
        """:meth:`search` and where its time went; safe to call from several threads at once."""
        from pymilvus import AnnSearchRequest, RRFRanker

        self._check(question, k, mode, candidates, rrf_k)
        expr = (filters or Filters()).to_expr()
        candidates = max(candidates, k)
        timings = SearchTimings()
        requests = []
        if mode in ("hybrid", "dense"):
            started = time.perf_counter()
            vector = self.embedder.encode([question])[0].tolist()
            timings.embed_s = time.perf_counter() - started
            requests.append(AnnSearchRequest(data=[vector], anns_field="dense", param={"metric_type": "COSINE"},
                                             limit=candidates, expr=expr or None))
        if mode in ("hybrid", "bm25"):
            started = time.perf_counter()
            sparse = self._sparse_query(question)
            timings.sparse_s = time.perf_counter() - started
            if sparse is not None:
                metric = "IP" if self.analyzer is not None else "BM25"
                requests.append(AnnSearchRequest(data=[sparse], anns_field="sparse", param={"metric_type": metric},
                                                 limit=candidates, expr=expr or None))
        if not requests:
            return [], timings  # BM25 only, and no question term occurs in the corpus
        started = time.perf_counter()
        if len(requests) == 1:
            r = requests[0]
            hits = self.store.client.search(self.store.collection, data=r.data, anns_field=r.anns_field,
                                            search_params=r.param, limit=k, filter=expr,
                                            output_fields=_OUTPUT_FIELDS)[0]
        else:
            hits = self.store.client.hybrid_search(self.store.collection, requests, ranker=RRFRanker(rrf_k),
                                                   limit=k, output_fields=_OUTPUT_FIELDS)[0]
        timings.milvus_s = time.perf_counter() - started
        return [_passage(hit, rank) for rank, hit in enumerate(hits, start=1)], timings


def _passage(hit: Any, rank: int) -> Passage:
    entity = hit["entity"]
    return Passage(doc_id=entity["doc_id"], chunk_id=hit["id"], number=int(entity["number"]), title=entity["title"],
                   text=entity["text"], source=entity["source"], score=abs(float(hit["distance"])), rank=rank)


def fuse_rankings(rankings: Sequence[Sequence[str]], k: int = DEFAULT_RRF_K) -> list[tuple[str, float]]:
    """Reciprocal rank fusion of ranked id lists (the same formula Milvus's RRFRanker applies);
    used by evaluation to check Milvus's fused order."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda pair: -pair[1])
