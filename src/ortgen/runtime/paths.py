"""One request's cache row, shared by its ``width`` sequences (beams, or samples).

The prompt's keys and values are written once; then, at every step, each of the ``width``
sequences appends one token at its own new slot, so a row holds::

    [ prompt (P tokens) | step 0: seq 0, seq 1, ..., seq w-1 | step 1: seq 0, ... | ... ]

A sequence attends to the prompt and to the slots on its own path (its ancestors after each
beam reorder), which :class:`Paths` tracks and turns into the rows of the engine's additive
``attention_bias`` (0 visible, -inf hidden); com.microsoft GroupQueryAttention applies it on top
of its causal mask. So the prompt runs once and is stored once per request (transformers and
ONNX Runtime's BeamSearch run and store it ``num_beams`` times), a step reads the prompt's keys
and values once for all beams, and a beam reorder copies no keys or values, only a small boolean
table.
"""

from __future__ import annotations

import numpy as np

_HIDDEN = np.float32(-np.inf)


def window_bias(query_positions: np.ndarray, key_positions: np.ndarray, window: int,
                bias: np.ndarray | None = None) -> np.ndarray:
    """``[queries, keys]`` additive bias hiding keys outside a sliding window (Mistral's): a query at
    position q sees keys at positions in ``(q - window, q]``, as transformers' ``sliding_window``
    mask; ``bias`` (what else is hidden) is extended, or a new one returned."""
    outside = key_positions[None, :] <= query_positions[:, None] - window
    if bias is None:
        bias = np.zeros(outside.shape, np.float32)
    bias[outside] = _HIDDEN
    return bias


class Paths:
    """``visible[j, s * width + i]``: the token sequence ``i`` added at step ``s`` is an ancestor of
    (or is) sequence ``j``'s latest token."""

    def __init__(self, prompt_length: int, width: int, max_steps: int) -> None:
        self.prompt_length, self.width = prompt_length, width
        self.visible = np.zeros((width, max(max_steps, 1) * width), dtype=bool)
        self.steps = 0

    def advance(self, parents: np.ndarray | None) -> None:
        """Sequence j continues sequence ``parents[j]`` (None: its own) and adds its token of this step."""
        step, w = self.steps, self.width
        if parents is not None and step > 0:
            used = step * w
            self.visible[:, :used] = self.visible[parents, :used]
        self.visible[np.arange(w), step * w + np.arange(w)] = True
        self.steps += 1

    @property
    def length(self) -> int:
        """The row's length: the prompt and every token fed so far."""
        return self.prompt_length + self.steps * self.width

    def key_positions(self, total: int) -> np.ndarray:
        """The position of the token in each of the row's first ``total`` slots (a beam's slot is not its
        position: step s's tokens all sit at position prompt_length + s)."""
        slots = np.arange(total)
        steps = (slots - self.prompt_length) // self.width
        return np.where(slots < self.prompt_length, slots, self.prompt_length + steps)

    def bias(self, total: int) -> np.ndarray:
        """``[width, total]`` additive bias over the row's absolute positions for this step's tokens."""
        bias = np.zeros((self.width, total), np.float32)
        generated = self.steps * self.width
        start, end = self.prompt_length, min(self.prompt_length + generated, total)
        if end > start:
            bias[:, start:end] = np.where(self.visible[:, : end - start], np.float32(0), np.float32(-np.inf))
        return bias
