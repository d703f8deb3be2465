"""The step-engine decoder: the same weights, built for a generation loop that ortgen drives.

``decoder.onnx`` follows ONNX Runtime's GPT subgraph contract (growing past/present,
left-padded batches, logits for every position). The step engine
(:mod:`ortgen.runtime.engine`) wants something else, so ``decoder_engine.onnx`` is built
from the same weights with:

- com.microsoft GroupQueryAttention (num_heads = kv_num_heads) with one KV buffer per
  layer and K/V: past and present are the same memory (bound by the engine), new keys are
  written in place at each row's length, nothing is re-allocated or copied per step;
- one cache row per prompt, shared by its beams: a step appends one token per beam to the
  row (a right-padded chunk, ``query_seqlens``), and ``attention_bias`` hides from each
  beam the tokens of the other beams (see :mod:`ortgen.runtime.engine_decoder`);
- rows of different lengths without padding: ``seqlens_k`` gives each row's length - 1,
  prompts are right-padded, so no compute goes to pads and positions are explicit;
- logits only where they are used (``last_index``, K positions per row): a 512-token
  prompt costs one vocabulary projection, not 512.

    input_ids ─► token emb ─┬─► layers (GQA: past_key_i/past_value_i ─► present, same buffer) ─► hidden (B,S,H)
    position_ids ─► pos emb ┘   seqlens_k, query_seqlens, attention_bias ─┘                  │
    last_index (B,K) ───────────────────────────────────────────────► Gather positions last_index[b, :] of row b
                                                                                         ─► lm_head ─► logits (B,K,V)
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from ortgen.package import contract
from ortgen.arch import ModelDims
from ortgen.package.contract import (
    ATTENTION_BIAS,
    LAST_INDEX,
    QUERY_SEQLENS,
    SEQLENS_K,
    TOTAL_SEQUENCE_LENGTH,
    past_key_name,
    past_value_name,
    present_key_name,
    present_value_name,
)
from ortgen.export.decoder import WrittenWeights, layer_stack, linear, lm_head, position_embeddings, token_embeddings
from ortgen.export.onnx_graph import MS_DOMAIN, GraphBuilder


def _gqa_attention(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
    """(B, S, hidden) -> (B, S, hidden); keys/values written into the layer's shared buffers."""
    p = f"/model/layers.{layer}/attn"
    qkv = linear(g, x, f"layers.{layer}.attn.qkv", name=f"{p}/qkv")
    qkv = g.op("Add", [qkv, f"layers.{layer}.attn.qkv.bias"], name=f"{p}/qkv/Add")  # packed (B, S, 3*hidden)
    context = g.node(
        "GroupQueryAttention",
        [qkv, "", "", past_key_name(layer), past_value_name(layer), SEQLENS_K, TOTAL_SEQUENCE_LENGTH,
         "", "", "", ATTENTION_BIAS, "", "", "", "", "", QUERY_SEQLENS],
        name=f"{p}/GroupQueryAttention",
        outputs=[f"{p}/GroupQueryAttention/output_0", present_key_name(layer), present_value_name(layer)],
        domain=MS_DOMAIN,
        num_heads=dims.num_heads,
        kv_num_heads=dims.num_heads,
        scale=float(dims.attention_scales[layer]),
        do_rotary=0,
    )[0]
    return linear(g, context, f"layers.{layer}.attn.out", name=f"{p}/out")


def build_engine_graph(dims: ModelDims, weights: WrittenWeights) -> onnx.GraphProto:
    g = GraphBuilder("decoder_engine", quantized=weights.quantized)
    g.initializers.extend(weights.initializers.values())
    kv_shape = ["batch_size", dims.num_heads, "max_sequence_length", dims.head_dim]
    g.input(contract.INPUT_IDS, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(contract.POSITION_IDS, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(SEQLENS_K, TensorProto.INT32, ["batch_size"])
    g.input(TOTAL_SEQUENCE_LENGTH, TensorProto.INT32, [])
    g.input(QUERY_SEQLENS, TensorProto.INT32, ["batch_size"])
    g.input(ATTENTION_BIAS, TensorProto.FLOAT, ["bias_batch_size", 1, "sequence_length", "total_sequence_length"])
    g.input(LAST_INDEX, TensorProto.INT32, ["batch_size", "picks"])
    for i in range(dims.num_layers):
        g.input(past_key_name(i), TensorProto.FLOAT, kv_shape)
        g.input(past_value_name(i), TensorProto.FLOAT, kv_shape)
    g.output(contract.LOGITS, TensorProto.FLOAT, ["batch_size", "picks", dims.vocab_size])
    for i in range(dims.num_layers):
        g.output(present_key_name(i), TensorProto.FLOAT, kv_shape)
        g.output(present_value_name(i), TensorProto.FLOAT, kv_shape)

    tokens = token_embeddings(g, dims)
    positions = position_embeddings(g, dims, contract.POSITION_IDS)
    hidden = layer_stack(dims)(g, dims, tokens, positions, _gqa_attention)

    # K positions per row: flat index b * S + last_index[b, k] into (B*S, hidden)
    shape = g.op("Shape", [contract.INPUT_IDS], name="/model/last/Shape")
    batch = g.op("Gather", [shape, g.constant(0)], name="/model/last/Batch")
    seq = g.op("Gather", [shape, g.constant(1)], name="/model/last/Seq")
    rows = g.op("Range", [g.constant(0), batch, g.constant(1)], name="/model/last/Rows")
    offsets = g.op("Mul", [rows, seq], name="/model/last/Offsets")
    offsets = g.op("Unsqueeze", [offsets, g.constant([1])], name="/model/last/Column")
    last = g.op("Cast", [LAST_INDEX], name="/model/last/Cast", to=TensorProto.INT64)
    flat_index = g.op("Add", [offsets, last], name="/model/last/Index")
    flat = g.op("Reshape", [hidden, g.constant([-1, dims.hidden_size])], name="/model/last/Flatten")
    picked = g.op("Gather", [flat, flat_index], name="/model/last/Gather", axis=0)  # (B, K, hidden)
    lm_head(g, dims, picked, weights.initializers)
    return g.build()


__all__ = ["build_engine_graph"]
