"""Where passages live: what every store offers, whichever engine holds them.

Two stores implement :class:`PassageStore`:

    local    (default)  ortgen's own engine in the index directory: SQLite for the passages, their
                        BM25 postings and corpus statistics, faiss HNSW for the vectors
                        (``ortgen.rag.local_store``). One machine, millions of passages.
    milvus              a Milvus server or cluster (``--uri http://host:19530``), or Milvus Lite
                        (``--uri FILE.db``) (``ortgen.rag.milvus_store``). Scale-out.

Both answer the same questions the same way: dense search with the parameters of
``ortgen.rag.dense`` (exact inside selective filters), BM25 scored exactly with statistics kept
current at every insert and delete, filters from ``ortgen.rag.filters``. The retriever fuses the
two lists itself (``ortgen.rag.retrieval``), so the fused ranking does not depend on the engine.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Protocol, Sequence

import numpy as np

from ortgen.errors import OrtgenError
from ortgen.rag.filters import Filters

STORE_KINDS = ("local", "milvus")
SPARSE_MODES = ("client", "milvus")
DEFAULT_TIMEOUT_S = 10.0
STORE_FORMAT = "ortgen-rag-2"


class StoreError(OrtgenError):
    """The store cannot be reached or opened, or it does not fit this index."""


@dataclass(frozen=True)
class CollectionIdentity:
    """What must match between an index and every process that writes or searches it."""

    embedder: str  # embedder checksum
    embedder_name: str
    dims: int
    sparse: str  # one of SPARSE_MODES
    analyzer: str
    format: str = STORE_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def mismatch(self, found: "CollectionIdentity", where: str) -> str | None:
        """Why ``found`` (recorded in ``where``) cannot be used with this index, or None."""
        if found.format != self.format:
            return (f"{where} was written by another version of ortgen (store format {found.format}, this one "
                    f"reads {self.format}); re-index into a new directory")
        if found.embedder != self.embedder:
            return (f"{where} holds vectors of embedder {found.embedder_name} ({found.embedder[:12]}), not of "
                    f"{self.embedder_name} ({self.embedder[:12]}); vectors of two models cannot be mixed: use the "
                    "index's own embedder, or a new index")
        if (found.dims, found.sparse, found.analyzer) != (self.dims, self.sparse, self.analyzer):
            return (f"{where} was built with sparse={found.sparse}, analyzer={found.analyzer}, dims={found.dims}; "
                    f"this index uses sparse={self.sparse}, analyzer={self.analyzer}, dims={self.dims}: re-index "
                    "into a new directory")
        return None


@dataclass
class Row:
    """One passage to insert."""

    chunk_id: str
    doc_id: str
    number: int
    title: str
    source: str
    text: str
    dense: np.ndarray  # (dims,) float32, unit length
    terms: list[str]  # the analysed terms, in order (BM25)
    content: str = ""  # title + text (input of Milvus's own BM25 function, sparse="milvus" only)


@dataclass(frozen=True)
class Record:
    """A stored passage as search returns it."""

    chunk_id: str
    doc_id: str
    number: int
    title: str
    source: str
    text: str


@dataclass
class SearchWork:
    """What one search read, for tests and timings: it must not grow with the corpus."""

    postings: int = 0  # BM25 posting entries scored (local store)
    candidates: int = 0  # passages scored exactly after the engine's candidate search
    store_calls: int = 0  # round trips to the engine (Milvus store)
    exact: bool = False  # dense: computed exactly over the filter's passages
    extra: dict[str, Any] = field(default_factory=dict)


Hit = tuple[Any, float]  # (the store's key for a passage, score): best first


def document_file(source: str) -> str:
    """The file a passage's source names (``file:line`` for JSONL, ``file#PMID:n`` for MEDLINE)."""
    for separator in ("#PMID:",):
        if separator in source:
            return source.split(separator, 1)[0]
    head, _, tail = source.rpartition(":")
    return head if head and tail.isdigit() else source


class PassageStore(Protocol):
    """The operations the indexer, the retriever and the CLI need of a store."""

    identity: CollectionIdentity

    def insert(self, rows: Sequence[Row]) -> None: ...

    def delete_ids(self, chunk_ids: Sequence[str]) -> None: ...

    def flush(self) -> None: ...

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> dict[str, set[str]]: ...

    def documents_of_files(self, files: Iterable[str]) -> dict[str, str]: ...

    def count(self, filters: Filters | None = None) -> int: ...

    def dense_search(self, vector: np.ndarray, limit: int, filters: Filters | None = None,
                     work: SearchWork | None = None) -> list[Hit]: ...

    def bm25_search(self, question: str, terms: list[str], limit: int, filters: Filters | None = None,
                    work: SearchWork | None = None) -> list[Hit]: ...

    def fetch(self, keys: Sequence[Any]) -> dict[Any, Record]: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def delete_documents(store: PassageStore, doc_ids: Sequence[str]) -> int:
    """Delete every passage of ``doc_ids``; returns how many passages there were."""
    ids = [i for chunk_ids in store.chunk_ids_of(doc_ids).values() for i in chunk_ids]
    store.delete_ids(sorted(ids))
    return len(ids)
