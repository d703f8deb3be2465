"""fairseq BioGPT (``transformer_lm*``, including ``--learned-prompt`` fine-tunes) -> Hugging Face BioGPT.

Input: a directory with ``checkpoint.pt`` (``cfg`` as plain dicts, or the legacy ``args``
namespace), ``dict.txt`` and ``bpecodes``. Output: a directory that transformers'
``BioGptForCausalLM`` and ``BioGptTokenizer`` load (config.json, model.safetensors,
vocab.json, merges.txt, tokenizer_config.json, generation_config.json) plus
``prompt_format.json`` when the model was fine-tuned with learned prompt tokens; ``ortgen
export`` copies it into the package manifest.

Weights are renamed (``decoder.*`` -> ``biogpt.*``), never changed: fairseq's pre-LN
``transformer_lm`` with learned positions (offset = padding_idx + 1 = 2) and scaled
embeddings is exactly transformers' BioGPT. Learned prompt tokens are the embedding rows
beyond the dictionary (``learned1`` ... ``learnedN`` in fairseq's dictionary at training
time); they keep their ids and names.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ortgen.convert.fairseq_dictionary import FairseqDictionary, read_dictionary, write_merges, write_vocab
from ortgen.convert.safe_load import load_checkpoint
from ortgen.errors import ModelSourceError, PackageError, UnsupportedModelError, WeightMismatchError
from ortgen.tensor_files import write_safetensors
from ortgen.progress import Progress
from ortgen.staging import make_staging_dir

log = logging.getLogger(__name__)

CHECKPOINT, DICTIONARY, BPECODES = "checkpoint.pt", "dict.txt", "bpecodes"
PROMPT_FORMAT_FILE = "prompt_format.json"

# fairseq activations -> Hugging Face names
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new"}
# model options BioGPT's architecture does not have
_UNSUPPORTED_FLAGS = {
    "layernorm_embedding": "a LayerNorm on the embeddings",
    "no_decoder_final_norm": "no final LayerNorm",
    "no_token_positional_embeddings": "no positional embeddings",
    "adaptive_input": "adaptive input embeddings",
    "character_embeddings": "character embeddings",
    "cross_self_attention": "cross+self attention",
}

PUBMEDQA_FORMAT = {
    "template": "question: {question} context: {context}",
    "lowercase": True,
    "ensure_period": True,
    "answer_prefix": "the answer to the question given the context is",
    "answers": ["yes", "no", "maybe"],
}


def is_fairseq_dir(directory: Path) -> bool:
    return (directory / CHECKPOINT).is_file() and not (directory / "config.json").is_file()


@dataclass
class FairseqModel:
    """What conversion needs from checkpoint.pt."""

    arch: str
    model_cfg: dict[str, Any]
    task_cfg: dict[str, Any]
    state: dict[str, Any]  # tensors, memory-mapped
    notes: list[str] = field(default_factory=list)


def _resolve(value: Any, cfg: dict[str, Any]) -> Any:
    """Resolve an OmegaConf interpolation left in a saved cfg ("${task.tokens_per_sample}")."""
    if isinstance(value, str):
        match = re.fullmatch(r"\$\{([\w.]+)\}", value.strip())
        if match:
            node: Any = cfg
            for part in match.group(1).split("."):
                if not isinstance(node, dict) or part not in node:
                    return None
                node = node[part]
            return _resolve(node, cfg)
    return value


def read_fairseq_model(directory: Path) -> FairseqModel:
    state = load_checkpoint(directory / CHECKPOINT)
    cfg, args = state.get("cfg"), state.get("args")
    if isinstance(cfg, dict) and isinstance(cfg.get("model"), dict):
        model_cfg = {k: _resolve(v, cfg) for k, v in cfg["model"].items()}
        task_cfg = {k: _resolve(v, cfg) for k, v in (cfg.get("task") or {}).items()}
        arch = str(model_cfg.get("_name") or model_cfg.get("arch") or "")
    elif args is not None and hasattr(args, "__dict__"):  # legacy: an argparse.Namespace
        model_cfg = dict(vars(args))
        task_cfg = dict(model_cfg)
        arch = str(model_cfg.get("arch") or "")
    else:
        raise ModelSourceError(f"{directory / CHECKPOINT} has neither a 'cfg' with a model section nor legacy 'args'")
    weights = state["model"]
    if not isinstance(weights, dict):
        raise ModelSourceError(f"{directory / CHECKPOINT}: 'model' is not a state dict")
    return FairseqModel(arch, model_cfg, task_cfg, weights)


def _check_architecture(model: FairseqModel) -> None:
    keys = set(model.state)
    if not model.arch.startswith("transformer_lm") or any(k.startswith("encoder.") for k in keys):
        raise UnsupportedModelError(
            f"fairseq architecture {model.arch!r} is not a BioGPT-style decoder-only language model; supported: "
            "transformer_lm, transformer_lm_biogpt, transformer_lm_prompt_biogpt, transformer_lm_prompt_biogpt_large "
            "(fairseq's transformer_lm family)"
        )
    cfg = model.model_cfg
    for flag, what in _UNSUPPORTED_FLAGS.items():
        if cfg.get(flag):
            raise UnsupportedModelError(f"the checkpoint has {flag}=true ({what}), which BioGPT's architecture lacks")
    if cfg.get("decoder_normalize_before") is False:
        raise UnsupportedModelError("the checkpoint is post-LN (decoder_normalize_before=false); BioGPT is pre-LN")
    if "decoder.embed_positions.weight" not in keys:
        raise UnsupportedModelError("the checkpoint has no learned positional embeddings (decoder_learned_pos)")
    activation = cfg.get("activation_fn", "gelu")
    activation = getattr(activation, "value", activation)
    if activation not in _ACTIVATIONS:
        raise UnsupportedModelError(f"activation_fn {activation!r} is not supported; supported: {', '.join(_ACTIVATIONS)}")


def _dims(model: FairseqModel) -> dict[str, int]:
    cfg, state = model.model_cfg, model.state

    def need(name: str) -> int:
        value = cfg.get(name)
        if value is None:
            raise ModelSourceError(f"the checkpoint's model config has no {name}")
        return int(value)

    hidden = need("decoder_embed_dim")
    layers = need("decoder_layers")
    dims = {
        "hidden": hidden,
        "ffn": need("decoder_ffn_embed_dim"),
        "layers": layers,
        "heads": need("decoder_attention_heads"),
        "rows": int(state["decoder.embed_tokens.weight"].shape[0]),
        "positions": int(state["decoder.embed_positions.weight"].shape[0]) - 2,
    }
    if int(cfg.get("decoder_output_dim") or hidden) != hidden or int(cfg.get("decoder_input_dim") or hidden) != hidden:
        raise UnsupportedModelError("decoder_input_dim/decoder_output_dim differ from decoder_embed_dim")
    declared = cfg.get("max_target_positions")
    if declared is not None and int(declared) != dims["positions"]:
        model.notes.append(f"max_target_positions={declared} in the config, {dims['positions']} in the weights: "
                           "using the weights")
    return dims


def _check_weights(model: FairseqModel, dims: dict[str, int], tied: bool) -> None:
    H, F, state = dims["hidden"], dims["ffn"], model.state
    expected: dict[str, tuple[int, ...]] = {
        "decoder.embed_tokens.weight": (dims["rows"], H),
        "decoder.embed_positions.weight": (dims["positions"] + 2, H),
        "decoder.layer_norm.weight": (H,), "decoder.layer_norm.bias": (H,),
    }
    for i in range(dims["layers"]):
        p = f"decoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            expected[f"{p}self_attn.{proj}.weight"] = (H, H)
            expected[f"{p}self_attn.{proj}.bias"] = (H,)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            expected[f"{p}{norm}.weight"] = (H,)
            expected[f"{p}{norm}.bias"] = (H,)
        expected[f"{p}fc1.weight"], expected[f"{p}fc1.bias"] = (F, H), (F,)
        expected[f"{p}fc2.weight"], expected[f"{p}fc2.bias"] = (H, F), (H,)
    if not tied:
        expected["decoder.output_projection.weight"] = (dims["rows"], H)
    missing = [k for k in expected if k not in state]
    wrong = [f"{k} is {list(state[k].shape)}, expected {list(v)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != v]
    if missing or wrong:
        raise WeightMismatchError("the checkpoint's weights do not match its config: "
                                  + "; ".join((["missing: " + ", ".join(missing[:8])] if missing else []) + wrong[:8]))


def _learned_prompt(model: FairseqModel, dictionary: FairseqDictionary, rows: int,
                    learned_prompt: int | None) -> list[str]:
    """Names of the embedding rows beyond the dictionary (learned prompt tokens)."""
    extra = rows - len(dictionary)
    if extra < 0:
        raise WeightMismatchError(
            f"dict.txt has {len(dictionary)} entries (4 special + {len(dictionary) - 4} lines), more than the "
            f"{rows} rows of the embedding matrix: this dictionary does not belong to this checkpoint"
        )
    declared = learned_prompt if learned_prompt is not None else model.task_cfg.get("learned_prompt")
    if extra == 0:
        if declared:
            raise WeightMismatchError(f"the task config declares learned_prompt={declared}, but the embedding matrix "
                                      f"has no rows beyond dict.txt ({len(dictionary)})")
        return []
    if not declared or int(declared) != extra:
        raise WeightMismatchError(
            f"the embedding matrix has {rows} rows, dict.txt {len(dictionary)} entries: {extra} rows have no "
            f"token. A --learned-prompt fine-tune explains that only if it declares learned_prompt={extra} (the "
            f"checkpoint says {declared}); pass --learned-prompt {extra} if you know it is one"
        )
    if model.task_cfg.get("prefix"):
        raise UnsupportedModelError("learned prompts used as a prefix (--prefix) are not supported")
    pattern = str(model.task_cfg.get("learned_prompt_pattern") or "learned")
    return [f"{pattern}{i + 1}" for i in range(extra)]


def _prompt_format(model: FairseqModel, learned: list[str], vocab: dict[str, int],
                   template: str) -> dict[str, Any] | None:
    if not learned:
        return None
    tokens = [f"{name}</w>" for name in learned]
    fmt: dict[str, Any] = {
        "kind": "learned-prompt",
        "description": f"fine-tuned with --learned-prompt {len(learned)}: the learned tokens follow the source text",
        "learned_prompt_tokens": tokens,
        "learned_prompt_ids": [vocab[t] for t in tokens],
        "max_source_tokens": int(model.task_cfg["max_source_positions"])
        if model.task_cfg.get("max_source_positions") else None,
        "template": None,
        "lowercase": False,
        "ensure_period": False,
        "answer_prefix": None,
        "answers": [],
    }
    data = str(model.task_cfg.get("data") or "")
    if template == "pubmedqa" or (template == "auto" and "pubmedqa" in data.lower()):
        fmt.update(PUBMEDQA_FORMAT)
        fmt["description"] += " (PubMedQA: 'question: ... context: ...', lowercased)"
    return fmt


def _hf_config(model: FairseqModel, dims: dict[str, int], vocab_size: int, tied: bool) -> dict[str, Any]:
    cfg = model.model_cfg
    activation = getattr(cfg.get("activation_fn", "gelu"), "value", cfg.get("activation_fn", "gelu"))
    return {
        "model_type": "biogpt",
        "architectures": ["BioGptForCausalLM"],
        "vocab_size": vocab_size,
        "hidden_size": dims["hidden"],
        "num_hidden_layers": dims["layers"],
        "num_attention_heads": dims["heads"],
        "intermediate_size": dims["ffn"],
        "hidden_act": _ACTIVATIONS[activation],
        "max_position_embeddings": dims["positions"],
        "scale_embedding": not cfg.get("no_scale_embedding", False),
        "tie_word_embeddings": tied,
        "layer_norm_eps": 1e-5,
        "hidden_dropout_prob": float(cfg.get("dropout") or 0.1),
        "attention_probs_dropout_prob": float(cfg.get("attention_dropout") or 0.0),
        "activation_dropout": float(cfg.get("activation_dropout") or 0.0),
        "layerdrop": float(cfg.get("decoder_layerdrop") or 0.0),
        "initializer_range": 0.02,
        "bos_token_id": 0,
        "pad_token_id": 1,
        "eos_token_id": 2,
        "ortgen_converted_from": f"fairseq {model.arch}",
    }


def _weights(model: FairseqModel, dims: dict[str, int], tied: bool) -> dict[str, tuple]:
    """Hugging Face name -> (shape, reader): tensors are read one at a time while writing."""
    import torch

    def reader(key: str):
        return lambda: model.state[key].to(torch.float32).numpy()

    out: dict[str, tuple] = {}
    for key, tensor in model.state.items():
        if key == "decoder.version" or not hasattr(tensor, "shape"):
            continue
        if key == "decoder.output_projection.weight":
            if tied:
                continue
            name = "output_projection.weight"
        elif key.startswith("decoder."):
            name = "biogpt." + key[len("decoder."):]
        else:
            model.notes.append(f"ignored checkpoint tensor {key}")
            continue
        out[name] = (tuple(tensor.shape), reader(key))
    return out


def convert_fairseq_biogpt(
    source: Path | str,
    output: Path | str,
    *,
    force: bool = False,
    learned_prompt: int | None = None,
    prompt_template: str = "auto",
    show_progress: bool = True,
) -> Path:
    """Convert a fairseq BioGPT directory into a Hugging Face one at ``output`` (atomically)."""
    source, output = Path(source), Path(output).expanduser().absolute()
    if not source.is_dir():
        raise ModelSourceError(f"{source} is not a directory (expected one with {CHECKPOINT}, {DICTIONARY}, {BPECODES})")
    missing = [name for name in (CHECKPOINT, DICTIONARY, BPECODES) if not (source / name).is_file()]
    if missing:
        raise ModelSourceError(f"{source} lacks {', '.join(missing)}: a fairseq BioGPT directory has "
                               f"{CHECKPOINT}, {DICTIONARY} and {BPECODES}")
    if prompt_template not in ("auto", "pubmedqa", "none"):
        raise ModelSourceError(f"prompt template must be auto, pubmedqa or none, got {prompt_template!r}")
    if output.exists():
        if not force:
            raise PackageError(f"{output} already exists; pass --force to replace it")
        if output.is_dir() and any(output.iterdir()) and not (output / "config.json").is_file():
            raise PackageError(f"{output} exists and is not a model directory; refusing to replace it even with --force")
    if not output.parent.exists():
        raise PackageError(f"the parent directory of {output} does not exist")

    model = read_fairseq_model(source)
    _check_architecture(model)
    dims = _dims(model)
    tied = bool(model.model_cfg.get("share_decoder_input_output_embed", True))
    if tied and "decoder.output_projection.weight" in model.state:
        projection, embedding = model.state["decoder.output_projection.weight"], model.state["decoder.embed_tokens.weight"]
        if projection.data_ptr() != embedding.data_ptr() and not bool((projection == embedding).all()):
            tied = False  # stored separately and different: keep both
    _check_weights(model, dims, tied)
    dictionary = read_dictionary(source / DICTIONARY)
    learned = _learned_prompt(model, dictionary, dims["rows"], learned_prompt)

    staging = make_staging_dir(output)
    try:
        vocab = write_vocab(dictionary, [f"{name}</w>" for name in learned], staging / "vocab.json")
        merges = write_merges(source / BPECODES, staging / "merges.txt")
        weights = _weights(model, dims, tied)
        progress = Progress(f"converting {len(weights)} tensors", len(weights), enabled=show_progress)
        done = 0

        def counted(reader):
            def read():
                nonlocal done
                array = reader()
                done += 1
                progress.update(done)
                return np.ascontiguousarray(array, dtype=np.float32)
            return read

        write_safetensors(staging / "model.safetensors",
                          {name: (shape, counted(reader)) for name, (shape, reader) in weights.items()})
        progress.close()
        config = _hf_config(model, dims, len(vocab), tied)
        (staging / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        fmt = _prompt_format(model, learned, vocab, prompt_template)
        generation = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}
        if fmt is not None:
            (staging / PROMPT_FORMAT_FILE).write_text(json.dumps(fmt, indent=2), encoding="utf-8")
            if fmt.get("answers"):
                generation.update({"num_beams": 1, "max_new_tokens": 24})  # BioGPT's QA inference: greedy
        (staging / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
        (staging / "tokenizer_config.json").write_text(json.dumps({
            "tokenizer_class": "BioGptTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
            "pad_token": "<pad>", "unk_token": "<unk>", "model_max_length": dims["positions"],
        }, indent=2), encoding="utf-8")
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for note in model.notes:
        log.warning("%s", note)
    log.info("converted fairseq %s: %d layers x %d, vocabulary %d (%d learned prompt tokens), %d merges -> %s",
             model.arch, dims["layers"], dims["hidden"], len(vocab), len(learned), merges, output)
    return output
