"""Qwen2 / Qwen2.5 (``Qwen2ForCausalLM``).

Llama's block with biases on the q, k and v projections (none on o_proj or the MLP); the small
models tie the head to the embedding. Qwen2's sliding window (``use_sliding_window``) applies to
layers from ``max_window_layers`` on only: a per-layer window ortgen does not build, so a config
that turns it on for any layer is refused.
"""

from __future__ import annotations

from typing import Any, Mapping

from ortgen.arch._llama_family import IGNORED_KEYS, LLAMA_LAYOUT, read_llama_like
from ortgen.arch.spec import ArchSpec, ModelDims
from ortgen.errors import UnsupportedModelError


def read_dims(config: Mapping[str, Any]) -> ModelDims:
    layers = int(config.get("num_hidden_layers") or 0)
    windowed: list[int] = []
    if config.get("use_sliding_window") and config.get("sliding_window"):
        kinds = config.get("layer_types") or []
        windowed = ([i for i, kind in enumerate(kinds) if kind == "sliding_attention"] if kinds
                    else list(range(int(config.get("max_window_layers") or 0), layers)))
    if windowed:
        raise UnsupportedModelError(
            f"config.json: use_sliding_window / layer_types put a sliding window on layers {windowed[:4]}...: "
            "per-layer windows are not supported (Qwen2.5 checkpoints ship with use_sliding_window=false)"
        )
    return read_llama_like(config, "qwen2", qkv_bias=True, out_bias=False, mlp_bias=False, sliding_window=None)


SPEC = ArchSpec(
    model_type="qwen2",
    description="Qwen2 / Qwen2.5: Llama's block with q/k/v biases, tied or untied head",
    base_prefixes=("model.", ""),
    layout=LLAMA_LAYOUT,
    read_dims=read_dims,
    ignored_keys=IGNORED_KEYS,
)
