"""GPT-2 (``GPT2LMHeadModel``).

Fused q/k/v in one ``c_attn`` Conv1D (weights stored [in, out], no transpose needed),
absolute learned positions without offset, tanh-approximated GELU, pre-LN layers,
final ``ln_f``, head tied to ``wte``. GPT-2 has no pad token: pad = eos.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from ortgen.arch._config import optional_int, required
from ortgen.arch.spec import ArchSpec, ModelDims, WeightLayout, activation_from_hf
from ortgen.errors import UnsupportedModelError


def read_dims(config: Mapping[str, Any]) -> ModelDims:
    if config.get("add_cross_attention"):
        raise UnsupportedModelError("GPT-2 with cross-attention (add_cross_attention=true) is not a decoder-only LM")
    hidden = int(required(config, "n_embd", "hidden_size"))
    layers = int(required(config, "n_layer", "num_hidden_layers"))
    heads = int(required(config, "n_head", "num_attention_heads"))
    head_dim = hidden // heads if heads else 0
    base_scale = 1.0 / math.sqrt(head_dim) if config.get("scale_attn_weights", True) and head_dim else 1.0
    by_layer = bool(config.get("scale_attn_by_inverse_layer_idx", False))
    scales = tuple(base_scale / (i + 1) if by_layer else base_scale for i in range(layers))
    eos = optional_int(config, "eos_token_id")
    pad = optional_int(config, "pad_token_id")
    return ModelDims(
        model_type="gpt2",
        vocab_size=int(required(config, "vocab_size")),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        ffn_size=int(config.get("n_inner") or 4 * hidden),
        max_positions=int(required(config, "n_positions", "max_position_embeddings")),
        position_offset=0,
        activation=activation_from_hf(config.get("activation_function", "gelu_new")),
        embed_scale=1.0,
        layer_norm_eps=float(config.get("layer_norm_epsilon", 1e-5)),
        norm_position="pre",
        tied_lm_head=bool(config.get("tie_word_embeddings", True)),
        word_embed_size=hidden,
        attention_scales=scales,
        has_final_norm=True,
        bos_token_id=optional_int(config, "bos_token_id"),
        eos_token_id=eos,
        pad_token_id=pad if pad is not None else eos,
    )


SPEC = ArchSpec(
    model_type="gpt2",
    description="GPT-2 (gpt2, gpt2-medium, distilgpt2 ...): fused c_attn Conv1D, tanh GELU",
    base_prefixes=("transformer.", ""),
    layout=WeightLayout(
        embed_tokens="wte",
        embed_positions="wpe",
        attn_norm="h.{i}.ln_1",
        qkv="h.{i}.attn.c_attn",
        out_proj="h.{i}.attn.c_proj",
        mlp_norm="h.{i}.ln_2",
        fc_in="h.{i}.mlp.c_fc",
        fc_out="h.{i}.mlp.c_proj",
        final_norm="ln_f",
        lm_head="lm_head",
        linear_layout="in_out",
    ),
    read_dims=read_dims,
    # Causal-mask buffers that old GPT-2 checkpoints store next to the weights.
    ignored_keys=(r"h\.\d+\.attn\.(masked_)?bias$",),
)
