"""Build or update an index: documents -> chunks -> (only new chunks) embeddings -> Milvus.

    load DOCS (skip unreadable files) ─► keep this shard's documents ─► chunk (stable ids)
      ─► ask Milvus which chunk ids these documents already have
      ─► embed + insert the chunks it lacks ─► delete the documents' chunks that no longer exist
      ─► flush ─► write index.json (atomically)

Re-running on unchanged documents embeds nothing; a changed document gets its new chunks and
loses its old ones. The order (insert, then delete, then the manifest) keeps the previous index
searchable at every moment: a run that fails part-way leaves every previous passage in place,
at worst beside some new ones, and the next run finishes the job. A first run that fails
removes what it created.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

from ortgen.progress import Progress
from ortgen.rag.bm25 import ANALYZER_NAME, Analyzer, BM25Parameters, document_vector, mean_length
from ortgen.rag.chunking import Chunk, ChunkSettings, chunk_document
from ortgen.rag.documents import SUPPORTED_SUFFIXES, DocumentError, LoadReport, Shard, load_documents
from ortgen.rag.embedder import DEFAULT_BATCH_SIZE, Embedder
from ortgen.package.embedder import EmbedderManifest
from ortgen.rag.index import check_embedder, identity_for, resolve_embedder_dir
from ortgen.rag.index_manifest import DEFAULT_COLLECTION, LITE_DB, IndexDirError, IndexManifest
from ortgen.rag.store import DEFAULT_TIMEOUT_S, SPARSE_MODES, Row, Store, connect, disconnect

log = logging.getLogger(__name__)

DEFAULT_SPARSE = "client"  # measured against Milvus's BM25 function: docs/rag.md
_INSERT_GROUP = 256  # passages embedded and inserted together


@dataclass
class IndexSettings:
    """How to index; None means "the index's recorded value, else the default"."""

    embedder_dir: Path | None = None
    uri: str | None = None  # None: Milvus Lite inside the index directory
    collection: str | None = None
    token: str = ""
    shard: Shard = field(default_factory=Shard)
    chunking: ChunkSettings | None = None
    sparse: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = 0
    timeout: float = DEFAULT_TIMEOUT_S
    progress: bool = True


@dataclass
class IndexReport:
    """What one run did (printed by the CLI, recorded in index.json's last_run)."""

    documents: int = 0  # documents of this shard
    documents_loaded: int = 0  # in all inputs
    chunks: int = 0
    embedded: int = 0
    unchanged: int = 0
    deleted: int = 0
    files_read: int = 0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    shard: str = "1/1"
    seconds: float = 0.0
    embed_seconds: float = 0.0

    @property
    def passages_per_s(self) -> float:
        """Embedded passages per second of the whole run (end to end)."""
        return self.embedded / self.seconds if self.seconds else 0.0

    @property
    def embed_passages_per_s(self) -> float:
        """Embedded passages per second of embedding alone."""
        return self.embedded / self.embed_seconds if self.embed_seconds else 0.0

    def to_dict(self) -> dict:
        out = asdict(self)
        out["passages_per_s"] = round(self.passages_per_s, 1)
        out["embed_passages_per_s"] = round(self.embed_passages_per_s, 1)
        return out


class _RateProgress(Progress):
    """Progress whose label carries the passages/s so far."""

    def update(self, done: int, total: int | None = None) -> None:
        elapsed = time.perf_counter() - self.started
        self.label = f"embedding ({done / elapsed:.0f} passages/s)" if elapsed > 0 and done else "embedding"
        super().update(done, total)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _resolve(index_dir: Path, settings: IndexSettings, previous: IndexManifest | None
             ) -> tuple[Path, str, str, ChunkSettings, str]:
    """(embedder dir, uri, collection, chunking, sparse mode), checked against the previous run."""
    if previous is None:
        if settings.embedder_dir is None:
            raise IndexDirError("a new index needs --embedder DIR (made by: ortgen export-embedder MODEL_DIR -o DIR)")
        if index_dir.exists() and (not index_dir.is_dir() or any(index_dir.iterdir())):
            raise IndexDirError(f"{index_dir} exists and is not an ortgen index; choose a new or empty directory")
        sparse = settings.sparse or DEFAULT_SPARSE
        if sparse not in SPARSE_MODES:
            raise IndexDirError(f"--sparse must be one of {', '.join(SPARSE_MODES)}, got {sparse!r}")
        return (settings.embedder_dir, settings.uri or LITE_DB, settings.collection or DEFAULT_COLLECTION,
                settings.chunking or ChunkSettings(), sparse)
    for name, given, recorded in (("--uri", settings.uri, previous.uri),
                                  ("--collection", settings.collection, previous.collection),
                                  ("--sparse", settings.sparse, previous.sparse)):
        if given is not None and given != recorded:
            raise IndexDirError(f"{index_dir} was built with {name} {recorded}, not {given}; drop {name} or index "
                                "into a new directory")
    chunking = settings.chunking or ChunkSettings(**previous.chunking)
    return (resolve_embedder_dir(previous, settings.embedder_dir), previous.uri, previous.collection, chunking,
            previous.sparse)


def _chunks(documents: Iterable, chunking: ChunkSettings, embedder: Embedder) -> list[Chunk]:
    chunks: list[Chunk] = []
    for doc in documents:
        chunks += chunk_document(doc, chunking, embedder.count_tokens, embedder.token_offsets)
    return chunks


def _rows(chunks: Sequence[Chunk], vectors, sparse_mode: str, analyzer: Analyzer | None,
          params: BM25Parameters) -> list[Row]:
    rows = []
    for chunk, vector in zip(chunks, vectors):
        if sparse_mode == "client":
            terms = analyzer.terms(chunk.index_text)
            sparse, text_terms = document_vector(terms, params), " ".join(dict.fromkeys(terms))
        else:
            sparse, text_terms = None, chunk.index_text
        rows.append(Row(chunk.chunk_id, chunk.doc_id, chunk.number, chunk.title, chunk.source, chunk.text,
                        vector.tolist(), sparse, text_terms))
    return rows


def index_documents(paths: Sequence[Path], index_dir: Path, settings: IndexSettings | None = None, *,
                    embedder: Embedder | None = None) -> IndexReport:
    """Index (or update the index of) the documents under ``paths`` into ``index_dir``.

    ``embedder``: an already loaded embedder to use (it must be the index's); otherwise the one
    named by ``settings.embedder_dir`` or recorded in the index is loaded.
    """
    settings = settings or IndexSettings()
    index_dir = Path(index_dir)
    started = time.perf_counter()
    previous = IndexManifest.load(index_dir) if IndexManifest.exists(index_dir) else None
    if embedder is not None and settings.embedder_dir is None:
        settings = replace(settings, embedder_dir=embedder.directory)
    embedder_dir, uri, collection, chunking, sparse_mode = _resolve(index_dir, settings, previous)
    embedder_manifest = embedder.manifest if embedder is not None else EmbedderManifest.load(embedder_dir)
    if previous is not None:
        check_embedder(previous, embedder_manifest, embedder_dir)
    chunking.validate(embedder_manifest.max_seq_length)

    report = LoadReport()
    documents = load_documents(paths, report)
    if not documents:
        skipped = f"; skipped {len(report.skipped)} unreadable file(s)" if report.skipped else ""
        raise DocumentError(f"no documents found in {', '.join(str(p) for p in paths)}{skipped} (supported: "
                            f"{', '.join(SUPPORTED_SUFFIXES)} files, or directories of them)")
    mine = [d for d in documents if settings.shard.contains(d.doc_id)]
    embedder = embedder or Embedder.open(embedder_dir, threads=settings.threads)
    chunks = _chunks(mine, chunking, embedder)
    log.info("%d documents (%d in shard %s) -> %d passages", len(documents), len(mine), settings.shard, len(chunks))

    analyzer = Analyzer() if sparse_mode == "client" else None
    if previous is not None:
        params = BM25Parameters(**{k: previous.bm25[k] for k in ("k1", "b", "avgdl")})
    else:
        lengths = [analyzer.terms(c.index_text) for c in chunks] if analyzer else []
        params = BM25Parameters(avgdl=mean_length(lengths)) if lengths else BM25Parameters()
    manifest = IndexManifest(
        uri=uri, collection=collection,
        embedder={"path": str(Path(embedder_dir).resolve()), "checksum": embedder_manifest.checksum,
                  "name": embedder_manifest.source.get("name", "?"), "dims": embedder_manifest.dims,
                  "max_seq_length": embedder_manifest.max_seq_length},
        sparse=sparse_mode, bm25={"k1": params.k1, "b": params.b, "avgdl": params.avgdl, "analyzer": ANALYZER_NAME},
        chunking={"max_tokens": chunking.max_tokens, "overlap_tokens": chunking.overlap_tokens},
        created=previous.created if previous else _now())

    created_dir = not index_dir.exists()
    index_dir.mkdir(parents=True, exist_ok=True)
    result = IndexReport(documents=len(mine), documents_loaded=len(documents), chunks=len(chunks),
                         files_read=report.files_read, skipped_files=report.skipped, shard=str(settings.shard))
    try:
        uri = manifest.resolved_uri(index_dir)
        client = connect(uri, token=settings.token, timeout=settings.timeout)
        try:
            store = Store.open(client, collection, identity_for(manifest), create=True)
            _update(store, chunks, embedder, settings, sparse_mode, analyzer, params, result)
        finally:
            disconnect(client, uri)
        result.seconds = time.perf_counter() - started
        manifest.updated = _now()
        manifest.last_run = result.to_dict()
        manifest.write(index_dir)
    except BaseException:
        if previous is None:  # a first run leaves nothing that looks like an index
            if created_dir:
                shutil.rmtree(index_dir, ignore_errors=True)
            else:
                shutil.rmtree(index_dir / LITE_DB, ignore_errors=True)
        raise
    return result


def _update(store: Store, chunks: list[Chunk], embedder: Embedder, settings: IndexSettings, sparse_mode: str,
            analyzer: Analyzer | None, params: BM25Parameters, result: IndexReport) -> None:
    """Insert the chunks the store lacks, then delete the documents' chunks that are gone."""
    existing = store.chunk_ids_of(dict.fromkeys(c.doc_id for c in chunks))
    stored = set().union(*existing.values()) if existing else set()
    todo = [c for c in chunks if c.chunk_id not in stored]
    stale = sorted(stored - {c.chunk_id for c in chunks})
    result.unchanged = len(chunks) - len(todo)
    progress = _RateProgress("embedding", len(todo), enabled=settings.progress and bool(todo))
    for start in range(0, len(todo), _INSERT_GROUP):
        group = todo[start:start + _INSERT_GROUP]
        began = time.perf_counter()
        vectors = embedder.encode([c.index_text for c in group], batch_size=settings.batch_size)
        result.embed_seconds += time.perf_counter() - began
        store.insert(_rows(group, vectors, sparse_mode, analyzer, params))
        result.embedded += len(group)
        progress.update(result.embedded)
    progress.close()
    store.delete_ids(stale)
    result.deleted = len(stale)
    store.flush()


def delete_documents(index_dir: Path, doc_ids: Sequence[str], *, token: str = "",
                     timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """Delete every passage of ``doc_ids``; returns how many. An id with no passages is an error
    (a typo should not look like success)."""
    index_dir = Path(index_dir)
    manifest = IndexManifest.load(index_dir)
    uri = manifest.resolved_uri(index_dir)
    client = connect(uri, token=token, timeout=timeout)
    try:
        store = Store.open(client, manifest.collection, identity_for(manifest), create=False)
        present = store.chunk_ids_of(doc_ids)
        missing = [d for d in doc_ids if d not in present]
        if missing:
            raise IndexDirError(f"no document {', '.join(repr(d) for d in missing)} in {index_dir} (ids as indexed: "
                                "the JSONL id, PMID:<n>, or the file's path relative to the DOCS directory)")
        deleted = store.delete_documents(doc_ids)
        store.flush()
    finally:
        disconnect(client, uri)
    return deleted
