"""Text of a completion in the context of its prompt, and each token's place in that text.

Detokenizers do not all concatenate. BioGPT's Moses detokenizer joins words with spaces and attaches
punctuation, so the completion decoded alone ("of of of") lacks the space it has after the prompt
("Aspirin reduces the risk of" + " of of of"), a token decoded alone loses its leading space, and
offsets summed from such tokens drift by one character a token. What a client reads must agree with
the detokenised whole: the completion is the full text minus the prompt's text, and a token's text
is the slice of that text it produced (so the tokens concatenate to the text and the offsets index
into it). Byte-level BPE (GPT-2) concatenates, and comes out as before.
"""

from __future__ import annotations

from typing import Callable, Sequence

Decode = Callable[[list[int]], str]


def continuation(decode: Decode, prompt_ids: Sequence[int], ids: Sequence[int]) -> str:
    """The text ``ids`` add after ``prompt_ids``: decode(prompt + ids) minus decode(prompt) (decode(ids)
    when the prompt's text is not a prefix of the whole, which a detokenizer may cause at the seam)."""
    if not ids:
        return ""
    if not prompt_ids:
        return decode(list(ids))
    head = decode(list(prompt_ids))
    whole = decode(list(prompt_ids) + list(ids))
    if whole.startswith(head):
        return whole[len(head):]
    return decode(list(ids))


def align(text: str, surfaces: Sequence[str], start: int = 0) -> list[tuple[str, int]]:
    """(token text, offset) per token: the slice of ``text`` each token produced, found from its surface
    string (its text decoded alone or after a prefix), in order, from ``start``. A token whose surface
    cannot be found where expected (a partial character of byte-level BPE, a special token) gets the
    empty slice at the current position, so offsets stay ordered and within the text."""
    out: list[tuple[str, int]] = []
    cursor = start
    for surface in surfaces:
        if surface and text.startswith(surface, cursor):
            out.append((surface, cursor))
            cursor += len(surface)
            continue
        core = surface.strip()
        if core:
            found = text.find(core, cursor)
            if found >= 0 and not text[cursor:found].strip():  # only whitespace between: this token's own
                out.append((text[cursor:found + len(core)], cursor))
                cursor = found + len(core)
                continue
        out.append(("", cursor))
    return out
