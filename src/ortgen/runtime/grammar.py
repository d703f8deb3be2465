"""Constrained decoding: a token mask per sequence and step, from a :class:`Constraint`.

The grammar engine is llguidance (MIT, no dependencies, Rust): it compiles a JSON schema, a
regex, a choice or a Lark grammar against the package's vocabulary and computes the set of
tokens that keep the output inside the language in tens of microseconds per sequence, even for
150k-token vocabularies (docs/structured-output.md has the measurements, and why not xgrammar).

    GrammarEngine (one per Generator)    vocabulary: each token's bytes; compiled grammars (cached)
      └─ GrammarState (one per request)  one matcher per distinct sequence, keyed by its tokens:
           │                             a beam reorder forks matchers, finished rows drop out
           └─ GrammarMask (a logits processor in the request's SearchSpec): -inf outside the mask

The scheduler computes the masks of every constrained sequence of a step in one call
(:func:`compute_masks`, in llguidance's threads) before the searches step; a processor called
outside the scheduler computes its own.

What a token's bytes are: for ``tokenizer.json`` vocabularies, llguidance's reading of the file
(byte-level BPE bytes, SentencePiece's ``▁`` as a space, ``<0xNN>`` byte tokens). BioGPT's
Moses-BPE pieces carry no bytes of their own (the detokenizer decides spaces and quotes by
context), so ortgen defines them: a piece's text with Moses' escapes undone (``&quot;`` -> ``"``),
plus one space when the piece ends a word (``</w>``). The text of a constrained sequence is the
concatenation of its tokens' bytes (:meth:`GrammarVocabulary.text`), exactly what the grammar
checked; for Moses-BPE, the grammar also admits the space the last word-final piece brings,
which the text then drops.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ortgen.errors import GenerationSettingsError
from ortgen.runtime.constraint import CHOICE, GRAMMAR, JSON_OBJECT, JSON_SCHEMA, REGEX, Constraint
from ortgen.runtime.processors import NEG_INF

log = logging.getLogger(__name__)

# JSON as OpenAI's structured outputs print it: ", " and ": ", no other whitespace (a schema's
# "x-guidance" field overrides these, as llguidance documents)
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
# Moses-BPE: no token starts with a space, so JSON there is compact, with optional whitespace
MOSES_JSON_OPTIONS = {"whitespace_flexible": True, "item_separator": ",", "key_separator": ":"}
MOSES_ESCAPES = (("&#124;", "|"), ("&lt;", "<"), ("&gt;", ">"), ("&apos;", "'"), ("&quot;", '"'),
                 ("&#91;", "["), ("&#93;", "]"), ("@-@", "-"), ("&amp;", "&"))
COMPILED_CACHE = 64  # compiled grammars kept per engine
# the stop reason of a constrained sequence that reached a dead end (no token of the vocabulary
# continues the language there): ended, but not a whole sentence of it; OpenAI's finish_reason "length"
INCOMPLETE = "incomplete"


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as exc:  # a runtime dependency; say so if an install lacks it
        raise GenerationSettingsError("structured output needs the llguidance package (pip install llguidance)") \
            from exc
    return llguidance


# -- the vocabulary --------------------------------------------------------------------------


def moses_piece_bytes(piece: str, end_of_word: str = "</w>") -> bytes:
    """A Moses-BPE piece's bytes: its text with Moses' escapes undone, plus a space when it ends a
    word that has a letter or digit (``patient</w>`` -> ``b"patient "``); a word-final piece of
    punctuation only (``&quot;</w>``, ``,</w>``, ``{</w>``) adds no space, so that quotes, brackets
    and commas can close up on the words around them as JSON needs."""
    final = piece.endswith(end_of_word)
    text = piece[:-len(end_of_word)] if final else piece
    for escaped, plain in MOSES_ESCAPES:
        text = text.replace(escaped, plain)
    spaced = final and any(ch.isalnum() for ch in text)
    return text.encode("utf-8") + (b" " if spaced else b"")


class _ByteTokens:
    """The shape llguidance's TokenizerWrapper reads: bytes per id, EOS, and an encoder consistent
    with the bytes (greedy longest match; llguidance uses it for forced bytes only)."""

    def __init__(self, tokens: list[bytes], eos: int, special: list[int]) -> None:
        self.tokens = tokens
        self.eos_token_id = eos
        self.bos_token_id = None
        self.special_token_ids = special
        specials = set(special)
        self._ids = {t: i for i, t in enumerate(tokens) if i not in specials and t}
        self._longest = max((len(t) for t in self._ids), default=1)

    def __call__(self, text: bytes | str) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        ids, at = [], 0
        while at < len(data):
            for length in range(min(self._longest, len(data) - at), 0, -1):
                token = self._ids.get(data[at:at + length])
                if token is not None:
                    ids.append(token)
                    at += length
                    break
            else:  # a byte no token spells: skip it (llguidance then falls back to its own trie)
                at += 1
        return ids


class GrammarVocabulary:
    """llguidance's tokenizer for a package: the bytes of every token id below ``vocab_size``."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        llg = _llguidance()
        self.vocab_size = vocab_size
        self.eos_token_ids = [int(i) for i in eos_token_ids]
        started = time.perf_counter()
        source = getattr(tokenizer, "tokenizer_json", None)
        if source is not None:  # tokenizer.json: llguidance reads it as the tokenizers library does
            self.word_final_space = False
            self.json_options = JSON_OPTIONS
            n_vocab = max(vocab_size, tokenizer.vocab_size)
            self.ll = llg.LLTokenizer(source(), n_vocab=n_vocab, eos_token=self.eos_token_ids or None)
        else:  # Moses BPE: bytes as this module's docstring defines them
            self.word_final_space = True
            self.json_options = MOSES_JSON_OPTIONS
            pieces, special = tokenizer.pieces()
            tokens = [b"\xff[" + (p or f"unused-{i}").encode() + b"]" if i in special or p is None
                      else moses_piece_bytes(p) for i, p in enumerate(pieces)]
            tokens += [f"\xff[unused-{i}]".encode("latin-1") for i in range(len(tokens), vocab_size)]
            special_ids = sorted(set(special) | {i for i, p in enumerate(pieces) if p is None}
                                 | set(range(len(pieces), len(tokens))))
            eos = self.eos_token_ids[0] if self.eos_token_ids else special_ids[0]
            self.ll = llg.LLTokenizer(llg.TokenizerWrapper(_ByteTokens(tokens, eos, special_ids)),
                                      eos_token=self.eos_token_ids or None)
        self.words = (self.ll.vocab_size + 31) // 32  # int32 words per mask
        log.debug("grammar vocabulary of %d tokens in %.2fs", self.ll.vocab_size, time.perf_counter() - started)

    def text(self, tokens: Sequence[int]) -> str:
        """A constrained sequence's text: its tokens' bytes, joined (what the grammar matched). EOS ids
        inside a sequence (a beam that had to run on after its language ended, when fewer valid
        continuations exist than beams: transformers keeps such beams too) add nothing."""
        eos = self.eos_token_ids
        data = self.ll.decode_bytes([int(t) for t in tokens if t not in eos])
        if self.word_final_space and data.endswith(b" "):
            data = data[:-1]
        return data.decode("utf-8", errors="replace")

    @staticmethod
    def settled_length(tokens: Sequence[int], text: str) -> int:
        """Streaming: all but an incomplete UTF-8 character is final (bytes only ever append; the
        Moses-BPE space :meth:`text` drops is always the last byte, so it never moves either)."""
        return len(text.rstrip("\ufffd"))


# -- compiling --------------------------------------------------------------------------------


def _lark_literal(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def grammar_entry(constraint: Constraint, json_options: dict[str, Any] = JSON_OPTIONS) -> dict[str, Any]:
    """The llguidance grammar (one entry of its ``grammars`` list) for a constraint."""
    llg = _llguidance()
    if constraint.kind in (JSON_SCHEMA, JSON_OBJECT):
        text = llg.LLMatcher.grammar_from_json_schema(constraint.schema, defaults=json_options)
        return json.loads(text)["grammars"][0]
    if constraint.kind == CHOICE:
        return {"lark_grammar": "start: " + " | ".join(_lark_literal(c) for c in constraint.choices or [])}
    if constraint.kind == REGEX:
        return json.loads(llg.LLMatcher.grammar_from_regex(constraint.source))["grammars"][0]
    assert constraint.kind == GRAMMAR
    text = constraint.source
    if "::=" in text:  # GBNF (llama.cpp's grammars)
        from llguidance.gbnf_to_lark import gbnf_to_lark

        try:
            text = gbnf_to_lark(text)
        except Exception as exc:  # its parser raises plain exceptions with the position
            raise GenerationSettingsError(f"grammar: not valid GBNF: {exc}") from None
    return {"lark_grammar": text}


def grammar_text(constraint: Constraint, vocabulary: GrammarVocabulary) -> str:
    """The whole llguidance grammar; Moses-BPE admits one space after the user's language (the
    space a final word-final piece brings, which :meth:`GrammarVocabulary.text` drops)."""
    entry = grammar_entry(constraint, vocabulary.json_options)
    if not vocabulary.word_final_space:
        return json.dumps({"grammars": [entry]})
    inner = {**entry, "name": "inner"}
    return json.dumps({"grammars": [{"lark_grammar": 'start: @inner " "?'}, inner]})


@dataclass
class CompiledGrammar:
    """A constraint compiled for one vocabulary: a fresh matcher to copy for each request."""

    constraint: Constraint
    template: Any  # llguidance.LLMatcher at the start of the language

    def start(self) -> Any:
        return self.template.deep_copy()

    def complete(self, tokens: Sequence[int]) -> bool:
        """Whether ``tokens`` (a finished sequence, its EOS dropped) are a whole sentence of the language."""
        matcher = self.start()
        return all(matcher.consume_token(int(t)) for t in tokens) and bool(matcher.is_accepting())


class GrammarEngine:
    """One per Generator: the vocabulary (built on first use) and compiled grammars (LRU)."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_token_ids: Sequence[int]) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._eos = list(eos_token_ids)
        self._vocabulary: GrammarVocabulary | None = None
        self._compiled: OrderedDict[Constraint, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()
        self._executor: Any = None

    @property
    def vocabulary(self) -> GrammarVocabulary:
        with self._lock:
            if self._vocabulary is None:
                self._vocabulary = GrammarVocabulary(self._tokenizer, self._vocab_size, self._eos)
            return self._vocabulary

    @property
    def executor(self) -> Any:
        """llguidance's thread pool, for the masks of many sequences at once."""
        with self._lock:
            if self._executor is None:
                self._executor = _llguidance().LLExecutor()
            return self._executor

    def compile(self, constraint: Constraint) -> CompiledGrammar:
        """The compiled grammar (cached); GenerationSettingsError with llguidance's message when
        the schema, regex or grammar is not one it can enforce."""
        with self._lock:
            if constraint in self._compiled:
                self._compiled.move_to_end(constraint)
                return self._compiled[constraint]
        vocabulary = self.vocabulary
        llg = _llguidance()
        try:
            text = grammar_text(constraint, vocabulary)
        except (ValueError, TypeError) as exc:
            raise GenerationSettingsError(f"{constraint.kind}: {exc}") from None
        problem = llg.LLMatcher.validate_grammar(text, vocabulary.ll)
        if problem:
            raise GenerationSettingsError(f"{constraint.kind} cannot be enforced: {_first_lines(problem)}")
        started = time.perf_counter()
        matcher = llg.LLMatcher(vocabulary.ll, text, log_level=0)
        if matcher.is_error():
            raise GenerationSettingsError(f"{constraint.kind} cannot be enforced: {_first_lines(matcher.get_error())}")
        log.debug("compiled %s in %.1f ms", constraint.describe(), 1000 * (time.perf_counter() - started))
        compiled = CompiledGrammar(constraint, matcher)
        with self._lock:
            self._compiled[constraint] = compiled
            while len(self._compiled) > COMPILED_CACHE:
                self._compiled.popitem(last=False)
        return compiled

    def state(self, constraint: Constraint, prompt_length: int, eos_token_ids: Sequence[int]) -> "GrammarState":
        """A request's matchers (compiles the constraint, or raises GenerationSettingsError)."""
        return GrammarState(self, self.compile(constraint), prompt_length, eos_token_ids)


def _first_lines(message: str, lines: int = 6) -> str:
    return " ".join(line.strip() for line in message.strip().splitlines()[:lines] if line.strip())


# -- per request ----------------------------------------------------------------------------


class _Sequence:
    """One distinct generated sequence's matcher (None: the row left the language, i.e. it
    finished and the search pads it) and its mask once computed."""

    __slots__ = ("matcher", "allowed")

    def __init__(self, matcher: Any) -> None:
        self.matcher = matcher
        self.allowed: np.ndarray | None = None  # bool [vocab]


class GrammarState:
    """The matchers of one request's sequences, keyed by their generated tokens.

    :meth:`sync` takes the rows a processor is about to see (prompt + generated tokens): a row
    whose tokens are a known sequence plus one token continues that sequence's matcher (copied
    when several rows continue the same sequence: a beam forks); a row that no longer fits the
    language (a finished sample padded by its search) gets no constraint (its tokens are
    discarded). Sequences no row continues are dropped.
    """

    def __init__(self, engine: GrammarEngine, compiled: CompiledGrammar, prompt_length: int,
                 eos_token_ids: Sequence[int]) -> None:
        self.engine = engine
        self.compiled = compiled
        self.prompt_length = prompt_length
        vocabulary = engine.vocabulary
        self.vocab_size = vocabulary.vocab_size
        self.eos = np.array([i for i in eos_token_ids if i < self.vocab_size], dtype=np.int64)
        # EOS as the grammar knows it (the package's), replaced by this request's EOS ids
        self.grammar_eos = np.array([i for i in vocabulary.eos_token_ids if i < self.vocab_size], dtype=np.int64)
        self._sequences: dict[bytes, _Sequence] = {b"": _Sequence(compiled.start())}
        self._rows: list[_Sequence] = []
        self._synced: list[bytes] | None = None

    def sync(self, input_ids: np.ndarray) -> list[_Sequence]:
        """Bring the matchers to ``input_ids`` (``[rows, prompt + generated]``); returns each row's sequence."""
        generated = np.ascontiguousarray(input_ids[:, self.prompt_length:])
        keys = [row.tobytes() for row in generated]
        if keys == self._synced:
            return self._rows
        previous = self._sequences
        children: dict[bytes, int] = {}  # new sequences continuing each known one
        for row in {key: row for row, key in enumerate(keys)}.values():
            if keys[row] not in previous and generated.shape[1] > 0:
                parent = generated[row, :-1].tobytes()
                children[parent] = children.get(parent, 0) + 1
        current: dict[bytes, _Sequence] = {}
        for row, key in enumerate(keys):
            if key in current:
                continue
            if key in previous:
                current[key] = previous[key]
                continue
            parent_key = generated[row, :-1].tobytes()
            parent = previous.get(parent_key)
            if parent is None:  # not one step on from a known sequence: replay it from the start
                current[key] = self._replay(generated[row])
                continue
            children[parent_key] -= 1
            matcher = parent.matcher
            if matcher is not None and children[parent_key] > 0:
                matcher = matcher.deep_copy()  # more rows continue this sequence: each gets its own
            if matcher is not None and not matcher.consume_token(int(generated[row, -1])):
                matcher = None
            current[key] = _Sequence(matcher)
        self._sequences = current
        self._synced = keys
        self._rows = [current[key] for key in keys]
        return self._rows

    def _replay(self, tokens: np.ndarray) -> _Sequence:
        matcher = self.compiled.start()
        for token in tokens:
            if not matcher.consume_token(int(token)):
                return _Sequence(None)
        return _Sequence(matcher)

    def pending(self, input_ids: np.ndarray) -> list[_Sequence]:
        """The sequences of these rows whose masks are not computed yet (each once)."""
        seen: dict[int, _Sequence] = {}
        for sequence in self.sync(input_ids):
            if sequence.allowed is None and sequence.matcher is not None:
                seen[id(sequence)] = sequence
        return list(seen.values())

    def allowed(self, input_ids: np.ndarray) -> list[np.ndarray | None]:
        """Per row: the tokens the grammar allows next (bool ``[vocab]``), None for no constraint."""
        todo = self.pending(input_ids)
        rows = self._rows
        if todo:
            compute_masks([(self, todo)])
        return [s.allowed for s in rows]

    def finish_mask(self, sequence: _Sequence, bits: np.ndarray) -> None:
        """Turn llguidance's bitmask (int32 words) into this request's allowed tokens."""
        allowed = np.unpackbits(bits.view(np.uint8), bitorder="little")[:self.vocab_size].astype(bool)
        if self.grammar_eos.size or self.eos.size:
            accepting = bool(sequence.matcher.is_accepting())
            allowed[self.grammar_eos] = False
            allowed[self.eos] = accepting
        if not allowed.any():  # a dead end: no token spells what the language needs next
            log.warning("structured output: no token of this vocabulary continues the %s here; the sequence ends "
                        "incomplete", self.compiled.constraint.describe())
            allowed[self.eos] = True
        sequence.allowed = allowed


def compute_masks(work: Sequence[tuple[GrammarState, Sequence[_Sequence]]]) -> int:
    """The masks of many sequences (of any requests of one engine) in one llguidance call, in its
    threads; returns how many were computed."""
    items = [(state, sequence) for state, sequences in work for sequence in sequences]
    if not items:
        return 0
    engine = items[0][0].engine
    words = engine.vocabulary.words
    bits = np.zeros((len(items), words), dtype=np.int32)
    if len(items) == 1:
        state, sequence = items[0]
        sequence.matcher.unsafe_compute_mask_ptr(bits.ctypes.data, words * 4)
    else:
        engine.executor.unsafe_compute_mask_ptr([(s.matcher, i) for i, (_, s) in enumerate(items)],
                                                bits.ctypes.data, words * 4, len(items))
    for row, (state, sequence) in enumerate(items):
        state.finish_mask(sequence, bits[row])
    return len(items)


@dataclass
class GrammarMask:
    """The logits processor: scores outside the grammar's mask -> -inf.

    It runs after the other processors and before the sampling warpers. Where another processor
    banned every token the grammar allows (min_new_tokens banning EOS when the language is
    complete), the grammar wins: its tokens get score 0 so the sequence can go on (or end)
    inside the language.
    """

    state: GrammarState

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        for row, allowed in enumerate(self.state.allowed(input_ids)):
            if allowed is None:
                continue
            kept = np.where(allowed, scores[row], NEG_INF)
            if not np.isfinite(kept).any() and allowed.any():
                kept = np.where(allowed, np.float32(0.0), NEG_INF)
            scores[row] = kept
        return scores


__all__ = ["GrammarEngine", "GrammarState", "GrammarMask", "GrammarVocabulary", "compute_masks",
           "moses_piece_bytes", "grammar_text"]
