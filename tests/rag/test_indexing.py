"""ortgen rag index/delete against real Milvus Lite: idempotence, updates, deletes, shards, bad input."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ortgen.errors import OrtgenError
from ortgen.rag.chunking import ChunkSettings
from ortgen.rag.documents import DocumentError, Shard
from ortgen.rag.index import Index
from ortgen.rag.indexer import IndexSettings, delete_documents, index_documents
from ortgen.rag.store import StoreError

SMALL_CHUNKS = ChunkSettings(max_tokens=32, overlap_tokens=8)
TOPICS = ["aspirin", "metformin", "warfarin", "insulin", "statin", "heparin", "digoxin", "lithium", "amiodarone",
          "furosemide", "ramipril", "amlodipine"]


def _doc(i: int, topic: str, sentences: int = 6, tag: str = "") -> dict:
    text = " ".join(f"{topic.capitalize()} fact {n}{tag}: it acts on pathway {i * 10 + n} in patients."
                    for n in range(sentences))
    return {"id": f"doc-{i}", "title": topic, "text": text}


def _corpus(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    return path


def _index(docs, index_dir, embedder, **settings):
    return index_documents([docs], index_dir, IndexSettings(chunking=SMALL_CHUNKS, progress=False, **settings),
                           embedder=embedder)


def _stored(index_dir: Path, embedder) -> dict[str, set[str]]:
    with Index.open(index_dir, embedder=embedder) as index:
        return index.store.chunk_ids_of(f"doc-{i}" for i in range(len(TOPICS)))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return _corpus(tmp_path / "docs" / "corpus.jsonl", [_doc(i, t) for i, t in enumerate(TOPICS)])


def test_reindexing_unchanged_documents_embeds_nothing(corpus: Path, tmp_path: Path, embedder):
    first = _index(corpus, tmp_path / "idx", embedder)
    assert first.embedded == first.chunks > len(TOPICS)  # several chunks per document
    before = embedder.texts_encoded
    second = _index(corpus, tmp_path / "idx", embedder)
    assert embedder.texts_encoded == before  # the encoder was not called
    assert (second.embedded, second.unchanged, second.deleted) == (0, first.chunks, 0)


def test_changed_document_is_re_embedded_alone_and_shrunk_chunks_go(corpus: Path, tmp_path: Path, embedder):
    first = _index(corpus, tmp_path / "idx", embedder)
    old = _stored(tmp_path / "idx", embedder)
    docs = [_doc(i, t) for i, t in enumerate(TOPICS)]
    docs[3] = _doc(3, TOPICS[3], tag=" (revised)")  # every chunk of doc-3 changes
    docs[5] = _doc(5, TOPICS[5], sentences=2)  # doc-5 shrinks to one chunk
    before = embedder.texts_encoded
    second = _index(_corpus(corpus, docs), tmp_path / "idx", embedder)
    new = _stored(tmp_path / "idx", embedder)
    changed = (new["doc-3"] - old["doc-3"]) | (new["doc-5"] - old["doc-5"])
    assert embedder.texts_encoded - before == second.embedded == len(changed)
    assert second.deleted == len(old["doc-3"]) + len(old["doc-5"] - new["doc-5"])
    assert len(new["doc-5"]) == 1 < len(old["doc-5"])
    assert all(new[d] == old[d] for d in old if d not in ("doc-3", "doc-5"))  # untouched
    assert sum(map(len, new.values())) == second.chunks < first.chunks
    with Index.open(tmp_path / "idx", embedder=embedder) as index:
        hits = index.search("insulin fact revised", k=3, filters={"doc_ids": ["doc-3"]})
    assert hits and all("(revised)" in p.text for p in hits)


def test_delete_removes_a_document(corpus: Path, tmp_path: Path, embedder):
    _index(corpus, tmp_path / "idx", embedder)
    before = _stored(tmp_path / "idx", embedder)
    assert delete_documents(tmp_path / "idx", ["doc-2"]) == len(before["doc-2"])
    after = _stored(tmp_path / "idx", embedder)
    assert "doc-2" not in after and len(after) == len(TOPICS) - 1
    with pytest.raises(OrtgenError, match="no document 'doc-2'"):
        delete_documents(tmp_path / "idx", ["doc-2"])


def test_shards_together_hold_every_document(corpus: Path, tmp_path: Path, embedder):
    reports = [_index(corpus, tmp_path / "sharded", embedder, shard=Shard(k, 3)) for k in (1, 2, 3)]
    whole = _index(corpus, tmp_path / "whole", embedder)
    assert sum(r.documents for r in reports) == len(TOPICS) and all(r.documents_loaded == len(TOPICS) for r in reports)
    assert _stored(tmp_path / "sharded", embedder) == _stored(tmp_path / "whole", embedder)
    assert sum(r.embedded for r in reports) == whole.embedded


def test_another_embedder_is_refused(corpus: Path, tmp_path: Path, embedder, model_dir: Path):
    from ortgen.export.embedder import export_embedder
    from ortgen.rag.embedder import Embedder

    _index(corpus, tmp_path / "idx", embedder)
    export_embedder(model_dir, tmp_path / "int8", weight_type="int8")
    other = Embedder.open(tmp_path / "int8")
    with pytest.raises(OrtgenError, match="the index was built with embedder .* Use the index's embedder"):
        _index(corpus, tmp_path / "idx", other)
    with pytest.raises(OrtgenError, match="the index was built with embedder"):
        Index.open(tmp_path / "idx", embedder=tmp_path / "int8")


def test_empty_corpus_is_an_error_and_leaves_nothing(tmp_path: Path, embedder):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "table.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"no documents found in .* \(supported: .txt"):
        _index(tmp_path / "docs", tmp_path / "idx", embedder)
    assert not (tmp_path / "idx").exists()


def test_unreachable_milvus_fails_in_bounded_time(corpus: Path, tmp_path: Path, embedder):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(StoreError, match=f"cannot connect to Milvus at {uri} within 2s"):
            _index(corpus, tmp_path / "idx", embedder, uri=uri, timeout=2.0)
    assert time.monotonic() - started < 20
    assert not (tmp_path / "idx").exists()


def test_a_killed_run_leaves_the_previous_index_usable(tmp_path: Path, embedder, embedder_dir: Path):
    """SIGKILL an update part-way (after some new passages were inserted): the old passages are all still
    there and searchable; the next run completes the update and removes the old ones."""
    v1 = [_doc(i, t) for i, t in enumerate(TOPICS)]
    corpus = _corpus(tmp_path / "docs" / "corpus.jsonl", v1)
    first = _index(corpus, tmp_path / "idx", embedder)
    old = _stored(tmp_path / "idx", embedder)
    big = [_doc(i, TOPICS[i % len(TOPICS)], sentences=60, tag=" v2") for i in range(len(TOPICS))]
    _corpus(corpus, big)
    proc = subprocess.Popen([sys.executable, "-m", "ortgen", "rag", "index", str(corpus), "-o", str(tmp_path / "idx"),
                             "--batch-size", "4"], stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stderr:  # progress is logged after each inserted group of passages
            seen.append(line)
            if line.startswith("embedding ("):
                break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed:\n" + "".join(seen)
    with Index.open(tmp_path / "idx", embedder=embedder) as index:
        stored = index.store.chunk_ids_of(d["id"] for d in v1)
        assert all(old[d] <= stored[d] for d in old)  # every previous passage survived
        assert index.store.count() > first.chunks  # and some new ones were inserted before the kill
        assert index.search("warfarin pathway", k=3)
    finished = _index(corpus, tmp_path / "idx", embedder)
    assert finished.deleted == first.chunks
    assert sum(map(len, _stored(tmp_path / "idx", embedder).values())) == finished.chunks


def test_documents_removed_from_a_reindexed_file_are_reported_then_pruned(corpus: Path, tmp_path: Path, embedder,
                                                                           caplog):
    _index(corpus, tmp_path / "idx", embedder)
    docs = [_doc(i, t) for i, t in enumerate(TOPICS) if i not in (3, 5)]
    _corpus(corpus, docs)
    other = _corpus(tmp_path / "docs" / "other.jsonl", [_doc(40, "zinc")])
    with caplog.at_level("WARNING"):
        kept = index_documents([corpus, other], tmp_path / "idx", IndexSettings(chunking=SMALL_CHUNKS, progress=False),
                               embedder=embedder)
    assert kept.gone_documents == ["doc-3", "doc-5"] and kept.pruned == 0
    assert "2 document(s) in the index are no longer in the files they came from: doc-3, doc-5" in caplog.text
    assert {"doc-3", "doc-5"} <= set(_stored(tmp_path / "idx", embedder))  # reported, not deleted
    pruned = index_documents([corpus], tmp_path / "idx", IndexSettings(chunking=SMALL_CHUNKS, progress=False,
                                                                       prune=True), embedder=embedder)
    assert pruned.gone_documents == ["doc-3", "doc-5"] and pruned.pruned > 0
    stored = _stored(tmp_path / "idx", embedder)
    assert "doc-3" not in stored and "doc-5" not in stored and len(stored) == len(TOPICS) - 2
    with Index.open(tmp_path / "idx", embedder=embedder) as index:
        assert index.store.chunk_ids_of(["doc-40"])  # another file's document was not judged by this run


def test_the_local_store_admits_one_writer_and_readers_see_its_updates(corpus: Path, tmp_path: Path, embedder):
    _index(corpus, tmp_path / "idx", embedder)
    with Index.open(tmp_path / "idx", embedder=embedder) as reader:  # a server holding the index
        before = reader.store.count()
        assert not reader.search("zinc fact", k=3, filters={"doc_ids": ["doc-40"]})
        _index(_corpus(tmp_path / "more" / "zinc.jsonl", [_doc(40, "zinc")]), tmp_path / "idx", embedder)
        assert reader.store.count() > before
        hits = reader.search("zinc fact 3", k=3, filters={"doc_ids": ["doc-40"]})  # new passages, both searches
        assert hits and all(p.doc_id == "doc-40" for p in hits)
        assert reader.search("zinc fact 3", k=3, mode="dense")[0].doc_id == "doc-40"
        from ortgen.rag.index import open_store

        writer = open_store(reader.manifest, tmp_path / "idx", write=True)
        try:
            with pytest.raises(StoreError, match="another ortgen process is writing this index"):
                _index(corpus, tmp_path / "idx", embedder)
        finally:
            writer.close()
