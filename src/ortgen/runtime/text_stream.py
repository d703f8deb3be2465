"""Token ids as they settle -> text deltas whose concatenation is the final text.

Decoding a growing token list and emitting what is new is not enough: the last word may be a
piece of a word (BPE), a byte of a UTF-8 character (byte-level BPE) or a token whose spacing the
next token decides (Moses detokenization attaches punctuation and quotes to the previous word).
So a delta only ever covers text up to the last whitespace of the decoded text: the last word,
and the space before it, are held back until a later token proves them final, or the sequence
ends. Every rule of the Moses detokenizer looks at most one token ahead, so text before that
last space never changes.

Byte fallback (Llama 2, Mistral) breaks that rule: its decoder turns a run of consecutive byte
tokens (``<0x0A>`` for a newline, ``<0xF0>`` ... for a character outside the vocabulary) into
text as a whole, and while the run is not valid UTF-8 every byte of it becomes U+FFFD, newlines
included: ``\\n🧬`` turns into six U+FFFD when the first byte of the next emoji arrives, and stays
so if the sequence ends there (max_new_tokens) or the next byte is wrong. So the text of a
trailing run of tokens that may be such bytes (tokens that decode alone to U+FFFD, to one ASCII
character or to nothing) is held back as well, when one of them decodes to U+FFFD. A run of
tokens that all decode to ASCII is not held back (digits and punctuation are pieces far more
often than bytes): a model that writes printable ASCII as byte tokens, which SentencePiece never
does for characters in its vocabulary, could still see the final text disagree with the deltas.

A tokenizer that knows its decoder can say exactly how much text is settled (``settled``, see
:meth:`ortgen.runtime.tokenizer.HfTokenizersTokenizer.settled_length`): text without spaces
(Chinese, Japanese) then streams as it settles instead of at the end, with byte-level BPE (GPT-2,
Llama 3, Qwen2) as each character completes, with byte fallback as each run of byte tokens ends.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Callable, Sequence

log = logging.getLogger(__name__)

_LAST_SPACE = re.compile(r"\s(?=\S*$)")


class TextDeltas:
    """Text deltas of one sequence; ``decode`` turns token ids into text.

    ``settled(tokens, text)``, where given, is the length of the prefix of ``text`` (the decoded
    ``tokens``) that no later token can change, or None to use the rule above.
    """

    def __init__(self, decode: Callable[[list[int]], str],
                 settled: Callable[[list[int], str], int | None] | None = None) -> None:
        self.decode = decode
        self.settled = settled
        self.emitted = ""
        self._alone: dict[int, str] = {}  # token id -> its text decoded alone
        self._seen: list[int] = []  # the tokens the run below describes
        self._run_start = 0  # where the trailing run of possible byte tokens starts
        self._run_fffd = False  # whether one of them decodes to U+FFFD

    def update(self, tokens: Sequence[int], final: bool = False) -> str:
        """The new text for ``tokens`` (everything settled so far); ``final`` releases what was held back."""
        tokens = list(tokens)
        text = self.decode(tokens)
        end = None if final or self.settled is None else self.settled(tokens, text)
        if final:
            stable = text
        elif end is not None:
            stable = text[:end]
        else:
            match = _LAST_SPACE.search(text.rstrip()) if text.strip() else None
            stable = text[:match.start()] if match else ""
            if len(stable) > len(self.emitted):
                stable = stable[:self._before_byte_run(tokens, text)]
        if not stable.startswith(self.emitted):
            if final:  # cannot take back what was sent: say so (tests hold the tokenizers to it)
                log.warning("streamed text %r is not a prefix of the final text %r", self.emitted, text)
            return ""
        delta = stable[len(self.emitted):]
        self.emitted = stable
        return delta

    def _before_byte_run(self, tokens: list[int], text: str) -> int:
        """The length of ``text`` before a trailing run of possible byte tokens holding a U+FFFD."""
        if tokens[:len(self._seen)] != self._seen:  # not an extension of the last call's tokens
            self._seen, self._run_start, self._run_fffd = [], 0, False
        for i in range(len(self._seen), len(tokens)):
            alone = self._alone.get(tokens[i])
            if alone is None:
                alone = self._alone[tokens[i]] = self.decode([tokens[i]])
            if len(alone) <= 1 and (alone == "\ufffd" or alone < "\x80"):
                self._run_fffd |= alone == "\ufffd"
            else:
                self._run_start, self._run_fffd = i + 1, False
        self._seen = tokens
        if not self._run_fffd:
            return len(text)
        return len(os.path.commonprefix([self.decode(tokens[:self._run_start]), text]))
