"""Acceptance for `ortgen validate`: good packages pass, broken ones are caught with the step named,
EOS and unequal beam lengths are reported correctly, known differences are explained."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from ortgen.package import contract
from ortgen.cli import main
from ortgen.package.manifest import Manifest
from ortgen.validate.report import EXPLAINED, MATCH, MISMATCH
from ortgen.validate.runner import validate_package
from ortgen.validate.generation_check import LENGTH_NORMALISATION
from tests.helpers.models import EOS_BIAS

SMALL_GRID = [
    {"name": "greedy", "num_beams": 1, "max_new_tokens": 10},
    {"name": "beam 4, return 2", "num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 10},
]


@pytest.mark.parametrize("arch", ["biogpt", "gpt2", "opt"])
def test_good_packages_pass_the_default_suite(zoo, arch, tmp_path, capsys):
    model = zoo.model(arch)
    out = tmp_path / "report.json"
    code = main(["validate", str(zoo.package(arch)), "--reference", str(model.directory), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "PASS: generation" in printed and "0 unexplained" in printed
    report = json.loads(out.read_text())
    assert report["summary"]["ok"] and report["summary"]["mismatch"] == 0
    assert len(report["decoder"]) == 3 and all(o["status"] == "ok" for c in report["decoder"] for o in c["outputs"])
    assert {c["name"] for c in report["sampling"]} == {
        "graph: same seed reproduces", "graph: top_p=1e-6 equals greedy", "graph: first-token frequencies",
        "engine: same seed reproduces", "engine: top_k=1 equals greedy", "engine: first-token frequencies"}
    assert all(c["status"] == "pass" for c in report["sampling"])
    graphs = {c["graph"] for c in report["generation"]}
    assert graphs == {"generate_greedy.onnx", "generate_beam.onnx", "generate_beam_early_stopping.onnx",
                      "decoder_engine.onnx"}
    assert {c["backend"] for c in report["generation"]} == {"graph", "engine"}


def test_eos_and_unequal_beam_lengths_are_reported_and_explained(zoo):
    arch = "biogpt"
    report = validate_package(zoo.package(arch, eos_bias=EOS_BIAS[arch]), str(zoo.model(arch, eos_bias=EOS_BIAS[arch]).directory),
                              draws=300)
    assert report.ok
    cases = {(c.name, c.batch): c for c in report.generation}
    # EOS mid-sequence: some sequences end with EOS, some run to max_new_tokens
    finished = [s.transformers_finished for c in report.generation for s in c.sequences]
    assert any(finished) and not all(finished)
    # beams finishing at different steps, matched exactly where normalisation cannot matter
    neutral = cases[("beam 4, return 4, length_penalty 0", 0)]
    assert neutral.status == MATCH and len(neutral.eos_steps) >= 2
    # where it can, the difference is explained (and was checked by the length_penalty=0 re-run)
    explained = [c for c in report.generation if c.status == EXPLAINED]
    assert explained and all(c.explanation == LENGTH_NORMALISATION for c in explained)
    for case in explained:
        first = next(s for s in case.sequences if s.divergence)
        assert first.divergence.step >= 0 and first.divergence.gap is not None


def _break_weight(package, tensor: str, factor: float) -> None:
    """Scale one tensor inside weights.bin (found through decoder.onnx's external-data entries)."""
    model = onnx.load(str(package / contract.GRAPH_FILES[contract.DECODER]), load_external_data=False)
    init = next(i for i in model.graph.initializer if i.name == tensor)
    entries = {e.key: e.value for e in init.external_data}
    offset, length = int(entries["offset"]), int(entries["length"])
    with (package / "weights.bin").open("r+b") as f:
        f.seek(offset)
        values = np.frombuffer(f.read(length), dtype=np.float32) * factor
        f.seek(offset)
        f.write(values.tobytes())


def _break_position_offset(package, offset: int) -> None:
    """Rewrite the position-table offset in the decoder and in every generation graph's subgraph."""
    def patch(graph: onnx.GraphProto) -> None:
        node = next(n for n in graph.node if n.name == "/model/positions/Offset")
        name = "/const/broken_offset"
        graph.initializer.append(onnx.numpy_helper.from_array(np.array(offset, np.int32), name))
        node.input[1] = name

    for key, file in contract.GRAPH_FILES.items():
        path = package / file
        model = onnx.load(str(path), load_external_data=False)
        patch(model.graph if key in (contract.DECODER, contract.DECODER_ENGINE) else
              next(a.g for a in model.graph.node[0].attribute if a.name == "decoder"))
        onnx.save(model, str(path))


@pytest.mark.parametrize("damage", ["weight", "position_offset"])
def test_broken_packages_are_caught_with_the_first_diverging_step(zoo, tmp_path, capsys, damage):
    arch = "biogpt"
    broken = tmp_path / "broken"
    shutil.copytree(zoo.package(arch), broken)
    if damage == "weight":
        _break_weight(broken, "layers.1.mlp.fc_in.weight", 3.0)
    else:
        _break_position_offset(broken, 3)  # BioGPT's is 2
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(SMALL_GRID))
    out = tmp_path / "report.json"
    code = main(["validate", str(broken), "--reference", str(zoo.model(arch).directory), "--settings",
                 str(settings), "--json", str(out), "--draws", "200"])
    printed = capsys.readouterr().out
    assert code == 1
    assert "FAIL: generation" in printed and "MISMATCH" in printed
    report = json.loads(out.read_text())
    assert not report["summary"]["ok"] and report["summary"]["mismatch"] >= 1
    assert report["summary"]["decoder_failed"] >= 1
    assert any(o["status"] == "values" for c in report["decoder"] for o in c["outputs"])
    first = next(s for c in report["generation"] if c["status"] == MISMATCH for s in c["sequences"]
                 if s["divergence"])
    d = first["divergence"]
    assert d["step"] >= 0 and d["ortgen_token"] != d["transformers_token"]
    assert f"step {d['step']}: ortgen" in printed
    if damage == "weight":  # the checksum no longer matches either
        assert any("weights.bin" in problem for problem in report["files"])


def test_export_validate_runs_the_fast_level(zoo, tmp_path, capsys):
    model = zoo.model("gpt2")
    code = main(["export", str(model.directory), "-o", str(tmp_path / "pkg"), "--validate", "--no-progress"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "(fast)" in printed and "PASS: generation" in printed and "sampling (statistical)" not in printed


def test_user_prompts_and_settings_files(zoo, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Aspirin reduces the risk of\n\nThe patients were randomly assigned\nStatins\nMetformin is\n")
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps([{"num_beams": 2, "max_new_tokens": 5}]))
    out = tmp_path / "r.json"
    code = main(["validate", str(zoo.package("opt")), "--reference", str(zoo.model("opt").directory),
                 "--prompts", str(prompts), "--settings", str(settings), "--json", str(out), "--draws", "200"])
    assert code == 0
    report = json.loads(out.read_text())
    assert [c["batch"] for c in report["generation"]] == [0, 0, 1, 1]  # 3 + 1 prompts, graph and engine
    assert report["generation"][0]["name"] == '{"max_new_tokens": 5, "num_beams": 2}'


@pytest.mark.parametrize("content, message", [
    ('[{"num_beams": 2, "temperature": 0.5}]', "unknown key(s) temperature"),
    ("{}", "must hold a non-empty list of settings objects"),
    ("not json", "is not valid JSON"),
])
def test_bad_settings_files_are_explained(zoo, tmp_path, capsys, content, message):
    settings = tmp_path / "s.json"
    settings.write_text(content)
    code = main(["validate", str(zoo.package("opt")), "--reference", str(zoo.model("opt").directory),
                 "--settings", str(settings)])
    assert code == 1 and message in capsys.readouterr().err


def test_reference_of_another_model_is_refused(zoo, capsys):
    code = main(["validate", str(zoo.package("opt")), "--reference", str(zoo.model("biogpt").directory)])
    assert code == 1 and "is a biogpt model, the package a opt model" in capsys.readouterr().err


def test_a_reference_that_does_not_exist_is_named_as_such(zoo, capsys):
    code = main(["validate", str(zoo.package("opt")), "--reference", "/nonexistent/model"])
    err = capsys.readouterr().err
    assert code == 1 and "MODEL '/nonexistent/model' does not exist" in err and "Hub" not in err.split("(")[0]


def test_sampling_seed_varies_per_run_and_seed_repeats_a_run(zoo, tmp_path):
    reports = []
    for run, seed in enumerate((None, None, 77, 77)):
        out = tmp_path / f"r{run}.json"
        args = ["validate", str(zoo.package("gpt2")), "--reference", str(zoo.model("gpt2").directory),
                "--json", str(out), "--draws", "200", "--backend", "engine", "--prompts", str(_one_prompt(tmp_path))]
        main(args + (["--seed", str(seed)] if seed is not None else []))
        reports.append(json.loads(out.read_text())["sampling"])
    frequencies = [[c for c in r if "frequencies" in c["name"]] for r in reports]
    seeds = [[c["values"]["seed"] for c in f] for f in frequencies]
    assert seeds[0] != seeds[1], "without --seed each run draws anew"
    assert seeds[2] == seeds[3] and seeds[2][0] == 79  # --seed 77: the frequency tests use 77 + 2, 77 + 3
    assert [c["values"]["p_value"] for c in frequencies[2]] == [c["values"]["p_value"] for c in frequencies[3]]
    # the run's false-failure rate is split between its frequency tests (two on the engine)
    assert {c["values"]["threshold"] for c in frequencies[2]} == {0.001 / 2}


def _one_prompt(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("Aspirin reduces the risk of\n")
    return path
