"""Synthetic fairseq BioGPT checkpoints with the real layout, and a reference forward pass.

The checkpoint mirrors what fairseq 0.12 saves for BioGPT (``cfg`` as plain dicts with an
unresolved interpolation, ``model`` state dict with the tied output projection and
``decoder.version``, optimizer history and extra state holding numpy scalars), or the legacy
layout (``args`` as an ``argparse.Namespace``). ``dict.txt`` and ``bpecodes`` are derived
from a BioGPT-format tokenizer (vocab.json + merges.txt). The forward pass is fairseq's
pre-LN ``transformer_lm`` written out in numpy (float64), independent of transformers.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class FairseqFixture:
    directory: Path
    dictionary_size: int  # 4 specials + dict.txt lines
    rows: int  # embedding rows (dictionary + learned prompt tokens)
    weights: dict[str, np.ndarray]
    hidden: int
    layers: int
    heads: int


def dictionary_from_vocab(vocab_json: Path, merges_txt: Path, directory: Path) -> int:
    """Write dict.txt and bpecodes equivalent to a BioGPT vocab.json / merges.txt; returns the size."""
    vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    assert [t for t, _ in by_id[:4]] == ["<s>", "<pad>", "</s>", "<unk>"]
    lines = []
    for rank, (token, index) in enumerate(by_id[4:]):
        assert index == rank + 4, "ids must be contiguous"
        symbol = token[:-4] if token.endswith("</w>") else token + "@@"
        lines.append(f"{symbol} {100000 - rank}\n")
    (directory / "dict.txt").write_text("".join(lines), encoding="utf-8")
    merges = merges_txt.read_text(encoding="utf-8").split("\n")[:-1]
    (directory / "bpecodes").write_text("".join(f"{m} {1000 - i % 1000}\n" for i, m in enumerate(merges)),
                                        encoding="utf-8")
    return len(by_id)


def write_fairseq_biogpt(
    directory: Path,
    tokenizer_dir: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    ffn: int = 64,
    positions: int = 64,
    learned_prompt: int = 0,
    layout: str = "cfg",
    arch: str = "transformer_lm_prompt_biogpt",
    data: str = "../../data/PubMedQA/ansis-bin",
    seed: int = 0,
    extra_objects: dict | None = None,
) -> FairseqFixture:
    directory.mkdir(parents=True, exist_ok=True)
    size = dictionary_from_vocab(tokenizer_dir / "vocab.json", tokenizer_dir / "merges.txt", directory)
    rows = size + learned_prompt
    rng = np.random.default_rng(seed)

    def normal(*shape, std=0.02):
        return (rng.standard_normal(shape) * std).astype(np.float32)

    w: dict[str, np.ndarray] = {
        "decoder.embed_tokens.weight": normal(rows, hidden, std=0.3),
        "decoder.embed_positions.weight": normal(positions + 2, hidden, std=0.3),
    }
    for i in range(layers):
        p = f"decoder.layers.{i}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            w[f"{p}self_attn.{proj}.weight"] = normal(hidden, hidden, std=0.2)
            w[f"{p}self_attn.{proj}.bias"] = normal(hidden, std=0.1)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            w[f"{p}{norm}.weight"] = 1 + normal(hidden, std=0.1)
            w[f"{p}{norm}.bias"] = normal(hidden, std=0.1)
        w[f"{p}fc1.weight"], w[f"{p}fc1.bias"] = normal(ffn, hidden, std=0.2), normal(ffn, std=0.1)
        w[f"{p}fc2.weight"], w[f"{p}fc2.bias"] = normal(hidden, ffn, std=0.2), normal(hidden, std=0.1)
    w["decoder.layer_norm.weight"] = 1 + normal(hidden, std=0.1)
    w["decoder.layer_norm.bias"] = normal(hidden, std=0.1)

    state: OrderedDict[str, torch.Tensor] = OrderedDict((k, torch.from_numpy(v)) for k, v in w.items())
    state["decoder.output_projection.weight"] = state["decoder.embed_tokens.weight"]  # tied: same tensor
    state["decoder.version"] = torch.tensor([3.0])

    model_cfg = {
        "_name": arch, "activation_fn": "gelu", "dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0,
        "relu_dropout": 0.0, "decoder_embed_dim": hidden, "decoder_output_dim": hidden, "decoder_input_dim": hidden,
        "decoder_ffn_embed_dim": ffn, "decoder_layers": layers, "decoder_attention_heads": heads,
        "decoder_normalize_before": True, "no_decoder_final_norm": False, "adaptive_softmax_cutoff": None,
        "no_token_positional_embeddings": False, "share_decoder_input_output_embed": True,
        "character_embeddings": False, "adaptive_input": False, "decoder_learned_pos": True,
        "layernorm_embedding": False, "no_scale_embedding": False, "decoder_layerdrop": 0.0,
        "max_target_positions": "${task.tokens_per_sample}", "tpu": False,
    }
    task_cfg = {
        "_name": "language_modeling_prompt", "data": data, "sample_break_mode": "none",
        "tokens_per_sample": positions, "source_lang": "x", "target_lang": "y", "max_source_positions": 900,
        "max_target_positions": positions, "manual_prompt": None, "learned_prompt": learned_prompt or None,
        "learned_prompt_pattern": "learned", "prefix": False, "sep_token": "<seqsep>",
    }
    checkpoint: dict = {
        "model": state,
        "criterion": None,
        "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": np.float64(2.17)}, "num_updates": 1200}],
        "task_state": {},
        "extra_state": {"metrics": {}, "previous_training_time": 5321.5,
                        "train_iterator": {"version": 2, "epoch": 3, "iterations_in_epoch": 0, "shuffle": True},
                        "val_loss": np.float64(2.31), "best": np.float64(2.2)},
        "last_optimizer_state": {"state": {0: {"step": 1200, "exp_avg": torch.zeros(3)}},
                                 "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.98), "params": [0]}]},
    }
    if layout == "cfg":
        checkpoint["args"] = None
        checkpoint["cfg"] = {"_name": None, "common": {"fp16": True, "seed": 1}, "model": model_cfg, "task": task_cfg,
                             "checkpoint": {"save_dir": "checkpoints"}}
    elif layout == "args":
        flat = {k: v for k, v in model_cfg.items() if k != "_name"}
        flat.update({k: v for k, v in task_cfg.items() if k != "_name"})
        flat["max_target_positions"] = positions
        checkpoint["args"] = argparse.Namespace(arch=arch, task="language_modeling_prompt", **flat)
        checkpoint["cfg"] = None
    else:
        raise ValueError(layout)
    if extra_objects:
        checkpoint["extra_state"].update(extra_objects)
    torch.save(checkpoint, directory / "checkpoint.pt")
    return FairseqFixture(directory, size, rows, w, hidden, layers, heads)


def _layer_norm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5) * gamma + beta


def _gelu(x: np.ndarray) -> np.ndarray:
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / math.sqrt(2)))


def fairseq_forward(fx: FairseqFixture, tokens: list[int]) -> np.ndarray:
    """Logits [S, rows] of fairseq's pre-LN transformer_lm, computed from the raw weights (float64)."""
    w = {k: v.astype(np.float64) for k, v in fx.weights.items()}
    H, heads = fx.hidden, fx.heads
    d = H // heads
    S = len(tokens)
    padding_idx = 1
    positions = np.arange(S) + padding_idx + 1  # fairseq make_positions: first token at padding_idx + 1
    x = math.sqrt(H) * w["decoder.embed_tokens.weight"][tokens] + w["decoder.embed_positions.weight"][positions]
    causal = np.triu(np.full((S, S), -np.inf), k=1)
    for i in range(fx.layers):
        p = f"decoder.layers.{i}."
        h = _layer_norm(x, w[p + "self_attn_layer_norm.weight"], w[p + "self_attn_layer_norm.bias"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T + w[p + "self_attn.q_proj.bias"]) * d ** -0.5
        k = h @ w[p + "self_attn.k_proj.weight"].T + w[p + "self_attn.k_proj.bias"]
        v = h @ w[p + "self_attn.v_proj.weight"].T + w[p + "self_attn.v_proj.bias"]
        q, k, v = (t.reshape(S, heads, d).transpose(1, 0, 2) for t in (q, k, v))  # (heads, S, d)
        scores = q @ k.transpose(0, 2, 1) + causal
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attn = (scores / scores.sum(-1, keepdims=True)) @ v
        attn = attn.transpose(1, 0, 2).reshape(S, H)
        x = x + attn @ w[p + "self_attn.out_proj.weight"].T + w[p + "self_attn.out_proj.bias"]
        h = _layer_norm(x, w[p + "final_layer_norm.weight"], w[p + "final_layer_norm.bias"])
        h = _gelu(h @ w[p + "fc1.weight"].T + w[p + "fc1.bias"])
        x = x + h @ w[p + "fc2.weight"].T + w[p + "fc2.bias"]
    x = _layer_norm(x, w["decoder.layer_norm.weight"], w["decoder.layer_norm.bias"])
    return x @ w["decoder.embed_tokens.weight"].T
