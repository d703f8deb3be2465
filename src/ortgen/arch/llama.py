"""Llama 2, Llama 3 / 3.1 / 3.2 (``LlamaForCausalLM``): Meditron, OpenBioLLM, Llama-3.2-1B/3B.

RMSNorm, rotary positions (``rope_scaling`` types ``linear`` and ``llama3``), grouped-query
attention, gated SiLU MLP. Biases only when ``attention_bias`` (q, k, v and o) or ``mlp_bias``
(gate, up, down) say so. Llama-3.2-1B/3B tie the head to the embedding.
"""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.arch._llama_family import IGNORED_KEYS, LLAMA_LAYOUT, read_llama_like
from ortgen.arch.spec import ArchSpec, ModelDims


def read_dims(config: Mapping[str, Any]) -> ModelDims:
    attention_bias = bool(config.get("attention_bias", False))
    return read_llama_like(config, "llama", qkv_bias=attention_bias, out_bias=attention_bias,
                           mlp_bias=bool(config.get("mlp_bias", False)), sliding_window=None)


SPEC = ArchSpec(
    model_type="llama",
    description="Llama 2 / 3 / 3.1 / 3.2 (Meditron, OpenBioLLM ...): RMSNorm, rotary (linear, llama3), GQA, SiLU",
    base_prefixes=("model.", ""),
    layout=LLAMA_LAYOUT,
    read_dims=read_dims,
    ignored_keys=IGNORED_KEYS,
)
