"""Acceptance: BioGPT at its real sizes exports on a 2-core / 24 GB machine.

Random weights with microsoft/biogpt's dimensions (347M parameters) and BioGPT-Large's
(1.57B, 6.3 GB in fp32: over protobuf's 2 GB limit, so only external data works). Each
export runs in a subprocess (as a user would run it) and reports its wall time and peak
memory; the package must then load in ONNX Runtime and generate.

Run with:  pytest -m slow tests/slow -s
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from ortgen.package.manifest import Manifest
from ortgen.runtime.generator import Generator
from tests.conftest import REAL_BIOGPT_TOKENIZER

pytestmark = pytest.mark.slow

# `ortgen export MODEL -o PACKAGE` in a fresh process that reports its own peak memory.
# VmHWM, not ru_maxrss: Linux carries the parent's (pytest's) peak into ru_maxrss across exec.
_EXPORT_AND_REPORT_PEAK = (
    "import re, sys\n"
    "from ortgen.cli import main\n"
    "status = main(['export', sys.argv[1], '-o', sys.argv[2]])\n"
    "peak = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "print('PEAK_RSS_KB', peak, file=sys.stderr)\n"
    "sys.exit(status)\n"
)


@pytest.mark.parametrize("preset, parameters", [("biogpt-base", 346.8e6), ("biogpt-large", 1.57e9)])
def test_real_size_export_loads_and_generates(tmp_path, preset, parameters):
    model, package = tmp_path / "model", tmp_path / "package"
    make = [sys.executable, "-m", "ortgen", "make-random-model", str(model), "--preset", preset]
    if REAL_BIOGPT_TOKENIZER.is_dir():
        make += ["--tokenizer", str(REAL_BIOGPT_TOKENIZER)]
    subprocess.run(make, check=True)

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _EXPORT_AND_REPORT_PEAK, str(model), str(package)],
                            capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    peak_gb = int(result.stderr.rsplit("PEAK_RSS_KB ", 1)[1].split()[0]) / 1e6
    assert "writing" in result.stderr and "100%" in result.stderr  # progress was shown
    manifest = Manifest.load(package)
    assert manifest.architecture.parameters == pytest.approx(parameters, rel=0.01)
    weights = manifest.files["weights.bin"].bytes
    for name in ("decoder.onnx", "generate_beam.onnx", "generate_greedy.onnx", "generate_sample.onnx"):
        assert manifest.files[name].bytes < 10e6, f"{name} should hold no weights"
    print(f"\n{preset}: {manifest.architecture.parameters / 1e6:.1f}M parameters, weights.bin {weights / 1e9:.2f} GB, "
          f"export {seconds:.1f} s, peak RSS of the export process {peak_gb:.2f} GB")

    started = time.perf_counter()
    generator = Generator.load(package)
    out = generator.generate(input_ids=[[2, 100, 200, 300]], max_new_tokens=2)
    print(f"{preset}: greedy 2 tokens incl. session load {time.perf_counter() - started:.1f} s")
    assert len(out.sequences[0][0].token_ids) <= 2


@pytest.mark.skipif(not REAL_BIOGPT_TOKENIZER.is_dir(), reason="real BioGPT tokenizer files not available")
def test_pubmedqa_base_sized_fairseq_checkpoint_converts_and_exports(tmp_path):
    """QA-PubMedQA-BioGPT's shape: 24 x 1024, vocabulary 42,384 + 9 learned prompt tokens."""
    from tests.helpers.fairseq import write_fairseq_biogpt

    fx = write_fairseq_biogpt(tmp_path / "fairseq", REAL_BIOGPT_TOKENIZER, hidden=1024, layers=24, heads=16,
                              ffn=4096, positions=1024, learned_prompt=9)
    assert fx.rows == 42393
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "ortgen", "convert-fairseq", str(tmp_path / "fairseq"), "-o",
                             str(tmp_path / "hf")], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    assert "converting" in result.stderr and "100%" in result.stderr
    print(f"\nconvert-fairseq, PubMedQA base shape: {seconds:.1f} s")
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", _EXPORT_AND_REPORT_PEAK, str(tmp_path / "hf"),
                             str(tmp_path / "pkg")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    print(f"export of the converted model: {time.perf_counter() - started:.1f} s")
    generator = Generator.load(tmp_path / "pkg")
    answer = generator.answer("Do statins reduce mortality?", "A randomized trial of 5,011 patients.",
                              max_new_tokens=3)
    assert answer.result.prompt_ids[0][-9:] == list(range(42384, 42393))
