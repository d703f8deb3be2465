"""Tiny random models for structured-output tests, one per kind of vocabulary, and random schemas.

- ``biogpt``: Moses-BPE learned from the demo corpus plus JSON lines (so that braces, quotes and
  digits are in its vocabulary, as they are in BioGPT's real one);
- ``gpt2``: byte-level BPE (the zoo's tiny GPT-2);
- ``llama``: a Llama-2-style SentencePiece BPE with byte fallback and a tiny LlamaForCausalLM.

Random weights produce garbage unless constrained: whatever comes out valid is the constraint's doing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

JSON_LINES = [
    '{"answer": "yes", "count": 12, "score": -0.5, "ok": true, "none": null}',
    '{"items": [1, 2, 3], "labels": ["a", "b"], "nested": {"x": 0, "y": false}}',
    '{"verdict": "maybe", "citations": [4, 7], "confidence": 0.75, "dose_mg": 100}',
    "[0, 5, 9, 13, 42, 678] {} [] {[ ]} ',' ':' '\"' 1e3 2E-2 -7",
]
TOKENIZERS = ("biogpt", "gpt2", "llama")


def build_package(kind: str, root: Path, zoo, chat_template: Path | None = None) -> Path:
    """An exported tiny package whose tokenizer is of ``kind`` (see the module docstring); ``chat_template``:
    a template file to ship with it (llama only)."""
    import torch
    from transformers import BioGptConfig, BioGptForCausalLM, LlamaConfig, LlamaForCausalLM

    from ortgen.demo.models import write_demo_tokenizer
    from ortgen.export.package import ExportOptions, export_package

    if kind == "gpt2":
        return zoo.package("gpt2")
    model_dir, out = root / f"{kind}-model", root / f"{kind}-package"
    torch.manual_seed(0)
    if kind == "biogpt":
        vocab = write_demo_tokenizer(model_dir, num_merges=300, extra_lines=JSON_LINES)
        model = BioGptForCausalLM(BioGptConfig(vocab_size=vocab, hidden_size=48, num_hidden_layers=2,
                                               num_attention_heads=3, intermediate_size=96,
                                               max_position_embeddings=128))
        model.generation_config.pad_token_id = 1
    elif kind == "llama":
        from tests.helpers.llama_tokenizers import build_llama2

        built = build_llama2(model_dir)
        model = LlamaForCausalLM(LlamaConfig(vocab_size=built.vocab_size, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                             intermediate_size=128, max_position_embeddings=256,
                                             bos_token_id=1, eos_token_id=2, pad_token_id=0))
    else:
        raise ValueError(kind)
    model.save_pretrained(model_dir)
    if chat_template is not None:
        (model_dir / "chat_template.jinja").write_text(chat_template.read_text(encoding="utf-8"), encoding="utf-8")
    export_package(str(model_dir), out, ExportOptions(show_progress=False))
    return out


# -- random schemas ------------------------------------------------------------------------------

WORDS = ["yes", "no", "maybe", "aspirin", "dose", "risk", "a", "b"]


def _leaf(rng: random.Random) -> dict[str, Any]:
    kind = rng.choice(["string", "integer", "number", "boolean", "enum", "string_enum", "null"])
    if kind == "string":
        return {"type": "string", "maxLength": rng.randint(1, 6)}
    if kind == "integer":
        low = rng.randint(-50, 50)
        return {"type": "integer", "minimum": low, "maximum": low + rng.randint(0, 500)}
    if kind == "number":
        return {"type": "number", "minimum": -10, "maximum": 10}
    if kind == "boolean":
        return {"type": "boolean"}
    if kind == "enum":
        return {"enum": rng.sample(["yes", "no", "maybe", 1, 2.5, True, None], rng.randint(1, 4))}
    if kind == "string_enum":
        return {"type": "string", "enum": rng.sample(WORDS, rng.randint(1, 4))}
    return {"type": "null"}


def _value(rng: random.Random, depth: int) -> dict[str, Any]:
    roll = rng.random()
    if depth > 0 and roll < 0.2:
        return random_object(rng, depth - 1)
    if roll < 0.4:
        return {"type": "array", "items": _leaf(rng) if depth == 0 or rng.random() < 0.7 else random_object(rng, 0),
                "minItems": rng.randint(0, 1), "maxItems": rng.randint(1, 3)}
    return _leaf(rng)


def random_object(rng: random.Random, depth: int = 2) -> dict[str, Any]:
    """An object schema: 1-4 properties of every kind (nested objects, arrays, enums, numbers, strings),
    some required, no others allowed."""
    names = rng.sample(["answer", "verdict", "count", "items", "score", "ok", "dose", "tags", "x", "y"],
                       rng.randint(1, 4))
    properties = {name: _value(rng, depth) for name in names}
    required = [n for n in names if rng.random() < 0.6]
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


def random_schemas(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [random_object(rng, depth=rng.randint(0, 2)) for _ in range(count)]


def parses_and_validates(text: str, schema: dict[str, Any]) -> bool:
    import jsonschema

    try:
        jsonschema.validate(json.loads(text), schema)
    except (json.JSONDecodeError, jsonschema.ValidationError):
        return False
    return True
