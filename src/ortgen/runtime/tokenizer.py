"""Tokenizers the runtime can load from a package, without transformers.

Two kinds, named in the manifest:

- ``moses-bpe``: BioGPT's tokenizer (sacremoses tokenization with aggressive dash
  splits and escaping, then BPE with word-final pieces ending in ``</w>``); decoding joins
  the pieces and runs the Moses detokenizer. Tested token-for-token against
  transformers' ``BioGptTokenizer``.
- ``tokenizers``: a Hugging Face ``tokenizer.json`` run by the ``tokenizers`` library
  (GPT-2, OPT and any fast tokenizer).

Both add the ids the manifest records as ``prefix_ids`` / ``suffix_ids`` (BioGPT and
OPT prompts start with ``</s>``), so encoding equals transformers' ``tokenizer(text)``.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

from ortgen.errors import PackageError
from ortgen.package.tokenizer_info import HF_TOKENIZERS, MOSES_BPE, TOKENIZER_KINDS, TokenizerInfo

class Tokenizer(Protocol):
    """Text <-> token ids, including the model's special prefix."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def token_to_id(self, token: str) -> int | None: ...

    def encode_plain(self, text: str) -> list[int]:
        """Ids of ``text`` without the model's prefix/suffix ids."""
        ...

    def settled_length(self, ids: Sequence[int], text: str) -> int | None:
        """How much of ``text`` (``decode(ids)``) no later token can change, or None where the
        tokenizer cannot tell (streaming then holds back the last word: :mod:`ortgen.runtime.text_stream`)."""
        ...


class MosesBpeTokenizer:
    """BioGPT's tokenizer: Moses tokenization, then BPE over ``vocab.json`` / ``merges.txt``."""

    END_OF_WORD = "</w>"

    def __init__(self, vocab_path: Path, merges_path: Path, info: TokenizerInfo) -> None:
        import sacremoses  # a runtime dependency; imported here to keep `import ortgen` light

        self.info = info
        self.vocab: dict[str, int] = json.loads(vocab_path.read_text(encoding="utf-8"))
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        lines = merges_path.read_text(encoding="utf-8").split("\n")[:-1]
        pairs = [tuple(line.split()[:2]) for line in lines]
        self.ranks: dict[tuple[str, ...], int] = {pair: rank for rank, pair in enumerate(pairs)}
        self._moses_tokenizer = sacremoses.MosesTokenizer(lang="en")
        self._moses_detokenizer = sacremoses.MosesDetokenizer(lang="en")
        self.special_tokens = {t for t in info.special_tokens.values() if t in self.vocab}
        self._special_split = (
            re.compile("(" + "|".join(re.escape(t) for t in sorted(self.special_tokens, key=len, reverse=True)) + ")")
            if self.special_tokens
            else None
        )
        self.unk_id = self.vocab.get(info.special_tokens.get("unk_token", "<unk>"), 3)
        self._bpe = lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, token: str) -> tuple[str, ...]:
        """Apply merges by rank (lowest first) until none applies."""
        word = tuple(token[:-1]) + (token[-1] + self.END_OF_WORD,)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, len(self.ranks)))
            if best not in self.ranks:
                break
            first, second = best
            merged: list[str] = []
            i = 0
            while i < len(word):  # merge every occurrence, left to right, without overlap
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
        return word

    def _encode_text(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in self._moses_tokenizer.tokenize(text, aggressive_dash_splits=True, return_str=False, escape=True):
            if token:
                ids.extend(self.vocab.get(piece, self.unk_id) for piece in self._bpe(token))
        return ids

    def encode(self, text: str) -> list[int]:
        return list(self.info.prefix_ids) + self.encode_plain(text) + list(self.info.suffix_ids)

    def encode_plain(self, text: str) -> list[int]:
        ids: list[int] = []
        chunks = self._special_split.split(text) if self._special_split else [text]
        for chunk in chunks:
            if chunk in self.special_tokens:
                ids.append(self.vocab[chunk])
            elif chunk.strip():
                ids.extend(self._encode_text(chunk))
        return ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        pieces: list[str] = []
        for i in ids:
            token = self.id_to_token.get(int(i), self.info.special_tokens.get("unk_token", "<unk>"))
            if skip_special_tokens and token in self.special_tokens:
                continue
            pieces.append(token)
        words = "".join(p.replace(" ", "").replace(self.END_OF_WORD, " ") for p in pieces).split()
        return self._moses_detokenizer.detokenize(words)

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)

    def settled_length(self, ids: Sequence[int], text: str) -> int | None:
        return None  # Moses decides the space before a token by the token: hold back the last word

    def pieces(self) -> tuple[list[str | None], set[int]]:
        """Each id's BPE piece (None where the vocabulary skips an id) and the special tokens' ids:
        what structured output builds its token bytes from (:mod:`ortgen.runtime.grammar`)."""
        pieces: list[str | None] = [None] * (max(self.id_to_token, default=-1) + 1)
        for i, token in self.id_to_token.items():
            pieces[i] = token
        return pieces, {self.vocab[t] for t in self.special_tokens}


class HfTokenizersTokenizer:
    """A ``tokenizer.json`` run by the ``tokenizers`` library."""

    def __init__(self, path: Path, info: TokenizerInfo) -> None:
        from tokenizers import Tokenizer as _Tokenizer

        self.info = info
        self._tok = _Tokenizer.from_file(str(path))
        self._streaming = _streaming_kind(self._tok)
        self._byte_ids: frozenset[int] = frozenset()
        if self._streaming == "byte-fallback":  # <0xNN> tokens, and special tokens decode skips
            self._byte_ids = frozenset(
                [i for t, i in self._tok.get_vocab(with_added_tokens=False).items() if _BYTE_TOKEN.fullmatch(t)]
                + [i for i, t in self._tok.get_added_tokens_decoder().items() if t.special])

    def encode(self, text: str) -> list[int]:
        return list(self.info.prefix_ids) + self.encode_plain(text) + list(self.info.suffix_ids)

    def encode_plain(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def tokenizer_json(self) -> str:
        """The tokenizer.json text (structured output reads each token's bytes from it)."""
        return self._tok.to_str()

    def settled_length(self, ids: Sequence[int], text: str) -> int | None:
        """Byte-level BPE (GPT-2, Llama 3, Qwen2) decodes the bytes of all tokens at once, so only
        an incomplete UTF-8 character at the end (U+FFFD) can change; byte fallback (Llama 2)
        decodes each run of ``<0xNN>`` tokens at once, so the text before the trailing run is final.
        Other decoders (WordPiece's clean-up joins punctuation to the word before): None."""
        if self._streaming == "byte-level":
            return len(text.rstrip("\ufffd"))
        if self._streaming == "byte-fallback":
            ids = [int(i) for i in ids]
            k = len(ids)
            while k and (ids[k - 1] in self._byte_ids or self._tok.id_to_token(ids[k - 1]) is None):
                k -= 1
            return len(text) if k == len(ids) else len(os.path.commonprefix([self.decode(ids[:k]), text]))
        return None


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def _streaming_kind(tok) -> str | None:
    """How the ``tokenizer.json`` decoder lets text settle: ``byte-level``; ``byte-fallback``
    (each token's text depends on no other token, but for ByteFallback's runs of byte tokens);
    or None (unknown)."""
    if tok.decoder is None:
        return None
    spec = json.loads(tok.decoder.__getstate__())
    parts = spec.get("decoders", []) if spec.get("type") == "Sequence" else [spec]
    kinds = [part.get("type") for part in parts]
    if kinds and all(kind == "ByteLevel" for kind in kinds):
        return "byte-level"
    fused = False
    for part, kind in zip(parts, kinds):
        if kind == "Fuse":
            fused = True
        elif kind in ("Replace", "ByteFallback", "Metaspace", "Strip") and not fused:
            continue  # token by token (ByteFallback: run by run)
        elif kind == "Strip" and not part.get("stop"):
            continue  # after Fuse: strips the start of the text only
        else:
            return None
    return "byte-fallback"


def load_tokenizer(directory: Path, info: TokenizerInfo) -> Tokenizer:
    """Instantiate the tokenizer a package describes."""
    if info.kind == MOSES_BPE:
        vocab, merges = directory / "vocab.json", directory / "merges.txt"
        for path in (vocab, merges):
            if not path.is_file():
                raise PackageError(f"the package's tokenizer is incomplete: {path} is missing")
        return MosesBpeTokenizer(vocab, merges, info)
    if info.kind == HF_TOKENIZERS:
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise PackageError(f"the package's tokenizer is incomplete: {path} is missing")
        return HfTokenizersTokenizer(path, info)
    raise PackageError(f"unknown tokenizer kind {info.kind!r}; supported: {', '.join(TOKENIZER_KINDS)}")
