"""Stopping criteria with transformers' semantics: EOS (several ids), max length, stop strings.

Stop strings follow transformers' ``StopStringCriteria``: a row stops when an occurrence
of a stop string ends within its last token, possibly spanning earlier tokens and
overhanging either end ("st" + "opera" stops on "stop", so does "xstopx"; "stop" + "at" does
not). Tokens are compared through their surface strings, obtained as transformers obtains
them: the text a token adds after a fixed prefix when decoded. The check reads the last token's
text and the ``longest - 1`` characters before it through one automaton of all the stop strings
(:class:`~ortgen.runtime.stop_matcher.StopMatcher`): its cost does not grow with their number.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence

import numpy as np

from ortgen.runtime.stop_matcher import StopMatcher

_PREFIX = "abcdef"


class StopStrings:
    """Per-row check that a stop string overlaps the end of the token sequence."""

    def __init__(self, stop_strings: Sequence[str], token_text: Callable[[int], str]) -> None:
        self.stop_strings = [s for s in stop_strings if s]
        self._matcher = StopMatcher(self.stop_strings)
        self._token_text = lru_cache(maxsize=200_000)(token_text)

    def _matches(self, tokens: Sequence[int]) -> bool:
        """Does an occurrence of a stop string end inside the last token's text?"""
        last = self._token_text(int(tokens[-1]))
        pieces: list[str] = []
        before = 0
        i = len(tokens) - 2
        while before < self._matcher.longest - 1 and i >= 0:  # enough text before the last token
            piece = self._token_text(int(tokens[i]))
            pieces.append(piece)
            before += len(piece)
            i -= 1
        text = "".join(reversed(pieces)) + last
        return self._matcher.ends_after(text, before)

    def __call__(self, generated: Sequence[Sequence[int]]) -> np.ndarray:
        """For each row's generated tokens: does a stop string end in its last token?"""
        done = np.zeros(len(generated), dtype=bool)
        for row, tokens in enumerate(generated):
            if len(tokens) and self._matcher and self._matches(tokens):
                done[row] = True
        return done


def token_surface(decode: Callable[[list[int]], str], encode_plain: Callable[[str], list[int]]) -> Callable[[int], str]:
    """A token's surface string: decode(prefix + [token]) minus the decoded prefix (transformers' method)."""
    base = encode_plain(_PREFIX)

    def text(token: int) -> str:
        decoded = decode(base + [token])
        index = decoded.find(_PREFIX)
        return decoded[index + len(_PREFIX):] if index >= 0 else decoded

    return text
