"""BM25 by ortgen: the analyzer, the score (equal to bm25s's Lucene variant), and Milvus's candidate vectors."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from ortgen.rag.bm25 import Analyzer, BM25Parameters, CorpusStats, document_vector, idf, query_vector, score


def test_analyzer_stems_drops_stop_words_and_keeps_identifiers():
    terms = Analyzer().terms("The therapies for BRCA1 carriers: IL-6 at 2.5 mg")
    assert "the" not in terms and "for" not in terms
    assert "therapi" in terms  # "therapies" and "therapy" meet
    assert Analyzer().terms("therapy") == ["therapi"]
    assert {"brca1", "2.5", "il", "6", "il6", "mg"} <= set(terms)


def test_score_is_lucene_bm25_as_bm25s_computes_it():
    bm25s = pytest.importorskip("bm25s", reason="needs bm25s (the dev extra)")
    analyzer = Analyzer()
    corpus = ["aspirin inhibits platelet aggregation", "aspirin dose of 75 mg daily, aspirin again",
              "metformin lowers glucose in type 2 diabetes", "platelet counts fall in sepsis"]
    docs = [analyzer.terms(t) for t in corpus]
    stats = CorpusStats(len(docs), sum(map(len, docs)))
    df = Counter(t for d in docs for t in set(d))
    query = analyzer.terms("Does aspirin affect platelets?")
    reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    reference.index(docs, show_progress=False)
    expected = reference.get_scores(list(dict.fromkeys(query)))
    for terms, want in zip(docs, expected):
        assert math.isclose(score(query, terms, df, stats), want, rel_tol=1e-6, abs_tol=1e-9)


def test_the_candidate_vectors_rank_as_bm25_with_their_avgdl():
    """Milvus finds candidates by the inner product of these vectors: BM25 with the avgdl they were made with."""
    analyzer = Analyzer()
    corpus = ["aspirin inhibits platelet aggregation", "aspirin dose of 75 mg daily",
              "metformin lowers glucose in type 2 diabetes", "platelet counts fall in sepsis"]
    docs = [analyzer.terms(t) for t in corpus]
    params = BM25Parameters(avgdl=sum(map(len, docs)) / len(docs))
    df = Counter(t for d in docs for t in set(d))
    query = analyzer.terms("Does aspirin affect platelets?")
    q = query_vector(query, df, len(docs))
    stats = CorpusStats(len(docs), sum(map(len, docs)))
    for terms in docs:
        d = document_vector(terms, params)
        via_vectors = sum(w * d.get(dim, 0.0) for dim, w in q.items())
        assert math.isclose(via_vectors, score(query, terms, df, stats), rel_tol=1e-9)
    assert document_vector([], params) == {0: 0.0}  # Milvus refuses empty sparse rows
    assert idf(1, 4) > idf(3, 4) > 0
