"""What structured output costs, measured in one process on one machine.

1. Mask time per token of the grammar engines on a package's vocabulary: llguidance (what ortgen
   uses) and xgrammar (when installed: it needs torch, which ortgen's runtime must not), walking the
   same random token paths through the same JSON schemas.
2. Throughput: workload C1 (16 requests x beam 5, 64 -> 64) with every request constrained to a
   JSON schema, against the same requests unconstrained, alternating, medians; the scheduler's mask
   time per step.

    python -m ortgen.bench.structured PACKAGE --out bench-results/structured [--repeats 2]

The package needs a vocabulary that can spell JSON (BioGPT's real one can; the demo one cannot):
``ortgen make-random-model --preset biogpt-base --tokenizer ../shared/data/biogpt-tokenizer DIR``, then
``ortgen export DIR -o PACKAGE``.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from ortgen.bench.throughput import THROUGHPUT
from ortgen.runtime.constraint import Constraint
from ortgen.runtime.generator import Generator

log = logging.getLogger(__name__)

# a retrieval-QA answer: the verdict, a short free-text answer, the passages it cites
QA_SCHEMA = {"type": "object", "properties": {
    "verdict": {"enum": ["yes", "no", "maybe"]},
    "answer": {"type": "string", "maxLength": 200},
    "citations": {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 10}, "maxItems": 5},
}, "required": ["verdict", "answer", "citations"], "additionalProperties": False}
WALK_SCHEMAS = [QA_SCHEMA, {"type": "object"},
                {"type": "array", "items": {"type": "object", "properties": {"dose": {"type": "number"},
                                                                             "drug": {"type": "string"}}}}]


def _allowed(bits: np.ndarray, vocab: int) -> np.ndarray:
    return np.flatnonzero(np.unpackbits(bits.view(np.uint8), bitorder="little")[:vocab])


def mask_times(generator: Generator, steps: int = 64, walks: int = 4, seed: int = 0) -> dict[str, Any]:
    """Per engine: median and p99 microseconds per mask over random walks through WALK_SCHEMAS."""
    assert generator.grammar is not None
    vocabulary = generator.grammar.vocabulary
    llg = __import__("llguidance")
    from ortgen.runtime.grammar import grammar_text

    rng = np.random.default_rng(seed)
    paths: list[tuple[dict, list[int]]] = []
    ours: list[float] = []
    for schema in WALK_SCHEMAS:
        text = grammar_text(Constraint.json_schema(schema), vocabulary)
        for _ in range(walks):
            matcher = llg.LLMatcher(vocabulary.ll, text, log_level=0)
            bits = np.zeros(vocabulary.words, dtype=np.int32)
            path: list[int] = []
            for _ in range(steps):
                started = time.perf_counter()
                matcher.unsafe_compute_mask_ptr(bits.ctypes.data, bits.nbytes)
                ours.append(time.perf_counter() - started)
                allowed = [t for t in _allowed(bits, vocabulary.vocab_size) if t not in vocabulary.eos_token_ids]
                if not allowed or matcher.is_stopped():
                    break
                token = int(rng.choice(allowed))
                matcher.consume_token(token)
                path.append(token)
            paths.append((schema, path))
    out: dict[str, Any] = {"vocab_size": vocabulary.vocab_size, "llguidance": _summary(ours)}
    out["xgrammar"] = _xgrammar_times(vocabulary, paths)
    return out


def _summary(seconds: list[float]) -> dict[str, float]:
    us = np.array(seconds) * 1e6
    return {"masks": int(us.size), "median_us": round(float(np.median(us)), 1),
            "p99_us": round(float(np.percentile(us, 99)), 1), "mean_us": round(float(us.mean()), 1)}


def _xgrammar_times(vocabulary, paths: list[tuple[dict, list[int]]]) -> dict[str, Any]:
    """The same walks through xgrammar (same token bytes), or why it was not measured."""
    try:
        import torch  # noqa: F401 - xgrammar's bitmasks are torch tensors
        import xgrammar as xgr
    except ImportError as exc:
        return {"skipped": f"xgrammar not installed ({exc.name}); it needs torch: pip install xgrammar"}
    tokens = [vocabulary.ll.decode_bytes([i]) for i in range(vocabulary.vocab_size)]
    info = xgr.TokenizerInfo(tokens, vocab_type=xgr.VocabType.RAW, vocab_size=vocabulary.vocab_size,
                             stop_token_ids=vocabulary.eos_token_ids or None)
    compiler = xgr.GrammarCompiler(info)
    bitmask = xgr.allocate_token_bitmask(1, vocabulary.vocab_size)
    times: list[float] = []
    compile_seconds: list[float] = []
    for schema, path in paths:
        started = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=vocabulary.word_final_space,
                                                separators=None if vocabulary.word_final_space else (", ", ": "))
        compile_seconds.append(time.perf_counter() - started)
        matcher = xgr.GrammarMatcher(compiled)
        for token in path:
            started = time.perf_counter()
            matcher.fill_next_token_bitmask(bitmask)
            times.append(time.perf_counter() - started)
            if not matcher.accept_token(token):
                break
    return {**_summary(times), "compile_ms_median": round(1000 * statistics.median(compile_seconds), 2)}


# the same answer, its text at least 400 characters: no request can close its JSON within C1's 64 tokens,
# so both variants do exactly C1's work (64 tokens per beam) and every row is constrained at every step
C1_SCHEMA = {**QA_SCHEMA, "properties": {**QA_SCHEMA["properties"],
                                         "answer": {"type": "string", "minLength": 400, "maxLength": 2000}}}


def c1_cost(generator: Generator, repeats: int = 2, schema: dict[str, Any] = C1_SCHEMA) -> dict[str, Any]:
    """C1 unconstrained and JSON-constrained (the same 64 tokens per beam), alternating; medians."""
    workload = THROUGHPUT["C1"]
    special = generator.manifest.special_tokens
    prompts = workload.prompts(generator.manifest.architecture.vocab_size,
                               generator.manifest.tokenizer.prefix_ids[0] if generator.manifest.tokenizer and
                               generator.manifest.tokenizer.prefix_ids else None)
    base = workload.options()  # beam 5, exactly 64 new tokens
    runs: dict[str, list[dict[str, float]]] = {"free": [], "json": []}
    generator.generate(input_ids=prompts[:1], num_beams=workload.num_beams, max_new_tokens=4)  # warm up
    for _ in range(repeats):
        for name in ("free", "json"):
            options = dict(base, constraint=Constraint.json_schema(schema)) if name == "json" else dict(base)
            stats = generator.scheduler.stats
            before = (stats.steps, stats.grammar_masks, stats.grammar_seconds, stats.step_seconds)
            started = time.perf_counter()
            handles = [generator.submit(input_ids=p, **options) for p in prompts]
            outputs = [h.result() for h in handles]
            seconds = time.perf_counter() - started
            tokens = sum(len(s.token_ids) + (s.stop_reason == "eos") for o in outputs for s in o.sequences[:1])
            steps = stats.steps - before[0]
            begun = sum(o.sequences[0].text.replace(" ", "").startswith('{"verdict":') for o in outputs)
            valid = begun if name == "json" else 0
            runs[name].append({"seconds": seconds, "best_sequence_tokens": tokens, "steps": steps,
                               "step_ms": 1000 * seconds / max(steps, 1),
                               "engine_ms_per_step": 1000 * (stats.step_seconds - before[3]) / max(steps, 1),
                               "masks": stats.grammar_masks - before[1],
                               "mask_ms_per_step": 1000 * (stats.grammar_seconds - before[2]) / max(steps, 1),
                               "valid_json": valid})
            log.info("C1 %s: %.1fs, %d steps", name, seconds, steps)
    summary = {name: {key: round(statistics.median(r[key] for r in rows), 3) for key in rows[0]}
               for name, rows in runs.items()}
    ratio = summary["json"]["seconds"] / summary["free"]["seconds"]
    return {"workload": workload.description, "schema": schema, "repeats": repeats, "runs": runs,
            "median": summary, "time_ratio_json_over_free": round(ratio, 3),
            "target": "JSON-constrained C1 <= 1.10 x the free one's time", "met": ratio <= 1.10,
            "eos_token_id": special.eos_token_id}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ortgen.bench.structured", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, help="a package whose vocabulary can spell JSON")
    parser.add_argument("--out", type=Path, default=Path("bench-work/structured"),
                        help="where bench.json and bench.md go (default: bench-work/structured)")
    parser.add_argument("--repeats", type=int, default=2, help="C1 runs per variant; medians (default: 2)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: all cores)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with Generator.load(args.package, threads=args.threads) as generator:
        result = {"package": str(args.package), "masks": mask_times(generator), "c1": c1_cost(generator, args.repeats)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "bench.md").write_text("\n".join(markdown(result)) + "\n", encoding="utf-8")
    print("\n".join(markdown(result)))
    return 0


def markdown(result: dict[str, Any]) -> list[str]:
    masks, c1 = result["masks"], result["c1"]
    lines = [f"# Structured output cost ({result['package']})", "",
             f"Mask time per token, vocabulary of {masks['vocab_size']} tokens, random walks through "
             f"{len(WALK_SCHEMAS)} JSON schemas:", "", "| engine | masks | median µs | p99 µs |", "|---|---|---|---|"]
    for engine in ("llguidance", "xgrammar"):
        row = masks[engine]
        lines.append(f"| {engine} | " + (f"{row['masks']} | {row['median_us']} | {row['p99_us']} |" if "masks" in row
                                        else f"- | {row['skipped']} | - |"))
    free, constrained = c1["median"]["free"], c1["median"]["json"]
    lines += ["", f"C1 ({c1['workload']}), every request JSON-constrained vs free, medians of {c1['repeats']}:", "",
              "| requests | s | steps | ms/step | engine ms/step | mask ms/step | JSON begun |", "|---|---|---|---|---|---|---|",
              f"| free | {free['seconds']} | {free['steps']} | {free['step_ms']} | {free['engine_ms_per_step']} | - | - |",
              f"| JSON | {constrained['seconds']} | {constrained['steps']} | {constrained['step_ms']} | "
              f"{constrained['engine_ms_per_step']} | {constrained['mask_ms_per_step']} | "
              f"{constrained['valid_json']}/16 |", "",
              f"Time, JSON over free: **{c1['time_ratio_json_over_free']}x** (target <= 1.10: "
              f"{'met' if c1['met'] else 'missed'}). Both do C1's exact work (64 tokens per beam): the schema's answer "
              "needs 400+ characters, so every row is constrained at every step."]
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
