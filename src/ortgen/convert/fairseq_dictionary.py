"""fairseq's ``dict.txt`` + ``bpecodes`` as a Hugging Face BioGPT tokenizer (vocab.json + merges.txt).

fairseq ids: ``<s> <pad> </s> <unk>`` are 0-3, then one id per ``dict.txt`` line in order.
A ``x@@`` entry is a piece that continues a word (Hugging Face vocab: ``x``); a plain
``x`` ends a word (``x</w>``). ``bpecodes`` (fastBPE: ``a b count`` per line) are the merges.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ortgen.errors import ModelSourceError

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]
_OVERWRITE_FLAG = "#fairseq:overwrite"


@dataclass(frozen=True)
class FairseqDictionary:
    symbols: list[str]  # index = fairseq id, specials first

    def __len__(self) -> int:
        return len(self.symbols)


def read_dictionary(path: Path) -> FairseqDictionary:
    """Parse ``dict.txt`` ("<symbol> <count> [#fairseq:overwrite]" per line)."""
    if not path.is_file():
        raise ModelSourceError(f"{path} is missing: the fairseq dictionary is needed for the vocabulary")
    symbols = list(SPECIALS)
    seen = set(symbols)
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.rstrip()
        if not line:
            continue
        overwrite = line.endswith(" " + _OVERWRITE_FLAG)
        if overwrite:
            line = line[: -len(_OVERWRITE_FLAG) - 1]
        symbol, _, count = line.rpartition(" ")
        if not symbol or not count.lstrip("-").isdigit():
            raise ModelSourceError(f"{path}:{number}: expected '<symbol> <count>', got {raw!r}")
        if symbol in seen and not overwrite:
            raise ModelSourceError(f"{path}:{number}: duplicate symbol {symbol!r}")
        seen.add(symbol)
        symbols.append(symbol)
    return FairseqDictionary(symbols)


def hf_token(symbol: str) -> str:
    """fairseq BPE symbol -> Hugging Face BioGPT vocabulary entry."""
    if symbol in SPECIALS:
        return symbol
    return symbol[:-2] if symbol.endswith("@@") else symbol + "</w>"


def write_vocab(dictionary: FairseqDictionary, extra_tokens: list[str], path: Path) -> dict[str, int]:
    """vocab.json: fairseq ids kept; ``extra_tokens`` (learned prompt tokens) follow."""
    vocab: dict[str, int] = {}
    for index, symbol in enumerate(dictionary.symbols):
        token = hf_token(symbol)
        if token in vocab:
            raise ModelSourceError(f"dict.txt maps two entries to the vocabulary token {token!r}")
        vocab[token] = index
    for token in extra_tokens:
        if token in vocab:
            raise ModelSourceError(f"learned prompt token {token!r} is already in dict.txt")
        vocab[token] = len(vocab)
    path.write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    return vocab


def write_merges(bpecodes: Path, path: Path) -> int:
    """merges.txt from fastBPE codes (the first two fields of each line); returns the count."""
    if not bpecodes.is_file():
        raise ModelSourceError(f"{bpecodes} is missing: the BPE codes are needed for the tokenizer")
    merges = []
    for number, line in enumerate(bpecodes.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2:
            raise ModelSourceError(f"{bpecodes}:{number}: expected 'left right [count]', got {line!r}")
        merges.append(f"{fields[0]} {fields[1]}\n")
    path.write_text("".join(merges), encoding="utf-8")
    return len(merges)
