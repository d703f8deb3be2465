"""Passages in Milvus through pymilvus: one code path for Milvus Lite (a local file) and a server.

Collection schema (one row per passage):

    id        VARCHAR primary key     chunk id "{doc_id}#{n}-{hash}"
    doc_id    VARCHAR                 for filters, deletes and per-document updates
    number    INT64                   the chunk's position in its document
    title, source, text   VARCHAR     what search returns
    dense     FLOAT_VECTOR(dims)      the embedder's vector (COSINE)
    sparse    SPARSE_FLOAT_VECTOR     BM25: client-side weights (IP), or Milvus's BM25 function output
    terms     VARCHAR (client BM25)   the analyzed terms, space-separated: TEXT_MATCH counts give df
    content   VARCHAR (Milvus BM25)   title + text, analyzed by Milvus (input of its BM25 function)

The collection's property ``ortgen.identity`` holds the index identity (embedder checksum, dims,
sparse mode, analyzer) as JSON (Milvus Lite drops schema descriptions; properties persist): every process that opens the collection (an indexing shard on another
machine, a search server) checks it, so vectors from two embedders never meet.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from ortgen.errors import OrtgenError

log = logging.getLogger(__name__)

SPARSE_MODES = ("client", "milvus")
DEFAULT_TIMEOUT_S = 10.0
_ID_CHARS = 1100
_TEXT_CHARS = 65535
_META_CHARS = 2048
_QUERY_BATCH = 64  # doc ids per "in [...]" query
_PAGE = 4096  # rows per query page (Milvus caps offset + limit at 16384)
IDENTITY_PROPERTY = "ortgen.identity"
_MILVUS_ANALYZER = {"tokenizer": "standard",
                    "filter": ["lowercase", {"type": "stop", "stop_words": ["_english_"]},
                               {"type": "stemmer", "language": "english"}]}


class StoreError(OrtgenError):
    """Milvus cannot be reached, or its collection does not fit this index."""


@dataclass(frozen=True)
class CollectionIdentity:
    """What must match between an index and every process that writes or searches it."""

    embedder: str  # embedder checksum
    embedder_name: str
    dims: int
    sparse: str  # one of SPARSE_MODES
    analyzer: str
    format: str = "ortgen-rag-1"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Row:
    """One passage to insert."""

    chunk_id: str
    doc_id: str
    number: int
    title: str
    source: str
    text: str
    dense: list[float]
    sparse: dict[int, float] | None  # client mode only
    terms: str  # client mode: analyzed terms; Milvus mode: the content to analyze


def quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


_lite_users: dict[str, int] = {}  # Milvus Lite database path -> open clients in this process
_lite_lock = threading.Lock()


def _lite_path(uri: str) -> str | None:
    return None if "://" in uri else os.path.abspath(uri)


def connect(uri: str, *, token: str = "", timeout: float = DEFAULT_TIMEOUT_S) -> Any:
    """A MilvusClient for ``uri`` (a ``.db`` path: Milvus Lite; ``http://host:19530``: a server),
    or :class:`StoreError` within ``timeout`` seconds when it does not answer. Close it with
    :func:`disconnect`, which also stops this process's Milvus Lite server for the file when
    its last client goes (Milvus Lite admits one process per database file)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise StoreError("retrieval needs pymilvus and milvus-lite: pip install 'ortgen[rag]'") from exc
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


class Store:
    """One collection of passages."""

    def __init__(self, client: Any, collection: str, identity: CollectionIdentity) -> None:
        self.client = client
        self.collection = collection
        self.identity = identity

    # -- collection ------------------------------------------------------------------------

    @classmethod
    def open(cls, client: Any, collection: str, identity: CollectionIdentity, *, create: bool) -> "Store":
        """The collection, checked against ``identity`` (created when absent and ``create``)."""
        store = cls(client, collection, identity)
        if client.has_collection(collection):
            store._check_identity()
            client.load_collection(collection)  # a server keeps collections released until loaded
        elif create:
            try:
                store._create()
            except Exception:
                if not client.has_collection(collection):  # not a race with another shard job: a real error
                    raise
                store._check_identity()  # another job created it first
        else:
            raise StoreError(f"Milvus has no collection {collection!r}; index documents first "
                             "(ortgen rag index DOCS -o INDEX)")
        return store

    def _check_identity(self) -> None:
        properties = self.client.describe_collection(self.collection).get("properties") or {}
        try:
            found = CollectionIdentity(**json.loads(properties.get(IDENTITY_PROPERTY, "")))
        except (ValueError, TypeError):
            raise StoreError(f"collection {self.collection!r} was not made by ortgen rag index; choose another "
                             "--collection") from None
        mine = self.identity
        if found.embedder != mine.embedder:
            raise StoreError(
                f"collection {self.collection!r} holds vectors of embedder {found.embedder_name} "
                f"({found.embedder[:12]}), not of {mine.embedder_name} ({mine.embedder[:12]}); vectors of two "
                "models cannot be mixed: use the index's own embedder, or a new index/--collection")
        if (found.dims, found.sparse, found.analyzer, found.format) != (mine.dims, mine.sparse, mine.analyzer,
                                                                        mine.format):
            raise StoreError(f"collection {self.collection!r} was built with sparse={found.sparse}, "
                             f"analyzer={found.analyzer}, dims={found.dims}; this index uses sparse={mine.sparse}, "
                             f"analyzer={mine.analyzer}, dims={mine.dims}: re-create it (ortgen rag delete --all) "
                             "or use another --collection")

    def _create(self) -> None:
        from pymilvus import DataType, Function, FunctionType

        c, ident = self.client, self.identity
        schema = c.create_schema(auto_id=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=_ID_CHARS)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("number", DataType.INT64)
        schema.add_field("title", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("source", DataType.VARCHAR, max_length=_META_CHARS)
        schema.add_field("text", DataType.VARCHAR, max_length=_TEXT_CHARS)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=ident.dims)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        index = c.prepare_index_params()
        index.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
        if ident.sparse == "client":
            schema.add_field("terms", DataType.VARCHAR, max_length=_TEXT_CHARS, enable_analyzer=True,
                             enable_match=True, analyzer_params={"tokenizer": "whitespace"})
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
        finally:
            grpc_log.setLevel(level)
        log.info("created collection %s (%d dims, %s BM25)", self.collection, ident.dims, ident.sparse)

    # -- writes ----------------------------------------------------------------------------

    def insert(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        data = []
        for r in rows:
            row: dict[str, Any] = {"id": r.chunk_id, "doc_id": r.doc_id, "number": r.number,
                                   "title": r.title[:_META_CHARS // 4], "source": r.source[:_META_CHARS // 4],
                                   "text": r.text, "dense": r.dense}
            if self.identity.sparse == "client":
                row["sparse"], row["terms"] = r.sparse, r.terms
            else:
                row["content"] = r.terms
            data.append(row)
        self.client.insert(self.collection, data)

    def delete_ids(self, ids: Sequence[str]) -> None:
        for start in range(0, len(ids), _QUERY_BATCH):
            self.client.delete(self.collection, ids=list(ids[start:start + _QUERY_BATCH]))

    def delete_documents(self, doc_ids: Sequence[str]) -> int:
        """Delete every passage of ``doc_ids``; returns how many passages there were."""
        existing = self.chunk_ids_of(doc_ids)
        ids = [i for chunk_ids in existing.values() for i in chunk_ids]
        self.delete_ids(ids)
        return len(ids)

    def flush(self) -> None:
        self.client.flush(self.collection)

    # -- reads -----------------------------------------------------------------------------

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """doc id -> ids of its stored passages (documents without passages are absent)."""
        doc_ids = list(doc_ids)
        found: dict[str, set[str]] = {}
        for start in range(0, len(doc_ids), _QUERY_BATCH):
            batch = doc_ids[start:start + _QUERY_BATCH]
            expr = f"doc_id in [{', '.join(quote(d) for d in batch)}]"
            for row in self._query_all(expr, ["id", "doc_id"]):
                found.setdefault(row["doc_id"], set()).add(row["id"])
        return found

    def _query_all(self, expr: str, fields: list[str]) -> Iterable[dict[str, Any]]:
        """Every row matching ``expr``, in pages (Milvus Lite has no query iterator)."""
        offset = 0
        while True:
            page = self.client.query(self.collection, filter=expr, output_fields=fields, limit=_PAGE, offset=offset)
            yield from page
            if len(page) < _PAGE:
                return
            offset += _PAGE
            if offset + _PAGE > 16384:
                raise StoreError(f"more than 16384 passages match {expr[:80]}...; Milvus cannot page further")

    def count(self, expr: str = "") -> int:
        rows = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def document_frequencies(self, terms: Iterable[str]) -> dict[str, int]:
        """Passages containing each term (client BM25's df), one TEXT_MATCH count per term."""
        return {t: self.count(f"TEXT_MATCH(terms, {quote(t)})") for t in dict.fromkeys(terms)}
