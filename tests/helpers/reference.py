"""transformers as the oracle: forward passes and generate() in the shapes ortgen uses."""

from __future__ import annotations

import inspect

import numpy as np
import torch

from ortgen.validate.reference import cache_to_numpy, positions_from_mask
from ortgen.validate.reference import strip_generated as _strip


def _cache_kwarg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def hf_forward(model, ids: np.ndarray, mask: np.ndarray, cache=None):
    """(logits [B, S, V], presents per layer, cache) for new tokens ``ids`` after ``cache``."""
    total_mask = mask
    positions = positions_from_mask(total_mask)[:, -ids.shape[1]:]
    kwargs = {_cache_kwarg(model): cache}
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(total_mask),
                    position_ids=positions, use_cache=True, **kwargs)
    new_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return out.logits.numpy(), cache_to_numpy(new_cache), new_cache


def strip_generated(tokens, eos: int, pad: int) -> list[int]:
    """New tokens up to (not including) the first EOS, trailing pads removed."""
    return _strip(tokens, eos, pad)[0]


def hf_generate(model, ids: np.ndarray, mask: np.ndarray, *, eos: int, pad: int, num_beams: int = 1,
                num_return_sequences: int = 1, max_new_tokens: int = 10, min_new_tokens: int = 0,
                repetition_penalty: float = 1.0, length_penalty: float = 1.0, early_stopping: bool = False,
                return_scores: bool = False):
    """transformers generate() on a left-padded batch; per prompt, a list of stripped token lists."""
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
            do_sample=False, num_beams=num_beams, num_return_sequences=num_return_sequences,
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
            repetition_penalty=repetition_penalty, length_penalty=length_penalty, early_stopping=early_stopping,
            eos_token_id=eos, pad_token_id=pad, return_dict_in_generate=True, output_scores=return_scores,
        )
    width = ids.shape[1]
    seqs = out.sequences.numpy()
    grouped = [
        [strip_generated(seqs[b * num_return_sequences + r, width:], eos, pad) for r in range(num_return_sequences)]
        for b in range(ids.shape[0])
    ]
    if return_scores:
        scores = out.sequences_scores.numpy().reshape(ids.shape[0], num_return_sequences) if num_beams > 1 else None
        return grouped, scores, seqs
    return grouped


def hf_sequence_logprob(model, prompt: list[int], generated: list[int]) -> float:
    """Sum of log-probabilities transformers assigns to ``generated`` after ``prompt`` (no padding)."""
    ids = torch.tensor([prompt + generated], dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    start = len(prompt)
    return float(sum(logprobs[start - 1 + k, tok] for k, tok in enumerate(generated)))
