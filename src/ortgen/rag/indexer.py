"""Build or update an index: documents -> chunks -> (only new chunks) embeddings -> the store.

    load DOCS (skip unreadable files) ─► keep this shard's documents ─► chunk (stable ids)
      ─► ask the store which chunk ids these documents already have
      ─► embed + insert the chunks it lacks ─► delete the documents' chunks that no longer exist
      ─► documents the store has from these files that the files no longer hold: reported, or
         deleted with ``prune``
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
from ortgen.rag.bm25 import ANALYZER_NAME, Analyzer, BM25Parameters, mean_length
from ortgen.rag.chunking import Chunk, ChunkSettings, chunk_document
from ortgen.rag.documents import SUPPORTED_SUFFIXES, DocumentError, LoadReport, Shard, load_documents
from ortgen.rag.embedder import DEFAULT_BATCH_SIZE, Embedder
from ortgen.package.embedder import EmbedderManifest
from ortgen.rag.index import check_embedder, open_store, resolve_embedder_dir
from ortgen.rag.index_manifest import DEFAULT_COLLECTION, LOCAL_STORE, IndexDirError, IndexManifest
from ortgen.rag.store import DEFAULT_TIMEOUT_S, SPARSE_MODES, PassageStore, Row, document_file
from ortgen.rag.store import delete_documents as delete_from_store

log = logging.getLogger(__name__)

DEFAULT_SPARSE = "client"  # measured against Milvus's BM25 function: docs/rag.md
_INSERT_GROUP = 256  # passages embedded and inserted together


@dataclass
class IndexSettings:
    """How to index; None means "the index's recorded value, else the default"."""

    embedder_dir: Path | None = None
    uri: str | None = None  # None: the local store; a Milvus server URL, or a Lite file (.db, in the index dir)
    collection: str | None = None
    token: str = ""
    shard: Shard = field(default_factory=Shard)
    chunking: ChunkSettings | None = None
    sparse: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    threads: int = 0
    timeout: float = DEFAULT_TIMEOUT_S
    progress: bool = True
    prune: bool = False  # delete documents that their files no longer hold


@dataclass
class IndexReport:
    """What one run did (printed by the CLI, recorded in index.json's last_run)."""

    documents: int = 0  # documents of this shard
    documents_loaded: int = 0  # in all inputs
    chunks: int = 0
    embedded: int = 0
    unchanged: int = 0
    deleted: int = 0
    gone_documents: list[str] = field(default_factory=list)  # stored from these files, no longer in them
    pruned: int = 0  # passages of gone_documents deleted (prune)
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
             ) -> tuple[Path, str, str, str, ChunkSettings, str]:
    """(embedder dir, store kind, uri, collection, chunking, sparse mode), checked against the previous run."""
    if previous is None:
        if settings.embedder_dir is None:
            raise IndexDirError("a new index needs --embedder DIR (made by: ortgen export-embedder MODEL_DIR -o DIR)")
        if index_dir.exists() and (not index_dir.is_dir() or any(index_dir.iterdir())):
            raise IndexDirError(f"{index_dir} exists and is not an ortgen index; choose a new or empty directory")
        store = "milvus" if settings.uri else "local"
        sparse = settings.sparse or DEFAULT_SPARSE
        if sparse not in SPARSE_MODES:
            raise IndexDirError(f"--sparse must be one of {', '.join(SPARSE_MODES)}, got {sparse!r}")
        if sparse == "milvus" and store == "local":
            raise IndexDirError("--sparse milvus is Milvus's own BM25: it needs a Milvus store (--uri)")
        return (settings.embedder_dir, store, settings.uri or LOCAL_STORE, settings.collection or DEFAULT_COLLECTION,
                settings.chunking or ChunkSettings(), sparse)
    for name, given, recorded in (("--uri", settings.uri, previous.uri),
                                  ("--collection", settings.collection, previous.collection),
                                  ("--sparse", settings.sparse, previous.sparse)):
        if given is not None and given != recorded:
            raise IndexDirError(f"{index_dir} was built with {name} {recorded}, not {given}; drop {name} or index "
                                "into a new directory")
    chunking = settings.chunking or ChunkSettings(**previous.chunking)
    return (resolve_embedder_dir(previous, settings.embedder_dir), previous.store, previous.uri, previous.collection,
            chunking, previous.sparse)


def _chunks(documents: Iterable, chunking: ChunkSettings, embedder: Embedder) -> list[Chunk]:
    chunks: list[Chunk] = []
    for doc in documents:
        chunks += chunk_document(doc, chunking, embedder.count_tokens, embedder.token_offsets)
    return chunks


def _rows(chunks: Sequence[Chunk], vectors, analyzer: Analyzer) -> list[Row]:
    return [Row(chunk.chunk_id, chunk.doc_id, chunk.number, chunk.title, chunk.source, chunk.text, vector,
                analyzer.terms(chunk.index_text), chunk.index_text)
            for chunk, vector in zip(chunks, vectors)]


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
    embedder_dir, store_kind, uri, collection, chunking, sparse_mode = _resolve(index_dir, settings, previous)
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

    analyzer = Analyzer()
    if previous is not None:
        params = BM25Parameters(**{k: previous.bm25[k] for k in ("k1", "b", "avgdl")})
    else:  # the avgdl a Milvus store's candidate vectors are weighted with (scores use the current one)
        params = BM25Parameters(avgdl=mean_length(analyzer.terms(c.index_text) for c in chunks[:10000]))
    manifest = IndexManifest(
        store=store_kind, uri=uri, collection=collection,
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
        store = open_store(manifest, index_dir, create=True, write=True, token=settings.token,
                           timeout=settings.timeout, writer="main" if settings.shard.n == 1 else str(settings.shard))
        try:
            _update(store, chunks, embedder, settings, analyzer, result)
            _gone_documents(store, documents, report, settings, result)
            store.flush()
        finally:
            store.close()
        result.seconds = time.perf_counter() - started
        manifest.updated = _now()
        manifest.last_run = result.to_dict()
        manifest.write(index_dir)
    except BaseException:
        if previous is None:  # a first run leaves nothing that looks like an index
            if created_dir:
                shutil.rmtree(index_dir, ignore_errors=True)
            elif "://" not in uri:
                shutil.rmtree(index_dir / uri, ignore_errors=True)
        raise
    return result


def _update(store: PassageStore, chunks: list[Chunk], embedder: Embedder, settings: IndexSettings,
            analyzer: Analyzer, result: IndexReport) -> None:
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
        store.insert(_rows(group, vectors, analyzer))
        result.embedded += len(group)
        progress.update(result.embedded)
    progress.close()
    store.delete_ids(stale)
    result.deleted = len(stale)


def _gone_documents(store: PassageStore, documents: list, report: LoadReport, settings: IndexSettings,
                    result: IndexReport) -> None:
    """Documents the store holds from the files read now that those files no longer contain: listed in
    the report (a warning names them and the way to delete them), deleted when ``settings.prune``."""
    files = sorted({document_file(d.source) for d in documents} | set(report.files))
    present = {d.doc_id for d in documents}
    gone = sorted(doc for doc in store.documents_of_files(files) if doc not in present)
    if settings.shard.n > 1:  # another shard's documents are not this run's to judge
        gone = [doc for doc in gone if settings.shard.contains(doc)]
    result.gone_documents = gone
    if not gone:
        return
    if settings.prune:
        result.pruned = delete_from_store(store, gone)
        log.info("deleted %d passages of %d documents no longer in their files", result.pruned, len(gone))
    else:
        shown = ", ".join(gone[:10]) + (f" and {len(gone) - 10} more" if len(gone) > 10 else "")
        log.warning("%d document(s) in the index are no longer in the files they came from: %s. Delete them with "
                    "--prune (or ortgen rag delete INDEX --doc ID)", len(gone), shown)


def delete_documents(index_dir: Path, doc_ids: Sequence[str], *, token: str = "",
                     timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """Delete every passage of ``doc_ids``; returns how many. An id with no passages is an error
    (a typo should not look like success)."""
    index_dir = Path(index_dir)
    manifest = IndexManifest.load(index_dir)
    store = open_store(manifest, index_dir, write=True, token=token, timeout=timeout)
    try:
        present = store.chunk_ids_of(doc_ids)
        missing = [d for d in doc_ids if d not in present]
        if missing:
            raise IndexDirError(f"no document {', '.join(repr(d) for d in missing)} in {index_dir} (ids as indexed: "
                                "the JSONL id, PMID:<n>, or the file's path relative to the DOCS directory)")
        deleted = delete_from_store(store, doc_ids)
        store.flush()
    finally:
        store.close()
    return deleted
