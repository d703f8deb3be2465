"""float16 packages (``ortgen export --dtype float16``) on the CPU: the graphs CUDA deployments run,
held to float16's stated quality against the float32 transformers model.

The step engine and ``decoder.onnx`` run float16 on ONNX Runtime's CPU provider, so the
precision itself is checked here, in every CI run; the in-graph operators refuse float16 on the
CPU (tests/gpu covers them on CUDA). Models: the tiny ones fitted to the demo corpus (confident
predictions, like a real LM), prompted with the corpus lines' first tokens.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ortgen.cli import main
from ortgen.errors import GenerationSettingsError
from ortgen.package import contract
from ortgen.package.manifest import Manifest
from ortgen.runtime.generator import Generator
from ortgen.validate.quantization_check import TOLERANCES
from ortgen.validate.report import PASS
from tests.parity.test_quantization import corpus_prompts, measure

# Beam search ranks whole sequences by summed log-probabilities, so float16's rounding flips
# near-ties between beams more often than a greedy choice: at least this share of the prompts
# keep transformers' best beam (measured with the validator's 4 beams: 10 of 10 on every architecture).
MIN_SAME_BEST_BEAM = 0.7


@pytest.mark.parametrize("arch", ["biogpt", "gpt2", "opt", "opt-post-ln", "llama3", "mistral"])
def test_float16_holds_the_stated_tolerances(zoo, arch):
    quality = measure(zoo, arch, "float16")
    tolerance = TOLERANCES["float16"]
    assert quality.status == PASS, quality.problems
    assert quality.steps >= 150  # ten prompts, up to 20 greedy steps each
    assert quality.greedy_agreement >= tolerance.min_greedy_agreement
    assert 0 < quality.relative_logit_error <= tolerance.max_relative_logit_error  # rounded, but close
    assert quality.same_best_beam >= MIN_SAME_BEST_BEAM
    # float16 keeps 11 significant bits, int8 weights 8: float16 moves logits less
    if arch != "opt-post-ln":
        assert quality.relative_logit_error < measure(zoo, arch, "int8").relative_logit_error


def test_float16_package_is_half_the_bytes_and_float16_throughout(zoo):
    fp32 = zoo.trained_package("biogpt", "float32")
    fp16 = zoo.trained_package("biogpt", "float16")
    manifest = Manifest.load(fp16)
    assert (manifest.dtype, manifest.weights_dtype, manifest.quantization) == ("float16", "float16", None)
    ratio = (fp16 / "weights.bin").stat().st_size / (fp32 / "weights.bin").stat().st_size
    assert 0.45 < ratio < 0.56, ratio  # page alignment of each tensor adds a little
    for key in (contract.DECODER, contract.DECODER_ENGINE, contract.BEAM, contract.GREEDY, contract.SAMPLE):
        specs = {t.name: t.dtype for t in manifest.graphs[key].inputs + manifest.graphs[key].outputs}
        floats = {name: dtype for name, dtype in specs.items() if dtype.startswith("float")}
        # only the operators' scalar inputs/outputs (penalties, scores) and the engine's best tokens
        # (what the host's float32 search reads) stay float32
        assert {n for n, d in floats.items() if d == "float32"} <= {
            contract.LENGTH_PENALTY, contract.REPETITION_PENALTY, contract.SEQUENCES_SCORES,
            contract.BEST_LOGITS, contract.LOGSUMEXP}, (key, floats)
    with Generator.load(fp16) as generator:
        _, lines = zoo.trained("biogpt")
        generator.generate(input_ids=corpus_prompts(lines)[:1], max_new_tokens=4)
        pool = generator.scheduler.pool
        assert pool.keys(0).dtype == np.float16
        assert pool.shape.bytes_per_position == 2 * pool.shape.layers * pool.shape.heads * pool.shape.head_dim * 2


def test_engine_on_float16_matches_float32_decoding_closely(zoo):
    """Every strategy runs on the float16 engine; greedy output equals the float32 package's here."""
    _, lines = zoo.trained("gpt2")
    prompts = corpus_prompts(lines)[:4]
    with Generator.load(zoo.trained_package("gpt2", "float16")) as half, \
            Generator.load(zoo.trained_package("gpt2", "float32")) as full:
        for options in (dict(num_beams=1), dict(num_beams=4, num_return_sequences=2),
                        dict(do_sample=True, top_k=0, seed=3)):
            result = half.generate(input_ids=prompts, max_new_tokens=12, **options)
            assert all(len(seqs) == options.get("num_return_sequences", 1) for seqs in result.sequences)
            assert all(len(s.token_ids) > 0 for seqs in result.sequences for s in seqs)
        greedy = dict(num_beams=1, max_new_tokens=12)
        assert [s.token_ids for g in half.generate(input_ids=prompts, **greedy).sequences for s in g] == \
               [s.token_ids for g in full.generate(input_ids=prompts, **greedy).sequences for s in g]


def test_in_graph_operators_on_the_cpu_are_refused_with_the_way_out(zoo):
    with Generator.load(zoo.trained_package("opt", "float16")) as generator:
        with pytest.raises(GenerationSettingsError) as raised:
            generator.generate(input_ids=[[5, 6, 7]], max_new_tokens=4, backend="graph")
    message = str(raised.value)
    assert "float16" in message and "CUDA" in message and "backend='engine'" in message


def test_quantized_weights_with_float16_activations(zoo, tmp_path):
    """int8 weights (MatMulNBits) over float16 activations: the common GPU pairing runs on the CPU too."""
    from ortgen.export.package import ExportOptions, export_package
    from ortgen.export.quantize import QuantConfig

    model, lines = zoo.trained("biogpt")
    out = tmp_path / "int8-fp16"
    export_package(str(model.directory), out, ExportOptions(show_progress=False, dtype="float16",
                                                            quantize=QuantConfig.parse("int8")))
    manifest = Manifest.load(out)
    assert (manifest.dtype, manifest.weights_dtype) == ("float16", "int8")
    prompts = corpus_prompts(lines)[:4]
    with Generator.load(out) as quantized, Generator.load(zoo.trained_package("biogpt", "float32")) as full:
        greedy = dict(num_beams=1, max_new_tokens=12)
        ours = [s.token_ids for g in quantized.generate(input_ids=prompts, **greedy).sequences for s in g]
        theirs = [s.token_ids for g in full.generate(input_ids=prompts, **greedy).sequences for s in g]
    assert sum(a == b for a, b in zip(ours, theirs)) >= 3


def test_validate_cli_reports_float16_quality(zoo, tmp_path, capsys):
    model, _ = zoo.trained("biogpt")
    out = tmp_path / "report.json"
    code = main(["validate", str(zoo.trained_package("biogpt", "float16")), "--reference", str(model.directory),
                 "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "reduced precision (float16 weights" in printed and "same best beam (4 beams)" in printed
    q = json.loads(out.read_text())["quantization"]
    assert q["weights"] == "float16" and q["tolerance"]["min_greedy_agreement"] == 0.98
    assert 0 < q["max_abs_logit_error"] < 0.1


def test_a_weight_beyond_float16_range_is_refused(zoo, tmp_path, capsys):
    """Stored as float16 it would be inf: the export stops, names the weight, and writes nothing."""
    from transformers import AutoModelForCausalLM

    model = zoo.model("gpt2")
    loud = tmp_path / "loud"
    hf = AutoModelForCausalLM.from_pretrained(model.directory)
    with torch.no_grad():
        hf.transformer.h[1].mlp.c_fc.weight[0, 0] = 1.0e5
    hf.save_pretrained(loud)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (loud / name).write_bytes((model.directory / name).read_bytes())
    code = main(["export", str(loud), "-o", str(tmp_path / "pkg"), "--dtype", "float16", "--no-progress"])
    assert code == 1
    error = capsys.readouterr().err
    assert "layers.1.mlp.fc_in.weight holds 100000, beyond float16's range" in error and "--dtype float32" in error
    assert not (tmp_path / "pkg").exists() and list(tmp_path.iterdir()) == [loud]
    assert main(["export", str(loud), "-o", str(tmp_path / "pkg"), "--no-progress"]) == 0  # float32 is fine
