"""Tiny random Hugging Face models for tests, built and saved locally (nothing downloaded).

Each builder writes a model directory (config, safetensors weights, tokenizer) that
``ortgen export`` and transformers both load. ``eos_bias`` pushes the EOS logit up (via
the final LayerNorm bias and the tied EOS embedding row) so that EOS is generated
mid-sequence and beams finish at different steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ortgen.demo.models import demo_corpus, write_demo_tokenizer

ARCHS = ("biogpt", "gpt2", "opt", "opt-post-ln")
EXTRA_ARCHS = ("biogpt-hd14",)  # built on request (not in every parity grid): head_dim not a multiple of 8
MODEL_TYPE = {"biogpt": "biogpt", "biogpt-hd14": "biogpt", "gpt2": "gpt2", "opt": "opt", "opt-post-ln": "opt"}

# EOS-logit pushes that make each tiny model end sequences at varied steps (found by a scan
# over strengths: greedy rows end between 0 and max_new_tokens, beams finish at different steps).
EOS_BIAS = {"biogpt": 0.35, "gpt2": 0.15, "opt": 0.12, "opt-post-ln": 0.1}


@dataclass(frozen=True)
class TinyModel:
    name: str
    directory: Path
    eos_token_id: int
    pad_token_id: int
    vocab_size: int
    max_positions: int

    def load(self):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.directory)
        return model.eval()


def _byte_level_tokenizer(vocab_size: int = 300):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(demo_corpus().splitlines(), trainer)
    return tok


def _bias_eos(final_norm: torch.nn.LayerNorm, embedding: torch.nn.Embedding, eos: int, strength: float,
              project_out: torch.nn.Linear | None = None) -> None:
    """Make EOS likely: the final hidden state gets a component along v (the last LayerNorm's
    bias) and the tied EOS embedding row points along v (after the output projection, if any)."""
    generator = torch.Generator().manual_seed(1234)
    direction = torch.randn(final_norm.bias.shape[0], generator=generator)
    direction /= direction.norm()
    with torch.no_grad():
        final_norm.bias.copy_(direction * 2.0)
        out_direction = project_out.weight @ direction if project_out is not None else direction
        embedding.weight[eos] = out_direction / out_direction.norm() * strength


def build_tiny_model(
    arch: str, directory: Path, *, eos_bias: float | None = None, sharpness: float | None = None, seed: int = 0
) -> TinyModel:
    """Save a tiny random ``arch`` model (see ARCHS) with its tokenizer in ``directory``.

    ``sharpness`` multiplies the last LayerNorm's weight and bias, hence every logit: random
    tiny models have almost uniform next-token distributions, and statistical sampling tests
    need peaked ones.
    """
    from transformers import (
        BioGptConfig,
        BioGptForCausalLM,
        GPT2Config,
        GPT2LMHeadModel,
        GPT2Tokenizer,
        OPTConfig,
        OPTForCausalLM,
    )

    torch.manual_seed(seed)
    directory.mkdir(parents=True, exist_ok=True)
    if arch in ("biogpt", "biogpt-hd14"):
        vocab = write_demo_tokenizer(directory, num_merges=300)
        hidden = 48 if arch == "biogpt" else 42  # biogpt-hd14: head_dim 14, padded to 16 around the engine's attention
        config = BioGptConfig(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=3,
                              intermediate_size=96, max_position_embeddings=64)
        model = BioGptForCausalLM(config)
        eos, pad = 2, 1
        final_norm, embedding = model.biogpt.layer_norm, model.biogpt.embed_tokens
        project_out = None
    elif arch == "gpt2":
        tok = _byte_level_tokenizer()
        hf_tok = GPT2Tokenizer(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                               unk_token="<|endoftext|>")
        hf_tok.save_pretrained(directory)
        vocab = len(hf_tok)
        eos = hf_tok.eos_token_id
        config = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                            bos_token_id=eos, eos_token_id=eos)
        model = GPT2LMHeadModel(config)
        pad = eos
        final_norm, embedding = model.transformer.ln_f, model.transformer.wte
        project_out = None
    elif arch in ("opt", "opt-post-ln"):
        tok = _byte_level_tokenizer()
        hf_tok = GPT2Tokenizer(tokenizer_object=tok, bos_token="</s>", eos_token="</s>", unk_token="<unk>",
                               pad_token="<pad>", add_bos_token=True)
        hf_tok.save_pretrained(directory)
        vocab = len(hf_tok)
        post = arch == "opt-post-ln"
        config = OPTConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4 if post else 2,
                           ffn_dim=64, max_position_embeddings=64, do_layer_norm_before=not post,
                           word_embed_proj_dim=16 if post else 32, pad_token_id=1, bos_token_id=2, eos_token_id=2)
        model = OPTForCausalLM(config)
        eos, pad = 2, 1
        decoder = model.model.decoder
        final_norm = decoder.layers[-1].final_layer_norm if post else decoder.final_layer_norm
        embedding = decoder.embed_tokens
        project_out = decoder.project_out
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; choose from {ARCHS}")
    if eos_bias is not None:
        _bias_eos(final_norm, embedding, eos, eos_bias, project_out)
    if sharpness is not None:
        with torch.no_grad():
            final_norm.weight.mul_(sharpness)
            final_norm.bias.mul_(sharpness)
    model.generation_config.pad_token_id = pad
    model.save_pretrained(directory)
    return TinyModel(arch, directory, eos, pad, vocab, 64)


def train_on_demo_corpus(model: TinyModel, steps: int = 200, lr: float = 3e-3, seed: int = 0) -> list[list[int]]:
    """Fit ``model`` to the demo corpus (full batch, AdamW) and save it in place; return the
    corpus lines as token ids.

    Random tiny models predict almost uniformly, so near-ties decide every greedy step; a
    model fitted to some text is confident the way real language models are, which is what
    quantization-quality tests need.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model.directory)
    lines = [tokenizer(line)["input_ids"][: model.max_positions - 4] for line in demo_corpus().splitlines()]
    width = max(map(len, lines))
    ids = torch.full((len(lines), width), model.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, line in enumerate(lines):
        ids[row, : len(line)] = torch.tensor(line)
        mask[row, : len(line)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    network = AutoModelForCausalLM.from_pretrained(model.directory)
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=lr)
    for _ in range(steps):
        loss = network(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()
    network.save_pretrained(model.directory)
    return lines
