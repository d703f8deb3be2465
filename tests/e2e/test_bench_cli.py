"""`ortgen bench --quick`: the whole suite end to end at smoke size (what CI runs)."""

from __future__ import annotations

import json

import pytest

from ortgen.cli import main


def test_quick_bench_runs_every_system_and_writes_the_report(tmp_path, capsys):
    pytest.importorskip("ctranslate2")
    out = tmp_path / "results"
    code = main(["bench", "--quick", "--models", "biogpt-base,gpt2-medium", "--workloads", "W1,W3",
                 "--repeats", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    result = json.loads((out / "bench.json").read_text())
    assert (out / "bench.md").read_text() in printed
    assert "Step engine, per decoder call" in printed
    rows = {(m["model"], m["workload"], m["system"]): m for m in result["measurements"]}
    ortgen = [f"ortgen {b} {w}" for b in ("in-graph op", "step engine") for w in ("fp32", "int8")]
    # a quick run labels its tiny models as what they are, not as the real shapes
    assert {k[0] for k in rows} == {"demo (quick)", "gpt2-tiny (quick)"}
    for model in ("demo (quick)", "gpt2-tiny (quick)"):
        for workload in ("W1", "W3"):
            assert rows[(model, workload, "transformers fp32")]["speedup_vs_transformers"] == 1.0
            for system in ortgen:
                m = rows[(model, workload, system)]
                assert m["seconds"] > 0 and m["floor_seconds"] > 0 and m["speedup_vs_transformers"] > 0
                assert 0 < m["memory_gb"] < 4  # measured in a process of its own
                profile = m["step_profile"]
                if "step engine" in system:  # a quick workload decodes 8 new tokens: 8 decoder calls
                    assert profile["steps"] == 8 and profile["decoder_ms_per_step"] > 0
                    assert profile["host_ms_per_step"] > 0
                else:
                    assert profile is None
    # CTranslate2 cannot load BioGPT: it runs on the GPT-2 shape only
    assert ("gpt2-tiny (quick)", "W1", "CTranslate2 int8") in rows
    assert not any(k[0] == "demo (quick)" and k[2].startswith("CTranslate2") for k in rows)
    assert all(v > 0 for v in result["rates"].values() if v is not None)
    assert result["rates"]["float16_gflops"] is None  # measured only when float16 packages are benchmarked
    assert result["versions"]["onnxruntime"] and result["quick"] is True


def test_bench_rejects_unknown_names_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--models", "biogpt-huge"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "choose from biogpt-base, biogpt-large, gpt2-medium" in err


def test_cuda_device_without_a_cuda_provider_is_refused(capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    assert main(["bench", "--quick", "--device", "cuda"]) == 1
    assert "no CUDAExecutionProvider" in capsys.readouterr().err


def test_quick_throughput_bench_compares_the_scheduler_with_one_at_a_time(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["bench", "--quick", "--models", "biogpt-base", "--workloads", "C1,C2,C3", "--systems",
                 "ortgen-engine", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    result = json.loads((out / "bench.json").read_text())
    rows = {(r["workload"], r["system"]): r for r in result["throughput"]}
    for workload in ("C1", "C2", "C3"):
        mine = rows[(workload, "ortgen scheduler")]
        assert mine["tokens_identical"] is True  # the same tokens as the requests one at a time
        assert mine["requests_per_second"] > 0 and mine["latency_p99"] >= mine["latency_p50"] > 0
        assert mine["first_token_p50"] is not None
        assert "ortgen one at a time" in mine["speedups"]
        assert 0 < mine["host_share"] < 1  # part of the wall time is ONNX Runtime's, the rest the host's
    assert rows[("C1", "ortgen scheduler")]["floor_seconds"] > 0  # together: a floor; Poisson: none
    assert rows[("C2", "ortgen scheduler")]["floor_seconds"] is None
    assert rows[("C1", "ortgen scheduler")]["mean_rows_per_step"] > 1
    assert "Throughput (many requests at once" in (out / "bench.md").read_text()


def test_quick_float16_bench_compares_with_transformers_float16(tmp_path, caplog):
    """The GPU run's bench command, at smoke size on the CPU: float16 rows against transformers float16."""
    out = tmp_path / "results"
    code = main(["bench", "--quick", "--models", "biogpt-base", "--workloads", "W1,C1", "--weights", "float16",
                 "--systems", "transformers,ortgen-graph,ortgen-engine", "--repeats", "1", "--no-memory",
                 "--workdir", str(tmp_path / "work"), "--out", str(out)])
    assert code == 0
    result = json.loads((out / "bench.json").read_text())
    rows = {m["system"]: m for m in result["measurements"]}
    # transformers float16 is the only baseline needed; no in-graph row (the CPU operators take float32)
    assert set(rows) == {"transformers fp16", "ortgen step engine fp16"}
    assert "no in-graph operator row for float16 on the CPU" in caplog.text
    engine = rows["ortgen step engine fp16"]
    assert engine["weights"] == "float16" and engine["speedup_vs_transformers"] > 0 and engine["floor_seconds"] > 0
    assert result["rates"]["float16_gflops"] > 0
    throughput = {r["system"] for r in result["throughput"]}
    assert {"ortgen scheduler", "transformers one at a time"} <= throughput
    assert "fp16 rows over transformers fp16" in (out / "bench.md").read_text()
