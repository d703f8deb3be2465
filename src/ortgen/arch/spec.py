"""The declarative description of a decoder-only architecture.

An :class:`ArchSpec` says where a checkpoint keeps each weight and how to read the
model's dimensions from its ``config.json``. The graph builder never looks at
``model_type``: it consumes the :class:`ModelDims` a spec produces and the weights the
spec locates. Adding a family means writing one small spec file, nothing else.

:class:`ModelDims` composes a block from parts: positions (a learned table, or :class:`Rotary`
with its scaling), norm (LayerNorm | RMSNorm), MLP (plain | gated SiLU), attention (heads,
key/value heads, head size, which projections carry biases, a sliding window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

import numpy as np

from ortgen.errors import UnsupportedModelError

Activation = Literal["gelu", "gelu_tanh", "relu", "silu"]
NormPosition = Literal["pre", "post"]
NormKind = Literal["layernorm", "rmsnorm"]
MlpKind = Literal["plain", "gated"]  # gated: down(act(gate(x)) * up(x)), Llama's MLP
LinearLayout = Literal["out_in", "in_out"]

# Hugging Face activation names -> the activation our graphs implement.
_HF_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",  # exact (erf)
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}


def activation_from_hf(name: str) -> Activation:
    """Map a Hugging Face activation name to one the graph builder implements."""
    try:
        return _HF_ACTIVATIONS[name]
    except KeyError:
        supported = ", ".join(sorted(_HF_ACTIVATIONS))
        raise UnsupportedModelError(
            f"activation function {name!r} is not supported; supported: {supported}"
        ) from None


@dataclass(frozen=True)
class ModelDims:
    """Everything about a decoder that the graph builder needs, read from its config."""

    model_type: str
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    ffn_size: int
    max_positions: int
    position_offset: int
    activation: Activation
    embed_scale: float
    layer_norm_eps: float
    norm_position: NormPosition
    tied_lm_head: bool
    word_embed_size: int  # != hidden_size when the model projects embeddings in/out (OPT-350m)
    attention_scales: tuple[float, ...]  # one softmax scale per layer
    has_final_norm: bool
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    # The parts that compose a Llama-family block (the defaults describe GPT-2 / OPT / BioGPT).
    num_kv_heads: int | None = None  # grouped-query attention: fewer key/value heads (None: num_heads)
    head_size: int | None = None  # config.head_dim when it is not hidden_size / num_heads
    rotary: Rotary | None = None  # rotary positions (then there is no position table)
    norm_kind: NormKind = "layernorm"
    mlp_kind: MlpKind = "plain"
    qkv_bias: bool = True
    out_bias: bool = True
    mlp_bias: bool = True
    sliding_window: int | None = None  # keys older than this many tokens are hidden (Mistral)

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden_size // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def qkv_size(self) -> int:
        """Output width of the fused q/k/v projection."""
        return (self.num_heads + 2 * self.kv_heads) * self.head_dim

    @property
    def attention_size(self) -> int:
        """Width of the attention's output (the input of its output projection)."""
        return self.num_heads * self.head_dim

    @property
    def has_projection(self) -> bool:
        return self.word_embed_size != self.hidden_size

    def validate(self) -> None:
        """Reject dimensions no graph can be built for, naming the offending field."""
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "ffn_size", "max_positions"):
            if getattr(self, name) <= 0:
                raise UnsupportedModelError(f"config gives {name}={getattr(self, name)}; it must be positive")
        if self.head_size is None and self.hidden_size % self.num_heads:
            raise UnsupportedModelError(
                f"hidden size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.num_heads % self.kv_heads:
            raise UnsupportedModelError(
                f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads {self.kv_heads}"
            )
        if self.rotary is not None and self.head_dim % 8:
            raise UnsupportedModelError(
                f"head_dim {self.head_dim}: rotary models are exported with head sizes that are multiples of 8"
            )
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise UnsupportedModelError(f"config gives sliding_window={self.sliding_window}; it must be positive")


@dataclass(frozen=True)
class Rotary:
    """Rotary position embedding (the "halves" convention of transformers' ``rotate_half``).

    ``scaling`` is transformers' ``rope_type``: ``default``, ``linear`` (positions / factor) or
    ``llama3`` (Llama 3.1's frequency-dependent stretch). Tables are computed in float32 the way
    transformers computes them, so the rotations match its forward to the last bits.
    """

    theta: float
    scaling: Literal["default", "linear", "llama3"] = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 8192

    def inv_freq(self, head_dim: int) -> np.ndarray:
        """float32 [head_dim / 2]: ``1 / theta^(2i/d)``, then the scaling's adjustment."""
        exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
        inv = (np.float32(1.0) / (np.float32(self.theta) ** exponents)).astype(np.float32)
        if self.scaling == "linear":
            return (inv / np.float32(self.factor)).astype(np.float32)
        if self.scaling == "llama3":
            low_wavelen = np.float32(self.original_max_positions / self.low_freq_factor)
            high_wavelen = np.float32(self.original_max_positions / self.high_freq_factor)
            wavelen = np.float32(2 * math.pi) / inv
            scaled = np.where(wavelen > low_wavelen, inv / np.float32(self.factor), inv).astype(np.float32)
            smooth = ((np.float32(self.original_max_positions) / wavelen - np.float32(self.low_freq_factor))
                      / np.float32(self.high_freq_factor - self.low_freq_factor)).astype(np.float32)
            smoothed = ((1 - smooth) * scaled / np.float32(self.factor) + smooth * scaled).astype(np.float32)
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            return np.where(medium, smoothed, scaled).astype(np.float32)
        return inv

    def tables(self, head_dim: int, positions: int) -> tuple[np.ndarray, np.ndarray]:
        """(cos, sin), float32 [positions, head_dim / 2]: what com.microsoft RotaryEmbedding reads."""
        angles = np.arange(positions, dtype=np.float32)[:, None] * self.inv_freq(head_dim)[None, :]
        return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def default_attention_scales(num_layers: int, head_dim: int) -> tuple[float, ...]:
    return tuple(1.0 / math.sqrt(head_dim) for _ in range(num_layers))


@dataclass(frozen=True)
class ParityTolerance:
    """How close the exported decoder must be to transformers' forward (max abs)."""

    logits_atol: float = 1e-4
    present_atol: float = 1e-4


@dataclass(frozen=True)
class WeightLayout:
    """Where a checkpoint stores each weight, relative to the base model prefix.

    Names use ``{i}`` for the layer index. ``qkv`` is set for fused projections
    (GPT-2's ``c_attn``), otherwise ``q``, ``k``, ``v``. Each entry names a module; the
    loader appends ``.weight`` / ``.bias``.
    """

    embed_tokens: str
    embed_positions: str | None
    attn_norm: str
    out_proj: str
    mlp_norm: str
    fc_in: str
    fc_out: str
    final_norm: str | None
    fc_gate: str | None = None  # the gate of a gated MLP (fc_in is then its "up" projection)
    qkv: str | None = None
    q: str | None = None
    k: str | None = None
    v: str | None = None
    project_in: str | None = None
    project_out: str | None = None
    lm_head: str | None = None  # full key (outside the base prefix) when not tied
    linear_layout: LinearLayout = "out_in"


@dataclass(frozen=True)
class ArchSpec:
    """One model family: how to read its config and find its weights."""

    model_type: str
    description: str
    base_prefixes: tuple[str, ...]  # e.g. ("biogpt.", ""): tried in order
    layout: WeightLayout
    read_dims: Callable[[Mapping[str, Any]], ModelDims]
    ignored_keys: tuple[str, ...] = ()  # regexes of checkpoint keys we deliberately skip
    tolerance: ParityTolerance = field(default_factory=ParityTolerance)
    tokenizer: str = "tokenizer.json"  # how export packages the tokenizer: "tokenizer.json" or "moses-bpe"
