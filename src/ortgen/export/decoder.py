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
GPT subgraph contract (see :mod:`ortgen.contract`).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Literal

import numpy as np
import onnx
from onnx import TensorProto

from ortgen import contract
from ortgen.arch import ModelDims
from ortgen.export.onnx_graph import MS_DOMAIN, GraphBuilder, WeightFile
from ortgen.export.weights import DecoderWeights

log = logging.getLogger(__name__)

LogitsMode = Literal["all", "last"]
ProgressCallback = Callable[[int, int], None]  # (layers done, layers total)

_INT64_MAX = np.iinfo(np.int64).max


def write_decoder_weights(
    dims: ModelDims,
    weights: DecoderWeights,
    weight_file: WeightFile,
    progress: ProgressCallback | None = None,
) -> dict[str, TensorProto]:
    """Stream every decoder weight into ``weight_file``; returns initializers by name.

    Small tensors (LayerNorm parameters, biases) are returned inline; large ones are
    references into the weight file. Only one layer's tensors are in memory at a time.
    """
    out: dict[str, TensorProto] = {}

    def put(name: str, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        if array.nbytes > 1024:
            out[name] = weight_file.add(name, array)
        else:
            out[name] = onnx.numpy_helper.from_array(array, name)

    put("embed_tokens.weight", weights.embed_tokens())
    put("embed_positions.weight", weights.embed_positions())
    if dims.has_projection:
        put("project_in.weight", weights.project_in().weight)
        put("project_out.weight", weights.project_out().weight)
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
            put(f"layers.{i}.{role}.weight", linear.weight)
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
    if head is not None:
        put("lm_head.weight", head)
    return out


def _declare_io(g: GraphBuilder, dims: ModelDims, logits: LogitsMode) -> None:
    past_shape = [2, "batch_size", dims.num_heads, "past_sequence_length", dims.head_dim]
    present_shape = [2, "batch_size", dims.num_heads, "total_sequence_length", dims.head_dim]
    g.input(contract.INPUT_IDS, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(contract.POSITION_IDS, TensorProto.INT32, ["batch_size", "sequence_length"])
    g.input(contract.ATTENTION_MASK, TensorProto.INT32, ["batch_size", "total_sequence_length"])
    for i in range(dims.num_layers):
        g.input(contract.past_name(i), TensorProto.FLOAT, past_shape)
    logits_len: int | str = 1 if logits == "last" else "sequence_length"
    g.output(contract.LOGITS, TensorProto.FLOAT, ["batch_size", logits_len, dims.vocab_size])
    for i in range(dims.num_layers):
        g.output(contract.present_name(i), TensorProto.FLOAT, present_shape)


def token_embeddings(g: GraphBuilder, dims: ModelDims) -> str:
    """(B, S, hidden): ``input_ids ─► Gather(embed_tokens) ─► ×scale ─► [project_in]``."""
    tokens = g.op("Gather", ["embed_tokens.weight", contract.INPUT_IDS], name="/model/embed_tokens/Gather")
    if dims.embed_scale != 1.0:
        tokens = g.op("Mul", [tokens, g.constant(dims.embed_scale, np.float32)], name="/model/embed_tokens/Scale")
    if dims.has_projection:
        tokens = g.op("MatMul", [tokens, "project_in.weight"], name="/model/project_in/MatMul")
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
    return g.op("MatMul", [context, f"layers.{layer}.attn.out.weight"], name=f"{p}/out/MatMul")


def _mlp(g: GraphBuilder, dims: ModelDims, layer: int, x: str) -> str:
    """fc_in -> activation -> fc_out, without fc_out's bias (fused into the next SkipLayerNorm)."""
    p = f"/model/layers.{layer}/mlp"
    up = g.op("MatMul", [x, f"layers.{layer}.mlp.fc_in.weight"], name=f"{p}/fc_in/MatMul")
    bias = f"layers.{layer}.mlp.fc_in.bias"
    if dims.activation == "gelu":
        act = g.op("BiasGelu", [up, bias], name=f"{p}/BiasGelu", domain=MS_DOMAIN)
    elif dims.activation == "gelu_tanh":
        act = g.op("FastGelu", [up, bias], name=f"{p}/FastGelu", domain=MS_DOMAIN)
    else:
        biased = g.op("Add", [up, bias], name=f"{p}/fc_in/Add")
        act = g.op("Relu", [biased], name=f"{p}/Relu")
    return g.op("MatMul", [act, f"layers.{layer}.mlp.fc_out.weight"], name=f"{p}/fc_out/MatMul")


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
    """``hidden ─► [project_out] ─► FusedMatMul(embed_tokens or lm_head, transB=1) ─► logits``."""
    if dims.has_projection:
        hidden = g.op("MatMul", [hidden, "project_out.weight"], name="/model/project_out/MatMul")
    head = "lm_head.weight" if "lm_head.weight" in initializers else "embed_tokens.weight"
    g.node("FusedMatMul", [hidden, head], name="/model/lm_head/FusedMatMul", outputs=[contract.LOGITS],
           domain=MS_DOMAIN, transB=1)


def layer_stack(dims: ModelDims):
    return pre_ln_layers if dims.norm_position == "pre" else post_ln_layers


def build_decoder_graph(
    dims: ModelDims,
    initializers: dict[str, TensorProto],
    *,
    logits: LogitsMode = "all",
    name: str = "decoder",
) -> onnx.GraphProto:
    """The decoder graph over already-written weights.

    ``logits="last"`` computes the output projection for the last position only
    (``logits`` is then [B, 1, V]): what the generation operators read, without the
    cost of projecting every prompt token onto the vocabulary.
    """
    g = GraphBuilder(name)
    g.initializers.extend(initializers.values())
    _declare_io(g, dims, logits)
    tokens = token_embeddings(g, dims)
    positions = position_embeddings(g, dims, positions_from_mask(g))
    hidden = layer_stack(dims)(g, dims, tokens, positions)
    if logits == "last":
        hidden = g.op(
            "Slice", [hidden, g.constant([-1]), g.constant([_INT64_MAX]), g.constant([1])],
            name="/model/last_token/Slice",
        )
    lm_head(g, dims, hidden, initializers)
    return g.build()
