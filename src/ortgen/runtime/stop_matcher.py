"""Finding any of many stop strings in text at a cost that does not depend on how many there are.

An Aho-Corasick automaton over the stop strings: one pass over the text, one state transition per
character, reporting every occurrence that ends at each character. Built once per request (work
proportional to the stop strings' total length); then checking a window of text costs its length,
whether the request has 1 stop string or 10,000 (a loop over the stop strings made a 1,000-token
request with 10,000 of them take 187 s, and slowed every request sharing its steps).

    matcher = StopMatcher(["\\n\\n", " is is"])
    matcher.first(text)              # (start, end) of the occurrence that completes first, or None
    matcher.ends_after(text, i)      # does an occurrence end after character i?
"""

from __future__ import annotations

from collections import deque
from typing import Sequence


class StopMatcher:
    """The automaton of a set of stop strings (empty strings are ignored)."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = sorted({s for s in stops if s}, key=len)
        self.longest = max((len(s) for s in self.stops), default=0)
        # trie: goto[state][char] -> state; _match[state]: length of the longest stop string that ends at
        # this state (itself or through failure links), 0 for none
        self._goto: list[dict[str, int]] = [{}]
        self._match: list[int] = [0]
        for stop in self.stops:
            state = 0
            for ch in stop:
                nxt = self._goto[state].get(ch)
                if nxt is None:
                    nxt = len(self._goto)
                    self._goto[state][ch] = nxt
                    self._goto.append({})
                    self._match.append(0)
                state = nxt
            self._match[state] = max(self._match[state], len(stop))
        self._fail = [0] * len(self._goto)
        queue = deque(self._goto[0].values())
        while queue:  # breadth first: a state's failure link is set before its children's
            state = queue.popleft()
            for ch, child in self._goto[state].items():
                queue.append(child)
                link = self._fail[state]
                while link and ch not in self._goto[link]:
                    link = self._fail[link]
                target = self._goto[link].get(ch, 0)
                self._fail[child] = target if target != child else 0
                self._match[child] = max(self._match[child], self._match[self._fail[child]])

    def __bool__(self) -> bool:
        return bool(self.stops)

    def _step(self, state: int, ch: str) -> int:
        while state and ch not in self._goto[state]:
            state = self._fail[state]
        return self._goto[state].get(ch, 0)

    def first(self, text: str) -> tuple[int, int] | None:
        """(start, end) of the occurrence that completes first in ``text`` (of those completing at the same
        character, the longest), or None: where generation, reading the text as it comes, would stop."""
        state = 0
        for i, ch in enumerate(text):
            state = self._step(state, ch)
            if self._match[state]:
                return i + 1 - self._match[state], i + 1
        return None

    def ends_after(self, text: str, position: int) -> bool:
        """Does an occurrence of a stop string end after character ``position`` of ``text``? Only the
        last ``longest - 1`` characters before ``position`` are read (a match must end past it)."""
        state = 0
        for i in range(max(0, position - self.longest + 1), len(text)):
            state = self._step(state, text[i])
            if i >= position and self._match[state]:
                return True
        return False


class StopScanner:
    """:meth:`StopMatcher.first` over text that arrives in pieces (a stream): each piece is read once."""

    def __init__(self, matcher: StopMatcher) -> None:
        self.matcher = matcher
        self.state = 0
        self.seen = 0  # characters read so far
        self.match: tuple[int, int] | None = None

    def feed(self, text: str) -> tuple[int, int] | None:
        """Read ``text`` (the next piece); returns (start, end) in the whole stream once a stop string has
        completed (and from then on), else None."""
        if self.match is not None or not self.matcher:
            self.seen += len(text)
            return self.match
        m = self.matcher
        for i, ch in enumerate(text):
            self.state = m._step(self.state, ch)
            if m._match[self.state]:
                end = self.seen + i + 1
                self.match = (end - m._match[self.state], end)
                break
        self.seen += len(text)
        return self.match
