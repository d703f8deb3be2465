"""The local store: ortgen's own retrieval engine in the index directory, for one machine and
millions of passages.

    INDEX/store/
      passages.sqlite   the truth: passages (text, metadata, vector, distinct term keys), BM25
                        postings in blocks, document frequencies, corpus totals, deleted rows
      dense.faiss       HNSW over the vectors (faiss), rebuilt from passages.sqlite if lost or behind
      write.lock        held by the one process writing (flock)

Why not Milvus Lite: it is a Python engine that visits every row in Python on every search (0.8-1.9 s
per dense search at 100k passages here, docs/rag.md) and keeps BM25 statistics per segment. Here:

- BM25: each insert writes, per term, one postings block (rows, term frequencies, passage lengths,
  as numpy arrays) and adds to the term's document frequency; a delete subtracts its passages'
  terms and records the rows as deleted. A query reads the postings of its own terms only (work
  proportional to those terms' document frequencies, never to the corpus) and the three corpus
  numbers, and scores exactly (``ortgen.rag.bm25``). ``flush`` merges a term's blocks when it has
  more than MAX_BLOCKS.
- Dense: HNSW with the parameters of ``ortgen.rag.dense``; deleted rows are excluded while
  searching, and rebuilt away when they pass COMPACT_FRACTION of the index.
- Filters: SQL over the passages (``ortgen.rag.filters``) gives the allowed rows; both searches
  keep to them.
- Readers (a server) and one writer (``ortgen rag index``) may use the index at the same time:
  SQLite in WAL mode, and a generation number that a reader checks before each search to pick up
  new passages, deletions and rebuilds.

Rows are numbered in insertion order and never reused, so a row is a stable key for a passage.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ortgen.rag.bm25 import DEFAULT_B, DEFAULT_K1, CorpusStats, idf, tf_part, term_key
from ortgen.rag.dense import EXACT_FILTER_ROWS, DenseIndex
from ortgen.rag.filters import Filters
from ortgen.rag.store import (
    CollectionIdentity,
    Hit,
    Record,
    Row,
    SearchWork,
    StoreError,
    document_file,
)

log = logging.getLogger(__name__)

STORE_DIR = "store"
DATABASE = "passages.sqlite"
DENSE_FILE = "dense.faiss"
LOCK_FILE = "write.lock"
MAX_BLOCKS = 8  # postings blocks per term before flush merges them
COMPACT_FRACTION = 0.2  # deleted rows (of all rows ever in the dense index) that trigger a rebuild
_BATCH = 500  # ids per "IN (...)" query
# postings on disk: rows int32, term frequencies and passage lengths uint16 (8 bytes a posting)
ROW_DTYPE, TF_DTYPE, LENGTH_DTYPE = np.int32, np.uint16, np.uint16
MAX_TERMS = np.iinfo(LENGTH_DTYPE).max  # terms in one passage (chunks are hundreds of tokens)
_SPARSE_POSTINGS = 32768  # below this many postings a query sums them by sorting; above, in a dense span

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE passages (
    row INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, number INTEGER NOT NULL,
    title TEXT NOT NULL, source TEXT NOT NULL, file TEXT NOT NULL, text TEXT NOT NULL,
    length INTEGER NOT NULL, terms BLOB NOT NULL, dense BLOB NOT NULL);
CREATE INDEX passages_doc ON passages (doc_id);
CREATE INDEX passages_file ON passages (file);
CREATE TABLE df (term INTEGER PRIMARY KEY, df INTEGER NOT NULL);
CREATE TABLE postings (term INTEGER NOT NULL, block INTEGER NOT NULL, rows BLOB NOT NULL, tfs BLOB NOT NULL,
                       lengths BLOB NOT NULL, PRIMARY KEY (term, block)) WITHOUT ROWID;
CREATE TABLE deleted (row INTEGER PRIMARY KEY);
"""


def store_path(index_dir: Path) -> Path:
    return Path(index_dir) / STORE_DIR


class LocalStore:
    """One local store. ``LocalStore.open(directory, identity, create=..., write=...)``; close it when done."""

    def __init__(self, directory: Path, identity: CollectionIdentity, *, write: bool) -> None:
        self.directory = Path(directory)
        self.identity = identity
        self.writable = write
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.RLock()  # refresh and writes
        self._lock_file = None
        self._generation = -1
        self._dense_generation = -1
        self.dense = DenseIndex(identity.dims)
        self._deleted = np.zeros(0, dtype=np.int64)
        self._dense_dirty = False

    # -- opening -----------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, identity: CollectionIdentity, *, create: bool, write: bool) -> "LocalStore":
        directory = Path(directory)
        database = directory / DATABASE
        if not database.is_file() and not create:
            raise StoreError(f"{directory} has no {DATABASE}; index documents first (ortgen rag index DOCS -o INDEX)")
        store = cls(directory, identity, write=write or create)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            if store.writable:
                store._take_write_lock()
            fresh = not database.is_file()
            conn = store._conn()
            if fresh:
                store._create(conn)
            store._check_identity(conn)
            store._refresh(force=True)
        except BaseException:
            store.close()
            raise
        return store

    def _take_write_lock(self) -> None:
        self._lock_file = open(self.directory / LOCK_FILE, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            self._lock_file = None
            raise StoreError(f"another ortgen process is writing this index ({holder}); wait for it to finish "
                             "(searching while it writes is fine)") from None
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(f"pid {os.getpid()}\n")
        self._lock_file.flush()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.directory / DATABASE, timeout=30.0, check_same_thread=False,
                                   isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA case_sensitive_like=ON")  # Milvus's like is case-sensitive
            conn.execute("PRAGMA cache_size=-65536")  # 64 MB
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        with _transaction(conn):
            for statement in _SCHEMA.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            meta = {"identity": self.identity.to_json(), "passages": "0", "total_length": "0", "next_row": "0",
                    "next_block": "0", "generation": "0", "dense_generation": "0"}
            conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        log.info("created local store %s (%d dims)", self.directory, self.identity.dims)

    def _check_identity(self, conn: sqlite3.Connection) -> None:
        try:
            found = CollectionIdentity(**json.loads(self._meta(conn)["identity"]))
        except (KeyError, ValueError, TypeError, sqlite3.DatabaseError):
            raise StoreError(f"{self.directory / DATABASE} is not an ortgen store; use a new index directory") \
                from None
        problem = self.identity.mismatch(found, f"the store in {self.directory}")
        if problem:
            raise StoreError(problem)

    @staticmethod
    def _meta(conn: sqlite3.Connection) -> dict[str, str]:
        return dict(conn.execute("SELECT key, value FROM meta").fetchall())

    # -- keeping up with writers -------------------------------------------------------------------

    def _refresh(self, force: bool = False) -> None:
        """Pick up what was written since the last look (by this process or another): new rows into the
        dense index, the deleted rows, or a rebuilt dense index. Cheap when nothing changed."""
        conn = self._conn()
        generation = int(conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        if generation == self._generation and not force:
            return
        with self._lock:
            meta = self._meta(conn)
            generation = int(meta["generation"])
            dense_generation = int(meta["dense_generation"])
            if dense_generation != self._dense_generation:
                self.dense = self._load_dense(conn, dense_generation)
                self._dense_generation = dense_generation
            self._catch_up(conn)
            self._deleted = np.fromiter((r for (r,) in conn.execute("SELECT row FROM deleted ORDER BY row")),
                                        dtype=np.int64)
            self._generation = generation

    def _load_dense(self, conn: sqlite3.Connection, dense_generation: int) -> DenseIndex:
        path = self.directory / DENSE_FILE
        if path.is_file():
            try:
                dense = DenseIndex.load(path, self.identity.dims)
            except Exception as exc:  # a damaged cache is rebuilt from the database
                log.warning("rebuilding %s: %s", path, exc)
            else:
                stamp = conn.execute("SELECT value FROM meta WHERE key = 'dense_file_generation'").fetchone()
                if stamp is not None and int(stamp[0]) == dense_generation:
                    return dense
                log.info("%s is from an older generation; rebuilding it from the database", path)
        return DenseIndex(self.identity.dims)

    def _catch_up(self, conn: sqlite3.Connection) -> None:
        """Add to the dense index the rows the database has beyond it (written since it was saved)."""
        after = self.dense.max_row
        rows, vectors = [], []
        for row, blob in conn.execute("SELECT row, dense FROM passages WHERE row > ? ORDER BY row", (after,)):
            rows.append(row)
            vectors.append(np.frombuffer(blob, dtype=np.float32))
            if len(rows) >= 65536:
                self.dense.add(np.array(rows), np.stack(vectors))
                rows, vectors = [], []
                self._dense_dirty = True
        if rows:
            self.dense.add(np.array(rows), np.stack(vectors))
            self._dense_dirty = True

    # -- writes ------------------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if not self.writable:
            raise StoreError("this store was opened for searching only")

    def insert(self, rows: Sequence[Row]) -> None:
        """Store ``rows`` with their postings and statistics in one transaction (durable when it returns)."""
        self._check_writable()
        if not rows:
            return
        conn = self._conn()
        with self._lock, _transaction(conn):
            meta = self._meta(conn)
            first = int(meta["next_row"])
            block = int(meta["next_block"])
            numbers = np.arange(first, first + len(rows), dtype=np.int64)
            keys_per_row, records = [], []
            post_keys, post_rows, post_tfs, post_lengths = [], [], [], []
            total_length = 0
            for number, r in zip(numbers, rows):
                if len(r.terms) > MAX_TERMS:
                    raise StoreError(f"passage {r.chunk_id} has {len(r.terms)} terms; the local store takes at most "
                                     f"{MAX_TERMS} (use smaller chunks)")
                keys, tfs = _term_counts(r.terms)
                keys_per_row.append(keys)
                total_length += len(r.terms)
                post_keys.append(keys)
                post_rows.append(np.full(len(keys), number, dtype=np.int64))
                post_tfs.append(tfs)
                post_lengths.append(np.full(len(keys), len(r.terms), dtype=np.int64))
                records.append((int(number), r.chunk_id, r.doc_id, int(r.number), r.title, r.source,
                                document_file(r.source), r.text, len(r.terms), keys.tobytes(),
                                np.ascontiguousarray(r.dense, dtype=np.float32).tobytes()))
            try:
                conn.executemany("INSERT INTO passages VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", records)
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"a passage id is already stored ({exc}); delete it first") from None
            blocks = _group_postings(np.concatenate(post_keys), np.concatenate(post_rows),
                                     np.concatenate(post_tfs), np.concatenate(post_lengths))
            conn.executemany("INSERT INTO postings VALUES (?, ?, ?, ?, ?)",
                             ((key, block, r.tobytes(), t.tobytes(), n.tobytes()) for key, r, t, n in blocks))
            conn.executemany("INSERT INTO df (term, df) VALUES (?, ?) ON CONFLICT (term) DO UPDATE SET df = df + "
                             "excluded.df", ((key, len(r)) for key, r, _, _ in blocks))
            self._set_meta(conn, passages=int(meta["passages"]) + len(rows),
                           total_length=int(meta["total_length"]) + total_length,
                           next_row=first + len(rows), next_block=block + 1,
                           generation=int(meta["generation"]) + 1)
        self.dense.add(numbers, np.stack([np.asarray(r.dense, dtype=np.float32) for r in rows]))
        self._dense_dirty = True

    def delete_ids(self, chunk_ids: Sequence[str]) -> None:
        """Delete these passages: statistics updated at once, postings and vectors marked deleted."""
        self._check_writable()
        if not chunk_ids:
            return
        conn = self._conn()
        with self._lock, _transaction(conn):
            found = []
            for batch in _batches(list(chunk_ids)):
                marks = ", ".join("?" for _ in batch)
                found += conn.execute(f"SELECT row, length, terms FROM passages WHERE id IN ({marks})",
                                      batch).fetchall()
            if not found:
                return
            counts: dict[int, int] = {}
            for _, _, blob in found:
                for key in np.frombuffer(blob, dtype=np.int64).tolist():
                    counts[key] = counts.get(key, 0) + 1
            conn.executemany("UPDATE df SET df = df - ? WHERE term = ?", ((c, k) for k, c in counts.items()))
            conn.execute("DELETE FROM df WHERE df <= 0")
            rows = [(row,) for row, _, _ in found]
            conn.executemany("DELETE FROM passages WHERE row = ?", rows)
            conn.executemany("INSERT OR IGNORE INTO deleted (row) VALUES (?)", rows)
            meta = self._meta(conn)
            self._set_meta(conn, passages=int(meta["passages"]) - len(found),
                           total_length=int(meta["total_length"]) - sum(length for _, length, _ in found),
                           generation=int(meta["generation"]) + 1)

    def flush(self) -> None:
        """End of a run: merge fragmented postings, rebuild the dense index if deletions pile up, save it."""
        self._check_writable()
        conn = self._conn()
        self._merge_postings(conn)
        with self._lock:
            self._refresh()
            deleted = len(self._deleted)
            if deleted and deleted > COMPACT_FRACTION * max(self.dense.size, 1):
                self._compact(conn)
            elif self._dense_dirty or not (self.directory / DENSE_FILE).is_file():
                self._save_dense(conn, int(self._meta(conn)["dense_generation"]))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the write-ahead log back into the database file

    def _save_dense(self, conn: sqlite3.Connection, dense_generation: int) -> None:
        self.dense.save(self.directory / DENSE_FILE)
        with _transaction(conn):
            conn.execute("INSERT INTO meta (key, value) VALUES ('dense_file_generation', ?) ON CONFLICT (key) DO "
                         "UPDATE SET value = excluded.value", (str(dense_generation),))
        self._dense_dirty = False

    def _compact(self, conn: sqlite3.Connection) -> None:
        """Rebuild the dense index without deleted rows, drop them from the postings, forget them."""
        live = np.setdiff1d(self.dense.ids(), self._deleted)
        log.info("rebuilding the dense index without %d deleted passages", len(self._deleted))
        fresh = self.dense.rebuilt(live)
        dense_generation = int(self._meta(conn)["dense_generation"]) + 1
        fresh.save(self.directory / DENSE_FILE)
        deleted = self._deleted
        with _transaction(conn):
            terms = [k for (k,) in conn.execute("SELECT DISTINCT term FROM postings")]
            for batch in _batches(terms):
                self._rewrite_postings(conn, batch, deleted)
            conn.execute("DELETE FROM deleted")
            meta = self._meta(conn)
            self._set_meta(conn, dense_generation=dense_generation, dense_file_generation=dense_generation,
                           generation=int(meta["generation"]) + 1)
        self.dense, self._dense_generation, self._deleted = fresh, dense_generation, np.zeros(0, dtype=np.int64)
        self._dense_dirty = False

    def _merge_postings(self, conn: sqlite3.Connection) -> None:
        terms = [k for (k,) in conn.execute("SELECT term FROM postings GROUP BY term HAVING count(*) > ?",
                                            (MAX_BLOCKS,))]
        if not terms:
            return
        log.info("merging the postings blocks of %d terms", len(terms))
        for start in range(0, len(terms), 20000):
            with self._lock, _transaction(conn):
                for batch in _batches(terms[start:start + 20000]):
                    self._rewrite_postings(conn, batch, self._deleted)
                meta = self._meta(conn)
                self._set_meta(conn, generation=int(meta["generation"]) + 1)

    def _rewrite_postings(self, conn: sqlite3.Connection, terms: list[int], deleted: np.ndarray) -> None:
        """Replace each term's blocks by one (its lowest block number), without ``deleted`` rows."""
        marks = ", ".join("?" for _ in terms)
        grouped: dict[int, list[tuple[int, bytes, bytes, bytes]]] = {}
        for term, block, rows, tfs, lengths in conn.execute(
                f"SELECT term, block, rows, tfs, lengths FROM postings WHERE term IN ({marks}) ORDER BY term, block",
                terms):
            grouped.setdefault(term, []).append((block, rows, tfs, lengths))
        conn.execute(f"DELETE FROM postings WHERE term IN ({marks})", terms)
        merged = []
        for term, blocks in grouped.items():
            rows = np.concatenate([np.frombuffer(b[1], dtype=ROW_DTYPE) for b in blocks])
            tfs = np.concatenate([np.frombuffer(b[2], dtype=TF_DTYPE) for b in blocks])
            lengths = np.concatenate([np.frombuffer(b[3], dtype=LENGTH_DTYPE) for b in blocks])
            if len(deleted):
                keep = ~np.isin(rows, deleted)
                rows, tfs, lengths = rows[keep], tfs[keep], lengths[keep]
            if len(rows):
                merged.append((term, blocks[0][0], rows.tobytes(), tfs.tobytes(), lengths.tobytes()))
        conn.executemany("INSERT INTO postings VALUES (?, ?, ?, ?, ?)", merged)

    @staticmethod
    def _set_meta(conn: sqlite3.Connection, **values: Any) -> None:
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = "
                         "excluded.value", ((k, str(v)) for k, v in values.items()))

    # -- reads -------------------------------------------------------------------------------------

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> dict[str, set[str]]:
        """doc id -> ids of its stored passages (documents without passages are absent)."""
        conn = self._conn()
        found: dict[str, set[str]] = {}
        for batch in _batches(list(doc_ids)):
            marks = ", ".join("?" for _ in batch)
            for doc_id, chunk_id in conn.execute(f"SELECT doc_id, id FROM passages WHERE doc_id IN ({marks})", batch):
                found.setdefault(doc_id, set()).add(chunk_id)
        return found

    def documents_of_files(self, files: Iterable[str]) -> dict[str, str]:
        """doc id -> file, for the stored documents that came from ``files``."""
        conn = self._conn()
        found: dict[str, str] = {}
        for batch in _batches(list(files)):
            marks = ", ".join("?" for _ in batch)
            found.update(conn.execute(f"SELECT DISTINCT doc_id, file FROM passages WHERE file IN ({marks})", batch))
        return found

    def count(self, filters: Filters | None = None) -> int:
        conn = self._conn()
        if not filters:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'passages'").fetchone()[0])
        where, params = filters.to_sql()
        return int(conn.execute(f"SELECT count(*) FROM passages WHERE {where}", params).fetchone()[0])

    def stats(self) -> CorpusStats:
        meta = self._meta(self._conn())
        return CorpusStats(int(meta["passages"]), int(meta["total_length"]))

    def _allowed(self, filters: Filters | None) -> np.ndarray | None:
        if not filters:
            return None
        where, params = filters.to_sql()
        return np.fromiter((r for (r,) in self._conn().execute(f"SELECT row FROM passages WHERE {where} ORDER BY row",
                                                               params)), dtype=np.int64)

    def dense_search(self, vector: np.ndarray, limit: int, filters: Filters | None = None,
                     work: SearchWork | None = None) -> list[Hit]:
        """The ``limit`` passages nearest ``vector`` (cosine), best first: (row, cosine)."""
        self._refresh()
        allowed = self._allowed(filters)
        if allowed is not None and len(allowed) == 0:
            return []
        rows, scores = self.dense.search(np.asarray(vector, dtype=np.float32), limit, allowed=allowed,
                                         excluded=self._deleted)
        if work is not None:
            work.exact = allowed is not None and len(allowed) <= EXACT_FILTER_ROWS
        return [(int(r), float(s)) for r, s in zip(rows, scores)]

    def bm25_search(self, question: str, terms: list[str], limit: int, filters: Filters | None = None,
                    work: SearchWork | None = None) -> list[Hit]:
        """The ``limit`` best passages by BM25 for the analysed ``terms``, best first: (row, score).

        Reads the corpus totals, the document frequencies of these terms and their postings, nothing
        else; deleted rows and rows outside the filter are dropped from the postings read."""
        self._refresh()
        keys = {term_key(t): t for t in dict.fromkeys(terms)}
        if not keys:
            return []
        conn = self._conn()
        marks = ", ".join("?" for _ in keys)
        conn.execute("BEGIN")  # one snapshot: totals, frequencies and postings agree
        try:
            stats = CorpusStats(*(int(v) for v in conn.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'passages'), "
                "(SELECT value FROM meta WHERE key = 'total_length')").fetchone()))
            df = dict(conn.execute(f"SELECT term, df FROM df WHERE term IN ({marks})", list(keys)))
            blocks = conn.execute(f"SELECT term, rows, tfs, lengths FROM postings WHERE term IN ({marks})",
                                  list(keys)).fetchall()
        finally:
            conn.execute("COMMIT")
        if not blocks or stats.passages == 0:
            return []
        all_rows, all_weights = [], []
        for term, rows_blob, tfs_blob, lengths_blob in blocks:
            if df.get(term, 0) <= 0:
                continue
            tfs = np.frombuffer(tfs_blob, dtype=TF_DTYPE).astype(np.float64)
            lengths = np.frombuffer(lengths_blob, dtype=LENGTH_DTYPE).astype(np.float64)
            all_rows.append(np.frombuffer(rows_blob, dtype=ROW_DTYPE))
            all_weights.append(idf(df[term], stats.passages) * tf_part(tfs, lengths, stats.avgdl, DEFAULT_K1,
                                                                       DEFAULT_B))
        if not all_rows:
            return []
        rows = np.concatenate(all_rows)
        weights = np.concatenate(all_weights)
        if work is not None:
            work.postings += len(rows)
        keep = None
        if len(self._deleted):
            keep = ~np.isin(rows, self._deleted)
        allowed = self._allowed(filters)
        if allowed is not None:
            inside = np.isin(rows, allowed)
            keep = inside if keep is None else keep & inside
        if keep is not None:
            rows, weights = rows[keep], weights[keep]
        if len(rows) == 0:
            return []
        candidates, scores = _sum_by_row(rows, weights)
        k = min(limit, len(candidates))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(candidates) else np.arange(len(candidates))
        top = top[np.lexsort((candidates[top], -scores[top]))]
        return [(int(candidates[i]), float(scores[i])) for i in top]

    def fetch(self, keys: Sequence[Any]) -> dict[Any, Record]:
        """Row -> passage, for the rows that still exist."""
        conn = self._conn()
        out: dict[Any, Record] = {}
        for batch in _batches([int(k) for k in keys]):
            marks = ", ".join("?" for _ in batch)
            for row, chunk_id, doc_id, number, title, source, text in conn.execute(
                    f"SELECT row, id, doc_id, number, title, source, text FROM passages WHERE row IN ({marks})",
                    batch):
                out[row] = Record(chunk_id, doc_id, number, title, source, text)
        return out

    def describe(self) -> dict[str, Any]:
        meta = self._meta(self._conn())
        files = [self.directory / name for name in (DATABASE, DENSE_FILE)]
        return {"store": "local", "path": str(self.directory), "passages": int(meta["passages"]),
                "deleted_pending": len(self._deleted), "bytes_on_disk": disk_bytes(self.directory),
                "dense": {"index": "HNSW (faiss)", "vectors": self.dense.size},
                "files": [str(f) for f in files if f.exists()]}

    def close(self) -> None:
        with self._lock:  # a run that ends without flush leaves dense.faiss behind: the next open catches up
            for conn in self._connections:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._connections.clear()
            self._local = threading.local()
            if self._lock_file is not None:
                self._lock_file.close()
                self._lock_file = None


def disk_bytes(directory: Path) -> int:
    """Bytes of the store's files (database, its WAL, the dense index)."""
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.is_file())


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind, value, tb) -> None:
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")


def _batches(items: list, size: int = _BATCH) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _sum_by_row(rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct rows, the sum of their weights). Few postings: sorted (np.unique). Many (a common term
    in a large corpus): summed into a dense span from the least to the greatest row, which costs a few
    milliseconds of memory traffic at a million passages where sorting a million postings costs tens."""
    if len(rows) <= _SPARSE_POSTINGS:
        unique, inverse = np.unique(rows, return_inverse=True)
        return unique, np.bincount(inverse, weights=weights)
    low = int(rows.min())
    sums = np.bincount(rows - low, weights=weights)
    touched = np.flatnonzero(sums)  # every weight is positive (idf > 0, tf >= 1): zero means absent
    return touched + low, sums[touched]


def _term_counts(terms: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(distinct term keys, their frequencies) of one passage."""
    counts: dict[int, int] = {}
    for term in terms:
        key = term_key(term)
        counts[key] = counts.get(key, 0) + 1
    return np.fromiter(counts.keys(), dtype=np.int64, count=len(counts)), \
        np.fromiter(counts.values(), dtype=TF_DTYPE, count=len(counts))


def _group_postings(keys: np.ndarray, rows: np.ndarray, tfs: np.ndarray, lengths: np.ndarray
                    ) -> list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Per term: (key, rows ascending, tfs, lengths) in the on-disk dtypes."""
    order = np.lexsort((rows, keys))
    keys, rows = keys[order], rows[order].astype(ROW_DTYPE)
    tfs, lengths = tfs[order].astype(TF_DTYPE), lengths[order].astype(LENGTH_DTYPE)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    return [(int(keys[s]), rows[s:e], tfs[s:e], lengths[s:e]) for s, e in zip(starts, ends)]
