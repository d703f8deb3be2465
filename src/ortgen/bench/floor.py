"""The speed floor of a workload on this machine, measured in the same run as the systems.

Decoding reads every weight once per step; the prompt is compute-bound. So, with the
matrix-multiply rate ``R`` (FLOP/s) and the memory bandwidth ``BW`` (bytes/s) measured here
by ONNX Runtime itself:

    floor = prompt FLOPs / R  +  sum over steps of max(step FLOPs / R, (weight bytes + KV bytes read) / BW)

with the prompt run once per input (its beams share it; the output projection only after its last
token), FLOPs = 2 x parameters x tokens, ``R`` the best rate over the matrix shapes a step uses,
and the keys and values a step must read: each input's prompt once, plus every beam's own
generated tokens. Rates are the best of several runs. It is a lower bound for any
implementation of the workload on this machine (attention FLOPs, small next to the matrix
products at these lengths, are left out, which only lowers it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from ortgen.bench.workloads import Workload


@dataclass(frozen=True)
class MachineRates:
    matmul_gflops: float  # float32 GEMM, ONNX Runtime, all threads
    int8_gflops: float  # MatMulNBits int8 (accuracy level 4, the default block size), M=512
    bandwidth_gbs: float  # GEMV streaming a 1 GB float32 weight, ONNX Runtime
    float16_gflops: float | None = None  # float16 GEMM (measured in runs that benchmark float16 packages)

    def as_dict(self) -> dict:
        return asdict(self)

    def compute_gflops(self, weights: str) -> float:
        """The matrix-multiply rate a package of ``weights`` (float32, float16, int8, int4) computes at."""
        if weights in ("int8", "int4"):
            return self.int8_gflops
        if weights == "float16" and self.float16_gflops:
            return self.float16_gflops
        return self.matmul_gflops


def _session(nodes, inputs, outputs, initializers, providers: list[str]) -> ort.InferenceSession:
    graph = helper.make_graph(nodes, "probe", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    return ort.InferenceSession(model.SerializeToString(), providers=providers)


def _best_time(run, repeats: int) -> float:
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def _gemm_gflops(shapes, dtype, providers: list[str], rng: np.random.Generator) -> float:
    """The best MatMul rate over ``shapes`` (M, K, N) in ``dtype``."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    best = 0.0
    for M, K, N in shapes:
        w = (rng.standard_normal((K, N), dtype=np.float32) * 0.02).astype(dtype)
        x = rng.standard_normal((M, K), dtype=np.float32).astype(dtype)
        gemm = _session([helper.make_node("MatMul", ["x", "w"], ["y"])],
                        [helper.make_tensor_value_info("x", elem, [M, K])],
                        [helper.make_tensor_value_info("y", elem, [M, N])],
                        [numpy_helper.from_array(w, "w")], providers)
        best = max(best, 2 * M * K * N / _best_time(lambda: gemm.run(None, {"x": x}), 20) / 1e9)
    return best


def measure_rates(quick: bool = False, device: str = "cpu", float16: bool = False) -> MachineRates:
    """Matmul rates and weight-streaming bandwidth of ONNX Runtime on ``device`` ("cpu", "cuda");
    with ``float16``, the float16 GEMM rate too."""
    from ortgen.runtime.sessions import resolve_providers

    providers = resolve_providers(device)
    rng = np.random.default_rng(0)
    # the best of the shapes a decoder step multiplies (a batched decode step, a prefill chunk, a
    # long prompt; the up and down projections): the floor must not rest on one unlucky shape
    shapes = [(128, 512, 1024)] if quick else [(80, 1024, 4096), (256, 1024, 4096), (512, 1024, 4096),
                                              (256, 4096, 1024)]
    gflops = _gemm_gflops(shapes, np.float32, providers, rng)
    float16_gflops = _gemm_gflops(shapes, np.float16, providers, rng) if float16 else None
    M, K, N = shapes[-2] if not quick else shapes[0]
    w = rng.standard_normal((K, N), dtype=np.float32) * 0.02
    x = rng.standard_normal((M, K), dtype=np.float32)
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])
    y_info = helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])

    from ortgen.export.quantize import QuantConfig, quantize_blockwise

    config = QuantConfig.parse("int8")
    packed, scales = quantize_blockwise(w, config)
    nbits = helper.make_node("MatMulNBits", ["x", "q", "s"], ["y"], domain="com.microsoft", K=K, N=N, bits=8,
                             block_size=config.block_size, accuracy_level=config.accuracy_level)
    int8 = _session([nbits], [x_info], [y_info], [numpy_helper.from_array(packed, "q"),
                                                  numpy_helper.from_array(scales, "s")], providers)
    int8_gflops = 2 * M * K * N / _best_time(lambda: int8.run(None, {"x": x}), 10) / 1e9

    # GEMV over a weight much larger than any cache: bytes streamed per second
    K2, N2 = (2048, 8192) if quick else (8192, 32768)
    big = rng.standard_normal((K2, N2), dtype=np.float32)
    v = rng.standard_normal((1, K2), dtype=np.float32)
    gemv = _session([helper.make_node("MatMul", ["x", "w"], ["y"])],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K2])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N2])],
                    [numpy_helper.from_array(big, "w")], providers)
    bandwidth = big.nbytes / _best_time(lambda: gemv.run(None, {"x": v}), 10) / 1e9
    del big, gemv
    return MachineRates(round(gflops, 1), round(int8_gflops, 1), round(bandwidth, 1),
                        round(float16_gflops, 1) if float16_gflops else None)


@dataclass(frozen=True)
class ModelCost:
    """What one token costs: parameters multiplied, weight bytes read, KV bytes per cached position."""

    parameters: int  # multiplied per token (embedding gathers excluded, output projection included)
    weight_bytes: int  # read per decoding step
    kv_bytes_per_position: int  # per row: 2 (K, V) x layers x hidden x the cache's bytes per value
    head_parameters: int = 0  # the output projection's share of ``parameters``: a prompt needs it once

    def prompt_flops(self, tokens: int, prompts: int) -> float:
        """Every prompt token through the layers; the output projection only after each prompt's last."""
        return 2.0 * ((self.parameters - self.head_parameters) * tokens + self.head_parameters * prompts)

    def as_dict(self) -> dict:
        return asdict(self)


def floor_seconds(w: Workload, cost: ModelCost, rates: MachineRates, weights: str) -> float:
    """The floor of workload ``w`` for a package of ``weights`` (float32, float16, int8, int4)."""
    rate = rates.compute_gflops(weights) * 1e9
    bandwidth = rates.bandwidth_gbs * 1e9
    seconds = cost.prompt_flops(w.prompt_tokens * w.batch, w.batch) / rate  # prompt once per input
    rows = w.batch * w.num_beams
    for step in range(w.new_tokens):
        flops = 2 * cost.parameters * rows
        kv = cost.kv_bytes_per_position * w.batch * (w.prompt_tokens + step * w.num_beams)
        seconds += max(flops / rate, (cost.weight_bytes + kv) / bandwidth)
    return seconds


def model_cost(package_dir) -> ModelCost:
    """From a package's manifest: multiplied parameters and the bytes a step reads."""
    from ortgen.package.manifest import Manifest

    m = Manifest.load(package_dir)
    a = m.architecture
    gathered = a.vocab_size * a.hidden_size + (a.max_positions + a.position_offset) * a.hidden_size
    multiplied = a.parameters - gathered + a.vocab_size * a.hidden_size  # the tied head multiplies the table
    block = m.quantization.block_size if m.quantization else 32
    float_bytes = np.dtype(m.dtype).itemsize  # the cache and quantization scales are in the package's dtype
    per_weight = {"float32": 4.0, "float16": 2.0, "int8": 1.0 + float_bytes / block,
                  "int4": 0.5 + float_bytes / block}[m.weights_dtype]
    head = a.vocab_size * a.hidden_size
    return ModelCost(int(multiplied), int(multiplied * per_weight), 2 * a.num_layers * a.hidden_size * float_bytes,
                     int(head))

