"""Build the decoder graph (one step of generation, with KV cache) from weights.

Two phases, so that several graph variants can share one copy of the weights:

1. :func:`write_decoder_weights` reads every tensor through a spec
   (:class:`~ortgen.export.weights.DecoderWeights`), converts it to the layout the graph
   wants and streams it into the package's weight file.
2. :func:`build_decoder_graph` emits nodes that refer to those weights by name. It is
   cheap and can be called once per variant (all logits for ``decoder.onnx``, last-token
   logits inside the generation models).

The graph uses ONNX Runtime's fused contrib operators (com.microsoft Attention with
past/present, SkipLayerNormalization, BiasGelu / FastGelu, FusedMatMul) and follows its
GPT subgraph contract (see :mod:`ortgen.package.contract`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import onnx
from onnx import TensorProto

from ortgen.package import contract
from ortgen.arch import ModelDims
from ortgen.errors import ModelSourceError
from ortgen.export.onnx_graph import MS_DOMAIN, GraphBuilder, WeightFile
from ortgen.export.quantize import QuantConfig, QuantizedLinear, quantize_blockwise
from ortgen.export.weights import DecoderWeights

log = logging.getLogger(__name__)

LogitsMode = Literal["all", "last"]
ProgressCallback = Callable[[int, int], None]  # (layers done, layers total)

_INT64_MAX = np.iinfo(np.int64).max


@dataclass
class WrittenWeights:
    """Initializers by name (large ones point into the weight file), and which linears are quantized."""

    initializers: dict[str, TensorProto]
    quantized: dict[str, QuantizedLinear] = field(default_factory=dict)  # role -> MatMulNBits attributes
    dtype: str = "float32"  # how the linear weights are stored: float32, float16, int8, int4
    float_dtype: str = "float32"  # every other weight, the activations, the cache and the logits


def write_decoder_weights(
    dims: ModelDims,
    weights: DecoderWeights,
    weight_file: WeightFile,
    progress: ProgressCallback | None = None,
    quant: QuantConfig | None = None,
    float_dtype: str = "float32",
) -> WrittenWeights:
    """Stream every decoder weight into ``weight_file``.

    Small tensors (LayerNorm parameters, biases) stay inline; large ones are references
    into the weight file. Only one layer's tensors are in memory at a time. Every float
    tensor is stored as ``float_dtype`` (float32, or float16 for half the bytes: what the
    CUDA provider computes in). With ``quant``, linear weights are written block-quantized
    (``{role}.qweight`` + ``{role}.scales``, the scales in ``float_dtype``) instead
    (``{role}.weight``).
    """
    written = WrittenWeights({}, dtype=quant.name if quant else float_dtype, float_dtype=float_dtype)
    out = written.initializers
    stored = np.dtype(float_dtype)

    def put(name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        if array.dtype != np.uint8:
            array = _cast(name, array, stored)
        if array.nbytes > 1024:
            out[name] = weight_file.add(name, array)
        else:
            out[name] = onnx.numpy_helper.from_array(array, name)

    def put_linear(role: str, weight: np.ndarray) -> None:
        """``weight`` is [in, out]."""
        if quant is None:
            put(f"{role}.weight", weight)
            return
        packed, scales = quantize_blockwise(weight, quant)
        put(f"{role}.qweight", packed)
        put(f"{role}.scales", scales)
        written.quantized[role] = QuantizedLinear(weight.shape[0], weight.shape[1], quant.bits, quant.block_size,
                                                  quant.accuracy_level)

    embed = weights.embed_tokens()
    put("embed_tokens.weight", embed)
    put("embed_positions.weight", weights.embed_positions())
    if dims.has_projection:
        put_linear("project_in", weights.project_in().weight)
        put_linear("project_out", weights.project_out().weight)
    started = time.perf_counter()
    for i in range(dims.num_layers):
        for role in ("attn_norm", "mlp_norm"):
            gamma, beta = weights.norm(f"layers.{i}.{role}")
            put(f"layers.{i}.{role}.weight", gamma)
            put(f"layers.{i}.{role}.bias", beta)
        for role, linear in (
            ("attn.qkv", weights.qkv(i)),
            ("attn.out", weights.out_proj(i)),
            ("mlp.fc_in", weights.fc_in(i)),
            ("mlp.fc_out", weights.fc_out(i)),
        ):
            put_linear(f"layers.{i}.{role}", linear.weight)
            assert linear.bias is not None, "every supported architecture has projection biases"
            put(f"layers.{i}.{role}.bias", linear.bias)
        if progress is not None:
            progress(i + 1, dims.num_layers)
    log.debug("wrote %d layers in %.1fs", dims.num_layers, time.perf_counter() - started)
    if dims.has_final_norm:
        gamma, beta = weights.norm("final_norm")
        put("final_norm.weight", gamma)
        put("final_norm.bias", beta)
    head = weights.lm_head()
    if quant is not None:
        put_linear("lm_head", (head if head is not None else embed).T)  # [V, W] -> [in, out]
    elif head is not None:
        put("lm_head.weight", head)
    return written


def _cast(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as ``dtype``; a weight beyond float16's range is refused rather than stored as inf."""
    if dtype == np.float16 and array.size:
        largest = float(np.abs(array).max())
        if not largest <= float(np.finfo(np.float16).max):
            raise ModelSourceError(f"weight {name} holds {largest:g}, beyond float16's range (+-65504): "
                                   "export this model with --dtype float32")
    return array.astype(dtype, copy=False)


def linear(g: GraphBuilder, x: str, role: str, *, name: str) -> str:
    """``x @ W`` for the weight of ``role``: MatMul (float32) or MatMulNBits (quantized)."""
    q = g.quantized.get(role)
    if q is None:
        return g.op("MatMul", [x, f"{role}.weight"], name=f"{name}/MatMul")
    return g.op("MatMulNBits", [x, f"{role}.qweight", f"{role}.scales"], name=f"{name}/MatMulNBits",
                domain=MS_DOMAIN, K=q.K, N=q.N, bits=q.bits, block_size=q.block_size, accuracy_level=q.accuracy_level)


def _declare_io(g: GraphBuilder, dims: ModelDims, logits: LogitsMode) -> None:
    past_shape = [2, "batch_size", dims.num_heads, "past_sequence_length", dims.head_dim]
    present_shape = [2, "batch_size", dims.num_heads, "total_sequence_length", dims.head_dim]
    g.input(contract.INPUT_IDS, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(contract.POSITION_IDS, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(contract.ATTENTION_MASK, TensorProto.INT32, ["batch_size", "total_sequence_length"])
    for i in range(dims.num_layers):
        g.input(contract.past_name(i), g.float_type, past_shape)
    logits_len: int | str = 1 if logits == "last" else "sequence_length"
    g.output(contract.LOGITS, g.float_type, ["batch_size", logits_len, dims.vocab_size])
    for i in range(dims.num_layers):
        g.output(contract.present_name(i), g.float_type, present_shape)


def token_embeddings(g: GraphBuilder, dims: ModelDims) -> str:
    """(B, S, hidden): ``input_ids ─► Gather(embed_tokens) ─► ×scale ─► [project_in]``."""
    tokens = g.op("Gather", ["embed_tokens.weight", contract.INPUT_IDS], name="/model/embed_tokens/Gather")
    if dims.embed_scale != 1.0:
        tokens = g.op("Mul", [tokens, g.constant(dims.embed_scale, g.float_dtype)], name="/model/embed_tokens/Scale")
    if dims.has_projection:
        tokens = linear(g, tokens, "project_in", name="/model/project_in")
    return tokens


def positions_from_mask(g: GraphBuilder) -> str:
    """(B, S) positions of the new tokens, as transformers' generate() computes them.

    ``(cumsum(mask) - 1) * mask``, last S columns. The ``position_ids`` input is part of
    the contract but not read: ONNX Runtime's generation ops derive it from pad tokens,
    which is wrong when a prompt contains the pad id (GPT-2's pad is its eos).

        attention_mask ─► CumSum ─► −1 ─► ×mask ─► last S columns
    """
    mask = contract.ATTENTION_MASK
    cumsum = g.op("CumSum", [mask, g.constant(1, np.int32)], name="/model/positions/CumSum")
    minus_one = g.op("Sub", [cumsum, g.constant(1, np.int32)], name="/model/positions/Sub")
    positions = g.op("Mul", [minus_one, mask], name="/model/positions/MaskPads")  # (B, T); pads -> 0
    new_len = g.op("Shape", [contract.INPUT_IDS], name="/model/positions/SeqLen", start=1, end=2)
    start = g.op("Neg", [new_len], name="/model/positions/Start")
    return g.op(
        "Slice",
        [positions, start, g.constant([_INT64_MAX]), g.constant([1])],
        name="/model/positions/LastS",
    )


def position_embeddings(g: GraphBuilder, dims: ModelDims, positions: str) -> str:
    """(B, S, hidden): ``positions ─► +offset ─► Gather(embed_positions)``."""
    if dims.position_offset:
        positions = g.op("Add", [positions, g.constant(dims.position_offset, np.int32)], name="/model/positions/Offset")
    return g.op("Gather", ["embed_positions.weight", positions], name="/model/embed_positions/Gather")


AttentionFn = Callable[[GraphBuilder, ModelDims, int, str], str]


def _attention(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
    """Self-attention with KV cache: (B, S, hidden) -> (B, S, hidden), writes present_{layer}.

    com.microsoft Attention: fused q/k/v projection, causal over past + new tokens, the
    2-D attention mask, and ``present = concat(past, new)`` in the contract's layout.
    """
    p = f"/model/layers.{layer}/attn"
    if f"layers.{layer}.attn.qkv" in g.quantized:
        return _quantized_attention(g, dims, layer, x)
    context = g.node(
        "Attention",
        [x, f"layers.{layer}.attn.qkv.weight", f"layers.{layer}.attn.qkv.bias", contract.ATTENTION_MASK,
         contract.past_name(layer)],
        name=f"{p}/Attention",
        outputs=[f"{p}/Attention/output_0", contract.present_name(layer)],
        domain=MS_DOMAIN,
        num_heads=dims.num_heads,
        unidirectional=1,
        scale=float(dims.attention_scales[layer]),
    )[0]
    return linear(g, context, f"layers.{layer}.attn.out", name=f"{p}/out")


def _quantized_attention(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
    """The same attention with a quantized q/k/v projection (Attention only takes float32 weights).

        x ─► MatMulNBits(qkv) ─► +bias ─► Split q, k, v ─┐
        past_i ─► Split key/value ─────────────────────────┴► MultiHeadAttention ─► present key/value ─► Concat ─► present_i
    """
    p = f"/model/layers.{layer}/attn"
    H = dims.hidden_size
    qkv = linear(g, x, f"layers.{layer}.attn.qkv", name=f"{p}/qkv")
    qkv = g.op("Add", [qkv, f"layers.{layer}.attn.qkv.bias"], name=f"{p}/qkv/Add")
    q, k, v = g.node("Split", [qkv, g.constant([H, H, H])], name=f"{p}/qkv/Split", outputs=3, axis=-1)
    past_k, past_v = g.node("Split", [contract.past_name(layer), g.constant([1, 1])], name=f"{p}/past/Split",
                            outputs=2, axis=0)
    axis0 = g.constant([0])
    past_k = g.op("Squeeze", [past_k, axis0], name=f"{p}/past/SqueezeKey")
    past_v = g.op("Squeeze", [past_v, axis0], name=f"{p}/past/SqueezeValue")
    context, present_k, present_v = g.node(
        "MultiHeadAttention", [q, k, v, "", contract.ATTENTION_MASK, "", past_k, past_v],
        name=f"{p}/MultiHeadAttention", outputs=3, domain=MS_DOMAIN,
        num_heads=dims.num_heads, unidirectional=1, scale=float(dims.attention_scales[layer]),
    )
    present_k = g.op("Unsqueeze", [present_k, axis0], name=f"{p}/present/UnsqueezeKey")
    present_v = g.op("Unsqueeze", [present_v, axis0], name=f"{p}/present/UnsqueezeValue")
    g.node("Concat", [present_k, present_v], name=f"{p}/present/Concat", outputs=[contract.present_name(layer)],
           axis=0)
    return linear(g, context, f"layers.{layer}.attn.out", name=f"{p}/out")


def _mlp(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
    """fc_in -> activation -> fc_out, without fc_out's bias (fused into the next SkipLayerNorm)."""
    p = f"/model/layers.{layer}/mlp"
    up = linear(g, x, f"layers.{layer}.mlp.fc_in", name=f"{p}/fc_in")
    bias = f"layers.{layer}.mlp.fc_in.bias"
    if dims.activation == "gelu":
        act = g.op("BiasGelu", [up, bias], name=f"{p}/BiasGelu", domain=MS_DOMAIN)
    elif dims.activation == "gelu_tanh":
        act = g.op("FastGelu", [up, bias], name=f"{p}/FastGelu", domain=MS_DOMAIN)
    else:
        biased = g.op("Add", [up, bias], name=f"{p}/fc_in/Add")
        act = g.op("Relu", [biased], name=f"{p}/Relu")
    return linear(g, act, f"layers.{layer}.mlp.fc_out", name=f"{p}/fc_out")


def _skip_norm(
    g: GraphBuilder, dims: ModelDims, name: str, x: str, residual: str, norm: str, bias: str | None
) -> tuple[str, str]:
    """``s = x + residual + bias``; returns ``(LayerNorm(s), s)``."""
    inputs = [x, residual, f"{norm}.weight", f"{norm}.bias"] + ([bias] if bias else [])
    normed, _, _, total = g.node(
        "SkipLayerNormalization",
        inputs,
        name=name,
        outputs=[f"{name}/output_0", "", "", f"{name}/output_3"],
        domain=MS_DOMAIN,
        epsilon=float(dims.layer_norm_eps),
    )
    return normed, total


def pre_ln_layers(g: GraphBuilder, dims: ModelDims, tokens: str, positions: str,
                  attention: AttentionFn = _attention) -> str:
    """Pre-LN stack (BioGPT, GPT-2, most OPT); returns the final hidden state.

        h ─┬─► LN ─► Attention ─► out ─► (+h) ─┬─► LN ─► fc_in ─► act ─► fc_out ─► (+) ─► next layer
           └──────────────────────────────────┘ └─────────────────────────────────┘
    Each "(+) then LN" is one SkipLayerNormalization that also returns the sum.
    """
    x, h = _skip_norm(g, dims, "/model/layers.0/attn_norm/SkipLayerNorm", tokens, positions,
                      "layers.0.attn_norm", None)
    last = dims.num_layers - 1
    for i in range(dims.num_layers):
        attn = attention(g, dims, i, x)
        x, h = _skip_norm(g, dims, f"/model/layers.{i}/mlp_norm/SkipLayerNorm", attn, h,
                          f"layers.{i}.mlp_norm", f"layers.{i}.attn.out.bias")
        mlp = _mlp(g, dims, i, x)
        if i < last:
            x, h = _skip_norm(g, dims, f"/model/layers.{i + 1}/attn_norm/SkipLayerNorm", mlp, h,
                              f"layers.{i + 1}.attn_norm", f"layers.{i}.mlp.fc_out.bias")
        elif dims.has_final_norm:
            x, _ = _skip_norm(g, dims, "/model/final_norm/SkipLayerNorm", mlp, h, "final_norm",
                              f"layers.{i}.mlp.fc_out.bias")
        else:
            biased = g.op("Add", [mlp, f"layers.{i}.mlp.fc_out.bias"], name=f"/model/layers.{i}/mlp/fc_out/Add")
            x = g.op("Add", [biased, h], name=f"/model/layers.{i}/residual/Add")
    return x


def post_ln_layers(g: GraphBuilder, dims: ModelDims, tokens: str, positions: str,
                   attention: AttentionFn = _attention) -> str:
    """Post-LN stack (OPT-350m): ``h = LN(h + attn(h)); h = LN(h + mlp(h))``."""
    h = g.op("Add", [tokens, positions], name="/model/embeddings/Add")
    for i in range(dims.num_layers):
        attn = attention(g, dims, i, h)
        h, _ = _skip_norm(g, dims, f"/model/layers.{i}/attn_norm/SkipLayerNorm", attn, h,
                          f"layers.{i}.attn_norm", f"layers.{i}.attn.out.bias")
        mlp = _mlp(g, dims, i, h)
        h, _ = _skip_norm(g, dims, f"/model/layers.{i}/mlp_norm/SkipLayerNorm", mlp, h,
                          f"layers.{i}.mlp_norm", f"layers.{i}.mlp.fc_out.bias")
    return h


def lm_head(g: GraphBuilder, dims: ModelDims, hidden: str, initializers: dict[str, TensorProto]) -> None:
    """``hidden ─► [project_out] ─► FusedMatMul(embed_tokens or lm_head, transB=1) ─► logits``
    (MatMulNBits over the quantized head when quantized)."""
    if dims.has_projection:
        hidden = linear(g, hidden, "project_out", name="/model/project_out")
    if "lm_head" in g.quantized:
        q = g.quantized["lm_head"]
        g.node("MatMulNBits", [hidden, "lm_head.qweight", "lm_head.scales"], name="/model/lm_head/MatMulNBits",
               outputs=[contract.LOGITS], domain=MS_DOMAIN, K=q.K, N=q.N, bits=q.bits, block_size=q.block_size,
               accuracy_level=q.accuracy_level)
        return
    head = "lm_head.weight" if "lm_head.weight" in initializers else "embed_tokens.weight"
    g.node("FusedMatMul", [hidden, head], name="/model/lm_head/FusedMatMul", outputs=[contract.LOGITS],
           domain=MS_DOMAIN, transB=1)


def layer_stack(dims: ModelDims):
    return pre_ln_layers if dims.norm_position == "pre" else post_ln_layers


def build_decoder_graph(
    dims: ModelDims,
    weights: WrittenWeights,
    *,
    logits: LogitsMode = "all",
    name: str = "decoder",
) -> onnx.GraphProto:
    """The decoder graph over already-written weights.

    ``logits="last"`` computes the output projection for the last position only
    (``logits`` is then [B, 1, V]): what the generation operators read, without the
    cost of projecting every prompt token onto the vocabulary.
    """
    g = GraphBuilder(name, quantized=weights.quantized, float_dtype=weights.float_dtype)
    g.initializers.extend(weights.initializers.values())
    _declare_io(g, dims, logits)
    tokens = token_embeddings(g, dims)
    positions = position_embeddings(g, dims, positions_from_mask(g))
    hidden = layer_stack(dims)(g, dims, tokens, positions)
    if logits == "last":
        hidden = g.op(
            "Slice", [hidden, g.constant([-1]), g.constant([_INT64_MAX]), g.constant([1])],
            name="/model/last_token/Slice",
        )
    lm_head(g, dims, hidden, weights.initializers)
    return g.build()
