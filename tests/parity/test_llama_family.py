"""The Llama family beyond the shared parity grids (which cover every architecture: decoder logits,
in-graph search, step engine, scheduler): rotary tables, several EOS ids, chat templates, refusals.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from ortgen.arch import get_spec
from ortgen.arch.spec import Rotary
from ortgen.cli import main
from ortgen.errors import UnsupportedModelError
from ortgen.export.package import ExportOptions, export_package
from ortgen.package.manifest import Manifest
from ortgen.runtime.generator import Generator, left_pad
from ortgen.validate.reference import Reference
from tests.helpers.models import LLAMA3_EXTRA_EOS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"
MAX_NEW = 12


def _prompts(vocab: int, count: int = 6, seed: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [list(map(int, rng.integers(7, vocab, size=n))) for n in rng.integers(2, 9, size=count)]


@pytest.mark.parametrize("rope", [
    {"rope_type": "default", "rope_theta": 10000.0},
    {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 8192},
])
def test_rotary_tables_equal_transformers(rope):
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    config = LlamaConfig(hidden_size=1024, num_attention_heads=8, max_position_embeddings=131072, rope_parameters=rope)
    rotary = get_spec("llama").read_dims(config.to_dict()).rotary
    assert rotary is not None and rotary.scaling == rope["rope_type"]
    positions = np.array([0, 1, 7, 100, 4095, 8191, 20000, 131071])
    cos, sin = rotary.tables(128, int(positions.max()) + 1)
    hf = LlamaRotaryEmbedding(config)
    with torch.no_grad():
        hf_cos, hf_sin = hf(torch.zeros(1, 1, 128), torch.tensor(positions)[None])
    # transformers duplicates the half-size table over both halves
    np.testing.assert_allclose(cos[positions], hf_cos[0, :, :64].numpy(), atol=2e-6)
    np.testing.assert_allclose(sin[positions], hf_sin[0, :, :64].numpy(), atol=2e-6)


def test_legacy_rope_scaling_keys_are_read():
    """Hub checkpoints still carry rope_theta + rope_scaling {"type": ...} (transformers 5 writes rope_parameters)."""
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
              "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64, "rope_theta": 5e5,
              "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert get_spec("llama").read_dims(config).rotary == Rotary(5e5, "linear", factor=2.0)


@pytest.mark.parametrize("change, named", [
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn'"),
    ({"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "supported: default, linear, llama3"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"hidden_act": "gelu"}, "hidden_act"),
    ({"num_key_value_heads": 3}, "num_key_value_heads"),
])
def test_unimplemented_config_fields_are_refused_by_name(tmp_path, capsys, change, named):
    config = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
              "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64, **change}
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    assert main(["-q", "export", str(tmp_path / "model"), "-o", str(tmp_path / "pkg")]) != 0
    assert named in capsys.readouterr().err
    assert not (tmp_path / "pkg").exists()


def test_qwen2_with_a_per_layer_window_is_refused():
    config = {"hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 128,
              "vocab_size": 100, "max_position_embeddings": 64, "use_sliding_window": True, "sliding_window": 16,
              "max_window_layers": 2}
    with pytest.raises(UnsupportedModelError, match="use_sliding_window"):
        get_spec("qwen2").read_dims(config)
    config["use_sliding_window"] = False  # what Qwen2.5 checkpoints ship: no window at all
    assert get_spec("qwen2").read_dims(config).sliding_window is None


def test_unsupported_architecture_lists_the_supported_ones(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    assert main(["-q", "export", str(tmp_path / "model"), "-o", str(tmp_path / "pkg")]) != 0
    err = capsys.readouterr().err
    assert "gemma2" in err and "llama, mistral" in err and "qwen2" in err


def test_generation_config_eos_ids_are_all_kept(zoo):
    package = zoo.package("llama3")
    assert Manifest.load(package).special_tokens.eos_token_ids == [2, *LLAMA3_EXTRA_EOS]
    with Generator.load(package) as generator:
        assert generator.settings_for().eos_token_ids == [2, *LLAMA3_EXTRA_EOS]


def _frequent_tokens(hf, prompts, pad, count=2) -> list[int]:
    """Tokens transformers' greedy search produces mid-sequence on these prompts (made EOS ids below, so
    that sequences really end on them)."""
    ids, mask = left_pad(prompts, pad)
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask), do_sample=False,
                          max_new_tokens=MAX_NEW, eos_token_id=2, pad_token_id=pad)
    middle = out[:, ids.shape[1] + 2: ids.shape[1] + MAX_NEW - 2].reshape(-1).tolist()
    return [token for token, _ in Counter(t for t in middle if t > 3).most_common(count)]


def test_every_eos_id_ends_sequences_as_in_transformers(zoo):
    """Llama 3 ends turns on any of several ids: the step engine (requests running together) and the
    in-graph greedy search stop where transformers' generate() does."""
    model = zoo.model("llama3")
    hf = model.load()
    prompts = _prompts(model.vocab_size)
    eos = [2, *_frequent_tokens(hf, prompts, model.pad_token_id)]
    reference = Reference(hf, "tiny llama3")
    stopped_on_extra = 0
    with Generator.load(zoo.package("llama3")) as generator:
        for options in (dict(num_beams=1), dict(num_beams=3, num_return_sequences=2), dict(num_beams=1, backend="graph")):
            result = generator.generate(input_ids=prompts, max_new_tokens=MAX_NEW, eos_token_id=eos, **options)
            for prompt, group in zip(prompts, result.sequences):
                theirs = reference.generate(*left_pad([prompt], model.pad_token_id), result.settings, eos=2,
                                            pad=model.pad_token_id)[0]
                assert [(s.token_ids, s.stop_reason == "eos") for s in group] == \
                    [(t.token_ids, t.finished) for t in theirs], f"{options}: prompt {prompt}"
            if options.get("backend") != "graph":
                full = [generator.generate(input_ids=[p], max_new_tokens=MAX_NEW, eos_token_id=2, **options)
                        for p in prompts]
                stopped_on_extra += sum(len(s.token_ids) < len(f.sequences[0][0].token_ids)
                                        for r, f in zip(result.sequences, full) for s in r[:1])
    assert stopped_on_extra > 0, "no sequence ended on the extra EOS ids: the test proves nothing"


def _with_chat_template(zoo, arch: str, template: str, tmp_path: Path) -> Path:
    source = tmp_path / f"{arch}-chat"
    shutil.copytree(zoo.model(arch).directory, source)
    (source / "chat_template.jinja").write_text((FIXTURES / template).read_text(encoding="utf-8"), encoding="utf-8")
    return source


@pytest.mark.parametrize("arch, template", [
    ("llama3", "llama-3-8b-instruct.jinja"),
    ("llama2", "llama-2-7b-chat.jinja"),
    ("mistral", "mistral-7b-instruct-v0.1.jinja"),
    ("qwen2", "qwen2.5-instruct.jinja"),
])
def test_chat_uses_the_checkpoints_template_as_transformers_does(zoo, tmp_path, arch, template):
    from transformers import AutoTokenizer

    source = _with_chat_template(zoo, arch, template, tmp_path)
    export_package(str(source), tmp_path / "pkg", ExportOptions(show_progress=False))
    tokenizer = AutoTokenizer.from_pretrained(source)
    messages = [{"role": "user", "content": "What does aspirin inhibit?"},
                {"role": "assistant", "content": " Cyclooxygenase. "},
                {"role": "user", "content": "And ibuprofen? 🧬 é"}]
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    with Generator.load(tmp_path / "pkg") as generator:
        assert (tmp_path / "pkg" / "tokenizer" / "chat_template.jinja").is_file()
        ids = generator.chat_ids(messages)
        assert ids == list(expected)
        result = generator.chat(messages, max_new_tokens=6, num_beams=2)
    model = zoo.model(arch)
    theirs = Reference(model.load(), arch).generate(*left_pad([ids], model.pad_token_id), result.settings,
                                                    eos=model.eos_token_id, pad=model.pad_token_id)[0]
    assert [s.token_ids for s in result.sequences[0]] == [t.token_ids for t in theirs][:1]


def test_chat_without_a_template_says_so(zoo):
    with Generator.load(zoo.package("llama2")) as generator:
        assert generator.chat_template is None
        with pytest.raises(Exception, match="no chat template"):
            generator.chat([{"role": "user", "content": "hi"}])
