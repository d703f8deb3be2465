"""The package contract: a hand-edited ortgen.json is refused at load time, naming the field.

Each case edits one field that a runtime relies on (in a copy of a real package) and asserts that
``Generator.load`` and ``ortgen inspect`` both refuse it with a PackageError that names the field,
before any graph runs: no ONNX Runtime input-name error, no Gather out of bounds at the first
request, no silent run with a wrong EOS.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ortgen.cli import main
from ortgen.errors import PackageError
from ortgen.runtime.generator import Generator


def _copy(package: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pkg"
    shutil.copytree(package, out)
    return out


def _edit(package: Path, path: str, value) -> None:
    manifest_path = package / "ortgen.json"
    data = json.loads(manifest_path.read_text())
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    manifest_path.write_text(json.dumps(data))


_DELETE = object()

# (field, new value, words the error must contain)
CASES = [
    ("architecture.num_layers", 3, "architecture.num_layers is 3, but decoder.onnx has 2 layers"),
    ("architecture.num_layers", "two", "architecture.num_layers must be an integer >= 1, got 'two'"),
    ("architecture.max_positions", 4096, "architecture.max_positions is 4096 (+ position_offset 2), but decoder.onnx's "
                                         "position embedding has 66 rows"),
    ("architecture.vocab_size", 99999, "architecture.vocab_size is 99999, but decoder.onnx projects onto 406 tokens"),
    ("architecture.vocab_size", 2, "tokenizer.prefix_ids holds token id 2, outside the vocabulary [0, 2)"),
    ("architecture.num_heads", 6, "architecture.num_heads (6) x head_dim (16) must equal hidden_size (48)"),
    ("architecture.head_dim", 8, "architecture.num_heads (3) x head_dim (8) must equal hidden_size (48)"),
    ("architecture.position_offset", -1, "architecture.position_offset must be an integer >= 0, got -1"),
    ("architecture.embed_scale", "NaN", "architecture.embed_scale must be a finite number, got 'NaN'"),
    ("architecture", _DELETE, "architecture is missing"),
    ("special_tokens.eos_token_id", 99999, "special_tokens.eos_token_id must be a token id in the vocabulary"),
    ("special_tokens.pad_token_id", -1, "special_tokens.pad_token_id must be an integer >= 0, got -1"),
    ("special_tokens.bos_token_id", "zero", "special_tokens.bos_token_id must be an integer >= 0, got 'zero'"),
    ("generation_defaults.num_beams", "five", "generation_defaults.num_beams must be an integer in [1, 128], got 'five'"),
    ("generation_defaults.temperature", 0, "generation_defaults.temperature must be a finite number > 0, got 0"),
    ("generation_defaults.max_length", 0, "generation_defaults.max_length must be an integer >= 1, got 0"),
    ("generation_defaults.early_stopping", "yes", "generation_defaults.early_stopping must be true, false or 'never'"),
    ("generation_defaults.beams", 4, "generation_defaults.beams is not a generation default ortgen reads"),
    ("graphs.decoder_engine.file", "missing.onnx", "missing.onnx (graphs.decoder_engine) is missing"),
    ("graphs.decoder.inputs.0.name", "ids", "graphs.decoder.inputs lists ['ids'"),
    ("graphs.decoder.inputs.0.dtype", "int64", "graphs.decoder.inputs says input_ids is int64, decoder.onnx has int32"),
    ("graphs.beam.operator", "GreedySearch", "graphs.beam.operator is 'GreedySearch', generate_beam.onnx runs BeamSearch"),
    ("graphs.sample.logits", "some", "graphs.sample.logits must be one of 'all', 'last', got 'some'"),
    ("graphs.gready", {}, "graphs.gready is not a graph ortgen knows"),
    ("weights_file", "w.bin", "w.bin (weights_file) is missing"),
    ("tokenizer.kind", "sentencepiece", "tokenizer.kind must be one of 'moses-bpe', 'tokenizers', got 'sentencepiece'"),
    ("tokenizer.prefix_ids", [99999], "tokenizer.prefix_ids holds token id 99999, outside the vocabulary"),
    ("tokenizer.prefix_ids", "2", "tokenizer.prefix_ids must be a list of integers >= 0, got '2'"),
    ("weights_dtype", "int3", "weights_dtype must be one of 'float32', 'float16', 'int8', 'int4', got 'int3'"),
    ("weights_dtype", "int8", "weights_dtype 'int8' and quantization None disagree"),
    ("weights_dtype", "float16", "weights_dtype 'float16' and dtype 'float32' disagree"),
    ("dtype", "bfloat16", "dtype must be one of 'float32', 'float16', got 'bfloat16'"),
    ("format_version", 7, "package format version 7 is not supported"),
    ("prompt_format", {"template": "q: {query}"}, "prompt_format.template must be a template whose only fields are"),
    ("prompt_format", {"learned_prompt_ids": [99999]}, "prompt_format.learned_prompt_ids holds token id 99999"),
]


@pytest.mark.parametrize("field, value, message", CASES, ids=[c[0] + "=" + repr(c[1])[:20] for c in CASES])
def test_an_edited_field_is_refused_at_load_time_by_name(zoo, tmp_path, capsys, field, value, message):
    package = _copy(zoo.package("biogpt"), tmp_path)
    Generator.load(package)  # intact: loads
    _edit(package, field, value)
    with pytest.raises(PackageError) as info:
        Generator.load(package)
    assert message in str(info.value)
    assert main(["inspect", str(package)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_broken_manifest_file_is_refused_with_its_path(zoo, tmp_path):
    package = _copy(zoo.package("gpt2"), tmp_path)
    (package / "ortgen.json").write_text("{not json")
    with pytest.raises(PackageError, match="ortgen.json is not valid JSON"):
        Generator.load(package)
    (package / "ortgen.json").write_text("[1, 2]")
    with pytest.raises(PackageError, match="the top level must be a JSON object"):
        Generator.load(package)


def test_a_missing_tokenizer_file_is_named(zoo, tmp_path):
    package = _copy(zoo.package("opt"), tmp_path)
    (package / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(PackageError, match="tokenizer/tokenizer.json is missing"):
        Generator.load(package)


def test_a_dtype_the_graphs_do_not_compute_in_is_refused(zoo, tmp_path):
    """A float32 package relabelled float16 would get float16 caches bound to float32 graphs."""
    package = _copy(zoo.package("biogpt"), tmp_path)
    _edit(package, "dtype", "float16")
    _edit(package, "weights_dtype", "float16")
    with pytest.raises(PackageError, match="ortgen.json: dtype is float16, but decoder.onnx's logits is float32"):
        Generator.load(package)
