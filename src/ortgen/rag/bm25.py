"""BM25 by ortgen: an English analyzer with stemming, and the score (Lucene's variant, as the
``bm25s`` package computes it with ``method="lucene"``):

    score(q, d) = sum over distinct terms t of q:  idf(t) * tf(t,d) / (tf(t,d) + k1 * (1 - b + b * |d| / avgdl))
    idf(t)      = ln(1 + (N - df(t) + 0.5) / (df(t) + 0.5))

N, df and avgdl are the corpus's statistics *now*: the stores keep them up to date at every insert
and delete (document frequencies per term, passage count, total length), so a query reads a few
numbers instead of counting anything over the corpus.

Two term identities: :func:`term_key` (63 bits of blake2b) keys the local store's postings and
statistics (no collisions in practice); :func:`term_id` (31 bits) is a Milvus sparse dimension,
used only to find candidates, whose scores are then computed exactly from their terms.

Why not Milvus's own BM25 function: docs/rag.md (measured recall; Milvus Lite's analyzer
ignores stemming and stop words, and keeps statistics per segment).
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
    """A term's Milvus sparse dimension: 31 bits of blake2b (stable; Python's ``hash`` is salted)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "big") & 0x7FFFFFFF


def term_key(term: str) -> int:
    """A term's key in the local store: 63 bits of blake2b (fits SQLite's signed 64-bit integers)."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest(), "big") >> 1


@dataclass(frozen=True)
class BM25Parameters:
    k1: float = DEFAULT_K1
    b: float = DEFAULT_B
    avgdl: float = 64.0  # mean passage length in terms; fixed when the index is created


@dataclass(frozen=True)
class CorpusStats:
    """What BM25 needs of the whole corpus, kept current by the store."""

    passages: int
    total_length: int  # terms in all passages

    @property
    def avgdl(self) -> float:
        return self.total_length / self.passages if self.passages else 1.0


def tf_part(tf, length, avgdl: float, k1: float = DEFAULT_K1, b: float = DEFAULT_B):
    """The document half for term frequency ``tf`` in a passage of ``length`` terms (numbers or arrays)."""
    return tf / (tf + k1 * (1 - b + b * length / avgdl))


def document_vector(terms: list[str], params: BM25Parameters) -> dict[int, float]:
    """The document half of BM25 with a fixed avgdl, as a Milvus sparse vector: it finds a Milvus
    store's candidates, which are then scored exactly (:func:`score`). Empty passages get one zero
    entry (Milvus refuses an empty sparse row)."""
    if not terms:
        return {0: 0.0}
    vector: dict[int, float] = {}
    for term, tf in Counter(terms).items():
        dim = term_id(term)
        vector[dim] = vector.get(dim, 0.0) + tf_part(tf, len(terms), params.avgdl, params.k1, params.b)
    return vector


def idf(df: int, n: int) -> float:
    """BM25's (Lucene's) idf: always positive, larger for rarer terms."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5))


def score(query_terms: Iterable[str], passage_terms: list[str], df: dict[str, int], stats: CorpusStats,
          k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> float:
    """The exact BM25 score of one passage (its analysed terms) for a query, with the corpus's statistics."""
    tf = Counter(passage_terms)
    total = 0.0
    for term in dict.fromkeys(query_terms):
        if tf.get(term) and df.get(term, 0) > 0:
            total += idf(df[term], stats.passages) * tf_part(tf[term], len(passage_terms), stats.avgdl, k1, b)
    return total


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
