"""Dense search: the HNSW parameters both stores use, and the local store's HNSW index (faiss).

Parameters (measured: docs/rag.md, "Dense search: parameters and recall"): HNSW with M = 16
neighbours per node and efConstruction = 200, searched with

    ef(k, N) = max(EF_MIN * max(1, N / 100k) ** 0.6, EF_PER_K * k)   (k: results asked; N: passages),
               at most EF_MAX

A graph of more nodes needs a wider search for the same recall: at a million passages recall@10
against exact search was 0.971 at ef 512 and is 0.9955 with this rule (`ortgen rag bench-scale`),
so ef grows with the corpus (512 up to 100k passages, ~2048 at 1M).
Filters change the picture: HNSW restricted to a few allowed nodes walks a graph made of the others and can miss
them all (a search filtered to one document found nothing at all). So a filtered search that
allows at most EXACT_FILTER_ROWS passages is computed exactly over exactly those passages (their
vectors gathered and multiplied: a few milliseconds), and a broader one searches HNSW with ef
scaled by the inverse of the fraction allowed (capped at EF_MAX).

Vectors are unit length (the embedders normalise), so cosine similarity is the inner product.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

HNSW_M = 16
HNSW_EF_CONSTRUCTION = 200
EF_MIN = 512
EF_GROWTH_FROM = 100_000  # passages; ef grows as (N / this) ** EF_GROWTH beyond it
EF_GROWTH = 0.6
EF_PER_K = 32
EF_MAX = 16384
EXACT_FILTER_ROWS = 16384  # also Milvus's query window (offset + limit), so both stores can fetch them


def search_ef(k: int, allowed_fraction: float = 1.0, passages: int = 0) -> int:
    """HNSW's search breadth for ``k`` results among ``passages`` when ``allowed_fraction`` of them may be
    returned."""
    base = EF_MIN * max(1.0, passages / EF_GROWTH_FROM) ** EF_GROWTH
    ef = max(base, EF_PER_K * k)
    if allowed_fraction < 1.0:
        ef = math.ceil(ef / max(allowed_fraction, 1e-6))
    return int(min(max(ef, k), EF_MAX))


def exact_top(vectors: np.ndarray, keys: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``vectors`` nearest ``query`` by inner product: (keys, scores), best first; ties
    broken by key, so the order never depends on how the rows were gathered."""
    if len(keys) == 0:
        return keys[:0], np.zeros(0, dtype=np.float32)
    scores = vectors @ query  # (m,)
    k = min(k, len(keys))
    top = np.argpartition(-scores, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
    order = np.lexsort((keys[top], -scores[top]))
    top = top[order]
    return keys[top], scores[top]


class DenseIndex:
    """faiss HNSW (inner product) over unit vectors, keyed by the local store's row numbers.

    Rows are added in increasing order, so the id map stays sorted and a row's position in the
    flat vector storage is a binary search away (exact filtered search gathers vectors that way).
    Not safe for an add during a search: the store serialises them.
    """

    def __init__(self, dims: int, index=None) -> None:
        import faiss

        self.dims = dims
        if index is None:
            hnsw = faiss.IndexHNSWFlat(dims, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index = faiss.IndexIDMap2(hnsw)
        self.index = index
        self._ids: np.ndarray | None = None
        self.lock = threading.RLock()

    # -- persistence -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path, dims: int) -> "DenseIndex":
        import faiss

        index = faiss.read_index(str(path))
        if index.d != dims:
            raise ValueError(f"{path} holds {index.d}-dimensional vectors, not {dims}")
        return cls(dims, index)

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, then rename): a reader never sees half an index."""
        import faiss

        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with self.lock:
            faiss.write_index(self.index, str(tmp))
        os.replace(tmp, path)

    # -- contents --------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    def ids(self) -> np.ndarray:
        """Row numbers in storage order (ascending)."""
        if self._ids is None:
            import faiss

            self._ids = faiss.vector_to_array(self.index.id_map).astype(np.int64)
        return self._ids

    @property
    def max_row(self) -> int:
        ids = self.ids()
        return int(ids[-1]) if len(ids) else -1

    def add(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        if np.any(np.diff(rows) <= 0) or rows[0] <= self.max_row:
            raise ValueError("rows must be added in increasing order")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.lock:
            self.index.add_with_ids(vectors, rows)
            self._ids = None

    def vectors_of(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows present, their vectors) for ``rows`` (absent rows are dropped)."""
        import faiss

        ids = self.ids()
        rows = np.asarray(rows, dtype=np.int64)
        positions = np.searchsorted(ids, rows)
        present = (positions < len(ids)) & (ids[np.minimum(positions, len(ids) - 1)] == rows) if len(ids) else \
            np.zeros(len(rows), dtype=bool)
        positions = positions[present]
        flat = faiss.downcast_index(faiss.downcast_index(self.index.index).storage)
        storage = faiss.rev_swig_ptr(flat.get_xb(), self.size * self.dims).reshape(self.size, self.dims)
        return rows[present], storage[positions]

    # -- search ----------------------------------------------------------------------------------

    def search(self, query: np.ndarray, k: int, *, allowed: np.ndarray | None = None,
               excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(rows, inner products) of the ``k`` nearest, best first. ``allowed``: only these rows (exact when
        few, else HNSW with a wider search); ``excluded``: never these (deleted rows)."""
        import faiss

        query = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        with self.lock:
            if self.size == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            if allowed is not None:
                if excluded is not None and len(excluded):
                    allowed = np.setdiff1d(allowed, excluded)
                if len(allowed) <= EXACT_FILTER_ROWS:
                    rows, vectors = self.vectors_of(allowed)
                    return exact_top(vectors, rows, query[0], k)
                selector = faiss.IDSelectorBatch(np.ascontiguousarray(allowed, dtype=np.int64))
                fraction = len(allowed) / self.size
            elif excluded is not None and len(excluded):
                selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.ascontiguousarray(excluded, dtype=np.int64)))
                fraction = 1.0 - len(excluded) / self.size
            else:
                selector, fraction = None, 1.0
            params = faiss.SearchParametersHNSW(efSearch=search_ef(k, fraction, self.size))
            if selector is not None:
                params.sel = selector
            scores, rows = self.index.search(query, k, params=params)
        keep = rows[0] >= 0
        return rows[0][keep].astype(np.int64), scores[0][keep]

    def rebuilt(self, keep_rows: np.ndarray) -> "DenseIndex":
        """A new index holding only ``keep_rows`` (after deletions), built from this one's vectors."""
        rows, vectors = self.vectors_of(keep_rows)
        fresh = DenseIndex(self.dims)
        fresh.add(rows, vectors.copy())
        return fresh
