"""The decoder's weights, located by an architecture spec and checked against the config.

:class:`DecoderWeights` resolves every weight the graph needs *before* anything is
written, and reports all missing tensors and shape mismatches at once. Linear weights
come out in ``[in, out]`` layout (what ``MatMul`` wants), whatever the checkpoint uses.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np

from ortgen.arch import ArchSpec, ModelDims
from ortgen.errors import WeightMismatchError
from ortgen.tensor_files import TensorSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Linear:
    """A projection ``y = x @ weight + bias``; ``weight`` is ``[in, out]``."""

    weight: np.ndarray
    bias: np.ndarray | None


@dataclass(frozen=True)
class _Need:
    key: str
    shape: tuple[int, ...]  # as stored in the checkpoint


class DecoderWeights:
    """Every tensor of one decoder, addressed by layer and role."""

    def __init__(self, spec: ArchSpec, dims: ModelDims, tensors: TensorSource) -> None:
        self.spec = spec
        self.dims = dims
        self.tensors = tensors
        self._keys = set(tensors.keys())
        self.prefix = self._detect_prefix()
        self._needs: dict[str, _Need] = {}
        self._plan()

    # -- planning -----------------------------------------------------------------------

    def _detect_prefix(self) -> str:
        probe = f"{self.spec.layout.embed_tokens}.weight"
        for prefix in self.spec.base_prefixes:
            if prefix + probe in self._keys:
                return prefix
        tried = ", ".join(repr(p + probe) for p in self.spec.base_prefixes)
        sample = ", ".join(sorted(self._keys)[:5])
        raise WeightMismatchError(
            f"the checkpoint has no token embedding for a {self.spec.model_type} model (looked for {tried}); "
            f"its first keys are: {sample}"
        )

    def _linear_shape(self, n_in: int, n_out: int) -> tuple[int, int]:
        return (n_out, n_in) if self.spec.layout.linear_layout == "out_in" else (n_in, n_out)

    def _need(self, role: str, module: str, weight_shape: tuple[int, ...], bias: int | None) -> None:
        self._needs[f"{role}.weight"] = _Need(f"{self.prefix}{module}.weight", weight_shape)
        if bias is not None:
            self._needs[f"{role}.bias"] = _Need(f"{self.prefix}{module}.bias", (bias,))

    def _plan(self) -> None:
        d, lay = self.dims, self.spec.layout
        H, F, W = d.hidden_size, d.ffn_size, d.word_embed_size
        layer_norm = d.norm_kind == "layernorm"  # RMSNorm has no bias
        self._need("embed_tokens", lay.embed_tokens, (d.vocab_size, W), None)
        if d.rotary is None:
            assert lay.embed_positions is not None, "a spec without rotary positions must name its position table"
            self._need("embed_positions", lay.embed_positions, (d.max_positions + d.position_offset, H), None)
        if d.has_projection:
            if not (lay.project_in and lay.project_out):
                raise WeightMismatchError(f"{d.model_type} does not support word_embed_size != hidden_size")
            self._need("project_in", lay.project_in, self._linear_shape(W, H), None)
            self._need("project_out", lay.project_out, self._linear_shape(H, W), None)
        q_size, kv_size = d.num_heads * d.head_dim, d.kv_heads * d.head_dim
        for i in range(d.num_layers):
            at = lambda template: template.format(i=i)  # noqa: E731
            self._need(f"layers.{i}.attn_norm", at(lay.attn_norm), (H,), H if layer_norm else None)
            if lay.qkv:
                self._need(f"layers.{i}.qkv", at(lay.qkv), self._linear_shape(H, d.qkv_size),
                           d.qkv_size if d.qkv_bias else None)
            else:
                for part, template, size in (("q", lay.q, q_size), ("k", lay.k, kv_size), ("v", lay.v, kv_size)):
                    assert template is not None, "a spec without fused qkv must name q, k and v"
                    self._need(f"layers.{i}.{part}", at(template), self._linear_shape(H, size),
                               size if d.qkv_bias else None)
            self._need(f"layers.{i}.out_proj", at(lay.out_proj), self._linear_shape(d.attention_size, H),
                       H if d.out_bias else None)
            self._need(f"layers.{i}.mlp_norm", at(lay.mlp_norm), (H,), H if layer_norm else None)
            if d.mlp_kind == "gated":
                assert lay.fc_gate is not None, "a gated MLP's spec must name its gate"
                self._need(f"layers.{i}.fc_gate", at(lay.fc_gate), self._linear_shape(H, F), F if d.mlp_bias else None)
            self._need(f"layers.{i}.fc_in", at(lay.fc_in), self._linear_shape(H, F), F if d.mlp_bias else None)
            self._need(f"layers.{i}.fc_out", at(lay.fc_out), self._linear_shape(F, H), H if d.mlp_bias else None)
        if d.has_final_norm:
            assert lay.final_norm is not None
            self._need("final_norm", lay.final_norm, (H,), H if layer_norm else None)
        if not d.tied_lm_head:
            assert lay.lm_head is not None
            # The head is always an nn.Linear stored [vocab, in] (GPT-2's too).
            self._needs["lm_head.weight"] = _Need(f"{lay.lm_head}.weight", (d.vocab_size, W))

    # -- checking -----------------------------------------------------------------------

    def check(self) -> None:
        """Raise one error naming every missing tensor and every shape mismatch."""
        missing, mismatched = [], []
        for need in self._needs.values():
            if need.key not in self._keys:
                missing.append(need.key)
                continue
            shape = tuple(self.tensors.shape(need.key))
            if shape != need.shape:
                mismatched.append(f"{need.key} is {list(shape)}, the config implies {list(need.shape)}")
        if missing or mismatched:
            d = self.dims
            parts = [
                f"the weights do not match config.json (vocab_size={d.vocab_size}, hidden={d.hidden_size}, "
                f"layers={d.num_layers}, heads={d.num_heads}, kv_heads={d.kv_heads}, head_dim={d.head_dim}, "
                f"ffn={d.ffn_size}, positions={d.max_positions})"
            ]
            if mismatched:
                parts.append(f"{len(mismatched)} shape mismatch(es): " + "; ".join(mismatched[:10]))
            if missing:
                parts.append(f"{len(missing)} missing tensor(s): " + ", ".join(missing[:10]))
            raise WeightMismatchError(". ".join(parts))
        unused = self.unused_keys()
        if unused:
            log.warning("ignoring %d checkpoint tensor(s) the decoder does not use: %s", len(unused), ", ".join(unused[:8]))

    def unused_keys(self) -> list[str]:
        used = {need.key for need in self._needs.values()}
        head = f"{self.spec.layout.lm_head}.weight" if self.spec.layout.lm_head else None
        ignored = [re.compile(pattern) for pattern in self.spec.ignored_keys]
        unused = []
        for key in sorted(self._keys - used):
            if key == head:  # a tied head stored anyway
                continue
            if any(p.search(key) for p in ignored):
                continue
            unused.append(key)
        return unused

    # -- access -------------------------------------------------------------------------

    def _read(self, role: str) -> np.ndarray:
        return self.tensors.read(self._needs[role].key)

    def _linear(self, role: str) -> Linear:
        weight = self._read(f"{role}.weight")
        if self.spec.layout.linear_layout == "out_in":
            weight = np.ascontiguousarray(weight.T)
        bias = self._read(f"{role}.bias") if f"{role}.bias" in self._needs else None
        return Linear(weight, bias)

    def embed_tokens(self) -> np.ndarray:
        """``[vocab, word_embed]``; also the tied output projection."""
        return self._read("embed_tokens.weight")

    def embed_positions(self) -> np.ndarray:
        """``[max_positions + offset, hidden]``."""
        return self._read("embed_positions.weight")

    def lm_head(self) -> np.ndarray | None:
        """``[vocab, word_embed]`` when the head is not tied, else None."""
        return None if self.dims.tied_lm_head else self._read("lm_head.weight")

    def project_in(self) -> Linear:
        return self._linear("project_in")

    def project_out(self) -> Linear:
        return self._linear("project_out")

    def norm(self, role: str) -> tuple[np.ndarray, np.ndarray | None]:
        """``(gamma, beta)`` of a LayerNorm (beta None for an RMSNorm): ``layers.{i}.attn_norm``,
        ``layers.{i}.mlp_norm``, ``final_norm``."""
        beta = self._read(f"{role}.bias") if f"{role}.bias" in self._needs else None
        return self._read(f"{role}.weight"), beta

    def _fused(self, layer: int, parts: tuple[str, ...]) -> Linear:
        """Several projections of one input as one ``[in, sum of outs]`` linear."""
        linears = [self._linear(f"layers.{layer}.{p}") for p in parts]
        weight = np.concatenate([p.weight for p in linears], axis=1)
        biases = [p.bias for p in linears if p.bias is not None]
        return Linear(weight, np.concatenate(biases) if biases else None)

    def qkv(self, layer: int) -> Linear:
        """The fused ``[hidden, (heads + 2 kv_heads) * head_dim]`` q/k/v projection (concatenated
        when stored split)."""
        if f"layers.{layer}.qkv.weight" in self._needs:
            return self._linear(f"layers.{layer}.qkv")
        return self._fused(layer, ("q", "k", "v"))

    def out_proj(self, layer: int) -> Linear:
        return self._linear(f"layers.{layer}.out_proj")

    def fc_in(self, layer: int) -> Linear:
        """The MLP's input projection; a gated MLP's is ``[gate | up]``, ``[hidden, 2 * ffn]``."""
        if self.dims.mlp_kind == "gated":
            return self._fused(layer, ("fc_gate", "fc_in"))
        return self._linear(f"layers.{layer}.fc_in")

    def fc_out(self, layer: int) -> Linear:
        return self._linear(f"layers.{layer}.fc_out")

    def parameter_count(self) -> int:
        """Parameters the decoder uses (the tied head counted once)."""
        return sum(int(np.prod(need.shape)) for need in self._needs.values())
