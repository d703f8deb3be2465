"""The validation report: what was compared, what matched, and where and why not.

Three statuses for a generation case: ``match``; ``explained`` (a known semantic
difference between ONNX Runtime's operators and transformers, named and justified, see
docs/ort-vs-transformers.md); ``mismatch`` (unexplained: validation fails).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

MATCH, EXPLAINED, MISMATCH = "match", "explained", "mismatch"
PASS, FAIL, SKIPPED = "pass", "fail", "skipped"


@dataclass
class OutputCheck:
    """One decoder output compared with transformers: name, then shape, then values."""

    name: str
    expected_shape: list[int]
    actual_shape: list[int] | None
    max_abs_diff: float | None
    tolerance: float
    status: str  # "ok", "missing", "shape", "values"


@dataclass
class DecoderCase:
    name: str
    description: str
    outputs: list[OutputCheck]

    @property
    def ok(self) -> bool:
        return all(o.status == "ok" for o in self.outputs)


@dataclass
class Divergence:
    """Where an ortgen sequence first differs from transformers', judged by transformers' model."""

    step: int  # index of the first differing new token (0 = first generated token)
    ortgen_token: int | None  # None: ortgen's sequence ended (EOS) there
    transformers_token: int | None
    ortgen_logprob: float | None  # log-probability of each token after the common prefix
    transformers_logprob: float | None
    gap: float | None  # transformers_logprob - ortgen_logprob
    ortgen_text: str | None = None
    transformers_text: str | None = None


@dataclass
class SequenceComparison:
    prompt_index: int
    rank: int
    status: str
    ortgen_tokens: list[int]
    transformers_tokens: list[int]
    ortgen_finished: bool
    transformers_finished: bool
    ortgen_score: float | None = None
    transformers_score: float | None = None
    divergence: Divergence | None = None


@dataclass
class GenerationCase:
    name: str
    settings: dict[str, Any]
    graph: str
    batch: int
    status: str
    explanation: str | None
    sequences: list[SequenceComparison]
    max_score_diff: float | None
    ortgen_seconds: float
    transformers_seconds: float
    prompt_ids: list[list[int]] = field(default_factory=list)  # the batch, unpadded
    backend: str = "graph"  # "graph" (in-graph operator) or "engine" (step engine)

    @property
    def eos_steps(self) -> list[int]:
        """Lengths of the transformers sequences that ended with EOS (for the summary)."""
        return sorted({len(s.transformers_tokens) for s in self.sequences if s.transformers_finished})


@dataclass
class SamplingCheck:
    name: str
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class QuantizationQuality:
    """A float16 or quantized package measured against the float32 reference (see quantization_check)."""

    weights: str
    prompts: int
    steps: int  # teacher-forced greedy decisions compared
    greedy_agreement: float
    same_greedy_output: float  # share of prompts with an identical free-running greedy continuation
    same_best_beam: float  # share of prompts whose best beam (beam search, beam_width beams) is identical
    beam_width: int
    max_abs_logit_error: float
    mean_abs_logit_error: float
    relative_logit_error: float
    tolerance: dict[str, float] = field(default_factory=dict)
    status: str = PASS
    problems: list[str] = field(default_factory=list)


@dataclass
class Report:
    package: str
    reference: str
    versions: dict[str, str]
    level: str
    files: list[str]  # problems found by checksum verification (empty: intact)
    decoder: list[DecoderCase] = field(default_factory=list)
    generation: list[GenerationCase] = field(default_factory=list)
    sampling: list[SamplingCheck] = field(default_factory=list)
    quantization: QuantizationQuality | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "decoder_failed": sum(not c.ok for c in self.decoder),
            MATCH: sum(c.status == MATCH for c in self.generation),
            EXPLAINED: sum(c.status == EXPLAINED for c in self.generation),
            MISMATCH: sum(c.status == MISMATCH for c in self.generation),
            "sampling_failed": sum(c.status == FAIL for c in self.sampling),
            "quantization_failed": int(self.quantization is not None and self.quantization.status == FAIL),
        }

    @property
    def ok(self) -> bool:
        c = self.counts
        return not (self.files or c["decoder_failed"] or c[MISMATCH] or c["sampling_failed"]
                    or c["quantization_failed"])

    def to_json(self) -> str:
        data = asdict(self)
        data["summary"] = {**self.counts, "ok": self.ok}
        return json.dumps(data, indent=2)


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _token_text(token: int | None, text: str | None) -> str:
    if token is None:
        return "(ended)"
    return f"{token} {text!r}" if text and text not in ("EOS", "(ended)") else (text or str(token))


def _divergence_text(d: Divergence | None) -> str:
    if d is None:
        return ""
    ours = _token_text(d.ortgen_token, d.ortgen_text)
    theirs = _token_text(d.transformers_token, d.transformers_text)
    text = f"step {d.step}: ortgen {ours} vs transformers {theirs}"
    if d.gap is not None:
        text += f" (logprob {d.ortgen_logprob:.3f} vs {d.transformers_logprob:.3f})"
    return text


def render(report: Report) -> str:
    """The terminal summary: one table per level, then the verdict."""
    lines = [f"validate {report.package} against {report.reference} ({report.level})"]
    lines += [f"note: {note}" for note in report.notes]
    if report.files:
        lines.append("files: " + "; ".join(report.files))
    if report.decoder:
        lines.append("")
        lines.append("decoder (names, shapes, values vs transformers' forward)")
        rows = []
        for case in report.decoder:
            worst = max((o for o in case.outputs if o.max_abs_diff is not None),
                        key=lambda o: o.max_abs_diff, default=None)
            problems = [f"{o.name}: {o.status}" for o in case.outputs if o.status != "ok"]
            rows.append([case.name, case.description,
                         f"{worst.max_abs_diff:.2e} ({worst.name})" if worst else "-",
                         "ok" if case.ok else "FAIL " + ", ".join(problems[:3])])
        lines += _table(rows, ["case", "inputs", "max |diff|", "result"])
    if report.generation:
        lines.append("")
        lines.append("generation (token ids vs transformers' generate())")
        rows, notes = [], []
        for case in report.generation:
            rows_total = len(case.sequences)
            same = sum(s.status == MATCH for s in case.sequences)
            first = next((s for s in case.sequences if s.divergence), None)
            detail = _divergence_text(first.divergence) if first else ""
            if case.explanation:
                if case.explanation not in notes:
                    notes.append(case.explanation)
                detail = f"[{notes.index(case.explanation) + 1}] {detail}"
            eos = ",".join(map(str, case.eos_steps)) or "-"
            graph = "engine" if case.backend == "engine" else case.graph.replace("generate_", "").replace(".onnx", "")
            rows.append([case.name, f"#{case.batch}", graph,
                         f"{same}/{rows_total}", eos, case.status.upper() if case.status == MISMATCH else case.status,
                         detail])
        lines += _table(rows, ["settings", "batch", "backend", "same", "EOS after", "result", "first divergence"])
        lines += [f"[{i + 1}] {note}" for i, note in enumerate(notes)]
    if report.sampling:
        lines.append("")
        lines.append("sampling (statistical)")
        lines += _table([[c.name, c.status, c.detail] for c in report.sampling], ["check", "result", "detail"])
    q = report.quantization
    if q is not None:
        lines.append("")
        lines.append(f"reduced precision ({q.weights} weights vs float32 transformers, {q.prompts} prompts, "
                     f"{q.steps} greedy steps)")
        tol = q.tolerance
        rows = [
            ["greedy agreement (teacher-forced)", f"{q.greedy_agreement:.3f}",
             f">= {tol['min_greedy_agreement']}" if tol else "-"],
            ["same greedy output", f"{q.same_greedy_output:.2f}", "-"],
            [f"same best beam ({q.beam_width} beams)", f"{q.same_best_beam:.2f}", "-"],
            ["relative logit error", f"{q.relative_logit_error:.4f}",
             f"<= {tol['max_relative_logit_error']}" if tol else "-"],
            ["mean |logit diff|", f"{q.mean_abs_logit_error:.4f}", "-"],
            ["max |logit diff|", f"{q.max_abs_logit_error:.4f}", "-"],
        ]
        lines += _table(rows, ["metric", "value", "tolerance"])
        lines.append(f"result: {q.status}" + (f" ({'; '.join(q.problems)})" if q.problems else ""))
    c = report.counts
    lines.append("")
    parts = []
    if report.generation:
        parts.append(f"generation {c[MATCH]} match, {c[EXPLAINED]} explained, {c[MISMATCH]} unexplained")
    if report.decoder:
        parts.append(f"decoder {len(report.decoder) - c['decoder_failed']}/{len(report.decoder)} ok")
    if report.sampling:
        parts.append(f"sampling {len(report.sampling) - c['sampling_failed']}/{len(report.sampling)} ok")
    if q is not None:
        parts.append(f"{q.weights} quality {q.status}")
    if report.files:
        parts.append("files damaged")
    lines.append(f"{'PASS' if report.ok else 'FAIL'}: {'; '.join(parts)}; {report.seconds:.1f}s")
    return "\n".join(lines)
