"""The embedded default model and the real-size presets (numpy only: no torch needed)."""

from __future__ import annotations

import json

import numpy as np

from ortgen.cli.random_model import PRESET_NAMES
from ortgen.tensor_files import SafetensorsFile
from ortgen.demo.models import PRESETS, build_random_biogpt, learn_bpe


def test_cli_offers_every_preset():
    assert set(PRESET_NAMES) == set(PRESETS)


def test_learn_bpe_merges_the_most_frequent_pairs_first():
    merges, symbols = learn_bpe(["low", "low", "low", "lower", "newest", "newest"], num_merges=3)
    # "low" (3x) and "lower" (1x) share l-o; the word-final w of "low" carries </w>
    assert merges[:2] == [("l", "o"), ("lo", "w</w>")]
    assert "low</w>" in symbols
    assert {"l", "w</w>", "t</w>"} <= set(symbols)


def test_demo_model_is_a_biogpt_checkpoint(tmp_path):
    directory = build_random_biogpt(tmp_path / "m", "demo")
    config = json.loads((directory / "config.json").read_text())
    vocab = json.loads((directory / "vocab.json").read_text())
    assert config["model_type"] == "biogpt" and config["vocab_size"] == len(vocab)
    assert [vocab[t] for t in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]
    tensors = SafetensorsFile(directory / "model.safetensors")
    count = sum(int(np.prod(tensors.shape(k))) for k in tensors.keys())
    assert count == PRESETS["demo"].parameters(len(vocab))
    embedding = tensors.read("biogpt.embed_tokens.weight")
    assert embedding.dtype == np.float32 and 0.01 < embedding.std() < 0.03
