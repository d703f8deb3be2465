"""What a JSON body must be before a route reads it: valid Unicode, and not nested without end.

Python's JSON parser accepts a lone UTF-16 surrogate escape (``"abc\\ud800def"``) and makes a string
that cannot be encoded again: echoed back, it crashed the response (500). And it gives up on deep
nesting with a RecursionError that surfaced as "not valid JSON". Both are refused here with a 400
that says what is wrong, in time proportional to the body (regular expressions and numpy, no Python
loop over its bytes).
"""

from __future__ import annotations

import json
import re

import numpy as np

MAX_JSON_DEPTH = 64

_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("{"), ord("[")]] = 1
_OPEN[[ord("}"), ord("]")]] = -1


def json_depth(body: bytes) -> int:
    """How deeply objects and arrays nest in ``body`` (brackets inside strings do not count)."""
    skeleton = _STRING.sub(b"", body)
    if not skeleton:
        return 0
    steps = _OPEN[np.frombuffer(skeleton, dtype=np.uint8)].astype(np.int32)
    return int(np.cumsum(steps).max(initial=0))


def _lone_surrogate(value) -> str | None:
    """The first string inside ``value`` holding a lone surrogate, or None."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"\\u{ord(item[exc.start]):04x} at character {exc.start} of {item[:40]!r}"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def check_json_body(body: bytes) -> str | None:
    """Why ``body`` cannot be accepted, or None (malformed JSON is left to the route's own parser)."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        return f"the body nests {depth} levels deep; this server accepts at most {MAX_JSON_DEPTH}"
    if _SURROGATE.search(body):  # only then is the body parsed here (a pair is fine; a lone half is not)
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            return None
        where = _lone_surrogate(parsed)
        if where:
            return (f"the body holds invalid Unicode: a lone surrogate {where}; text must be valid Unicode "
                    "(surrogates only in pairs)")
    return None
