"""Llama 2, Llama 3 and Qwen2 style tokenizers: ortgen's packaged ``tokenizer.json`` equals transformers.

The tokenizers are small stand-ins trained here (tests/helpers/llama_tokenizers.py) with the real
files' structure. For each: ``package_tokenizer`` puts it into a package, the runtime loads it
without transformers, and encoding, decoding (with and without special tokens) and streamed
text deltas are compared with transformers' tokenizer on text that trips tokenizers up.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata

import pytest

from ortgen.export.tokenizer_files import package_tokenizer
from ortgen.runtime.text_stream import TextDeltas
from ortgen.runtime.tokenizer import HfTokenizersTokenizer, load_tokenizer
from tests.helpers.llama_tokenizers import BUILDERS, build_llama2, resave

NAMES = tuple(BUILDERS)

TEXTS = [
    "",
    " ",
    "Hello world",
    "Aspirin reduces the risk of myocardial infarction.",
    "Café crème brûlée, naïve façade, Straße, Größe, Übermäßig",
    "e\u0301 vs é, A\u030a vs Å, ﬁ ligature",  # decomposed accents: Qwen2 normalizes them (NFC)
    "医学",
    "医学研究表明，阿司匹林可以降低心肌梗死的风险。",
    "日本語のテキスト 한국어 텍스트",
    "🧬👩‍⚕️ DNA and 👨‍👩‍👧‍👦 family 🏳️‍🌈 flag 👍🏽",
    "12345 3.14159 1,000 and 2024-01-01; 0.5% of 100000000",
    " leading space",
    "trailing space ",
    "  multiple   spaces  between   ",
    "line one\nline two\n\n\ttabbed\r\nwindows\n",
    "\n\n",
    "\ttab\tin\tthe\tmiddle",
    "<s>hello world</s>",
    "a <s> b </s> c <unk> d",
    "<|begin_of_text|>x<|eot_id|>y<|end_of_text|>",
    "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "Ωμέγα ελληνικά; русский текст; עברית; العربية",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic space",
    "€100 ≥ 50 ± 3 °C — “quoted” ‘single’ … ©®™",
    "Isn't it? They're here, we've seen, I'm sure, you'll see, he'd go.",
    "ⅷ ½ ² ₃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \U0001f9ea\U0001fa7a",
    "x" * 40 + " " + "医" * 20,
]


@pytest.fixture(scope="module", params=NAMES)
def pair(request, tmp_path_factory):
    """(name, built, transformers' tokenizer, ortgen's tokenizer, package dir)."""
    from transformers import AutoTokenizer

    name = request.param
    root = tmp_path_factory.mktemp(name)
    built = BUILDERS[name](root / "hf")
    reference = AutoTokenizer.from_pretrained(str(built.directory))
    dest = root / "package" / "tokenizer"
    info = package_tokenizer("tokenizer.json", built.directory, dest, built.vocab_size)
    ours = load_tokenizer(dest, info)
    return name, built, reference, ours, dest


def test_transformers_save_pretrained_form_packages_alike(pair, tmp_path):
    """The helper's directories written again by save_pretrained package to the same tokenizer."""
    name, built, reference, ours, _ = pair
    again = resave(built, tmp_path / "resaved")
    info = package_tokenizer("tokenizer.json", again.directory, tmp_path / "package", again.vocab_size)
    assert info == ours.info
    theirs = load_tokenizer(tmp_path / "package", info)
    for text in TEXTS:
        assert theirs.encode(text) == ours.encode(text), (name, text)


def _random_sequences(name: str, ours: HfTokenizersTokenizer, vocab_size: int, count: int = 80,
                      ascii_bytes: bool = True) -> list[list[int]]:
    """Id sequences a model could sample: byte tokens (Llama 2's <0xNN>, byte-level's single bytes)
    in and out of order, the bytes of multi-byte characters split between tokens, special tokens,
    whitespace, and any id. ``ascii_bytes=False``: no <0xNN> token of a printable ASCII character
    (SentencePiece writes those as pieces, so a Llama 2 model has never seen them)."""
    rng = random.Random(f"{name}-ids-{ascii_bytes}")
    vocab = ours._tok.get_vocab(with_added_tokens=True)
    specials = [i for t, i in vocab.items() if t.startswith("<") and t.endswith(">") and not t.startswith("<0x")]
    if name == "llama2":
        byte_ids = [vocab[f"<0x{b:02X}>"] for b in range(256)]
        drawn = [i for b, i in enumerate(byte_ids) if ascii_bytes or not 0x20 < b < 0x7F]
    else:  # byte-level: the 256 single-byte symbols
        byte_ids = drawn = [vocab[_BYTE_SYMBOLS[b]] for b in range(256)]
    pieces = [ours.encode_plain(t) for t in TEXTS if t]
    sequences = []
    for _ in range(count):
        seq: list[int] = []
        while len(seq) < rng.randint(1, 40):
            kind = rng.random()
            if kind < 0.35:
                seq.append(rng.choice(drawn))
            elif kind < 0.55:  # a multi-byte character, byte by byte (as byte fallback writes it)
                char = rng.choice("é医🧬\u3000\u00a0ß👩\u200d")
                seq.extend(ours.encode_plain(char) if rng.random() < 0.3 else
                           [byte_ids[b] for b in char.encode()])
            elif kind < 0.65:
                seq.append(rng.choice(specials))
            elif kind < 0.8:
                chunk = rng.choice(pieces)
                start = rng.randrange(len(chunk))
                seq.extend(chunk[start:start + rng.randint(1, 6)])
            else:  # any id, a few past the tokenizer's (models pad their vocabulary): decoding skips them
                seq.append(rng.randrange(vocab_size + 8))
        sequences.append(seq)
    return sequences


def _bytes_to_unicode() -> dict[int, str]:  # GPT-2's byte -> symbol table
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_BYTE_SYMBOLS = _bytes_to_unicode()


def test_helpers_build_tokenizers_as_the_checkpoints_have_them(pair):
    name, built, reference, ours, dest = pair
    specials = {"llama2": ("<s>", "</s>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
                "qwen2": (None, "<|im_end|>")}[name]
    assert (reference.bos_token, reference.eos_token) == specials
    assert (reference.bos_token_id, reference.eos_token_id, reference.pad_token_id) == (
        built.bos_token_id, built.eos_token_id, built.pad_token_id)
    assert len(reference) == built.vocab_size
    assert ours.info.prefix_ids == ([built.bos_token_id] if built.bos_token_id is not None else [])
    assert ours.info.suffix_ids == []
    assert ours.info.special_tokens["eos_token"] == specials[1]
    if name == "llama2":
        assert [reference.convert_ids_to_tokens(i) for i in (0, 1, 2, 3, 258)] == ["<unk>", "<s>", "</s>", "<0x00>", "<0xFF>"]
    if name == "llama3":
        assert [reference.convert_ids_to_tokens(i) for i in built.eos_token_ids] == [
            "<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]


def test_encode_equals_transformers(pair):
    name, built, reference, ours, _ = pair
    for text in TEXTS:
        expected = reference(text)["input_ids"]
        assert ours.encode(text) == expected, (name, text)
        assert ours.encode_plain(text) == reference(text, add_special_tokens=False)["input_ids"], (name, text)
        assert max(expected, default=0) < built.vocab_size


def test_byte_fallback_covers_characters_outside_the_vocabulary(pair):
    name, _, reference, ours, _ = pair
    tokens = reference.convert_ids_to_tokens(ours.encode_plain("研究 🧬\n"))
    if name == "llama2":
        assert "<unk>" not in tokens
        assert {"<0xE7>", "<0xF0>", "<0x0A>"} <= set(tokens)
    assert ours.decode(ours.encode_plain("研究 🧬\n")) == "研究 🧬\n"


@pytest.mark.parametrize("skip", [True, False])
def test_decode_equals_transformers(pair, skip):
    name, built, reference, ours, _ = pair
    sequences = [reference(t)["input_ids"] for t in TEXTS] + _random_sequences(name, ours, built.vocab_size)
    for ids in sequences:
        assert ours.decode(ids, skip_special_tokens=skip) == reference.decode(ids, skip_special_tokens=skip), (name, ids)


def test_decoding_the_encoded_text_gives_it_back(pair):
    """Byte-level BPE gives back any text (Qwen2 in NFC); Llama 2 as transformers 5 runs it drops one
    leading space (see the last test)."""
    name, _, reference, ours, _ = pair
    for text in TEXTS:
        decoded = ours.decode(ours.encode_plain(text), skip_special_tokens=False)
        assert decoded == reference.decode(reference(text, add_special_tokens=False)["input_ids"],
                                           skip_special_tokens=False)
        if name == "qwen2":
            assert decoded == unicodedata.normalize("NFC", text)
        elif name == "llama3" or not text.startswith(" "):
            assert decoded == text, (name, text)
        else:
            assert decoded == text[1:], (name, text)


def _stream(decode, ids, **kwargs):
    deltas = TextDeltas(decode, **kwargs)
    return [deltas.update(ids[:n], final=n == len(ids)) for n in range(1, len(ids) + 1)]


def _check_stream(deltas: list[str], final: str, where) -> None:
    for delta in deltas:
        delta.encode("utf-8")  # no lone surrogates
        if "\ufffd" not in final:
            assert "\ufffd" not in delta, (where, deltas)
    assert "".join(deltas) == final, (where, deltas, final)


def _sequences(pair, ascii_bytes: bool = True):
    name, built, reference, ours, _ = pair
    return ([reference(t)["input_ids"] for t in TEXTS if t]
            + _random_sequences(name, ours, built.vocab_size, ascii_bytes=ascii_bytes))


def test_streamed_deltas_concatenate_to_the_decoded_text(pair):
    """The rule the runtime streams with (TextDeltas with only ``decode``): byte tokens split
    anywhere, U+FFFD only where the final text has it. (Llama 2 ids with <0xNN> tokens of printable
    ASCII left out: that rule cannot tell them from pieces, see ortgen.runtime.text_stream.)"""
    name, _, _, ours, _ = pair
    for ids in _sequences(pair, ascii_bytes=False):
        _check_stream(_stream(ours.decode, ids), ours.decode(ids), (name, ids))


def test_streamed_deltas_with_the_tokenizers_settled_length(pair):
    """With the tokenizer's own account of what is settled, the same holds."""
    name, _, _, ours, _ = pair
    assert ours._streaming == ("byte-fallback" if name == "llama2" else "byte-level")
    for ids in _sequences(pair):
        _check_stream(_stream(ours.decode, ids, settled=ours.settled_length), ours.decode(ids), (name, ids))


def test_text_without_spaces_streams_as_each_character_completes(pair):
    """Chinese has no spaces to wait for: with the tokenizer's settled length, every character is
    sent once its last byte arrives (the whitespace rule alone sends it all at the end)."""
    name, _, _, ours, _ = pair
    text = "医学研究表明，阿司匹林可以降低心肌梗死的风险。"
    ids = ours.encode_plain(text)
    plain = _stream(ours.decode, ids)
    assert "".join(plain[:-1]) == "" and plain[-1] == text
    deltas = _stream(ours.decode, ids, settled=ours.settled_length)
    if name == "llama2":  # characters outside the vocabulary are one run of bytes: they settle together
        assert [d for d in deltas if d][:3] == ["医", "学", "研究表明，阿司匹林可以降低心肌梗死的"], deltas
    sent = ""
    for n, delta in enumerate(deltas[:-1], start=1):
        sent += delta
        partial = ours.decode(ids[:n])
        complete = partial.rstrip("\ufffd")
        if name == "llama2":  # byte fallback: up to the trailing run of <0xNN> tokens
            assert complete.startswith(sent) and text.startswith(sent)
        else:
            assert sent == complete, (n, sent, partial)
    if name != "llama2":
        assert sum(1 for d in deltas if d) > len(text) // 2, deltas
    assert "".join(deltas) == text


def test_byte_fallback_newlines_and_emoji_stream_without_taking_text_back(pair):
    """Llama 2 writes a newline as <0x0A> and a character outside its vocabulary as its bytes, so
    "\\n🧬\\n🧬" is one run of byte tokens that decodes to U+FFFD throughout whenever a character in it
    is incomplete: text before the last newline is not settled, and a sequence that ends in the
    middle of a character (max_new_tokens) must still stream its final text."""
    name, _, _, ours, _ = pair
    ids = ours.encode_plain("Emoji list:\n🧬\n🧬\n🧬\n👩‍⚕️ done")
    for cut in range(1, len(ids) + 1):
        final = ours.decode(ids[:cut])
        _check_stream(_stream(ours.decode, ids[:cut]), final, (name, cut))
        _check_stream(_stream(ours.decode, ids[:cut], settled=ours.settled_length), final, (name, cut))


def _whitespace_rule(decode, ids):
    """The deltas of the rule alone (TextDeltas before byte runs were held back)."""
    emitted, deltas = "", []
    for n in range(1, len(ids) + 1):
        text = decode(ids[:n])
        match = re.search(r"\s(?=\S*$)", text.rstrip()) if text.strip() else None
        stable = text if n == len(ids) else (text[:match.start()] if match else "")
        delta = stable[len(emitted):] if stable.startswith(emitted) else ""
        emitted = stable if stable.startswith(emitted) else emitted
        deltas.append(delta)
    return deltas


def test_moses_bpe_streams_by_the_whitespace_rule_as_before(tmp_path):
    """BioGPT's tokenizer says nothing of what is settled, and has no byte tokens: its deltas are
    the whitespace rule's, unchanged."""
    from ortgen.demo.models import write_demo_tokenizer
    from ortgen.package.tokenizer_info import MOSES_BPE
    from tests.parity.test_tokenizers import SENTENCES

    vocab_size = write_demo_tokenizer(tmp_path / "hf")
    info = package_tokenizer(MOSES_BPE, tmp_path / "hf", tmp_path / "package", vocab_size)
    ours = load_tokenizer(tmp_path / "package", info)
    for text in SENTENCES:
        ids = ours.encode(text)
        assert ours.settled_length(ids, ours.decode(ids)) is None
        deltas = _stream(ours.decode, ids)
        assert deltas == _whitespace_rule(ours.decode, ids), text
        assert any(deltas[:-1]), text
        _check_stream(deltas, ours.decode(ids), text)


@pytest.mark.parametrize("legacy", [False, True])
def test_llama2_packages_the_tokenizer_transformers_5_runs_not_the_checkpoints_file(tmp_path, legacy):
    """transformers 5's LlamaTokenizer keeps the vocabulary, merges and post-processor of Llama 2's
    tokenizer.json and rebuilds the rest: a Metaspace pre-tokenizer that prepends "▁" to the first
    piece of text only (``legacy: false``) or to every piece between special tokens (``legacy:
    true``), and never to text that already starts with a space. The file itself (SentencePiece's
    way) prepends "▁" to every piece, space or not. ortgen packages what transformers runs."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    built = build_llama2(tmp_path / "hf", legacy=legacy)
    reference = AutoTokenizer.from_pretrained(str(built.directory))
    raw = Tokenizer.from_file(str(built.directory / "tokenizer.json"))
    info = package_tokenizer("tokenizer.json", built.directory, tmp_path / "package", built.vocab_size)
    ours = load_tokenizer(tmp_path / "package", info)
    packaged = json.loads((tmp_path / "package" / "tokenizer.json").read_text(encoding="utf-8"))
    assert packaged["normalizer"] is None
    assert packaged["pre_tokenizer"] == {"type": "Metaspace", "replacement": "▁", "split": False,
                                         "prepend_scheme": "always" if legacy else "first"}
    chat = "<s>[INST] Is aspirin an NSAID? [/INST]"
    for text in (chat, " x", "  two spaces", "hello</s><s>world", "plain text"):
        assert ours.encode(text) == reference(text)["input_ids"], text
    # where transformers 5 and the checkpoint's own file part
    assert reference.convert_ids_to_tokens(reference(" x")["input_ids"]) == ["<s>", "▁", "x"]
    assert raw.encode(" x").tokens == ["<s>", "▁", "▁", "x"]
    assert reference.decode(reference(" x")["input_ids"], skip_special_tokens=True) == "x"  # the space is lost
    after_bos = reference.convert_ids_to_tokens(reference(chat)["input_ids"])[2]
    assert after_bos == ("▁" if legacy else "[")
    assert raw.encode(chat).tokens[2] == "▁"
    assert reference("plain text")["input_ids"] == raw.encode("plain text").ids
    # transformers' save_pretrained writes no ``legacy``, so a legacy tokenizer loads back as non-legacy
    again = AutoTokenizer.from_pretrained(str(resave(built, tmp_path / "resaved").directory))
    assert (again(chat)["input_ids"] == reference(chat)["input_ids"]) == (not legacy)
