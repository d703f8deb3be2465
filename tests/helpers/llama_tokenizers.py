"""Small, offline stand-ins for the tokenizers of Llama 2, Llama 3 and Qwen2.

Each builder trains a tiny BPE with the ``tokenizers`` library (on ortgen's demo corpus plus
some unicode, emoji and number lines) and writes a Hugging Face tokenizer directory laid out
as the real checkpoints have it, so ``transformers.AutoTokenizer.from_pretrained`` and
ortgen's ``package_tokenizer("tokenizer.json", ...)`` treat it as they treat the real one:

- ``llama2``: SentencePiece-style BPE with ``byte_fallback``; ``<unk>``=0, ``<s>``=1, ``</s>``=2,
  then the 256 ``<0xNN>`` byte tokens; ``tokenizer.json`` in the form ``LlamaConverter`` wrote
  for the Llama 2 checkpoints (normalizer ``Prepend("▁")`` + ``Replace(" ", "▁")``, no
  pre-tokenizer, BOS from a ``TemplateProcessing`` post-processor, decoder ``Replace`` /
  ``ByteFallback`` / ``Fuse`` / ``Strip``), ``tokenizer_class`` ``LlamaTokenizer``.
  transformers 5 does not run that file as it is: ``LlamaTokenizer`` keeps only its vocab,
  merges and post-processor and rebuilds the rest as a ``Metaspace`` pre-tokenizer.
- ``llama3``: byte-level BPE split by Llama 3's regex (``\\p{N}{1,3}``), ``ignore_merges``, the
  special tokens after the BPE vocab, BOS ``<|begin_of_text|>`` from the post-processor, eos
  ``<|eot_id|>``, ``tokenizer_class`` ``PreTrainedTokenizerFast`` and
  ``clean_up_tokenization_spaces`` true, as Meta's files have them.
- ``qwen2``: NFC, Qwen2's regex (single ``\\p{N}``), byte-level BPE, no BOS, ``<|endoftext|>``
  (eos, pad), ``<|im_start|>``, ``<|im_end|>``; ``vocab.json`` + ``merges.txt`` +
  ``tokenizer.json``, ``tokenizer_class`` ``Qwen2Tokenizer``.

The files are written as the checkpoints on the Hub have them, not by transformers'
``save_pretrained`` (which would store transformers' rebuilt Llama 2 tokenizer and hide the
difference); :func:`resave` gives that form too. Building imports no transformers and takes
well under a second.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ortgen.demo.models import demo_corpus

LLAMA3_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Lines beside the demo corpus, so the vocabularies hold some accents, digits and symbols.
# Characters that appear nowhere here (CJK, most emoji, newline, tab) reach Llama 2's byte fallback.
EXTRA_LINES = [
    "Café crème brûlée, naïve façade, Straße, Größe, Übermäßig, Ärzte, Öl.",
    "Die Ärztin prüft die Größe der Läsion; le médecin étudie l'évolution.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 365 1000 2024 12345 3.14159 1,000 2.5% 98.6°F",
    "Dose 500 mg twice daily for 7 days; HbA1c 6.5%; BMI 27.3 kg/m²; p < 0.05; n = 1,024.",
    "Emoji: 🙂 😀 👍 ❤ smile!",
    "Tabs and new lines,  double  spaces   and (brackets) [x] {y} <z> \"quotes\" 'single' - dash — em dash.",
    "Isn't it? They're here, we've seen, I'm sure, you'll see, he'd go.",
]

LLAMA2_SPECIALS = ["<unk>", "<s>", "</s>"]
LLAMA2_CJK_PIECES = "的一是学医中"
LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>", "<|step_id|>", "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>",
    "<|eot_id|>", "<|python_tag|>",
]  # the order of Llama 3.1/3.2's first special tokens (128000 ...)
QWEN2_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class BuiltTokenizer:
    """A tokenizer directory and the ids a model config would name."""

    name: str
    directory: Path
    vocab_size: int  # rows of the model's embedding (every id the tokenizer can produce is below it)
    bos_token_id: int | None
    eos_token_id: int  # the tokenizer's eos (Llama 3 Instruct: <|eot_id|>)
    pad_token_id: int | None
    eos_token_ids: tuple[int, ...]  # every id generation should stop on (Llama 3: end_of_text, eom, eot)


def training_text() -> list[str]:
    return [line for line in demo_corpus().splitlines() if line.strip()] + EXTRA_LINES


def _added(content: str, special: bool = True) -> AddedToken:
    return AddedToken(content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=special)


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _token_entry(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}


# --------------------------------------------------------------------------------------------- Llama 2


def _llama2_tokenizer(num_pieces: int) -> Tokenizer:
    """SentencePiece-style BPE: pieces trained per word (the word's leading space as "▁"), then
    laid out as Llama 2's vocabulary: specials, 256 byte tokens, pieces."""
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    # Like Llama 2's: every printable ASCII character and some CJK ones are pieces; the rest of
    # the characters (most accents, CJK, emoji, newline and tab) are written as <0xNN> bytes.
    trainer = trainers.BpeTrainer(vocab_size=num_pieces, min_frequency=2, special_tokens=[],
                                  initial_alphabet=list(string.printable.strip()) + list(LLAMA2_CJK_PIECES),
                                  show_progress=False)
    trainer_tok.train_from_iterator(training_text(), trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    pieces = sorted(trained["vocab"], key=trained["vocab"].get)

    vocab: dict[str, int] = {}
    for token in LLAMA2_SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + pieces:
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in trained["merges"]]

    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.add_special_tokens([_added(t) for t in LLAMA2_SPECIALS])
    # LlamaConverter (transformers 4.3x), as in meta-llama/Llama-2-7b-hf's tokenizer.json
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def build_llama2(directory: Path, *, num_pieces: int = 400, legacy: bool | None = False) -> BuiltTokenizer:
    """Llama 2's tokenizer files (``legacy`` as its ``tokenizer_config.json`` says; None leaves it out)."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = _llama2_tokenizer(num_pieces)
    tok.save(str(directory / "tokenizer.json"))
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(i): _token_entry(t) for i, t in enumerate(LLAMA2_SPECIALS)},
        "bos_token": "<s>",
        "clean_up_tokenization_spaces": False,
        "eos_token": "</s>",
        "model_max_length": 4096,
        "pad_token": None,
        "padding_side": "right",
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer",
        "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }
    if legacy is not None:
        config["legacy"] = legacy
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"})
    return BuiltTokenizer("llama2", directory, tok.get_vocab_size(with_added_tokens=True), 1, 2, None, (2,))


# ------------------------------------------------------------------------------------------ byte-level


def _byte_level_bpe(pattern: str, num_tokens: int, *, nfc: bool) -> tuple[Tokenizer, int]:
    """A byte-level BPE (the 256 byte symbols, then merges) split by ``pattern``; returns it and its size."""
    tok = Tokenizer(models.BPE(ignore_merges=not nfc))  # Llama 3's file sets ignore_merges, Qwen2's does not
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=num_tokens, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(training_text(), trainer=trainer)
    return tok, tok.get_vocab_size(with_added_tokens=False)


def build_llama3(directory: Path, *, num_tokens: int = 600) -> BuiltTokenizer:
    """Llama 3 (Instruct)'s tokenizer files: ``tokenizer.json`` + ``tokenizer_config.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    tok, n = _byte_level_bpe(LLAMA3_PATTERN, num_tokens, nfc=False)
    tok.add_special_tokens([_added(t) for t in LLAMA3_SPECIALS])
    ids = {t: tok.token_to_id(t) for t in LLAMA3_SPECIALS}
    bos = ids["<|begin_of_text|>"]
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single="<|begin_of_text|> $A:0",
                                      pair="<|begin_of_text|> $A:0 <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)]),
    ])
    tok.save(str(directory / "tokenizer.json"))
    _write_json(directory / "tokenizer_config.json", {
        "added_tokens_decoder": {str(ids[t]): _token_entry(t) for t in LLAMA3_SPECIALS},
        "bos_token": "<|begin_of_text|>",
        "clean_up_tokenization_spaces": True,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": 131072,
        "tokenizer_class": "PreTrainedTokenizerFast",
    })
    _write_json(directory / "special_tokens_map.json", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"})
    eos = ids["<|eot_id|>"]
    stops = (ids["<|end_of_text|>"], ids["<|eom_id|>"], eos)
    return BuiltTokenizer("llama3", directory, n + len(LLAMA3_SPECIALS), bos, eos, None, stops)


def build_qwen2(directory: Path, *, num_tokens: int = 600) -> BuiltTokenizer:
    """Qwen2 (Instruct)'s tokenizer files: ``vocab.json``, ``merges.txt``, ``tokenizer.json``, config."""
    directory.mkdir(parents=True, exist_ok=True)
    tok, n = _byte_level_bpe(QWEN2_PATTERN, num_tokens, nfc=True)
    tok.add_special_tokens([_added(t) for t in QWEN2_SPECIALS])
    ids = {t: tok.token_to_id(t) for t in QWEN2_SPECIALS}
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.save(str(directory / "tokenizer.json"))
    model = json.loads(tok.to_str())["model"]
    _write_json(directory / "vocab.json", model["vocab"])
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    _write_json(directory / "tokenizer_config.json", {
        "add_prefix_space": False,
        "added_tokens_decoder": {str(ids[t]): _token_entry(t) for t in QWEN2_SPECIALS},
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    })
    eos, pad = ids["<|im_end|>"], ids["<|endoftext|>"]
    return BuiltTokenizer("qwen2", directory, n + len(QWEN2_SPECIALS), None, eos, pad, (eos, pad))


BUILDERS = {"llama2": build_llama2, "llama3": build_llama3, "qwen2": build_qwen2}


def build_tokenizer(name: str, directory: Path) -> BuiltTokenizer:
    """``name`` (llama2, llama3, qwen2) written into ``directory``."""
    return BUILDERS[name](directory)


def resave(built: BuiltTokenizer, directory: Path) -> BuiltTokenizer:
    """``built`` loaded by transformers' AutoTokenizer and written by its ``save_pretrained``
    (transformers' own form of the files: Llama 2's tokenizer.json then has transformers'
    Metaspace pre-tokenizer, and its tokenizer_config.json no ``legacy``)."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(built.directory)).save_pretrained(str(directory))
    return replace(built, directory=directory)
