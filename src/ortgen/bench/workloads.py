"""The benchmark workloads: fixed lengths (min_new_tokens = max_new_tokens) so every system does
the same work."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def random_prompts(count: int, length: int, vocab_size: int, first_token: int | None, seed: int = 0
                   ) -> list[list[int]]:
    """``count`` random prompts of exactly ``length`` token ids >= 4 (no special tokens), the first
    replaced by ``first_token`` when given (BioGPT and OPT prompts start with </s>)."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(count):
        body = [int(t) for t in rng.integers(4, vocab_size, size=length)]
        if first_token is not None:
            body[0] = first_token
        prompts.append(body)
    return prompts


@dataclass(frozen=True)
class Workload:
    name: str
    prompt_tokens: int
    new_tokens: int
    num_beams: int
    batch: int
    description: str

    def prompts(self, vocab_size: int, first_token: int | None, seed: int = 0) -> list[list[int]]:
        """``batch`` random prompts of exactly ``prompt_tokens`` tokens."""
        return random_prompts(self.batch, self.prompt_tokens, vocab_size, first_token, seed)

    @property
    def generated_tokens(self) -> int:
        return self.new_tokens * self.batch


WORKLOADS = {
    "W1": Workload("W1", 64, 64, 5, 1, "prompt 64 -> 64 new tokens, beam 5, batch 1"),
    "W2": Workload("W2", 512, 64, 5, 1, "retrieval QA: prompt 512 -> 64 new tokens, beam 5, batch 1"),
    "W3": Workload("W3", 128, 64, 1, 8, "throughput: batch 8 x prompt 128 -> 64 new tokens, greedy"),
}

# CI smoke size: the same shapes of work, minutes -> seconds
QUICK = {
    "W1": Workload("W1", 16, 8, 5, 1, "quick: prompt 16 -> 8, beam 5"),
    "W2": Workload("W2", 64, 8, 5, 1, "quick: prompt 64 -> 8, beam 5"),
    "W3": Workload("W3", 16, 8, 1, 4, "quick: batch 4 x prompt 16 -> 8, greedy"),
}
