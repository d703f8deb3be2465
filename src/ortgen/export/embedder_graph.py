"""The sentence encoder graph: BERT + pooling + normalisation, built from numpy weights.

    input_ids (B, S) int64 ─► EmbedLayerNormalization(word + position + token type 0) ─► x (B, S, H)
    attention_mask (B, S) int64 ─► Cast int32 ─────────────────────────────┐
    layer i:  x ─► Attention(fused q/k/v, mask) ─► out proj ─► SkipLayerNorm(+x, +bias) ─► x
              x ─► fc_in ─► BiasGelu ─► fc_out ─► SkipLayerNorm(+x, +bias) ─► x            (post-LN)
    pool:     mean: (mask (B,1,S) @ x) / max(sum(mask), 1e-9)   <- PAD positions weigh 0
              cls: x[:, 0]   max: max over unmasked positions   mean_sqrt_len: sum / sqrt(n)
    normalise: e / max(||e||_2, 1e-12)                           ─► embeddings (B, D) float32

int8 weights (optional): every linear layer's weight in int8 with one scale per output column,
activations quantized per call (DynamicQuantizeLinear / DynamicQuantizeMatMul, QAttention).

The same computation as sentence-transformers (``Transformer -> Pooling -> Normalize``); the
com.microsoft fused operators are what ONNX Runtime's own BERT optimizer would produce, written
directly so there is no torch at export and no optimizer pass to trust.

Single-segment input only (sentence embedders never see a second segment), so the token type
embedding of segment 0 is folded into the position table.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from ortgen.export.embedder_source import BertDims
from ortgen.export.onnx_graph import MS_DOMAIN, GraphBuilder, WeightFile
from ortgen.package.embedder import ATTENTION_MASK, EMBEDDINGS, INPUT_IDS

OPSET = 17
IR_VERSION = 9  # readable by ONNX Runtime 1.15 and later


def _t(array: np.ndarray) -> np.ndarray:
    """A torch Linear weight (out, in) as a MatMul right operand (in, out)."""
    return np.ascontiguousarray(array.T)


WEIGHT_TYPES = ("float32", "int8")


def quantize_columns(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weight`` (in, out) -> (int8 values, one float scale per output column): symmetric, zero point 0."""
    scales = np.abs(weight).max(axis=0) / 127.0  # (out,)
    scales[scales == 0] = 1.0
    values = np.clip(np.rint(weight / scales), -127, 127).astype(np.int8)
    return values, scales.astype(np.float32)


def _put_linear(g: GraphBuilder, role: str, weight: np.ndarray, bias: np.ndarray, int8: bool) -> None:
    """``{role}.weight`` (in, out): float32, or int8 with ``{role}.scale`` / ``{role}.zero_point`` per column."""
    if int8:
        values, scales = quantize_columns(weight)
        g.weight(f"{role}.weight", values)
        g.weight(f"{role}.scale", scales)
        g.weight(f"{role}.zero_point", np.zeros_like(values[0]))
    else:
        g.weight(f"{role}.weight", weight)
    g.weight(f"{role}.bias", bias)


def _linear(g: GraphBuilder, x: str, role: str, int8: bool, name: str) -> str:
    """``x @ W`` (bias not added: the next fused operator adds it). int8: DynamicQuantizeMatMul
    quantizes ``x`` per call (uint8, per tensor) and multiplies in integers."""
    if not int8:
        return g.op("MatMul", [x, f"{role}.weight"], name=f"{name}/MatMul")
    return g.op("DynamicQuantizeMatMul", [x, f"{role}.weight", f"{role}.scale", f"{role}.zero_point"],
                name=f"{name}/DynamicQuantizeMatMul", domain=MS_DOMAIN)


def _write_weights(g: GraphBuilder, dims: BertDims, w: dict[str, np.ndarray], int8: bool) -> None:
    """Register every weight under the graph's names (qkv fused; token type 0 folded into positions;
    linear layers int8 when asked, embeddings and norms always float32)."""
    missing = [k for k in _required_keys(dims) if k not in w]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"the checkpoint lacks {len(missing)} encoder weight(s): {shown}")
    g.weight("embeddings.word", w["embeddings.word_embeddings.weight"])
    positions = w["embeddings.position_embeddings.weight"].copy()
    positions += w["embeddings.token_type_embeddings.weight"][0]  # segment 0 everywhere
    g.weight("embeddings.position_and_type", positions)
    g.weight("embeddings.norm.weight", w["embeddings.LayerNorm.weight"])
    g.weight("embeddings.norm.bias", w["embeddings.LayerNorm.bias"])
    for i in range(dims.num_layers):
        p = f"encoder.layer.{i}."
        att = p + "attention.self."
        qkv = np.concatenate([_t(w[att + n + ".weight"]) for n in ("query", "key", "value")], axis=1)  # (H, 3H)
        qkv_bias = np.concatenate([w[att + n + ".bias"] for n in ("query", "key", "value")])
        _put_linear(g, f"layers.{i}.attn.qkv", qkv, qkv_bias, int8)
        _put_linear(g, f"layers.{i}.attn.out", _t(w[p + "attention.output.dense.weight"]),
                    w[p + "attention.output.dense.bias"], int8)
        g.weight(f"layers.{i}.attn_norm.weight", w[p + "attention.output.LayerNorm.weight"])
        g.weight(f"layers.{i}.attn_norm.bias", w[p + "attention.output.LayerNorm.bias"])
        _put_linear(g, f"layers.{i}.mlp.fc_in", _t(w[p + "intermediate.dense.weight"]),
                    w[p + "intermediate.dense.bias"], int8)
        _put_linear(g, f"layers.{i}.mlp.fc_out", _t(w[p + "output.dense.weight"]), w[p + "output.dense.bias"], int8)
        g.weight(f"layers.{i}.mlp_norm.weight", w[p + "output.LayerNorm.weight"])
        g.weight(f"layers.{i}.mlp_norm.bias", w[p + "output.LayerNorm.bias"])


def _required_keys(dims: BertDims) -> list[str]:
    keys = [f"embeddings.{n}" for n in ("word_embeddings.weight", "position_embeddings.weight",
                                        "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")]
    for i in range(dims.num_layers):
        p = f"encoder.layer.{i}."
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                  "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"):
            keys += [p + n + ".weight", p + n + ".bias"]
    return keys


def _embeddings(g: GraphBuilder, dims: BertDims, ids32: str) -> str:
    """LayerNorm(word[ids] + position[0..S) + type[0]): (B, S) -> (B, S, H)."""
    return g.node(
        "EmbedLayerNormalization",
        [ids32, "", "embeddings.word", "embeddings.position_and_type", "", "embeddings.norm.weight",
         "embeddings.norm.bias"],
        name="/model/embeddings/EmbedLayerNorm",
        outputs=["/model/embeddings/output_0", "/model/embeddings/mask_index"],  # mask_index unused
        domain=MS_DOMAIN, epsilon=float(dims.layer_norm_eps),
    )[0]


def _skip_norm(g: GraphBuilder, dims: BertDims, name: str, x: str, residual: str, norm: str, bias: str) -> str:
    """LayerNorm(x + residual + bias): BERT's post-LN residual."""
    return g.node("SkipLayerNormalization", [x, residual, f"{norm}.weight", f"{norm}.bias", bias],
                  name=name, outputs=[f"{name}/output_0"], domain=MS_DOMAIN, epsilon=float(dims.layer_norm_eps))[0]


def _activation(g: GraphBuilder, dims: BertDims, x: str, bias: str, p: str) -> str:
    if dims.activation == "gelu":  # erf gelu, as BERT
        return g.op("BiasGelu", [x, bias], name=f"{p}/BiasGelu", domain=MS_DOMAIN)
    if dims.activation in ("gelu_new", "gelu_pytorch_tanh"):
        return g.op("FastGelu", [x, bias], name=f"{p}/FastGelu", domain=MS_DOMAIN)
    biased = g.op("Add", [x, bias], name=f"{p}/fc_in/Add")
    return g.op("Relu", [biased], name=f"{p}/Relu")


def _attention(g: GraphBuilder, dims: BertDims, i: int, x: str, mask32: str, int8: bool) -> str:
    """Bidirectional self-attention over unmasked keys: (B, S, H) -> (B, S, H), before the out projection.

    float32: one com.microsoft Attention (q/k/v projection inside).
    int8:    x ─► DynamicQuantizeLinear ─► QAttention(int8 q/k/v weights, per-column scales, mask)
    """
    p = f"/model/layers.{i}/attn"
    scale = float(1.0 / np.sqrt(dims.head_dim))
    if not int8:
        return g.op("Attention", [x, f"layers.{i}.attn.qkv.weight", f"layers.{i}.attn.qkv.bias", mask32],
                    name=f"{p}/Attention", domain=MS_DOMAIN, num_heads=dims.num_heads, scale=scale)
    xq, x_scale, x_zero = g.node("DynamicQuantizeLinear", [x], name=f"{p}/input/DynamicQuantizeLinear", outputs=3)
    role = f"layers.{i}.attn.qkv"
    return g.op("QAttention", [xq, f"{role}.weight", f"{role}.bias", x_scale, f"{role}.scale", mask32, x_zero,
                               f"{role}.zero_point"],
                name=f"{p}/QAttention", domain=MS_DOMAIN, num_heads=dims.num_heads)  # scale: 1/sqrt(head_dim)


def _layer(g: GraphBuilder, dims: BertDims, i: int, x: str, mask32: str, int8: bool) -> str:
    """One post-LN encoder layer: (B, S, H) -> (B, S, H)."""
    p = f"/model/layers.{i}"
    context = _attention(g, dims, i, x, mask32, int8)  # (B, S, H), PAD keys masked
    out = _linear(g, context, f"layers.{i}.attn.out", int8, f"{p}/attn/out")
    x = _skip_norm(g, dims, f"{p}/attn_norm/SkipLayerNorm", out, x, f"layers.{i}.attn_norm",
                   f"layers.{i}.attn.out.bias")
    up = _linear(g, x, f"layers.{i}.mlp.fc_in", int8, f"{p}/mlp/fc_in")  # (B, S, 4H)
    act = _activation(g, dims, up, f"layers.{i}.mlp.fc_in.bias", f"{p}/mlp")
    down = _linear(g, act, f"layers.{i}.mlp.fc_out", int8, f"{p}/mlp/fc_out")
    return _skip_norm(g, dims, f"{p}/mlp_norm/SkipLayerNorm", down, x, f"layers.{i}.mlp_norm",
                      f"layers.{i}.mlp.fc_out.bias")


def _pool(g: GraphBuilder, x: str, mask: str, pooling: str) -> str:
    """(B, S, H) hidden states + (B, S) mask -> (B, H); PAD positions never contribute."""
    p = "/model/pooling"
    if pooling == "cls":
        return g.op("Gather", [x, g.constant(0)], name=f"{p}/Cls", axis=1)  # (B, H)
    mask_f = g.op("Cast", [mask], name=f"{p}/MaskFloat", to=TensorProto.FLOAT)  # (B, S)
    if pooling == "max":
        mask3 = g.op("Unsqueeze", [mask_f, g.constant([2])], name=f"{p}/Mask3")  # (B, S, 1)
        is_pad = g.op("Equal", [mask3, g.constant(0.0, np.float32)], name=f"{p}/IsPad")
        masked = g.op("Where", [is_pad, g.constant(-1e9, np.float32), x], name=f"{p}/MaskPads")
        return g.op("ReduceMax", [masked], name=f"{p}/Max", axes=[1], keepdims=0)
    weights = g.op("Unsqueeze", [mask_f, g.constant([1])], name=f"{p}/MaskRow")  # (B, 1, S)
    summed = g.op("MatMul", [weights, x], name=f"{p}/Sum")  # (B, 1, H)
    count = g.op("ReduceSum", [weights, g.constant([2])], name=f"{p}/Count", keepdims=1)  # (B, 1, 1)
    count = g.op("Max", [count, g.constant(1e-9, np.float32)], name=f"{p}/CountFloor")
    if pooling == "mean_sqrt_len":
        count = g.op("Sqrt", [count], name=f"{p}/SqrtCount")
    pooled = g.op("Div", [summed, count], name=f"{p}/Mean")  # (B, 1, H)
    return g.op("Squeeze", [pooled, g.constant([1])], name=f"{p}/Squeeze")  # (B, H)


def _normalize(g: GraphBuilder, e: str, output: str) -> str:
    """e / max(||e||, 1e-12), as torch.nn.functional.normalize."""
    p = "/model/normalize"
    norm = g.op("ReduceL2", [e], name=f"{p}/L2", axes=[-1], keepdims=1)  # (B, 1)
    norm = g.op("Max", [norm, g.constant(1e-12, np.float32)], name=f"{p}/Floor")
    return g.node("Div", [e, norm], name=f"{p}/Div", outputs=[output])[0]


def build_encoder_model(dims: BertDims, weights: dict[str, np.ndarray], weight_file: WeightFile,
                        pooling: str, normalize: bool, weight_type: str = "float32") -> onnx.ModelProto:
    """The encoder model over ``weights`` (written to ``weight_file`` as they are registered);
    ``weight_type`` "int8": linear layers in int8 (per-column scales), faster on CPUs with VNNI/AMX."""
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight type {weight_type!r} is not one of {', '.join(WEIGHT_TYPES)}")
    int8 = weight_type == "int8"
    g = GraphBuilder("encoder", weights=weight_file)
    _write_weights(g, dims, weights, int8)
    g.input(INPUT_IDS, TensorProto.INT64, ["batch_size", "sequence_length"])
    g.input(ATTENTION_MASK, TensorProto.INT64, ["batch_size", "sequence_length"])
    g.output(EMBEDDINGS, TensorProto.FLOAT, ["batch_size", dims.hidden_size])
    ids32 = g.op("Cast", [INPUT_IDS], name="/model/input_ids/Cast", to=TensorProto.INT32)
    mask32 = g.op("Cast", [ATTENTION_MASK], name="/model/attention_mask/Cast", to=TensorProto.INT32)
    x = _embeddings(g, dims, ids32)
    for i in range(dims.num_layers):
        x = _layer(g, dims, i, x, mask32, int8)
    pooled = _pool(g, x, ATTENTION_MASK, pooling)
    if normalize:
        _normalize(g, pooled, EMBEDDINGS)
    else:
        g.node("Identity", [pooled], name="/model/output/Identity", outputs=[EMBEDDINGS])
    model = helper.make_model(g.build(), producer_name="ortgen",
                              opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)])
    model.ir_version = IR_VERSION
    return model
