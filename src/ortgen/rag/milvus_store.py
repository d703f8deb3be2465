"""Passages in Milvus through pymilvus: one code path for a Milvus server (or cluster) and Milvus Lite.

Collection schema (one row per passage):

    id        VARCHAR primary key     chunk id "{doc_id}#{n}-{hash}"
    doc_id    VARCHAR                 for filters, deletes and per-document updates
    number    INT64                   the chunk's position in its document
    title, source, file, text   VARCHAR   what search returns; file: where the document came from
    dense     FLOAT_VECTOR(dims)      the embedder's vector: HNSW (M, efConstruction of ortgen.rag.dense), COSINE
    sparse    SPARSE_FLOAT_VECTOR     BM25 candidates: the document half with the avgdl of creation (IP),
                                      or Milvus's BM25 function output (sparse="milvus")
    terms     VARCHAR                 the analysed terms in order: exact BM25 of the candidates
    content   VARCHAR (Milvus BM25)   title + text, analysed by Milvus (input of its BM25 function)

Beside it, ``{collection}__bm25`` holds the corpus statistics BM25 needs, kept current by every
insert and delete: per term, its document frequency, and two totals (passages, terms). Each writer
(an indexing job: "main", or its shard "K/N") keeps its own rows of counts (key ``term|writer``),
so jobs writing at the same time never overwrite each other's counts; the statistics are their
sums. A query reads its terms' rows (an indexed scalar field), asks Milvus for candidates by the
sparse inner product, and scores those exactly (``ortgen.rag.bm25.score``) with today's N, df and
avgdl: no per-query counting over the corpus.

Dense search passes HNSW's ``ef`` (``ortgen.rag.dense.search_ef``: without it Milvus searches with
its default and misses true neighbours); a filtered search that allows at most
EXACT_FILTER_ROWS passages is computed exactly over their vectors, fetched from Milvus.

The collection's property ``ortgen.identity`` holds the index identity (embedder checksum, dims,
sparse mode, analyzer) as JSON: every process that opens the collection checks it, so vectors
from two embedders never meet. Milvus servers older than MIN_SERVER are refused at connect (2.3
accepts the schema and fails later, one raw error at a time).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from typing import Any, Iterable, Sequence

import numpy as np

from ortgen.rag.bm25 import BM25Parameters, CorpusStats, document_vector, query_vector, score
from ortgen.rag.dense import EXACT_FILTER_ROWS, HNSW_EF_CONSTRUCTION, HNSW_M, exact_top, search_ef
from ortgen.rag.filters import Filters, InList, to_milvus
from ortgen.rag.store import DEFAULT_TIMEOUT_S, CollectionIdentity, Hit, Record, Row, SearchWork, StoreError, \
    document_file

log = logging.getLogger(__name__)

MIN_SERVER = (2, 5)  # sparse vectors and the BM25 function
MIN_LITE = (3, 2)
_ID_CHARS = 1100
_TEXT_CHARS = 65535
_META_CHARS = 2048
_QUERY_BATCH = 64  # ids per "in [...]" query
_PAGE = 4096  # rows per query page (Milvus caps offset + limit at 16384)
_CANDIDATES_PER_RESULT = 4  # BM25 candidates fetched per result asked, for the exact rescoring
_MIN_CANDIDATES = 50
_TOTAL_PASSAGES = "#passages"  # never an analysed term (no "#" in terms)
_TOTAL_LENGTH = "#length"
IDENTITY_PROPERTY = "ortgen.identity"
_OUTPUT_FIELDS = ["id", "doc_id", "number", "title", "source", "text"]
_MILVUS_ANALYZER = {"tokenizer": "standard",
                    "filter": ["lowercase", {"type": "stop", "stop_words": ["_english_"]},
                               {"type": "stemmer", "language": "english"}]}


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_lite_users: dict[str, int] = {}  # Milvus Lite database path -> open clients in this process
_lite_lock = threading.Lock()


def _lite_path(uri: str) -> str | None:
    return None if "://" in uri else os.path.abspath(uri)


def _version(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g) for g in match.groups() if g is not None) if match else None


def check_server_version(version: str, uri: str) -> None:
    """Refuse a Milvus too old for this schema, naming the versions that work."""
    lite = version.lower().startswith("milvus_lite")
    needed = MIN_LITE if lite else MIN_SERVER
    found = _version(version)
    if found is None:
        log.warning("Milvus at %s reports version %r; cannot check it (ortgen needs Milvus >= %s)", uri, version,
                    ".".join(map(str, MIN_SERVER)))
        return
    if found[:2] < needed:
        raise StoreError(f"{'Milvus Lite' if lite else 'Milvus'} at {uri} is version {version}; ortgen needs Milvus "
                         f"{'.'.join(map(str, MIN_SERVER))} or newer (sparse vectors, BM25), or Milvus Lite "
                         f"{'.'.join(map(str, MIN_LITE))} or newer (pip install -U milvus-lite)")


def connect(uri: str, *, token: str = "", timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """A MilvusClient for ``uri`` (a ``.db`` path: Milvus Lite; ``http://host:19530``: a server) whose
    version is checked, or :class:`StoreError` within ``timeout`` seconds when it does not answer. Close
    it with :func:`disconnect`, which also stops this process's Milvus Lite server for the file when its
    last client goes (Milvus Lite admits one process per database file)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise StoreError("Milvus stores need pymilvus and milvus-lite: pip install 'ortgen[rag]'") from exc
    path = _lite_path(uri)
    lite_log = logging.getLogger("milvus_lite.server_manager")
    level = lite_log.level
    if path:
        lite_log.setLevel(logging.CRITICAL)  # its traceback would bury the message below
    try:
        client = MilvusClient(uri=uri, token=token, timeout=timeout)
    except Exception as exc:  # pymilvus raises MilvusException, grpc errors, OSError
        if path:
            raise StoreError(f"cannot open the Milvus Lite database {path}: another process probably has it open "
                             "(Milvus Lite admits one process per database file). Stop that process (e.g. an ortgen "
                             "server using this index) or keep the index on a Milvus server (--uri http://host:19530)")\
                from exc
        raise StoreError(f"cannot connect to Milvus at {uri} within {timeout:g}s: {exc}. Start the server or "
                         "check --uri (a local path ending in .db uses Milvus Lite, http://host:19530 a server)")\
            from exc
    finally:
        lite_log.setLevel(level)
    if path:
        with _lite_lock:
            _lite_users[path] = _lite_users.get(path, 0) + 1
    try:
        check_server_version(str(client.get_server_version()), uri)
    except BaseException:
        disconnect(client, uri)
        raise
    return client


def disconnect(client: Any, uri: str) -> None:
    """Close ``client``; the last client of a Milvus Lite file also stops its in-process server."""
    try:
        client.close()
    except Exception as exc:  # closing must not mask the caller's own error
        log.debug("closing Milvus client: %s", exc)
    path = _lite_path(uri)
    if not path:
        return
    with _lite_lock:
        _lite_users[path] = _lite_users.get(path, 1) - 1
        last = _lite_users[path] <= 0
        if last:
            del _lite_users[path]
    if last:
        try:
            from milvus_lite.server_manager import server_manager_instance
        except ImportError:
            return
        server_manager_instance.release_server(path)


def _call(what: str, function, *args, **kwargs):
    """Run a pymilvus call; its errors become one-line :class:`StoreError` s."""
    try:
        return function(*args, **kwargs)
    except StoreError:
        raise
    except Exception as exc:  # MilvusException, grpc.RpcError, ...
        message = getattr(exc, "message", None) or str(exc)
        raise StoreError(f"Milvus could not {what}: {message.strip().splitlines()[0] if message else exc}") from exc


class MilvusStore:
    """One collection of passages (and its statistics collection) in Milvus."""

    def __init__(self, client: Any, uri: str, collection: str, identity: CollectionIdentity,
                 params: BM25Parameters, writer: str = "main") -> None:
        self.client = client
        self.writer = writer
        self.uri = uri
        self.collection = collection
        self.stats_collection = f"{collection}__bm25"
        self.identity = identity
        self.params = params

    # -- collection ------------------------------------------------------------------------

    @classmethod
    def open(cls, uri: str, collection: str, identity: CollectionIdentity, *, create: bool, token: str = "",
             timeout: float = DEFAULT_TIMEOUT_S, params: BM25Parameters | None = None,
             writer: str = "main") -> "MilvusStore":
        """The collection, checked against ``identity`` (created when absent and ``create``); ``writer``
        names this process's statistics rows (one name per concurrent indexing job)."""
        client = connect(uri, token=token, timeout=timeout)
        store = cls(client, uri, collection, identity, params or BM25Parameters(), writer)
        try:
            store._open(create)
        except BaseException:
            disconnect(client, uri)
            raise
        return store

    def _open(self, create: bool) -> None:
        client, collection = self.client, self.collection
        if client.has_collection(collection):
            self._check_identity()
            client.load_collection(collection)  # a server keeps collections released until loaded
            if self.identity.sparse == "client":
                client.load_collection(self.stats_collection)
        elif create:
            try:
                self._create()
            except Exception:
                if not client.has_collection(collection):  # not a race with another job: a real error
                    raise
                self._check_identity()  # another job created it first
        else:
            raise StoreError(f"Milvus has no collection {collection!r}; index documents first "
                             "(ortgen rag index DOCS -o INDEX)")

    def _check_identity(self) -> None:
        properties = self.client.describe_collection(self.collection).get("properties") or {}
        try:
            found = CollectionIdentity(**json.loads(properties.get(IDENTITY_PROPERTY, "")))
        except (ValueError, TypeError):
            raise StoreError(f"collection {self.collection!r} was not made by ortgen rag index; choose another "
                             "--collection") from None
        problem = self.identity.mismatch(found, f"collection {self.collection!r}")
        if problem:
            raise StoreError(problem)

    def _create(self) -> None:
        from pymilvus import DataType, Function, FunctionType

        c, ident = self.client, self.identity
        schema = c.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_ID_CHARS)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("number", DataType.INT64)
        schema.add_field("title", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("source", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("file", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("text", DataType.VARCHAR, max_length=_TEXT_CHARS)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=ident.dims)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        index = c.prepare_index_params()
        index.add_index("dense", index_type="HNSW", metric_type="COSINE",
                        params={"M": HNSW_M, "efConstruction": HNSW_EF_CONSTRUCTION})
        if ident.sparse == "client":
            schema.add_field("terms", DataType.VARCHAR, max_length=_TEXT_CHARS)
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        else:
            schema.add_field("content", DataType.VARCHAR, max_length=_TEXT_CHARS, enable_analyzer=True,
                             analyzer_params=_MILVUS_ANALYZER)
            schema.add_function(Function(name="bm25", function_type=FunctionType.BM25,
                                         input_field_names=["content"], output_field_names=["sparse"]))
            index.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        grpc_log = logging.getLogger("grpc._server")
        level = grpc_log.level
        grpc_log.setLevel(logging.CRITICAL)  # Milvus Lite answers pymilvus' AllocTimestamp probe with a traceback
        try:
            c.create_collection(self.collection, schema=schema, properties={IDENTITY_PROPERTY: ident.to_json()})
            # the collection is empty, so its indexes are ready at once: sync=False skips pymilvus's
            # 0.5 s polling sleep per index (a second of every first indexing run)
            c.create_index(self.collection, index, sync=False)
            c.load_collection(self.collection)
            if ident.sparse == "client":
                self._create_stats()
        finally:
            grpc_log.setLevel(level)
        log.info("created collection %s (%d dims, %s BM25)", self.collection, ident.dims, ident.sparse)

    def _create_stats(self) -> None:
        from pymilvus import DataType

        c = self.client
        schema = c.create_schema(auto_id=False)
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=_META_CHARS)  # term|writer
        schema.add_field("term", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("count", DataType.INT64)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector field in every collection
        index = c.prepare_index_params()
        index.add_index("v", index_type="FLAT", metric_type="L2")
        index.add_index("term", index_type="INVERTED")
        c.create_collection(self.stats_collection, schema=schema)
        c.create_index(self.stats_collection, index, sync=False)
        c.load_collection(self.stats_collection)

    # -- statistics ------------------------------------------------------------------------

    def _stat_rows(self, terms: Sequence[str]) -> dict[str, int]:
        """term -> its count summed over every writer (absent: never counted)."""
        found: dict[str, int] = {}
        for start in range(0, len(terms), _QUERY_BATCH):
            expr = to_milvus(InList("term", tuple(terms[start:start + _QUERY_BATCH])))
            for row in _call("read BM25 statistics", self.client.query, self.stats_collection, filter=expr,
                             output_fields=["term", "count"], limit=16384):
                found[row["term"]] = found.get(row["term"], 0) + int(row["count"])
        return found

    def _add_stats(self, deltas: dict[str, int]) -> None:
        """Add ``deltas`` to this writer's rows (read, add, upsert: no other writer touches them)."""
        keys = {term: f"{term}|{self.writer}" for term, delta in deltas.items() if delta}
        current: dict[str, int] = {}
        listed = list(keys.values())
        for start in range(0, len(listed), _QUERY_BATCH):
            for row in _call("read BM25 statistics", self.client.get, self.stats_collection,
                             ids=listed[start:start + _QUERY_BATCH], output_fields=["term", "count"]):
                current[row["term"]] = int(row["count"])
        upserts = [{"key": key, "term": term, "count": current.get(term, 0) + deltas[term], "v": [0.0, 0.0]}
                   for term, key in keys.items()]
        for start in range(0, len(upserts), 1000):
            _call("update BM25 statistics", self.client.upsert, self.stats_collection, upserts[start:start + 1000])

    @staticmethod
    def _deltas(term_lists: Iterable[list[str]], sign: int) -> dict[str, int]:
        deltas: dict[str, int] = {_TOTAL_PASSAGES: 0, _TOTAL_LENGTH: 0}
        for terms in term_lists:
            deltas[_TOTAL_PASSAGES] += sign
            deltas[_TOTAL_LENGTH] += sign * len(terms)
            for term in set(terms):
                deltas[term] = deltas.get(term, 0) + sign
        return deltas

    # -- writes ----------------------------------------------------------------------------

    def insert(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        data = []
        for r in rows:
            row: dict[str, Any] = {"id": r.chunk_id, "doc_id": r.doc_id, "number": r.number,
                                   "title": r.title[:_META_CHARS // 4], "source": r.source[:_META_CHARS // 4],
                                   "file": document_file(r.source)[:_META_CHARS // 4], "text": r.text,
                                   "dense": np.asarray(r.dense, dtype=np.float32).tolist()}
            if self.identity.sparse == "client":
                row["sparse"] = document_vector(r.terms, self.params)
                row["terms"] = " ".join(r.terms)
            else:
                row["content"] = r.content
            data.append(row)
        _call("insert passages", self.client.insert, self.collection, data)
        if self.identity.sparse == "client":
            self._add_stats(self._deltas((r.terms for r in rows), +1))

    def delete_ids(self, chunk_ids: Sequence[str]) -> None:
        for start in range(0, len(chunk_ids), _QUERY_BATCH):
            batch = list(chunk_ids[start:start + _QUERY_BATCH])
            if self.identity.sparse == "client":
                stored = _call("read passages", self.client.get, self.collection, ids=batch, output_fields=["terms"])
                _call("delete passages", self.client.delete, self.collection, ids=[r["id"] for r in stored])
                self._add_stats(self._deltas((r["terms"].split() for r in stored), -1))
            else:
                _call("delete passages", self.client.delete, self.collection, ids=batch)

    def flush(self) -> None:
        _call("flush", self.client.flush, self.collection)
        if self.identity.sparse == "client":
            _call("flush", self.client.flush, self.stats_collection)

    # -- reads -----------------------------------------------------------------------------

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """doc id -> ids of its stored passages (documents without passages are absent)."""
        doc_ids = list(doc_ids)
        found: dict[str, set[str]] = {}
        for start in range(0, len(doc_ids), _QUERY_BATCH):
            expr = to_milvus(InList("doc_id", tuple(doc_ids[start:start + _QUERY_BATCH])))
            for row in self._query_all(expr, ["id", "doc_id"]):
                found.setdefault(row["doc_id"], set()).add(row["id"])
        return found

    def documents_of_files(self, files: Iterable[str]) -> dict[str, str]:
        files = list(files)
        found: dict[str, str] = {}
        for start in range(0, len(files), _QUERY_BATCH):
            expr = to_milvus(InList("file", tuple(files[start:start + _QUERY_BATCH])))
            found.update({row["doc_id"]: row["file"] for row in self._query_all(expr, ["doc_id", "file"])})
        return found

    def _query_all(self, expr: str, fields: list[str]) -> Iterable[dict[str, Any]]:
        """Every row matching ``expr``, in pages (Milvus Lite has no query iterator)."""
        offset = 0
        while True:
            page = _call("query", self.client.query, self.collection, filter=expr, output_fields=fields, limit=_PAGE,
                         offset=offset)
            yield from page
            if len(page) < _PAGE:
                return
            offset += _PAGE
            if offset + _PAGE > 16384:
                raise StoreError(f"more than 16384 passages match {expr[:80]}...; Milvus cannot page further")

    def count(self, filters: Filters | None = None) -> int:
        expr = filters.to_expr() if filters else ""
        if not expr and self.identity.sparse == "client":
            return self._stat_rows([_TOTAL_PASSAGES]).get(_TOTAL_PASSAGES, 0)
        rows = _call("count passages", self.client.query, self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def dense_search(self, vector: np.ndarray, limit: int, filters: Filters | None = None,
                     work: SearchWork | None = None) -> list[Hit]:
        """(chunk id, cosine) of the ``limit`` nearest passages, best first."""
        expr = filters.to_expr() if filters else ""
        fraction = 1.0
        passages = self.count() if self.identity.sparse == "client" else 0  # read from the statistics rows
        if expr:
            allowed = self.count(filters)
            if allowed == 0:
                return []
            if allowed <= EXACT_FILTER_ROWS:
                if work is not None:
                    work.exact = True
                rows = list(self._query_all(expr, ["id", "dense"]))
                keys = np.array([r["id"] for r in rows], dtype=object)
                vectors = np.asarray([r["dense"] for r in rows], dtype=np.float32)
                vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                top_keys, scores = exact_top(vectors, keys, np.asarray(vector, dtype=np.float32), limit)
                return [(str(k), float(s)) for k, s in zip(top_keys, scores)]
            fraction = allowed / max(passages or self.count(), 1)
        if work is not None:
            work.store_calls += 1
        hits = _call("search", self.client.search, self.collection,
                     data=[np.asarray(vector, dtype=np.float32).tolist()], anns_field="dense",
                     search_params={"metric_type": "COSINE", "params": {"ef": search_ef(limit, fraction, passages)}},
                     limit=limit, filter=expr, output_fields=[])[0]
        return [(hit["id"], float(hit["distance"])) for hit in hits]

    def bm25_search(self, question: str, terms: list[str], limit: int, filters: Filters | None = None,
                    work: SearchWork | None = None) -> list[Hit]:
        """(chunk id, BM25) of the ``limit`` best passages, best first, scored exactly (client mode)."""
        expr = filters.to_expr() if filters else ""
        if self.identity.sparse == "milvus":  # Milvus's own analyzer and statistics
            hits = _call("search", self.client.search, self.collection, data=[question], anns_field="sparse",
                         search_params={"metric_type": "BM25"}, limit=limit, filter=expr, output_fields=[])[0]
            return [(hit["id"], abs(float(hit["distance"]))) for hit in hits]
        distinct = list(dict.fromkeys(terms))
        if not distinct:
            return []
        stored = self._stat_rows([_TOTAL_PASSAGES, _TOTAL_LENGTH] + distinct)
        stats = CorpusStats(stored.get(_TOTAL_PASSAGES, 0), stored.get(_TOTAL_LENGTH, 0))
        df = {t: stored[t] for t in distinct if stored.get(t, 0) > 0}
        vector = query_vector(distinct, df, stats.passages)
        if not vector or stats.passages == 0:
            return []
        wanted = max(_MIN_CANDIDATES, _CANDIDATES_PER_RESULT * limit)
        hits = _call("search", self.client.search, self.collection, data=[vector], anns_field="sparse",
                     search_params={"metric_type": "IP"}, limit=wanted, filter=expr, output_fields=["terms"])[0]
        if work is not None:
            work.store_calls += 2
            work.candidates += len(hits)
        scored = [(hit["id"], score(distinct, hit["entity"]["terms"].split(), df, stats)) for hit in hits]
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return [pair for pair in scored[:limit] if pair[1] > 0]

    def fetch(self, keys: Sequence[Any]) -> dict[Any, Record]:
        out: dict[Any, Record] = {}
        keys = list(keys)
        for start in range(0, len(keys), _QUERY_BATCH):
            for row in _call("read passages", self.client.get, self.collection, ids=keys[start:start + _QUERY_BATCH],
                             output_fields=_OUTPUT_FIELDS):
                out[row["id"]] = Record(row["id"], row["doc_id"], int(row["number"]), row["title"], row["source"],
                                        row["text"])
        return out

    def describe(self) -> dict[str, Any]:
        return {"store": "milvus", "uri": self.uri, "collection": self.collection, "passages": self.count(),
                "dense": {"index": f"HNSW (M {HNSW_M}, efConstruction {HNSW_EF_CONSTRUCTION})"}}

    def close(self) -> None:
        if self.client is not None:
            disconnect(self.client, self.uri)
            self.client = None
