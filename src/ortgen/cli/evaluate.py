"""``ortgen eval PACKAGE... DATA``: PubMedQA-format accuracy, macro-F1 and paired tests."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ortgen.cli._args import positive_int
from ortgen.cli.generate import add_generation_arguments, generation_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="accuracy and macro-F1 of packages on PubMedQA-format questions (gold, retrieved or no contexts)",
        description=(
            "Answer every question of a PubMedQA-format file (PubMedQA's ori_pqal.json / test-set layout, or JSONL "
            "with the same fields) with each package, and score the yes / no / maybe verdicts: accuracy (95% "
            "interval), macro-F1, per-label F1, confusion matrix; with several packages (e.g. float32, int8 and int4 "
            "of one model), McNemar's exact paired test of each against the first. Contexts: the item's gold "
            "CONTEXTS (--mode gold, PubMedQA's reasoning-required setting), passages retrieved from an index "
            "(--mode index --index IDX: retrieval QA end to end, with retrieval recall when the index holds the "
            "items' contexts under their ids, e.g. `ortgen rag index DATA.json`), or none (--mode none). Verdicts: "
            "QA fine-tunes generate their answer (the package's generation defaults) and it is parsed; other "
            "packages are scored by the log-likelihood of each answer (--verdict). Requests run concurrently "
            "through the step engine. Writes OUT/items-<package>.jsonl as items finish (prompt, answer, verdict, "
            "gold, retrieved ids) and OUT/report.{json,md,png}; run the same command again to resume a run that "
            "was stopped."),
        epilog="example: ortgen eval biogpt-qa biogpt-qa-int8 ori_pqal.json --mode gold --out eval-pqal",
    )
    from ortgen.evaluate.runner import MODES, VERDICTS
    from ortgen.rag.retrieval import SEARCH_MODES

    p.add_argument("packages", metavar="PACKAGE", nargs="+", type=Path,
                   help="package directories (ortgen export); several are compared item by item")
    p.add_argument("data", metavar="DATA", type=Path, help="PubMedQA-format questions: .json (PubMedQA's layout, "
                   "id -> {QUESTION, CONTEXTS, LONG_ANSWER, final_decision}) or .jsonl (one item a line, with \"id\")")
    p.add_argument("--mode", choices=MODES, default="gold",
                   help="where contexts come from: the items' gold CONTEXTS, an index, or none (default: gold)")
    p.add_argument("--index", type=Path, help="--mode index: an index directory made by ortgen rag index (default: none)")
    p.add_argument("--embedder", type=Path, help="--mode index: the embedder directory (default: the one the "
                                                  "index records)")
    p.add_argument("-k", type=positive_int, default=3, help="--mode index: passages per question (default: 3)")
    p.add_argument("--search-mode", choices=SEARCH_MODES, default="hybrid",
                   help="--mode index: dense, bm25 or hybrid search (default: hybrid)")
    p.add_argument("--verdict", choices=VERDICTS, default="auto",
                   help="generate: generate the answer and parse yes / no / maybe; score: the most likely of "
                        "'<answer prefix> yes / no / maybe' after the prompt; auto: generate for QA fine-tunes "
                        "(their prompt format parses answers), score otherwise (default: auto)")
    p.add_argument("--concurrency", type=positive_int, default=16,
                   help="items in flight at once, batched by the scheduler (default: 16)")
    p.add_argument("--out", type=Path, help="output directory (default: eval-<DATA name>-<mode>)")
    p.add_argument("--restart", action="store_true",
                   help="discard the answers already in --out and start over (default: resume)")
    p.add_argument("--threads", type=int, help="ONNX Runtime threads (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (default: a table)")
    add_generation_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ortgen.evaluate.runner import EvalConfig
    from ortgen.evaluate.session import Evaluation

    config = EvalConfig(mode=args.mode, verdict=args.verdict, k=args.k, search_mode=args.search_mode,
                        concurrency=args.concurrency, options=generation_options(args))
    out = args.out or Path(f"eval-{args.data.stem}-{args.mode}")
    evaluation = Evaluation(args.packages, args.data, out, config, index=args.index, embedder=args.embedder,
                            threads=args.threads)
    report = evaluation.run(progress=not args.no_progress, restart=args.restart)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        from ortgen.evaluate.report import markdown

        print(markdown(report), end="")
        print(f"per-item answers and the report: {out}/")
    return 0
