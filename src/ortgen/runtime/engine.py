"""The step engine: ortgen's own generation loop over ``decoder_engine.onnx``.

It does what ONNX Runtime's generation operators cannot, with transformers' semantics:
beam search normalised as transformers normalises it, beam sampling, top-k, several EOS
ids, no_repeat_ngram_size, bad_words_ids, stop strings, streaming. Each prompt is run once
and its keys and values are shared (copied) across its beams, where the operators run it
once per beam. Numpy only: no torch, no transformers.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from ortgen.package.manifest import Manifest
from ortgen.runtime.engine_decoder import EngineDecoder
from ortgen.runtime.processors import build_processors
from ortgen.runtime.search import Hypothesis, SearchSpec, StepEvent, beam_search, sample_or_greedy
from ortgen.runtime.settings import GenerationSettings
from ortgen.runtime.stopping import StopStrings, token_surface
from ortgen.runtime.tokenizer import Tokenizer


class StepEngine:
    def __init__(self, session, manifest: Manifest, tokenizer: Tokenizer | None) -> None:
        a = manifest.architecture
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.decoder = EngineDecoder(session, a.num_layers, a.num_heads, a.head_dim, a.vocab_size)
        self._stop_cache: dict[tuple[str, ...], StopStrings] = {}

    def _stop_strings(self, stops: Sequence[str]) -> StopStrings | None:
        if not stops:
            return None
        if self.tokenizer is None:
            from ortgen.errors import GenerationSettingsError

            raise GenerationSettingsError("stop_strings need a tokenizer, and this package has none")
        key = tuple(stops)
        if key not in self._stop_cache:
            tok = self.tokenizer
            surface = token_surface(lambda ids: tok.decode(ids, skip_special_tokens=False), tok.encode_plain)
            self._stop_cache[key] = StopStrings(stops, surface)
        return self._stop_cache[key]

    def spec(self, settings: GenerationSettings, prompts: Sequence[Sequence[int]]) -> SearchSpec:
        width = max(len(p) for p in prompts)
        replicas = settings.num_beams if settings.num_beams > 1 else settings.num_return_sequences
        padding = np.repeat([width - len(p) for p in prompts], replicas)
        processors = build_processors(
            repetition_penalty=settings.repetition_penalty,
            padding_lengths=padding,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
            bad_words_ids=settings.bad_words_ids,
            min_length=settings.min_length,
            min_new_tokens=settings.min_new_tokens,
            prompt_length=width,
            eos_token_ids=settings.eos_token_ids,
            do_sample=settings.do_sample,
            num_beams=settings.num_beams,
            temperature=settings.temperature,
            top_k=settings.top_k,
            top_p=settings.top_p,
        )
        return SearchSpec(
            max_new_tokens=settings.max_new_tokens,
            num_beams=settings.num_beams,
            num_return_sequences=settings.num_return_sequences,
            do_sample=settings.do_sample,
            length_penalty=settings.length_penalty,
            early_stopping=settings.early_stopping,
            eos_token_ids=settings.eos_token_ids,
            pad_token_id=self.manifest.special_tokens.pad_token_id,
            processors=processors,
            stop_strings=self._stop_strings(settings.stop_strings),
            seed=settings.seed,
        )

    def generate(self, prompts: Sequence[Sequence[int]], settings: GenerationSettings) -> list[list[Hypothesis]]:
        """Per prompt, ``num_return_sequences`` hypotheses (best first for beam search)."""
        spec = self.spec(settings, prompts)
        if settings.num_beams > 1:
            return beam_search(self.decoder, prompts, spec)
        result: list[list[Hypothesis]] = []
        for event in sample_or_greedy(self.decoder, prompts, spec):
            if not isinstance(event, StepEvent):
                result = event
        return result

    def events(self, prompts: Sequence[Sequence[int]], settings: GenerationSettings
               ) -> Iterator[StepEvent | list[list[Hypothesis]]]:
        """Greedy / sampling step by step (StepEvents), then the hypotheses."""
        return sample_or_greedy(self.decoder, prompts, self.spec(settings, prompts))
