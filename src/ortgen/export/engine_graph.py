"""The step-engine decoder: the same weights, built for a scheduler that batches many requests.

``decoder.onnx`` follows ONNX Runtime's GPT subgraph contract (growing past/present,
left-padded batches, logits for every position). ortgen's scheduler
(:mod:`ortgen.runtime.scheduler`) runs one call per step over every running request, and a
step's rows carry very different numbers of new tokens: a 256-token chunk of a new prompt,
five beams of one request, one greedy token of another. So ``decoder_engine.onnx`` is built
from the same weights with:

- **packed tokens**: the step's new tokens arrive as one sequence ``[1, T]``; embeddings, layer
  norms, every linear layer and the MLP run on those ``T`` tokens only. Padding each row to the
  longest row's length would multiply the padding too (a 256-token prefill next to sixteen
  5-beam rows is 17 x 256 token-rows for 336 tokens);
- **rows only around attention**: com.microsoft GroupQueryAttention wants ``[rows, S, 3*hidden]``
  (one row per cache row of the pool). A Gather (``slot_tokens``) lays the packed q/k/v out into
  rows right before it and another (``token_slots``) packs its output right after; rows with
  fewer than ``S`` new tokens say so in ``query_seqlens`` and cost nothing for their padding
  (GroupQueryAttention skips those queries and writes nothing for them);
- one KV buffer per layer for keys and one for values, ``[rows, heads, capacity, head_dim]``,
  bound by the scheduler as both past and present: new keys are written in place at each
  row's length (``seqlens_k``), nothing is re-allocated or copied per step;
- ``attention_bias`` hides, for a row whose new tokens are several beams (or samples) of one
  prompt, the other sequences' tokens from each one (see :mod:`ortgen.runtime.paths`);
- logits only where they are used (``logits_index``: K packed tokens): a 512-token prompt costs
  one vocabulary projection, not 512;
- and, besides the logits, each picked row's ``best_k`` largest logits with their token ids and
  the row's log-sum-exp (float32): all that beam search and greedy search need of a row when no
  logits processor (other than the EOS bans of min_length / min_new_tokens) must see the whole
  row, so the scheduler fetches these few values instead of ``[K, vocab]`` logits (on a GPU, the
  vocabulary-wide log-softmax and top-k stay on the device);
- any head_dim: GroupQueryAttention's CPU kernel needs a multiple of 8, so other head sizes
  are padded with zero dimensions around it (keys and queries gain zeros, which leave every dot
  product unchanged; the padded output dimensions are dropped) and the softmax keeps the real
  head_dim's scale. The cache holds the padded size (the manifest records it as the engine
  graph's ``cache_head_dim`` attribute).

    input_ids [1,T] ─► token emb ─┬─► per layer: LN ─► qkv (T tokens) ─► Gather slot_tokens ─► [rows,S,3H]
    position_ids [1,T] ─► pos emb ┘     ─► [pad head_dim] ─► GroupQueryAttention (past_key_i/past_value_i,
                                           seqlens_k, query_seqlens, attention_bias) ─► [rows,S,H]
                                        ─► Gather token_slots ─► [1,T,H] ─► out proj ─► MLP (T tokens)
    logits_index [K] ─► Gather hidden ─► lm_head ─► logits [K, vocab] ─┬► TopK(best_k) ─► best_logits, best_ids
                                                                        └► ReduceLogSumExp ─► logsumexp [K, 1]
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto

from ortgen.arch import ModelDims
from ortgen.export.decoder import (WrittenWeights, layer_stack, linear, lm_head, position_embeddings, project_qkv,
                                   token_embeddings)
from ortgen.export.onnx_graph import MS_DOMAIN, GraphBuilder
from ortgen.package import contract
from ortgen.package.contract import (
    ATTENTION_BIAS,
    BEST_IDS,
    BEST_K,
    BEST_LOGITS,
    LOGSUMEXP,
    LOGITS_INDEX,
    QUERY_SEQLENS,
    SEQLENS_K,
    SLOT_TOKENS,
    TOKEN_SLOTS,
    TOTAL_SEQUENCE_LENGTH,
    past_key_name,
    past_value_name,
    present_key_name,
    present_value_name,
)

GQA_HEAD_MULTIPLE = 8  # GroupQueryAttention's CPU kernel handles head sizes that are multiples of 8


def cache_head_dim(head_dim: int) -> int:
    """The head size the engine's cache and attention use: head_dim rounded up to a multiple of 8."""
    return -(-head_dim // GQA_HEAD_MULTIPLE) * GQA_HEAD_MULTIPLE


def _gqa_attention(positions: str | None):
    """The engine's attention; ``positions`` (int64 [1, T]) rotate q and k when the model is rotary."""

    def attention(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
        """(1, T, hidden) -> (1, T, hidden); keys/values written into the layer's shared buffers."""
        p = f"/model/layers.{layer}/attn"
        heads, kv_heads, hd = dims.num_heads, dims.kv_heads, dims.head_dim
        padded = cache_head_dim(hd)
        qkv = project_qkv(g, dims, layer, x, positions, packed=True)  # (1, T, (heads + 2 kv_heads) * hd)
        flat = g.op("Reshape", [qkv, g.constant([-1, dims.qkv_size])], name=f"{p}/qkv/Flatten")  # (T, qkv)
        rows = g.op("Gather", [flat, SLOT_TOKENS], name=f"{p}/qkv/ToRows", axis=0)  # (rows, S, qkv)
        if padded != hd:
            split = g.op("Reshape", [rows, g.constant([0, 0, heads + 2 * kv_heads, hd])], name=f"{p}/qkv/Heads")
            split = g.op("Pad", [split, g.constant([0, 0, 0, 0, 0, 0, 0, padded - hd])], name=f"{p}/qkv/PadHeads")
            rows = g.op("Reshape", [split, g.constant([0, 0, (heads + 2 * kv_heads) * padded])],
                        name=f"{p}/qkv/Merge")
        context = g.node(
            "GroupQueryAttention",
            [rows, "", "", past_key_name(layer), past_value_name(layer), SEQLENS_K, TOTAL_SEQUENCE_LENGTH,
             "", "", "", ATTENTION_BIAS, "", "", "", "", "", QUERY_SEQLENS],
            name=f"{p}/GroupQueryAttention",
            outputs=[f"{p}/GroupQueryAttention/output_0", present_key_name(layer), present_value_name(layer)],
            domain=MS_DOMAIN,
            num_heads=heads,
            kv_num_heads=kv_heads,
            scale=float(dims.attention_scales[layer]),  # the real head_dim's scale, whatever the padding
            do_rotary=0,
        )[0]  # (rows, S, heads * padded)
        slots = g.op("Reshape", [context, g.constant([-1, heads * padded])], name=f"{p}/context/Flatten")
        packed = g.op("Gather", [slots, TOKEN_SLOTS], name=f"{p}/context/ToTokens", axis=0)  # (T, heads * padded)
        if padded != hd:
            split = g.op("Reshape", [packed, g.constant([0, heads, padded])], name=f"{p}/context/Heads")
            split = g.op("Slice", [split, g.constant([0]), g.constant([hd]), g.constant([2])],
                         name=f"{p}/context/DropPadding")
            packed = g.op("Reshape", [split, g.constant([0, dims.attention_size])], name=f"{p}/context/Merge")
        context = g.op("Unsqueeze", [packed, g.constant([0])], name=f"{p}/context/Sequence")  # (1, T, heads * hd)
        return linear(g, context, f"layers.{layer}.attn.out", name=f"{p}/out")

    return attention


def build_engine_graph(dims: ModelDims, weights: WrittenWeights) -> onnx.GraphProto:
    g = GraphBuilder("decoder_engine", quantized=weights.quantized, float_dtype=weights.float_dtype)
    g.add_initializers(weights.initializers.values())
    kv_shape = ["rows", dims.kv_heads, "capacity", cache_head_dim(dims.head_dim)]
    g.input(contract.INPUT_IDS, TensorProto.INT32, [1, "tokens"])
    g.input(contract.POSITION_IDS, TensorProto.INT32, [1, "tokens"])
    g.input(SLOT_TOKENS, TensorProto.INT32, ["rows", "slots"])
    g.input(TOKEN_SLOTS, TensorProto.INT32, ["tokens"])
    g.input(SEQLENS_K, TensorProto.INT32, ["rows"])
    g.input(TOTAL_SEQUENCE_LENGTH, TensorProto.INT32, [])
    g.input(QUERY_SEQLENS, TensorProto.INT32, ["rows"])
    g.input(ATTENTION_BIAS, g.float_type, ["bias_rows", 1, "slots", "total_sequence_length"])
    g.input(LOGITS_INDEX, TensorProto.INT32, ["picks"])
    g.input(BEST_K, TensorProto.INT64, [1])
    for i in range(dims.num_layers):
        g.input(past_key_name(i), g.float_type, kv_shape)
        g.input(past_value_name(i), g.float_type, kv_shape)
    g.output(contract.LOGITS, g.float_type, ["picks", dims.vocab_size])
    g.output(BEST_LOGITS, TensorProto.FLOAT, ["picks", "best_k"])
    g.output(BEST_IDS, TensorProto.INT64, ["picks", "best_k"])
    g.output(LOGSUMEXP, TensorProto.FLOAT, ["picks", 1])
    for i in range(dims.num_layers):
        g.output(present_key_name(i), g.float_type, kv_shape)
        g.output(present_value_name(i), g.float_type, kv_shape)

    tokens = token_embeddings(g, dims)
    if dims.rotary is None:
        positions, attention = position_embeddings(g, dims, contract.POSITION_IDS), _gqa_attention(None)
    else:  # each token's true position: not its slot when beams share a row
        rotary = g.op("Cast", [contract.POSITION_IDS], name="/model/positions/ToInt64", to=TensorProto.INT64)
        positions, attention = None, _gqa_attention(rotary)
    hidden = layer_stack(dims)(g, dims, tokens, positions, attention)  # (1, T, hidden)

    flat = g.op("Reshape", [hidden, g.constant([-1, dims.hidden_size])], name="/model/picks/Flatten")
    picked = g.op("Gather", [flat, LOGITS_INDEX], name="/model/picks/Gather", axis=0)  # (K, hidden)
    lm_head(g, dims, picked, weights.initializers)
    _best_tokens(g)
    return g.build()


def _best_tokens(g: GraphBuilder) -> None:
    """``best_logits`` / ``best_ids`` (TopK: largest first, ties in token order, as NumPy's stable
    choice over the whole row) and ``logsumexp`` of every picked row, in float32."""
    logits = contract.LOGITS
    if g.float_dtype != np.float32:
        logits = g.op("Cast", [logits], name="/model/best/ToFloat32", to=TensorProto.FLOAT)
    g.node("TopK", [logits, BEST_K], name="/model/best/TopK", outputs=[BEST_LOGITS, BEST_IDS], axis=-1, largest=1,
           sorted=1)
    g.node("ReduceLogSumExp", [logits], name="/model/best/LogSumExp", outputs=[LOGSUMEXP], axes=[-1], keepdims=1)


def engine_attributes(dims: ModelDims) -> dict[str, int]:
    """What the runtime needs to know about this graph beyond its I/O (recorded in the manifest).

    (A sliding window is not the graph's: the runtime applies ``architecture.sliding_window`` through
    ``attention_bias``, in positions, since a beam's slot is not its position.)"""
    return {"cache_head_dim": cache_head_dim(dims.head_dim)}


__all__ = ["build_engine_graph", "cache_head_dim", "engine_attributes"]
