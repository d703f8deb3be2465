"""Retrieval that holds at scale, on the local store and on Milvus (Lite):

- dense search on 20,000 passages finds what exact search finds (recall@10 >= 0.98), and a search
  filtered to a document, to a few documents or by an expression returns exactly the exact top hits
  inside the filter (HNSW alone, restricted to a few allowed nodes, found nothing at all);
- BM25 scores equal the reference package bm25s (same tokens, k1 1.2, b 0.75) within 1e-5, also
  after deletions and new inserts;
- the work of a BM25 query does not grow with the corpus: SQLite's own instruction count for a
  query whose terms are equally rare in 2,000 and 20,000 passages stays the same (it grew with the
  corpus when document frequencies were counted per query).

Vectors and texts are synthetic (ortgen.bench.retrieval_scale): vectors synthesised around real
embeddings of the test embedder, texts drawn from a Zipf distribution, so building 20,000 passages
takes seconds, not the two minutes embedding them would.
"""

from __future__ import annotations

import random
import sqlite3

import numpy as np
import pytest

from ortgen.bench.retrieval_scale import (
    PASSAGES_PER_DOCUMENT,
    SyntheticCorpus,
    build,
    create_index,
    exact_neighbours,
    real_sentences,
    synthetic_passages,
    vocabulary,
)
from ortgen.rag.bm25 import Analyzer
from ortgen.rag.index import Index
from ortgen.rag.store import Row, SearchWork

bm25s = pytest.importorskip("bm25s", reason="needs bm25s (the dev extra): the reference BM25")


def _number(chunk_id: str) -> int:
    doc, number = chunk_id[4:].split("#")
    return int(doc) * PASSAGES_PER_DOCUMENT + int(number)


@pytest.fixture(scope="module")
def corpus(embedder) -> SyntheticCorpus:
    return SyntheticCorpus(vocabulary(0), embedder.encode(real_sentences(300, seed=3)), seed=0)


@pytest.fixture(scope="module")
def questions(embedder) -> tuple[list[str], np.ndarray]:
    from ortgen.rag.eval_corpus import build_corpus

    texts = [q.question for q in build_corpus()[1]][:40]
    return texts, embedder.encode(texts)


@pytest.fixture(scope="module")
def local_20k(corpus, embedder, tmp_path_factory):
    directory = tmp_path_factory.mktemp("scale") / "local-20k"
    _, vectors = build(directory, 20_000, corpus, embedder, progress=False)
    return directory, vectors


def _assert_dense_matches_exact(index: Index, vectors: np.ndarray, questions, min_recall: float) -> None:
    texts, queries = questions
    rows = np.arange(len(vectors))
    exact = exact_neighbours(vectors, rows, queries, 10)
    recalls = []
    for text, truth in zip(texts, exact):
        found = {_number(p.chunk_id) for p in index.search(text, k=10, mode="dense")}
        recalls.append(len(found & truth) / 10)
    assert np.mean(recalls) >= min_recall, f"recall@10 {np.mean(recalls):.3f}"

    rng = random.Random(1)
    documents = len(vectors) // PASSAGES_PER_DOCUMENT
    for text, query in zip(texts[:15], queries[:15]):
        doc = rng.randrange(documents)
        docs = sorted({rng.randrange(documents) for _ in range(25)})
        cases = [({"doc_ids": [f"syn-{doc}"]}, rows[doc * 10:(doc + 1) * 10]),
                 ({"doc_ids": [f"syn-{d}" for d in docs]}, np.concatenate([rows[d * 10:(d + 1) * 10] for d in docs])),
                 ({"expr": f'doc_id like "syn-{doc % 9 + 1}%" and number >= 3'},
                  np.array([r for r in rows if str(r // 10).startswith(str(doc % 9 + 1)) and r % 10 >= 3]))]
        for filters, allowed in cases:
            scores = vectors[allowed] @ query
            order = np.lexsort((allowed, -scores))[:10]  # ties by row, as the stores break them
            expected = [int(allowed[i]) for i in order]
            got = [_number(p.chunk_id) for p in index.search(text, k=10, filters=filters, mode="dense")]
            assert got == expected, filters
            assert len(got) == min(10, len(allowed))


def test_local_dense_search_finds_the_exact_neighbours_also_inside_filters(local_20k, embedder, questions):
    directory, vectors = local_20k
    with Index.open(directory, embedder=embedder) as index:
        assert index.store.count() == 20_000
        _assert_dense_matches_exact(index, vectors, questions, 0.98)
        # a filter allowing more passages than are searched exactly goes through HNSW with a wider search
        texts, queries = questions
        allowed = np.arange(len(vectors))[np.arange(len(vectors)) % 10 != 0]  # 18,000 passages
        work = SearchWork()
        truth = exact_neighbours(vectors[allowed], allowed, queries, 10)
        recalls = []
        for text, expected in zip(texts, truth):
            hits, _ = index.search_timed(text, k=10, filters={"expr": "number != 0"}, mode="dense", work=work)
            recalls.append(len({_number(p.chunk_id) for p in hits} & expected) / 10)
            assert all(p.number != 0 for p in hits)
        assert not work.exact and np.mean(recalls) >= 0.98


def _sqlite_steps(index: Index, question: str) -> tuple[int, SearchWork]:
    """SQLite virtual-machine instructions executed by one BM25 search (counted by SQLite itself)."""
    steps = [0]

    def count() -> int:
        steps[0] += 100
        return 0

    conn: sqlite3.Connection = index.store._conn()
    work = SearchWork()
    conn.set_progress_handler(count, 100)
    try:
        index.search_timed(question, k=10, mode="bm25", work=work)
    finally:
        conn.set_progress_handler(None, 100)
    return steps[0], work


def test_bm25_query_work_does_not_grow_with_the_corpus(corpus, embedder, tmp_path):
    """Ten passages hold the rare words "zebrafish" and "okapi", at 2,000 passages and at 20,000:
    the query reads those terms' postings and three totals, and nothing else."""
    needles = ["Zebrafish and okapi share a fin", "zebrafish larvae", "okapi stripes"] * 3 + ["zebrafish okapi"]
    analyzer = Analyzer()
    work_by_size = {}
    for size in (2_000, 20_000):
        store = create_index(tmp_path / f"idx-{size}", embedder)
        try:
            for start in range(0, size, 5_000):
                store.insert(corpus.rows(start, min(5_000, size - start), analyzer))
            vectors = embedder.encode(needles)
            store.insert([Row(f"needle#{i}", "needle", i, "", "needles.txt", text, vectors[i], analyzer.terms(text))
                          for i, text in enumerate(needles)])
            store.flush()
        finally:
            store.close()
        with Index.open(tmp_path / f"idx-{size}", embedder=embedder) as index:
            _sqlite_steps(index, "okapi")  # warm the statement cache
            steps, work = _sqlite_steps(index, "zebrafish okapi")
            hits = index.search("zebrafish okapi", k=10, mode="bm25")
        assert {p.doc_id for p in hits} == {"needle"} and len(hits) == 10
        assert work.postings == 7 + 7  # the postings of "zebrafish" (7 passages) and "okapi" (7)
        work_by_size[size] = steps
    assert work_by_size[20_000] <= 1.5 * work_by_size[2_000] + 2_000, work_by_size


def _reference_scores(tokens: dict[str, list[str]], query_terms: list[str]) -> dict[str, float]:
    ids = list(tokens)
    reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    reference.index([tokens[i] for i in ids], show_progress=False)
    terms = [t for t in dict.fromkeys(query_terms) if any(t in tokens[i] for i in ids)]
    if not terms:
        return {}
    scores = reference.get_scores(terms)
    return {ids[i]: float(s) for i, s in enumerate(scores) if s > 0}


def _check_bm25(index: Index, tokens: dict[str, list[str]], questions: list[str]) -> None:
    analyzer = Analyzer()
    for question in questions:
        expected = _reference_scores(tokens, analyzer.terms(question))
        best = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        hits = index.search(question, k=10, mode="bm25")
        assert len(hits) == len(best), question
        for hit, (chunk_id, score) in zip(hits, best):
            assert abs(hit.score - score) <= 1e-5, (question, hit.chunk_id, hit.score, chunk_id, score)
            assert abs(expected[hit.chunk_id] - hit.score) <= 1e-5


@pytest.mark.parametrize("store", ["local", "milvus-lite"])
def test_bm25_equals_the_reference_after_inserts_and_deletions(store, corpus, embedder, tmp_path):
    analyzer = Analyzer()
    directory = tmp_path / store
    index_store = create_index(directory, embedder, uri="milvus.db" if store == "milvus-lite" else None)
    tokens: dict[str, list[str]] = {}
    try:
        rows = corpus.rows(0, 1500, analyzer)
        index_store.insert(rows)
        tokens.update({r.chunk_id: r.terms for r in rows})
        gone = [r.chunk_id for r in rows if r.doc_id in {f"syn-{d}" for d in range(0, 150, 7)}]
        index_store.delete_ids(gone)  # whole documents and their statistics go
        for chunk_id in gone:
            del tokens[chunk_id]
        more = corpus.rows(1500, 500, analyzer)
        index_store.insert(more)
        tokens.update({r.chunk_id: r.terms for r in more})
        index_store.delete_ids([more[3].chunk_id, more[40].chunk_id])
        del tokens[more[3].chunk_id], tokens[more[40].chunk_id]
        index_store.flush()
    finally:
        index_store.close()
    rng = random.Random(5)
    questions = []
    for _ in range(25):
        _, _, _, text = next(synthetic_passages(rng.randrange(2000), 1, corpus.words, corpus.seed))
        words = text.rstrip(".").split()
        at = rng.randrange(len(words) - 6)
        questions.append(" ".join(words[at:at + rng.randint(2, 6)]))
    with Index.open(directory, embedder=embedder) as index:
        assert index.store.count() == len(tokens)
        _check_bm25(index, tokens, questions)


def test_milvus_dense_search_passes_ef_and_is_exact_inside_filters(corpus, embedder, questions, tmp_path):
    """The Milvus store on Milvus Lite: HNSW searched with ef, and filtered searches exact."""
    directory = tmp_path / "lite"
    _, vectors = build(directory, 4_000, corpus, embedder, uri="milvus.db", batch=2_000, progress=False)
    with Index.open(directory, embedder=embedder) as index:
        _assert_dense_matches_exact(index, vectors, (questions[0][:15], questions[1][:15]), 0.98)


def test_a_deleted_passage_is_never_returned_and_a_rebuild_forgets_it(corpus, embedder, tmp_path):
    analyzer = Analyzer()
    store = create_index(tmp_path / "idx", embedder)
    try:
        rows = corpus.rows(0, 600, analyzer)
        store.insert(rows)
        store.flush()
        store.delete_ids([r.chunk_id for r in rows[:200]])  # a third: the next flush rebuilds the HNSW index
        store.flush()
        assert store.dense.size == 400 and len(store._deleted) == 0
    finally:
        store.close()
    with Index.open(tmp_path / "idx", embedder=embedder) as index:
        for row in rows[:20]:
            hits = index.search(" ".join(row.text.split()[:8]), k=20)
            assert all(_number(p.chunk_id) >= 200 for p in hits)
