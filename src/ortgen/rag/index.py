"""An index opened for search: ``Index.open(INDEX).search(question, k, filters)``.

This is the API that ``ortgen rag search``, ``ortgen rag ask`` and the HTTP server build on.
Opening checks that the embedder is the one the passages were embedded with.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ortgen.rag.embedder import Embedder
from ortgen.package.embedder import EmbedderManifest
from ortgen.rag.index_manifest import IndexDirError, IndexManifest
from ortgen.rag.bm25 import BM25Parameters
from ortgen.rag.retrieval import (
    DEFAULT_CANDIDATES,
    DEFAULT_K,
    DEFAULT_RRF_K,
    Filters,
    Passage,
    Retriever,
    SearchTimings,
)
from ortgen.rag.store import DEFAULT_TIMEOUT_S, CollectionIdentity, PassageStore, SearchWork

log = logging.getLogger(__name__)

TOKEN_ENV = "ORTGEN_MILVUS_TOKEN"  # a Milvus server's token ("user:password" or an API key)


def identity_for(manifest: IndexManifest) -> CollectionIdentity:
    return CollectionIdentity(embedder=manifest.embedder["checksum"], embedder_name=manifest.embedder["name"],
                              dims=int(manifest.embedder["dims"]), sparse=manifest.sparse,
                              analyzer=str(manifest.bm25.get("analyzer", "")))


def open_store(manifest: IndexManifest, directory: Path, *, create: bool = False, write: bool = False,
               token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S, writer: str = "main") -> PassageStore:
    """The index's store: the local one in ``directory``, or its Milvus collection (``token``: a server's;
    default $ORTGEN_MILVUS_TOKEN; ``writer``: this job's name for its statistics rows in Milvus)."""
    identity = identity_for(manifest)
    location = manifest.resolved_uri(directory)
    if manifest.store == "local":
        from ortgen.rag.local_store import LocalStore

        return LocalStore.open(Path(location), identity, create=create, write=write)
    from ortgen.rag.milvus_store import MilvusStore

    params = BM25Parameters(**{k: manifest.bm25[k] for k in ("k1", "b", "avgdl")})
    return MilvusStore.open(location, manifest.collection, identity, create=create,
                            token=token if token is not None else os.environ.get(TOKEN_ENV, ""), timeout=timeout,
                            params=params, writer=writer)


def check_embedder(manifest: IndexManifest, embedder: EmbedderManifest, embedder_dir: Path) -> None:
    """Refuse an embedder other than the index's own (its vectors would not be comparable)."""
    if embedder.checksum != manifest.embedder["checksum"]:
        raise IndexDirError(
            f"the index was built with embedder {manifest.embedder['name']} (checksum "
            f"{manifest.embedder['checksum'][:12]}, at {manifest.embedder['path']}); {embedder_dir} is "
            f"{embedder.source.get('name', '?')} ({embedder.checksum[:12]}). Use the index's embedder, or index "
            "into a new directory to switch embedders")


def resolve_embedder_dir(manifest: IndexManifest, embedder_dir: Path | None) -> Path:
    if embedder_dir is not None:
        return Path(embedder_dir)
    recorded = Path(manifest.embedder["path"])
    if not recorded.is_dir():
        raise IndexDirError(f"the index's embedder is no longer at {recorded}; pass --embedder DIR (an export of "
                            f"{manifest.embedder['name']}, checksum {manifest.embedder['checksum'][:12]})")
    return recorded


class Index:
    """A searchable index: store + embedder + retriever. Close it (or use ``with``) when done:
    Milvus Lite allows one process per database file."""

    def __init__(self, directory: Path, manifest: IndexManifest, store: PassageStore, embedder: Embedder) -> None:
        self.directory = directory
        self.manifest = manifest
        self.store = store
        self.embedder = embedder
        self.retriever = Retriever(store, embedder)

    @classmethod
    def open(cls, directory: Path, *, embedder: Path | Embedder | None = None, threads: int = 0,
             token: str | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> "Index":
        """Open ``directory`` for search. ``embedder``: a directory or a loaded :class:`Embedder`
        (default: the one recorded in the index); ``token``: a Milvus server's token (default:
        $ORTGEN_MILVUS_TOKEN)."""
        directory = Path(directory)
        manifest = IndexManifest.load(directory)
        if isinstance(embedder, Embedder):
            check_embedder(manifest, embedder.manifest, embedder.directory)
            loaded = embedder
        else:
            embedder_dir = resolve_embedder_dir(manifest, embedder)
            check_embedder(manifest, EmbedderManifest.load(embedder_dir), embedder_dir)
            loaded = Embedder.open(embedder_dir, threads=threads)
        store = open_store(manifest, directory, token=token, timeout=timeout)
        return cls(directory, manifest, store, loaded)

    def search(self, question: str, k: int = DEFAULT_K, filters: Filters | dict[str, Any] | None = None, *,
               mode: str = "hybrid", rrf_k: int = DEFAULT_RRF_K, candidates: int = DEFAULT_CANDIDATES
               ) -> list[Passage]:
        """The ``k`` best passages for ``question``; ``mode`` hybrid (default), dense or bm25;
        ``filters`` a :class:`Filters` or its dict form."""
        if not isinstance(filters, Filters):
            filters = Filters.from_dict(filters)
        return self.retriever.search(question, k, filters, mode=mode, rrf_k=rrf_k, candidates=candidates)

    def search_timed(self, question: str, k: int = DEFAULT_K, filters: Filters | dict[str, Any] | None = None, *,
                     mode: str = "hybrid", rrf_k: int = DEFAULT_RRF_K, candidates: int = DEFAULT_CANDIDATES,
                     work: SearchWork | None = None) -> tuple[list[Passage], SearchTimings]:
        """:meth:`search` plus where its time went (embedding, dense, BM25, fetch); thread-safe."""
        if not isinstance(filters, Filters):
            filters = Filters.from_dict(filters)
        return self.retriever.search_timed(question, k, filters, mode=mode, rrf_k=rrf_k, candidates=candidates,
                                           work=work)

    def describe(self) -> dict[str, Any]:
        """What GET /v1/rag/collections reports: collection, size, embedder, settings."""
        m = self.manifest
        described = self.store.describe()
        return {"collection": m.collection, "store": m.store, "uri": m.resolved_uri(self.directory),
                "passages": described.get("passages"), "store_details": described, "last_run": m.last_run,
                "embedder": {k: m.embedder[k] for k in ("name", "checksum", "dims", "max_seq_length")},
                "sparse": m.sparse, "chunking": m.chunking, "updated": m.updated}

    def close(self) -> None:
        """Release the store (for Milvus Lite, the database file, so another process may open it)."""
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
