"""`ortgen export` / `ortgen inspect` end to end: happy paths, every bad input, atomicity."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ortgen.package import contract
from ortgen.cli import main
from ortgen.tensor_files import SafetensorsFile, write_safetensors
from ortgen.package.manifest import Manifest
from tests.conftest import needs_torch

pytestmark = needs_torch


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".partial-" in p.name or p.name.endswith(".old")]


@pytest.fixture()
def model_copy(zoo, tmp_path):
    """A private copy of the tiny BioGPT that a test may damage."""
    dest = tmp_path / "model"
    shutil.copytree(zoo.model("biogpt").directory, dest)
    return dest


def test_export_writes_a_complete_package(model_copy, tmp_path, capsys):
    out = tmp_path / "pkg"
    code, stdout, _ = run(["export", model_copy, "-o", out, "--no-progress"], capsys)
    assert code == 0 and "exported biogpt" in stdout
    names = {p.name for p in out.iterdir()}
    assert names == {"ortgen.json", "weights.bin", "decoder.onnx", "decoder_engine.onnx", "generate_beam.onnx",
                     "generate_greedy.onnx", "generate_beam_early_stopping.onnx", "generate_sample.onnx", "tokenizer"}
    manifest = Manifest.load(out)
    assert manifest.architecture.model_type == "biogpt" and manifest.architecture.num_heads == 3
    assert (manifest.special_tokens.bos_token_id, manifest.special_tokens.eos_token_id,
            manifest.special_tokens.pad_token_id) == (0, 2, 1)
    assert manifest.tokenizer.prefix_ids == [2]  # every BioGPT prompt starts with </s>
    assert manifest.graphs["beam"].operator == "BeamSearch"
    beam_inputs = [(t.name, t.dtype) for t in manifest.graphs["beam"].inputs]
    assert beam_inputs == [("input_ids", "int32"), ("max_length", "int32"), ("min_length", "int32"),
                           ("num_beams", "int32"), ("num_return_sequences", "int32"), ("length_penalty", "float32"),
                           ("repetition_penalty", "float32"), ("attention_mask", "int32")]
    assert [t.name for t in manifest.graphs["beam"].outputs] == ["sequences", "sequences_scores"]
    # weights stored once: the ONNX files are small, all point into weights.bin
    weights = (out / "weights.bin").stat().st_size
    for name in ("decoder.onnx", "decoder_engine.onnx", "generate_beam.onnx", "generate_beam_early_stopping.onnx",
                 "generate_greedy.onnx", "generate_sample.onnx"):
        assert (out / name).stat().st_size < weights / 4
    code, stdout, _ = run(["inspect", out, "--verify"], capsys)
    assert code == 0
    assert "com.microsoft BeamSearch" in stdout and "verified     all 9 files" in stdout
    code, stdout, _ = run(["inspect", out, "--json"], capsys)
    assert json.loads(stdout)["architecture"]["num_layers"] == 2
    assert no_leftovers(tmp_path)


def test_inspect_verify_catches_a_damaged_file(zoo, tmp_path, capsys):
    pkg = tmp_path / "pkg"
    shutil.copytree(zoo.package("biogpt"), pkg)
    with (pkg / "weights.bin").open("r+b") as f:
        f.seek(100)
        f.write(b"\x01\x02\x03")
    code, _, err = run(["inspect", pkg, "--verify"], capsys)
    assert code == 1 and "weights.bin has checksum" in err


def test_existing_package_dir_is_refused_without_force(zoo, model_copy, tmp_path, capsys):
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run(["export", model_copy, "-o", out, "--no-progress"], capsys)
    assert code == 1 and "already exists; pass --force" in err
    code, _, err = run(["export", model_copy, "-o", out, "--no-progress", "--force"], capsys)
    assert code == 1 and "is not an ortgen package" in err  # --force never deletes foreign data
    assert (out / "keep.txt").read_text() == "mine"
    pkg = tmp_path / "pkg2"
    assert run(["export", model_copy, "-o", pkg, "--no-progress"], capsys)[0] == 0
    assert run(["export", model_copy, "-o", pkg, "--no-progress", "--force"], capsys)[0] == 0
    assert Manifest.load(pkg).architecture.model_type == "biogpt"
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("missing_dir", "does not exist (expected a local Hugging Face or fairseq directory, or a Hub id"),
        ("file_not_dir", "is a file; pass the checkpoint's directory"),
        ("no_config", "has no config.json; it is not a Hugging Face model directory"),
        ("bad_json", "config.json is not valid JSON"),
        ("unsupported", "no exporter for model_type 'gemma2'; supported: biogpt, gpt2, llama, mistral, opt, qwen2"),
        ("shape_mismatch", "the weights do not match config.json"),
        ("missing_tensor", "missing tensor(s): biogpt.layers.1.fc2.weight"),
        ("no_weights", "no weights in"),
        ("truncated_weights", "cannot read safetensors file"),
        ("odd_heads", "not divisible by num_heads"),
    ],
)
def test_bad_models_get_a_clear_error_and_no_package(model_copy, tmp_path, capsys, damage, message):
    target = model_copy
    config_path = model_copy / "config.json"
    config = json.loads(config_path.read_text())
    if damage == "missing_dir":
        target = tmp_path / "nowhere"
    elif damage == "file_not_dir":
        target = config_path
    elif damage == "no_config":
        config_path.unlink()
    elif damage == "bad_json":
        config_path.write_text("{not json")
    elif damage == "unsupported":
        config["model_type"] = "gemma2"
    elif damage == "shape_mismatch":
        config["intermediate_size"] = 80
    elif damage == "odd_heads":
        config["num_attention_heads"] = 5
    elif damage == "missing_tensor":
        source = SafetensorsFile(model_copy / "model.safetensors")
        tensors = {k: source.read(k) for k in source.keys() if k != "biogpt.layers.1.fc2.weight"}
        del source
        write_safetensors(model_copy / "model.safetensors", tensors)
    elif damage == "no_weights":
        (model_copy / "model.safetensors").unlink()
    elif damage == "truncated_weights":
        (model_copy / "model.safetensors").write_bytes(b"\x10\x00")
    if damage in ("unsupported", "shape_mismatch", "odd_heads"):
        config_path.write_text(json.dumps(config))
    out = tmp_path / "pkg"
    code, _, err = run(["export", target, "-o", out, "--no-progress"], capsys)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert not out.exists() and no_leftovers(tmp_path)


def test_unreachable_hub_id_is_explained(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run(["export", "no-such-org/no-such-model", "-o", tmp_path / "pkg", "--no-progress"], capsys)
    assert code == 1
    assert "is not a local directory and could not be fetched from the Hugging Face Hub" in err


def test_invalid_sampling_options_at_export(model_copy, tmp_path, capsys):
    code, _, err = run(["export", model_copy, "-o", tmp_path / "p", "--top-p", "0"], capsys)
    assert code == 1 and "--top-p must be in (0, 1]" in err
    code, _, err = run(["export", model_copy, "-o", tmp_path / "p", "--temperature", "-1"], capsys)
    assert code == 1 and "--temperature must be > 0" in err


def test_failure_while_writing_leaves_nothing(model_copy, tmp_path, monkeypatch):
    from ortgen.export import package

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(package, "build_beam_search", explode)
    with pytest.raises(KeyboardInterrupt):
        package.export_package(str(model_copy), tmp_path / "pkg", package.ExportOptions(show_progress=False))
    assert not (tmp_path / "pkg").exists() and no_leftovers(tmp_path)


def test_pytorch_bin_and_sharded_checkpoints_export_identically(zoo, tmp_path):
    import torch

    from ortgen.export.package import ExportOptions, export_package

    source = zoo.model("gpt2").directory
    tensors = SafetensorsFile(source / "model.safetensors")
    state = {k: tensors.read(k) for k in tensors.keys()}
    # PyTorch .bin
    bin_dir = tmp_path / "bin"
    shutil.copytree(source, bin_dir)
    (bin_dir / "model.safetensors").unlink()
    torch.save({k: torch.from_numpy(v.copy()) for k, v in state.items()}, bin_dir / "pytorch_model.bin")
    # two safetensors shards with an index
    sharded = tmp_path / "sharded"
    shutil.copytree(source, sharded)
    (sharded / "model.safetensors").unlink()
    keys = sorted(state)
    halves = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, part in halves.items():
        write_safetensors(sharded / name, {k: state[k] for k in part})
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: name for name, part in halves.items() for k in part}}))
    reference = (zoo.package("gpt2") / "weights.bin").read_bytes()
    for directory in (bin_dir, sharded):
        out = tmp_path / f"pkg-{directory.name}"
        export_package(str(directory), out, ExportOptions(show_progress=False))
        assert (out / "weights.bin").read_bytes() == reference


def test_console_script_reports_errors_with_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ortgen", "export", str(tmp_path / "missing"), "-o",
                             str(tmp_path / "pkg")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: MODEL") and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "ortgen", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "ortgen export microsoft/biogpt" in result.stdout
