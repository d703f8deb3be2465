"""Which words of a passage match a question, for showing the sources: the BM25 analyzer's terms.

A word of the passage is highlighted when its term (lower-cased, Snowball-stemmed, identifiers
kept whole) is one of the question's terms, so "therapies" lights up for "therapy" and "BRCA1"
for "brca1", exactly the matches lexical retrieval scored.
"""

from __future__ import annotations

import re

from ortgen.rag.bm25 import STOP_WORDS, Analyzer

_WORD = re.compile(r"[A-Za-z0-9]+(?:[.,][0-9]+)*")
_analyzer: Analyzer | None = None


def _shared() -> Analyzer:
    global _analyzer
    if _analyzer is None:
        _analyzer = Analyzer()
    return _analyzer


def matches(question: str, text: str) -> list[tuple[int, int]]:
    """[start, end) character spans of the words of ``text`` whose term the question has."""
    analyzer = _shared()
    wanted = set(analyzer.terms(question))
    spans = []
    for match in _WORD.finditer(text):
        word = match.group(0).lower()
        if word in STOP_WORDS:
            continue
        if analyzer.terms(word) and analyzer.terms(word)[0] in wanted:
            spans.append((match.start(), match.end()))
    return spans
