"""Mistral (``MistralForCausalLM``): BioMistral-7B, Mistral-7B v0.1 / v0.2 / v0.3.

Llama's block without biases, plus a sliding attention window: a token sees the
``sliding_window`` most recent tokens, itself included (4096 in the v0.1 family that BioMistral
inherits; null from v0.2 on, a plain causal mask).
"""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.arch._config import optional_int
from ortgen.arch._llama_family import IGNORED_KEYS, LLAMA_LAYOUT, read_llama_like
from ortgen.arch.spec import ArchSpec, ModelDims


def read_dims(config: Mapping[str, Any]) -> ModelDims:
    return read_llama_like(config, "mistral", qkv_bias=False, out_bias=False, mlp_bias=False,
                           sliding_window=optional_int(config, "sliding_window"))


SPEC = ArchSpec(
    model_type="mistral",
    description="Mistral (BioMistral-7B, Mistral-7B v0.1-v0.3): Llama's block, sliding attention window",
    base_prefixes=("model.", ""),
    layout=LLAMA_LAYOUT,
    read_dims=read_dims,
    ignored_keys=IGNORED_KEYS,
)
