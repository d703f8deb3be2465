"""The index directory's manifest (``index.json``): where the passages are and how they were made.

    INDEX/
      index.json     this manifest
      store/         the local store (ortgen.rag.local_store; the default)
      milvus.db      or a Milvus Lite database (--uri milvus.db); absent when the index lives on a
                     Milvus server (--uri http://host:19530) or in the local store

The manifest is written (atomically: temporary file, then rename) only at the end of a
successful indexing run, so a directory without it is not an index, and a failed run leaves the
previous manifest in place. Secrets (a server token) are never written here.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ortgen.errors import OrtgenError
from ortgen.package.manifest_file import read_manifest

MANIFEST = "index.json"
LOCAL_STORE = "store"
FORMAT = "ortgen-index"
FORMAT_VERSION = 2
DEFAULT_COLLECTION = "passages"


class IndexDirError(OrtgenError):
    """An index directory that is missing, incomplete or does not fit the request."""


@dataclass
class IndexManifest:
    store: str  # "local" or "milvus"
    uri: str  # local: the store's directory inside the index; milvus: a server URL or a Lite file (relative)
    collection: str
    embedder: dict[str, Any]  # {"path", "checksum", "name", "dims", "max_seq_length"}
    sparse: str  # "client" or "milvus"
    bm25: dict[str, Any]  # {"k1", "b", "avgdl", "analyzer"}
    chunking: dict[str, int]  # {"max_tokens", "overlap_tokens"}
    created: str = ""
    updated: str = ""
    last_run: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def resolved_uri(self, directory: Path) -> str:
        """Where the store is: a path inside ``directory`` (local store, Lite file), or the server URL."""
        return self.uri if "://" in self.uri else str(Path(directory) / self.uri)

    def write(self, directory: Path) -> None:
        directory = Path(directory)
        fd, tmp = tempfile.mkstemp(prefix=".index.json.", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")
        os.replace(tmp, directory / MANIFEST)

    @classmethod
    def exists(cls, directory: Path) -> bool:
        return (Path(directory) / MANIFEST).is_file()

    @classmethod
    def load(cls, directory: Path) -> "IndexManifest":
        path = Path(directory) / MANIFEST
        if not path.is_file():
            what = "does not exist" if not Path(directory).exists() else f"has no {MANIFEST}"
            raise IndexDirError(f"{directory} is not an ortgen index ({what}); build one with: "
                                "ortgen rag index DOCS -o INDEX")
        return read_manifest(cls, path, format=FORMAT, version=FORMAT_VERSION, error=IndexDirError,
                             remedy="re-index into a new directory (ortgen rag index DOCS -o NEW_INDEX)")
