"""The scripts behind docs/real-size-exports.md's Llama-family numbers, on a tiny shape: a bf16
checkpoint written shard by shard without torch, exported and loaded in measured child processes,
and the package generating transformers' tokens."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from ortgen.runtime.generator import Generator

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def _run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_random_bf16_checkpoint_exports_and_generates_as_transformers(tmp_path):
    checkpoint, package = tmp_path / "tiny-mistral", tmp_path / "pkg"
    _run(str(SCRIPTS / "make_random_checkpoint.py"), "--shape", "tiny-mistral", "--shard-size-gb", "0.0002", "-q",
         str(checkpoint))
    index = json.loads((checkpoint / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1, "the checkpoint is sharded"
    out = tmp_path / "result.json"
    _run(str(SCRIPTS / "scale_export.py"), str(checkpoint), str(package), "--weights", "float32", "--keep-package",
         "--quiet-children", "--out", str(out))
    result = json.loads(out.read_text())
    text = json.dumps(result)
    assert "peak" in text and "export" in text and "load" in text

    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    prompt = [10, 20, 30, 40, 50, 60, 70, 80]
    eos = hf.generation_config.eos_token_id
    with torch.no_grad():
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, num_beams=4,
                               pad_token_id=eos)[0, len(prompt):].tolist()
    expected = expected[:expected.index(eos)] if eos in expected else expected
    with Generator.load(package) as generator:
        ours = generator.generate(input_ids=[prompt], max_new_tokens=8, num_beams=4)
    assert ours.sequences[0][0].token_ids == expected
