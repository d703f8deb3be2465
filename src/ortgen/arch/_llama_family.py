"""What Llama, Mistral and Qwen2 share: reading their config into :class:`ModelDims`.

Their blocks are one design: RMSNorm before attention and MLP, rotary positions, grouped-query
attention, a gated SiLU MLP, no position table. They differ in which projections carry biases
and in the attention window; each family's module says which. Fields that change the math and
that the graph does not implement are refused here, naming the field.
"""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.arch._config import optional_int, required
from ortgen.arch.spec import ModelDims, Rotary, WeightLayout, activation_from_hf, default_attention_scales
from ortgen.errors import UnsupportedModelError

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")

LLAMA_LAYOUT = WeightLayout(
    embed_tokens="embed_tokens",
    embed_positions=None,
    attn_norm="layers.{i}.input_layernorm",
    q="layers.{i}.self_attn.q_proj",
    k="layers.{i}.self_attn.k_proj",
    v="layers.{i}.self_attn.v_proj",
    out_proj="layers.{i}.self_attn.o_proj",
    mlp_norm="layers.{i}.post_attention_layernorm",
    fc_gate="layers.{i}.mlp.gate_proj",
    fc_in="layers.{i}.mlp.up_proj",
    fc_out="layers.{i}.mlp.down_proj",
    final_norm="norm",
    lm_head="lm_head",
)

# Rotary buffers some older checkpoints store beside the weights (recomputed from the config).
IGNORED_KEYS = (r"layers\.\d+\.self_attn\.rotary_emb\.inv_freq$", r"rotary_emb\.inv_freq$")


def rope_parameters(config: Mapping[str, Any]) -> dict[str, Any]:
    """The RoPE settings in transformers 5's form (``rope_parameters``), from either that key or the
    legacy ``rope_theta`` + ``rope_scaling`` (whose ``type`` is the old name of ``rope_type``)."""
    params = dict(config.get("rope_parameters") or {})
    legacy = config.get("rope_scaling") or {}
    if not isinstance(params, dict) or not isinstance(legacy, dict):
        raise UnsupportedModelError("config.json: rope_parameters / rope_scaling must be objects")
    for key, value in legacy.items():
        params.setdefault("rope_type" if key == "type" else key, value)
    if "rope_theta" not in params and config.get("rope_theta") is not None:
        params["rope_theta"] = config["rope_theta"]
    params.setdefault("rope_theta", 10000.0)
    params.setdefault("rope_type", "default")
    return params


def read_rotary(config: Mapping[str, Any]) -> Rotary:
    """The rotary embedding the config describes; any scaling but linear / llama3 is refused."""
    params = rope_parameters(config)
    kind = params["rope_type"]
    if kind not in SUPPORTED_ROPE_TYPES:
        raise UnsupportedModelError(
            f"config.json: rope_scaling type {kind!r} is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}"
        )
    partial = params.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))
    if partial not in (None, 1, 1.0):
        raise UnsupportedModelError(f"config.json: partial_rotary_factor={partial} is not supported (only 1.0)")
    theta = float(params["rope_theta"])
    if kind == "linear":
        return Rotary(theta, "linear", factor=float(required(params, "factor")))
    if kind == "llama3":
        return Rotary(
            theta, "llama3",
            factor=float(required(params, "factor")),
            low_freq_factor=float(required(params, "low_freq_factor")),
            high_freq_factor=float(required(params, "high_freq_factor")),
            original_max_positions=int(required(params, "original_max_position_embeddings")),
        )
    return Rotary(theta)


def read_llama_like(config: Mapping[str, Any], model_type: str, *, qkv_bias: bool, out_bias: bool,
                    mlp_bias: bool, sliding_window: int | None) -> ModelDims:
    """ModelDims for a Llama-style block; the family decides biases and window."""
    hidden = int(required(config, "hidden_size"))
    layers = int(required(config, "num_hidden_layers"))
    heads = int(required(config, "num_attention_heads"))
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or hidden // heads)
    activation = activation_from_hf(config.get("hidden_act", "silu"))
    if activation != "silu":
        raise UnsupportedModelError(
            f"config.json: hidden_act={config.get('hidden_act')!r} in a gated MLP is not supported (only silu)"
        )
    return ModelDims(
        model_type=model_type,
        vocab_size=int(required(config, "vocab_size")),
        hidden_size=hidden,
        num_layers=layers,
        num_heads=heads,
        ffn_size=int(required(config, "intermediate_size")),
        max_positions=int(required(config, "max_position_embeddings")),
        position_offset=0,
        activation=activation,
        embed_scale=1.0,
        layer_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
        norm_position="pre",
        tied_lm_head=bool(config.get("tie_word_embeddings", False)),
        word_embed_size=hidden,
        attention_scales=default_attention_scales(layers, head_dim),
        has_final_norm=True,
        bos_token_id=optional_int(config, "bos_token_id"),
        eos_token_id=optional_int(config, "eos_token_id"),
        pad_token_id=optional_int(config, "pad_token_id"),
        num_kv_heads=kv_heads,
        head_size=head_dim,
        rotary=read_rotary(config),
        norm_kind="rmsnorm",
        mlp_kind="gated",
        qkv_bias=qkv_bias,
        out_bias=out_bias,
        mlp_bias=mlp_bias,
        sliding_window=sliding_window,
    )
