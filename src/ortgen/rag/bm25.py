"""Client-side BM25 as sparse vectors: an English analyzer with stemming, and the two halves of
the BM25 score.

    score(q, d) = sum over terms t of q:  idf(t) * tf(t,d) * (k1 + 1) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
                                          └ query vector ┘ └──────────────── document vector ──────────────────┘

The document half is stored with each passage (a SPARSE_FLOAT_VECTOR, term -> weight), the
query half is built at search time with the current document frequencies, and Milvus's inner
product of the two is exactly the BM25 score. Terms are hashed to 31-bit dimensions (stable
across processes and machines; a collision of two terms needs ~50k distinct terms for a 50%
chance of one pair, and costs only a slightly blurred score for that pair).

Why not Milvus's own BM25 function: docs/rag.md (measured recall; Milvus Lite's analyzer
ignores stemming and stop words).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

ANALYZER_NAME = "ortgen-english-snowball-v1"  # recorded in the index: a changed analyzer needs a re-index
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75

# Lucene's English stop words plus a few that carry no meaning in questions.
STOP_WORDS = frozenset("""
a an and are as at be but by for if in into is it no not of on or such that the their then there these they this
to was will with what which who whom how does do did can could would should has have had been being were its
""".split())

_WORD = re.compile(r"[a-z0-9]+(?:[.,][0-9]+)*")  # words, identifiers (brca1), decimals (2.5, 1,000)
_COMPOUND = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)+")  # il-6, 5-fu: also indexed joined (il6, 5fu)


class Analyzer:
    """Text -> index terms: lower-case, split, drop stop words, Snowball-stem alphabetic words.

    Identifiers and numbers are kept whole (``brca1``, ``rs429358``, ``2.5``), and hyphenated
    compounds are indexed both as their parts and joined (``IL-6`` -> ``il``, ``6``, ``il6``), so
    a question that writes ``IL6`` still finds them.
    """

    def __init__(self) -> None:
        import snowballstemmer

        self._stemmer = snowballstemmer.stemmer("english")
        self._cache: dict[str, str] = {}

    def _stem(self, word: str) -> str:
        stem = self._cache.get(word)
        if stem is None:
            stem = self._stemmer.stemWord(word) if word.isalpha() else word
            if len(self._cache) < 500_000:
                self._cache[word] = stem
        return stem

    def terms(self, text: str) -> list[str]:
        lowered = text.lower()
        words = [self._stem(w) for w in _WORD.findall(lowered) if w not in STOP_WORDS]
        words += [c.replace("-", "") for c in _COMPOUND.findall(lowered)]
        return words


def term_id(term: str) -> int:
    """A term's sparse dimension: 31 bits of blake2b (stable; Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "big") & 0x7FFFFFFF


@dataclass(frozen=True)
class BM25Parameters:
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    avgdl: float = 64.0  # mean passage length in terms; fixed when the index is created


def document_vector(terms: list[str], params: BM25Parameters) -> dict[int, float]:
    """The document half of BM25 for one passage's terms (empty passages get one zero entry:
    Milvus refuses an empty sparse row)."""
    if not terms:
        return {0: 0.0}
    norm = params.k1 * (1 - params.b + params.b * len(terms) / params.avgdl)
    vector: dict[int, float] = {}
    for term, tf in Counter(terms).items():
        dim = term_id(term)
        vector[dim] = vector.get(dim, 0.0) + tf * (params.k1 + 1) / (tf + norm)
    return vector


def idf(df: int, n: int) -> float:
    """BM25's (Lucene's) idf: always positive, larger for rarer terms."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def query_vector(terms: Iterable[str], df: dict[str, int], n: int) -> dict[int, float]:
    """The query half: each distinct term that occurs in the corpus, weighted by its idf."""
    vector: dict[int, float] = {}
    for term in dict.fromkeys(terms):
        if df.get(term, 0) > 0:
            vector[term_id(term)] = vector.get(term_id(term), 0.0) + idf(df[term], n)
    return vector


def mean_length(term_lists: Iterable[list[str]]) -> float:
    lengths = [len(t) for t in term_lists]
    return max(sum(lengths) / len(lengths), 1.0) if lengths else 64.0
