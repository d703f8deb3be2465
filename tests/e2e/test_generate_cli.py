"""`ortgen generate` and the Generator API end to end: text in, text out, bad settings out."""

from __future__ import annotations

import json

import pytest

from ortgen.cli import main
from ortgen.errors import GenerationSettingsError, PromptTooLongError
from ortgen.runtime.generator import Generator
from tests.conftest import needs_torch

pytestmark = needs_torch


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_text_batch_with_beam_search(zoo, capsys):
    pkg = zoo.package("biogpt")
    code, out, err = run(["generate", pkg, "Aspirin reduces the risk of", "Metformin is", "--num-beams", "4",
                          "--num-return-sequences", "2", "--max-new-tokens", "6"], capsys)
    assert code == 0
    assert out.count("[0] Aspirin reduces the risk of") == 1 and "[1] Metformin is" in out
    assert out.count("  1. ") == 2 and out.count("  2. ") == 2
    assert "ran decoder_engine.onnx (ortgen step engine)" in err  # auto: the engine
    code, out, err = run(["generate", pkg, "Aspirin", "--num-beams", "4", "--max-new-tokens", "6",
                          "--length-penalty", "0", "--backend", "graph"], capsys)
    assert code == 0 and "ran generate_beam.onnx (com.microsoft BeamSearch)" in err


def test_generate_json_matches_the_api(zoo, capsys):
    pkg = zoo.package("gpt2")
    code, out, _ = run(["generate", pkg, "The patients were", "--max-new-tokens", "5", "--json", "--backend", "graph"],
                       capsys)
    assert code == 0
    data = json.loads(out)
    assert data["graph"] == "generate_greedy.onnx" and data["operator"] == "GreedySearch"
    api = Generator.load(pkg).generate("The patients were", max_new_tokens=5)  # auto: the engine, same tokens
    assert data["results"][0]["sequences"][0]["token_ids"] == api.sequences[0][0].token_ids
    assert data["results"][0]["sequences"][0]["text"] == api.texts[0][0]


def test_generate_from_token_ids(zoo, capsys):
    pkg = zoo.package("opt")
    code, out, _ = run(["generate", pkg, "--input-ids", "2,50,60", "--input-ids", "2,70", "--max-new-tokens", "3"],
                       capsys)
    assert code == 0 and "[0] 2,50,60" in out and "[1] 2,70" in out


def test_prompt_text_uses_the_model_prefix(zoo):
    from transformers import AutoTokenizer

    for arch in ("biogpt", "opt", "gpt2"):
        generator = Generator.load(zoo.package(arch))
        reference = AutoTokenizer.from_pretrained(zoo.model(arch).directory)
        text = "Aspirin reduces the risk of myocardial infarction."
        assert generator.tokenizer.encode(text) == reference(text)["input_ids"], arch


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-beams", "2", "--num-return-sequences", "3"], "num_return_sequences (3) must be <= num_beams (2)"),
        (["--min-new-tokens", "-2"], "min_new_tokens must be an integer >= 0, got -2"),
        (["--max-new-tokens", "10", "--min-new-tokens", "11"], "must not exceed max_new_tokens"),
        (["--top-p", "1.5"], "top_p must be a number in (0, 1], got 1.5"),
        (["--temperature", "0.5", "--backend", "graph", "--top-k", "0"], "temperature=0.5 / top_p=1 differ from the Sampling graph's"),
        (["--num-beams", "3", "--seed", "1", "--backend", "graph"], "beam sampling: BeamSearch cannot sample"),
        (["--top-k", "-2"], "top_k must be an integer >= 0, got -2"),
        (["--stop", "x", "--backend", "graph"], "stop_strings: the operators have none"),
        (["--max-new-tokens", "70"], "needs 75 positions; the model has 64"),
        (["--provider", "tpu"], "execution provider 'tpu' is not available"),
    ],
)
def test_bad_generation_settings_exit_nonzero(zoo, capsys, args, message):
    code, _, err = run(["generate", zoo.package("biogpt"), "Aspirin is", *args], capsys)
    assert code == 1, err
    assert message in err and "Traceback" not in err


def test_argparse_rejects_non_numbers(zoo, capsys):
    with pytest.raises(SystemExit) as info:
        main(["generate", str(zoo.package("biogpt")), "x", "--num-beams", "five"])
    assert info.value.code == 2
    assert "invalid int value: 'five'" in capsys.readouterr().err


def test_prompt_and_ids_are_exclusive(zoo, capsys):
    code, _, err = run(["generate", zoo.package("biogpt"), "x", "--input-ids", "2,3"], capsys)
    assert code == 1 and "either PROMPT text(s) or --input-ids" in err
    code, _, err = run(["generate", zoo.package("biogpt")], capsys)
    assert code == 1


def test_api_errors(zoo, tmp_path):
    generator = Generator.load(zoo.package("biogpt"))
    with pytest.raises(GenerationSettingsError, match="outside the vocabulary"):
        generator.generate(input_ids=[[2, 10**6]])
    with pytest.raises(GenerationSettingsError, match="at least one token"):
        generator.generate(input_ids=[[]])
    with pytest.raises(GenerationSettingsError, match="unknown generation option.*num_beam\\b"):
        generator.generate("x", num_beam=3)
    with pytest.raises(PromptTooLongError):
        generator.generate("word " * 80, max_new_tokens=1)
    from ortgen.errors import PackageError

    with pytest.raises(PackageError, match="does not exist"):
        Generator.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackageError, match="not an ortgen package"):
        Generator.load(tmp_path / "empty")


@pytest.mark.parametrize("backend, top_k, graph", [("engine", 50, "decoder_engine.onnx"),
                                                   ("graph", 0, "generate_sample.onnx")])
def test_sampling_is_reproducible_with_a_seed(zoo, backend, top_k, graph):
    generator = Generator.load(zoo.package("biogpt"))
    prompts = ["Aspirin reduces", "The primary outcome was"]
    run = lambda seed, **kw: generator.generate(prompts, seed=seed, max_new_tokens=8, top_k=top_k,  # noqa: E731
                                                backend=backend, **kw)
    a, b, c = run(7, num_return_sequences=3), run(7, num_return_sequences=3), run(8, num_return_sequences=3)
    assert a.graph_file == graph
    tokens = lambda r: [[s.token_ids for s in g] for g in r.sequences]  # noqa: E731
    assert tokens(a) == tokens(b)
    assert tokens(a) != tokens(c)
    assert len(a.sequences) == 2 and all(len(g) == 3 for g in a.sequences)
    assert tokens(run(0)) == tokens(run(0))  # seed 0 reproduces too (ONNX Runtime's own 0 means "random")
