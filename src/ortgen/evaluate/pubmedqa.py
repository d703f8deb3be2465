"""PubMedQA-format data: questions, their abstract's contexts and a yes / no / maybe verdict.

Two forms of the same fields are read:

    form   file                                           one item
    json   PubMedQA's published files (ori_pqal.json,      "<PMID>": {"QUESTION": ..., "CONTEXTS": [...],
           test_set.json): one object, id -> item          "LONG_ANSWER": ..., "final_decision": "yes"}
    jsonl  one item per line, the id in an "id" field      {"id": "<PMID>", "QUESTION": ..., ...}

Field names are accepted in PubMedQA's spelling (QUESTION, CONTEXTS, LONG_ANSWER, final_decision)
or in lower case (question, contexts, long_answer); CONTEXTS is a list of strings (a string is
one context). The verdict is required for evaluation; files without it (an unlabeled test set)
are refused with the item that lacks it. The same reader gives ``ortgen rag index`` the items'
contexts as documents (id: the item's id), so that retrieval can be evaluated against the gold
passage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ortgen.errors import OrtgenError
from ortgen.jsonfile import jsonl_objects

LABELS = ("yes", "no", "maybe")
FIELDS = {"question": ("QUESTION", "question"), "contexts": ("CONTEXTS", "contexts"),
          "long_answer": ("LONG_ANSWER", "long_answer"), "gold": ("final_decision", "FINAL_DECISION")}


class DataError(OrtgenError):
    """A PubMedQA-format file that cannot be read as one."""


@dataclass(frozen=True)
class EvalItem:
    """One question: its id (PubMedQA's PMID), the gold contexts, and the verdict (None if unlabeled)."""

    item_id: str
    question: str
    contexts: tuple[str, ...]
    long_answer: str
    gold: str | None

    @property
    def context_text(self) -> str:
        return " ".join(c.strip() for c in self.contexts if c.strip())


def _field(record: dict[str, Any], name: str) -> Any:
    return next((record[key] for key in FIELDS[name] if key in record), None)


def _item(item_id: Any, record: Any, where: str, *, labeled: bool) -> EvalItem:
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or not str(item_id).strip():
        raise DataError(f"{where}: the id must be a non-empty string or an integer, got {item_id!r}")
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object with QUESTION, CONTEXTS and final_decision, "
                        f"got {type(record).__name__}")
    question = _field(record, "question")
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: QUESTION must be a non-empty string, got {question!r}")
    contexts = _field(record, "contexts")
    if isinstance(contexts, str):
        contexts = [contexts]
    if not isinstance(contexts, list) or not all(isinstance(c, str) for c in contexts):
        raise DataError(f"{where}: CONTEXTS must be a list of strings, got {type(contexts).__name__}")
    long_answer = _field(record, "long_answer") or ""
    if not isinstance(long_answer, str):
        raise DataError(f"{where}: LONG_ANSWER must be a string, got {type(long_answer).__name__}")
    gold = _field(record, "gold")
    if gold is None and labeled:
        raise DataError(f"{where}: no final_decision (yes, no or maybe); evaluation needs every item's verdict")
    if gold is not None and (not isinstance(gold, str) or gold.strip().lower() not in LABELS):
        raise DataError(f"{where}: final_decision must be one of {', '.join(LABELS)}, got {gold!r}")
    return EvalItem(str(item_id).strip(), question.strip(), tuple(contexts), long_answer.strip(),
                    None if gold is None else gold.strip().lower())


def _records(path: Path, text: str) -> Iterator[tuple[Any, Any, str]]:
    """(id, record, where) for every item of a .json or .jsonl file."""
    if path.suffix.lower() == ".jsonl":
        shape = 'one item {"id": ..., "QUESTION": ..., "CONTEXTS": [...], "final_decision": ...}'
        for _, record, where in jsonl_objects(text, path, shape, error=DataError):
            yield record.get("id", record.get("ID")), record, where
        return
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected PubMedQA's layout, one object mapping ids to items; got a "
                        f"{type(data).__name__} (a file with one item per line must end in .jsonl)")
    for item_id, record in data.items():
        yield item_id, record, f"{path}, item {item_id}"


def load_items(path: Path, *, labeled: bool = True) -> list[EvalItem]:
    """Every item of a PubMedQA-format file, in file order; duplicate ids and bad fields are errors."""
    path = Path(path)
    if path.suffix.lower() not in (".json", ".jsonl"):
        raise DataError(f"{path}: PubMedQA data is a .json file (PubMedQA's layout) or a .jsonl file (one item "
                        "per line)")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    items: list[EvalItem] = []
    seen: set[str] = set()
    for item_id, record, where in _records(path, text):
        item = _item(item_id, record, where, labeled=labeled)
        if item.item_id in seen:
            raise DataError(f"{where}: the id {item.item_id!r} appears twice; ids must be unique")
        seen.add(item.item_id)
        items.append(item)
    if not items:
        raise DataError(f"{path} holds no items")
    return items


def is_pubmedqa_file(path: Path, text: str) -> bool:
    """A .json file in PubMedQA's layout (its first item has QUESTION and CONTEXTS)."""
    if path.suffix.lower() != ".json":
        return False
    try:
        data = json.loads(text)
    except ValueError:
        return False
    first = next(iter(data.values()), None) if isinstance(data, dict) and data else None
    return isinstance(first, dict) and _field(first, "question") is not None and _field(first, "contexts") is not None


def file_digest(path: Path) -> str:
    """sha256 of the data file: a resumed evaluation must read the same items."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
