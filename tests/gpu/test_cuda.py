"""ortgen on ONNX Runtime's CUDA provider: float16 quality, float32 parity, the operators and the
scheduler on the GPU. Marked ``gpu``; skipped where there is no CUDA (no CUDAExecutionProvider in
onnxruntime, or torch without a GPU). ``scripts/gpu/run.sh`` runs them on a lent GPU machine.

Models: the tiny ones fitted to the demo corpus (see tests/parity/test_quantization.py); the
reference is transformers in float32.
"""

from __future__ import annotations

import pytest

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

HAVE_CUDA = "CUDAExecutionProvider" in ort.get_available_providers() and torch.cuda.is_available()
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not HAVE_CUDA, reason="needs CUDA: onnxruntime-gpu and a GPU torch can see")]

from ortgen.runtime.generator import Generator  # noqa: E402
from ortgen.validate.quantization_check import TOLERANCES, check_quantization  # noqa: E402
from ortgen.validate.reference import Reference  # noqa: E402
from ortgen.validate.report import MISMATCH, PASS  # noqa: E402
from ortgen.validate.runner import validate_package  # noqa: E402
from ortgen.validate.suite import batches_of  # noqa: E402
from tests.parity.test_float16 import MIN_SAME_BEST_BEAM  # noqa: E402
from tests.parity.test_quantization import corpus_prompts  # noqa: E402

ARCHS = ["biogpt", "gpt2", "opt", "opt-post-ln", "llama3", "mistral", "qwen2"]  # the Llama family: not yet run on a GPU


def _tokens(result) -> list[list[list[int]]]:
    return [[s.token_ids for s in group] for group in result.sequences]


@pytest.mark.parametrize("arch", ARCHS)
def test_float16_on_cuda_holds_the_stated_tolerances(zoo, arch):
    model, lines = zoo.trained(arch)
    with Generator.load(zoo.trained_package(arch, "float16"), providers="cuda", max_sessions=1) as generator:
        quality = check_quantization(generator, Reference.load(str(model.directory)),
                                     batches_of(corpus_prompts(lines)), new_tokens=20)
    print(f"\nCUDA {arch} float16: greedy agreement {quality.greedy_agreement:.3f}, same output "
          f"{quality.same_greedy_output:.2f}, same best beam {quality.same_best_beam:.2f}, relative logit error "
          f"{quality.relative_logit_error:.4f}, max |logit diff| {quality.max_abs_logit_error:.4f}")
    assert quality.status == PASS, quality.problems
    assert quality.greedy_agreement >= TOLERANCES["float16"].min_greedy_agreement
    assert quality.same_best_beam >= MIN_SAME_BEST_BEAM


@pytest.mark.parametrize("arch", ARCHS)
def test_float32_on_cuda_equals_transformers_token_for_token(zoo, arch):
    """The float32 promise holds on the GPU too: `ortgen validate --fast` with the CUDA provider,
    the in-graph operators and the step engine."""
    model, _ = zoo.trained(arch)
    package = zoo.trained_package(arch, "float32")
    generator = Generator.load(package, providers="cuda", max_sessions=1)
    report = validate_package(package, str(model.directory), fast=True, generator=generator)
    print(f"\nCUDA {arch} float32: " + ", ".join(f"{c.name}/{c.backend}: {c.status}" for c in report.generation))
    assert report.ok, [c for c in report.generation if c.status == MISMATCH]


def test_in_graph_operators_run_float16_on_cuda(zoo):
    """BeamSearch / GreedySearch on a float16 package (refused on the CPU) agree with the step engine."""
    _, lines = zoo.trained("biogpt")
    prompts = corpus_prompts(lines)
    with Generator.load(zoo.trained_package("biogpt", "float16"), providers="cuda") as generator:
        for options in (dict(num_beams=1), dict(num_beams=4, length_penalty=0.0)):
            graph = _tokens(generator.generate(input_ids=prompts, max_new_tokens=16, backend="graph", **options))
            engine = _tokens(generator.generate(input_ids=prompts, max_new_tokens=16, backend="engine", **options))
            same = sum(g[0] == e[0] for g, e in zip(graph, engine)) / len(prompts)
            print(f"\nCUDA float16 {options}: graph and engine agree on {same:.2f} of the prompts")
            assert same >= MIN_SAME_BEST_BEAM


def test_scheduler_on_cuda_gives_each_request_what_it_gets_alone(zoo):
    """Requests sharing steps on the GPU (device-memory KV pool) get the tokens they get one at a time."""
    _, lines = zoo.trained("gpt2")
    prompts = corpus_prompts(lines)
    with Generator.load(zoo.trained_package("gpt2", "float32"), providers="cuda") as generator:
        options = dict(num_beams=3, max_new_tokens=16)
        alone = [_tokens(generator.generate(input_ids=[p], **options))[0] for p in prompts]
        handles = [generator.submit(input_ids=p, **options) for p in prompts]
        together = [[s.token_ids for s in h.result().sequences] for h in handles]
        assert generator.scheduler.pool.device == "cuda"
    assert together == alone


def test_best_tokens_on_cuda_choose_what_whole_rows_choose(zoo):
    """On the GPU the best-tokens path keeps [rows, vocab] logits on the device; same tokens as whole rows."""
    _, lines = zoo.trained("biogpt")
    prompts = corpus_prompts(lines)
    for weights in ("float32", "float16"):
        with Generator.load(zoo.trained_package("biogpt", weights), providers="cuda") as generator:
            runs = {}
            for fetch in (True, False):
                generator.scheduler.fetch_best_tokens = fetch
                before = generator.scheduler.stats.best_token_steps
                tokens = _tokens(generator.generate(input_ids=prompts, max_new_tokens=16, num_beams=4,
                                                    num_return_sequences=2))
                runs[fetch] = (tokens, generator.scheduler.stats.best_token_steps - before)
        assert runs[True][1] > 0 and runs[False][1] == 0
        assert runs[True][0] == runs[False][0], weights
