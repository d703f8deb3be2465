"""OPT (``OPTForCausalLM``).

Split q/k/v, learned positions looked up at ``position + 2``, ReLU, pre-LN layers and a
final LayerNorm; OPT-350m is post-LN (``do_layer_norm_before=false``, no final norm)
and projects 512-wide word embeddings in and out of the 1024-wide model.
"""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.arch._config import optional_int, required
from ortgen.arch.spec import ArchSpec, ModelDims, WeightLayout, activation_from_hf, default_attention_scales
from ortgen.errors import UnsupportedModelError


def read_dims(config: Mapping[str, Any]) -> ModelDims:
    hidden = int(required(config, "hidden_size"))
    layers = int(required(config, "num_hidden_layers"))
    heads = int(required(config, "num_attention_heads"))
    pre_ln = bool(config.get("do_layer_norm_before", True))
    if not config.get("layer_norm_elementwise_affine", True):
        raise UnsupportedModelError("OPT with layer_norm_elementwise_affine=false is not supported")
    if not config.get("enable_bias", True):
        raise UnsupportedModelError("OPT with enable_bias=false is not supported")
    return ModelDims(
        model_type="opt",
        vocab_size=int(required(config, "vocab_size")),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        ffn_size=int(required(config, "ffn_dim")),
        max_positions=int(required(config, "max_position_embeddings")),
        position_offset=2,
        activation=activation_from_hf(config.get("activation_function", "relu")),
        embed_scale=1.0,
        layer_norm_eps=1e-5,
        norm_position="pre" if pre_ln else "post",
        tied_lm_head=bool(config.get("tie_word_embeddings", True)),
        word_embed_size=int(config.get("word_embed_proj_dim") or hidden),
        attention_scales=default_attention_scales(layers, hidden // heads),
        has_final_norm=pre_ln and not config.get("_remove_final_layer_norm", False),
        bos_token_id=optional_int(config, "bos_token_id"),
        eos_token_id=optional_int(config, "eos_token_id"),
        pad_token_id=optional_int(config, "pad_token_id"),
    )


SPEC = ArchSpec(
    model_type="opt",
    description="OPT (facebook/opt-125m ... ): split q/k/v, learned positions +2, ReLU",
    base_prefixes=("model.decoder.", "decoder.", ""),
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
        final_norm="final_layer_norm",
        project_in="project_in",
        project_out="project_out",
        lm_head="lm_head",
    ),
    read_dims=read_dims,
)
