"""From a request's settings to the search that runs it on the step engine.

The step engine is ortgen's own generation loop over ``decoder_engine.onnx``: it does what ONNX
Runtime's generation operators cannot, with transformers' semantics (beam search normalised as
transformers normalises it, beam sampling, top-k, several EOS ids, no_repeat_ngram_size,
bad_words_ids, stop strings, streaming, per-token log-probabilities), and runs many requests in
one decoder call per step (:mod:`ortgen.runtime.scheduler`). This module builds, for one
request, its logits processors and its search (:mod:`ortgen.runtime.search`). Numpy only: no
torch, no transformers.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ortgen.errors import GenerationSettingsError
from ortgen.runtime.grammar import GrammarEngine, GrammarMask, GrammarState
from ortgen.runtime.processors import build_processors
from ortgen.runtime.search import Search, SearchSpec, make_search
from ortgen.runtime.settings import GenerationSettings
from ortgen.runtime.stopping import StopStrings, token_surface
from ortgen.runtime.tokenizer import Tokenizer


class SearchFactory:
    """Builds each request's search; caches stop-string matchers (their token texts) across requests.
    ``grammar``: the engine that compiles structured-output constraints (None: a package without a
    tokenizer, which cannot have them)."""

    def __init__(self, tokenizer: Tokenizer | None, pad_token_id: int, grammar: GrammarEngine | None = None) -> None:
        self.tokenizer = tokenizer
        self.pad_token_id = pad_token_id
        self.grammar = grammar
        self._stop_cache: dict[tuple[str, ...], StopStrings] = {}

    def grammar_state(self, settings: GenerationSettings, prompt: Sequence[int]) -> GrammarState | None:
        if settings.constraint is None:
            return None
        if self.grammar is None:
            raise GenerationSettingsError("structured output needs the package's tokenizer (the bytes of its "
                                          "tokens), and this package has none")
        return self.grammar.state(settings.constraint, len(prompt), settings.eos_token_ids)

    def stop_strings(self, stops: Sequence[str]) -> StopStrings | None:
        if not stops:
            return None
        if self.tokenizer is None:
            raise GenerationSettingsError("stop_strings need a tokenizer, and this package has none")
        key = tuple(stops)
        if key not in self._stop_cache:
            tok = self.tokenizer
            surface = token_surface(lambda ids: tok.decode(ids, skip_special_tokens=False), tok.encode_plain)
            self._stop_cache[key] = StopStrings(stops, surface)
        return self._stop_cache[key]

    def spec(self, settings: GenerationSettings, prompt: Sequence[int]) -> SearchSpec:
        """``settings`` must be concrete for this prompt (max_new_tokens set)."""
        assert settings.max_new_tokens is not None
        width = settings.width
        grammar = self.grammar_state(settings, prompt)
        processors = build_processors(
            repetition_penalty=settings.repetition_penalty,
            padding_lengths=np.zeros(width, dtype=np.int64),  # one prompt alone: no padding
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
            bad_words_ids=settings.bad_words_ids,
            min_length=settings.min_length,
            min_new_tokens=settings.min_new_tokens,
            prompt_length=len(prompt),
            eos_token_ids=settings.eos_token_ids,
            do_sample=settings.do_sample,
            num_beams=settings.num_beams,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
            constraint=None if grammar is None else GrammarMask(grammar),
        )
        return SearchSpec(
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            num_return_sequences=settings.num_return_sequences,
            do_sample=settings.do_sample,
            length_penalty=settings.length_penalty,
            early_stopping=settings.early_stopping,
            eos_token_ids=settings.eos_token_ids,
            pad_token_id=self.pad_token_id,
            processors=processors,
            stop_strings=self.stop_strings(settings.stop_strings),
            seed=settings.seed,
            logprobs=settings.logprobs,
            grammar=grammar,
        )

    def search(self, settings: GenerationSettings, prompt: Sequence[int]) -> Search:
        return make_search(prompt, self.spec(settings, prompt))
