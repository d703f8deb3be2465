"""Answer every item of a PubMedQA-format set with one package, a line per item, resumable.

    item ──► contexts: the gold CONTEXTS (mode "gold", PubMedQA's reasoning-required setting),
             passages retrieved from an index (mode "index": retrieval QA end to end), or none
         ──► the QA prompt (the package's prompt format: what ``ortgen rag ask`` builds)
         ──► verdict, by one of:
               generate  the package generates its answer (its generation defaults, e.g. beam search),
                         parsed with its prompt format ("... the answer ... is yes."): QA fine-tunes
               score     the log-likelihood of "<answer prefix> yes" / "no" / "maybe" after the prompt,
                         the most likely one wins (what lm-evaluation-harness does for multiple choice;
                         any package, and no unparseable answers)
         ──► one JSON line: prompt, answer, verdict, gold, retrieved ids

Every request goes through the package's scheduler with ``concurrency`` in flight, so items batch
in shared decoder steps. Each line is flushed and fsynced as its item finishes, in item order; a
run killed at any moment loses only the items in flight (a torn last line is dropped on resume),
and a resumed run answers only what its file lacks.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ortgen.errors import GenerationSettingsError, OrtgenError
from ortgen.evaluate.pubmedqa import LABELS, EvalItem
from ortgen.progress import Progress
from ortgen.rag.answer import RagPipeline
from ortgen.runtime.generator import Generator
from ortgen.runtime.request import RequestHandle

log = logging.getLogger(__name__)

MODES = ("gold", "index", "none")
VERDICTS = ("auto", "generate", "score")
DEFAULT_ANSWER_PREFIX = "the answer to the question given the context is"
_LABEL_WORD = re.compile(r"\b(" + "|".join(LABELS) + r")\b")


@dataclass(frozen=True)
class EvalConfig:
    """How items are asked: where contexts come from, how the verdict is taken, how many at once."""

    mode: str = "gold"
    verdict: str = "auto"
    k: int = 3  # passages retrieved per question (mode "index")
    search_mode: str = "hybrid"
    concurrency: int = 16
    options: dict[str, Any] = field(default_factory=dict)  # generation settings for verdict "generate"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OrtgenError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.verdict not in VERDICTS:
            raise OrtgenError(f"verdict {self.verdict!r}: expected one of {', '.join(VERDICTS)}")
        if self.k < 1:
            raise OrtgenError(f"k must be at least 1, got {self.k}")
        if self.concurrency < 1:
            raise OrtgenError(f"concurrency must be at least 1, got {self.concurrency}")

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "verdict": self.verdict, "k": self.k, "search_mode": self.search_mode,
                "options": self.options}


class ItemLog:
    """The per-item JSONL of one package's run: rows already there are skipped, new rows appended durably."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            self._load()
        self._file = open(path, "a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0  # bytes up to the end of the last complete, parseable line
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                break
            self.rows[str(row["id"])] = row
            good += len(line)
        if good < len(data):
            log.warning("%s: dropping a torn last line (the run was stopped while writing it); that item is "
                        "answered again", self.path)
            with open(self.path, "r+b") as f:
                f.truncate(good)

    def append(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.rows[str(row["id"])] = row

    def close(self) -> None:
        self._file.close()


def parse_verdict(text: str, generator: Generator) -> str | None:
    """The yes / no / maybe in a generated answer: the prompt format's parser for QA fine-tunes, else
    the first of those words in the text."""
    fmt = generator.prompt_format
    if fmt is not None and fmt.answer_prefix:
        return fmt.parse_answer(text)
    match = _LABEL_WORD.search(text.lower())
    return match.group(1) if match else None


def verdict_method(config: EvalConfig, generator: Generator) -> str:
    """"generate" for packages whose prompt format parses answers (QA fine-tunes), else "score"."""
    if config.verdict != "auto":
        return config.verdict
    fmt = generator.prompt_format
    return "generate" if fmt is not None and fmt.answer_prefix and fmt.answers_questions else "score"


@dataclass
class _Job:
    """One item in flight: its prompt and the requests answering it."""

    item: EvalItem
    row: dict[str, Any]
    handles: dict[str, RequestHandle]  # label (score) or "answer" (generate) -> request


class PackageEvaluation:
    """Answers items with one package (its Generator) under one :class:`EvalConfig`."""

    def __init__(self, name: str, generator: Generator, config: EvalConfig, index: Any = None) -> None:
        if config.mode == "index" and index is None:
            raise OrtgenError("mode 'index' needs an index (--index DIR)")
        if generator.tokenizer is None:
            raise OrtgenError(f"{name}: evaluation builds text prompts and needs a package with a tokenizer")
        self.name = name
        self.generator = generator
        self.config = config
        self.index = index
        self.pipeline = RagPipeline(index, generator)
        self.method = verdict_method(config, generator)
        fmt = generator.prompt_format
        prefix = fmt.answer_prefix if fmt is not None and fmt.answer_prefix else DEFAULT_ANSWER_PREFIX
        # a QA fine-tune starts its answer after its learned tokens; other packages continue the context's text
        lead = "" if fmt is not None and fmt.answers_questions else " "
        self.continuations = {label: generator.tokenizer.encode_plain(f"{lead}{prefix} {label}") for label in LABELS}

    def _passages(self, item: EvalItem, row: dict[str, Any]) -> list[str]:
        if self.config.mode == "gold":
            return [c for c in item.contexts if c.strip()]
        if self.config.mode == "none":
            return []
        passages, _ = self.pipeline.retrieve(item.question, self.config.k, None, self.config.search_mode)
        row["retrieved"] = [p.doc_id for p in passages]
        row["gold_retrieved"] = item.item_id in row["retrieved"]
        return [p.text for p in passages]

    def _start(self, item: EvalItem) -> _Job:
        row: dict[str, Any] = {"id": item.item_id, "package": self.name, "mode": self.config.mode,
                               "verdict_by": self.method, "gold": item.gold}
        try:
            passages = self._passages(item, row)
            if self.method == "generate":
                prompt = self.pipeline.prompt(item.question, passages, self.config.options)
                handles = {"answer": self.generator.submit(input_ids=prompt.ids, **self.config.options)}
            else:
                longest = max(len(ids) for ids in self.continuations.values())
                prompt = self.pipeline.prompt(item.question, passages, {"max_new_tokens": longest})
                handles = {label: self.generator.submit(input_ids=prompt.ids + tail, max_new_tokens=0,
                                                        prompt_logprobs=0, num_beams=1, do_sample=False)
                           for label, tail in self.continuations.items()}
        except GenerationSettingsError as exc:  # e.g. a question too long for the model: a wrong answer, said why
            row.update(prompt=None, answer=None, verdict=None, correct=False, error=str(exc))
            return _Job(item, row, {})
        row.update(prompt=prompt.source, prompt_tokens=len(prompt.ids), truncated=prompt.truncated)
        return _Job(item, row, handles)

    def _finish(self, job: _Job) -> dict[str, Any]:
        row = job.row
        if "error" in row:
            return row
        if self.method == "generate":
            text = job.handles["answer"].result().sequences[0].text or ""
            row.update(answer=text, verdict=parse_verdict(text, self.generator))
        else:
            scores = {}
            for label, handle in job.handles.items():
                records = handle.result().prompt_logprobs or []
                tail = records[len(records) - len(self.continuations[label]):]
                scores[label] = round(sum(r.logprob for r in tail if r is not None), 6)
            row.update(answer=None, scores=scores, verdict=max(LABELS, key=lambda label: scores[label]))
        row["correct"] = row["verdict"] == row["gold"]
        return row

    def run(self, items: Sequence[EvalItem], log_file: ItemLog, *, progress: bool = True,
            on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
        """Answer the items ``log_file`` lacks; returns every item's row, in item order."""
        todo = [item for item in items if item.item_id not in log_file.rows]
        if len(todo) < len(items):
            log.info("%s: %d of %d items already answered; answering the other %d", self.name,
                     len(items) - len(todo), len(items), len(todo))
        bar = Progress(f"{self.name}: answering", len(items), enabled=progress)
        done = len(items) - len(todo)
        pending: deque[_Job] = deque()
        started = time.perf_counter()
        try:
            for item in todo:
                pending.append(self._start(item))
                while len(pending) >= self.config.concurrency:
                    done = self._record(pending.popleft(), log_file, bar, done, on_row)
            while pending:
                done = self._record(pending.popleft(), log_file, bar, done, on_row)
        finally:
            for job in pending:  # stopped early: nothing left running
                for handle in job.handles.values():
                    handle.cancel()
            bar.close()
        if todo:
            log.info("%s: %d items in %.1fs", self.name, len(todo), time.perf_counter() - started)
        return [log_file.rows[item.item_id] for item in items]

    def _record(self, job: _Job, log_file: ItemLog, bar: Progress, done: int,
                on_row: Callable[[dict[str, Any]], None] | None) -> int:
        row = self._finish(job)
        log_file.append(row)
        if on_row is not None:
            on_row(row)
        bar.update(done + 1)
        return done + 1
