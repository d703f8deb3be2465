"""``ortgen rag bench-scale``: retrieval at 10k, 100k and 1M passages, on this machine.

Per size, one index (the local store, the default) built from synthetic passages:

    text     words drawn from a Zipf distribution (exponent 1.07) over a vocabulary of the evaluation
             corpus's words plus generated identifiers ("kx17", ...): term statistics shaped like real
             text (a few words in most passages, most words in few), 60-120 words a passage, 10 passages
             a document; analysed by ortgen's real analyzer
    vectors  the embedder run on BASE real sentences (recombined sentences of the evaluation corpus),
             and the rest synthesised around them: normalise(e_i + lambda * e_j + 0.5 * u) with i, j
             random real vectors, lambda ~ U(0, 0.7) and u a random unit vector; so the vectors have
             the embedder's geometry (clusters, cosines 0.6-0.75 to the 10th neighbour) without
             embedding a million passages (200 passages/s here: 80 minutes)

and measured: the store's indexing rate (vectors given: rows, postings, statistics, HNSW), the
index's size on disk, query latency p50 / p99 of dense, BM25 and hybrid through ``Index.search``
(the question embedded by the real embedder), recall@10 of dense search against exact search
(numpy over every stored vector), filtered searches against exact search inside the filter, and
BM25 against the reference package ``bm25s`` (same tokens, k1 1.2, b 0.75, Lucene's idf): the
same top 10 and scores within 1e-5. Milvus Lite is measured at the smaller sizes for comparison.

Writes ``retrieval-scale.json``, ``retrieval-scale.md`` and ``retrieval-scale.png`` under --out.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ortgen.bench.report import cpu_name
from ortgen.errors import OrtgenError

log = logging.getLogger(__name__)

PASSAGES_PER_DOCUMENT = 10
ZIPF_EXPONENT = 1.07
BLOCK = 1000  # passages drawn together (so a passage does not depend on the batches asked for)


@dataclass
class ScaleOptions:
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    queries: int = 200
    base_vectors: int = 2000
    milvus_sizes: tuple[int, ...] = (10_000,)
    milvus_queries: int = 20
    reference: bool = True
    threads: int = 0
    workdir: Path = Path("bench-work/retrieval-scale")
    out: Path = Path("bench-results/retrieval-scale")
    embedder: Path | None = None
    seed: int = 0


# -- synthetic corpus ------------------------------------------------------------------------------

def vocabulary(seed: int = 0, size: int = 40_000) -> list[str]:
    """Words ranked for a Zipf draw: the evaluation corpus's words by frequency, then identifiers."""
    from ortgen.rag.eval_corpus import build_corpus

    counts: dict[str, int] = {}
    for doc in build_corpus()[0]:
        for word in re.findall(r"[A-Za-z][A-Za-z0-9-]*", doc["text"].lower()):
            counts[word] = counts.get(word, 0) + 1
    words = sorted(counts, key=lambda w: (-counts[w], w))
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    seen = set(words)
    while len(words) < size:
        word = "".join(rng.choice(letters) for _ in range(rng.randint(2, 4))) + str(rng.randint(1, 99))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


def zipf_probabilities(n: int) -> np.ndarray:
    weights = 1.0 / np.arange(2.7, n + 2.7) ** ZIPF_EXPONENT
    return weights / weights.sum()


def synthetic_passages(start: int, count: int, words: list[str], seed: int = 0) -> Iterator[tuple[str, int, str, str]]:
    """(doc_id, number, title, text) of passages ``start`` .. ``start + count - 1``; passage i is the same
    whatever range it is asked in (drawn in fixed blocks of BLOCK passages)."""
    probabilities = zipf_probabilities(len(words))
    for block in range(start // BLOCK, (start + count + BLOCK - 1) // BLOCK):
        rng = np.random.default_rng([seed, block])
        lengths = rng.integers(60, 121, size=BLOCK)
        draws = rng.choice(len(words), size=int(lengths.sum()), p=probabilities)
        ends = np.cumsum(lengths)
        for i in range(max(start, block * BLOCK), min(start + count, (block + 1) * BLOCK)):
            local = i - block * BLOCK
            chosen = draws[ends[local] - lengths[local]:ends[local]]
            doc = i // PASSAGES_PER_DOCUMENT
            text = " ".join(words[j] for j in chosen)
            yield f"syn-{doc}", i % PASSAGES_PER_DOCUMENT, f"Synthetic abstract {doc}", text.capitalize() + "."


def real_sentences(count: int, seed: int = 0) -> list[str]:
    """``count`` passages recombined from the evaluation corpus's sentences (text the embedder reads)."""
    from ortgen.rag.eval_corpus import build_corpus

    sentences = [s for d in build_corpus()[0] for s in re.split(r"(?<=[.!?])\s+", d["text"]) if len(s) > 20]
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, rng.randint(2, 4))) for _ in range(count)]


def synthetic_vectors(count: int, base: np.ndarray, seed) -> np.ndarray:
    """``count`` unit vectors around the real ones in ``base`` (module docstring)."""
    rng = np.random.default_rng(seed)
    i = rng.integers(0, len(base), count)
    j = rng.integers(0, len(base), count)
    lam = rng.uniform(0, 0.7, (count, 1)).astype(np.float32)
    mixed = base[i] + lam * base[j]
    mixed /= np.linalg.norm(mixed, axis=1, keepdims=True)
    noise = rng.standard_normal(mixed.shape).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    out = mixed + 0.5 * noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


@dataclass
class SyntheticCorpus:
    """What a test or the benchmark needs to build and query a synthetic index."""

    words: list[str]
    base: np.ndarray  # real embeddings the vectors are synthesised around
    seed: int = 0

    def rows(self, start: int, count: int, analyzer) -> list:
        first, last = start // BLOCK, (start + count + BLOCK - 1) // BLOCK
        blocks = np.concatenate([synthetic_vectors(BLOCK, self.base, [self.seed, 7, b]) for b in range(first, last)])
        vectors = blocks[start - first * BLOCK:start - first * BLOCK + count]
        rows = []
        for (doc_id, number, title, text), vector in zip(synthetic_passages(start, count, self.words, self.seed),
                                                          vectors):
            index_text = f"{title}\n{text}"
            rows.append(_row(doc_id, number, title, text, vector, analyzer.terms(index_text), index_text))
        return rows


def _row(doc_id: str, number: int, title: str, text: str, vector: np.ndarray, terms: list[str], content: str):
    from ortgen.rag.store import Row

    return Row(f"{doc_id}#{number}", doc_id, number, title, "synthetic.jsonl", text, vector, terms, content)


def create_index(directory: Path, embedder, *, uri: str | None = None):
    """An empty index at ``directory`` for ``embedder`` (local store, or Milvus at ``uri``); returns the
    writable store (the benchmark and tests insert rows with synthetic vectors through it)."""
    from ortgen.rag.bm25 import ANALYZER_NAME
    from ortgen.rag.index import open_store
    from ortgen.rag.index_manifest import DEFAULT_COLLECTION, LOCAL_STORE, IndexManifest

    m = embedder.manifest
    manifest = IndexManifest(
        store="milvus" if uri else "local", uri=uri or LOCAL_STORE, collection=DEFAULT_COLLECTION,
        embedder={"path": str(Path(embedder.directory).resolve()), "checksum": m.checksum,
                  "name": m.source.get("name", "?"), "dims": m.dims, "max_seq_length": m.max_seq_length},
        sparse="client", bm25={"k1": 1.2, "b": 0.75, "avgdl": 90.0, "analyzer": ANALYZER_NAME},
        chunking={"max_tokens": 128, "overlap_tokens": 32}, created="synthetic")
    directory.mkdir(parents=True, exist_ok=True)
    store = open_store(manifest, directory, create=True, write=True)
    manifest.write(directory)
    return store


# -- measurements ---------------------------------------------------------------------------------

def exact_neighbours(store_vectors: np.ndarray, rows: np.ndarray, queries: np.ndarray, k: int) -> list[set[int]]:
    """The exact top-``k`` rows of each query by inner product (chunks of the stored vectors)."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(rows), 100_000):
        scores = queries @ store_vectors[start:start + 100_000].T
        top = np.argpartition(-scores, min(k, scores.shape[1] - 1), axis=1)[:, :k]
        cand_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, 1)], 1)
        cand_rows = np.concatenate([best_rows, rows[start:start + 100_000][top]], 1)
        order = np.argsort(-cand_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(cand_scores, order, 1)
        best_rows = np.take_along_axis(cand_rows, order, 1)
    return [set(r.tolist()) for r in best_rows]


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"p50_ms": round(statistics.median(ordered) * 1000, 2), "p99_ms": round(p99 * 1000, 2)}


def _queries(corpus: SyntheticCorpus, size: int, count: int, seed: int) -> list[str]:
    """Questions: 4-8 words of a random stored passage (so BM25 matches), as a user would type them."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        start = rng.randrange(size)
        _, _, _, text = next(synthetic_passages(start, 1, corpus.words, corpus.seed))
        words = text.rstrip(".").split()
        n = rng.randint(4, 8)
        at = rng.randrange(max(1, len(words) - n))
        out.append("What about " + " ".join(words[at:at + n]) + "?")
    return out


def _chunk_index(chunk_id: str) -> int:
    """The synthetic passage number of ``syn-{doc}#{number}``."""
    doc, number = chunk_id[4:].split("#")
    return int(doc) * PASSAGES_PER_DOCUMENT + int(number)


def build(directory: Path, size: int, corpus: SyntheticCorpus, embedder, uri: str | None = None,
          batch: int = 10_000, progress: bool = True) -> tuple[dict[str, Any], np.ndarray]:
    """Index ``size`` synthetic passages; returns (timings, the vectors in passage order)."""
    from ortgen.progress import Progress
    from ortgen.rag.bm25 import Analyzer
    from ortgen.rag.local_store import disk_bytes

    shutil.rmtree(directory, ignore_errors=True)
    store = create_index(directory, embedder, uri=uri)
    analyzer = Analyzer()
    vectors = np.zeros((size, corpus.base.shape[1]), dtype=np.float32)
    generate_s = insert_s = 0.0
    bar = Progress(f"indexing {size} passages", size, enabled=progress)
    try:
        for start in range(0, size, batch):
            began = time.perf_counter()
            rows = corpus.rows(start, min(batch, size - start), analyzer)
            generate_s += time.perf_counter() - began
            for i, row in enumerate(rows):
                vectors[start + i] = row.dense
            began = time.perf_counter()
            store.insert(rows)
            insert_s += time.perf_counter() - began
            bar.update(start + len(rows))
        began = time.perf_counter()
        store.flush()
        flush_s = time.perf_counter() - began
    finally:
        store.close()
        bar.close()
    where = directory / "store" if uri is None else Path(uri if Path(uri).is_absolute() else directory / uri)
    size_bytes = disk_bytes(where) if where.is_dir() else (where.stat().st_size if where.exists() else 0)
    if where.is_dir() and uri is not None:
        size_bytes = sum(f.stat().st_size for f in where.rglob("*") if f.is_file())
    return {"passages": size, "generate_and_analyse_s": round(generate_s, 1), "insert_s": round(insert_s, 1),
            "flush_s": round(flush_s, 1), "passages_per_s": round(size / (insert_s + flush_s), 1),
            "bytes_on_disk": size_bytes}, vectors


def _dense_recall(index, texts: list[str], vectors: np.ndarray, embedder, k: int = 10) -> dict[str, Any]:
    """recall@k of dense search against exact search over ``vectors`` (unfiltered and filtered)."""
    queries = embedder.encode(texts)
    rows = np.arange(len(vectors))
    exact = exact_neighbours(vectors, rows, queries, k)
    found = [{_chunk_index(p.chunk_id) for p in index.search(t, k=k, mode="dense")} for t in texts]
    recall = float(np.mean([len(f & e) / k for f, e in zip(found, exact)]))
    rng = random.Random(7)
    documents = len(vectors) // PASSAGES_PER_DOCUMENT
    checks = {"one document": [], "20 documents": [], "number < 5 (half the passages)": []}
    for q, text in zip(queries[:40], texts[:40]):
        doc = rng.randrange(documents)
        docs = [rng.randrange(documents) for _ in range(20)]
        cases = {"one document": ({"doc_ids": [f"syn-{doc}"]}, rows[doc * 10:(doc + 1) * 10]),
                 "20 documents": ({"doc_ids": [f"syn-{d}" for d in docs]},
                                  np.concatenate([rows[d * 10:(d + 1) * 10] for d in sorted(set(docs))])),
                 "number < 5 (half the passages)": ({"expr": "number < 5"}, rows[(rows % 10) < 5])}
        for name, (filters, allowed) in cases.items():
            truth = exact_neighbours(vectors[allowed], allowed, q[None, :], min(k, len(allowed)))[0]
            got = {_chunk_index(p.chunk_id) for p in index.search(text, k=k, filters=filters, mode="dense")}
            checks[name].append(len(got & truth) / len(truth))
    return {"recall_at_10": round(recall, 4),
            "filtered_recall_at_10": {name: round(float(np.mean(v)), 4) for name, v in checks.items()}}


def _bm25_reference(index, texts: list[str], corpus: SyntheticCorpus, size: int) -> dict[str, Any]:
    """Our BM25 top 10 against bm25s's over the same tokens: same passages, scores within 1e-5."""
    import bm25s
    from bm25s.tokenization import Tokenized

    from ortgen.rag.bm25 import Analyzer

    analyzer = Analyzer()
    vocab: dict[str, int] = {}
    ids: list[list[int]] = []
    for start in range(0, size, 20_000):
        for doc_id, number, title, text in synthetic_passages(start, min(20_000, size - start), corpus.words,
                                                              corpus.seed):
            ids.append([vocab.setdefault(t, len(vocab)) for t in analyzer.terms(f"{title}\n{text}")])
    reference = bm25s.BM25(method="lucene", k1=1.2, b=0.75)
    reference.index(Tokenized(ids=ids, vocab=vocab), show_progress=False)
    del ids
    worst, same = 0.0, 0
    for text in texts:
        terms = [t for t in dict.fromkeys(analyzer.terms(text)) if t in vocab]
        ours = index.search(text, k=10, mode="bm25")
        if not terms:
            same += not ours
            continue
        scores = reference.get_scores([vocab[t] for t in terms])
        top = np.argsort(-scores, kind="stable")[:10]
        expected = [float(scores[i]) for i in top if scores[i] > 0]
        got = [p.score for p in ours]
        if len(got) != len(expected):
            worst = max(worst, float("inf"))
            continue
        worst = max([worst] + [abs(a - b) for a, b in zip(got, expected)])
        boundary = expected[-1] if expected else 0.0  # passages tied at the cut may be either
        mine = {_chunk_index(p.chunk_id) for p in ours if p.score > boundary + 1e-5}
        theirs = {int(i) for i in top if scores[i] > boundary + 1e-5}
        same += mine == theirs
    return {"queries": len(texts), "same_top10": same, "max_score_difference": worst}


def _latencies(index, texts: list[str], mode: str) -> dict[str, float]:
    for text in texts[:3]:  # warm-up
        index.search(text, k=10, mode=mode)
    seconds = []
    for text in texts:
        started = time.perf_counter()
        index.search(text, k=10, mode=mode)
        seconds.append(time.perf_counter() - started)
    return _percentiles(seconds)


def measure_size(size: int, corpus: SyntheticCorpus, embedder, opts: ScaleOptions, *, uri: str | None = None,
                 queries: int | None = None) -> dict[str, Any]:
    """Build one index of ``size`` passages and measure it (module docstring)."""
    from ortgen.rag.index import Index

    queries = queries or opts.queries
    name = "milvus-lite" if uri else "local"
    directory = opts.workdir / f"{name}-{size}"
    log.info("%s store, %d passages: building", name, size)
    built, vectors = build(directory, size, corpus, embedder, uri=uri, batch=10_000 if uri is None else 2_000)
    texts = _queries(corpus, size, queries, opts.seed + size)
    from ortgen.rag.eval_corpus import build_corpus

    dense_texts = ([q.question for q in build_corpus()[1]] + real_sentences(queries, seed=99))[:queries]
    result: dict[str, Any] = {"store": name, "passages": size, "build": built}
    with Index.open(directory, embedder=embedder) as index:
        log.info("%s store, %d passages: latency", name, size)
        result["latency"] = {mode: _latencies(index, texts, mode) for mode in ("dense", "bm25", "hybrid")}
        log.info("%s store, %d passages: dense recall", name, size)
        result["dense"] = _dense_recall(index, dense_texts, vectors, embedder)
        del vectors
        if opts.reference:
            log.info("%s store, %d passages: BM25 against bm25s", name, size)
            try:
                result["bm25_vs_bm25s"] = _bm25_reference(index, texts, corpus, size)
            except MemoryError as exc:
                result["bm25_vs_bm25s"] = {"skipped": f"bm25s ran out of memory: {exc}"}
    shutil.rmtree(directory, ignore_errors=True)
    return result


# -- the run ----------------------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB. Command: `{result['command']}`. "
             f"Synthetic passages and vectors ({result['base_vectors']} real embeddings by {result['embedder']}; "
             "method in ortgen/bench/retrieval_scale.py); questions embedded by the real embedder; "
             f"{result['queries']} questions per size; latency through Index.search, k = 10, one thread of "
             "questions.", "",
             "| store | passages | build passages/s | size on disk | dense p50 / p99 ms | BM25 p50 / p99 ms | "
             "hybrid p50 / p99 ms | dense recall@10 vs exact | filtered recall@10 (1 doc / 20 docs / half) | "
             "BM25 = bm25s (top 10, max score diff) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in result["runs"]:
        lat = r["latency"]
        f = r["dense"]["filtered_recall_at_10"]
        ref = r.get("bm25_vs_bm25s", {})
        ref_text = (f"{ref['same_top10']}/{ref['queries']}, {ref['max_score_difference']:.1e}" if "queries" in ref
                    else ref.get("skipped", "-"))
        lines.append(f"| {r['store']} | {r['passages']:,} | {r['build']['passages_per_s']:,} | "
                     f"{r['build']['bytes_on_disk'] / 1e9:.2f} GB | "
                     + " | ".join(f"{lat[m]['p50_ms']} / {lat[m]['p99_ms']}" for m in ("dense", "bm25", "hybrid"))
                     + f" | {r['dense']['recall_at_10']:.4f} | "
                     + " / ".join(f"{v:.3f}" for v in f.values()) + f" | {ref_text} |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (latency, recall) = plt.subplots(1, 2, figsize=(11, 4))
    local = [r for r in result["runs"] if r["store"] == "local"]
    sizes = [r["passages"] for r in local]
    for mode, color in (("dense", "tab:blue"), ("bm25", "tab:orange"), ("hybrid", "tab:green")):
        latency.plot(sizes, [r["latency"][mode]["p50_ms"] for r in local], "o-", color=color, label=f"{mode} p50")
        latency.plot(sizes, [r["latency"][mode]["p99_ms"] for r in local], "o--", color=color, alpha=0.5,
                     label=f"{mode} p99")
    for r in result["runs"]:
        if r["store"] != "local":
            latency.plot([r["passages"]], [r["latency"]["hybrid"]["p50_ms"]], "x", color="black", markersize=9,
                         label=f"Milvus Lite hybrid p50 ({r['passages']:,})")
    latency.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    latency.set_xscale("log")
    latency.set_yscale("log")
    latency.set_xlabel("passages")
    latency.set_ylabel("ms per question")
    latency.set_title("query latency (local store)")
    latency.legend(fontsize=7)
    recall.plot(sizes, [r["dense"]["recall_at_10"] for r in local], "o-", label="dense, unfiltered")
    for name in local[0]["dense"]["filtered_recall_at_10"] if local else []:
        recall.plot(sizes, [r["dense"]["filtered_recall_at_10"][name] for r in local], "o--", label=name)
    recall.axhline(0.98, color="grey", linewidth=0.8, linestyle=":")
    recall.set_xscale("log")
    recall.set_ylim(0.9, 1.005)
    recall.set_xlabel("passages")
    recall.set_ylabel("recall@10 vs exact")
    recall.set_title("dense search recall")
    recall.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_scale_bench(opts: ScaleOptions, command: str = "ortgen rag bench-scale") -> str:
    from ortgen.rag.embedder import Embedder

    if opts.embedder is None:
        raise OrtgenError("--embedder DIR is required (an export of all-MiniLM-L6-v2: ortgen export-embedder)")
    embedder = Embedder.open(opts.embedder, threads=opts.threads)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    log.info("embedding %d real passages for the vector distribution", opts.base_vectors)
    corpus = SyntheticCorpus(vocabulary(opts.seed), embedder.encode(real_sentences(opts.base_vectors, opts.seed)),
                             opts.seed)
    runs = []
    for size in opts.sizes:
        runs.append(measure_size(size, corpus, embedder, opts))
        log.info("%s", json.dumps(runs[-1]))
    for size in opts.milvus_sizes:
        runs.append(measure_size(size, corpus, embedder, opts, uri="milvus.db", queries=opts.milvus_queries))
        log.info("%s", json.dumps(runs[-1]))
    memory_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    result = {"command": command, "machine": {"cpu": cpu_name("?"), "cores": os.cpu_count(), "memory_gb": memory_gb},
              "embedder": embedder.manifest.source.get("name", "?"), "base_vectors": opts.base_vectors,
              "queries": opts.queries, "runs": runs}
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "retrieval-scale.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (opts.out / "retrieval-scale.md").write_text(text, encoding="utf-8")
    plot(result, opts.out / "retrieval-scale.png")
    return text
