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
ROTARY_COS, ROTARY_SIN = "rotary.cos_cache", "rotary.sin_cache"  # [max_positions, head_dim / 2]


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

    def put_norm(role: str, parameters: tuple[np.ndarray, np.ndarray | None]) -> None:
        gamma, beta = parameters
        put(f"{role}.weight", gamma)
        if beta is not None:
            put(f"{role}.bias", beta)

    put("embed_tokens.weight", weights.embed_tokens())
    if dims.rotary is None:
        put("embed_positions.weight", weights.embed_positions())
    else:
        cos, sin = dims.rotary.tables(dims.head_dim, dims.max_positions)
        put(ROTARY_COS, cos)
        put(ROTARY_SIN, sin)
    if dims.has_projection:
        put_linear("project_in", weights.project_in().weight)
        put_linear("project_out", weights.project_out().weight)
    started = time.perf_counter()
    for i in range(dims.num_layers):
        for role in ("attn_norm", "mlp_norm"):
            put_norm(f"layers.{i}.{role}", weights.norm(f"layers.{i}.{role}"))
        for role, read in (
            ("attn.qkv", weights.qkv),
            ("attn.out", weights.out_proj),
            ("mlp.fc_in", weights.fc_in),
            ("mlp.fc_out", weights.fc_out),
        ):
            linear = read(i)  # one projection in memory at a time (a 7B's fused MLP input is ~0.5 GB)
            put_linear(f"layers.{i}.{role}", linear.weight)
            if linear.bias is not None:
                put(f"layers.{i}.{role}.bias", linear.bias)
            del linear
        if progress is not None:
            progress(i + 1, dims.num_layers)
    log.debug("wrote %d layers in %.1fs", dims.num_layers, time.perf_counter() - started)
    if dims.has_final_norm:
        put_norm("final_norm", weights.norm("final_norm"))
    head = weights.lm_head()
    if quant is not None:  # a tied head gets a quantized copy of the embedding
        put_linear("lm_head", (head if head is not None else weights.embed_tokens()).T)  # [V, W] -> [in, out]
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
    past_shape = [2, "batch_size", dims.kv_heads, "past_sequence_length", dims.head_dim]
    present_shape = [2, "batch_size", dims.kv_heads, "total_sequence_length", dims.head_dim]
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


def rotate(g: GraphBuilder, x: str, positions: str, heads: int, *, name: str, packed: bool = False) -> str:
    """(B, S, heads * head_dim) rotated at ``positions`` (int64 [B, S]): com.microsoft
    RotaryEmbedding over the precomputed cos / sin tables, transformers' halves convention.
    ``packed``: S is many requests' tokens (the step engine), which may outnumber the table's rows
    (``is_packed_batching`` lifts that check; each position is still looked up in the table)."""
    return g.op("RotaryEmbedding", [x, positions, ROTARY_COS, ROTARY_SIN], name=name, domain=MS_DOMAIN,
                interleaved=0, num_heads=heads, is_packed_batching=int(packed))


def project_qkv(g: GraphBuilder, dims: ModelDims, layer: int, x: str, positions: str | None, *,
                packed: bool = False) -> str:
    """``x ─► qkv projection (+bias) ─► [rotate q and k at positions]``: (B, S, (heads + 2 kv_heads) * head_dim),
    q, k and v packed the way GroupQueryAttention reads them."""
    p = f"/model/layers.{layer}/attn"
    role = f"layers.{layer}.attn.qkv"
    qkv = linear(g, x, role, name=f"{p}/qkv")
    if g.has(f"{role}.bias"):
        qkv = g.op("Add", [qkv, f"{role}.bias"], name=f"{p}/qkv/Add")
    if positions is None:
        return qkv
    q_size, kv_size = dims.num_heads * dims.head_dim, dims.kv_heads * dims.head_dim
    q, k, v = g.node("Split", [qkv, g.constant([q_size, kv_size, kv_size])], name=f"{p}/qkv/Split", outputs=3,
                     axis=-1)
    q = rotate(g, q, positions, dims.num_heads, name=f"{p}/q/Rotary", packed=packed)
    k = rotate(g, k, positions, dims.kv_heads, name=f"{p}/k/Rotary", packed=packed)
    return g.op("Concat", [q, k, v], name=f"{p}/qkv/Concat", axis=-1)


def _split_past(g: GraphBuilder, layer: int) -> tuple[str, str]:
    """``past_i`` [2, B, heads, P, D] -> its key and value, [B, heads, P, D] each."""
    p = f"/model/layers.{layer}/attn/past"
    key, value = g.node("Split", [contract.past_name(layer), g.constant([1, 1])], name=f"{p}/Split", outputs=2,
                        axis=0)
    axis0 = g.constant([0])
    return (g.op("Squeeze", [key, axis0], name=f"{p}/SqueezeKey"),
            g.op("Squeeze", [value, axis0], name=f"{p}/SqueezeValue"))


def _merge_present(g: GraphBuilder, layer: int, key: str, value: str) -> None:
    """Key and value [B, heads, T, D] -> ``present_i`` [2, B, heads, T, D] (the GPT contract's layout)."""
    p = f"/model/layers.{layer}/attn/present"
    axis0 = g.constant([0])
    key = g.op("Unsqueeze", [key, axis0], name=f"{p}/UnsqueezeKey")
    value = g.op("Unsqueeze", [value, axis0], name=f"{p}/UnsqueezeValue")
    g.node("Concat", [key, value], name=f"{p}/Concat", outputs=[contract.present_name(layer)], axis=0)


@dataclass(frozen=True)
class ContractAttentionInputs:
    """What GroupQueryAttention needs in the GPT subgraph contract, computed once per graph."""

    positions: str  # int64 [B, S]: each new token's position (rotary)
    seqlens_k: str  # int32 [B]: total - 1 for every row (left-padded batches end together)
    query_seqlens: str  # int32 [B]: S for every row (without it, S > 1 new tokens on a past need B == 1)
    total: str  # int32 scalar: attention_mask's width
    padding_bias: str  # float [B, 1, S, total]: hides the left padding (GroupQueryAttention is causal by slot)


def contract_attention_inputs(g: GraphBuilder, positions: str) -> ContractAttentionInputs:
    """``attention_mask ─► width ─► total, seqlens_k``; ``mask == 0 ─► lowest float ─► padding_bias``."""
    mask = contract.ATTENTION_MASK
    width = g.op("Shape", [mask], name="/model/gqa/Total", start=1, end=2)  # int64 [1]
    total32 = g.op("Cast", [width], name="/model/gqa/TotalInt32", to=TensorProto.INT32)
    total = g.op("Squeeze", [total32, g.constant([0])], name="/model/gqa/TotalScalar")
    batch = g.op("Shape", [contract.INPUT_IDS], name="/model/gqa/Batch", start=0, end=1)
    last = g.op("Sub", [total32, g.constant([1], np.int32)], name="/model/gqa/LastSlot")
    seqlens = g.op("Expand", [last, batch], name="/model/gqa/SeqlensK")
    hidden = g.op("Equal", [mask, g.constant(0, np.int32)], name="/model/gqa/IsPadding")
    lowest = np.finfo(g.float_dtype).min  # finite: a pad query seeing only pads must not give NaN
    bias = g.op("Where", [hidden, g.constant(lowest, g.float_dtype), g.constant(0, g.float_dtype)],
                name="/model/gqa/PaddingBias")  # [B, T]
    bias = g.op("Unsqueeze", [bias, g.constant([1, 2])], name="/model/gqa/PaddingBias4d")  # [B, 1, 1, T]
    new = g.op("Shape", [contract.INPUT_IDS], name="/model/gqa/NewTokens", start=1, end=2)
    shape = g.op("Concat", [batch, g.constant([1]), new, width], name="/model/gqa/BiasShape", axis=0)
    bias = g.op("Expand", [bias, shape], name="/model/gqa/PaddingBiasRows")  # [B, 1, S, T]
    new32 = g.op("Cast", [new], name="/model/gqa/NewTokensInt32", to=TensorProto.INT32)
    query = g.op("Expand", [new32, batch], name="/model/gqa/QuerySeqlens")
    positions64 = g.op("Cast", [positions], name="/model/positions/ToInt64", to=TensorProto.INT64)
    return ContractAttentionInputs(positions64, seqlens, query, total, bias)


def contract_gqa_attention(inputs: ContractAttentionInputs) -> AttentionFn:
    """Attention for rotary / grouped-query / windowed models in the GPT subgraph contract.

        x ─► qkv ─► rotate q, k ─┐
        past_i ─► Split key / value ─┴► GroupQueryAttention(padding_bias, local_window_size) ─► Concat ─► present_i

    The cache holds kv_heads heads; the generation operators read the head count from it.
    """

    def attention(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
        p = f"/model/layers.{layer}/attn"
        qkv = project_qkv(g, dims, layer, x, inputs.positions)
        past_k, past_v = _split_past(g, layer)
        context, present_k, present_v = g.node(
            "GroupQueryAttention",
            [qkv, "", "", past_k, past_v, inputs.seqlens_k, inputs.total, "", "", "", inputs.padding_bias,
             "", "", "", "", "", inputs.query_seqlens],
            name=f"{p}/GroupQueryAttention", outputs=3, domain=MS_DOMAIN,
            num_heads=dims.num_heads, kv_num_heads=dims.kv_heads, scale=float(dims.attention_scales[layer]),
            do_rotary=0, local_window_size=dims.sliding_window or -1,
        )
        _merge_present(g, layer, present_k, present_v)
        return linear(g, context, f"layers.{layer}.attn.out", name=f"{p}/out")

    return attention


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
    past_k, past_v = _split_past(g, layer)
    context, present_k, present_v = g.node(
        "MultiHeadAttention", [q, k, v, "", contract.ATTENTION_MASK, "", past_k, past_v],
        name=f"{p}/MultiHeadAttention", outputs=3, domain=MS_DOMAIN,
        num_heads=dims.num_heads, unidirectional=1, scale=float(dims.attention_scales[layer]),
    )
    _merge_present(g, layer, present_k, present_v)
    return linear(g, context, f"layers.{layer}.attn.out", name=f"{p}/out")


def _mlp(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
    """fc_in -> activation -> fc_out, without fc_out's bias (fused into the next skip norm).

    A gated MLP's fc_in is ``[gate | up]``: ``silu(gate) * up`` (``gate * Sigmoid(gate) * up``).
    """
    p = f"/model/layers.{layer}/mlp"
    up = linear(g, x, f"layers.{layer}.mlp.fc_in", name=f"{p}/fc_in")
    bias = f"layers.{layer}.mlp.fc_in.bias"
    if dims.mlp_kind == "gated":
        if g.has(bias):
            up = g.op("Add", [up, bias], name=f"{p}/fc_in/Add")
        gate, value = g.node("Split", [up, g.constant([dims.ffn_size, dims.ffn_size])], name=f"{p}/fc_in/Split",
                             outputs=2, axis=-1)
        sigmoid = g.op("Sigmoid", [gate], name=f"{p}/gate/Sigmoid")
        silu = g.op("Mul", [gate, sigmoid], name=f"{p}/gate/SiLU")
        act = g.op("Mul", [silu, value], name=f"{p}/gate/Mul")
    elif dims.activation == "gelu":
        act = g.op("BiasGelu", [up, bias], name=f"{p}/BiasGelu", domain=MS_DOMAIN)
    elif dims.activation == "gelu_tanh":
        act = g.op("FastGelu", [up, bias], name=f"{p}/FastGelu", domain=MS_DOMAIN)
    else:
        biased = g.op("Add", [up, bias], name=f"{p}/fc_in/Add")
        act = g.op("Relu", [biased], name=f"{p}/Relu")
    return linear(g, act, f"layers.{layer}.mlp.fc_out", name=f"{p}/fc_out")


def _norm(g: GraphBuilder, dims: ModelDims, name: str, x: str, norm: str) -> str:
    """LayerNorm or RMSNorm of ``x`` alone (the first layer's input, when there is no position table)."""
    if dims.norm_kind == "rmsnorm":
        return g.op("SimplifiedLayerNormalization", [x, f"{norm}.weight"], name=name, axis=-1,
                    epsilon=float(dims.layer_norm_eps), stash_type=1)
    return g.op("LayerNormalization", [x, f"{norm}.weight", f"{norm}.bias"], name=name, axis=-1,
                epsilon=float(dims.layer_norm_eps))


def _skip_norm(
    g: GraphBuilder, dims: ModelDims, name: str, x: str, residual: str, norm: str, bias: str | None
) -> tuple[str, str]:
    """``s = x + residual + bias`` (a bias the model lacks is left out); returns ``(norm(s), s)``:
    SkipLayerNormalization, or SkipSimplifiedLayerNormalization for an RMSNorm."""
    bias_input = [bias] if bias and g.has(bias) else []
    if dims.norm_kind == "rmsnorm":
        op, inputs = "SkipSimplifiedLayerNormalization", [x, residual, f"{norm}.weight"] + bias_input
    else:
        op, inputs = "SkipLayerNormalization", [x, residual, f"{norm}.weight", f"{norm}.bias"] + bias_input
    normed, _, _, total = g.node(
        op,
        inputs,
        name=name,
        outputs=[f"{name}/output_0", "", "", f"{name}/output_3"],
        domain=MS_DOMAIN,
        epsilon=float(dims.layer_norm_eps),
    )
    return normed, total


def pre_ln_layers(g: GraphBuilder, dims: ModelDims, tokens: str, positions: str | None,
                  attention: AttentionFn = _attention) -> str:
    """Pre-norm stack (BioGPT, GPT-2, most OPT, the Llama family); returns the final hidden state.

        h ─┬─► LN ─► Attention ─► out ─► (+h) ─┬─► LN ─► fc_in ─► act ─► fc_out ─► (+) ─► next layer
           └──────────────────────────────────┘ └─────────────────────────────────┘
    Each "(+) then LN" is one Skip(Simplified)LayerNormalization that also returns the sum.
    ``positions`` is the position embedding added to the tokens (None with rotary positions).
    """
    if positions is None:
        h = tokens
        x = _norm(g, dims, "/model/layers.0/attn_norm/Norm", tokens, "layers.0.attn_norm")
    else:
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
            if g.has(f"layers.{i}.mlp.fc_out.bias"):
                mlp = g.op("Add", [mlp, f"layers.{i}.mlp.fc_out.bias"], name=f"/model/layers.{i}/mlp/fc_out/Add")
            x = g.op("Add", [mlp, h], name=f"/model/layers.{i}/residual/Add")
    return x


def post_ln_layers(g: GraphBuilder, dims: ModelDims, tokens: str, positions: str | None,
                   attention: AttentionFn = _attention) -> str:
    """Post-LN stack (OPT-350m): ``h = LN(h + attn(h)); h = LN(h + mlp(h))``."""
    assert positions is not None, "post-LN stacks have learned positions"
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


def uses_group_query_attention(dims: ModelDims) -> bool:
    """Whether ``decoder.onnx`` attends with GroupQueryAttention (rotary positions, fewer key/value heads
    or a window) rather than com.microsoft Attention (what GPT-2 / OPT / BioGPT graphs have always used)."""
    return dims.rotary is not None or dims.kv_heads != dims.num_heads or dims.sliding_window is not None


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
    g.add_initializers(weights.initializers.values())
    _declare_io(g, dims, logits)
    tokens = token_embeddings(g, dims)
    token_positions = positions_from_mask(g)
    attention: AttentionFn = _attention
    if uses_group_query_attention(dims):
        attention = contract_gqa_attention(contract_attention_inputs(g, token_positions))
    positions = None if dims.rotary else position_embeddings(g, dims, token_positions)
    hidden = layer_stack(dims)(g, dims, tokens, positions, attention)
    if logits == "last":
        hidden = g.op(
            "Slice", [hidden, g.constant([-1]), g.constant([_INT64_MAX]), g.constant([1])],
            name="/model/last_token/Slice",
        )
    lm_head(g, dims, hidden, weights.initializers)
    return g.build()
