"""Client-side BM25: the analyzer, and that Milvus's inner product of the two halves is BM25."""

from __future__ import annotations

import math
from collections import Counter

from ortgen.rag.bm25 import Analyzer, BM25Parameters, document_vector, idf, query_vector


def test_analyzer_stems_drops_stop_words_and_keeps_identifiers():
    terms = Analyzer().terms("The therapies for BRCA1 carriers: IL-6 at 2.5 mg")
    assert "the" not in terms and "for" not in terms
    assert "therapi" in terms  # "therapies" and "therapy" meet
    assert Analyzer().terms("therapy") == ["therapi"]
    assert {"brca1", "2.5", "il", "6", "il6", "mg"} <= set(terms)


def test_sparse_inner_product_is_the_bm25_score():
    analyzer = Analyzer()
    corpus = ["aspirin inhibits platelet aggregation", "aspirin dose of 75 mg daily",
              "metformin lowers glucose in type 2 diabetes", "platelet counts fall in sepsis"]
    docs = [analyzer.terms(t) for t in corpus]
    params = BM25Parameters(avgdl=sum(map(len, docs)) / len(docs))
    df = Counter(t for d in docs for t in set(d))
    query = analyzer.terms("Does aspirin affect platelets?")
    q = query_vector(query, df, len(docs))
    for terms in docs:
        d = document_vector(terms, params)
        via_vectors = sum(w * d.get(dim, 0.0) for dim, w in q.items())
        tf = Counter(terms)
        direct = sum(idf(df[t], len(docs)) * tf[t] * (params.k1 + 1)
                     / (tf[t] + params.k1 * (1 - params.b + params.b * len(terms) / params.avgdl))
                     for t in set(query) if t in tf)
        assert math.isclose(via_vectors, direct, rel_tol=1e-9)
    assert document_vector([], params) == {0: 0.0}  # Milvus refuses empty sparse rows
