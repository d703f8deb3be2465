"""What validation runs: prompts and generation settings (defaults, or the user's files)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ortgen.errors import OrtgenError
from ortgen.jsonfile import parse_json, read_json

# Varied lengths, from one word to a retrieval-style paragraph. The first three form the
# left-padded batch every setting runs on; the others run as a second batch.
DEFAULT_PROMPTS = [
    "Aspirin",
    "The primary outcome was all-cause mortality at one year, and",
    "question: Do statins reduce mortality in patients with heart failure? context: In a randomized trial of "
    "5,011 patients with chronic systolic heart failure, rosuvastatin did not reduce the primary outcome of "
    "cardiovascular death, myocardial infarction or stroke. answer:",
    "COVID-19 is",
    "Metformin reduces hepatic glucose production by",
]

# Each entry runs on every prompt batch. Long enough for EOS to appear mid-sequence in a
# trained model, and with length penalties that make ONNX Runtime's length normalisation
# visible when it does (see docs/ort-vs-transformers.md).
DEFAULT_SETTINGS: list[dict[str, Any]] = [
    {"name": "greedy", "num_beams": 1, "max_new_tokens": 16},
    {"name": "greedy, repetition_penalty 1.3", "num_beams": 1, "max_new_tokens": 16, "repetition_penalty": 1.3},
    {"name": "greedy, min_new_tokens 8", "num_beams": 1, "max_new_tokens": 16, "min_new_tokens": 8},
    {"name": "beam 4", "num_beams": 4, "max_new_tokens": 16},
    {"name": "beam 4, return 2", "num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 16},
    {"name": "beam 4, return 4, length_penalty 0", "num_beams": 4, "num_return_sequences": 4,
     "max_new_tokens": 16, "length_penalty": 0.0},
    {"name": "beam 4, length_penalty 2", "num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 16,
     "length_penalty": 2.0},
    {"name": "beam 3, repetition_penalty 1.3, min_new_tokens 4", "num_beams": 3, "max_new_tokens": 16,
     "repetition_penalty": 1.3, "min_new_tokens": 4},
    {"name": "beam 4, early stopping", "num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 16,
     "early_stopping": True},
    {"name": "beam 4, early_stopping never", "num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 16,
     "early_stopping": "never"},
    {"name": "greedy, no_repeat_ngram_size 2", "num_beams": 1, "max_new_tokens": 16, "no_repeat_ngram_size": 2},
    {"name": "beam 4, no_repeat_ngram_size 3", "num_beams": 4, "max_new_tokens": 16, "no_repeat_ngram_size": 3},
]

# The fast level (``ortgen export --validate``): one batch, two settings.
FAST_SETTINGS: list[dict[str, Any]] = [
    {"name": "greedy", "num_beams": 1, "max_new_tokens": 8},
    {"name": "beam 4, return 2", "num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 8},
]

ALLOWED_SETTINGS = {"name", "num_beams", "max_new_tokens", "max_length", "min_new_tokens", "min_length",
                    "num_return_sequences",
                     "length_penalty", "repetition_penalty", "early_stopping", "no_repeat_ngram_size",
                     "bad_words_ids", "eos_token_id"}


@dataclass(frozen=True)
class Suite:
    """Prompt batches (token ids, unpadded) and the settings each batch runs with."""

    batches: list[list[list[int]]]
    texts: list[list[str]] | None
    settings: list[dict[str, Any]]
    sampling_draws: int = 1000
    fast: bool = False
    notes: list[str] = field(default_factory=list)


def random_prompts(vocab_size: int, prefix: list[int], lengths: list[int], seed: int = 0) -> list[list[int]]:
    """Token-id prompts for packages without a tokenizer."""
    rng = np.random.default_rng(seed)
    low = min(4, vocab_size - 1)
    return [prefix + [int(t) for t in rng.integers(low, vocab_size, size=n)] for n in lengths]


def load_prompts(path: Path) -> list[str] | list[list[int]]:
    """A text file (one prompt per line) or JSON (a list of strings, or of token-id lists)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OrtgenError(f"cannot read prompts file {path}: {exc.strerror or exc}") from exc
    if path.suffix == ".json":
        data = parse_json(text, path)
        valid = isinstance(data, list) and data and (
            all(isinstance(p, str) and p.strip() for p in data)
            or all(isinstance(p, list) and p and all(isinstance(t, int) for t in p) for p in data))
        if not valid:
            raise OrtgenError(f"{path} must hold a non-empty list of prompt strings or of token-id lists")
        return data
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise OrtgenError(f"{path} holds no prompts (one per line)")
    return prompts


def load_settings(path: Path) -> list[dict[str, Any]]:
    """JSON: a list of objects with Generator option names (greedy or beam search)."""
    data = read_json(path, what="settings file ")
    if not isinstance(data, list) or not data or not all(isinstance(s, dict) for s in data):
        raise OrtgenError(f"{path} must hold a non-empty list of settings objects")
    for i, entry in enumerate(data):
        unknown = set(entry) - ALLOWED_SETTINGS
        if unknown:
            raise OrtgenError(
                f"{path}: settings #{i} has unknown key(s) {', '.join(sorted(unknown))}; "
                f"allowed: {', '.join(sorted(ALLOWED_SETTINGS))} (sampling is validated statistically, separately)"
            )
        entry.setdefault("name", json.dumps({k: v for k, v in entry.items()}, sort_keys=True))
    return data


def batches_of(prompts: list, size: int = 3) -> list[list]:
    return [prompts[i:i + size] for i in range(0, len(prompts), size)]
