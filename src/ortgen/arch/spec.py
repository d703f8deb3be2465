"""The declarative description of a decoder-only architecture.

An :class:`ArchSpec` says where a checkpoint keeps each weight and how to read the
model's dimensions from its ``config.json``. The graph builder never looks at
``model_type``: it consumes the :class:`ModelDims` a spec produces and the weights the
spec locates. Adding a family means writing one small spec file, nothing else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from ortgen.errors import UnsupportedModelError

Activation = Literal["gelu", "gelu_tanh", "relu"]
NormPosition = Literal["pre", "post"]
LinearLayout = Literal["out_in", "in_out"]

# Hugging Face activation names -> the activation our graphs implement.
_HF_ACTIVATIONS: dict[str, Activation] = {
    "gelu": "gelu",  # exact (erf)
    "gelu_new": "gelu_tanh",
    "gelu_fast": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
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

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def has_projection(self) -> bool:
        return self.word_embed_size != self.hidden_size

    def validate(self) -> None:
        """Reject dimensions no graph can be built for, naming the offending field."""
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "ffn_size", "max_positions"):
            if getattr(self, name) <= 0:
                raise UnsupportedModelError(f"config gives {name}={getattr(self, name)}; it must be positive")
        if self.hidden_size % self.num_heads:
            raise UnsupportedModelError(
                f"hidden size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )


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
    embed_positions: str
    attn_norm: str
    out_proj: str
    mlp_norm: str
    fc_in: str
    fc_out: str
    final_norm: str | None
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
