"""Token ids as they settle -> text deltas whose concatenation is the final text.

Decoding a growing token list and emitting what is new is not enough: the last word may be a
piece of a word (BPE), a byte of a UTF-8 character (byte-level BPE) or a token whose spacing the
next token decides (Moses detokenization attaches punctuation and quotes to the previous word).
So a delta only ever covers text up to the last whitespace of the decoded text: the last word,
and the space before it, are held back until a later token proves them final, or the sequence
ends. Every rule of the Moses detokenizer looks at most one token ahead, so text before that
last space never changes.
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Sequence

log = logging.getLogger(__name__)

_LAST_SPACE = re.compile(r"\s(?=\S*$)")


class TextDeltas:
    """Text deltas of one sequence; ``decode`` turns token ids into text."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.emitted = ""

    def update(self, tokens: Sequence[int], final: bool = False) -> str:
        """The new text for ``tokens`` (everything settled so far); ``final`` releases what was held back."""
        text = self.decode(list(tokens))
        if final:
            stable = text
        else:
            match = _LAST_SPACE.search(text.rstrip()) if text.strip() else None
            stable = text[:match.start()] if match else ""
        if not stable.startswith(self.emitted):
            if final:  # cannot take back what was sent: say so (tests hold the tokenizers to it)
                log.warning("streamed text %r is not a prefix of the final text %r", self.emitted, text)
            return ""
        delta = stable[len(self.emitted):]
        self.emitted = stable
        return delta
