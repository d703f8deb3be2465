"""microsoft/BioGPT (``BioGptForCausalLM``).

Split q/k/v projections, learned positions looked up at ``position + 2``, token
embeddings scaled by sqrt(hidden) when ``scale_embedding``, exact (erf) GELU, pre-LN
layers and a final LayerNorm, output projection tied to the token embedding.
Every LayerNorm is ``nn.LayerNorm(hidden)`` with eps 1e-5, whatever
``config.layer_norm_eps`` says (transformers never passes it).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ortgen.arch._config import optional_int, required
from ortgen.arch.spec import ArchSpec, ModelDims, WeightLayout, activation_from_hf, default_attention_scales


def read_dims(config: Mapping[str, Any]) -> ModelDims:
    hidden = int(required(config, "hidden_size"))
    layers = int(required(config, "num_hidden_layers"))
    heads = int(required(config, "num_attention_heads"))
    return ModelDims(
        model_type="biogpt",
        vocab_size=int(required(config, "vocab_size")),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        ffn_size=int(required(config, "intermediate_size")),
        max_positions=int(required(config, "max_position_embeddings")),
        position_offset=2,
        activation=activation_from_hf(config.get("hidden_act", "gelu")),
        embed_scale=math.sqrt(hidden) if config.get("scale_embedding", True) else 1.0,
        layer_norm_eps=1e-5,
        norm_position="pre",
        tied_lm_head=bool(config.get("tie_word_embeddings", True)),
        word_embed_size=hidden,
        attention_scales=default_attention_scales(layers, hidden // heads),
        has_final_norm=True,
        bos_token_id=optional_int(config, "bos_token_id"),
        eos_token_id=optional_int(config, "eos_token_id"),
        pad_token_id=optional_int(config, "pad_token_id"),
    )


SPEC = ArchSpec(
    model_type="biogpt",
    description="BioGPT (microsoft/biogpt, BioGPT-Large): split q/k/v, learned positions +2, scaled embeddings",
    base_prefixes=("biogpt.", ""),
    layout=WeightLayout(
        embed_tokens="embed_tokens",
        embed_positions="embed_positions",
        attn_norm="layers.{i}.self_attn_layer_norm",
        q="layers.{i}.self_attn.q_proj",
        k="layers.{i}.self_attn.k_proj",
        v="layers.{i}.self_attn.v_proj",
        out_proj="layers.{i}.self_attn.out_proj",
        mlp_norm="layers.{i}.final_layer_norm",
        fc_in="layers.{i}.fc1",
        fc_out="layers.{i}.fc2",
        final_norm="layer_norm",
        lm_head="output_projection",
    ),
    read_dims=read_dims,
    tokenizer="moses-bpe",
)
