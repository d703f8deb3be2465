"""Retrieval quality on the evaluation corpus (ortgen.rag.eval_corpus): the local store, and real Milvus Lite.

recall@5 and MRR@10 of hybrid, dense-only and BM25-only are printed and written to
$ORTGEN_RAG_RESULTS (a JSON file) when that is set. What the numbers show, and what is asserted:

- exact-term questions (gene symbols, doses): fusing BM25 in beats dense alone (recall@5 >=, MRR >)
- lay-language questions with a lexical decoy: dense finds the answer, BM25 the decoy; RRF lands between
- overall: hybrid beats BM25 alone and stays within 0.03 recall@5 of dense alone (measured 0.018 below it
  on this corpus: docs/rag.md); the issue's "hybrid >= both overall" does NOT hold here and is not asserted
- client-side BM25 (stemming, stop words) beats Milvus Lite's BM25 function: the reason it is the default
- the local store and the Milvus store rank alike: the same BM25 scores, dense search that agrees
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ortgen.rag.bm25 import Analyzer
from ortgen.rag.eval_corpus import build_corpus, write_corpus
from ortgen.rag.evaluation import ModeScores, evaluate, table
from ortgen.rag.index import Index
from ortgen.rag.indexer import IndexSettings, index_documents
from ortgen.rag.retrieval import QuestionTooLongError, SearchError, fuse_rankings

KINDS = ["synonym", "identifier", "dose", "keyword"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("eval"))


RUNS = {"client": {}, "milvus-client": {"uri": "milvus.db"}, "milvus": {"uri": "milvus.db", "sparse": "milvus"}}


def _build(corpus, tmp_path_factory, embedder, run: str) -> Path:
    path, _ = corpus
    index_dir = tmp_path_factory.mktemp(f"index-{run}") / "idx"
    index_documents([path], index_dir, IndexSettings(progress=False, **RUNS[run]), embedder=embedder)
    return index_dir


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory, embedder) -> dict[str, Path]:
    return {run: _build(corpus, tmp_path_factory, embedder, run) for run in RUNS}


@pytest.fixture(scope="module")
def scores(corpus, built, embedder) -> dict[str, dict[str, ModeScores]]:
    _, queries = corpus
    out = {}
    for run, index_dir in built.items():
        with Index.open(index_dir, embedder=embedder) as index:
            out[run] = evaluate(index, queries)
    report = {sparse: {mode: {kind: {"recall@5": s.recall(5, None if kind == "all" else kind),
                                     "mrr@10": s.mrr(10, None if kind == "all" else kind)}
                              for kind in ["all"] + KINDS}
                       for mode, s in modes.items()}
              for sparse, modes in out.items()}
    for sparse, modes in out.items():
        print(f"\n{len(queries)} questions, {sparse} BM25\n" + table(modes, sparse, KINDS))
    if os.environ.get("ORTGEN_RAG_RESULTS"):
        Path(os.environ["ORTGEN_RAG_RESULTS"]).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def test_synonym_questions_share_no_word_with_their_answer_but_with_a_decoy():
    """The corpus is what it claims: BM25 cannot find these answers, and is led to a decoy."""
    docs, queries = build_corpus()
    text = {d["id"]: d["text"] for d in docs}
    analyzer = Analyzer()
    synonym = [q for q in queries if q.kind == "synonym"]
    assert len(synonym) >= 30
    for q in synonym:
        asked = set(analyzer.terms(q.question))
        assert not asked & set(analyzer.terms(text[q.relevant])), q.question
        assert asked & set(analyzer.terms(text[q.relevant + "-decoy"])), q.question


def test_fusing_bm25_helps_on_exact_terms(scores):
    s = scores["client"]
    for kind in ("identifier", "dose"):
        assert s["hybrid"].recall(5, kind) >= s["dense"].recall(5, kind), kind
        assert s["hybrid"].mrr(10, kind) > s["dense"].mrr(10, kind), kind


def test_dense_carries_the_lay_language_questions(scores):
    s = scores["client"]
    assert s["bm25"].recall(5, "synonym") == 0.0  # no shared word: BM25 cannot find them
    assert s["dense"].recall(5, "synonym") >= 0.8
    assert s["hybrid"].recall(5, "synonym") >= 0.7  # fusion keeps most of dense's answers in the top 5


def test_hybrid_overall(scores):
    s = scores["client"]
    assert s["hybrid"].recall(5) > s["bm25"].recall(5) and s["hybrid"].mrr(10) > s["bm25"].mrr(10)
    assert s["hybrid"].recall(5) >= s["dense"].recall(5) - 0.03


def test_the_local_and_the_milvus_store_rank_alike(scores, built, corpus, embedder):
    """The same BM25 scores question by question (passages with equal scores may come in another order:
    the gene passages of this corpus tie often), and dense and hybrid quality within 0.01."""
    with Index.open(built["client"], embedder=embedder) as local, \
            Index.open(built["milvus-client"], embedder=embedder) as milvus:
        for query in corpus[1]:
            ours = [p.score for p in local.search(query.question, 10, mode="bm25")]
            theirs = [p.score for p in milvus.search(query.question, 10, mode="bm25")]
            assert ours == pytest.approx(theirs, abs=1e-9), query.question
    local_scores, milvus_scores = scores["client"], scores["milvus-client"]
    assert local_scores["bm25"].recall(5) == milvus_scores["bm25"].recall(5)
    for mode in ("dense", "hybrid"):
        assert abs(local_scores[mode].recall(5) - milvus_scores[mode].recall(5)) <= 0.01, mode
        assert abs(local_scores[mode].mrr(10) - milvus_scores[mode].mrr(10)) <= 0.01, mode


def test_client_bm25_beats_milvus_lite_bm25(scores):
    """The measurement behind --sparse client being the default (Milvus Lite's analyzer does not stem)."""
    client, milvus = scores["client"], scores["milvus"]
    assert client["bm25"].mrr(10) > milvus["bm25"].mrr(10)
    assert client["bm25"].recall(5) >= milvus["bm25"].recall(5)
    assert client["hybrid"].recall(5) >= milvus["hybrid"].recall(5)


@pytest.fixture(scope="module")
def index(corpus, tmp_path_factory, embedder):
    with Index.open(_build(corpus, tmp_path_factory, embedder, "client"), embedder=embedder) as opened:
        yield opened


def test_hybrid_is_reciprocal_rank_fusion_of_the_two_lists(index, corpus):
    """Hybrid scores equal RRF computed here from the dense and BM25 rankings."""
    for query in corpus[1][::15]:
        dense = [p.chunk_id for p in index.search(query.question, 10, mode="dense")]
        bm25 = [p.chunk_id for p in index.search(query.question, 10, mode="bm25")]
        expected = dict(fuse_rankings([dense, bm25], k=60))
        hybrid = index.search(query.question, 5, mode="hybrid", rrf_k=60, candidates=10)
        assert [round(p.score, 5) for p in hybrid] == [round(s, 5) for s in sorted(expected.values(),
                                                                                     reverse=True)[:5]]
        assert all(abs(expected[p.chunk_id] - p.score) < 1e-5 for p in hybrid)


def test_filters_apply_in_every_mode(index):
    wanted = ["gene-KCNH2", "gene-SCN5A", "dose-aspirin-325mg"]
    for mode in ("hybrid", "dense", "bm25"):
        hits = index.search("Which arrhythmia syndrome?", 5, {"doc_ids": wanted}, mode=mode)
        assert hits and {p.doc_id for p in hits} <= set(wanted), mode
    assert index.search("aspirin", 5, {"doc_ids": ["no-such-doc"]}) == []
    hits = index.search("aspirin", 5, {"expr": 'doc_id like "dose-%"'})
    assert hits and all(p.doc_id.startswith("dose-") for p in hits)


def test_bad_questions_are_refused(index):
    with pytest.raises(QuestionTooLongError, match="the embedder reads at most 254"):
        index.search("word " * 400)
    with pytest.raises(SearchError, match="empty"):
        index.search("   ")
    with pytest.raises(SearchError, match="unknown filter"):
        index.search("aspirin", filters={"doc": "x"})
    with pytest.raises(SearchError, match="mode"):
        index.search("aspirin", mode="sparse")
