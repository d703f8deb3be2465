"""transformers as the oracle: forward passes, generate() and log-probabilities.

The only module (with the rest of ``ortgen.validate``) where ortgen and transformers
meet. Inputs and outputs are numpy arrays and plain lists in the layouts ortgen uses.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import numpy as np

from ortgen.errors import ModelSourceError
from ortgen.runtime.settings import GenerationSettings


@dataclass(frozen=True)
class ReferenceSequence:
    """One sequence transformers returned: new tokens up to (not including) EOS."""

    token_ids: list[int]
    finished: bool
    score: float | None


def positions_from_mask(mask: np.ndarray):
    """Position ids as transformers' generate() computes them: cumsum - 1, pads at 0."""
    import torch

    m = torch.tensor(mask, dtype=torch.long)
    return (m.cumsum(-1) - 1).masked_fill(m == 0, 0)


def cache_to_numpy(cache: Any) -> list[np.ndarray]:
    """Per layer: key and value stacked, [2, B, heads, T, head_dim] (the decoder's present layout)."""
    if hasattr(cache, "layers"):
        pairs = [(layer.keys, layer.values) for layer in cache.layers]
    elif hasattr(cache, "key_cache"):
        pairs = list(zip(cache.key_cache, cache.value_cache))
    else:
        pairs = list(cache)
    return [np.stack([k.detach().numpy(), v.detach().numpy()]) for k, v in pairs]


def strip_generated(tokens: Any, eos: int, pad: int) -> tuple[list[int], bool]:
    """New tokens up to (not including) the first EOS, trailing pads removed; and whether EOS was seen."""
    tokens = [int(t) for t in tokens]
    if eos in tokens:
        return tokens[: tokens.index(eos)], True
    while tokens and tokens[-1] == pad:
        tokens.pop()
    return tokens, False


class Reference:
    """A transformers causal LM loaded in float32 on the CPU."""

    def __init__(self, model: Any, source: str) -> None:
        self.model = model
        self.source = source
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    @classmethod
    def load(cls, source: str) -> "Reference":
        """Load with transformers; a fairseq BioGPT directory is converted (in a temporary directory) first."""
        try:
            import torch
            from transformers import AutoModelForCausalLM
        except ImportError as exc:
            raise ModelSourceError("validation needs transformers and torch: pip install 'ortgen[export]'") from exc
        from ortgen.convert.source import resolve_source

        with resolve_source(source, show_progress=False) as resolved:  # a fairseq directory: converted first
            try:
                try:
                    model = AutoModelForCausalLM.from_pretrained(resolved.directory, dtype=torch.float32)
                except TypeError:  # transformers < 4.56 names it torch_dtype
                    model = AutoModelForCausalLM.from_pretrained(resolved.directory, torch_dtype=torch.float32)
            except (OSError, ValueError) as exc:
                raise ModelSourceError(f"transformers could not load the reference model {source!r}: {exc}") from exc
        return cls(model.eval(), source)

    # -- forward ------------------------------------------------------------------------

    def forward(self, ids: np.ndarray, mask: np.ndarray, cache: Any = None) -> tuple[np.ndarray, list[np.ndarray], Any]:
        """(logits [B, S, V], presents per layer, cache) for new tokens ``ids`` after ``cache``;
        ``mask`` covers past and new tokens."""
        import torch

        positions = positions_from_mask(mask)[:, -ids.shape[1]:]
        with torch.no_grad():
            out = self.model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                             position_ids=positions, use_cache=True, **{self._cache_kwarg: cache})
        new_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return out.logits.float().numpy(), cache_to_numpy(new_cache), new_cache

    def next_token_logprobs(self, prefix: list[int]) -> np.ndarray:
        """log-softmax over the vocabulary after ``prefix`` (float64)."""
        import torch

        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([prefix], dtype=torch.long)).logits[0, -1].double()
        return torch.log_softmax(logits, dim=-1).numpy()

    def sequence_logprob(self, prompt: list[int], generated: list[int]) -> float:
        """Sum of the log-probabilities of ``generated`` after ``prompt``."""
        import torch

        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([prompt + generated], dtype=torch.long)).logits[0].double()
        logprobs = torch.log_softmax(logits, dim=-1)
        return float(sum(logprobs[len(prompt) - 1 + k, tok] for k, tok in enumerate(generated)))

    def sampling_distribution(self, prompt: list[int], temperature: float, top_p: float, top_k: int = 0) -> np.ndarray:
        """The next-token distribution transformers samples from (temperature, top-k, top-p, in that order)."""
        import torch
        from transformers.generation.logits_process import (
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        ids = torch.tensor([prompt], dtype=torch.long)
        with torch.no_grad():
            scores = self.model(input_ids=ids).logits[:, -1].float()
        if temperature != 1.0:
            scores = TemperatureLogitsWarper(temperature)(ids, scores)
        if top_k:
            scores = TopKLogitsWarper(top_k, min_tokens_to_keep=1)(ids, scores)
        if top_p < 1.0:
            scores = TopPLogitsWarper(top_p, min_tokens_to_keep=1)(ids, scores)
        return torch.softmax(scores.double(), dim=-1)[0].numpy()

    # -- generate -----------------------------------------------------------------------

    def generate_alone(self, prompts: list[list[int]], settings: GenerationSettings, *, eos: int, pad: int,
                       tokenizer: Any = None) -> list[list[ReferenceSequence]]:
        """transformers generate() on each prompt by itself (what ortgen's step engine promises:
        a request's result depends on its own prompt only)."""
        from ortgen.runtime.graph_runner import left_pad

        return [self.generate(*left_pad([prompt], pad), settings, eos=eos, pad=pad, tokenizer=tokenizer)[0]
                for prompt in prompts]

    def generate(
        self, ids: np.ndarray, mask: np.ndarray, settings: GenerationSettings, *, eos: int, pad: int,
        tokenizer: Any = None, seed: int | None = None,
    ) -> list[list[ReferenceSequence]]:
        """transformers generate() with ortgen's settings, on a left-padded batch.

        ``eos`` is the model's EOS (used when the settings give none); sequences are cut at
        the first of the settings' EOS ids. Sampling needs ``seed`` (torch's generator).
        """
        import torch

        eos_ids = settings.eos_token_ids or [eos]
        kwargs: dict[str, Any] = dict(
            do_sample=settings.do_sample, num_beams=settings.num_beams,
            num_return_sequences=settings.num_return_sequences,
            min_new_tokens=settings.min_new_tokens or None, min_length=settings.min_length or None,
            repetition_penalty=settings.repetition_penalty, length_penalty=settings.length_penalty,
            early_stopping=settings.early_stopping, no_repeat_ngram_size=settings.no_repeat_ngram_size or None,
            bad_words_ids=settings.bad_words_ids or None,
            eos_token_id=eos_ids if len(eos_ids) > 1 else eos_ids[0], pad_token_id=pad,
            return_dict_in_generate=True, output_scores=settings.num_beams > 1,
        )
        if settings.max_new_tokens is not None:
            kwargs["max_new_tokens"] = settings.max_new_tokens
        else:
            kwargs["max_length"] = settings.max_length
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
            torch.manual_seed(0 if seed is None else seed)
        if settings.stop_strings:
            kwargs.update(stop_strings=settings.stop_strings, tokenizer=tokenizer)
        with torch.no_grad():
            out = self.model.generate(input_ids=torch.tensor(ids, dtype=torch.long),
                                      attention_mask=torch.tensor(mask), **kwargs)
        width, n = ids.shape[1], settings.num_return_sequences
        sequences = out.sequences.numpy()
        scores = None
        if settings.num_beams > 1 and getattr(out, "sequences_scores", None) is not None:
            scores = out.sequences_scores.numpy()
        result = []
        for b in range(ids.shape[0]):
            group = []
            for r in range(n):
                row = [int(t) for t in sequences[b * n + r, width:]]
                cut = next((i for i, t in enumerate(row) if t in eos_ids), None)
                if cut is not None:
                    tokens, finished = row[:cut], True
                else:
                    tokens, finished = strip_generated(row, -1, pad)[0], False
                score = float(scores[b * n + r]) if scores is not None else None
                group.append(ReferenceSequence(tokens, finished, score))
            result.append(group)
        return result
