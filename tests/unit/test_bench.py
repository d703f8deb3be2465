"""The benchmark's arithmetic: the floor formula, model costs from a manifest, the report."""

from __future__ import annotations

import pytest

from ortgen.bench.floor import MachineRates, ModelCost, floor_seconds
from ortgen.bench.report import head_to_head, markdown
from ortgen.bench.workloads import QUICK, WORKLOADS, Workload


def test_floor_is_the_prompt_once_plus_each_step_bound_by_compute_or_bytes():
    w = Workload("t", prompt_tokens=10, new_tokens=2, num_beams=4, batch=1, description="")
    cost = ModelCost(parameters=1_000_000, weight_bytes=4_000_000, kv_bytes_per_position=1000)
    rates = MachineRates(matmul_gflops=1.0, int8_gflops=2.0, bandwidth_gbs=1.0)
    prompt = 2 * 1e6 * 10 / 1e9  # once, not once per beam
    # the prompt's keys and values are read once per step, then each beam's own tokens
    step0 = max(2 * 1e6 * 4 / 1e9, (4e6 + 1000 * 10) / 1e9)  # 8 ms compute vs 4.01 ms bytes
    step1 = max(2 * 1e6 * 4 / 1e9, (4e6 + 1000 * (10 + 4)) / 1e9)
    assert floor_seconds(w, cost, rates, "float32") == pytest.approx(prompt + step0 + step1)
    # int8 multiplies at its own rate: 4 ms of compute, now below the bytes
    int8 = 2 * 1e6 * 10 / 2e9 + (4e6 + 1000 * 10) / 1e9 + (4e6 + 1000 * 14) / 1e9
    assert floor_seconds(w, cost, rates, "int8") == pytest.approx(int8)


def test_step_profile_splits_each_run_into_onnx_runtime_and_host_time_per_step():
    from ortgen.bench.runner import step_profile

    runs = [(1.0, {"steps": 10, "decoder_seconds": 0.8}), (1.2, {"steps": 10, "decoder_seconds": 0.9}),
            (3.0, {"steps": 10, "decoder_seconds": 1.0})]
    assert step_profile(runs) == {"steps": 10, "decoder_ms_per_step": 90.0, "host_ms_per_step": 30.0}
    assert step_profile([]) is None and step_profile([(1.0, {"steps": 0, "decoder_seconds": 0.0})]) is None


def test_workloads_match_the_issue():
    assert [(w.prompt_tokens, w.new_tokens, w.num_beams, w.batch) for w in WORKLOADS.values()] == [
        (64, 64, 5, 1), (512, 64, 5, 1), (128, 64, 1, 8)]
    assert set(QUICK) == set(WORKLOADS)
    prompts = WORKLOADS["W3"].prompts(vocab_size=1000, first_token=2)
    assert len(prompts) == 8 and all(len(p) == 128 and p[0] == 2 and min(p[1:]) >= 4 for p in prompts)


def test_model_cost_counts_the_tied_head_and_not_the_gathers(zoo):
    from ortgen.bench.floor import model_cost
    from ortgen.package.manifest import Manifest

    package = zoo.package("biogpt")
    a = Manifest.load(package).architecture
    cost = model_cost(package)
    layers = a.num_layers * (4 * a.hidden_size ** 2 + 2 * a.hidden_size * a.ffn_size)
    head = a.vocab_size * a.hidden_size
    # biases and LayerNorms are counted too; they are small
    assert layers + head <= cost.parameters <= layers + head + a.num_layers * 10 * a.ffn_size
    assert cost.weight_bytes == 4 * cost.parameters
    assert cost.kv_bytes_per_position == 2 * a.num_layers * a.hidden_size * 4


def test_markdown_table_has_one_row_per_measurement():
    result = {
        "machine": {"cpu": "X", "cores": 2, "memory_gb": 24.0, "device": "CPU"},
        "rates": {"matmul_gflops": 100.0, "int8_gflops": 150.0, "bandwidth_gbs": 20.0},
        "repeats": 3, "workloads": {"W1": "prompt 64 -> 64"},
        "measurements": [
            {"model": "m", "workload": "W1", "system": "transformers fp32", "seconds": 20.0, "tokens_per_second": 3.2,
             "speedup_vs_transformers": 1.0, "floor_seconds": 4.0, "ratio_to_floor": 5.0, "memory_gb": 2.0},
            {"model": "m", "workload": "W1", "system": "ortgen step engine int8", "seconds": 2.5,
             "tokens_per_second": 25.6, "speedup_vs_transformers": 8.0, "floor_seconds": 1.5, "ratio_to_floor": 1.67,
             "memory_gb": 1.0},
        ],
    }
    text = markdown(result)
    assert "| m | W1 | ortgen step engine int8 | 2.5 | 25.6 | 8.00x | 1.5 | 1.67 | 1.00 |" in text
    assert "float32 GEMM 100.0 GFLOP/s" in text and "medians of 3 runs" in text
    assert "Head to head" not in text  # nothing to pair


def test_head_to_head_pairs_the_engine_with_each_baseline_at_the_same_precision():
    def row(system, seconds):
        return {"model": "m", "workload": "W1", "system": system, "seconds": seconds}

    lines = head_to_head([row("ortgen step engine int8", 2.0), row("ortgen step engine fp32", 4.0),
                          row("CTranslate2 int8", 6.0), row("CTranslate2 fp32", 10.0),
                          row("ortgen in-graph op fp32", 6.0), row("transformers fp32", 20.0)])
    assert "| m | W1 | int8 | 2 s | CTranslate2 6 s | 3.00x |" in lines
    assert "| m | W1 | fp32 | 4 s | CTranslate2 10 s | 2.50x |" in lines
    assert "| m | W1 | fp32 | 4 s | ortgen in-graph op 6 s | 1.50x |" in lines
    assert not any("ortgen in-graph op int8" in line for line in lines)  # no such measurement
    assert sum(line.startswith("| m |") for line in lines) == 3


def test_float16_packages_cost_half_the_bytes_and_multiply_at_the_float16_rate(zoo):
    from ortgen.bench.floor import model_cost

    full = model_cost(zoo.trained_package("biogpt", "float32"))
    half = model_cost(zoo.trained_package("biogpt", "float16"))
    assert half.parameters == full.parameters
    assert half.weight_bytes == full.weight_bytes // 2
    assert half.kv_bytes_per_position * 2 == full.kv_bytes_per_position
    rates = MachineRates(matmul_gflops=1.0, int8_gflops=2.0, bandwidth_gbs=1.0, float16_gflops=8.0)
    assert [rates.compute_gflops(w) for w in ("float32", "float16", "int8", "int4")] == [1.0, 8.0, 2.0, 2.0]
    # a run that measured no float16 rate falls back to float32's
    assert MachineRates(1.0, 2.0, 1.0).compute_gflops("float16") == 1.0
