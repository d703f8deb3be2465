"""Documents -> passages: sentence boundaries, sizes in the embedder's tokens, overlap, stable ids.

    document ─► sentences ─► greedy packing up to max_tokens ─► chunks
                                  │ the next chunk starts with the last sentences of the previous
                                  │ one, up to overlap_tokens (context across the cut)
    chunk id = "{doc_id}#{number}-{sha256(title + text)[:12]}"

The id changes exactly when the chunk's content (or its position) changes, so an indexer that
finds a chunk id already stored knows its vectors are current and skips it. A sentence longer
than ``max_tokens`` is cut on word-piece boundaries.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from ortgen.errors import OrtgenError
from ortgen.rag.documents import Document

DEFAULT_MAX_TOKENS = 128
DEFAULT_OVERLAP_TOKENS = 32

# Words whose trailing period does not end a sentence (lower-cased, without the period).
_ABBREVIATIONS = frozenset("""
e.g i.e et al etc vs fig figs no nos dr mr mrs ms prof approx cf ref refs eq eqs vol sp spp ca resp
st jr sr inc ltd co dept univ min max mg ml kg mm cm jan feb mar apr jun jul aug sep sept oct nov dec
""".split())
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_PARAGRAPH = re.compile(r"\n\s*\n")


class ChunkingError(OrtgenError):
    """Chunk sizes that cannot work."""


@dataclass(frozen=True)
class ChunkSettings:
    """Passage size and overlap, in word pieces of the embedder's tokenizer."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    overlap_tokens: int = DEFAULT_OVERLAP_TOKENS

    def validate(self, embedder_max: int) -> None:
        if self.max_tokens < 8:
            raise ChunkingError(f"--chunk-tokens must be >= 8, got {self.max_tokens}")
        if self.max_tokens > embedder_max - 2:
            raise ChunkingError(f"--chunk-tokens {self.max_tokens} exceeds what the embedder reads "
                                f"({embedder_max} tokens including [CLS] and [SEP]: at most {embedder_max - 2})")
        if not 0 <= self.overlap_tokens < self.max_tokens:
            raise ChunkingError(f"--overlap-tokens must be >= 0 and below --chunk-tokens ({self.max_tokens}), "
                                f"got {self.overlap_tokens}")


@dataclass(frozen=True)
class Chunk:
    """One passage: what is stored, embedded and returned by search."""

    chunk_id: str
    doc_id: str
    number: int
    title: str
    text: str
    source: str

    @property
    def index_text(self) -> str:
        """What the embedder and BM25 see: the title (context for short passages), then the passage."""
        return f"{self.title}\n{self.text}" if self.title else self.text


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: paragraph breaks and ``. ! ?`` before a capital or digit, except
    after common abbreviations (e.g., et al., Fig.) and single initials."""
    sentences: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = " ".join(paragraph.split())
        start = 0
        for match in _BOUNDARY.finditer(paragraph):
            before = paragraph[start:match.start() + 1].rsplit(None, 1)[-1].strip("([{\"'.").lower()
            if before in _ABBREVIATIONS or (len(before) == 1 and before.isalpha()):
                continue
            sentences.append(paragraph[start:match.end()].strip())
            start = match.end()
        if paragraph[start:].strip():
            sentences.append(paragraph[start:].strip())
    return sentences


TokenCounter = Callable[[Sequence[str]], list[int]]
TokenOffsets = Callable[[str], list[tuple[int, int]]]


def _cut_long(sentence: str, max_tokens: int, offsets: TokenOffsets) -> list[str]:
    """An over-long sentence as pieces of at most ``max_tokens`` word pieces, cut before a word
    piece that follows whitespace (not inside a word) whenever the window has such a point."""
    spans = offsets(sentence)
    pieces = []
    start = 0
    while start < len(spans):
        end = min(start + max_tokens, len(spans))
        if end < len(spans):
            cut = end
            while cut > start + 1 and spans[cut][0] == spans[cut - 1][1]:  # glued to the previous piece
                cut -= 1
            end = cut if cut > start + 1 else end
        stop_char = spans[end][0] if end < len(spans) else len(sentence)
        pieces.append(sentence[spans[start][0]:stop_char].strip())
        start = end
    return [p for p in pieces if p]


def _pack(units: list[str], sizes: list[int], settings: ChunkSettings) -> list[str]:
    """Greedy packing of sentences into chunks, each next chunk overlapping the previous one."""
    chunks: list[str] = []
    start = 0
    while start < len(units):
        end, total = start, 0
        while end < len(units) and (end == start or total + sizes[end] <= settings.max_tokens):
            total += sizes[end]
            end += 1
        chunks.append(" ".join(units[start:end]))
        if end == len(units):
            break
        back, carried = end, 0
        while back - 1 > start and carried + sizes[back - 1] <= settings.overlap_tokens:
            back -= 1
            carried += sizes[back]
        start = back
    return chunks


def chunk_id(doc_id: str, number: int, title: str, text: str) -> str:
    digest = hashlib.sha256(f"{title}\n{text}".encode("utf-8")).hexdigest()[:12]
    return f"{doc_id}#{number}-{digest}"


def chunk_document(doc: Document, settings: ChunkSettings, count: TokenCounter, offsets: TokenOffsets) -> list[Chunk]:
    """The chunks of ``doc``, numbered from 0."""
    sentences = split_sentences(doc.text)
    sizes = count(sentences)
    units: list[str] = []
    unit_sizes: list[int] = []
    for sentence, size in zip(sentences, sizes):
        if size <= settings.max_tokens:
            units.append(sentence)
            unit_sizes.append(size)
        else:
            pieces = _cut_long(sentence, settings.max_tokens, offsets)
            units += pieces
            unit_sizes += count(pieces)
    return [Chunk(chunk_id(doc.doc_id, n, doc.title, text), doc.doc_id, n, doc.title, text, doc.source)
            for n, text in enumerate(_pack(units, unit_sizes, settings))]
