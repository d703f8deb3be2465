"""Write a random Hugging Face checkpoint directory of a named shape, without torch.

The checkpoint is what ``model.save_pretrained(OUT_DIR)`` in transformers 5.25 would write for a
model of that shape: config.json and generation_config.json as transformers writes them, the
weights in ``model-0000k-of-0000n.safetensors`` shards (Hugging Face tensor names, split like
``max_shard_size``) and ``model.safetensors.index.json``. No tokenizer (ortgen exports without
one and generates from token ids).

Memory stays small whatever the shape: the safetensors files are written by hand (8-byte header
length, JSON header, raw bytes), each tensor streamed in chunks of random float32 values
(normal, std 0.02, for embeddings and linear layers; ones for the RMSNorm weights) converted to
bf16 by round-to-nearest-even. A chunk's values depend only on --seed, the tensor and the chunk
(not on --threads), so the same command writes the same bytes.

Shapes (--shape):
  mistral-7b    MistralForCausalLM: hidden 4096, 32 layers, 32 heads, 8 kv heads, intermediate
                14336, vocab 32000, sliding_window 4096, rope_theta 1e4 (7.24e9 parameters:
                14.5 GB in bf16)
  llama-3.2-1b  LlamaForCausalLM: hidden 2048, 16 layers, 32 heads, 8 kv heads, intermediate
                8192, vocab 128256, tied embeddings, llama3 rope scaling (1.24e9 parameters:
                2.5 GB in bf16)
  tiny-llama    LlamaForCausalLM: hidden 64, 2 layers, 4 heads, 2 kv heads, intermediate 128,
                vocab 512 (quick tests)
  tiny-mistral  MistralForCausalLM with tiny-llama's dimensions (and sliding_window 4096)

--verify checks the result with safetensors and transformers (needs torch and transformers):
config.json and generation_config.json byte for byte against what transformers saves for the
same config, every tensor's name, shape and dtype through ``safetensors.safe_open(...,
framework="pt")`` (and a slice of its values), the index, and for checkpoints up to
--verify-model-max-params parameters that ``AutoModelForCausalLM.from_pretrained`` loads it with
no missing, unexpected or mismatched keys and gives finite logits.

examples:
  python scripts/make_random_checkpoint.py --shape tiny-llama --verify /work/scratch-scale/tiny-llama
  python scripts/make_random_checkpoint.py --shape mistral-7b /work/scratch-scale/mistral-7b
  python scripts/make_random_checkpoint.py --shape mistral-7b --verify-only /work/scratch-scale/mistral-7b
  python scripts/make_random_checkpoint.py --shape mistral-7b --layers 2 /work/scratch-scale/mistral-7b-2l
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("make_random_checkpoint")

TRANSFORMERS_VERSION = "5.25.0"  # the version whose save_pretrained output config.json reproduces
INIT_STD = 0.02  # transformers' initializer_range for these models
SAFETENSORS_NAME = {"bf16": "BF16", "fp16": "F16", "fp32": "F32"}
TORCH_DTYPE_NAME = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
ITEMSIZE = {"bf16": 2, "fp16": 2, "fp32": 4}
ONE_BITS = {"bf16": np.uint16(0x3F80), "fp16": np.uint16(0x3C00)}


@dataclass(frozen=True)
class Shape:
    model_type: str  # "llama" or "mistral"
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool
    max_positions: int
    rms_norm_eps: float
    rope: dict[str, Any]  # transformers 5 rope_parameters
    bos: int
    eos: int | list[int]

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


SHAPES: dict[str, Shape] = {
    "mistral-7b": Shape("mistral", 4096, 32, 32, 8, 14336, 32000, False, 32768, 1e-5,
                        {"rope_theta": 10000.0, "rope_type": "default"}, 1, 2),
    "llama-3.2-1b": Shape("llama", 2048, 16, 32, 8, 8192, 128256, True, 131072, 1e-5,
                          {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                           "original_max_position_embeddings": 8192, "rope_theta": 500000.0,
                           "rope_type": "llama3"},
                          128000, [128001, 128008, 128009]),
    "tiny-llama": Shape("llama", 64, 2, 4, 2, 128, 512, False, 2048, 1e-5,
                        {"rope_theta": 10000.0, "rope_type": "default"}, 1, 2),
    "tiny-mistral": Shape("mistral", 64, 2, 4, 2, 128, 512, False, 32768, 1e-5,
                          {"rope_theta": 10000.0, "rope_type": "default"}, 1, 2),
}

ARCHITECTURE = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}


# -- config files ------------------------------------------------------------------------------


def config_dict(shape: Shape, dtype: str) -> dict[str, Any]:
    """config.json's content as transformers 5.25's save_pretrained writes it (its diff against the
    defaults: every key the model's config class defines, plus the few base keys that differ)."""
    config: dict[str, Any] = {
        "architectures": [ARCHITECTURE[shape.model_type]],
        "attention_dropout": 0.0,
        "bos_token_id": shape.bos,
        "dtype": TORCH_DTYPE_NAME[dtype],
        "eos_token_id": shape.eos,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.hidden,
        "initializer_range": INIT_STD,
        "intermediate_size": shape.intermediate,
        "max_position_embeddings": shape.max_positions,
        "model_type": shape.model_type,
        "num_attention_heads": shape.heads,
        "num_hidden_layers": shape.layers,
        "num_key_value_heads": shape.kv_heads,
        "pad_token_id": None,
        "rms_norm_eps": shape.rms_norm_eps,
        "rope_parameters": dict(shape.rope),
        "tie_word_embeddings": shape.tied,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": shape.vocab,
    }
    if shape.model_type == "llama":
        config.update({"attention_bias": False, "mlp_bias": False, "pretraining_tp": 1})
    else:
        config["sliding_window"] = 4096
    return config


def hub_style(config: dict[str, Any]) -> dict[str, Any]:
    """The same config in the older layout most Hub checkpoints still have (transformers 4.x):
    rope_theta and rope_scaling at the top level, torch_dtype instead of dtype."""
    out = {k: v for k, v in config.items() if k not in ("rope_parameters", "dtype", "pad_token_id")}
    rope = dict(config["rope_parameters"])
    out["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        out["rope_scaling"] = rope
    out["torch_dtype"] = config["dtype"]
    out["transformers_version"] = "4.45.0"
    return out


def generation_config_dict(shape: Shape) -> dict[str, Any]:
    """generation_config.json as save_pretrained writes it for a model without one of its own
    (GenerationConfig.from_model_config)."""
    return {
        "_from_model_config": True,
        "bos_token_id": shape.bos,
        "eos_token_id": shape.eos,
        "output_attentions": False,
        "output_hidden_states": False,
        "transformers_version": TRANSFORMERS_VERSION,
        "use_cache": True,
    }


def json_text(data: dict[str, Any]) -> str:
    """transformers' to_json_string: sorted keys, indent 2, a final newline."""
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# -- tensors and shards ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorPlan:
    index: int  # position in the checkpoint (part of each chunk's seed)
    name: str
    shape: tuple[int, ...]
    kind: str  # "normal" or "ones"
    group: str  # for progress: "embeddings", "layer 3", "final"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def tensor_plan(shape: Shape) -> list[TensorPlan]:
    """Every tensor in state_dict order (the model's module order), with Hugging Face names."""
    h, kv = shape.hidden, shape.kv_heads * shape.head_dim
    specs: list[tuple[str, tuple[int, ...], str, str]] = [
        ("model.embed_tokens.weight", (shape.vocab, h), "normal", "embeddings")]
    for i in range(shape.layers):
        p, g = f"model.layers.{i}.", f"layer {i}"
        specs += [
            (p + "self_attn.q_proj.weight", (shape.heads * shape.head_dim, h), "normal", g),
            (p + "self_attn.k_proj.weight", (kv, h), "normal", g),
            (p + "self_attn.v_proj.weight", (kv, h), "normal", g),
            (p + "self_attn.o_proj.weight", (h, shape.heads * shape.head_dim), "normal", g),
            (p + "mlp.gate_proj.weight", (shape.intermediate, h), "normal", g),
            (p + "mlp.up_proj.weight", (shape.intermediate, h), "normal", g),
            (p + "mlp.down_proj.weight", (h, shape.intermediate), "normal", g),
            (p + "input_layernorm.weight", (h,), "ones", g),
            (p + "post_attention_layernorm.weight", (h,), "ones", g),
        ]
    specs.append(("model.norm.weight", (h,), "ones", "final"))
    if not shape.tied:
        specs.append(("lm_head.weight", (shape.vocab, h), "normal", "final"))
    return [TensorPlan(i, name, dims, kind, group) for i, (name, dims, kind, group) in enumerate(specs)]


def plan_shards(tensors: list[TensorPlan], itemsize: int, max_bytes: int) -> list[list[TensorPlan]]:
    """Split as huggingface_hub's split_state_dict_into_shards does for save_pretrained: in order, a
    new shard when the next tensor would take the current one past max_bytes; a tensor larger than
    max_bytes goes alone into a shard of its own, placed when it is met."""
    shards: list[list[TensorPlan]] = []
    current: list[TensorPlan] = []
    size = 0
    for t in tensors:
        nbytes = t.numel * itemsize
        if nbytes > max_bytes:
            shards.append([t])
            continue
        if current and size + nbytes > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(t)
        size += nbytes
    if current:
        shards.append(current)
    return shards


def safetensors_header(tensors: list[TensorPlan], dtype: str) -> bytes:
    """The header's JSON (with transformers' {"format": "pt"} metadata), padded with spaces so the
    data starts 8-byte aligned, preceded by its length as a little-endian u64."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        nbytes = t.numel * ITEMSIZE[dtype]
        header[t.name] = {"dtype": SAFETENSORS_NAME[dtype], "shape": list(t.shape),
                          "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text


class ChunkMaker:
    """Random chunks in the checkpoint's dtype; per-thread scratch buffers are reused."""

    def __init__(self, seed: int, dtype: str, chunk_values: int) -> None:
        self.seed, self.dtype, self.chunk_values = seed, dtype, chunk_values
        self._local = threading.local()

    def _scratch(self) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self._local, "f32"):
            self._local.f32 = np.empty(self.chunk_values, np.float32)
            self._local.u32 = np.empty(self.chunk_values, np.uint32)
        return self._local.f32, self._local.u32

    def make(self, tensor: TensorPlan, chunk: int, count: int) -> np.ndarray:
        if tensor.kind == "ones":
            if self.dtype == "fp32":
                return np.ones(count, np.float32)
            return np.full(count, ONE_BITS[self.dtype], np.uint16)
        f32_all, u32_all = self._scratch()
        values, bits = f32_all[:count], u32_all[:count]
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(self.seed, spawn_key=(tensor.index, chunk))))
        rng.standard_normal(out=values, dtype=np.float32)
        np.multiply(values, np.float32(INIT_STD), out=values)
        if self.dtype == "fp32":
            return values.copy()
        if self.dtype == "fp16":
            return values.astype(np.float16)
        # bf16: the high half of the float32 bits, rounded to nearest even (no NaNs here)
        raw = values.view(np.uint32)
        np.right_shift(raw, 16, out=bits)
        np.bitwise_and(bits, 1, out=bits)
        np.add(bits, 0x7FFF, out=bits)
        np.add(bits, raw, out=bits)
        np.right_shift(bits, 16, out=bits)
        return bits.astype(np.uint16)


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Values of bytes written in ``dtype`` (for the self-check)."""
    if dtype == "bf16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.view(np.float16 if dtype == "fp16" else np.float32).astype(np.float32)


def human_bytes(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def human_seconds(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s" if s >= 60 else f"{s:.1f}s"


def write_weights(directory: Path, tensors: list[TensorPlan], dtype: str, shard_bytes: int, seed: int,
                  threads: int, chunk_values: int) -> dict[str, Any]:
    """Write the shards and the index; returns the index."""
    shards = plan_shards(tensors, ITEMSIZE[dtype], shard_bytes)
    total = sum(t.numel for t in tensors) * ITEMSIZE[dtype]
    names = [f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors" for k in range(len(shards))]
    log.info("writing %d tensors (%s, %s) in %d shard(s) with %d thread(s)", len(tensors), f"{sum(t.numel for t in tensors):,} parameters",
             human_bytes(total), len(shards), threads)
    maker = ChunkMaker(seed, dtype, chunk_values)
    jobs = ((t, c, min(chunk_values, t.numel - c * chunk_values))
            for shard in shards for t in shard for c in range(max(1, -(-t.numel // chunk_values))))
    weight_map: dict[str, str] = {}
    started = time.perf_counter()
    written = 0
    group_started, group_bytes = started, 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()

        def refill() -> None:
            while len(pending) < 2 * threads:
                job = next(jobs, None)
                if job is None:
                    return
                pending.append((job, pool.submit(maker.make, *job)))

        refill()
        for name, shard in zip(names, shards):
            path = directory / name
            with path.open("wb") as f:
                f.write(safetensors_header(shard, dtype))
                for t in shard:
                    remaining = t.numel
                    while remaining:
                        (job_tensor, _, count), future = pending.popleft()
                        assert job_tensor is t
                        data = future.result()
                        refill()
                        f.write(memoryview(data).cast("B"))
                        remaining -= count
                        written += data.nbytes
                        group_bytes += data.nbytes
                    weight_map[t.name] = name
                    if t.index + 1 == len(tensors) or tensors[t.index + 1].group != t.group:
                        now = time.perf_counter()
                        rate = written / max(now - started, 1e-9)
                        log.info("%-12s %s in %s; %s of %s written (%.0f MB/s, eta %s) -> %s", t.group,
                                 human_bytes(group_bytes), human_seconds(now - group_started), human_bytes(written),
                                 human_bytes(total), rate / 1e6, human_seconds((total - written) / max(rate, 1)), name)
                        group_started, group_bytes = now, 0
    index = {"metadata": {"total_parameters": sum(t.numel for t in tensors), "total_size": total},
             "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    log.info("weights written in %s (%.0f MB/s)", human_seconds(time.perf_counter() - started),
             total / max(time.perf_counter() - started, 1e-9) / 1e6)
    return index


# -- verification (needs torch, safetensors and transformers) -------------------------------------


def verify(directory: Path, shape: Shape, dtype: str, hub_config: bool, model_max_params: int) -> list[str]:
    """Problems found (empty: the checkpoint is what transformers would write and load)."""
    import torch
    import transformers
    from safetensors import safe_open

    problems: list[str] = []
    config_cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig}[shape.model_type]
    ours = config_dict(shape, dtype)
    kwargs = {k: v for k, v in ours.items() if k not in ("architectures", "model_type", "transformers_version")}
    reference = config_cls(**kwargs)
    reference.architectures = ours["architectures"]
    same_version = transformers.__version__ == TRANSFORMERS_VERSION
    if not same_version:
        log.warning("transformers %s installed, config.json reproduces %s: comparing contents without the version",
                    transformers.__version__, TRANSFORMERS_VERSION)

    def without_version(d: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in d.items() if k != "transformers_version"}

    with tempfile.TemporaryDirectory() as tmp:
        reference.save_pretrained(tmp)
        saved_config = Path(tmp, "config.json").read_text()
        transformers.GenerationConfig.from_model_config(reference).save_pretrained(tmp)
        saved_generation = Path(tmp, "generation_config.json").read_text()
    written_config = (directory / "config.json").read_text()
    if not hub_config:
        if same_version and written_config != saved_config:
            problems.append("config.json differs from transformers' save_pretrained:\n" + saved_config)
        elif without_version(json.loads(written_config)) != without_version(json.loads(saved_config)):
            problems.append("config.json's content differs from transformers' save_pretrained:\n" + saved_config)
    written_generation = (directory / "generation_config.json").read_text()
    if same_version and written_generation != saved_generation:
        problems.append("generation_config.json differs from transformers' save_pretrained:\n" + saved_generation)
    elif without_version(json.loads(written_generation)) != without_version(json.loads(saved_generation)):
        problems.append("generation_config.json's content differs from transformers':\n" + saved_generation)
    loaded = transformers.AutoConfig.from_pretrained(directory)
    if type(loaded) is not config_cls:
        problems.append(f"AutoConfig gives {type(loaded).__name__}, not {config_cls.__name__}")
    mine, theirs = without_version(loaded.to_dict()), without_version(reference.to_dict())
    mine.pop("_name_or_path", None)
    theirs.pop("_name_or_path", None)
    if set(mine) != set(theirs):
        problems.append(f"config keys differ from {config_cls.__name__}(...).to_dict(): "
                        f"extra {sorted(set(mine) - set(theirs))}, missing {sorted(set(theirs) - set(mine))}")
    differing = sorted(k for k in set(mine) & set(theirs) if mine[k] != theirs[k])
    if differing:
        problems.append("config values differ from the reference: "
                        + ", ".join(f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in differing))
    log.info("config.json%s and generation_config.json checked against transformers %s (%s)",
             " (Hub layout)" if hub_config else "", transformers.__version__, config_cls.__name__)

    # tensors
    expected = {t.name: t for t in tensor_plan(shape)}
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    weight_map: dict[str, str] = index["weight_map"]
    if set(weight_map) != set(expected):
        problems.append(f"index: extra {sorted(set(weight_map) - set(expected))[:5]}, "
                        f"missing {sorted(set(expected) - set(weight_map))[:5]}")
    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    total_size = 0
    for file in sorted(set(weight_map.values())):
        path = directory / file
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(header_len))
        data_end = max(e["data_offsets"][1] for k, e in header.items() if k != "__metadata__")
        if (8 + header_len) % 8 or path.stat().st_size != 8 + header_len + data_end:
            problems.append(f"{file}: header length {header_len}, file size {path.stat().st_size}, data end {data_end}")
        with safe_open(str(path), framework="pt") as st:
            if st.metadata() != {"format": "pt"}:
                problems.append(f"{file}: metadata {st.metadata()}")
            for key in st.keys():
                t = expected.get(key)
                if t is None or weight_map.get(key) != file:
                    problems.append(f"{file}: unexpected tensor {key}")
                    continue
                piece = st.get_slice(key)
                if tuple(piece.get_shape()) != t.shape or piece.get_dtype() != SAFETENSORS_NAME[dtype]:
                    problems.append(f"{key}: {piece.get_shape()} {piece.get_dtype()}, expected {list(t.shape)} "
                                    f"{SAFETENSORS_NAME[dtype]}")
                    continue
                total_size += t.numel * ITEMSIZE[dtype]
                rows = max(1, min(t.shape[0], (1 << 20) // max(1, t.numel // t.shape[0])))
                sample = piece[:rows]
                if sample.dtype != torch_dtype:
                    problems.append(f"{key}: read as {sample.dtype}")
                values = sample.float()
                if t.kind == "ones":
                    if not bool((values == 1).all()):
                        problems.append(f"{key}: a norm weight that is not all ones")
                else:
                    std, mean = float(values.std()), float(values.mean())
                    tolerance = 5 * INIT_STD / math.sqrt(values.numel()) + 1e-4
                    if abs(std - INIT_STD) > 0.1 * INIT_STD or abs(mean) > tolerance or not bool(values.isfinite().all()):
                        problems.append(f"{key}: mean {mean:.5f} std {std:.5f} (expected 0, {INIT_STD})")
    if total_size != index["metadata"]["total_size"]:
        problems.append(f"index total_size {index['metadata']['total_size']} != {total_size}")
    log.info("%d tensors in %d shard(s) read with safetensors.safe_open(framework='pt'): names, shapes, dtype %s, "
             "values of a slice of each", len(weight_map), len(set(weight_map.values())), torch_dtype)

    params = sum(t.numel for t in expected.values())
    if params > model_max_params:
        log.info("not loading the model with transformers: %s parameters > --verify-model-max-params %s",
                 f"{params:,}", f"{model_max_params:,}")
        return problems
    model, info = transformers.AutoModelForCausalLM.from_pretrained(directory, output_loading_info=True)
    for what in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        if info.get(what):
            problems.append(f"from_pretrained {what}: {sorted(info[what])[:10]}")
    if model.dtype != torch_dtype:
        problems.append(f"from_pretrained gives {model.dtype}")
    state = model.state_dict()
    first = next(iter(expected.values()))
    with safe_open(str(directory / weight_map[first.name]), framework="pt") as st:
        if not torch.equal(st.get_tensor(first.name), state[first.name]):
            problems.append(f"{first.name}: the model's tensor is not the file's")
    if shape.tied and model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        problems.append("lm_head is not tied to embed_tokens")
    with torch.no_grad():
        logits = model(torch.tensor([[min(10, shape.vocab - 1), 20, 30]])).logits
    if tuple(logits.shape) != (1, 3, shape.vocab) or not bool(logits.isfinite().all()):
        problems.append(f"logits {tuple(logits.shape)}, finite: {bool(logits.isfinite().all())}")
    log.info("AutoModelForCausalLM.from_pretrained: %s, no missing / unexpected / mismatched keys: %s; logits %s",
             type(model).__name__, not any(info.get(k) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")),
             tuple(logits.shape))
    return problems


# -- command line --------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make_random_checkpoint.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path,
                        help="checkpoint directory to write (must not exist, or be empty, unless --force)")
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True, help="which model shape (see above)")
    parser.add_argument("--dtype", choices=sorted(SAFETENSORS_NAME), default="bf16",
                        help="dtype of the stored weights (default: %(default)s)")
    parser.add_argument("--shard-size-gb", type=float, default=5.0,
                        help="largest shard, in GB (10^9 bytes), like save_pretrained's max_shard_size "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=None,
                        help="override the shape's layer count, e.g. 2 for a quick run at full width "
                             "(default: the shape's)")
    parser.add_argument("--tie-word-embeddings", action=argparse.BooleanOptionalAction, default=None,
                        help="override whether lm_head shares the embeddings (default: the shape's)")
    parser.add_argument("--config-style", choices=("transformers5", "hub"), default="transformers5",
                        help="transformers5: config.json exactly as transformers 5.25 saves it (rope_parameters, "
                             "dtype); hub: the older layout of most Hub checkpoints (rope_theta, rope_scaling, "
                             "torch_dtype), to test readers of both (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads generating random values (default: all %(default)s cores)")
    parser.add_argument("--chunk-values", type=int, default=16 << 20,
                        help="values generated per chunk; bounds memory at about 10 bytes x this x threads "
                             "(default: %(default)s). The values depend on it")
    parser.add_argument("--force", action="store_true",
                        help="replace OUT_DIR if it holds a checkpoint (config.json) (default: refuse)")
    parser.add_argument("--verify", action="store_true",
                        help="after writing, check the checkpoint with safetensors and transformers (see above)")
    parser.add_argument("--verify-only", action="store_true",
                        help="check an existing OUT_DIR written with the same options; write nothing")
    parser.add_argument("--verify-model-max-params", type=int, default=50_000_000,
                        help="with --verify, load the model with transformers only up to this many parameters "
                             "(default: %(default)s: the tiny shapes)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    args = parser.parse_args(argv)
    if args.shard_size_gb <= 0 or args.threads < 1 or args.chunk_values < 1 or (args.layers is not None and args.layers < 1):
        parser.error("--shard-size-gb, --threads, --chunk-values and --layers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    shape = SHAPES[args.shape]
    overrides: dict[str, Any] = {}
    if args.layers is not None:
        overrides["layers"] = args.layers
    if args.tie_word_embeddings is not None:
        overrides["tied"] = args.tie_word_embeddings
    if overrides:
        shape = Shape(**{**shape.__dict__, **overrides})
    out: Path = args.out_dir
    hub = args.config_style == "hub"

    if not args.verify_only:
        tensors = tensor_plan(shape)
        total = sum(t.numel for t in tensors) * ITEMSIZE[args.dtype]
        if out.exists() and any(out.iterdir()):
            if not args.force:
                log.error("%s exists and is not empty (--force replaces a checkpoint directory)", out)
                return 2
            if not (out / "config.json").exists():
                log.error("%s does not look like a checkpoint (no config.json): not replacing it", out)
                return 2
        parent = out.resolve().parent
        parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(parent).free
        if free < total * 1.02 + (1 << 28):
            log.error("%s free on %s, the checkpoint needs %s", human_bytes(free), parent, human_bytes(total))
            return 2
        partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=parent))
        umask = os.umask(0)
        os.umask(umask)
        partial.chmod(0o777 & ~umask)  # mkdtemp makes it 0700
        started = time.perf_counter()
        try:
            config = config_dict(shape, args.dtype)
            (partial / "config.json").write_text(json_text(hub_style(config) if hub else config))
            (partial / "generation_config.json").write_text(json_text(generation_config_dict(shape)))
            write_weights(partial, tensors, args.dtype, int(args.shard_size_gb * 1e9), args.seed, args.threads,
                          args.chunk_values)
            if out.exists():
                shutil.rmtree(out)
            partial.rename(out)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        size = sum(p.stat().st_size for p in out.iterdir())
        log.info("%s: %s checkpoint %s (%s on disk) in %s", out, args.shape, args.dtype, human_bytes(size),
                 human_seconds(time.perf_counter() - started))
    if args.verify or args.verify_only:
        problems = verify(out, shape, args.dtype, hub, args.verify_model_max_params)
        for problem in problems:
            log.error("verify: %s", problem)
        if problems:
            return 1
        log.info("verify: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
