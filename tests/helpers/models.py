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

LLAMA_FAMILY = ("llama2", "llama3", "mistral", "qwen2", "qwen2-tied")
ARCHS = ("biogpt", "gpt2", "opt", "opt-post-ln") + LLAMA_FAMILY
EXTRA_ARCHS = ("biogpt-hd14",)  # built on request (not in every parity grid): head_dim not a multiple of 8
MODEL_TYPE = {"biogpt": "biogpt", "biogpt-hd14": "biogpt", "gpt2": "gpt2", "opt": "opt", "opt-post-ln": "opt",
              "llama2": "llama", "llama3": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen2-tied": "qwen2"}
# The tiny Llama-family models (all float32, hidden 64, 4 query heads):
# - llama2: 2 kv heads, default rope, untied head;
# - llama3: 1 kv head, rope_scaling llama3 (original context 16, so the scaling bites at tiny lengths),
#   tied head (as Llama-3.2-1B), three EOS ids (as Llama-3 instruct's generation_config);
# - mistral: 2 kv heads, sliding window of 8 tokens (the grids generate past it);
# - qwen2: q/k/v biases, untied; qwen2-tied: kv_heads == heads (plain multi-head), tied head.
LLAMA3_EXTRA_EOS = (5, 6)
LLAMA_POSITIONS = 256  # rotary models have no position table: room for chat templates costs nothing

# EOS-logit pushes that make each tiny model end sequences at varied steps (found by a scan
# over strengths: greedy rows end between 0 and max_new_tokens, beams finish at different steps).
EOS_BIAS = {"biogpt": 0.35, "gpt2": 0.15, "opt": 0.12, "opt-post-ln": 0.1,
            "llama2": 1.0, "llama3": 0.3, "mistral": 0.2, "qwen2": 0.14, "qwen2-tied": 1.0}


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


def _bias_eos_rms(model, eos: int, strength: float) -> None:
    """EOS made likely in an RMSNorm model (no norm bias to carry a direction): every token embedding
    gains a shared component along v, so the final hidden state points along v too, and the EOS row of
    the head points along v scaled by the final norm's weight."""
    generator = torch.Generator().manual_seed(1234)
    embedding = model.get_input_embeddings()
    direction = torch.randn(embedding.weight.shape[1], generator=generator)
    direction /= direction.norm()
    with torch.no_grad():
        embedding.weight.add_(direction * 0.05)
        head = model.get_output_embeddings()
        row = direction * model.model.norm.weight
        head.weight[eos] = row / row.norm() * strength


def _llama_family_model(arch: str, directory: Path):
    """A tiny Llama / Mistral / Qwen2 model and its byte-level BPE tokenizer (<s>=0 <pad>=1 </s>=2)."""
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                              PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

    tok = _byte_level_tokenizer()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>")
    hf_tok.save_pretrained(directory)
    vocab = len(hf_tok)
    common = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, head_dim=16,
                  intermediate_size=128, max_position_embeddings=LLAMA_POSITIONS, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                  rms_norm_eps=1e-6)
    if arch == "llama2":
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, **common))
    elif arch == "llama3":
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
        model = LlamaForCausalLM(LlamaConfig(num_key_value_heads=1, tie_word_embeddings=True, rope_parameters=rope,
                                             **common))
        model.generation_config.eos_token_id = [2, *LLAMA3_EXTRA_EOS]
    elif arch == "mistral":
        model = MistralForCausalLM(MistralConfig(num_key_value_heads=2, sliding_window=8, **common))
    elif arch in ("qwen2", "qwen2-tied"):
        tied = arch == "qwen2-tied"
        model = Qwen2ForCausalLM(Qwen2Config(num_key_value_heads=4 if tied else 2, tie_word_embeddings=tied,
                                             **common))
        with torch.no_grad():  # random biases (transformers initialises them to zero)
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.05)
    else:
        raise ValueError(arch)
    return model, vocab


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
    elif arch in LLAMA_FAMILY:
        model, vocab = _llama_family_model(arch, directory)
        eos, pad = 2, 1
        final_norm = model.model.norm
    else:
        raise ValueError(f"unknown tiny arch {arch!r}; choose from {ARCHS}")
    if eos_bias is not None:
        if arch in LLAMA_FAMILY:
            _bias_eos_rms(model, eos, eos_bias)
        else:
            _bias_eos(final_norm, embedding, eos, eos_bias, project_out)
    if sharpness is not None:
        with torch.no_grad():
            final_norm.weight.mul_(sharpness)
            if getattr(final_norm, "bias", None) is not None:
                final_norm.bias.mul_(sharpness)
    model.generation_config.pad_token_id = pad
    model.save_pretrained(directory)
    return TinyModel(arch, directory, eos, pad, vocab, LLAMA_POSITIONS if arch in LLAMA_FAMILY else 64)


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
