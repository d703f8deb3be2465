"""Put a checkpoint's tokenizer into a package, in a form the runtime loads without transformers.

``moses-bpe`` (BioGPT) copies ``vocab.json`` and ``merges.txt``; ``tokenizer.json``
kinds copy the fast tokenizer (or have transformers write one). The ids a tokenizer adds
around the text (BioGPT and OPT start every prompt with ``</s>``) are measured here, by
encoding a probe text with and without special tokens, and recorded in the manifest.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from ortgen.errors import ModelSourceError, OrtgenError
from ortgen.package.chat_template import CHAT_TEMPLATE_FILE, ChatTemplate, find_chat_template
from ortgen.package.tokenizer_info import HF_TOKENIZERS, MOSES_BPE, TokenizerInfo
from ortgen.runtime.tokenizer import load_tokenizer

log = logging.getLogger(__name__)

_PROBE = "Aspirin reduces the risk of myocardial infarction."
_BIOGPT_SPECIALS = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "pad_token": "<pad>",
    "unk_token": "<unk>",
}


def _affixes(with_special: list[int], without: list[int]) -> tuple[list[int], list[int]]:
    """The ids added before and after the text, found by locating ``without`` in ``with_special``."""
    n = len(without)
    for start in range(len(with_special) - n + 1):
        if with_special[start : start + n] == without:
            return with_special[:start], with_special[start + n :]
    raise ModelSourceError("cannot tell which special tokens the tokenizer adds around a prompt")


def _special_tokens_from_files(directory: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        for role in ("bos_token", "eos_token", "sep_token", "pad_token", "unk_token"):
            value = data.get(role)
            if isinstance(value, dict):
                value = value.get("content")
            if isinstance(value, str):
                found[role] = value
    return found


def _transformers_tokenizer(directory: Path) -> Any | None:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        return None
    try:
        return AutoTokenizer.from_pretrained(str(directory))
    except Exception as exc:  # transformers raises many types for unusable tokenizer files
        log.warning("transformers could not load the tokenizer in %s (%s)", directory, exc)
        return None


def _package_moses_bpe(source: Path, dest: Path) -> TokenizerInfo:
    for name in ("vocab.json", "merges.txt"):
        if not (source / name).is_file():
            raise ModelSourceError(f"BioGPT's tokenizer needs {name}, and {source} has none")
        shutil.copyfile(source / name, dest / name)
    specials = {**_BIOGPT_SPECIALS, **_special_tokens_from_files(source)}
    vocab = json.loads((dest / "vocab.json").read_text(encoding="utf-8"))
    # BioGptTokenizer prepends its sep token (</s>) to every input and appends nothing.
    prefix, suffix = [vocab[specials["sep_token"]]], []
    reference = _transformers_tokenizer(source)
    if reference is not None:
        prefix, suffix = _affixes(reference(_PROBE)["input_ids"], reference(_PROBE, add_special_tokens=False)["input_ids"])
    return TokenizerInfo(MOSES_BPE, ["vocab.json", "merges.txt"], prefix, suffix, specials)


def _package_tokenizer_json(source: Path, dest: Path) -> TokenizerInfo:
    reference = _transformers_tokenizer(source)
    backend = getattr(reference, "backend_tokenizer", None) if reference is not None else None
    if backend is not None:
        backend.save(str(dest / "tokenizer.json"))
        prefix, suffix = _affixes(reference(_PROBE)["input_ids"], reference(_PROBE, add_special_tokens=False)["input_ids"])
        specials = {role: str(tok) for role, tok in reference.special_tokens_map.items() if isinstance(tok, str)}
    elif (source / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        shutil.copyfile(source / "tokenizer.json", dest / "tokenizer.json")
        tok = Tokenizer.from_file(str(dest / "tokenizer.json"))
        prefix, suffix = _affixes(tok.encode(_PROBE).ids, tok.encode(_PROBE, add_special_tokens=False).ids)
        specials = _special_tokens_from_files(source)
    else:
        raise ModelSourceError(f"{source} has no tokenizer.json (and transformers could not build one)")
    return TokenizerInfo(HF_TOKENIZERS, ["tokenizer.json"], prefix, suffix, specials)


_PACKAGERS: dict[str, Callable[[Path, Path], TokenizerInfo]] = {
    MOSES_BPE: _package_moses_bpe,
    "tokenizer.json": _package_tokenizer_json,
}


def has_tokenizer_files(directory: Path) -> bool:
    return any((directory / name).is_file() for name in ("tokenizer.json", "vocab.json", "tokenizer_config.json"))


def package_tokenizer(kind: str, source: Path, dest: Path, vocab_size: int) -> TokenizerInfo:
    """Copy the tokenizer in ``source`` into ``dest`` (with its chat template, if it has one); check
    it against the model's vocabulary."""
    dest.mkdir(parents=True, exist_ok=True)
    info = _PACKAGERS[kind](source, dest)
    template = find_chat_template(source)
    if template is not None:
        try:
            ChatTemplate(template, info.special_tokens)  # compiles it: a broken template fails the export
        except OrtgenError as exc:
            raise ModelSourceError(f"{source}: {exc}") from None
        (dest / CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")
        info = replace(info, files=[*info.files, CHAT_TEMPLATE_FILE], chat_template=CHAT_TEMPLATE_FILE)
        log.info("chat template: kept (%d characters)", len(template))
    tokenizer = load_tokenizer(dest, info)
    ids = tokenizer.encode(_PROBE)
    too_large = [i for i in ids if i >= vocab_size]
    if too_large:
        raise ModelSourceError(
            f"the tokenizer in {source} produces id {max(too_large)}, but the model's vocabulary has {vocab_size} rows"
        )
    log.info("tokenizer (%s): prompts get prefix %s, suffix %s", info.kind, info.prefix_ids, info.suffix_ids)
    return info
