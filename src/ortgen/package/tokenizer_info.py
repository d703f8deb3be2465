"""The manifest's description of a package's tokenizer (what the runtime loads, and how)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ortgen.package.fields import Fields

MOSES_BPE = "moses-bpe"  # BioGPT: sacremoses tokenization + BPE over vocab.json / merges.txt
HF_TOKENIZERS = "tokenizers"  # a Hugging Face tokenizer.json run by the `tokenizers` library
TOKENIZER_KINDS = (MOSES_BPE, HF_TOKENIZERS)
TOKENIZER_FILES = {MOSES_BPE: ("vocab.json", "merges.txt"), HF_TOKENIZERS: ("tokenizer.json",)}


@dataclass(frozen=True)
class TokenizerInfo:
    """Which tokenizer, its files (under ``tokenizer/``), and the ids it adds around a prompt
    (``prefix_ids``: BioGPT and OPT start every prompt with ``</s>``)."""

    kind: str
    files: list[str]
    prefix_ids: list[int] = field(default_factory=list)
    suffix_ids: list[int] = field(default_factory=list)
    special_tokens: dict[str, str] = field(default_factory=dict)  # role -> token text
    chat_template: str | None = None  # the checkpoint's chat template file (under tokenizer/), if it has one

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "files": self.files,
            "prefix_ids": self.prefix_ids,
            "suffix_ids": self.suffix_ids,
            "special_tokens": self.special_tokens,
            "chat_template": self.chat_template,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "tokenizer", source: str = "ortgen.json") -> "TokenizerInfo":
        f = Fields(data, path, source)
        special = f.object("special_tokens", default={})
        for role, text in special.items():
            if not isinstance(text, str):
                raise f.fail(f"special_tokens.{role}", text, "a string")
        return cls(
            kind=f.str("kind", choices=TOKENIZER_KINDS),  # type: ignore[arg-type]
            files=f.str_list("files", default=[]),
            prefix_ids=f.int_list("prefix_ids", default=[]),
            suffix_ids=f.int_list("suffix_ids", default=[]),
            special_tokens=special,
            chat_template=f.str("chat_template", optional=True),
        )
