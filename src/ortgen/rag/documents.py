"""Documents from files: plain text, markdown, JSONL and PubMed (MEDLINE) abstracts.

    format     files                                  documents                      id
    text       *.txt                                  one per file (title: file name) path relative to the DOCS argument
    markdown   *.md, *.markdown                       one per file (title: 1st # heading, else file name)  same
    jsonl      *.jsonl                                one per line {"id", "title", "text"}   the "id" field
    medline    *.medline, *.nbib, or a *.txt whose    one per record (PMID-/TI  -/AB  -   "PMID:<pmid>"
               first line starts with "PMID-"         fields, records split by blank lines)
    pubmedqa   *.json in PubMedQA's layout            one per item: its CONTEXTS joined    the item's id
               (ori_pqal.json: id -> {QUESTION,       (the question is not indexed: it is
               CONTEXTS, ...})                        what retrieval is asked)

The MEDLINE format is what PubMed's "Save -> Format: PubMed" writes: a 4-character tag, a dash
and the value; continuation lines start with six spaces.

Files that cannot be read or are not UTF-8 are skipped and reported (:class:`LoadReport`);
a malformed JSONL line is an error naming the file and line (silently dropping a document
would make an index quietly incomplete).
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ortgen.errors import OrtgenError
from ortgen.jsonfile import jsonl_objects

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text")
MARKDOWN_SUFFIXES = (".md", ".markdown")
JSONL_SUFFIXES = (".jsonl",)
MEDLINE_SUFFIXES = (".medline", ".nbib")
PUBMEDQA_SUFFIXES = (".json",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + MARKDOWN_SUFFIXES + JSONL_SUFFIXES + MEDLINE_SUFFIXES + PUBMEDQA_SUFFIXES
MAX_ID_CHARS = 512


class DocumentError(OrtgenError):
    """An input file or document that cannot be indexed as it is."""


@dataclass(frozen=True)
class Document:
    """One document to index; ``doc_id`` must be unique across the corpus."""

    doc_id: str
    title: str
    text: str
    source: str  # the file it came from (and line, for JSONL)


@dataclass
class LoadReport:
    """What happened to the inputs: files read, files skipped and why."""

    files_read: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    files: list[str] = field(default_factory=list)  # every file read, as its documents' sources name it

    def skip(self, path: Path, reason: str) -> None:
        log.warning("skipping %s: %s", path, reason)
        self.skipped.append((str(path), reason))


def _read_text(path: Path, report: LoadReport) -> str | None:
    """The file's text, or None (reported) when it is unreadable or not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        report.skip(path, f"cannot read: {exc.strerror or exc}")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        report.skip(path, f"not UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r})")
        return None
    report.files_read += 1
    report.files.append(str(path))
    return text


def _check_id(doc_id: str, where: str) -> str:
    doc_id = doc_id.strip()
    if not doc_id:
        raise DocumentError(f"{where}: empty document id")
    if len(doc_id) > MAX_ID_CHARS:
        raise DocumentError(f"{where}: document id is {len(doc_id)} characters; at most {MAX_ID_CHARS} allowed")
    return doc_id


def _text_document(path: Path, doc_id: str, text: str) -> Document:
    return Document(_check_id(doc_id, str(path)), path.stem.replace("_", " "), text.strip(), str(path))


_MD_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_MD_MARKUP = re.compile(r"(\*\*|__|~~|`{1,3}|^\s{0,3}>\s?|^\s*[-*+]\s+|^\s*\d+\.\s+)", re.MULTILINE)
# *emphasis* and _emphasis_: a delimiter run that opens before a non-space and closes after one, not inside a
# word for underscores (snake_case stays), nor a lone "5 * 3"
_MD_EMPHASIS = re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])|(?<![\w_])_(?=\S)(.+?)(?<=\S)_(?![\w_])")


def markdown_to_text(text: str) -> tuple[str, str]:
    """(title, plain text): headings become lines, links keep their words, emphasis and code marks go."""
    title = ""
    lines = []
    for line in text.splitlines():
        heading = _MD_HEADING.match(line)
        if heading:
            title = title or heading.group(1)
            lines.append(heading.group(1) + ".")  # a heading ends a sentence for the chunker
        else:
            lines.append(line)
    plain = _MD_MARKUP.sub("", _MD_LINK.sub(r"\1", "\n".join(lines)))
    plain = _MD_EMPHASIS.sub(lambda m: m.group(1) or m.group(2), plain)
    return title, plain.strip()


def _markdown_document(path: Path, doc_id: str, text: str) -> Document:
    title, plain = markdown_to_text(text)
    return Document(_check_id(doc_id, str(path)), title or path.stem, plain, str(path))


def _jsonl_documents(path: Path, text: str) -> Iterator[Document]:
    for number, record, where in jsonl_objects(text, path, 'one object {"id": ..., "title": ..., "text": ...}',
                                               error=DocumentError):
        doc_id, body = record.get("id"), record.get("text")
        if not isinstance(doc_id, (str, int)) or isinstance(doc_id, bool):
            raise DocumentError(f'{where}: "id" must be a string or an integer, got {doc_id!r}')
        if not isinstance(body, str):
            raise DocumentError(f'{where}: "text" must be a string, got {type(body).__name__}')
        title = record.get("title") or ""
        if not isinstance(title, str):
            raise DocumentError(f'{where}: "title" must be a string, got {type(title).__name__}')
        yield Document(_check_id(str(doc_id), where), title.strip(), body.strip(), f"{path}:{number}")


def _medline_records(text: str) -> Iterator[dict[str, list[str]]]:
    """Records of tag -> values; a value's continuation lines (6 spaces) are joined to it."""
    record: dict[str, list[str]] = {}
    tag = None
    for line in text.splitlines():
        if not line.strip():
            if record:
                yield record
            record, tag = {}, None
        elif line.startswith("      ") and tag:
            previous = record[tag][-1]
            # PubMed wraps lines at spaces or after a hyphen ("Pore-" / "region"): only the former is a space
            joiner = "" if previous.endswith("-") and not previous.endswith(" -") else " "
            record[tag][-1] = previous + joiner + line.strip()
        elif len(line) >= 5 and line[4] == "-":
            tag = line[:4].strip()
            record.setdefault(tag, []).append(line[5:].strip())
    if record:
        yield record


def _medline_documents(path: Path, text: str) -> Iterator[Document]:
    for number, record in enumerate(_medline_records(text), start=1):
        pmid = (record.get("PMID") or [""])[0]
        if not pmid:
            raise DocumentError(f"{path}: record {number} has no PMID- line (each MEDLINE record starts with one)")
        title = " ".join(record.get("TI", []))
        abstract = " ".join(record.get("AB", []))
        if not abstract and not title:
            log.warning("%s: PMID %s has neither title nor abstract; skipped", path, pmid)
            continue
        yield Document(_check_id(f"PMID:{pmid}", str(path)), title, abstract or title, f"{path}#PMID:{pmid}")


def _is_medline(text: str) -> bool:
    first = next((line for line in text.splitlines() if line.strip()), "")
    return first.startswith("PMID-")


def _pubmedqa_documents(path: Path) -> Iterator[Document]:
    from ortgen.evaluate.pubmedqa import DataError, load_items

    try:
        items = load_items(path, labeled=False)
    except DataError as exc:
        raise DocumentError(str(exc)) from None
    for item in items:
        if item.context_text:
            yield Document(_check_id(item.item_id, str(path)), "", item.context_text, f"{path}#{item.item_id}")


def documents_from_file(path: Path, doc_id: str, report: LoadReport) -> Iterator[Document]:
    """The documents in one file (``doc_id`` names single-document files)."""
    text = _read_text(path, report)
    if text is None:
        return
    suffix = path.suffix.lower()
    if suffix in PUBMEDQA_SUFFIXES:
        from ortgen.evaluate.pubmedqa import is_pubmedqa_file

        if not is_pubmedqa_file(path, text):
            report.skip(path, "a .json file not in PubMedQA's layout (an object mapping ids to items with "
                              "QUESTION and CONTEXTS)")
            return
        yield from _pubmedqa_documents(path)
    elif suffix in JSONL_SUFFIXES:
        yield from _jsonl_documents(path, text)
    elif suffix in MEDLINE_SUFFIXES or _is_medline(text):
        yield from _medline_documents(path, text)
    elif suffix in MARKDOWN_SUFFIXES:
        yield _markdown_document(path, doc_id, text)
    else:
        yield _text_document(path, doc_id, text)


def _files(argument: Path, report: LoadReport) -> Iterator[tuple[Path, str]]:
    """(file, id for single-document files): a file as given; a directory's supported files, sorted."""
    if argument.is_dir():
        for path in sorted(p for p in argument.rglob("*") if p.is_file()):
            if path.suffix.lower() in SUPPORTED_SUFFIXES and not any(part.startswith(".") for part in
                                                                    path.relative_to(argument).parts):
                yield path, path.relative_to(argument).as_posix()
    elif argument.is_file() or argument.exists():
        yield argument, argument.name
    else:
        raise DocumentError(f"{argument} does not exist (DOCS are files or directories of "
                            f"{', '.join(SUPPORTED_SUFFIXES)} files)")


def load_documents(arguments: Iterable[Path], report: LoadReport | None = None) -> list[Document]:
    """Every document under ``arguments`` in a stable order; duplicate ids are an error."""
    report = report if report is not None else LoadReport()
    seen: dict[str, str] = {}
    documents: list[Document] = []
    for argument in arguments:
        for path, doc_id in _files(Path(argument), report):
            for doc in documents_from_file(path, doc_id, report):
                if doc.doc_id in seen:
                    raise DocumentError(f"document id {doc.doc_id!r} appears twice: {seen[doc.doc_id]} and "
                                        f"{doc.source}; ids must be unique across the corpus")
                seen[doc.doc_id] = doc.source
                if doc.text:
                    documents.append(doc)
                else:
                    log.warning("%s: document %r has no text; skipped", doc.source, doc.doc_id)
    return documents


@dataclass(frozen=True)
class Shard:
    """``K/N``: the documents whose id hashes to K-1 modulo N (1 <= K <= N).

    The hash is of the id alone (sha1, not Python's salted ``hash``), so every job computes the
    same split on any machine, the N shards are disjoint and together hold every document.
    """

    k: int = 1
    n: int = 1

    @classmethod
    def parse(cls, text: str) -> "Shard":
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match:
            raise DocumentError(f"--shard must be K/N (e.g. 2/8), got {text!r}")
        k, n = int(match.group(1)), int(match.group(2))
        if not 1 <= k <= n:
            raise DocumentError(f"--shard {text}: K must be between 1 and N")
        return cls(k, n)

    def contains(self, doc_id: str) -> bool:
        if self.n == 1:
            return True
        bucket = int.from_bytes(hashlib.sha1(doc_id.encode("utf-8")).digest()[:8], "big") % self.n
        return bucket == self.k - 1

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"
