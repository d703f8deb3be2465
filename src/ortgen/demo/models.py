"""BioGPT-shaped checkpoints with random weights, built locally (nothing downloaded).

Used by ``ortgen demo`` (the embedded default model: small, with a tokenizer learned
here from a short biomedical text shipped with ortgen), by ``ortgen make-random-model``
and by the benchmarks (microsoft/biogpt's and BioGPT-Large's real dimensions). The
checkpoints are ordinary Hugging Face directories (config.json, model.safetensors,
tokenizer files) that transformers' BioGptForCausalLM loads. Weights are written one
tensor at a time, so a 6 GB checkpoint needs little memory. Random weights generate
fluent nonsense: these models exercise the machinery, not medicine.
"""

from __future__ import annotations

import collections
import json
import logging
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np

from ortgen.errors import OrtgenError
from ortgen.staging import atomic_directory
from ortgen.tensor_files import write_safetensors

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as in BioGPT


@dataclass(frozen=True)
class BioGptShape:
    """Dimensions of a BioGPT-architecture model."""

    hidden_size: int
    num_layers: int
    num_heads: int
    ffn_size: int
    max_positions: int
    vocab_size: int | None  # None: the size of the tokenizer learned for the demo

    def parameters(self, vocab_size: int) -> int:
        H, F, L = self.hidden_size, self.ffn_size, self.num_layers
        per_layer = 4 * (H * H + H) + (H * F + F) + (F * H + H) + 4 * H
        return vocab_size * H + (self.max_positions + 2) * H + L * per_layer + 2 * H


PRESETS: dict[str, BioGptShape] = {
    "demo": BioGptShape(hidden_size=64, num_layers=2, num_heads=4, ffn_size=256, max_positions=256, vocab_size=None),
    # small enough to build in seconds, slow enough (~10 ms a step here) for tests that need time to pass
    "small": BioGptShape(hidden_size=512, num_layers=6, num_heads=8, ffn_size=2048, max_positions=512, vocab_size=None),
    # microsoft/biogpt: 347M parameters
    "biogpt-base": BioGptShape(hidden_size=1024, num_layers=24, num_heads=16, ffn_size=4096, max_positions=1024,
                               vocab_size=42384),
    # microsoft/BioGPT-Large: 1.57B parameters
    "biogpt-large": BioGptShape(hidden_size=1600, num_layers=48, num_heads=25, ffn_size=6400, max_positions=2048,
                                vocab_size=57717),
}


@dataclass(frozen=True)
class Gpt2Shape:
    hidden_size: int
    num_layers: int
    num_heads: int
    max_positions: int
    vocab_size: int


GPT2_PRESETS: dict[str, Gpt2Shape] = {
    "gpt2-tiny": Gpt2Shape(hidden_size=64, num_layers=2, num_heads=4, max_positions=256, vocab_size=1000),
    "gpt2-medium": Gpt2Shape(hidden_size=1024, num_layers=24, num_heads=16, max_positions=1024, vocab_size=50257),
}


def demo_corpus() -> str:
    return resources.files("ortgen").joinpath("data/demo_corpus.txt").read_text(encoding="utf-8")


def learn_bpe(words: list[str], num_merges: int) -> tuple[list[tuple[str, str]], list[str]]:
    """Learn BPE merges (subword-nmt style, ``</w>`` marks a word's last piece).

    Returns the merges in rank order and the symbols they produce (single characters,
    word-final or not, included).
    """
    counts = collections.Counter(words)
    segmented = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in counts}
    symbols = {s for seg in segmented.values() for s in seg}
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: collections.Counter[tuple[str, str]] = collections.Counter()
        for word, seg in segmented.items():
            for pair in zip(seg, seg[1:]):
                pairs[pair] += counts[word]
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        if pairs[best] < 2:
            break
        merges.append(best)
        joined = best[0] + best[1]
        symbols.add(joined)
        for word, seg in segmented.items():
            out, i = [], 0
            while i < len(seg):
                if i < len(seg) - 1 and (seg[i], seg[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segmented[word] = tuple(out)
    chars = {c for w in counts for c in w}
    symbols |= chars | {c + "</w>" for c in chars}
    return merges, sorted(symbols)


def _tokenizer_config(directory: Path) -> None:
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BioGptTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                    "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}, indent=2),
        encoding="utf-8",
    )


def write_demo_tokenizer(directory: Path, num_merges: int = 300, extra_lines: Sequence[str] = ()) -> int:
    """BioGPT-format vocab.json + merges.txt learned from the demo text (and ``extra_lines``); returns
    the vocab size."""
    import sacremoses

    tokenizer = sacremoses.MosesTokenizer(lang="en")
    words = []
    for line in [*demo_corpus().splitlines(), *extra_lines]:
        words.extend(tokenizer.tokenize(line, aggressive_dash_splits=True, return_str=False, escape=True))
    merges, symbols = learn_bpe(words, num_merges)
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for symbol in symbols:
        vocab.setdefault(symbol, len(vocab))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    (directory / "merges.txt").write_text("".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    _tokenizer_config(directory)
    return len(vocab)


def copy_tokenizer(source: Path, directory: Path) -> int:
    """Copy a BioGPT tokenizer (vocab.json, merges.txt); returns its vocab size."""
    for name in ("vocab.json", "merges.txt"):
        if not (source / name).is_file():
            raise OrtgenError(f"{source} has no {name}: not a BioGPT tokenizer directory")
        shutil.copyfile(source / name, directory / name)
    _tokenizer_config(directory)
    return len(json.loads((directory / "vocab.json").read_text(encoding="utf-8")))


def build_random_biogpt(
    directory: Path,
    preset: str = "demo",
    *,
    tokenizer: Path | None = None,
    seed: int = 0,
    std: float = 0.02,
) -> Path:
    """Write a Hugging Face BioGPT directory with random weights of a preset's shape.

    ``tokenizer``: a directory with BioGPT's vocab.json and merges.txt to include (the
    real tokenizer, for realistic prompts); by default the demo tokenizer is learned.
    The model's vocabulary is the preset's (or the tokenizer's for "demo").
    """
    if preset not in PRESETS:
        raise OrtgenError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    _check_seed(seed)
    with atomic_directory(directory, replace=True) as staging:
        _write_random_biogpt(staging, preset, tokenizer, seed, std)
    return directory


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise OrtgenError(f"seed must be an integer >= 0, got {seed!r}")


def _write_random_biogpt(directory: Path, preset: str, tokenizer: Path | None, seed: int, std: float) -> None:
    shape = PRESETS[preset]
    tokenizer_size = copy_tokenizer(tokenizer, directory) if tokenizer else write_demo_tokenizer(directory)
    vocab = shape.vocab_size or tokenizer_size
    if tokenizer_size > vocab:
        raise OrtgenError(f"the tokenizer has {tokenizer_size} entries, more than the {preset} vocabulary ({vocab})")
    H, F = shape.hidden_size, shape.ffn_size
    rng = np.random.default_rng(seed)

    def normal(*dims: int):
        return dims, lambda: (rng.standard_normal(dims, dtype=np.float32) * std)

    def const(value: float, n: int) -> np.ndarray:
        return np.full(n, value, dtype=np.float32)

    tensors: dict = {
        "biogpt.embed_tokens.weight": normal(vocab, H),
        "biogpt.embed_positions.weight": normal(shape.max_positions + 2, H),
    }
    for i in range(shape.num_layers):
        p = f"biogpt.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            tensors[f"{p}self_attn.{proj}.weight"] = normal(H, H)
            tensors[f"{p}self_attn.{proj}.bias"] = normal(H)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            tensors[f"{p}{norm}.weight"], tensors[f"{p}{norm}.bias"] = const(1.0, H), const(0.0, H)
        tensors[f"{p}fc1.weight"], tensors[f"{p}fc1.bias"] = normal(F, H), normal(F)
        tensors[f"{p}fc2.weight"], tensors[f"{p}fc2.bias"] = normal(H, F), normal(H)
    tensors["biogpt.layer_norm.weight"], tensors["biogpt.layer_norm.bias"] = const(1.0, H), const(0.0, H)
    log.info("writing a random %s (%.1fM parameters) to %s", preset, shape.parameters(vocab) / 1e6, directory)
    write_safetensors(directory / "model.safetensors", tensors)
    config = {
        "model_type": "biogpt",
        "architectures": ["BioGptForCausalLM"],
        "vocab_size": vocab,
        "hidden_size": H,
        "num_hidden_layers": shape.num_layers,
        "num_attention_heads": shape.num_heads,
        "intermediate_size": F,
        "hidden_act": "gelu",
        "max_position_embeddings": shape.max_positions,
        "scale_embedding": True,
        "layer_norm_eps": 1e-12,
        "initializer_range": std,
        "tie_word_embeddings": True,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "eos_token_id": 2,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}, indent=2), encoding="utf-8"
    )


def build_random_gpt2(directory: Path, preset: str = "gpt2-medium", *, seed: int = 0, std: float = 0.02) -> Path:
    """A GPT-2-architecture Hugging Face directory with random weights (for comparisons with tools
    that cannot load BioGPT, such as CTranslate2). Its vocabulary is placeholder tokens ("t123"):
    benchmarks feed token ids."""
    if preset not in GPT2_PRESETS:
        raise OrtgenError(f"unknown GPT-2 preset {preset!r}; choose from {', '.join(GPT2_PRESETS)}")
    c = GPT2_PRESETS[preset]
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    H, V = c.hidden_size, c.vocab_size

    def normal(*dims: int):
        return dims, lambda: (rng.standard_normal(dims, dtype=np.float32) * std)

    def const(value: float, n: int) -> np.ndarray:
        return np.full(n, value, dtype=np.float32)

    tensors: dict = {"transformer.wte.weight": normal(V, H), "transformer.wpe.weight": normal(c.max_positions, H)}
    for i in range(c.num_layers):
        p = f"transformer.h.{i}."
        tensors[p + "ln_1.weight"], tensors[p + "ln_1.bias"] = const(1.0, H), const(0.0, H)
        tensors[p + "attn.c_attn.weight"], tensors[p + "attn.c_attn.bias"] = normal(H, 3 * H), normal(3 * H)
        tensors[p + "attn.c_proj.weight"], tensors[p + "attn.c_proj.bias"] = normal(H, H), normal(H)
        tensors[p + "ln_2.weight"], tensors[p + "ln_2.bias"] = const(1.0, H), const(0.0, H)
        tensors[p + "mlp.c_fc.weight"], tensors[p + "mlp.c_fc.bias"] = normal(H, 4 * H), normal(4 * H)
        tensors[p + "mlp.c_proj.weight"], tensors[p + "mlp.c_proj.bias"] = normal(4 * H, H), normal(H)
    tensors["transformer.ln_f.weight"], tensors["transformer.ln_f.bias"] = const(1.0, H), const(0.0, H)
    write_safetensors(directory / "model.safetensors", tensors)
    eos = V - 1
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V, "n_embd": H,
        "n_layer": c.num_layers, "n_head": c.num_heads, "n_positions": c.max_positions, "n_ctx": c.max_positions,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "bos_token_id": eos, "eos_token_id": eos,
        "tie_word_embeddings": True,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    vocab = {f"t{i}": i for i in range(V - 1)}
    vocab["<|endoftext|>"] = eos
    (directory / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>", "model_max_length": c.max_positions}, indent=2), encoding="utf-8")
    return directory
